"""VizWiz-Captions (photos taken by blind people: a naturally imbalanced dataset), official files.

``annotations/{train,val}.json`` are COCO-style (``images[] {id, file_name}``,
``annotations[] {image_id, caption, is_rejected, is_precanned}``), images in ``train/`` and
``val/``. Rejected captions (crowd workers' unusable ones) and pre-canned ones ("Quality
issues are too severe to recognize visual content.") are dropped by default; an image left
without captions goes with them. The official test captions are not public, so vlr tests
on the official val set and validates on the last ``val_images`` images of the train file
(held out of training): selection never sees the test images.

The structure-aware distillation release's own lists (ALBEF style, ``vizwiz_{train,val,test}.json``)
are read by the ``lavis`` source: ``data=vizwiz_lavis``.
"""

from __future__ import annotations

from pathlib import Path

from vlr.data.coco_captions import read_coco_captions
from vlr.data.corpus import CaptionSplit
from vlr.data.karpathy import AnnotationError


def caption_filter(drop_rejected: bool, drop_precanned: bool):
    def keep(annotation: dict) -> bool:
        return not (drop_rejected and annotation.get("is_rejected")) and not (
            drop_precanned and annotation.get("is_precanned")
        )

    return keep


def read_vizwiz(
    root: str | Path,
    split: str,
    annotations: dict,
    image_dirs: dict,
    val_images: int = 1000,
    drop_rejected: bool = True,
    drop_precanned: bool = True,
) -> CaptionSplit:
    """``split`` of VizWiz-Captions: train = the train file minus its last ``val_images`` images,
    val = those images, test = the official val file."""
    root, keep = Path(root), caption_filter(drop_rejected, drop_precanned)
    if split == "test":
        return read_coco_captions(root / annotations["val"], root / image_dirs["val"], "test", keep_annotation=keep)
    full = read_coco_captions(root / annotations["train"], root / image_dirs["train"], split, keep_annotation=keep)
    if not 0 < val_images < full.num_images:
        raise AnnotationError(
            f"{root / annotations['train']}: data.val_images={val_images} must be between 1 and the "
            f"{full.num_images - 1} train images that keep a caption"
        )
    cut = full.num_images - val_images
    return full.keep_images(list(range(cut)) if split == "train" else list(range(cut, full.num_images)))
