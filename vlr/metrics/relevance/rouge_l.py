"""ROUGE-L relevance between captions and images: the graded gains of the papers' single-modal NDCG.

R[q, j] = ROUGE-L of caption q against all captions of image j as references, as
coco-caption computes it: LCS precision (over q's length) and recall (over the
reference's length) per reference, the max of each over the references, then
F = (1 + b^2) P R / (R + b^2 P) with b = 1.2.

Speed: each word is mapped to one Unicode code point so rapidfuzz's bit-parallel
C++ ``LCSseq`` gives word-level LCS lengths for a whole chunk of pairs at once.
The matrix is cached on disk, keyed by the captions' tokens and their image ids.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from rapidfuzz import process
from rapidfuzz.distance import LCSseq
from tqdm.auto import tqdm

from vlr.io import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

BETA = 1.2
CACHE_VERSION = "rouge-l-v1"
_WORD = re.compile(r"[a-z0-9]+")
_CHUNK = 1024


def tokenize_caption(caption: str) -> list[str]:
    """Lower-cased word tokens with punctuation removed."""
    return _WORD.findall(caption.lower())


def default_cache_dir() -> Path:
    return Path(os.environ.get("VLR_CACHE_DIR", Path.home() / ".cache" / "vlr")) / "rouge"


def _encode(token_lists: list[list[str]]) -> list[str]:
    """One code point per distinct word (skipping the surrogate block), so string LCS = word LCS."""
    vocab: dict[str, str] = {}
    out = []
    for tokens in token_lists:
        chars = []
        for tok in tokens:
            ch = vocab.get(tok)
            if ch is None:
                code = 0x100 + len(vocab)
                code += 0x800 if code >= 0xD800 else 0
                ch = vocab[tok] = chr(code)
            chars.append(ch)
        out.append("".join(chars))
    return out


def _cache_key(token_lists: list[list[str]], t2i: np.ndarray) -> str:
    h = hashlib.sha256(f"{CACHE_VERSION}|beta={BETA}|".encode())
    for tokens in token_lists:
        h.update(" ".join(tokens).encode())
        h.update(b"\n")
    h.update(t2i.astype(np.int64).tobytes())
    return h.hexdigest()[:24]


def _compute(token_lists: list[list[str]], t2i: torch.Tensor, num_images: int, progress: bool) -> torch.Tensor:
    strings = _encode(token_lists)
    lengths = torch.tensor([len(s) for s in strings], dtype=torch.float32)
    n = len(strings)
    out = torch.zeros(n, num_images, dtype=torch.float32)
    ref_len = lengths.clamp_min(1.0)[None, :]
    index = t2i[None, :]
    bar = tqdm(total=n, desc="ROUGE-L relevance", unit="caption", delay=3.0, disable=not progress)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        lcs = torch.from_numpy(
            process.cdist(strings[start:stop], strings, scorer=LCSseq.similarity, dtype=np.int32, workers=-1)
        ).float()
        prec = lcs / lengths[start:stop].clamp_min(1.0)[:, None]
        rec = lcs / ref_len
        rows = stop - start
        p_max = torch.zeros(rows, num_images).scatter_reduce_(1, index.expand(rows, -1), prec, "amax")
        r_max = torch.zeros(rows, num_images).scatter_reduce_(1, index.expand(rows, -1), rec, "amax")
        denom = r_max + BETA**2 * p_max
        f = torch.where(denom > 0, (1 + BETA**2) * p_max * r_max / denom.clamp_min(1e-12), torch.zeros_like(denom))
        out[start:stop] = f
        bar.update(rows)
    bar.close()
    return out


def _read_cache(path: Path, shape: tuple[int, int]) -> torch.Tensor | None:
    """The cached matrix when it is whole and plausible (checksum, shape, float32, finite, within
    [0, 1]); otherwise None, with a warning naming the file, so it is recomputed and rewritten."""
    if not path.exists():
        return None
    try:
        cached = np.load(path, allow_pickle=False)
        recorded = path.with_suffix(".sha256").read_text().strip()
        problem = (
            "checksum differs"
            if hashlib.sha256(np.ascontiguousarray(cached).tobytes()).hexdigest() != recorded
            else f"shape {cached.shape}, expected {shape}"
            if cached.shape != shape
            else f"dtype {cached.dtype}, expected float32"
            if cached.dtype != np.float32
            else "non-finite values"
            if not np.isfinite(cached).all()
            else "values outside [0, 1]"
            if cached.size and (cached.min() < 0 or cached.max() > 1)
            else None
        )
    except (OSError, ValueError, EOFError) as err:
        problem = f"unreadable ({str(err).splitlines()[0][:120] if str(err) else type(err).__name__})"
    if problem is None:
        return torch.from_numpy(cached)
    log.warning("ROUGE-L cache %s is damaged (%s); recomputing it", path, problem)
    return None


def rouge_l_relevance(
    captions: Sequence[str] | Sequence[Sequence[str]],
    text_to_image: torch.Tensor | Sequence[int],
    *,
    num_images: int | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> torch.Tensor:
    """ROUGE-L relevance [num_captions, num_images] of every caption against every image's captions.

    ``captions`` are raw strings (tokenised with :func:`tokenize_caption`) or ready token
    lists (e.g. Karpathy ``tokens``). The result is cached under ``cache_dir``
    (default ``$VLR_CACHE_DIR/rouge`` or ``~/.cache/vlr/rouge``).
    """
    t2i = torch.as_tensor(text_to_image).long().cpu()
    if t2i.ndim != 1 or t2i.numel() != len(captions):
        raise ValueError(
            f"text_to_image must have one entry per caption ({len(captions)}), got shape {tuple(t2i.shape)}"
        )
    if t2i.numel() and int(t2i.min()) < 0:
        raise ValueError("text_to_image has negative image indices")
    n_img = int(t2i.max()) + 1 if num_images is None else num_images
    if t2i.numel() and int(t2i.max()) >= n_img:
        raise ValueError(f"text_to_image points to image {int(t2i.max())} but num_images={n_img}")
    token_lists = [tokenize_caption(c) if isinstance(c, str) else [str(t).lower() for t in c] for c in captions]

    path = None
    if use_cache:
        key = _cache_key(token_lists, t2i.numpy())
        path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = path / f"rouge_l_{key}_{len(token_lists)}x{n_img}.npy"
        cached = _read_cache(path, (len(token_lists), n_img))
        if cached is not None:
            return cached
    rel = _compute(token_lists, t2i, n_img, progress)
    if path is not None:
        digest = hashlib.sha256(rel.numpy().tobytes()).hexdigest()
        atomic_write(path, lambda fh: np.save(fh, rel.numpy(), allow_pickle=False), "ROUGE-L cache")
        atomic_write_text(path.with_suffix(".sha256"), digest + "\n", "ROUGE-L cache checksum")
    return rel


def rouge_l_pairs(candidates: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L F (beta 1.2) of each candidate against its one reference, pair by pair: the
    papers' relevance of two captions, for correlating with people's ratings of the pair."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} references")
    tokens = [tokenize_caption(c) for c in [*candidates, *references]]
    strings = _encode(tokens)
    cand, ref = strings[: len(candidates)], strings[len(candidates) :]
    out = np.zeros(len(cand))
    for i, (a, b) in enumerate(zip(cand, ref, strict=True)):
        lcs = LCSseq.similarity(a, b)
        p, r = lcs / max(1, len(a)), lcs / max(1, len(b))
        denom = r + BETA**2 * p
        out[i] = (1 + BETA**2) * p * r / denom if denom > 0 else 0.0
    return out
