"""Shared fixtures. Nothing here reads ../shared or the network: data is generated."""

import contextlib
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The environment every test starts from, and the forked CLI runs' server's (`run_cli`).
_SESSION_ENV = dict(os.environ)


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
    PL_GLOBAL_SEED. With any of them set, a CLI run would also start a fresh interpreter."""
    before = dict(os.environ)
    yield
    for key in set(os.environ) - set(before):
        del os.environ[key]
    os.environ.update({k: v for k, v in before.items() if os.environ.get(k) != v})


def run_cli(module: str, *overrides: str, cwd: Path, timeout: int = 600, env: dict | None = None, fresh: bool = False):
    """Run ``python -m module overrides...`` as a user would; returns a CompletedProcess.

    The run is a fork of a preloaded interpreter (`tests.cli_server`: the imports done once)
    unless ``fresh``, VLR_TEST_FRESH_PROCESSES=1, or its environment differs from the server's
    in a variable `_read_at_run_time` does not name (others, such as PYTHONPATH, thread counts
    or HF_*, may be read at start-up): then it is a fresh ``python -m``."""
    import subprocess

    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "VLR_ROOT": str(cwd), **(env or {})}
    full_env.pop("WANDB_SERVICE", None)  # a run never joins a wandb service this test process started
    if not fresh and os.environ.get("VLR_TEST_FRESH_PROCESSES") != "1" and _can_fork(full_env):
        return _server().run(module, list(overrides), cwd, full_env, timeout)
    return subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _read_at_run_time(key: str) -> bool:
    """Variables a run reads while running, never at import: a forked run may differ from the
    server in these. PYTEST_CURRENT_TEST changes with every test; Lightning's seed_everything
    sets PL_GLOBAL_SEED / PL_SEED_WORKERS (in-process tests call it); COLUMNS comes from a
    test's monkeypatch. Any other difference means a fresh interpreter."""
    return key.startswith(("VLR_", "WANDB_", "PYTEST_", "PL_")) or key in ("PYTHONUNBUFFERED", "COLUMNS", "LINES")


_FRESH_BECAUSE: dict[str, int] = {}  # why runs were fresh: the variables that differed (the session summary)


def _can_fork(env: dict) -> bool:
    """Whether a run with ``env`` may be a fork of the server (started with the session's
    environment): no start-up variable differs. Counts the ones that do for the summary."""
    mine = {k: v for k, v in env.items() if not _read_at_run_time(k)}
    server = {k: v for k, v in _SESSION_ENV.items() if not _read_at_run_time(k)}
    differing = sorted(k for k in mine.keys() | server.keys() if mine.get(k) != server.get(k))
    for key in differing:
        _FRESH_BECAUSE[key] = _FRESH_BECAUSE.get(key, 0) + 1
    return not differing


class _CliServer:
    """The pytest side of `tests.cli_server`: one server per test session, started on first use."""

    def __init__(self):
        import subprocess
        import tempfile

        self.scratch = Path(tempfile.mkdtemp(prefix="vlr-cli-"))
        self.requests = 0
        with open(self.scratch / "server.log", "w") as log:  # the server holds its own copy
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.cli_server"],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=_SESSION_ENV,
            )

    def _reply(self, request_id: int) -> dict:
        import json

        line = self.proc.stdout.readline()
        if not line:
            log = (self.scratch / "server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"tests.cli_server exited ({self.proc.wait()}):\n{log}")
        reply = json.loads(line)
        assert reply["id"] == request_id, (reply, request_id)
        return reply

    def run(self, module: str, args: list[str], cwd: Path, env: dict, timeout: int):
        import json
        import signal
        import subprocess

        self.requests += 1
        rid = self.requests
        out, err = self.scratch / f"{rid}.stdout", self.scratch / f"{rid}.stderr"
        request = dict(id=rid, module=module, args=args, cwd=str(cwd), env=env, stdout=str(out), stderr=str(err))
        self.proc.stdin.write(json.dumps({**request, "timeout": timeout}) + "\n")
        self.proc.stdin.flush()
        pid = self._reply(rid)["pid"]
        try:
            reply = self._reply(rid)
        except BaseException:  # a test timeout or Ctrl-C: the run (and its DDP ranks) goes too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            self._reply(rid)  # the server has reaped it: the next request is in step
            raise
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        out.unlink()
        err.unlink()
        command = [sys.executable, "-m", module, *args]
        if reply.get("timeout"):
            raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
        return subprocess.CompletedProcess(command, reply["returncode"], stdout, stderr)

    def close(self):
        import shutil
        import subprocess

        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.scratch, ignore_errors=True)


_SERVER: list[_CliServer] = []


def _server() -> _CliServer:
    if not _SERVER or _SERVER[0].proc.poll() is not None:
        _SERVER[:] = [_CliServer()]
    return _SERVER[0]


def pytest_terminal_summary(terminalreporter):
    if _SERVER or _FRESH_BECAUSE:
        forked = sum(server.requests for server in _SERVER)
        why = ", ".join(f"{k} ({n})" for k, n in sorted(_FRESH_BECAUSE.items())) or "none"
        terminalreporter.write_line(f"CLI runs forked from tests.cli_server: {forked}; fresh for a differing {why}")


def pytest_sessionfinish(session, exitstatus):
    for server in _SERVER:
        server.close()


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
            max_position_embeddings=40,
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

    return {
        "synthetic": [f"data.root={synthetic_root}", *SYNTHETIC_ROOT_SPEC],
        "vizwiz": ["data=vizwiz", f"data.root={roots['vizwiz']}", "data.val_images=20"],
        "karpathy": ["data=flickr30k", f"data.root={roots['karpathy']}", "data.image_dir=''"],
        "coco_captions": ["data=coco_official", f"data.root={roots['coco']}"],
        "lavis": ["data=coco_lavis", f"data.root={roots['lavis']}"],
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
