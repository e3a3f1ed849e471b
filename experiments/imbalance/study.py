"""The modal-imbalance study (``make study``): does structure preservation help under imbalance?

Design (issue 15; every choice is a flag, the defaults are the study):

- data: the synthetic benchmark v3 (captions identify their image), two generator seeds;
- references learned from a disjoint generated corpus, embedding what the student sees
  (``reference=learned``); their own single-modal scores are the "reference alone" rows;
- arms: infonce, triplet, relation_kd (CoVLR's relation loss without the meta step: the
  control), covlr, sad (two-stage); each structure-preserving arm's weight on its structure
  term (beta; SAD's non-ITC weights times one factor) chosen on **val** from one grid by one
  criterion (`Study.tune`), the same value for every cell;
- imbalance in both directions, ``text_weak`` and ``image_weak``, at strengths 0, 0.5, 1
  (strength 0 is the balanced data, one set of cells for both directions);
- 5 seeds x 2 generator seeds per cell, paired across arms by (generator seed, seed);
- statistics: paired differences against infonce (and covlr against relation_kd) with 95%
  two-stage bootstrap intervals over the pairs and the test images
  (`experiments.paired.seeds_and_queries_difference`, from each run's per-query rankings);
  "no cross-modal cost" only when the rsum interval lies inside ±2 points.

Cells run as Hydra multiruns (the seeds of one arm x level in one process, two processes at
a time, single-threaded); a cell whose ``metrics.json`` exists is not run again, so an
interrupted study continues where it stopped. Each cell's recorded ``command`` re-runs it
alone; the study re-runs one and checks the numbers are the same. Writes
``experiments/imbalance/{results.json, report.md, tradeoff.png, difference_<direction>.png}``
(`experiments.imbalance.report` renders them from results.json) and logs the figure and the
table to an offline W&B run.

    python -m experiments.imbalance.study [--jobs 2] [--seeds 0 1 2 3 4] [--generator-seeds 0 1]
        [--preset flickr30k_clip --generator-seeds]   # another experiment preset, data not generated
        [--override reference=features reference.path=... ...]   # overrides every cell gets
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "experiments" / "imbalance"
RUNS = Path("experiments/imbalance/runs")  # relative to the repository root, where the commands run
ARMS = ("infonce", "triplet", "relation_kd", "covlr", "sad")
DIRECTIONS = ("text_weak", "image_weak")
STRENGTHS = (0.0, 0.5, 1.0)
SEEDS = (0, 1, 2, 3, 4)
GENERATOR_SEEDS = (0, 1)
# SAD's non-ITC loss weights (the release's: iic 1, ttc 2, kd 2, kdi 1, kdt 1), scaled by one factor
SAD_WEIGHTS = {"iic": 1.0, "ttc": 2.0, "kd": 2.0, "kdi": 1.0, "kdt": 1.0}
# Every structure-preserving arm gets the same tuning: the weight of its structure term (relation_kd's
# and covlr's beta, SAD's non-ITC weights times one factor) chosen on val from one grid, by one
# criterion, on the balanced data of the first generator seed, two seeds that no cell uses (so no
# cell of the study is a run its arm's weight was picked on); the value holds for every cell.
TUNED = {
    "relation_kd": lambda f: (f"objective.beta={f:g}",),
    "covlr": lambda f: (f"objective.beta={f:g}",),
    "sad": lambda f: sad_overrides(f),
}
GRID = (1.0, 0.3, 0.1, 0.03, 0.01)
TUNING_SEEDS = 2  # how many; the first seeds from 100 up that no cell uses
PRESET = "imbalance_study"  # the cells' experiment preset (--preset): data, towers, schedule, reference


@dataclass(frozen=True)
class Block:
    """The cells of one arm x level x generator seed, run as one multirun over their seeds."""

    arm: str
    imbalance: str
    strength: float
    generator_seed: int | None  # None: data that is not generated (data=flickr30k, ...)
    seeds: tuple[int, ...]
    extra: tuple[str, ...] = ()
    name: str = ""
    runs: Path = RUNS
    preset: str = PRESET

    @property
    def directory(self) -> Path:
        level = "none" if self.strength == 0 else f"{self.imbalance}-{self.strength:g}"
        data = "data" if self.generator_seed is None else f"g{self.generator_seed}"
        return self.runs / data / (self.name or f"{self.arm}-{level}")

    def overrides(self) -> list[str]:
        imbalance = "none" if self.strength == 0 else self.imbalance
        # per-query rankings whatever the preset says: the analysis's paired bootstrap needs them
        out = [f"experiment={self.preset}", "save_rankings=true", f"objective={self.arm}", f"imbalance={imbalance}"]
        out += [f"imbalance.strength={self.strength:g}"] if self.strength else []
        generated = [] if self.generator_seed is None else [f"data.generator_seed={self.generator_seed}"]
        return [*out, *generated, *self.extra]

    def cell_dir(self, seed: int) -> Path:
        return self.directory / f"s{seed}"

    def command(self, seed: int, user: tuple[str, ...] = ()) -> str:
        args = [*self.overrides(), *user, f"seed={seed}", f"hydra.run.dir={self.cell_dir(seed)}"]
        return "python -m vlr.train " + " ".join(shlex.quote(a) for a in args)


@dataclass
class Study:
    seeds: tuple[int, ...] = SEEDS
    generator_seeds: tuple[int | None, ...] = GENERATOR_SEEDS
    strengths: tuple[float, ...] = STRENGTHS
    directions: tuple[str, ...] = DIRECTIONS
    arms: tuple[str, ...] = ARMS
    user: tuple[str, ...] = ()  # the user's overrides, given to every cell
    jobs: int = 2
    runs: Path = RUNS
    grid: tuple[float, ...] = GRID
    preset: str = PRESET

    def env(self) -> dict[str, str]:
        return cell_env()

    def run_block(self, block: Block) -> None:
        missing = [s for s in block.seeds if not (REPO / block.cell_dir(s) / "metrics.json").is_file()]
        if not missing:
            return
        args = [
            *block.overrides(),
            *self.user,
            f"seed={','.join(map(str, missing))}",
            f"hydra.sweep.dir={block.directory}",
            "hydra.sweep.subdir=s${seed}",
            "~hydra.callbacks.summarize_sweep",
        ]
        start = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "vlr.train", "-m", *args], cwd=REPO, env=self.env(), capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(f"cells failed: {block.directory} seeds {missing}\n{proc.stderr[-3000:]}")
        line = f"  {time.time() - start:6.1f} s  {block.directory} seeds {missing}"
        print(line, flush=True)

    def run_blocks(self, blocks: list[Block]) -> None:
        with ThreadPoolExecutor(self.jobs) as pool:
            list(pool.map(self.run_block, blocks))

    def prepare(self) -> dict[str, dict]:
        """Per generator seed: generate the data, fit the learned references (once, cached) and
        score the references alone on the test split, one process per generator seed."""

        def one(g: int) -> tuple[str, dict]:
            out = REPO / self.runs / ("data" if g is None else f"g{g}") / "reference_alone.json"
            if not out.is_file():
                cmd = [sys.executable, "-m", "experiments.imbalance.reference_alone", "--out", str(out)]
                cmd += [f"experiment={self.preset}", *([] if g is None else [f"data.generator_seed={g}"]), *self.user]
                proc = subprocess.run(cmd, cwd=REPO, env=self.env(), capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"reference alone failed for generator seed {g}:\n{proc.stderr[-3000:]}")
            return str(g), json.loads(out.read_text())

        with ThreadPoolExecutor(self.jobs) as pool:
            return dict(pool.map(one, self.generator_seeds))

    @property
    def tuning_seeds(self) -> tuple[int, ...]:
        """Two seeds disjoint from the study's: a tuned arm's compared cells are not the runs that
        won its tuning (their val scores would carry the selection's luck into the comparison)."""
        unused = (s for s in itertools.count(100) if s not in self.seeds)
        return tuple(itertools.islice(unused, TUNING_SEEDS))

    def tune(self) -> dict[str, dict]:
        """Each tuned arm's factor, chosen on val: the grid value with the highest mean over seeds
        of val rsum + val i2i NDCG@10 + val t2t NDCG@10 (cross- and single-modal together), on the
        balanced data of the first generator seed. rsum varies most between seeds, so in practice
        it weighs most; the report gives every grid value's score per seed."""
        g = self.generator_seeds[0]
        arms = [a for a in TUNED if a in self.arms]
        blocks = {
            (arm, f): Block(
                arm, "none", 0.0, g, self.tuning_seeds, TUNED[arm](f), f"tuning/{arm}-x{f:g}", self.runs, self.preset
            )
            for arm in arms
            for f in self.grid
        }
        self.run_blocks(list(blocks.values()))
        out = {}
        for arm in arms:
            rows = []
            for f in self.grid:
                block = blocks[(arm, f)]
                vals = [json.loads((REPO / block.cell_dir(s) / "metrics.json").read_text()) for s in self.tuning_seeds]
                scores = [v["val/rsum"] + v["val/i2i/NDCG@10"] + v["val/t2t/NDCG@10"] for v in vals]
                rows.append({"factor": f, "val_score_per_seed": scores, "val_score": sum(scores) / len(scores)})
            best = max(rows, key=lambda r: r["val_score"])
            out[arm] = {
                "rows": rows,
                "chosen": best["factor"],
                "at_edge": len(self.grid) > 1 and best["factor"] in (min(self.grid), max(self.grid)),
                "overrides": list(TUNED[arm](best["factor"])),
            }
        return {
            "criterion": "mean over seeds of val/rsum + val/i2i/NDCG@10 + val/t2t/NDCG@10",
            "generator_seed": g,
            "seeds": list(self.tuning_seeds),
            "grid": list(self.grid),
            "factor_means": {
                "relation_kd": "objective.beta (default 1)",
                "covlr": "objective.beta (default 1)",
                "sad": f"every non-ITC loss weight times the factor; at 1 the release's {SAD_WEIGHTS}",
            },
            "arms": out,
        }

    def blocks(self, tuned: dict[str, dict]) -> list[Block]:
        levels = [("none", 0.0)] + [(d, s) for d in self.directions for s in self.strengths if s > 0]
        if 0.0 not in self.strengths:
            levels = levels[1:]
        out = []
        for g in self.generator_seeds:
            for imbalance, strength in levels:
                for arm in self.arms:
                    extra = tuple(tuned[arm]["overrides"]) if arm in tuned else ()
                    out.append(
                        Block(arm, imbalance, strength, g, self.seeds, extra, runs=self.runs, preset=self.preset)
                    )
        return out


def sad_overrides(scale: float) -> tuple[str, ...]:
    return tuple(f"objective.weights.{k}={v * scale:g}" for k, v in SAD_WEIGHTS.items())


def read_cell(block: Block, seed: int, user: tuple[str, ...]) -> dict:
    run_dir = REPO / block.cell_dir(seed)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    return {
        "arm": block.arm,
        "imbalance": block.imbalance if block.strength else "none",
        "strength": block.strength,
        "generator_seed": block.generator_seed,
        "seed": seed,
        "command": block.command(seed, user),
        "run_dir": str(block.cell_dir(seed)),
        "test": {k.removeprefix("test/"): v for k, v in metrics.items() if k.startswith("test/")},
        "val": {k.removeprefix("val/"): v for k, v in metrics.items() if k.startswith("val/")},
        "chance": {k.removeprefix("test/"): v for k, v in evaluation["chance"].items()},
    }


def cell_env() -> dict[str, str]:
    """Cells run single-threaded, with their data under VLR_ROOT (the repository unless set)."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "VLR_ROOT": os.environ.get("VLR_ROOT", str(REPO)),
    }


def reproduced_cell(cells: list[dict]) -> dict:
    """The cell whose command the study re-runs: the last job of a multirun (after others ran in
    its process) of an arm that uses the reference, under the strongest imbalance."""
    ranked = sorted(cells, key=lambda c: (c["arm"] in ("covlr", "sad"), c["strength"], c["seed"]))
    return ranked[-1]


def check_reproduced(cell: dict, runs: Path) -> dict:
    """Re-run one cell's recorded command alone (a fresh process, not the multirun that ran it)
    into an empty scratch folder (its only change: nothing there to resume); its test metrics
    must be equal."""
    import shutil

    scratch = runs / "reproduce"
    shutil.rmtree(REPO / scratch, ignore_errors=True)
    command = cell["command"].replace(f"hydra.run.dir={cell['run_dir']}", f"hydra.run.dir={scratch}")
    env = cell_env()
    proc = subprocess.run(
        [sys.executable, *shlex.split(command)[1:]], cwd=REPO, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        return {"command": command, "equal": False, "error": proc.stderr[-2000:]}
    again = json.loads((REPO / scratch / "metrics.json").read_text())
    test = {k.removeprefix("test/"): v for k, v in again.items() if k.startswith("test/")}
    differing = sorted(k for k in cell["test"] if test.get(k) != cell["test"][k])
    return {"command": cell["command"], "equal": not differing, "differing": differing}


def main(argv: list[str] | None = None) -> None:
    from experiments.imbalance.analysis import analyse
    from experiments.imbalance.report import write_report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    parser.add_argument("--directions", nargs="+", default=list(DIRECTIONS))
    parser.add_argument("--strengths", nargs="+", type=float, default=list(STRENGTHS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument(
        "--generator-seeds",
        nargs="*",
        type=int,
        default=list(GENERATOR_SEEDS),
        help="synthetic data's generator seeds; none (an empty list) for other data (--preset ...)",
    )
    parser.add_argument("--grid", nargs="+", type=float, default=list(GRID), help="factors tried on val (Study.tune)")
    parser.add_argument(
        "--preset",
        default=PRESET,
        help="every cell's experiment preset, e.g. flickr30k_clip (with --generator-seeds and no value for real data)",
    )
    parser.add_argument("--override", nargs="*", default=[], help="overrides for every cell (reference=features ...)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--runs", type=Path, default=RUNS, help="where the cells' run directories go")
    parser.add_argument("--no-reproduce", action="store_true", help="skip re-running one cell's command")
    parser.add_argument(
        "--wandb", default="vlr", metavar="PROJECT", help="offline W&B project for the figure and table ('' = none)"
    )
    args = parser.parse_args(argv)
    if "infonce" not in args.arms:
        parser.error("--arms must include infonce: every comparison is against it")
    study = Study(
        seeds=tuple(args.seeds),
        generator_seeds=tuple(args.generator_seeds) or (None,),
        strengths=tuple(args.strengths),
        directions=tuple(args.directions),
        arms=tuple(args.arms),
        user=tuple(args.override),
        jobs=args.jobs,
        runs=args.runs,
        grid=tuple(args.grid),
        preset=args.preset,
    )
    clean_reference = "reference=features" in study.user and any(s > 0 for s in study.strengths)
    if clean_reference:
        print(
            "warning: reference=features reads features precomputed from the clean data: under an imbalance the "
            "structure terms see what the weak modality lost (the report's design says so)",
            file=sys.stderr,
            flush=True,
        )
    start = time.time()
    reference_alone = study.prepare()
    print(f"data and references ready ({time.time() - start:.0f} s)", flush=True)
    tuning = study.tune()
    for arm, chosen in tuning["arms"].items():
        edge = " (the edge of the grid)" if chosen["at_edge"] else ""
        print(f"{arm}: factor {chosen['chosen']:g} chosen on val{edge}", flush=True)
    blocks = study.blocks(tuning["arms"])
    print(f"{sum(len(b.seeds) for b in blocks)} cells in {len(blocks)} blocks, {study.jobs} at a time", flush=True)
    study.run_blocks(blocks)
    cells = [read_cell(b, s, study.user) for b in blocks for s in b.seeds]
    reproduced = None if args.no_reproduce else check_reproduced(reproduced_cell(cells), study.runs)
    duration = time.time() - start
    results = analyse(cells, REPO)
    results.update(
        design={
            "arms": list(study.arms),
            "directions": list(study.directions),
            "strengths": list(study.strengths),
            "seeds": list(study.seeds),
            "generator_seeds": list(study.generator_seeds),
            "overrides": [f"experiment={study.preset}", "save_rankings=true", *study.user],
            "grid": list(study.grid),
            "equivalence_margin_rsum": results["margin"],
            "reference_input": "clean (precomputed features)" if clean_reference else "what the student sees",
        },
        tuning=tuning,
        reference_alone=reference_alone,
        reproduced=reproduced,
        duration_s=round(duration),
        command=" ".join(
            ["python -m experiments.imbalance.study", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]
        ),
        cells=cells,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, args.out)
    print(f"{len(cells)} cells in {duration:.0f} s -> {args.out}/results.json, report.md, figures", flush=True)
    if args.wandb:
        from experiments.imbalance.report import log_to_wandb

        folder = log_to_wandb(results, args.out, REPO / study.runs, args.wandb)
        print(f"trade-off figure and results table logged to W&B (offline): {folder}")


if __name__ == "__main__":
    main()
