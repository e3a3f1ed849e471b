"""In-batch relation losses between student embeddings and reference embeddings.

Shared by CoVLR's meta-test task and SAD's relational matching. All take the
(already gathered) student [B, d] and reference [B, d'] rows of the same items.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlr.errors import ConfigError
from vlr.registry import Registry

# CoVLR / relation_kd's ``objective.relation``: losses between student and reference embeddings
RELATION_LOSSES: Registry = Registry("relation loss")


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    n = m.shape[0]
    return m.masked_select(~torch.eye(n, dtype=torch.bool, device=m.device)).view(n, n - 1)


def relation_matrix(x: torch.Tensor, temperature: torch.Tensor | float = 1.0) -> torch.Tensor:
    """[B, B-1] cosine similarities of every row to every other row, divided by ``temperature``."""
    x = F.normalize(x, dim=-1)
    return _off_diagonal(x @ x.T) / temperature


def kl_rows(student_logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(reference) || softmax(student)) per row, averaged over rows."""
    log_p_ref, log_p_student = F.log_softmax(reference_logits, dim=1), F.log_softmax(student_logits, dim=1)
    return (log_p_ref.exp() * (log_p_ref - log_p_student)).sum(dim=1).mean()


@RELATION_LOSSES.register("row_kl")
def row_kl(student: torch.Tensor, reference: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """KL(R_ref || R_student), R_ik = softmax over k != i of cosine similarity / temperature; mean over rows."""
    return kl_rows(relation_matrix(student, temperature), relation_matrix(reference, temperature))


@RELATION_LOSSES.register("distance_kl")
def distance_kl(student: torch.Tensor, reference: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The CoVLR release's relation KD: softmax over all B^2 pairwise L2 distances (+1e-6), KL(P_T || P_S) / B."""
    b = student.shape[0]
    d_s = torch.cdist(F.normalize(student, dim=-1), F.normalize(student, dim=-1)).flatten() / temperature
    d_t = torch.cdist(F.normalize(reference, dim=-1), F.normalize(reference, dim=-1)).flatten() / temperature
    p_s, p_t = F.softmax(d_s, dim=0) + 1e-6, F.softmax(d_t, dim=0) + 1e-6
    return (p_t * (p_t.log() - p_s.log())).sum() / b


@RELATION_LOSSES.register("similarity_mae")
def similarity_mae(student: torch.Tensor, reference: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean absolute difference of the off-diagonal cosine-similarity matrices (divided by temperature)."""
    return (relation_matrix(student) - relation_matrix(reference)).abs().mean() / temperature


# SAD's ``objective.distance``: distances between two relation matrices (both already computed)
MATRIX_DISTANCES: Registry = Registry("relation-matrix distance")


@MATRIX_DISTANCES.register("mae")
def matrix_mae(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().mean()


@MATRIX_DISTANCES.register("mse")
def matrix_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).mean()


@MATRIX_DISTANCES.register("wasserstein")
def matrix_wasserstein(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1-D Wasserstein-1 distance between the value distributions of each row, averaged."""
    return (a.sort(dim=1).values - b.sort(dim=1).values).abs().mean()


# "kl": row-softmax KL(R_target || R) -- our reading; the release's cumulative-sum "kl" differs
MATRIX_DISTANCES.register("kl")(kl_rows)


def relation_loss(kind: str):
    if kind == "mae":  # renamed: SAD's distance=mae compares temperature-scaled relation matrices
        raise ConfigError(
            "objective.relation=mae is now called similarity_mae (SAD's objective.distance=mae is another measure)"
        )
    if kind not in RELATION_LOSSES:
        raise ConfigError(f"objective.relation must be one of {RELATION_LOSSES.names()}, got '{kind}'")
    return RELATION_LOSSES.get(kind)
