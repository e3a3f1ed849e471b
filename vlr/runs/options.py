"""Options checked before any work starts: each option's type and range, every number finite,
and keys on the command line that the configuration does not have ("did you mean ...?").

Without this, a bad value surfaces where it is first used: ``model.optimizer.lr=nan`` as
torch's "Invalid learning rate", an ``inf`` weight as a 100-line traceback at the first step,
``data.batch_size=abc`` deep in a DataLoader. `check_options` names the option and what it
must be, in one line, before data or towers are built. The schema holds the options every
run has; the constructors behind them still check what only they can know.
"""

from __future__ import annotations

import difflib
import functools
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from vlr.errors import ConfigError

# option -> (kind, lowest, highest, may be null); kind: "int" | "float" | "bool"
SCHEMA: dict[str, tuple[str, float | None, float | None, bool]] = {
    "seed": ("int", 0, 2**32 - 1, False),
    "num_threads": ("int", 1, None, True),
    "rankings_topk": ("int", 1, None, False),
    "data.batch_size": ("int", 1, None, False),
    "data.eval_batch_size": ("int", 1, None, False),
    "data.num_workers": ("int", 0, None, False),
    "data.image_size": ("int", 1, None, True),
    "data.captions_per_image": ("int", 1, None, False),
    "data.num_train": ("int", 1, None, False),
    "data.num_val": ("int", 1, None, False),
    "data.num_test": ("int", 1, None, False),
    "data.eval_folds": ("int", 1, None, False),
    "data.shuffle": ("bool", None, None, False),
    "data.augment": ("bool", None, None, False),
    "model.embed_dim": ("int", 1, None, True),  # null: the towers' joint space (CLIP)
    "model.optimizer.lr": ("float", 0, None, False),
    "model.optimizer.weight_decay": ("float", 0, None, False),
    "model.tokenizer.max_length": ("int", 1, None, True),
    "model.tokenizer.vocab_size": ("int", 1, None, True),
    "trainer.max_epochs": ("int", -1, None, True),
    "trainer.max_steps": ("int", -1, None, True),
    "trainer.accumulate_grad_batches": ("int", 1, None, False),
    "trainer.gradient_clip_val": ("float", 0, None, True),
    "trainer.log_every_n_steps": ("int", 1, None, False),
    "trainer.check_val_every_n_epoch": ("int", 1, None, True),
    "callbacks.last_checkpoint.every_n_steps": ("int", 0, None, False),
    "eval.rerank.k": ("int", 0, None, False),
    "eval.rerank.batch_size": ("int", 1, None, False),
    "eval.rerank.itc_weight": ("float", 0, None, False),
    "model.fusion.negative_temperature": ("float", 0, None, False),
    "model.fusion.negative_temperature_start": ("float", 0, None, True),  # null: no curriculum
    "model.fusion.negative_anneal_fraction": ("float", 0, 1, False),
    "model.fusion.lr_scale": ("float", 0, None, False),
}
# a learning rate, a temperature, a share of training or a rate factor of exactly 0 is no
# setting at all: refused, unlike the other lower bounds
EXCLUSIVE_LOWER = {
    "model.optimizer.lr",
    "model.fusion.negative_temperature",
    "model.fusion.negative_temperature_start",
    "model.fusion.negative_anneal_fraction",
    "model.fusion.lr_scale",
}


def _select(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    """(present, value) of ``key``; absent when a parent node is missing or not a mapping."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False, None
        node = node.get(part)
    return True, node


def _numbers(node: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every float in ``node`` with its dotted key."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            if OmegaConf.is_missing(node, key):
                continue
            try:
                value = node[key]
            except Exception:  # an interpolation that only resolves at run time (hydra:...)
                continue
            yield from _numbers(value, f"{prefix}{key!s}.")
    elif isinstance(node, ListConfig):
        for i, value in enumerate(node):
            yield from _numbers(value, f"{prefix}{i}.")
    elif isinstance(node, float):
        yield prefix.rstrip("."), node


def _wanted(key: str, kind: str, low: float | None, high: float | None) -> str:
    """What ``key`` must be, in the words the constructors' own checks use."""
    if kind == "bool":
        return "true or false"
    if kind == "int" and low == 1 and high is None:
        return "a positive integer"
    what = "an integer" if kind == "int" else "a finite number"
    if low is not None:
        what += f" {'>' if key in EXCLUSIVE_LOWER else '>='} {low:g}"
    if high is not None:
        what += f" {'and ' if low is not None else ''}<= {high:g}"
    return what


def _check(key: str, value: Any, kind: str, low: float | None, high: float | None, nullable: bool) -> None:
    if value is None and nullable:
        return
    if kind == "bool":
        ok = isinstance(value, bool)
    else:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        ok = number and (kind == "float" or isinstance(value, int)) and math.isfinite(value)
        if ok and low is not None:
            ok = value > low if key in EXCLUSIVE_LOWER else value >= low
        if ok and high is not None:
            ok = value <= high
    if not ok:
        raise ConfigError(
            f"{key} must be {_wanted(key, kind, low, high)}, got {'null' if value is None else repr(value)}"
        )


def _data_files(data: DictConfig) -> list[str]:
    """What a data preset expects under ``data.root``: its annotation file(s) and image folder(s)."""
    files = [str(data.annotation)] if data.get("annotation") else []
    files += [str(v) for v in (data.get("annotations") or {}).values()]
    folders = [data.get("image_dir"), data.get("image_root"), *(data.get("image_dirs") or {}).values()]
    return list(dict.fromkeys(files + [f"{f}/" for f in folders if f]))


def check_data_root(cfg: DictConfig) -> None:
    """A dataset folder that is not there, said once with what it must contain (the synthetic
    data is generated into its folder, so only other sources are checked)."""
    data = cfg.get("data")
    # synthetic data is generated into its folder; shard patterns may be absolute (root unused)
    if not data or data.get("source") in ("synthetic", "shards") or not data.get("root") or "://" in str(data.root):
        return
    root = Path(str(data.root))
    if not root.is_dir():
        wanted = _data_files(data)
        what = f"it must contain {', '.join(wanted)}" if wanted else "it must hold the dataset"
        raise ConfigError(f"data.root={root}: no such folder; {what} (docs/data.md)")


def check_options(cfg: DictConfig) -> None:
    """Raise `ConfigError` naming the first option whose value a run cannot use: a wrong type,
    out of range (`SCHEMA`), any number that is NaN or infinite, a dataset folder not there."""
    for key, (kind, low, high, nullable) in SCHEMA.items():
        present, value = _select(cfg, key)
        if present:
            _check(key, value, kind, low, high, nullable)
    for key, value in _numbers(cfg):
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
    check_run_length(cfg)
    check_rerank(cfg)
    check_data_root(cfg)


def check_rerank(cfg: DictConfig) -> None:
    """``eval.rerank.k`` re-ranks with the ITM head of a fusion encoder: a model without one
    (a run trained without ``fusion=default``) is refused rather than evaluated without it."""
    _, k = _select(cfg, "eval.rerank.k")
    _, fusion = _select(cfg, "model.fusion")
    if k and fusion is None:
        raise ConfigError(
            f"eval.rerank.k={k} re-ranks with the ITM head of a fusion encoder, and this model has none: "
            "train with fusion=default (docs/fusion.md), or leave eval.rerank.k at 0"
        )


def check_run_length(cfg: DictConfig) -> None:
    """``trainer.max_epochs=-1`` is Lightning's "no epoch limit": without ``max_steps`` the run
    never ends, and the learning-rate schedule (its length) cannot be built."""
    _, epochs = _select(cfg, "trainer.max_epochs")
    _, steps = _select(cfg, "trainer.max_steps")
    if epochs == -1 and (steps is None or steps == -1):
        raise ConfigError(
            "trainer.max_epochs=-1 trains forever: set trainer.max_steps or a positive trainer.max_epochs"
        )


def config_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every dotted key of ``cfg`` (mappings only: the keys an override can name)."""
    keys = []
    for key in cfg.keys():
        full = f"{prefix}{key!s}"
        keys.append(full)
        try:
            value = cfg.get(key)
        except Exception:
            continue
        if isinstance(value, DictConfig):
            keys += config_keys(value, f"{full}.")
    return keys


def did_you_mean(key: str, keys: list[str]) -> str:
    """`` (did you mean `data.batch_size`?)`` for the closest keys, or "" when none is close:
    the whole key compared, and the last part among the siblings of its parent."""
    keys = [k for k in keys if not k.rpartition(".")[2].startswith("_")]  # _target_ and the like
    close = difflib.get_close_matches(key, keys, n=2, cutoff=0.8)
    if not close:
        parent, _, leaf = key.rpartition(".")
        siblings = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == parent]
        close = [f"{parent}.{s}" if parent else s for s in difflib.get_close_matches(leaf, siblings, n=2, cutoff=0.6)]
    return f" (did you mean {' or '.join(f'`{c}`' for c in close)}?)" if close else ""


# Hydra's flags after which the command line is not one composition of this config (another
# config, help, a rerun): the key check leaves those to Hydra
_OTHER_COMPOSITION = frozenset(
    "-h --help --hydra-help -cn --config-name -cp --config-path -cd --config-dir --experimental-rerun "
    "--info -i --shell-completion -sc".split()
)


def unknown_key_message(config_name: str, arguments: list[str]) -> str | None:
    """One line for an override of a key the composed configuration does not have: the key and
    its close matches, and nothing else (Hydra's own advice, to add it with ``+``, is the wrong
    fix for a typo, and the run it starts fails later).
    None when the command line composes (sweeps are checked through their other overrides)."""
    from hydra import compose, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException, OverrideParseException

    if any(a.split("=", 1)[0] in _OTHER_COMPOSITION for a in arguments):
        return None
    tokens = [a for a in arguments if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(tokens)
    except OverrideParseException:
        return None  # Hydra says what is wrong with the syntax
    plain = [o.input_line for o in parsed if not o.is_sweep_override() and o.input_line]
    with initialize_config_module(config_module="vlr.conf", version_base="1.3"):
        try:
            compose(config_name, overrides=plain)
            return None
        except ConfigCompositionException as err:
            text = str(err)
        bad = next((o for o in parsed if f"Could not override '{o.key_or_group}'" in text), None)
        if bad is None or bad.key_or_group.startswith("hydra"):  # Hydra's own settings: Hydra says
            return None
        groups = [o.input_line for o in parsed if o is not bad and not o.is_sweep_override() and o.input_line]
        try:
            keys = config_keys(compose(config_name, overrides=groups))
        except ConfigCompositionException:
            keys = config_keys(compose(config_name))
    key = bad.key_or_group
    return f"{key}: no such option{did_you_mean(key, keys)}"


def checked_command_line(config_name: str):
    """Decorate a ``hydra.main`` entry point: an override of a key the configuration does not
    have ends the command with `unknown_key_message` on one line (exit 1), before Hydra runs."""

    def decorate(main):
        @functools.wraps(main)
        def wrapper(*args, **kwargs):
            message = unknown_key_message(config_name, sys.argv[1:])
            if message:
                print(f"error: {message}", file=sys.stderr)
                sys.exit(1)
            return main(*args, **kwargs)

        return wrapper

    return decorate
