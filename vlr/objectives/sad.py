"""Structure-aware relational distillation ("rebalanced" retrieval, TIP 2024): multi-granularity matching.

- instance level: symmetric InfoNCE (``itc_*``);
- representation level: one-direction InfoNCE from the student embedding, through a new
  linear head, to the reference feature of the same modality (``iic``, ``ttc``);
  positives are pairs of the same image;
- structure level: the student's off-diagonal in-batch similarity matrix R_S is matched
  to the fused reference R_E = lambda R_T + (1 - lambda) R_I (``kd``); ``kdi`` and
  ``kdt`` (R_I and R_T against R_E) only move lambda.
Default weights are the release's (1 ITC, 1 IIC, 2 TTC, 2 KD, 1 KDI, 1 KDT).

Two-stage schedule (the release's recipe, optional): for the first ``stage1_epochs``
epochs only ITC counts (the other terms are computed with weight 0, so every parameter
still takes part in the loss and DDP needs no unused-parameter search); at the first
stage-2 epoch the module restores the best stage-1 checkpoint (by the monitored val
metric) when ``stage2_from=best``, then all terms train. The optimizer and the LR
schedule continue, where the release starts a new run: one run, one schedule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlr.distributed import gather_no_grad, gather_with_grad
from vlr.objectives.base import OBJECTIVES, Objective
from vlr.objectives.infonce import Temperature, contrastive_terms, same_image_targets
from vlr.objectives.relations import kl_rows, relation_matrix

DEFAULT_WEIGHTS = {"itc": 1.0, "iic": 1.0, "ttc": 2.0, "kd": 2.0, "kdi": 1.0, "kdt": 1.0}
STUDENTS = ("image", "text", "mean")


def _mae(a, b):
    return (a - b).abs().mean()


def _mse(a, b):
    return (a - b).pow(2).mean()


def _wasserstein(a, b):
    """1-D Wasserstein-1 distance between the value distributions of each row, averaged."""
    return (a.sort(dim=1).values - b.sort(dim=1).values).abs().mean()


# "kl": row-softmax KL(R_target || R) -- our reading; the release's cumulative-sum "kl" differs
DISTANCES = {"mae": _mae, "mse": _mse, "kl": kl_rows, "wasserstein": _wasserstein}


@OBJECTIVES.register("sad")
class StructureAwareDistillation(Objective):
    needs_teacher = True

    def __init__(
        self,
        embed_dim: int | None = None,
        image_teacher_dim: int | None = None,
        text_teacher_dim: int | None = None,
        temperature: float = 0.07,
        learnable_temperature: bool = True,
        distill_temperature: float = 0.07,
        relation_temperature: float = 0.07,
        learnable_relation_temperature: bool = False,
        lambda_init: float = 0.5,
        distance: str = "mae",
        student: str = "mean",
        weights: dict | None = None,
        stage1_epochs: int = 0,
        stage2_from: str = "best",
    ):
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"objective.distance must be one of {sorted(DISTANCES)}, got '{distance}'")
        if student not in STUDENTS:
            raise ValueError(f"objective.student must be one of {STUDENTS}, got '{student}'")
        unknown = set(weights or {}) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"objective.weights has unknown terms {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}")
        if stage2_from not in ("best", "last"):
            raise ValueError(f"objective.stage2_from must be 'best' or 'last', got '{stage2_from}'")
        if stage1_epochs < 0:
            raise ValueError(f"objective.stage1_epochs must be >= 0, got {stage1_epochs}")
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.stage1_epochs, self.stage2_from, self.in_stage1 = stage1_epochs, stage2_from, stage1_epochs > 0
        self.temperature = Temperature(temperature, learnable_temperature)
        self.relation_temperature = Temperature(relation_temperature, learnable_relation_temperature)
        self.distill_temperature = distill_temperature
        # the heads map into the reference's spaces; their sizes come from the encoder and the
        # reference (bind_reference), and must match them where given
        self.embed_dim, self.teacher_dims = embed_dim, {"image": image_teacher_dim, "text": text_teacher_dim}
        # built here when every size is given (direct use), else by bind_reference
        self.image_head = nn.Linear(embed_dim, image_teacher_dim) if embed_dim and image_teacher_dim else None
        self.text_head = nn.Linear(embed_dim, text_teacher_dim) if embed_dim and text_teacher_dim else None
        self.fusion = nn.Parameter(torch.tensor(float(lambda_init)))
        self.distance, self.student = DISTANCES[distance], student

    def bind_reference(self, image_dim: int, text_dim: int, embed_dim: int) -> None:
        if self.embed_dim is not None and self.embed_dim != embed_dim:
            raise ValueError(f"objective.embed_dim={self.embed_dim} but the encoder embeds in {embed_dim} dimensions; "
                             "set it to null to take the encoder's size")
        self.embed_dim = embed_dim
        for kind, dim in (("image", image_dim), ("text", text_dim)):
            given = self.teacher_dims[kind]
            if given is not None and given != dim:
                raise ValueError(
                    f"objective.{kind}_teacher_dim={given} but the reference's {kind} features "
                    f"have {dim} dimensions; set it to null to take the reference's size"
                )
            if getattr(self, f"{kind}_head") is None:
                setattr(self, f"{kind}_head", nn.Linear(embed_dim, dim))

    def on_train_epoch_start(self, epoch: int) -> None:
        self.in_stage1 = epoch < self.stage1_epochs

    @property
    def restore_best_at_epoch(self) -> int | None:
        """The epoch at whose start the module restores the best checkpoint so far (stage 2's start)."""
        return self.stage1_epochs if self.stage1_epochs > 0 and self.stage2_from == "best" else None

    def fusion_weight(self) -> torch.Tensor:
        return self.fusion.clamp(0.0, 1.0)

    def _distill(self, head: nn.Linear, student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor):
        logits = F.normalize(head(student), dim=-1) @ F.normalize(teacher, dim=-1).T / self.distill_temperature
        return -(F.log_softmax(logits, dim=1) * targets).sum(dim=1).mean()

    def forward(self, image_emb, text_emb, image_ids, teacher=None):
        if teacher is None:
            raise ValueError("objective=sad needs reference embeddings (objective teacher)")
        if self.image_head is None or self.text_head is None:
            raise RuntimeError("objective=sad: bind_reference() was not called (the module does it)")
        v, t, ids = gather_with_grad(image_emb), gather_with_grad(text_emb), gather_no_grad(image_ids)
        u, w = gather_no_grad(teacher["image"]), gather_no_grad(teacher["text"])
        wt = {k: (x if k == "itc" or not self.in_stage1 else 0.0) for k, x in self.weights.items()}
        terms = {k: wt["itc"] * x for k, x in contrastive_terms(v, t, ids, self.temperature()).items()}
        targets = same_image_targets(ids)
        terms["iic"] = wt["iic"] * self._distill(self.image_head, v, u, targets)
        terms["ttc"] = wt["ttc"] * self._distill(self.text_head, t, w, targets)

        tau, lam = self.relation_temperature(), self.fusion_weight()
        h = {"image": v, "text": t, "mean": v + t}[self.student]
        r_s, r_i, r_t = relation_matrix(h, tau), relation_matrix(u, tau), relation_matrix(w, tau)
        r_e = lam * r_t + (1 - lam) * r_i
        terms["kd"] = wt["kd"] * self.distance(r_s, r_e)
        terms["kdi"] = wt["kdi"] * self.distance(r_i, r_e)
        terms["kdt"] = wt["kdt"] * self.distance(r_t, r_e)
        return terms

    def log_values(self):
        return {
            "temperature": float(self.temperature().detach()),
            "relation_temperature": float(self.relation_temperature().detach()),
            "lambda": float(self.fusion_weight().detach()),
            "stage": 1.0 if self.in_stage1 else 2.0,
        }
