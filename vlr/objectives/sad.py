"""Structure-aware relational distillation ("rebalanced" retrieval, TIP 2024): multi-granularity matching.

- instance level: symmetric InfoNCE (``itc_*``);
- representation level: one-direction InfoNCE from the student embedding to the reference
  feature of the same modality (``iic``, ``ttc``); positives are pairs of the same image.
  ``head_on=reference`` (the release's "teacher", also accepted): a new linear head maps the
  *reference* feature into the student's space and the student embedding itself is
  contrasted against it, with the shared learnable ITC temperature. ``head_on=student``: the
  head maps the student into the reference's space instead (the head then absorbs the
  mismatch, so the retrieval embedding is constrained less).
- structure level: the student's off-diagonal in-batch similarity matrix R_S is matched
  to the fused reference R_E = lambda R_T + (1 - lambda) R_I (``kd``); ``kdi`` and
  ``kdt`` (R_I and R_T against R_E) only move lambda. lambda = sigmoid(a free parameter),
  so it stays in (0, 1) and never sticks at a bound with zero gradient. With MAE and
  equal kdi/kdt weights the two terms are lambda*c and (1 - lambda)*c (c = mean|R_T - R_I|),
  whose sum does not depend on lambda: lambda then moves through kd alone. The release
  behaves the same way; vlr reproduces it.
Default weights are the release's (1 ITC, 1 IIC, 2 TTC, 2 KD, 1 KDI, 1 KDT).

Two-stage schedule (the release's recipe, the default when training from scratch:
``stage1_epochs=half`` is half of ``trainer.max_epochs``, rounded down): for the first
``stage1_epochs`` epochs only ITC counts (the other terms are computed with weight 0, so every parameter
still takes part in the loss and DDP needs no unused-parameter search); at the first
stage-2 epoch the `ObjectiveSchedule` callback restores the best stage-1 checkpoint (by the monitored val
metric) when ``stage2_from=best``, then all terms train. The optimizer and the LR
schedule continue, where the release starts a new run: one run, one schedule.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from vlr.errors import ConfigError
from vlr.objectives.base import OBJECTIVES, Objective, Stages
from vlr.objectives.distributed import gather_no_grad, gather_with_grad, local_rows
from vlr.objectives.infonce import contrastive_terms, same_image_targets
from vlr.objectives.relations import MATRIX_DISTANCES, relation_matrix
from vlr.objectives.temperature import Temperature

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = {"itc": 1.0, "iic": 1.0, "ttc": 2.0, "kd": 2.0, "kdi": 1.0, "kdt": 1.0}
STUDENTS = ("image", "text", "mean")
HEADS_ON = ("reference", "student")


@OBJECTIVES.register("sad")
class StructureAwareDistillation(Objective):
    needs_reference = True

    def __init__(
        self,
        embed_dim: int | None = None,
        image_reference_dim: int | None = None,
        text_reference_dim: int | None = None,
        temperature: float = 0.07,
        learnable_temperature: bool = True,
        head_on: str = "reference",
        distill_temperature: float | None = None,
        relation_temperature: float = 0.07,
        learnable_relation_temperature: bool = False,
        lambda_init: float = 0.5,
        learnable_lambda: bool = True,
        distance: str = "mae",
        student: str = "mean",
        weights: dict | None = None,
        stage1_epochs: int | str = 0,
        stage2_from: str = "best",
        local_loss: bool = False,
    ):
        super().__init__()
        if distance not in MATRIX_DISTANCES:
            raise ConfigError(f"objective.distance must be one of {MATRIX_DISTANCES.names()}, got '{distance}'")
        if student not in STUDENTS:
            raise ConfigError(f"objective.student must be one of {STUDENTS}, got '{student}'")
        head_on = "reference" if head_on == "teacher" else head_on  # the release's word for it
        if head_on not in HEADS_ON:
            raise ConfigError(f"objective.head_on must be one of {HEADS_ON}, got '{head_on}'")
        unknown = set(weights or {}) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ConfigError(
                f"objective.weights has unknown terms {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}"
            )
        if stage2_from not in ("best", "last"):
            raise ConfigError(f"objective.stage2_from must be 'best' or 'last', got '{stage2_from}'")
        if stage1_epochs != "half" and (
            isinstance(stage1_epochs, bool) or not isinstance(stage1_epochs, int) or stage1_epochs < 0
        ):
            raise ConfigError(f"objective.stage1_epochs must be an integer >= 0 or 'half', got {stage1_epochs!r}")
        if learnable_lambda and not 0.0 < lambda_init < 1.0:
            raise ConfigError(
                f"objective.lambda_init={lambda_init}: a learnable lambda is sigmoid(a) and lies strictly inside "
                "(0, 1); set objective.learnable_lambda=false to fix it at a bound"
            )
        if not 0.0 <= lambda_init <= 1.0:
            raise ConfigError(f"objective.lambda_init must lie in [0, 1], got {lambda_init}")
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        w = self.weights
        if (
            learnable_lambda
            and w["kd"] == 0
            and (distance == "mae" and w["kdi"] == w["kdt"] or w["kdi"] == w["kdt"] == 0)
        ):
            raise ConfigError(
                "objective.weights.kd=0 leaves the learnable lambda without a gradient (with distance=mae and equal "
                "kdi/kdt weights their sum does not depend on it); set objective.learnable_lambda=false"
            )
        self.stage1_option, self.stage2_from = stage1_epochs, stage2_from
        # 'half': resolved by set_epoch, from the run's epoch count
        self.stage1_epochs: int = 0 if isinstance(stage1_epochs, str) else stage1_epochs
        self.in_stage1 = self.stage1_epochs > 0
        self._warned_no_epochs = False
        self.temperature = Temperature(temperature, learnable_temperature)
        self.relation_temperature = Temperature(
            relation_temperature, learnable_relation_temperature, option="objective.relation_temperature"
        )
        self.distill_temperature = distill_temperature  # None: the shared ITC temperature
        self.head_on = head_on
        # the heads connect the student's space and the reference's; their sizes come from the
        # encoder and the reference (bind_reference), and must match them where given
        self.embed_dim, self.reference_dims = embed_dim, {"image": image_reference_dim, "text": text_reference_dim}
        # built here when every size is given (direct use), else by bind_reference
        self.image_head = self._head(embed_dim, image_reference_dim) if embed_dim and image_reference_dim else None
        self.text_head = self._head(embed_dim, text_reference_dim) if embed_dim and text_reference_dim else None
        if learnable_lambda:
            self.fusion_logit = nn.Parameter(torch.tensor(math.log(lambda_init / (1.0 - lambda_init))))
        else:
            self.register_buffer("fusion_fixed", torch.tensor(float(lambda_init)))
        self.distance, self.student = MATRIX_DISTANCES.get(distance), student
        self.local_loss = bool(local_loss)  # itc, iic and ttc: this rank's rows only (InfoNCE's option)

    def _head(self, embed_dim: int, reference_dim: int) -> nn.Linear:
        if self.head_on == "reference":
            return nn.Linear(reference_dim, embed_dim)
        return nn.Linear(embed_dim, reference_dim)

    def bind_reference(self, image_dim: int, text_dim: int, embed_dim: int) -> None:
        if self.embed_dim is not None and self.embed_dim != embed_dim:
            raise ConfigError(
                f"objective.embed_dim={self.embed_dim} but the encoder embeds in {embed_dim} dimensions; "
                "set it to null to take the encoder's size"
            )
        self.embed_dim = embed_dim
        for kind, dim in (("image", image_dim), ("text", text_dim)):
            given = self.reference_dims[kind]
            if given is not None and given != dim:
                raise ConfigError(
                    f"objective.{kind}_reference_dim={given} but the reference's {kind} features "
                    f"have {dim} dimensions; set it to null to take the reference's size"
                )
            if getattr(self, f"{kind}_head") is None:
                setattr(self, f"{kind}_head", self._head(embed_dim, dim))

    def _stage1_count(self, max_epochs: int | None, warn: bool = False) -> int:
        """``stage1_epochs=half``: half of the run's epochs (rounded down) train ITC alone; a run
        bounded by steps alone (no epoch count) has no stage 1, with a warning."""
        if not isinstance(self.stage1_option, str):  # a number (the constructor accepts 'half' or an int)
            return self.stage1_option
        if max_epochs is None or max_epochs < 0:
            if warn and not self._warned_no_epochs:
                self._warned_no_epochs = True
                log.warning(
                    "objective.stage1_epochs=half: the run has no epoch count (trainer.max_epochs=%s), so every "
                    "term trains from the start; set objective.stage1_epochs to a number for two stages",
                    max_epochs,
                )
            return 0
        return max_epochs // 2

    def set_epoch(self, epoch: int, max_epochs: int | None) -> None:
        self.stage1_epochs = self._stage1_count(max_epochs)
        self.in_stage1 = epoch < self.stage1_epochs

    def stages(self, max_epochs: int | None) -> Stages | None:
        """Stage 2 starts after ``stage1_epochs``, from the best stage-1 checkpoint when
        ``stage2_from=best``, and chooses its best checkpoint among its own epochs."""
        stage1 = self._stage1_count(max_epochs, warn=True)
        return Stages(stage1, from_best=self.stage2_from == "best") if stage1 > 0 else None

    def fusion_weight(self) -> torch.Tensor:
        """lambda, the weight of R_T in R_E: sigmoid of a free parameter (or fixed)."""
        if hasattr(self, "fusion_logit"):
            return torch.sigmoid(self.fusion_logit)
        return self.get_buffer("fusion_fixed")

    def _distill(self, head: nn.Linear, student: torch.Tensor, reference: torch.Tensor, targets: torch.Tensor):
        """One-direction InfoNCE, rows = the (gathered) student embeddings."""
        tau = self.temperature() if self.distill_temperature is None else self.distill_temperature
        if self.head_on == "reference":
            logits = student @ F.normalize(head(reference), dim=-1).T / tau
        else:
            logits = F.normalize(head(student), dim=-1) @ F.normalize(reference, dim=-1).T / tau
        return -(F.log_softmax(logits, dim=1) * targets).sum(dim=1).mean()

    def forward(self, image_emb, text_emb, image_ids, reference=None):
        if reference is None:
            raise ValueError("objective=sad needs reference embeddings")
        if self.image_head is None or self.text_head is None:
            raise RuntimeError("objective=sad: bind_reference() was not called (the module does it)")
        v, t, ids = gather_with_grad(image_emb), gather_with_grad(text_emb), gather_no_grad(image_ids)
        u, w = gather_no_grad(reference["image"]), gather_no_grad(reference["text"])
        # local_loss: the contrastive terms' rows of this rank, against the whole gathered batch
        # (the ranks' mean is the global term); the relation terms compare whole B x B matrices
        rows = local_rows(image_emb.shape[0]) if self.local_loss else slice(None)
        wt = {k: (x if k == "itc" or not self.in_stage1 else 0.0) for k, x in self.weights.items()}
        terms = {k: wt["itc"] * x for k, x in contrastive_terms(v, t, ids, self.temperature(), rows).items()}
        targets = same_image_targets(ids)[rows]
        terms["iic"] = wt["iic"] * self._distill(self.image_head, v[rows], u, targets)
        terms["ttc"] = wt["ttc"] * self._distill(self.text_head, t[rows], w, targets)

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
