"""open_clip model names: one place that turns ``model.arch`` into a name open_clip knows.

The towers (`vlr.towers.open_clip_towers`) and the tokenizer (`vlr.towers.tokenizer`) both
resolve the same ``arch``; a model-config JSON must be registered before either asks.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from vlr.errors import ConfigError


def open_clip_name(arch: str) -> str:
    """The open_clip model name of ``arch``: an open_clip model name, ``hf-hub:``/``local-dir:``
    as open_clip reads them, or a model-config ``.json`` file. A file is registered under a
    name of its own content (``<stem>-<hash>``), so a file named like a built-in model, or two
    files with one name, each build what they say."""
    import open_clip

    path = Path(str(arch))
    if path.suffix == ".json":
        if not path.is_file():
            raise ConfigError(f"model.arch={arch}: no such model-config file")
        data = path.read_bytes()
        name = f"{path.stem}-{hashlib.sha1(data).hexdigest()[:10]}"
        if name not in open_clip.list_models():
            folder = Path(tempfile.gettempdir()) / "vlr-open-clip-configs"
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{name}.json"
            if not target.is_file():
                tmp = folder / f".{name}.{os.getpid()}.tmp"
                tmp.write_bytes(data)
                os.replace(tmp, target)
            open_clip.add_model_config(target)
        return name
    if ":" not in str(arch) and str(arch) not in open_clip.list_models():
        raise ConfigError(
            f"model.arch={arch} is not an open_clip model (one of open_clip.list_models(), a model-config .json, "
            "hf-hub:<repo> or local-dir:<dir>)"
        )
    return str(arch)
