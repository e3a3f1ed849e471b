"""Image-text matching (ITM) with in-batch hard negatives, as ALBEF and X-VLM train their fusion encoder.

For every pair of the global batch, one hard negative caption for its image and one hard
negative image for its caption are drawn with probability softmax(ITC similarity / tau),
positives by image id masked out (captions of one image, or one image twice in the batch, are
never negatives). The fusion encoder then classifies 3 pairs per row (positive, image with a
negative caption, caption with a negative image) as matched / not matched.

Sampling draws from a private `torch.Generator` (the caller seeds it from the training step,
so a resumed run draws the same negatives) over the gathered batch, identically on every
rank, with the rows taken in the order of their keys (the captions' dataset indices): the
draw follows the rows, not where they sit in the batch, so 2 ranks (whose gather lists rank 0's
rows, then rank 1's, where one process interleaves them) draw what one process draws for the
same global batch. Each rank then scores only its own rows' pairs (open_clip's ``local_loss``), the sum
normalised by the global pair count, so DDP's gradient average gives the single-process
gradient of the global loss (`vlr.objectives.distributed.gather_with_grad`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlr.objectives.distributed import gather_no_grad, gather_with_grad, local_rows, world_size

WEIGHT_FLOOR = 1e-4  # ALBEF's: every non-positive keeps a chance when the softmax underflows


def pad_tokens(x: torch.Tensor, length: int) -> torch.Tensor:
    """``x`` [B, L, ...] zero-padded along dim 1 to ``length`` (differentiable)."""
    extra = length - x.shape[1]
    if extra == 0:
        return x
    pad = [0, 0] * (x.ndim - 2) + [0, extra]
    return F.pad(x, pad)


def gather_padded_tokens(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states (with gradient) and their mask from every rank, padded to the longest
    sequence of any rank (each rank's loader pads to its own batch's longest caption)."""
    if world_size() == 1:
        return tokens, mask
    length = int(gather_no_grad(torch.tensor([tokens.shape[1]], device=tokens.device)).max())
    return gather_with_grad(pad_tokens(tokens, length)), gather_no_grad(pad_tokens(mask, length))


@torch.no_grad()
def sample_hard_negatives(
    sim: torch.Tensor,
    image_ids: torch.Tensor,
    generator: torch.Generator,
    temperature: float,
    keys: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(negative caption of each row's image, negative image of each row's caption), row indices
    into the batch, -1 where a row has no negative (everything in the batch shows its image).

    ``sim[i, j]``: ITC similarity of row i's image and row j's caption. Drawn on the CPU in
    float64 from ``generator``, so every device and rank draws the same; with ``keys`` (one per
    row, e.g. the captions' dataset indices) the rows are drawn in the order of their keys, so a
    permutation of the batch permutes the negatives with it."""
    if keys is not None and keys.shape != sim.shape[:1]:
        raise ValueError(f"keys: one per row, {sim.shape[0]} rows, got shape {tuple(keys.shape)}")
    # equal keys (a caption drawn twice in one global batch: a replaced bad image, a tiny split's
    # padding) keep their batch order, the one place where the rank layout can still show
    order = torch.arange(sim.shape[0]) if keys is None else torch.argsort(keys.detach().cpu(), stable=True)
    sim = sim.detach().double().cpu()[order][:, order]
    ids = image_ids.detach().cpu()[order]
    same = ids[:, None] == ids[None, :]

    def draw(scores: torch.Tensor) -> torch.Tensor:
        weights = (F.softmax(scores / temperature, dim=1) + WEIGHT_FLOOR).masked_fill(same, 0.0)
        has = weights.sum(dim=1) > 0
        out = torch.full((scores.shape[0],), -1, dtype=torch.long)
        if has.any():
            out[has] = torch.multinomial(weights[has], 1, generator=generator).squeeze(1)
        return out

    def back(drawn: torch.Tensor) -> torch.Tensor:
        """Drawn in key order -> batch rows: row order[i] gets column order[drawn[i]]."""
        out = torch.full_like(drawn, -1)
        out[order] = torch.where(drawn >= 0, order[drawn.clamp(min=0)], drawn)
        return out.to(image_ids.device)

    return back(draw(sim)), back(draw(sim.T))  # for each image a caption, for each caption an image


def itm_loss(
    fusion,
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    image_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    image_ids: torch.Tensor,
    generator: torch.Generator,
    temperature: float = 0.07,
    keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ITM cross-entropy of this rank's rows (their sum over the global pair count times the
    world size: the ranks' mean is the global batch's mean loss). Rank-local inputs; ``keys``:
    each row's caption index (`sample_hard_negatives`)."""
    rows = local_rows(image_emb.shape[0])
    v, t = gather_no_grad(image_emb.detach()), gather_no_grad(text_emb.detach())
    ids = gather_no_grad(image_ids)
    images = gather_with_grad(image_tokens)
    texts, masks = gather_padded_tokens(text_tokens, text_mask)
    keys = None if keys is None else gather_no_grad(keys)
    negative_text, negative_image = sample_hard_negatives(v @ t.T, ids, generator, temperature, keys)

    mine = torch.arange(v.shape[0], device=v.device)[rows]
    has_t, has_i = negative_text[mine] >= 0, negative_image[mine] >= 0
    caption_rows = torch.cat([mine, mine[has_i], negative_text[mine][has_t]])
    image_rows = torch.cat([mine, negative_image[mine][has_i], mine[has_t]])
    labels = torch.cat([torch.ones_like(mine), torch.zeros_like(caption_rows[mine.numel() :])])
    logits = fusion(texts[caption_rows], masks[caption_rows], images[image_rows])
    total_pairs = v.shape[0] + int((negative_text >= 0).sum()) + int((negative_image >= 0).sum())
    return F.cross_entropy(logits, labels, reduction="sum") * (world_size() / total_pairs)
