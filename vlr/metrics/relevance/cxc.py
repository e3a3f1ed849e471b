"""``relevance=cxc``: Crisscrossed Captions (CxC) human ratings for COCO.

CxC (Parekh et al., EACL 2021) rates pairs on a 0-5 scale: caption pairs (STS), image pairs
(SIS) and caption-image pairs (SITS), for the Karpathy val and test images of COCO. Its files
stay as they are (``{sts,sis,sits}_{val,test}.csv``: two ids, ``agg_score``,
``sampling_method``); captions are named by COCO caption annotation id
(``COCO_val2014:sentid:732091``), images by their val2014 file name. This module reads them
(a small reader beside the metrics: vlr.metrics imports nothing from vlr.data), maps the ids
to a split's items, and scores a model's embeddings:

- ``{direction}/cxc_spearman``: Spearman's rho between the model's cosine and the human score
  over the rated pairs of the split (t2t: STS, i2i: SIS, i2t and t2i: SITS -- one number,
  logged under both cross-modal directions);
- ``{direction}/cxc_R@k``: CxC recall. Positives are the COCO pairs (an image's own captions,
  the other captions of a caption's image) plus every rated pair scoring at least the
  threshold (``relevance.thresholds``: 3 for STS and SITS, 2.5 for SIS, the paper's values);
  queries are those with at least one positive (i2i: images with a positive SIS pair).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vlr.errors import ConfigError
from vlr.metrics.ranking import TIE_TOLERANCE, best_positive_rank

TASKS = {"sts": ("caption1", "caption2"), "sis": ("image1", "image2"), "sits": ("caption", "image")}
DEFAULT_THRESHOLDS = {"sts": 3.0, "sis": 2.5, "sits": 3.0}
_TRAILING_NUMBER = re.compile(r"(\d+)\D*$")


def coco_id(name: str) -> int:
    """The COCO id in a CxC caption id (``COCO_val2014:sentid:732091``) or an image file name
    (``COCO_val2014_000000205866.jpg``, ``000000205866.jpg``)."""
    match = _TRAILING_NUMBER.search(name)
    if match is None:
        raise ValueError(f"no COCO id in {name!r}")
    return int(match.group(1))


def read_cxc(root: str | Path, split: str) -> dict[str, list[tuple[int, int, float]]]:
    """``{task: [(id1, id2, score), ...]}`` of ``{task}_{split}.csv`` under ``root`` (COCO ids)."""
    root = Path(root)
    out: dict[str, list[tuple[int, int, float]]] = {}
    for task, (first, second) in TASKS.items():
        path = root / f"{task}_{split}.csv"
        if not path.is_file():
            raise ConfigError(
                f"relevance=cxc: {path} is missing (relevance.root holds CxC's {{sts,sis,sits}}_{split}.csv)"
            )
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {first, second, "agg_score"} - set(reader.fieldnames or [])
            if missing:
                raise ConfigError(f"{path}: columns {sorted(missing)} missing (found {reader.fieldnames})")
            out[task] = [(coco_id(r[first]), coco_id(r[second]), float(r["agg_score"])) for r in reader]
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson's correlation of the average ranks (ties share their mean rank)."""
    if len(x) < 2:
        return float("nan")
    rx, ry = _average_ranks(np.asarray(x, dtype=np.float64)), _average_ranks(np.asarray(y, dtype=np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def _average_ranks(a: np.ndarray) -> np.ndarray:
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    starts = np.r_[True, sorted_a[1:] != sorted_a[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], len(a)] - 1
    mean_rank = (first + last) / 2.0
    ranks = np.empty(len(a))
    ranks[order] = mean_rank[group]
    return ranks


@dataclass
class CxCRatings:
    """A split's rated pairs as split indices: ``sts`` (caption, caption), ``sis`` (image,
    image), ``sits`` (caption, image), each ``[n, 2]`` with ``[n]`` scores."""

    text_to_image: torch.Tensor
    pairs: dict[str, torch.Tensor]
    scores: dict[str, torch.Tensor]
    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    matched: dict[str, tuple[int, int]] = field(default_factory=dict)  # task -> (pairs in the split, in the files)

    @classmethod
    def from_ids(
        cls,
        ratings: Mapping[str, list[tuple[int, int, float]]],
        image_ids: Sequence[int],
        caption_ids: Sequence[int] | None,
        text_to_image,
        thresholds: Mapping[str, float] | None = None,
    ) -> CxCRatings:
        """Keep the rated pairs whose items are both in the split (``image_ids``: COCO id of each
        image; ``caption_ids``: annotation id of each caption, None when the data has none)."""
        image_at = {int(i): k for k, i in enumerate(image_ids)}
        caption_at = {} if caption_ids is None else {int(c): k for k, c in enumerate(caption_ids)}
        lookup = {"sts": (caption_at, caption_at), "sis": (image_at, image_at), "sits": (caption_at, image_at)}
        pairs, scores, matched = {}, {}, {}
        for task, rows in ratings.items():
            first, second = lookup[task]
            kept = [(first[a], second[b], s) for a, b, s in rows if a in first and b in second]
            pairs[task] = torch.tensor([(a, b) for a, b, _ in kept], dtype=torch.long).reshape(-1, 2)
            scores[task] = torch.tensor([s for _, _, s in kept], dtype=torch.float64)
            matched[task] = (len(kept), len(rows))
        return cls(
            torch.as_tensor(text_to_image).long(),
            pairs,
            scores,
            {**DEFAULT_THRESHOLDS, **dict(thresholds or {})},
            matched,
        )

    @classmethod
    def for_split(cls, cfg: Mapping, split: str, targets: Mapping) -> CxCRatings:
        """The ratings of CxC's ``split`` files (``val`` or ``test``) for the split ``targets``."""
        root = cfg.get("root")
        if not root:
            raise ConfigError("relevance=cxc needs relevance.root: the folder of CxC's CSV files")
        image_ids = [coco_id(Path(n).stem) for n in targets["image_names"]]
        out = cls.from_ids(
            read_cxc(root, split),
            image_ids,
            targets.get("caption_ids"),
            targets["text_to_image"],
            cfg.get("thresholds"),
        )
        if not any(n for n, _ in out.matched.values()):
            raise ConfigError(
                f"relevance=cxc: none of CxC's {split} pairs ({root}) names an image or caption of the {split} split "
                f"of {targets.get('source', 'this data')}; CxC rates COCO's Karpathy val/test images"
            )
        return out

    def describe(self) -> dict:
        return {"thresholds": self.thresholds, "pairs_in_split": {t: n for t, (n, _) in self.matched.items()}}

    def spearman(self, images: torch.Tensor, texts: torch.Tensor) -> dict[str, float]:
        """Spearman's rho between cosine and human score, per direction with rated pairs."""
        images, texts = _unit(images), _unit(texts)
        sides = {"sts": (texts, texts), "sis": (images, images), "sits": (texts, images)}
        out: dict[str, float] = {}
        for task, names in (("sts", ("t2t",)), ("sis", ("i2i",)), ("sits", ("i2t", "t2i"))):
            p = self.pairs[task]
            if p.shape[0] < 2:
                continue
            a, b = sides[task]
            cos = (a[p[:, 0].to(a.device)] * b[p[:, 1].to(b.device)]).sum(1).double().cpu().numpy()
            rho = spearman(cos, self.scores[task].numpy())
            out |= {f"{name}/cxc_spearman": rho for name in names}
        return out

    def positive_pairs(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The rated positives (score >= threshold) as (query, gallery) index pairs per direction;
        STS and SIS pairs count both ways. The COCO pairs are added by `recall`."""
        out = {}
        for task, name in (("sts", "t2t"), ("sis", "i2i"), ("sits", "t2i")):
            keep = self.pairs[task][self.scores[task] >= self.thresholds[task]]
            if task != "sits":
                keep = torch.cat([keep, keep.flip(1)])
            out[name] = (keep[:, 0], keep[:, 1])
        out["i2t"] = (out["t2i"][1], out["t2i"][0])
        return out

    def recall(
        self,
        images: torch.Tensor,
        texts: torch.Tensor,
        ks: Sequence[int],
        ties: str = "expected",
        tolerance=TIE_TOLERANCE,
    ) -> dict:
        """CxC R@k per direction over the queries that have a positive (chunked: COCO-5K's
        25k x 25k caption mask is never held whole)."""
        dev = images.device
        t2i = self.text_to_image.to(dev)
        num_images = images.shape[0]
        coco = {  # the COCO pairs of a chunk of queries
            "t2t": lambda q: t2i[q][:, None] == t2i[None, :],
            "i2i": lambda q: torch.zeros(q.numel(), num_images, dtype=torch.bool, device=dev),
            "t2i": lambda q: t2i[q][:, None] == torch.arange(num_images, device=dev)[None, :],
            "i2t": lambda q: q[:, None] == t2i[None, :],
        }
        sides = {"t2t": (texts, texts), "i2i": (images, images), "i2t": (images, texts), "t2i": (texts, images)}
        out: dict[str, float] = {}
        for name, (qs, gs) in self.positive_pairs().items():
            queries, gallery = sides[name]
            qs, gs = qs.to(dev), gs.to(dev)

            def positives(q, name=name, qs=qs, gs=gs, num=queries.shape[0]):
                mask = coco[name](q)
                at = torch.full((num,), -1, dtype=torch.long, device=dev)
                at[q] = torch.arange(q.numel(), device=dev)
                hit = at[qs] >= 0
                mask[at[qs[hit]], gs[hit]] = True
                return mask

            self_index = torch.arange(queries.shape[0], device=dev) if name in ("t2t", "i2i") else None
            ranks = best_positive_rank(queries, gallery, positives, self_index, tolerance)
            if not ranks.valid.any():
                continue
            ranks = ranks.select(ranks.valid)
            out |= {f"{name}/cxc_R@{k}": float(100.0 * ranks.hit_probability(k, ties).mean()) for k in ks}
        return out

    def metrics(self, images: torch.Tensor, texts: torch.Tensor, ks: Sequence[int], **ranking) -> dict:
        """Spearman per direction and CxC R@k (``ranking``: `recall`'s ``ties`` and ``tolerance``)."""
        return self.spearman(images, texts) | self.recall(images, texts, ks, **ranking)


def _unit(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def rated_caption_pairs(captions_json: str | Path, cxc_root: str | Path, splits=("val", "test")) -> dict:
    """The STS pairs of CxC's ``splits`` whose two captions are both in ``captions_json`` (a COCO
    captions file, e.g. captions_val2017.json): ``{"a": [...], "b": [...], "score": array,
    "image_of": {annotation id: image id}, "captions": {annotation id: caption}, "a_ids", "b_ids"}``."""
    import json

    data = json.loads(Path(captions_json).read_text())
    captions = {int(a["id"]): str(a["caption"]) for a in data["annotations"]}
    image_of = {int(a["id"]): int(a["image_id"]) for a in data["annotations"]}
    pairs = [(a, b, s) for split in splits for a, b, s in read_cxc(cxc_root, split)["sts"]]
    kept = [(a, b, s) for a, b, s in pairs if a in captions and b in captions]
    return {
        "a": [captions[a] for a, _, _ in kept],
        "b": [captions[b] for _, b, _ in kept],
        "a_ids": [a for a, _, _ in kept],
        "b_ids": [b for _, b, _ in kept],
        "score": np.array([s for _, _, s in kept]),
        "image_of": image_of,
        "captions": captions,
        "total": len(pairs),
    }


def caption_rho(pairs: Mapping, scorers: Mapping) -> dict[str, float]:
    """Spearman's rho between each scorer's pair scores (``scorer(a_list, b_list) -> [n]``) and
    the human STS scores of ``pairs`` (`rated_caption_pairs`)."""
    return {
        name: spearman(np.asarray(score(pairs["a"], pairs["b"]), dtype=np.float64), pairs["score"])
        for name, score in scorers.items()
    }
