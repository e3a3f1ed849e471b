"""Which runs may be pooled: runs are pooled over seeds only.

Runs that differ in anything else than the objective, the imbalance and its strength (another
dataset, model, learning rate, or another ``alpha`` for the same objective) are never pooled:
the comparison stops and names the keys that differ, so they are compared separately, or pooled
on purpose with ``--ignore KEY``.
"""

from __future__ import annotations

from collections import defaultdict

# config keys that do not change what a run measures (where it ran, how it logged)
NEVER_COMPARED = (
    "seed",
    "paths.",
    "hydra.",
    "logger.",
    "callbacks.",
    "task_name",
    "ckpt_path",
    "resume",
    "test",
    "save_rankings",
    "rankings_topk",
    "num_threads",
    "optimized_metric",
    "data.num_workers",
    "data.root",
    "data.cache_dir",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.accelerator",
    "trainer.enable_progress_bar",
    "trainer.default_root_dir",
    "experiment",
    "debug",
    "hparams_search",
    "_wandb",
    "imbalance.seed",  # the imbalance's own seed follows the run's seed (vlr/conf/imbalance/*.yaml: ${seed})
    "params/",  # parameter counts (vlr.callbacks.ParameterCounts): they follow from the config
    "variant",  # the W&B name's variant label (vlr.runs): the overrides it stands for are compared
)
FACTORS = ("objective", "imbalance")  # compared factors: their options are compared among runs of one choice


def differing_keys(cells: list[dict], ignore: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Config keys whose values differ between runs that would be pooled or compared: any key
    outside the factors across all runs, and a factor's options (``objective.alpha``) across
    runs of the same choice (``objective.name``). Key -> the values seen."""
    skip = NEVER_COMPARED + tuple(ignore)

    def compared(key: str) -> bool:
        return not any(key == s or key.startswith(s if s.endswith((".", "/")) else (f"{s}.", f"{s}/")) for s in skip)

    out: dict[str, set] = defaultdict(set)

    def scan(members: list[dict], keys: list[str]) -> None:
        for key in keys:
            values = {repr(m.get("config", {}).get(key, "<absent>")) for m in members}
            if len(values) > 1:
                out[key] |= values

    all_keys = sorted({k for c in cells for k in c.get("config", {}) if compared(k)})
    scan(cells, [k for k in all_keys if k.split(".")[0] not in FACTORS])
    for factor in FACTORS:
        by_choice: dict = defaultdict(list)
        for c in cells:
            by_choice[c.get("config", {}).get(f"{factor}.name")].append(c)
        options = [
            k for k in all_keys if k.split(".")[0] == factor and k not in (f"{factor}.name", f"{factor}.strength")
        ]
        for members in by_choice.values():
            scan(members, options)
    return {k: sorted(v) for k, v in sorted(out.items())}


def check_comparable(cells: list[dict], ignore: tuple[str, ...] = ()) -> None:
    """Stop, naming the keys and the ``--ignore`` flags that would pool them, when runs differ."""
    differ = differing_keys(cells, ignore)
    if differ:
        listed = "; ".join(f"{k}: {', '.join(v)}" for k, v in differ.items())
        raise SystemExit(
            f"these runs differ in more than objective, imbalance and seed ({listed}); compare them separately, "
            f"or pool them on purpose with --ignore {' --ignore '.join(differ)}"
        )
