"""Many runs at a glance in W&B: a figure and a results table logged as media in a run of their own.

Used at the end of a sweep (`vlr.sweeps.SummarizeSweep`) and of ``make study``
(`experiments.compare.log_to_wandb`). The run has ``job_type="compare"``, so the default
workspace shows it beside the training runs it summarises without mixing their metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def log_summary_run(
    *,
    project: str,
    name: str,
    save_dir: Path,
    images: dict[str, Path],
    tables: dict[str, tuple[Sequence[str], Sequence[Sequence[object]]]],
    offline: bool = True,
    group: str | None = None,
    entity: str | None = None,
) -> Path:
    """Log ``images`` (key -> PNG file) as ``wandb.Image`` and ``tables`` (key -> (columns, rows))
    as ``wandb.Table`` in one new run; returns the run's folder (``offline-run-*`` when offline)."""
    import wandb

    save_dir.mkdir(parents=True, exist_ok=True)
    settings = wandb.Settings(silent=True, console="off")
    run = wandb.init(
        project=project,
        entity=entity,
        name=name,
        group=group,
        job_type="compare",
        dir=str(save_dir),
        mode="offline" if offline else "online",
        settings=settings,
    )
    try:
        media: dict[str, object] = {key: wandb.Image(str(path)) for key, path in images.items()}
        for key, (columns, rows) in tables.items():
            media[key] = wandb.Table(columns=list(columns), data=[list(r) for r in rows])
        run.log(media)
        folder = Path(run.dir).parent
    finally:
        run.finish()
        # end this process's wandb service: it exports WANDB_SERVICE, and every process started
        # from here on (a training run, a DDP child) would join it instead of starting its own
        wandb.teardown()
    if offline:
        _wait_until_written(folder)
    return folder


def _wait_until_written(folder: Path, timeout: float = 60.0) -> None:
    """wandb's service can still be writing the offline run file when ``finish()`` returns: wait
    until it holds the logged row, so whoever reads the folder next finds the whole run."""
    import time

    from vlr.tracking.wandb_files import WandbFileError, read_run

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if read_run(folder).history:
                return
        except (WandbFileError, OSError, ValueError):
            pass
        time.sleep(0.2)
