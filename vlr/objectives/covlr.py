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
        """All terms of one meta step for ``encoder`` (a `DualEncoder`); differentiable w.r.t. its parameters."""
        v, t = encoder(images, input_ids, attention_mask)
        terms = self.consistency(v, t, ids)
        l_c = terms["itc_i2t"] + terms["itc_t2i"]
        named = {
            n: p for n, p in encoder.named_parameters()
            if p.requires_grad and (self.virtual_params == "all" or n.endswith(("image_proj.weight", "image_proj.bias", "text_proj.weight", "text_proj.bias")))
        }
        grads = torch.autograd.grad(l_c, list(named.values()), create_graph=self.second_order, retain_graph=True, allow_unused=True)
        grads = average_gradients(list(grads))
        fast = {n: p if g is None else p - self.alpha * (g if self.second_order else g.detach()) for (n, p), g in zip(named.items(), grads)}
        v_fast, t_fast = functional_call(encoder, fast, (images, input_ids, attention_mask), strict=False)
        terms["relation"] = self.beta * self.preservation(v_fast, t_fast, teacher)
        return terms

    def training_step(self, module, batch: dict) -> dict[str, torch.Tensor]:
        teacher = module.teacher_embeddings(batch)
        return self.meta_terms(
            module.encoder, batch["images"], batch["input_ids"], batch["attention_mask"], batch["image_idx"], teacher
        )

    def log_values(self):
        return {"temperature": float(self.temperature().detach())}
