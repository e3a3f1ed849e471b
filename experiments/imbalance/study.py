"""The modal-imbalance study (``make study``): does structure preservation protect the strong
modality's single-modal retrieval under imbalance, and at what cross-modal cost?

Stages, in order (each resumable; `experiments.imbalance.design.Design` holds every choice):

1. data and references: per pair (one generator seed each: own train/val/test data and its
   own learned reference) generate, fit and score the reference alone;
2. matched directions: a linear probe measures how much scene information each direction
   removes (`experiments.imbalance.probe`), and picks each direction's strength so both keep
   the same share;
3. tuning, on its own data and seeds: infonce's learning rate and temperature, then each
   structure-preserving arm's weight (the same number of grid points x seeds each), by one
   val criterion; then the convergence gate (balanced infonce with twice the steps);
4. the cells: every arm at balance and each direction's strength, on every pair; the teacher
   factor (oracle, noisy oracle, shuffled) for the teacher arms at balance and one direction;
5. the re-run check: one covlr cell's recorded command, run alone with an EMPTY data and cache
   directory, must give the recorded test metrics;
6. analysis and report (`analysis`, `report`): results.json, report.md and figures.

A cell is one run directory with the study's ``request.json`` (its exact overrides) written
before it runs; it is reused only when its ``metrics.json`` exists and its request equals the
one asked for now, otherwise it is run again from scratch. Cells of one arm x level x teacher
run as one Hydra multirun over the pairs (two such processes at a time, one thread each).

    python -m experiments.imbalance.study [--pairs 0 1 ... 9] [--jobs 2]
        [--preset flickr30k_clip --pairs --strengths text_weak=0.5 image_weak=0.5 --relevance rouge_l
         --teacher-arms]  # real towers and data (GPU): pairs are training seeds on one test set
        [--override trainer.max_epochs=...]  # overrides every cell gets
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from experiments.imbalance.design import TEACHERS, TUNED_WEIGHT, WEIGHT_MEANS, Design

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "experiments" / "imbalance"
RUNS = Path("experiments/imbalance/runs")  # relative to the repository root, where the commands run
PRESET = "imbalance_study"
COST = {"covlr": 2.0, "sad": 1.5}  # relative cost of a cell (infonce = 1), for scheduling only


@dataclass(frozen=True)
class Cell:
    """One run: an arm at one level with one teacher, on one pair (generator seed, seed)."""

    arm: str
    level: str  # "balanced" or a direction
    strength: float
    generator_seed: int | None  # None: data that is not generated (--preset with real data)
    seed: int
    teacher: str = "learned"
    extra: tuple[str, ...] = ()  # tuned overrides, the gate's longer schedule
    stage: str = "study"  # study | tuning | gate

    def block_key(self) -> tuple:
        # the gate's two long runs are blocks of their own, so they run side by side
        seed = (self.seed,) if self.stage == "gate" else ()
        return (self.stage, self.arm, self.level, self.strength, self.teacher, self.extra, *seed)

    @property
    def name(self) -> str:
        level = "balanced" if self.level == "balanced" else f"{self.level}-{self.strength:g}"
        tag = "" if self.teacher == "learned" else f"-{self.teacher}"
        extra = "" if self.stage == "study" else "-" + "_".join(_short(x) for x in self.extra)
        return f"{self.arm}-{level}{tag}{extra}"

    def pair_dir(self) -> str:
        data = "data" if self.generator_seed is None else f"g{self.generator_seed}"
        return f"{data}-s{self.seed}"

    def directory(self, runs: Path) -> Path:
        return runs / self.stage / self.name / self.pair_dir()

    def overrides(self, preset: str, user: tuple[str, ...]) -> list[str]:
        imbalance = "none" if self.level == "balanced" else self.level
        out = [f"experiment={preset}", f"objective={self.arm}", f"imbalance={imbalance}"]
        out += [] if self.level == "balanced" else [f"imbalance.strength={self.strength:g}"]
        out += [*TEACHERS[self.teacher], *self.extra, *user]
        return out + ([] if self.generator_seed is None else [f"data.generator_seed={self.generator_seed}"])

    def command(self, preset: str, user: tuple[str, ...], runs: Path) -> str:
        args = [*self.overrides(preset, user), f"seed={self.seed}", f"hydra.run.dir={self.directory(runs)}"]
        return "python -m vlr.train " + " ".join(shlex.quote(a) for a in args)

    def record(self) -> dict:
        return {
            "arm": self.arm,
            "level": self.level,
            "strength": self.strength,
            "teacher": self.teacher,
            "generator_seed": self.generator_seed,
            "seed": self.seed,
            "stage": self.stage,
            "extra": list(self.extra),
        }


def _short(override: str) -> str:
    """``model.optimizer.lr=0.001`` -> ``lr0.001``: a directory name Hydra's grammar accepts."""
    key, _, value = override.partition("=")
    return key.split(".")[-1] + value


def code_digest() -> str:
    """A digest of what a cell runs: vlr's Python sources and its configs. A finished cell is
    reused only when this is unchanged, so a study resumed after the code or a preset changed
    (another schedule, a fixed bug) runs its cells again instead of mixing old and new."""
    digest = hashlib.sha256()
    package, stages = REPO / "vlr", REPO / "experiments" / "imbalance"
    # the package, and the study's own stages whose outputs are cached (the probe, the reference alone)
    files = [*package.rglob("*.py"), *package.rglob("*.yaml"), stages / "probe.py", stages / "reference_alone.py"]
    for path in sorted(files):
        # editor droppings and caches are not code: hidden names, __pycache__, links that lead nowhere
        hidden = any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(REPO).parts)
        if not hidden and path.is_file():
            digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cell_env(root: str | None = None) -> dict[str, str]:
    """Cells run single-threaded, with their data and caches under VLR_ROOT (the repository unless set)."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        "VLR_ROOT": root or os.environ.get("VLR_ROOT", str(REPO)),
    }


class Runner:
    """Runs cells in blocks (one multirun per block over its pairs), reusing finished cells
    whose recorded request equals the current one."""

    def __init__(self, preset: str, user: tuple[str, ...], runs: Path, jobs: int, log=print):
        self.preset, self.user, self.runs, self.jobs, self.log = preset, user, runs, jobs, log
        self.timings: list[dict] = []
        self.code = code_digest()

    def request(self, cell: Cell) -> dict:
        return {"overrides": [*cell.overrides(self.preset, self.user), f"seed={cell.seed}"], "code": self.code}

    def done(self, cell: Cell) -> bool:
        d = REPO / cell.directory(self.runs)
        req = d / "request.json"
        return (d / "metrics.json").is_file() and req.is_file() and json.loads(req.read_text()) == self.request(cell)

    def run(self, cells: list[Cell]) -> None:
        blocks: dict[tuple, list[Cell]] = {}
        for cell in cells:
            if not self.done(cell):
                blocks.setdefault(cell.block_key(), []).append(cell)
        # the costliest blocks first (covlr's meta step costs about twice a step of the others), so
        # the last minutes do not leave a process slot idle behind one long block
        ordered = sorted(blocks.values(), key=lambda cells: -COST.get(cells[0].arm, 1.0) * len(cells))
        with ThreadPoolExecutor(self.jobs) as pool:
            list(pool.map(self._run_block, ordered))

    def _run_block(self, cells: list[Cell]) -> None:
        for cell in cells:  # a stale or half-finished cell starts from scratch
            d = REPO / cell.directory(self.runs)
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            (d / "request.json").write_text(json.dumps(self.request(cell)))
        first = cells[0]
        generators = sorted({c.generator_seed for c in cells}, key=str)
        seeds = [c.seed for c in cells]
        if len(generators) == 1:  # seeds on one data set (tuning)
            sweep = [f"seed={','.join(map(str, seeds))}"]
        elif all(c.seed == c.generator_seed for c in cells):  # pairs: the seed is the generator seed
            sweep = [f"data.generator_seed={','.join(str(g) for g in generators)}", "seed=${data.generator_seed}"]
        else:
            raise ValueError("a block's cells share a generator seed or each use their generator seed as seed")
        base = first.overrides(self.preset, self.user)
        if len(generators) > 1:
            base = [o for o in base if not o.startswith("data.generator_seed=")]
        data = "data" if first.generator_seed is None else "g${data.generator_seed}"
        args = [
            *base,
            *sweep,
            f"hydra.sweep.dir={first.directory(self.runs).parent}",
            f"hydra.sweep.subdir={data}-s${{seed}}",
            "~hydra.callbacks.summarize_sweep",
        ]
        start = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "vlr.train", "-m", *args], cwd=REPO, env=cell_env(), capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(f"cells failed: {first.directory(self.runs).parent}\n{proc.stderr[-3000:]}")
        seconds = time.time() - start
        self.timings.append({"block": first.name, "stage": first.stage, "cells": len(cells), "seconds": seconds})
        self.log(f"  {seconds:6.1f} s  {len(cells)} cells  {first.directory(self.runs).parent}")


def read_cell(cell: Cell, runner: Runner) -> dict:
    """A cell's record: its test and val metrics, chance levels, final train loss and whether it
    left the chance plateau."""
    run_dir = REPO / cell.directory(runner.runs)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    return {
        **cell.record(),
        "command": cell.command(runner.preset, runner.user, runner.runs),
        "run_dir": str(cell.directory(runner.runs)),
        "test": {k.removeprefix("test/"): v for k, v in metrics.items() if k.startswith("test/")},
        "val": {k.removeprefix("val/"): v for k, v in metrics.items() if k.startswith("val/")},
        "chance": {k.removeprefix("test/"): v for k, v in evaluation.get("chance", {}).items()},
        "training": final_loss(run_dir),
    }


def final_loss(run_dir: Path) -> dict:
    """The last logged training loss, its contrastive (ITC) part, and the batch's ln(B): the
    InfoNCE loss of a model that has learned nothing."""
    import csv

    out: dict = {"loss": None, "itc_loss": None, "ln_batch": None}
    for path in sorted(run_dir.glob("**/metrics.csv")):
        with open(path) as f:
            rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
        if rows:
            last = rows[-1]
            out["loss"] = float(last["train/loss"])
            parts = [k for k in ("train/loss/itc_i2t", "train/loss/itc_t2i") if last.get(k)]
            out["itc_loss"] = sum(float(last[k]) for k in parts) if parts else None
    config = run_dir / ".hydra" / "config.yaml"
    if config.is_file():
        from omegaconf import OmegaConf

        batch = OmegaConf.load(config).data.get("batch_size")
        out["ln_batch"] = math.log(int(batch)) if batch else None
    return out


def mean_criterion(cells: list[dict], criterion: tuple[str, ...]) -> tuple[float, list[float]]:
    scores = [sum(c["val"].get(k.removeprefix("val/"), math.nan) for k in criterion) for c in cells]
    return sum(scores) / len(scores), scores


class Study:
    def __init__(self, design: Design, runner: Runner, log=print):
        self.design, self.runner, self.log = design, runner, log

    @property
    def generated(self) -> bool:
        return bool(self.design.pairs) and self.design.pairs[0] is not None

    def prepare(self) -> dict[str, dict]:
        """Per pair and the tuning data: generate the data, fit the learned reference (cached),
        and score the reference alone on the test split; one process each."""
        seeds = [*self.design.pairs, self.design.tuning_generator_seed] if self.generated else [None]

        def one(g) -> tuple[str, dict]:
            out = REPO / self.runner.runs / "data" / ("data" if g is None else f"g{g}") / "reference_alone.json"
            request = out.with_suffix(".request.json")  # reused only for the same overrides and code
            overrides = [f"experiment={self.runner.preset}", *([] if g is None else [f"data.generator_seed={g}"])]
            overrides += self.runner.user
            asked = {"overrides": overrides, "code": self.runner.code}
            if not (out.is_file() and request.is_file() and json.loads(request.read_text()) == asked):
                out.unlink(missing_ok=True)
                cmd = [sys.executable, "-m", "experiments.imbalance.reference_alone", "--out", str(out), *overrides]
                proc = subprocess.run(cmd, cwd=REPO, env=cell_env(), capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"reference alone failed for generator seed {g}:\n{proc.stderr[-3000:]}")
                request.write_text(json.dumps(asked))
            return str(g), json.loads(out.read_text())

        with ThreadPoolExecutor(self.runner.jobs) as pool:
            return dict(pool.map(one, seeds))

    def calibrate(self) -> dict:
        """Matched directions: the probe's table and each direction's strength."""
        if self.design.strengths:
            return {"probe": None, "chosen": dict(self.design.strengths), "source": "given (--strengths)"}
        if not self.generated:
            raise SystemExit("--strengths is required on data that is not generated (no scene annotations to probe)")
        out = REPO / self.runner.runs / "probe.json"
        request = {
            "directions": list(self.design.directions),
            "strengths": list(self.design.probe_strengths),
            "code": self.runner.code,
        }
        if out.is_file() and json.loads(out.read_text()).get("request") == request:
            return json.loads(out.read_text())
        cmd = [sys.executable, "-m", "experiments.imbalance.probe", "--out", str(out)]
        cmd += ["--directions", *self.design.directions, "--strengths", *map(str, self.design.probe_strengths)]
        proc = subprocess.run(
            [*cmd, "--", f"experiment={self.runner.preset}"], cwd=REPO, env=cell_env(), capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(f"the probe failed:\n{proc.stderr[-3000:]}")
        result = {**json.loads(out.read_text()), "request": request, "source": "the probe (matched retained share)"}
        out.write_text(json.dumps(result, indent=1) + "\n")
        return result

    def _tuning_cells(self, arm: str, extra: tuple[str, ...], stage: str = "tuning") -> list[Cell]:
        g = self.design.tuning_generator_seed if self.generated else None
        return [Cell(arm, "balanced", 0.0, g, s, extra=extra, stage=stage) for s in self.design.tuning_seeds]

    def tune(self) -> dict:
        """infonce's (lr, temperature) first, then each structure arm's weight at infonce's
        choice: every arm gets len(grid) points x len(tuning seeds) runs."""
        d = self.design
        base = {
            (lr, tau): (f"model.optimizer.lr={lr:g}", f"objective.temperature={tau:g}") for lr, tau in d.infonce_grid
        }
        infonce = {k: self._tuning_cells("infonce", v) for k, v in base.items()}
        self.runner.run([c for cells in infonce.values() for c in cells])
        rows = []
        for (lr, tau), cells in infonce.items():
            mean, scores = mean_criterion([read_cell(c, self.runner) for c in cells], d.criterion)
            rows.append({"point": {"lr": lr, "temperature": tau}, "score": mean, "per_seed": scores})
        best = max(rows, key=lambda r: r["score"])
        shared = base[(best["point"]["lr"], best["point"]["temperature"])]
        out = {"infonce": {"rows": rows, "chosen": best["point"], "overrides": list(shared)}}
        arms = [a for a in d.structure_arms if a in TUNED_WEIGHT]
        grid = {(a, f): self._tuning_cells(a, (*shared, *TUNED_WEIGHT[a](f))) for a in arms for f in d.weight_grid}
        self.runner.run([c for cells in grid.values() for c in cells])
        for arm in arms:
            rows = []
            for f in d.weight_grid:
                mean, scores = mean_criterion([read_cell(c, self.runner) for c in grid[(arm, f)]], d.criterion)
                rows.append({"point": {"weight": f}, "score": mean, "per_seed": scores})
            best = max(rows, key=lambda r: r["score"])
            f = best["point"]["weight"]
            out[arm] = {
                "rows": rows,
                "chosen": best["point"],
                "at_edge": f in (min(d.weight_grid), max(d.weight_grid)),
                "overrides": [*shared, *TUNED_WEIGHT[arm](f)],
            }
        return {
            "criterion": " + ".join(d.criterion) + " (mean over the tuning seeds)",
            "generator_seed": d.tuning_generator_seed if self.generated else None,
            "seeds": list(d.tuning_seeds),
            "runs_per_arm": {
                "infonce": len(d.infonce_grid) * len(d.tuning_seeds),
                **{a: len(d.weight_grid) * len(d.tuning_seeds) for a in arms},
            },
            "weight_means": {a: WEIGHT_MEANS[a] for a in arms},
            "arms": out,
        }

    def gate(self, tuning: dict) -> dict:
        """Convergence: balanced infonce (tuned) with twice the epochs; its mean val rsum must
        move by less than the tolerance (relative)."""
        shared = tuple(tuning["arms"]["infonce"]["overrides"])
        epochs = self.epochs()
        once = [read_cell(c, self.runner) for c in self._tuning_cells("infonce", shared)]
        longer = self._tuning_cells("infonce", (*shared, f"trainer.max_epochs={2 * epochs}"), stage="gate")
        self.runner.run(longer)
        twice = [read_cell(c, self.runner) for c in longer]
        a = sum(c["val"]["rsum"] for c in once) / len(once)
        b = sum(c["val"]["rsum"] for c in twice) / len(twice)
        change = abs(b - a) / a if a else math.inf
        return {
            "epochs": epochs,
            "val_rsum": a,
            "val_rsum_doubled": b,
            "per_seed": [c["val"]["rsum"] for c in once],
            "per_seed_doubled": [c["val"]["rsum"] for c in twice],
            "relative_change": change,
            "tolerance": self.design.gate_tolerance,
            "passed": change < self.design.gate_tolerance,
        }

    def epochs(self) -> int:
        from experiments.imbalance.reference_alone import compose_config

        with tempfile.TemporaryDirectory() as scratch:
            cfg = compose_config([f"experiment={self.runner.preset}", *self.runner.user], scratch)
        return int(cfg.trainer.max_epochs)

    def cells(self, tuning: dict, strengths: dict[str, float]) -> list[Cell]:
        d = self.design
        pairs = [(g, g) for g in d.pairs] if self.generated else [(None, s) for s in d.seeds]
        levels = [("balanced", 0.0)] + [(direction, strengths[direction]) for direction in d.directions]
        out = []
        for arm in d.arms:
            extra = tuple(tuning["arms"][arm]["overrides"])
            for level, strength in levels:
                out += [Cell(arm, level, strength, g, s, extra=extra) for g, s in pairs]
        for arm in d.teacher_arms:
            if arm not in d.arms:
                continue
            extra = tuple(tuning["arms"][arm]["overrides"])
            for teacher in d.teachers:
                for level, strength in levels:
                    if level in d.teacher_levels:
                        out += [Cell(arm, level, strength, g, s, teacher, extra) for g, s in pairs]
        return out


def reproduce(record: dict, runs: Path) -> dict:
    """Re-run one cell's recorded command alone, in a fresh process, with an EMPTY data and cache
    directory (VLR_ROOT: the data is generated and the learned reference fitted again); its test
    metrics must equal the recorded ones (within 1e-6)."""
    scratch = REPO / runs / "reproduce"
    shutil.rmtree(scratch, ignore_errors=True)
    command = record["command"].replace(f"hydra.run.dir={record['run_dir']}", f"hydra.run.dir={scratch}")
    with tempfile.TemporaryDirectory() as empty:
        proc = subprocess.run(
            [sys.executable, *shlex.split(command)[1:]], cwd=REPO, env=cell_env(empty), capture_output=True, text=True
        )
    if proc.returncode != 0:
        return {"command": record["command"], "cache": "empty", "equal": False, "error": proc.stderr[-2000:]}
    again = json.loads((scratch / "metrics.json").read_text())
    test = {k.removeprefix("test/"): v for k, v in again.items() if k.startswith("test/")}
    differing = sorted(k for k, v in record["test"].items() if k not in test or abs(test[k] - v) > 1e-6)
    return {"command": record["command"], "cache": "empty", "equal": not differing, "differing": differing}


def reproduced_record(cells: list[dict]) -> dict:
    """covlr (the arm whose meta step and teacher make it the hardest to reproduce) under the
    strongest imbalance, on the first pair; another arm when covlr is not in the study."""
    study = [c for c in cells if c["stage"] == "study" and c["teacher"] == "learned"]
    return sorted(study, key=lambda c: (c["arm"] == "covlr", c["strength"], -(c["generator_seed"] or 0)))[-1]


def parse_strengths(values: list[str]) -> dict[str, float] | None:
    if not values:
        return None
    out = {}
    for v in values:
        name, _, number = v.partition("=")
        if not number:
            raise SystemExit(f"--strengths takes DIRECTION=STRENGTH (text_weak=0.5), got {v!r}")
        out[name] = float(number)
    return out


FUSION_OVERRIDES = ("fusion=default", "model.fusion.negative_temperature_start=100")
"""The fusion study's cells: the fusion encoder, its negatives annealed from near-uniform to
ALBEF's hard ones over the first half of training. From scratch at the tiny preset, hard
negatives from the first step leave the ITM head at the class prior for the study's 12 epochs
(docs/fusion.md, "The study with a re-ranker")."""


def with_fusion(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``--fusion K``: the fusion overrides joined to every cell's, and folders of its own (so a
    study with fusion never reuses, or overwrites, the cells and report of one without)."""
    if args.fusion is None:
        return
    if args.fusion < 0:
        parser.error(f"--fusion K needs K >= 0 (0: the fusion encoder without re-ranking), got {args.fusion}")
    # the user's overrides last: they can still change the fusion settings (e.g. no curriculum)
    args.override = [*FUSION_OVERRIDES, f"eval.rerank.k={args.fusion}", *args.override]
    if args.out == OUT:
        args.out = OUT / "fusion"
    if args.runs == RUNS:
        args.runs = RUNS.parent / "runs_fusion"


def main(argv: list[str] | None = None) -> None:
    from experiments.imbalance.analysis import analyse
    from experiments.imbalance.report import write_report

    default = Design()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=list(default.arms))
    parser.add_argument("--directions", nargs="+", default=list(default.directions))
    parser.add_argument(
        "--pairs", nargs="*", type=int, default=list(default.pairs), help="generator seeds; none for real data"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=list(default.seeds), help="real data's pairs")
    parser.add_argument("--relevance", default=default.relevance, help="scene (synthetic) | rouge_l | cxc (real data)")
    parser.add_argument("--strengths", nargs="*", default=[], help="DIRECTION=STRENGTH: skip the probe's choice")
    parser.add_argument("--probe-strengths", nargs="+", type=float, default=list(default.probe_strengths))
    parser.add_argument("--tuning-seeds", nargs="+", type=int, default=list(default.tuning_seeds))
    parser.add_argument("--weight-grid", nargs="+", type=float, default=list(default.weight_grid))
    parser.add_argument("--infonce-grid", nargs="+", default=[f"{lr:g},{t:g}" for lr, t in default.infonce_grid])
    parser.add_argument("--teacher-arms", nargs="*", default=list(default.teacher_arms))
    parser.add_argument("--teachers", nargs="*", default=list(default.teachers))
    parser.add_argument(
        "--teacher-levels", nargs="+", default=list(default.teacher_levels), help="balanced and/or the direction"
    )
    parser.add_argument("--preset", default=PRESET, help="every cell's experiment preset (flickr30k_clip: real data)")
    parser.add_argument("--override", nargs="*", default=[], help="overrides for every cell")
    parser.add_argument(
        "--fusion",
        type=int,
        metavar="K",
        default=None,
        help="every cell trains with the fusion encoder and ITM (fusion=default) and re-ranks each test query's "
        "ITC top K by ITM (eval.rerank.k=K): the cells' test metrics then hold rerank/... beside the plain ones "
        "(docs/fusion.md); e.g. --arms infonce relation_kd --fusion 16. Its own --out and --runs unless given",
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--runs", type=Path, default=RUNS, help="where the cells' run directories go")
    parser.add_argument("--no-reproduce", action="store_true", help="skip the empty-cache re-run of one cell")
    args = parser.parse_args(argv)
    with_fusion(args, parser)
    if "infonce" not in args.arms:
        parser.error("--arms must include infonce: every comparison is against it")
    design = replace(
        default,
        arms=tuple(args.arms),
        directions=tuple(args.directions),
        pairs=tuple(args.pairs) or (None,),  # type: ignore[arg-type]
        seeds=tuple(args.seeds),
        relevance=args.relevance,
        strengths=parse_strengths(args.strengths),
        probe_strengths=tuple(args.probe_strengths),
        tuning_seeds=tuple(args.tuning_seeds),
        weight_grid=tuple(args.weight_grid),
        infonce_grid=tuple(tuple(float(x) for x in p.split(",")) for p in args.infonce_grid),  # type: ignore[misc]
        teacher_arms=tuple(args.teacher_arms),
        teachers=tuple(args.teachers),
        teacher_levels=tuple(args.teacher_levels),
        teacher_direction=next((lv for lv in args.teacher_levels if lv != "balanced"), default.teacher_direction),
    )
    unknown = set(design.teachers) - set(TEACHERS)
    if unknown:
        parser.error(f"--teachers: unknown {sorted(unknown)}; known: {sorted(TEACHERS)}")
    if not args.pairs and design.teacher_arms and design.teachers:
        parser.error("the teacher factor needs generated data (an oracle); on real data pass --teacher-arms alone")
    if set(design.tuning_seeds) & set(design.seeds if not args.pairs else design.pairs):
        parser.error("--tuning-seeds must be disjoint from the study's seeds")
    runner = Runner(args.preset, tuple(args.override), args.runs, args.jobs)
    study = Study(design, runner)
    start = time.time()
    stages: dict[str, float] = {}
    reference_alone = study.prepare()
    stages["data and references"] = time.time() - start
    print(f"data and references ready ({stages['data and references']:.0f} s)", flush=True)
    calibration = study.calibrate()
    strengths = calibration["chosen"]
    print(f"strengths: {strengths} ({calibration['source']})", flush=True)
    mark = time.time()
    tuning = study.tune()
    gate = study.gate(tuning)
    stages["tuning and gate"] = time.time() - mark
    print(f"tuned: { {a: t['chosen'] for a, t in tuning['arms'].items()} }; gate passed: {gate['passed']}", flush=True)
    cells = study.cells(tuning, strengths)
    print(f"{len(cells)} cells, {runner.jobs} processes at a time", flush=True)
    mark = time.time()
    runner.run(cells)
    stages["cells"] = time.time() - mark
    records = [read_cell(c, runner) for c in cells]
    mark = time.time()
    reproduced = None if args.no_reproduce else reproduce(reproduced_record(records), runner.runs)
    stages["re-run check"] = time.time() - mark
    results = analyse(records, design)
    results.update(
        design={
            "arms": list(design.arms),
            "directions": list(design.directions),
            "strengths": strengths,
            "pairs": list(design.pairs) if study.generated else list(design.seeds),
            "preset": args.preset,
            "overrides": list(runner.user),
            "teacher_arms": list(design.teacher_arms),
            "teacher_direction": design.teacher_direction,
            "teacher_levels": list(design.teacher_levels),
            "teachers": {t: list(TEACHERS[t]) for t in ("learned", *design.teachers)},
            "hypotheses": design.hypotheses(),
            "relevance": design.relevance,
        },
        calibration=calibration,
        tuning=tuning,
        gate=gate,
        reference_alone=reference_alone,
        reproduced=reproduced,
        timings={"stages_s": {k: round(v) for k, v in stages.items()}, "blocks": runner.timings},
        code_digest=runner.code,  # the cells' code (study.code_digest): compare with a checkout's
        duration_s=round(time.time() - start),
        command=" ".join(
            ["python -m experiments.imbalance.study", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]
        ),
        cells=records,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, args.out)
    print(f"{len(records)} cells in {results['duration_s']} s -> {args.out}/results.json, report.md", flush=True)


if __name__ == "__main__":
    main()
