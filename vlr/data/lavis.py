"""Reader for the ALBEF / BLIP / X-VLM / LAVIS annotation lists.

Evaluation files: ``[{image, caption: [str, ...]}]``; training files: ``[{image, caption: str,
image_id}]`` with one entry per caption. Either form is accepted for any split: entries of
the same image (by ``image_id`` when given, else by ``image``) are merged, in order of
first appearance. Images resolve to ``image_root / image``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vlr.data.corpus import CaptionSplit
from vlr.data.karpathy import AnnotationError, check_caption, field, load_json


def read_lavis(path: str | Path, image_root: str | Path, split: str) -> CaptionSplit:
    path, image_root = Path(path), Path(image_root)
    entries = load_json(path)
    if not isinstance(entries, list):
        raise AnnotationError(f"{path}: expected a list of {{image, caption}} entries, got {type(entries).__name__}")
    order: dict = {}
    images: list[str] = []
    captions_of: list[list[str]] = []
    for k, entry in enumerate(entries):
        where = f"[{k}]"
        image = field(entry, "image", where, path, str)
        caption = field(entry, "caption", where, path)
        key = entry.get("image_id", image)
        if key not in order:
            order[key] = len(images)
            images.append(image)
            captions_of.append([])
        if isinstance(caption, list):
            if not caption:
                raise AnnotationError(f"{path}: {where}.caption is an empty list ({image})")
            caps = [check_caption(c, f"{where}.caption[{j}]", path, image) for j, c in enumerate(caption)]
        else:
            caps = [check_caption(caption, f"{where}.caption", path, image)]
        captions_of[order[key]] += caps
    if not images:
        raise AnnotationError(f"{path}: split '{split}' has no images (the list is empty)")
    t2i = [i for i, caps in enumerate(captions_of) for _ in caps]
    return CaptionSplit(
        name=split,
        image_paths=[image_root / image for image in images],
        captions=[c for caps in captions_of for c in caps],
        text_to_image=torch.tensor(t2i, dtype=torch.long),
        source=str(path),
    )
