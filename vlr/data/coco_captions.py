"""Reader for the official COCO captions files, with optional instance categories as i2i labels.

``captions_<split>2017.json``: ``images[] {id, file_name}``, ``annotations[] {image_id, caption}``.
``instances_<split>2017.json`` (optional): ``categories[] {id}``, ``annotations[] {image_id,
category_id}``; each image gets the multi-hot set of its categories (80 columns, in the
order of ``categories``), so i2i recall counts an image relevant when it shares one.
Images keep the annotation file's order; captions of an image keep theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from vlr.data.corpus import CaptionSplit
from vlr.data.karpathy import AnnotationError, check_caption, field, load_json


def read_coco_captions(
    captions_path: str | Path,
    image_dir: str | Path,
    split: str,
    instances_path: str | Path | None = None,
    keep_annotation: Callable[[dict], bool] | None = None,
) -> CaptionSplit:
    """``keep_annotation``: annotations it returns False for are dropped (VizWiz's rejected and
    pre-canned captions); an image left without captions is dropped with them."""
    path, image_dir = Path(captions_path), Path(image_dir)
    data = load_json(path)
    images = field(data, "images", "the top level", path, list)
    annotations = field(data, "annotations", "the top level", path, list)
    order: dict = {}
    names: list[str] = []
    for i, img in enumerate(images):
        image_id = field(img, "id", f"images[{i}]", path)
        order[image_id] = len(names)
        names.append(field(img, "file_name", f"images[{i}]", path, str))
    by_image: list[list[str]] = [[] for _ in names]
    ids_by_image: list[list[int]] = [[] for _ in names]  # caption annotation ids (CxC names captions by them)
    for k, ann in enumerate(annotations):
        where = f"annotations[{k}]"
        image_id = field(ann, "image_id", where, path)
        if image_id not in order:
            raise AnnotationError(f"{path}: {where}.image_id={image_id} is not in images[]")
        if keep_annotation is not None and not keep_annotation(ann):
            continue
        raw = field(ann, "caption", where, path)
        by_image[order[image_id]].append(check_caption(raw, f"{where}.caption", path, names[order[image_id]]))
        ann_id = ann.get("id")
        ids_by_image[order[image_id]].append(int(ann_id) if isinstance(ann_id, int) else -1)
    keep = [i for i, caps in enumerate(by_image) if caps]  # COCO lists a few images with no captions
    if not keep:
        raise AnnotationError(f"{path}: split '{split}' has no images with captions")
    captions, t2i, caption_ids = [], [], []
    for new, i in enumerate(keep):
        captions += by_image[i]
        caption_ids += ids_by_image[i]
        t2i += [new] * len(by_image[i])
    labels = None
    if instances_path:
        ids = [img_id for img_id, i in sorted(order.items(), key=lambda kv: kv[1])]
        labels = _instance_labels(Path(instances_path), [ids[i] for i in keep])
    return CaptionSplit(
        name=split,
        image_paths=[image_dir / names[i] for i in keep],
        captions=captions,
        text_to_image=torch.tensor(t2i, dtype=torch.long),
        labels=labels,
        source=str(path),
        caption_ids=caption_ids if all(c >= 0 for c in caption_ids) else None,
    )


def _instance_labels(path: Path, image_ids: list) -> torch.Tensor:
    data = load_json(path)
    categories = field(data, "categories", "the top level", path, list)
    column = {field(c, "id", f"categories[{j}]", path): j for j, c in enumerate(categories)}
    row = {image_id: r for r, image_id in enumerate(image_ids)}
    labels = torch.zeros(len(image_ids), len(column), dtype=torch.bool)
    for k, ann in enumerate(field(data, "annotations", "the top level", path, list)):
        image_id, category = (
            field(ann, "image_id", f"annotations[{k}]", path),
            field(ann, "category_id", f"annotations[{k}]", path),
        )
        if category not in column:
            raise AnnotationError(f"{path}: annotations[{k}].category_id={category} is not in categories[]")
        if image_id in row:
            labels[row[image_id], column[category]] = True
    return labels
