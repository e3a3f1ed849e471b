"""Image loading with errors that name the file."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from vlr.errors import UserError


class ImageLoadError(UserError, OSError):
    """An image file is missing, truncated or not an image."""


def load_rgb(path: Path) -> Image.Image:
    """``path``: a file, or anything else with ``read_bytes()`` (an image inside a tar shard,
    `vlr.data.shards.ShardMember`, whose ``str`` names shard and key)."""
    try:
        source = path if isinstance(path, (str, os.PathLike)) else io.BytesIO(path.read_bytes())
        with Image.open(source) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise ImageLoadError(f"image file not found: {path}") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"cannot decode image {path}: not an image format PIL can read") from None
    except (OSError, SyntaxError) as err:
        raise ImageLoadError(f"cannot decode image {path}: {_without_objects(str(err))}") from None


def _without_objects(text: str) -> str:
    """PIL's message less the repr of an in-memory stream (``<_io.BytesIO object at 0x...>``):
    the message names the file (or shard and key) already."""
    return re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", text).strip() or "unreadable data"
