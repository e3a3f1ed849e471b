"""CoVLR: cross-modal consistency (meta-train) coordinated with intra-modal relation preservation (meta-test).

    minimise  L_c(theta) + beta * L_r(theta - alpha * grad L_c(theta))

L_c is InfoNCE over the global batch; L_r keeps the in-batch relations of the image
and/or text embeddings close to the reference embeddings, evaluated after the
virtual step (MLDG reading of the paper; the released code has no meta step).
First-order by default: grad L_c is a constant in the second term.

Optional caption consistency (the release's ``loss_cons``, weight 10 there, default 0 here):
NT-Xent at theta between each caption and another caption of the same image (τ = 0.1),
with every other caption of the same image in the global batch also a positive (plain
NT-Xent when each image appears once). It needs ``data.paired_captions=true``. The
release also adds a margin regulariser on the same scores; vlr does not.

Distributed: ``torch.autograd.grad`` bypasses DDP's all-reduce, so the virtual-step
gradient is averaged across ranks explicitly; with the gradient-carrying gather this
equals the single-process gradient of the global-batch loss.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from vlr.errors import ConfigError
from vlr.objectives.base import OBJECTIVES, Objective, reference_rows
from vlr.objectives.distributed import average_gradients, gather_no_grad, gather_with_grad, local_rows, world_size
from vlr.objectives.infonce import contrastive_terms
from vlr.objectives.relations import relation_loss
from vlr.objectives.temperature import Temperature

VIRTUAL_PARAMS = ("all", "projections")
PROJECTION_PARAMS = ("image_proj.weight", "image_proj.bias", "text_proj.weight", "text_proj.bias")
MODALITIES = ("image", "text", "both")


@OBJECTIVES.register("covlr")
class CoVLR(Objective):
    needs_reference = True
    name = "covlr"

    def __init__(
        self,
        alpha: float = 0.01,
        beta: float = 1.0,
        temperature: float = 0.07,
        learnable_temperature: bool = True,
        relation: str = "row_kl",
        relation_temperature: float = 0.1,
        modalities: str = "both",
        second_order: bool = False,
        virtual_params: str = "all",
        consistency_weight: float = 0.0,
        consistency_temperature: float = 0.1,
        local_loss: bool = False,
    ):
        super().__init__()
        if virtual_params not in VIRTUAL_PARAMS:
            raise ValueError(f"objective.virtual_params must be one of {VIRTUAL_PARAMS}, got '{virtual_params}'")
        if modalities not in MODALITIES:
            raise ValueError(f"objective.modalities must be one of {MODALITIES}, got '{modalities}'")
        if alpha == 0 and type(self) is CoVLR and (second_order or virtual_params != "all"):
            option = "second_order=true" if second_order else f"virtual_params={virtual_params}"
            raise ConfigError(
                f"objective.{option} cannot act with objective.alpha=0 (no virtual step is taken); "
                "use objective=relation_kd for the control, or alpha > 0"
            )
        if beta == 0:
            raise ConfigError(
                f"objective.beta=0 turns the relation term of objective={self.name} off: that is objective=infonce"
            )
        self.relation = relation_loss(relation)
        self.temperature = Temperature(temperature, learnable_temperature)
        self.alpha, self.beta, self.relation_temperature = alpha, beta, relation_temperature
        self.modalities, self.second_order, self.virtual_params = modalities, second_order, virtual_params
        self.consistency_weight, self.consistency_temperature = consistency_weight, consistency_temperature
        self.local_loss = bool(local_loss)
        self._checked = False  # options that cannot act are refused at the first step (_check_can_act)

    def consistency(self, v, t, ids) -> dict[str, torch.Tensor]:
        """InfoNCE over the global batch; ``local_loss``: this rank's rows only (`InfoNCE`'s option).
        The ranks' mean is the global loss, so DDP's average and the virtual step's explicit one
        (`average_gradients`) give the global gradient either way."""
        rows = local_rows(v.shape[0]) if self.local_loss else None
        v_all, t_all, ids_all = gather_with_grad(v), gather_with_grad(t), gather_no_grad(ids)
        return contrastive_terms(v_all, t_all, ids_all, self.temperature(), rows)

    def caption_consistency(self, t: torch.Tensor, t_pair: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """NT-Xent between the captions and their paired captions over the global batch; captions of
        the same image are positives of each other, a caption is never its own candidate."""
        z = torch.cat([gather_with_grad(t), gather_with_grad(t_pair)])
        ids = gather_no_grad(ids).repeat(2)
        logits = (z @ z.T / self.consistency_temperature).fill_diagonal_(float("-inf"))
        positives = (ids[:, None] == ids[None, :]).fill_diagonal_(False).to(z.dtype)
        targets = positives / positives.sum(dim=1, keepdim=True)
        log_p = F.log_softmax(logits, dim=1).masked_fill(positives == 0, 0.0)
        return -(log_p * targets).sum(dim=1).mean()

    def _caption_pairs(self, batch: dict) -> bool:
        """Whether the caption-consistency term is on; refused (one line) when the batch has no second caption."""
        if not self.consistency_weight:
            return False
        if "pair_input_ids" not in batch:
            raise ConfigError(
                f"objective.consistency_weight={self.consistency_weight} needs a second caption per pair: "
                "set data.paired_captions=true"
            )
        return True

    def preservation(self, v, t, reference) -> torch.Tensor:
        total = v.new_zeros(())
        if self.modalities in ("image", "both"):
            total = total + self.relation(
                gather_with_grad(v), gather_no_grad(reference["image"]), self.relation_temperature
            )
        if self.modalities in ("text", "both"):
            total = total + self.relation(
                gather_with_grad(t), gather_no_grad(reference["text"]), self.relation_temperature
            )
        return total

    def forward(self, image_emb, text_emb, image_ids, reference=None) -> dict[str, torch.Tensor]:
        """The alpha = 0 objective: InfoNCE + beta * relation loss at theta itself (no virtual step),
        from one forward pass: `relation_kd`, the control that isolates the meta step."""
        if reference is None:
            raise ValueError(f"objective={self.name} needs reference embeddings")
        return {
            **self.consistency(image_emb, text_emb, image_ids),
            "relation": self.beta * self.preservation(image_emb, text_emb, reference),
        }

    def _check_can_act(self, encoder) -> None:
        if world_size() > 1 and self.second_order:
            raise ConfigError(
                "objective.second_order=true cannot run under DDP: the gradient of the virtual step would have "
                "to flow back through cross-rank collectives twice, which gloo/NCCL all_gather cannot do here; "
                "use second_order=false (first order) or one process"
            )
        for device in ("cuda", "cpu"):
            if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.float16:
                raise ConfigError(
                    f"objective={self.name} cannot take its virtual step under fp16 autocast "
                    "(trainer.precision=16-mixed): "
                    "the inner gradient would bypass the GradScaler and underflow; use trainer.precision=bf16-mixed "
                    "or 32-true"
                )
        if getattr(encoder, "grad_checkpointing", False) and self.reruns_towers:
            raise ConfigError(
                f"objective={self.name} re-runs the towers with stepped weights (torch.func.functional_call), and "
                "gradient checkpointing would recompute them in backward with the original weights: set "
                "model.grad_checkpointing=false, or objective.virtual_params=projections (the towers then run once)"
            )
        names = [n for n, p in encoder.named_parameters() if p.requires_grad]
        if not names:
            raise ConfigError(f"objective={self.name}: no trainable encoder parameter takes the virtual step")
        if self.virtual_params == "projections" and not any(n.endswith(PROJECTION_PARAMS) for n in names):
            raise ConfigError(
                "objective.virtual_params=projections, but the encoder has no trainable projections "
                "(model.embed_dim=null keeps the towers' joint space with identity projections): the virtual "
                "step would move nothing; use virtual_params=all"
            )

    @property
    def reruns_towers(self) -> bool:
        """Whether the virtual step re-runs the towers with stepped weights (``torch.func.functional_call``):
        alpha > 0 and ``virtual_params=all``. Gradient checkpointing and compiled towers cannot follow it."""
        return self.alpha > 0 and self.virtual_params == "all"

    def meta_terms(self, encoder, images, input_ids, attention_mask, ids, reference) -> dict[str, torch.Tensor]:
        """All terms of one meta step for ``encoder`` (a `DualEncoder`); their sum's gradient is the update."""
        return self._meta_step(encoder, images, input_ids, attention_mask, ids, reference)[0]

    def _meta_step(
        self, encoder, images, input_ids, attention_mask, ids, reference, keep_graph: bool = False
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One meta step, every mode through the same code: the terms, and the caption embeddings at
        theta (what the caption-consistency term reuses, so captions are embedded once per step;
        ``keep_graph`` keeps their graph alive past the inner gradient for it).

        The towers run once at theta. The inner gradient grad L_c(theta) is taken for the parameters
        that step (``virtual_params``: every trainable one, or the projections alone, where autograd
        stops at the projections' inputs and nothing runs through the towers), and the meta-test
        forward evaluates L_r at theta' = theta - alpha * grad: the whole encoder re-run with the
        stepped weights, or the same tower outputs re-projected (exact: the relation loss still
        reaches the towers through them, so one backward pass through the towers serves L_c and
        L_r(theta') together).

        First order with every parameter stepping: grad L_c(theta) is computed once, for every
        trainable parameter (the objective's temperature included), and reused as the L_c part of
        the update through ``itc_grad``, a term whose value is 0 and whose gradient is that vector;
        the ``itc_*`` values are then reported detached. This saves a second backward pass through
        L_c. Second order keeps the whole graph, since the update differentiates through grad L_c;
        attention then runs on the math kernel (the fused ones are not twice differentiable).
        """
        if not self._checked:
            self._check_can_act(encoder)
            self._checked = True
        kernel = sdpa_kernel(SDPBackend.MATH) if self.second_order else contextlib.nullcontext()
        with kernel:
            fi, ft = encoder.tower_features(images, input_ids, attention_mask)
            v, t = F.normalize(encoder.image_proj(fi), dim=-1), F.normalize(encoder.text_proj(ft), dim=-1)
            terms = self.consistency(v, t, ids)
            every = self.virtual_params == "all"
            stepped = [
                (n, p)
                for n, p in encoder.named_parameters()
                if p.requires_grad and (every or n.endswith(PROJECTION_PARAMS))
            ]
            carried = every and not self.second_order  # grad L_c doubles as the L_c part of the update
            extra = [(f"objective.{i}", p) for i, p in enumerate(p for p in self.parameters() if p.requires_grad)]
            wanted = stepped + extra if carried else stepped
            inner = torch.autograd.grad(
                terms["itc_i2t"] + terms["itc_t2i"],
                [p for _, p in wanted],
                create_graph=self.second_order,
                retain_graph=self.second_order or not carried or keep_graph,
                allow_unused=True,
            )
            grads = average_gradients(list(inner))  # autograd.grad bypasses DDP's all-reduce
            fast = {n: p - self.alpha * g for (n, p), g in zip(stepped, grads, strict=False) if g is not None}
            if every:
                v_fast, t_fast = functional_call(encoder, fast, (images, input_ids, attention_mask), strict=False)
            else:
                v_fast, t_fast = _reproject(encoder, fast, "image", fi), _reproject(encoder, fast, "text", ft)
            relation = self.beta * self.preservation(v_fast, t_fast, reference)
        if not carried:
            return {**terms, "relation": relation}, t
        carrier = sum((p * g).sum() for (_, p), g in zip(wanted, grads, strict=False) if g is not None)
        detached = {k: x.detach() for k, x in terms.items()}
        return {**detached, "itc_grad": carrier - carrier.detach(), "relation": relation}, t

    def batch_terms(self, encoder, batch: dict, reference) -> dict[str, torch.Tensor]:
        """The meta step needs the encoder itself (the virtual step re-runs it with stepped
        weights), so CoVLR overrides the base method; with alpha = 0 it is the base method's one
        forward. The caption-consistency term reuses that step's caption embeddings."""
        pairs = self._caption_pairs(batch)
        images, input_ids, attention_mask = batch["images"], batch["input_ids"], batch["attention_mask"]
        ids = batch["image_idx"]
        if reference is None:
            raise ValueError(f"objective={self.name} needs a reference")
        if self.alpha == 0:  # no virtual step: one forward, the relation loss at theta
            v, t = encoder(images, input_ids, attention_mask)
            terms = self(v, t, ids, reference=reference_rows(reference, batch, v.dtype))
        else:
            dtype = next(p.dtype for p in encoder.parameters() if p.is_floating_point())
            rows = reference_rows(reference, batch, dtype)
            terms, t = self._meta_step(encoder, images, input_ids, attention_mask, ids, rows, keep_graph=pairs)
        if pairs:
            t_pair = encoder.embed_texts(batch["pair_input_ids"], batch["pair_attention_mask"])
            terms["caption_consistency"] = self.consistency_weight * self.caption_consistency(t, t_pair, ids)
        return terms

    def log_values(self):
        return {"temperature": float(self.temperature().detach())}


@OBJECTIVES.register("relation_kd")
class RelationKD(CoVLR):
    """The control arm: InfoNCE + beta * L_r(theta), CoVLR without its virtual step (alpha = 0),
    on the same relation options and code. What CoVLR gains over it is the meta step's doing."""

    name = "relation_kd"

    def __init__(self, **kwargs):
        for option in ("alpha", "second_order", "virtual_params"):
            if option in kwargs:
                raise ConfigError(f"objective.{option} has no meaning for relation_kd (it takes no virtual step)")
        super().__init__(alpha=0.0, **kwargs)


def _reproject(encoder, fast: dict[str, torch.Tensor], side: str, features: torch.Tensor) -> torch.Tensor:
    """``side``'s tower outputs through its projection with the stepped weights in ``fast``, normalised."""
    prefix = f"{side}_proj."
    weights = {k[len(prefix) :]: w for k, w in fast.items() if k.startswith(prefix)}
    projection = getattr(encoder, f"{side}_proj")
    return F.normalize(functional_call(projection, weights, (features,), strict=False), dim=-1)
