"""Shared fixtures. Nothing here reads ../shared or the network: data is generated.

Runs are in-process by default: `run_vlr("train" | "eval" | "write_features", *overrides, dir=...)`
composes the config as the command line would and calls the entry point's own ``main(cfg)``;
`run_main` runs ``main()`` with a whole command line (``-m`` sweeps, sweepers); `compose_config`
only composes. A test starts a process that runs vlr (`run_cli`) only where the process
boundary is what it tests, five in all, marked slow: the entry points themselves, their output a
pipe (tests/test_train_e2e.py), the one multi-process run (tests/test_ddp_exactness.py: Lightning's
2-process launch, torchrun over two "nodes", `vlr.eval` on 2 ranks), kills (tests/test_resume.py),
the install path (tests/test_packaging.py), and the study end to end at its smallest size
(tests/experiments/test_study.py). Other processes are started only where they are the subject:
loader workers (tests/data/test_workers.py: forked, spawned, and an interpreter's exit) and W&B's
offline writer, whose files are whole only once its process ended (tests/test_wandb_files.py,
tests/experiments/test_compare.py). A process another one "holds" (a run folder's lock, an Optuna
trial) is `live_pid`, a gone one `dead_pid`; a process dying inside a run here raises `Died`.
"""

import contextlib
import logging
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core (pytest-xdist): each worker, and every process
    # it starts, computes on one thread. Two workers of two threads each on two cores thrash
    # (OpenMP threads spin while they wait for a core).
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VLR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "vlr-cache"))


# the spec of `synthetic_root`: give these with data.root={synthetic_root} (another spec is refused)
SYNTHETIC_ROOT_SPEC = ("data.num_train=60", "data.num_val=20", "data.num_test=20", "data.generator_seed=3")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic dataset (60/20/20 images), generated once per session."""
    from vlr.data.synthetic import SyntheticSpec, generate_synthetic

    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate_synthetic(root, SyntheticSpec(num_train=60, num_val=20, num_test=20, seed=3))
    return root


@pytest.fixture(autouse=True)
def _restored_environment():
    """Each test ends with the environment it started with. Libraries used in-process leave
    variables behind that later processes would inherit: wandb's WANDB_SERVICE (a later run
    would join that service and find a killed run's id still "in use"), mlflow's
    MLFLOW_TRACKING_URI, inductor's _TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR, Lightning's
    PL_GLOBAL_SEED."""
    before = dict(os.environ)
    yield
    if "wandb" in sys.modules:  # the W&B service an in-process run started ends with its test: the next
        import wandb  # test's runs start their own, never one an earlier test (or its kill) left behind

        with contextlib.suppress(Exception):
            wandb.teardown()
    # WANDB_SERVICE names the service just torn down. It is never put back, even when it was set
    # before this test began: a module-scoped fixture's run (set up before this fixture took its
    # snapshot) starts a service too, and restoring its address would send the next run to a
    # socket that no longer exists (WandbServiceConnectionError).
    before.pop("WANDB_SERVICE", None)
    for key in set(os.environ) - set(before):
        del os.environ[key]
    os.environ.update({k: v for k, v in before.items() if os.environ.get(k) != v})


def run_cli(module: str, *overrides: str, cwd: Path, timeout: int = 600, env: dict | None = None):
    """Run ``python -m module overrides...`` in a fresh interpreter, as a user would; returns a
    CompletedProcess. Only for what the process boundary is: the entry points themselves, DDP
    spawns, kills, packaging. Everything else runs in-process (`run_vlr`)."""
    import subprocess

    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "VLR_ROOT": str(cwd), **(env or {})}
    full_env.pop("WANDB_SERVICE", None)  # a run never joins a wandb service this test process started
    return subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def dead_pid() -> int:
    """A process id of this host that no process has now (for stale locks and leftovers), found
    without starting a process: the highest free one below the kernel's ``pid_max`` (Linux hands
    out ids in turn, from low to ``pid_max``, so one this high is taken again only after that many
    new processes)."""
    from vlr.runs.leftovers import process_alive

    try:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    except OSError:
        pid_max = 99_999  # macOS
    return next(pid for pid in range(pid_max - 1, 1, -1) if not process_alive(pid))


def live_pid() -> int:
    """A live process of this host that is not this one: the process that started pytest (or the
    pytest-xdist controller), alive for the whole session; where pytest has none (it is a
    container's first process), a sleeping child started once for the session."""
    parent = os.getppid()
    if parent > 1:
        return parent
    if not _SLEEPER:
        import atexit
        import subprocess

        _SLEEPER.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(86400)"]))
        atexit.register(_SLEEPER[0].kill)
    return _SLEEPER[0].pid


_SLEEPER: list = []


class Died(BaseException):
    """A process dying where it is, raised inside a run in this process: nothing in vlr or
    Lightning swallows a BaseException (Lightning runs its ``on_exception`` hooks, vlr's
    last-checkpoint one included, and raises it on)."""


CONF_DIR = REPO / "vlr" / "conf"


def compose_config(*overrides: str, name: str = "train", run_dir: Path | None = None, root: Path | None = None):
    """``vlr/conf/<name>.yaml`` composed with ``overrides`` as the command line would, with
    Hydra's own node, and set as the current `HydraConfig` (so ``${hydra:...}`` resolves and the
    entry points read the overrides, as under ``@hydra.main``). ``run_dir``: the run directory
    (``paths.output_dir``; ``hydra.run.dir``); ``root``: what ``VLR_ROOT`` would be (``data/`` under it)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=name):
        cfg = compose(name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.RUN
        if run_dir is not None:
            cfg.hydra.run.dir = str(run_dir)
            cfg.hydra.runtime.output_dir = str(run_dir)
        if root is not None:
            cfg.paths.root_dir = str(root)
    HydraConfig.instance().set_config(cfg)
    return cfg


def job_config(*overrides: str, run_dir: Path, name: str = "train"):
    """The job config an entry point receives under ``@hydra.main`` with ``hydra.run.dir=run_dir``:
    `compose_config`'s, with the run's working directory set and Hydra's own node removed (Hydra
    passes the job only that); `HydraConfig` still answers for it."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    cfg = compose_config(*overrides, name=name, run_dir=run_dir)
    with read_write(cfg.hydra), open_dict(cfg):  # HydraConfig made it read-only
        cfg.hydra.runtime.cwd = str(run_dir.parent)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


class VlrRun:
    """What an in-process `run_vlr` left: ``returncode`` (0, or 1 for a user error, as the CLI
    exits), ``output`` (everything printed and logged), ``error`` (the ``error: ...`` line or
    None), ``value`` (what ``main`` returned), ``dir`` (the run directory), ``cfg``."""

    def __init__(self, cfg, run_dir: Path, returncode: int, value, output: str):
        self.cfg, self.dir, self.returncode, self.value, self.output = cfg, run_dir, returncode, value, output
        errors = [line for line in output.splitlines() if line.startswith("error: ")]
        self.error = errors[-1] if errors else None

    def json(self, name: str = "metrics.json") -> dict:
        """A JSON file the run wrote in its directory (``metrics.json`` by default)."""
        import json

        return json.loads((self.dir / name).read_text())

    @property
    def metrics(self) -> dict:
        return self.json("metrics.json")

    def checkpoint(self, name: str = "last.ckpt") -> dict:
        import torch

        return torch.load(self.dir / "checkpoints" / name, weights_only=True)


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()

    def isatty(self):
        return False


class _Collect(logging.Handler):
    """Every log record once (Lightning's loggers do not propagate to the root when it has no handler)."""

    def __init__(self, stream):
        super().__init__(logging.INFO)
        self.stream, self.seen = stream, set()
        self.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))

    def emit(self, record):
        if id(record) not in self.seen:
            self.seen.add(id(record))
            self.stream.write(self.format(record) + "\n")


def run_vlr(entry: str, *overrides: str, dir: Path, root: Path | None = None) -> VlrRun:
    """``python -m vlr.<entry> overrides... hydra.run.dir=<dir>``, in this process: the config
    composed as the command line would (`compose_config`), ``.hydra/{config,overrides,hydra}.yaml``
    written as Hydra writes them (``vlr.eval`` of a checkpoint reads them), then the entry point's
    own ``main(cfg)`` (user errors become exit status 1 and one ``error:`` line, as on the CLI).
    ``entry``: ``train`` | ``eval`` | ``write_features``; ``root`` (default ``dir``'s parent) is
    the project root the run sees (``VLR_ROOT``). One line per use::

        run = run_vlr("train", *small_run(synthetic_root), "objective=triplet", dir=tmp_path / "run")
        assert run.returncode == 0, run.output
        metrics = run.metrics
    """
    import copy
    import importlib

    from omegaconf import OmegaConf, open_dict

    dir = Path(dir)
    root = Path(root) if root is not None else dir.parent
    cfg = compose_config(*overrides, name=entry, run_dir=dir, root=root)
    hydra_dir = dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    task = copy.deepcopy(cfg)  # what the task function gets under @hydra.main: no `hydra` node
    with open_dict(task):
        del task["hydra"]
    OmegaConf.save(task, hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": cfg.hydra}), hydra_dir / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(cfg.hydra.overrides.task)), hydra_dir / "overrides.yaml")
    main = importlib.import_module(f"vlr.{entry}").main
    with _captured() as (text, status):
        status["value"] = main(task)
    return VlrRun(task, dir, status["returncode"], status["value"], text.getvalue())


def run_main(entry: str, *args: str, cwd: Path) -> VlrRun:
    """``python -m vlr.<entry> args...`` run in ``cwd``, in this process: the entry point's own
    ``main()`` with that ``sys.argv`` (Hydra's whole command-line path: ``-m`` sweeps, sweepers,
    their callbacks; Hydra's logging setup left out). For what `run_vlr` cannot compose: multiruns.
    ``dir`` of the result is ``cwd``."""
    import importlib

    main = importlib.import_module(f"vlr.{entry}").main
    argv, before = [f"vlr.{entry}", *args, "hydra/job_logging=none", "hydra/hydra_logging=none"], os.getcwd()
    saved_argv, saved_root = sys.argv, os.environ.get("VLR_ROOT")
    sys.argv = argv
    os.environ["VLR_ROOT"] = str(cwd)
    os.chdir(cwd)
    try:
        with _captured() as (text, status):
            status["value"] = main()
    finally:
        os.chdir(before)
        sys.argv = saved_argv
        if saved_root is None:
            os.environ.pop("VLR_ROOT", None)
        else:
            os.environ["VLR_ROOT"] = saved_root
    return VlrRun(None, Path(cwd), status["returncode"], status["value"], text.getvalue())


@contextlib.contextmanager
def _captured():
    """Everything printed, logged (INFO and up) and warned while running an entry point in-process
    (printing and logging also passed on to pytest's capture), as a terminal would show them; a
    ``SystemExit`` becomes ``status["returncode"]``. Global state
    a run changes (root log level, torch's thread count and determinism, the current HydraConfig)
    is put back."""
    import io
    import warnings

    import torch
    from hydra.core.hydra_config import HydraConfig

    text = io.StringIO()
    status: dict = {"returncode": 0, "value": None}
    collect = _Collect(text)
    loggers = [logging.getLogger(), logging.getLogger("lightning.pytorch"), logging.getLogger("lightning.fabric")]
    root_level = loggers[0].level
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    for logger in loggers:
        logger.addHandler(collect)
    loggers[0].setLevel(logging.INFO)
    try:
        with (
            contextlib.redirect_stdout(_Tee(sys.stdout, text)),
            contextlib.redirect_stderr(_Tee(sys.stderr, text)),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("default")  # each distinct warning once, as a process shows it
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: text.write(
                f"{filename}:{lineno}: {category.__name__}: {message}\n"
            )
            try:
                yield text, status
            except SystemExit as exit:  # report_user_errors: one line, status 1
                status["returncode"] = exit.code if isinstance(exit.code, int) else 1
                if isinstance(exit.code, str):  # as the interpreter prints it
                    text.write(exit.code + "\n")
    finally:
        for logger in loggers:
            logger.removeHandler(collect)
        loggers[0].setLevel(root_level)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        HydraConfig.instance().cfg = None


TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory) -> dict:
    """Tiny random "pretrained" weights saved locally, as a user's downloads would be:
    a timm ViT state dict (``timm``), a BERT directory with its tokenizer (``bert``)."""
    import timm
    import torch
    from transformers import BertConfig, BertModel

    from vlr.towers.tokenizer import train_wordpiece

    root = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **TINY_VIT)
    torch.save(vit.state_dict(), root / "vit.pth")
    words = (
        "a an the red green blue yellow purple orange circle square triangle diamond shape left right top bottom middle"
    ).split()
    tokenizer = train_wordpiece([" ".join(words[i:] + words[:i]) for i in range(len(words))], vocab_size=80)
    bert = BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=24,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=48,
            max_position_embeddings=64,
        ),
        add_pooling_layer=False,
    )
    bert.save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    return {
        "timm": root / "vit.pth",
        "timm_kwargs": TINY_VIT,
        "bert": root / "bert",
        "originals": {"timm": vit.eval(), "bert": bert.eval()},
    }


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory, tiny_pretrained) -> dict:
    """A tiny random CLIP checkpoint (vision + text + projections) with a tokenizer, saved locally."""
    import torch
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    root = tmp_path_factory.mktemp("clip")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_pretrained["bert"]))
    torch.manual_seed(1)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,  # CLIP's context length: version-3 captions run to 57 tokens
            eos_token_id=tokenizer.sep_token_id,
            bos_token_id=tokenizer.cls_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return {"dir": root, "model": model, "tokenizer": tokenizer}


@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory) -> dict:
    """A tiny open_clip architecture (a model-config JSON) and a checkpoint file of its random
    weights, saved locally: what ``model=open_clip model.arch=<json> model.pretrained=<file>`` loads."""
    import json

    import open_clip
    import torch

    root = tmp_path_factory.mktemp("open_clip")
    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    arch = root / "vlr-tiny-open-clip.json"
    arch.write_text(json.dumps(config))
    open_clip.add_model_config(arch)
    torch.manual_seed(2)
    model = open_clip.create_model(arch.stem).eval()
    torch.save(model.state_dict(), root / "tiny-open-clip.pt")
    return {"arch": arch, "pretrained": root / "tiny-open-clip.pt", "model": model}


@pytest.fixture(scope="session")
def data_formats(synthetic_root, tmp_path_factory) -> dict[str, list[str]]:
    """`synthetic_root` in every data format vlr reads, as the overrides that train on it: the
    synthetic source itself, a Karpathy JSON (``data=flickr30k``), the official COCO captions
    files (``data=coco_official``) and LAVIS lists (``data=coco_lavis``). Images are linked."""
    import json

    entries = json.loads((synthetic_root / "dataset_synthetic.json").read_text())["images"]
    by_split = {s: [e for e in entries if e["split"] == s] for s in ("train", "val", "test")}
    roots = {name: tmp_path_factory.mktemp(name) for name in ("karpathy", "coco", "lavis", "vizwiz")}
    for root in roots.values():
        (root / "images").symlink_to(synthetic_root / "images")

    (roots["karpathy"] / "dataset_flickr30k.json").write_text(json.dumps({"images": entries}))

    (roots["coco"] / "annotations").mkdir()
    for split, file in (("train", "captions_train2017.json"), ("val", "captions_val2017.json")):
        images = [{"id": i, "file_name": e["filename"]} for i, e in enumerate(by_split[split])]
        annotations = [
            {"image_id": i, "caption": s["raw"]} for i, e in enumerate(by_split[split]) for s in e["sentences"]
        ]
        (roots["coco"] / "annotations" / file).write_text(json.dumps({"images": images, "annotations": annotations}))
    for folder in ("train2017", "val2017"):
        (roots["coco"] / folder).symlink_to(synthetic_root / "images")

    for split in ("train", "val", "test"):
        if split == "train":  # one entry per caption
            rows = [
                {"image": f"images/{e['filename']}", "caption": s["raw"], "image_id": e["filename"]}
                for e in by_split[split]
                for s in e["sentences"]
            ]
        else:
            rows = [
                {"image": f"images/{e['filename']}", "caption": [s["raw"] for s in e["sentences"]]}
                for e in by_split[split]
            ]
        (roots["lavis"] / f"coco_karpathy_{split}.json").write_text(json.dumps(rows))

    write_vizwiz(roots["vizwiz"], by_split["train"], by_split["val"], synthetic_root / "images")

    # the formats' image folders link to the synthetic images (no copies): outside their data.root
    outside = "data.allow_outside_root=true"
    return {
        "synthetic": [f"data.root={synthetic_root}", *SYNTHETIC_ROOT_SPEC],
        "vizwiz": ["data=vizwiz", f"data.root={roots['vizwiz']}", "data.val_images=20", outside],
        "karpathy": ["data=flickr30k", f"data.root={roots['karpathy']}", "data.image_dir=''", outside],
        "coco_captions": ["data=coco_official", f"data.root={roots['coco']}", outside],
        "lavis": ["data=coco_lavis", f"data.root={roots['lavis']}", outside],
    }


def write_vizwiz(root: Path, train: list[dict], val: list[dict], images: Path) -> None:
    """Karpathy-style entries as official VizWiz-Captions files: every image's first caption
    marked rejected and its second pre-canned (a pre-canned text), so the defaults keep 3 of 5."""
    import json

    (root / "annotations").mkdir(parents=True)
    for split, entries in (("train", train), ("val", val)):
        (root / split).symlink_to(images)
        anns = []
        for i, e in enumerate(entries):
            for j, s in enumerate(e["sentences"]):
                text = "Quality issues are too severe to recognize visual content." if j == 1 else s["raw"]
                anns.append(
                    {
                        "image_id": i,
                        "caption": text,
                        "is_rejected": j == 0,
                        "is_precanned": j == 1,
                        "id": len(anns),
                        "text_detected": False,
                    }
                )
        images_list = [{"id": i, "file_name": e["filename"], "text_detected": False} for i, e in enumerate(entries)]
        (root / "annotations" / f"{split}.json").write_text(json.dumps({"images": images_list, "annotations": anns}))


def tiny_bert(hidden: int = 16, layers: int = 1) -> dict:
    """A TextTower ``config`` for a BERT of ``layers`` layers, ``hidden`` wide (2 heads)."""
    return dict(
        model_type="bert",
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=16,
    )


def small_run(root, *overrides: str) -> list[str]:
    """Overrides for a quick run on `synthetic_root` (batch 10, no workers, no loggers)."""
    return [
        f"data.root={root}",
        *SYNTHETIC_ROOT_SPEC,
        "data.batch_size=10",
        "data.num_workers=0",
        "logger=none",
        *overrides,
    ]


def tower_preset(name: str, tiny_pretrained: dict, tiny_clip: dict, tiny_open_clip: dict | None = None) -> list[str]:
    """Overrides for ``model=<name>`` with the tiny local stand-ins of the session fixtures
    (``tiny_pretrained``: timm ViT + BERT; ``tiny_clip``; ``tiny_open_clip``): the presets' own classes."""
    if name == "open_clip":
        assert tiny_open_clip is not None
        return [
            "model=open_clip",
            f"model.arch={tiny_open_clip['arch']}",
            f"model.pretrained={tiny_open_clip['pretrained']}",
            "data.image_transform=tower",
        ]
    if name == "tiny":
        return []
    if name == "vit_bert":
        return [
            "model=vit_bert",
            "model.image_tower.name=vit_tiny_patch16_224",
            "model.image_tower.pretrained=false",
            f"model.image_tower.checkpoint_path={tiny_pretrained['timm']}",
            "data.image_size=32",
            *(f"+model.image_tower.model_kwargs.{k}={v}" for k, v in tiny_pretrained["timm_kwargs"].items()),
            f"model.text_tower.name_or_path={tiny_pretrained['bert']}",
        ]
    assert name == "clip_vit_b32", name
    return ["model=clip_vit_b32", f"model.image_tower.name_or_path={tiny_clip['dir']}", "data.image_transform=tower"]


def quiet_trainer(**kw):
    """A CPU Trainer for tests: two steps, no validation, loggers, checkpoints, bars or summary."""
    import lightning.pytorch as pl

    options = dict(
        accelerator="cpu",
        devices=1,
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return pl.Trainer(**{**options, **kw})
