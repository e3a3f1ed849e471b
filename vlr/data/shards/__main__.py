"""``python -m vlr.data.shards data=<preset> [data.root=...] out=<folder>``: shards of every split.

Reads each split as training would (``data.on_bad_image`` applies) and writes
``<out>/<split>-000000.tar`` ...; then ``data=shards data.root=<out>`` trains on them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from vlr.data.datamodule import RetrievalDataModule
from vlr.data.shards.write import write_split
from vlr.errors import ConfigError, report_user_errors

log = logging.getLogger(__name__)


def write_shards(cfg: DictConfig) -> Path:
    if not cfg.get("out"):
        raise ConfigError("out= must name the folder the shards go to")
    # shards of an earlier write would be read with the new ones (data=shards globs <split>-*.tar)
    present = sorted(p.name for name in cfg.splits for p in Path(cfg.out).glob(f"{name}-*.tar"))
    if present:
        raise ConfigError(
            f"out={cfg.out} already holds shards ({', '.join(present[:3])}{', ...' if len(present) > 3 else ''}): "
            "a split's shards would mix two writes; choose an empty folder or remove them"
        )
    datamodule: RetrievalDataModule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    out = Path(cfg.out)
    for name in cfg.splits:
        split = datamodule.split(name)
        shards = len(write_split(split, out, name, int(cfg.shard_size)))
        log.info(
            "%s: %d images, %d captions -> %d shard(s) in %s", name, split.num_images, split.num_captions, shards, out
        )
    print(f"shards written to {out}\n  train with: data=shards data.root={out}")
    return out


main = hydra.main(version_base="1.3", config_path="../../conf", config_name="write_shards")(
    report_user_errors(write_shards)
)


if __name__ == "__main__":
    main()
