"""Image transforms: deterministic for evaluation, light augmentation for training."""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transform(
    image_size: int,
    train: bool,
    augment: bool,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
):
    """Resize + centre crop for eval. Training augmentation is a mild random resized crop only:
    flips and colour jitter would contradict captions that name sides and colours."""
    if train and augment:
        head = [T.RandomResizedCrop(image_size, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True)]
    else:
        head = [T.Resize(image_size, antialias=True), T.CenterCrop(image_size)]
    return T.Compose([*head, T.ToTensor(), T.Normalize(mean, std)])


def tower_transform(config: dict, train: bool):
    """Preprocessing from a tower's data config (``input_size``, ``interpolation``, ``mean``,
    ``std``, ``crop_pct``): timm's eval transform, and for training a random resized crop
    (scale 0.5-1) at the same size and normalisation, as LAVIS/ALBEF train. No flips:
    captions name left and right."""
    import timm.data

    if not train:
        return timm.data.create_transform(**config, is_training=False)
    size = config["input_size"][-2:]
    mode = T.InterpolationMode(config.get("interpolation", "bicubic"))
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=mode, antialias=True),
            T.ToTensor(),
            T.Normalize(config["mean"], config["std"]),
        ]
    )
