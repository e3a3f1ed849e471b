"""Structure preservation: how many of each item's neighbours survive training."""

from __future__ import annotations

import torch

from vlr.metrics.ranking import TIE_TOLERANCE, expected_shared_neighbours


@torch.no_grad()
def neighbourhood_overlap(
    emb: torch.Tensor, reference_emb: torch.Tensor, k: int, tolerance: float = TIE_TOLERANCE
) -> float:
    """Mean fraction of each item's top-k neighbours (self excluded) that are also its
    top-k neighbours under ``reference_emb``. Inner-product similarity; 1.0 = identical structure.

    Neighbours tied at the k-th place count fractionally (the expected overlap when ties
    are broken at random; scores within ``tolerance`` are tied, `vlr.metrics.ranking`), so
    duplicated or collapsed embeddings cannot score by luck of index order."""
    emb, reference_emb = torch.as_tensor(emb), torch.as_tensor(reference_emb)
    if emb.ndim != 2 or reference_emb.ndim != 2 or emb.shape[0] != reference_emb.shape[0]:
        raise ValueError(
            "emb and reference_emb must be 2-D with the same number of rows, got "
            f"{tuple(emb.shape)} and {tuple(reference_emb.shape)}"
        )
    if emb.shape[0] < 2:
        raise ValueError("neighbourhood_overlap needs at least 2 items")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    emb = emb.float() if emb.dtype in (torch.float16, torch.bfloat16) else emb
    reference_emb = reference_emb.to(emb.device)
    reference_emb = reference_emb.float() if reference_emb.dtype in (torch.float16, torch.bfloat16) else reference_emb
    k = min(k, emb.shape[0] - 1)
    return float((expected_shared_neighbours(emb, reference_emb, k, tolerance) / k).mean())
