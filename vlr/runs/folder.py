"""A run folder belongs to one run: its configuration is checked before anything is written.

At its first start a run keeps its resolved configuration in ``<run dir>/run_config.yaml`` (and
every checkpoint carries it, `vlr.runs.checkpoints`). Starting the same folder again resumes that
run, so a configuration that differs in anything that changes what is trained (all but the
plumbing of `vlr.runs.naming.is_plumbing`: devices, workers, loggers, paths, ...) is refused in
one line listing the keys; ``resume_allow_changes=[key,...]`` continues with those changes, and
records them in ``<run dir>/config_changes.yaml``.

Hydra writes ``<run dir>/.hydra/{config,overrides,hydra}.yaml`` before vlr runs; a refused start
must not leave them describing a run that never happened (`vlr.eval` and `experiments.compare`
read them). So the files of the accepted start are kept in ``.hydra/accepted/`` and copied back
when a start is refused.

``resume=false`` in a folder that holds a run moves that run aside (its log file too), into
``<run dir>/replaced/<UTC time>/``, said in one line, and starts over.

Nothing is written into the folder before every check of a start passed: the configuration
(`check`), the lock, and the checkpoint it resumes from (`vlr.runs.Run.start`); then `accept`.
"""

from __future__ import annotations

import datetime
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from vlr.errors import UserError
from vlr.io import atomic_write_text
from vlr.runs.checkpoints import CONFIG_KEY
from vlr.runs.naming import is_plumbing

log = logging.getLogger(__name__)
RUN_CONFIG, CHANGES = "run_config.yaml", "config_changes.yaml"
ACCEPTED_HYDRA = "accepted"  # inside Hydra's output subdir (.hydra)
REPLACED = "replaced"
# what a run leaves in its folder (Hydra's own .hydra/ and log file are there before vlr runs)
RUN_FILES = (RUN_CONFIG, CHANGES, "checkpoints", "csv", "metrics.json", "evaluation.json", "wandb_run_id", "wandb",
             "tokenizer", "tensorboard", "mlruns", "rankings.safetensors")  # fmt: skip
# options that only say how a start proceeds, never what it trains
NOT_COMPARED = ("resume", "resume_allow_changes", "ckpt_path", "optimized_metric", "paths",
                "callbacks.model_checkpoint.dirpath", "callbacks.last_checkpoint.dirpath")  # fmt: skip


class RunConfigMismatch(UserError, ValueError):
    """A run folder was started again with a configuration that trains something else."""


def resolved(cfg: DictConfig) -> dict:
    """The run's own options as a plain resolved mapping (what `run_config.yaml` and checkpoints
    hold); Hydra's node, which a config composed in-process carries, is not an option of the run."""
    options = OmegaConf.masked_copy(cfg, [str(key) for key in cfg if key != "hydra"])
    return OmegaConf.to_container(options, resolve=True)  # type: ignore[return-value]


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flat(value, f"{prefix}{key}."))
        return flat or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


# of the callbacks, those that decide what is trained or which weights are tested; the others
# (progress, monitors, a test's probes) may come and go between starts
COMPARED_CALLBACKS = ("callbacks.model_checkpoint.", "callbacks.early_stopping.")


def _compared(key: str) -> bool:
    if key.startswith("callbacks.") and not key.startswith(COMPARED_CALLBACKS):
        return False
    return not is_plumbing(key) and not any(key == k or key.startswith(f"{k}.") for k in NOT_COMPARED)


# folders a run's paths lie in, compared relative to them: a run folder copied elsewhere (or the
# same data under another root) is the same run; longest first, so the run dir wins over the root
PLACES = (("paths.output_dir", "<run dir>"), ("data.root", "<data.root>"), ("paths.root_dir", "<root>"))


def _relative_to_places(flat: dict[str, Any]) -> dict[str, Any]:
    """``flat`` with every path inside one of `PLACES` written relative to it."""
    places = sorted(
        ((str(flat[key]).rstrip("/"), name) for key, name in PLACES if isinstance(flat.get(key), str) and flat[key]),
        key=lambda place: -len(place[0]),
    )

    def relative(value: Any) -> Any:
        if isinstance(value, str):
            for path, name in places:
                if value == path or value.startswith(path + "/"):
                    return name + value[len(path) :]
        return value

    return {key: relative(value) for key, value in flat.items()}


def changed_keys(before: Mapping, now: Mapping) -> dict[str, tuple[Any, Any]]:
    """``{key: (before, now)}`` for every training-relevant setting that differs (paths inside
    the run folder, the data root or the project root compared relative to them)."""
    a, b = _relative_to_places(_flat(before)), _relative_to_places(_flat(now))
    missing = object()
    return {
        k: (a.get(k, "<unset>"), b.get(k, "<unset>"))
        for k in sorted(a.keys() | b.keys())
        if _compared(k) and a.get(k, missing) != b.get(k, missing)
    }


def _allowed(key: str, allowed: list[str]) -> bool:
    return any(key == a or key.startswith(f"{a}.") for a in allowed)


CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# settings no resume can change, even when allowed: the checkpoint's optimizer state holds what they set
FIXED_ON_RESUME = {
    "model.fusion.lr_scale": "it sets the optimizer's parameter groups and their rates, which the "
    "checkpoint's optimizer state holds",
}


def _touches(override: str) -> str | None:
    """The key a command-line override sets; None for a config group's choice (``fusion=default``,
    ``model=tiny``), which may set any key."""
    key = override.lstrip("+~").split("=", 1)[0].split("@", 1)[0]
    return None if (CONF_DIR / key).is_dir() else key


def options_added_since(
    changes: Mapping[str, tuple[Any, Any]], earlier_overrides: list[str] | None, overrides: list[str]
) -> set[str]:
    """The changed keys that are options vlr gained after the run began, at their defaults: the
    run's record lacks them, and nothing this start's command line adds to the run's own (no new
    override of that key or above it, no new config group choice) set them. Resuming with them
    is resuming the same run; unknown earlier overrides (a folder without Hydra's files) or a new
    group choice admit none."""
    if earlier_overrides is None:
        return set()
    new = [o for o in overrides if o not in earlier_overrides]
    keys = [_touches(o) for o in new]
    if None in keys:
        return set()
    return {
        k
        for k, (before, _) in changes.items()
        if before == "<unset>" and not any(k == t or k.startswith(f"{t}.") for t in keys if t)
    }


class RunFolder:
    """The run folder's own record of its run, and the checks a start passes before writing."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.dir = Path(cfg.paths.output_dir)
        self.hydra_dir = self._hydra_dir()

    def _hydra_dir(self) -> Path | None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        subdir = HydraConfig.get().output_subdir
        return None if subdir is None else self.dir / str(subdir)

    def holds_run(self) -> list[str]:
        return [name for name in RUN_FILES if (self.dir / name).exists()]

    def earlier_config(self) -> dict | None:
        """The configuration the folder's run was started (or last resumed) with."""
        path = self.dir / RUN_CONFIG
        if path.is_file():
            return OmegaConf.to_container(OmegaConf.load(path))  # type: ignore[return-value]
        last = self.dir / "checkpoints" / "last.ckpt"
        if last.is_file():  # a folder without run_config.yaml: the checkpoint's copy
            try:
                config = torch.load(last, map_location="cpu", weights_only=True).get(CONFIG_KEY)
            except Exception:  # unreadable: the resume check says so in its own line
                return None
            return config if isinstance(config, dict) else None
        return None

    def check(self) -> dict[str, tuple[Any, Any]]:
        """Before anything is written: refuse a start whose configuration differs from the run's
        (restoring Hydra's files of the accepted start); return the changes the user allowed."""
        if not self.cfg.get("resume", True) or self.cfg.get("ckpt_path"):
            return {}  # starts over (the old run is moved aside in `accept`) or starts from another checkpoint
        before = self.earlier_config()
        if before is None:
            return {}
        changes = changed_keys(before, resolved(self.cfg))
        added = options_added_since(changes, self._earlier_overrides(), self._overrides())
        allowed = [str(k) for k in self.cfg.get("resume_allow_changes") or []]
        refused = {k: v for k, v in changes.items() if not _allowed(k, allowed) and k not in added}
        fixed = sorted(k for k in changes if k in FIXED_ON_RESUME and k not in added)
        if fixed and not refused:
            self.restore_hydra_files()
            a, b = changes[fixed[0]]
            raise RunConfigMismatch(
                f"{self.dir}: {fixed[0]} cannot change when a run resumes ({a!r} -> {b!r}): "
                f"{FIXED_ON_RESUME[fixed[0]]}; use another hydra.run.dir"
            )
        if refused:
            self.restore_hydra_files()
            shown = ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in list(refused.items())[:8])
            more = f" and {len(refused) - 8} more" if len(refused) > 8 else ""
            raise RunConfigMismatch(
                f"{self.dir} holds a run of another configuration: {len(refused)} settings differ: {shown}{more}; "
                f"use another hydra.run.dir, or resume_allow_changes=[{','.join(refused)}] to continue with them"
            )
        return changes

    def _earlier_overrides(self) -> list[str] | None:
        """The command-line overrides of the folder's accepted start (None: not recorded)."""
        path = None if self.hydra_dir is None else self.hydra_dir / ACCEPTED_HYDRA / "overrides.yaml"
        if path is None or not path.is_file():
            return None
        return [str(o) for o in OmegaConf.load(path)]

    def _overrides(self) -> list[str]:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []

    def restore_hydra_files(self) -> None:
        """Put back Hydra's files of the folder's accepted start over those this start wrote."""
        if self.hydra_dir is None:
            return
        kept = self.hydra_dir / ACCEPTED_HYDRA
        for saved in sorted(kept.glob("*.yaml")) if kept.is_dir() else []:
            shutil.copy2(saved, self.hydra_dir / saved.name)

    def accept(self, changes: dict[str, tuple[Any, Any]]) -> None:
        """The start passed its checks (the folder is locked): move an old run aside under
        ``resume=false``, then record this configuration, the allowed changes, Hydra's files."""
        if not self.cfg.get("resume", True):
            self._move_old_run_aside()
        if changes:
            log.warning("resuming %s with changed settings: %s", self.dir, ", ".join(changes))
            record = self.dir / CHANGES
            earlier = OmegaConf.to_container(OmegaConf.load(record)) if record.is_file() else []
            entry = {
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "changes": {k: {"before": a, "now": b} for k, (a, b) in changes.items()},
            }
            atomic_write_text(record, OmegaConf.to_yaml(OmegaConf.create([*earlier, entry])), "config changes")  # type: ignore[misc]
        atomic_write_text(self.dir / RUN_CONFIG, OmegaConf.to_yaml(OmegaConf.create(resolved(self.cfg))), "run config")
        if self.hydra_dir is not None and self.hydra_dir.is_dir():
            kept = self.hydra_dir / ACCEPTED_HYDRA
            kept.mkdir(exist_ok=True)
            for written in self.hydra_dir.glob("*.yaml"):
                shutil.copy2(written, kept / written.name)

    def _move_old_run_aside(self) -> None:
        old = self.holds_run()
        if not old:
            return
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H-%M-%S.%fZ")
        aside = self.dir / REPLACED / stamp
        aside.mkdir(parents=True)
        for name in old:
            shutil.move(str(self.dir / name), str(aside / name))
        for run_log in self.dir.glob("*.log"):  # Hydra's job log of the old run: the new run starts its own
            shutil.move(str(run_log), str(aside / run_log.name))
        if self.hydra_dir is not None and (self.hydra_dir / ACCEPTED_HYDRA).is_dir():
            shutil.move(str(self.hydra_dir / ACCEPTED_HYDRA), str(aside / self.hydra_dir.name))
        log.warning("resume=false: the run already in %s was moved to %s", self.dir, aside)
