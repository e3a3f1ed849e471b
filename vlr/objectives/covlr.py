"""CoVLR: cross-modal consistency (meta-train) coordinated with intra-modal relation preservation (meta-test).

    minimise  L_c(theta) + beta * L_r(theta - alpha * grad L_c(theta))

L_c is InfoNCE over the global batch; L_r keeps the in-batch relations of the image
and/or text embeddings close to the reference (teacher) embeddings, evaluated after the
virtual step (MLDG reading of the paper; the released code has no meta step).
First-order by default: grad L_c is a constant in the second term.

Distributed: ``torch.autograd.grad`` bypasses DDP's all-reduce, so the virtual-step
gradient is averaged across ranks explicitly; with the gradient-carrying gather this
equals the single-process gradient of the global-batch loss.
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from vlr.distributed import average_gradients, gather_no_grad, gather_with_grad
from vlr.objectives.base import OBJECTIVES, Objective
from vlr.objectives.infonce import Temperature, contrastive_terms
from vlr.objectives.relations import relation_loss

VIRTUAL_PARAMS = ("all", "projections")
PROJECTION_PARAMS = ("image_proj.weight", "image_proj.bias", "text_proj.weight", "text_proj.bias")
MODALITIES = ("image", "text", "both")


@OBJECTIVES.register("covlr")
class CoVLR(Objective):
    owns_training_step = True
    needs_teacher = True

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
    ):
        super().__init__()
        if virtual_params not in VIRTUAL_PARAMS:
            raise ValueError(f"objective.virtual_params must be one of {VIRTUAL_PARAMS}, got '{virtual_params}'")
        if modalities not in MODALITIES:
            raise ValueError(f"objective.modalities must be one of {MODALITIES}, got '{modalities}'")
        self.relation = relation_loss(relation)
        self.temperature = Temperature(temperature, learnable_temperature)
        self.alpha, self.beta, self.relation_temperature = alpha, beta, relation_temperature
        self.modalities, self.second_order, self.virtual_params = modalities, second_order, virtual_params

    def consistency(self, v, t, ids) -> dict[str, torch.Tensor]:
        return contrastive_terms(gather_with_grad(v), gather_with_grad(t), gather_no_grad(ids), self.temperature())

    def preservation(self, v, t, teacher) -> torch.Tensor:
        total = v.new_zeros(())
        if self.modalities in ("image", "both"):
            total = total + self.relation(gather_with_grad(v), gather_no_grad(teacher["image"]), self.relation_temperature)
        if self.modalities in ("text", "both"):
            total = total + self.relation(gather_with_grad(t), gather_no_grad(teacher["text"]), self.relation_temperature)
        return total

    def meta_terms(self, encoder, images, input_ids, attention_mask, ids, teacher) -> dict[str, torch.Tensor]:
        """All terms of one meta step for ``encoder`` (a `DualEncoder`); their sum's gradient is the update.

        First order: grad L_c(theta) is computed once, for every trainable parameter (the
        objective's temperature included), and reused as the L_c part of the update through
        ``itc_grad``, a term whose value is 0 and whose gradient is that vector; the
        ``itc_*`` values are then reported detached. This saves a second backward pass
        through L_c. Second order keeps the whole graph, since the update differentiates
        through grad L_c.
        """
        v, t = encoder(images, input_ids, attention_mask)
        terms = self.consistency(v, t, ids)
        l_c = terms["itc_i2t"] + terms["itc_t2i"]
        trainable = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
        extra = [p for p in self.parameters() if p.requires_grad]
        wanted = trainable if self.second_order else trainable + [(f"objective.{i}", p) for i, p in enumerate(extra)]
        grads = torch.autograd.grad(
            l_c, [p for _, p in wanted], create_graph=self.second_order, retain_graph=self.second_order, allow_unused=True
        )
        grads = average_gradients(list(grads))  # autograd.grad bypasses DDP's all-reduce
        by_name = dict(zip((n for n, _ in wanted), grads))
        fast = {}
        for n, p in trainable:
            g = by_name[n]
            steps = g is not None and (self.virtual_params == "all" or n.endswith(PROJECTION_PARAMS))
            fast[n] = p - self.alpha * g if steps else p
        v_fast, t_fast = functional_call(encoder, fast, (images, input_ids, attention_mask), strict=False)
        relation = self.beta * self.preservation(v_fast, t_fast, teacher)
        if self.second_order:
            return {**terms, "relation": relation}
        carrier = sum((p * g).sum() for (_, p), g in zip(wanted, grads) if g is not None)
        return {
            **{k: x.detach() for k, x in terms.items()},
            "itc_grad": carrier - carrier.detach(),
            "relation": relation,
        }

    def training_step(self, module, batch: dict) -> dict[str, torch.Tensor]:
        teacher = module.teacher_embeddings(batch)
        return self.meta_terms(
            module.encoder, batch["images"], batch["input_ids"], batch["attention_mask"], batch["image_idx"], teacher
        )

    def log_values(self):
        return {"temperature": float(self.temperature().detach())}
