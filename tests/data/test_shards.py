"""Tar shards as data (issue 31): round trip, img2dataset's layout, bad records, resume over ranks
and mid-epoch."""

import io
import json
import logging
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from tests.conftest import REPO, Died
from vlr.data import RetrievalDataModule
from vlr.data.images import ImageLoadError, load_rgb
from vlr.data.shards import BadSampleError, expand_braces, write_split
from vlr.data.shards.__main__ import write_shards
from vlr.data.sources import SOURCES
from vlr.errors import ConfigError
from vlr.metrics import build_evaluator
from vlr.towers import build_tokenizer

SPEC = dict(num_train=60, num_val=20, num_test=20, generator_seed=3)


@pytest.fixture(scope="module")
def shard_root(synthetic_root, tmp_path_factory) -> Path:
    """`synthetic_root` as shards: 25 images a shard (train: 3 shards), as the CLI writes them."""
    out = tmp_path_factory.mktemp("shards")
    source = SOURCES.create("synthetic", root=str(synthetic_root), **SPEC)
    for split in ("train", "val", "test"):
        write_split(source.read(split), out, split, shard_size=25)
    return out


def _dm(source: str, root, **kw) -> RetrievalDataModule:
    extra = (
        SPEC
        if source == "synthetic"
        else {"splits": {"train": "train-{000000..000002}.tar", "val": "val-*.tar", "test": "test-*.tar"}}
    )
    dm = RetrievalDataModule(
        name="x",
        source=source,
        root=str(root),
        num_workers=0,
        image_size=64,
        batch_size=8,
        eval_batch_size=16,
        tokenizer=build_tokenizer(None, [f"w{i}" for i in range(50)], vocab_size=100),
        max_length=16,
        **extra,
        **kw,
    )
    dm.prepare_data()
    return dm


def test_brace_patterns_expand_like_webdataset():
    assert expand_braces("a-{000..002}.tar") == ["a-000.tar", "a-001.tar", "a-002.tar"]
    assert expand_braces("{x,y}-{8..10}.tar") == ["x-8.tar", "x-9.tar", "x-10.tar", "y-8.tar", "y-9.tar", "y-10.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def test_a_missing_shard_is_named(shard_root):
    source = SOURCES.create("shards", root=str(shard_root), splits={"train": "train-{000000..000003}.tar"})
    with pytest.raises(ConfigError, match=r"data.splits.train: no shard file .*train-000003.tar"):
        source.read("train")


def test_shards_give_back_the_split(synthetic_root, shard_root):
    folder, shards = _dm("synthetic", synthetic_root), _dm("shards", shard_root)
    for name in ("train", "val", "test"):
        a, b = folder.source.read(name), shards.source.read(name)
        assert list(b.captions) == a.captions
        assert torch.equal(b.text_to_image, a.text_to_image)
        for i in (0, a.num_images // 2, a.num_images - 1):
            assert np.array_equal(np.asarray(load_rgb(b.image_paths[i])), np.asarray(load_rgb(a.image_paths[i])))
        if name != "train":  # evaluation splits carry tokens (ROUGE-L), labels, scenes (relevance) and names
            assert b.tokens == a.tokens and torch.equal(b.labels, a.labels)
            assert a.scenes is not None and b.scenes == a.scenes and b.caption_ids == a.caption_ids
            assert [p.name for p in b.image_paths] == [p.name for p in a.image_paths]


def _fixed_random_embeddings(loader, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    pixels, table = torch.randn(3 * 64 * 64, 16, generator=g), torch.randn(100, 16, generator=g)
    rows, idx = [], []
    for batch in loader:
        if kind == "image":
            rows.append(batch["images"].flatten(1) @ pixels)
            idx.append(batch["image_idx"])
        else:
            rows.append((table[batch["input_ids"]] * batch["attention_mask"][..., None]).sum(1))
            idx.append(batch["caption_idx"])
    return torch.nn.functional.normalize(torch.cat(rows), dim=-1), torch.cat(idx)


def test_folder_and_shards_give_identical_metrics(synthetic_root, shard_root):
    """The round trip the issue asks for: one fixed random model, evaluated on the folder and on
    its shards, scores the same (every metric, bit for bit)."""
    results = []
    for dm in (_dm("synthetic", synthetic_root), _dm("shards", shard_root)):
        targets = dm.eval_targets("test")
        evaluator = build_evaluator(
            targets,
            {"name": "scene", "also": ["rouge_l", "labels"]},
            split="test",
            ks=(1, 5, 10),
            ndcg_ks=(10,),
            overlap_ks=(10,),
            ties="expected",
        )
        images, texts = dm.test_dataloader()
        image_emb, image_idx = _fixed_random_embeddings(images, "image")
        text_emb, text_idx = _fixed_random_embeddings(texts, "text")
        evaluator.update(image_emb=image_emb, image_idx=image_idx)
        evaluator.update(text_emb=text_emb, text_idx=text_idx)
        results.append({k: float(v) for k, v in evaluator.compute().items()})
    assert {"i2t/R@1", "t2i/R@10", "i2i/R@1", "t2t/R@1", "i2i/scene_NDCG@10", "t2t/rouge_l_NDCG@10"} <= set(results[0])
    assert results[0]["rsum"] > 0
    assert results[1] == results[0]


def test_training_batches_are_the_folders_even_augmented(synthetic_root, shard_root):
    """Same sampler order, same per-item seeds, same pixels: augmented training batches match."""
    a, b = (_dm(s, r, augment=True) for s, r in (("synthetic", synthetic_root), ("shards", shard_root)))
    for dm in (a, b):
        dm.setup("fit")
    for x, y in zip(list(a.train_dataloader())[:3], list(b.train_dataloader())[:3], strict=True):
        assert torch.equal(x["caption_idx"], y["caption_idx"]) and torch.equal(x["image_idx"], y["image_idx"])
        assert torch.equal(x["images"], y["images"]) and torch.equal(x["input_ids"], y["input_ids"])


def _resumed(shard_root, world: int, rank: int, epoch: int, done: int) -> RetrievalDataModule:
    """A datamodule as Lightning hands it to a resumed fit: its checkpointed state restored
    (``done`` batches of ``epoch`` trained), then asked for the loader by a trainer in ``fit``."""
    dm = _dm("shards", shard_root, augment=False)
    dm.trainer = SimpleNamespace(
        world_size=world,
        global_rank=rank,
        current_epoch=epoch,
        limit_train_batches=None,
        state=SimpleNamespace(fn="fit"),
    )
    dm.load_state_dict({"epoch": epoch, "trained_batches": done})
    dm.setup("fit")
    return dm


def _keys(dm) -> list[list[int]]:
    return [batch["caption_idx"].tolist() for batch in dm.train_dataloader()]


@pytest.mark.parametrize("step", [1, 4])
def test_a_resume_at_step_k_continues_every_ranks_sequence(shard_root, step):
    """2 ranks, killed after ``step`` batches of epoch 1: each rank's resumed batches are its
    uninterrupted batches from ``step`` on (the datamodule's resume path, on shards)."""
    for rank in (0, 1):
        whole = _resumed(shard_root, 2, rank, epoch=1, done=0)
        resumed = _resumed(shard_root, 2, rank, epoch=1, done=step)
        assert _keys(resumed) == _keys(whole)[step:]
        assert len(_keys(whole)) == 300 // 2 // 4


def test_one_shard_feeds_two_ranks_of_two_workers(synthetic_root, tmp_path):
    """Fewer shards than ranks x workers: map-style items never wait for a shard of their own;
    every rank gets its full epoch and the ranks together cover every caption."""
    write_split(SOURCES.create("synthetic", root=str(synthetic_root), **SPEC).read("train"), tmp_path, "train", 1000)
    seen = []
    for rank in (0, 1):
        dm = RetrievalDataModule(
            name="x",
            source="shards",
            root=str(tmp_path),
            splits={"train": "train-000000.tar"},
            num_workers=2,
            image_size=64,
            batch_size=20,
            augment=False,
            tokenizer=build_tokenizer(None, ["a"], vocab_size=50),
        )
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank, state=None)
        dm.per_rank_batch = 10
        batches = [b["caption_idx"].tolist() for b in dm.train_dataloader()]
        assert len(batches) == 15 and all(len(b) == 10 for b in batches)
        seen += [c for b in batches for c in b]
    assert sorted(seen) == list(range(300))


# -- img2dataset's layout and bad records ----------------------------------------------------
def _jpeg(colour, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _img2dataset_shard(path: Path) -> Path:
    meta = lambda key, **kw: json.dumps({"key": key, "url": f"http://x/{key}", "status": "success", **kw}).encode()  # noqa: E731
    return _tar(
        path,
        [
            ("000.jpg", _jpeg("red")),
            ("000.txt", b"a red square"),
            ("000.json", meta("000", caption="a red square")),
            ("001.jpg", _jpeg("blue")),
            ("001.txt", b"a blue square"),
            ("002.webp", _jpeg("white", "WEBP")),
            ("002.json", meta("002", caption="only json", image_id="7")),
            ("003.jpg", _jpeg("green")),
            ("003.json", meta("003", caption="the same image again", image_id="7")),
            ("004.jpg", _jpeg("red")),
            ("004.json", b"{not json"),
            ("005.jpg", _jpeg("red")),
            ("006.txt", b"no image"),
            ("007.png", b"not a png"),
            ("007.txt", b"undecodable"),
        ],
    )


def test_img2dataset_records_and_bad_ones_are_named(tmp_path):
    _img2dataset_shard(tmp_path / "part-00000.tar")
    source = SOURCES.create("shards", root=str(tmp_path), splits={"train": "part-{00000..00000}.tar"})
    with pytest.raises(BadSampleError, match=r"part-00000.tar, key 004: its .json does not parse"):
        source.read("train")


def test_bad_records_are_skipped_counted_and_logged(tmp_path, caplog):
    _img2dataset_shard(tmp_path / "part-00000.tar")
    source = SOURCES.create("shards", root=str(tmp_path), splits={"train": "part-*.tar"}, on_bad_sample="skip")
    with caplog.at_level(logging.WARNING):
        split = source.read("train")
    assert source.index("train").bad_samples == 3
    assert "left out 3 bad shard record(s) of 8" in caplog.text
    assert "key 005: no caption" in caplog.text and "key 006: no image member" in caplog.text
    # txt wins over json's caption; image_id 7 (samples 002 and 003) is one image: positives
    assert list(split.captions) == ["a red square", "a blue square", "only json", "the same image again", "undecodable"]
    assert split.text_to_image.tolist() == [0, 1, 2, 2, 3]
    assert np.asarray(load_rgb(split.image_paths[1]))[0, 0, 2] > 200  # blue
    with pytest.raises(ImageLoadError, match=r"cannot decode image .*part-00000.tar, key 007"):
        load_rgb(split.image_paths[3])


def test_an_undecodable_training_image_is_skipped_or_named(tmp_path):
    _img2dataset_shard(tmp_path / "part-00000.tar")
    kw = dict(
        name="x",
        source="shards",
        root=str(tmp_path),
        splits={"train": "part-*.tar"},
        on_bad_sample="skip",
        image_size=8,
        augment=False,
        num_workers=0,
        tokenizer=build_tokenizer(None, ["a"], vocab_size=50),
    )
    skipping = RetrievalDataModule(**kw, on_bad_image="skip")
    items = [skipping._train_dataset()[(k, 0)] for k in range(5)]
    assert [it["caption_idx"] for it in items] == [0, 1, 2, 3, 0]  # 007's caption (4) falls to the next item
    strict = RetrievalDataModule(**kw, on_bad_image="error")
    with pytest.raises(ImageLoadError, match="key 007"):
        strict._train_dataset()[(4, 0)]


def test_a_truncated_shard_is_named_or_cut_at_the_damage(shard_root, tmp_path):
    data = (shard_root / "val-000000.tar").read_bytes()
    (tmp_path / "val-000000.tar").write_bytes(data[: len(data) // 2])
    strict = SOURCES.create("shards", root=str(tmp_path), splits={"val": "val-000000.tar"})
    with pytest.raises(BadSampleError, match=r"val-000000.tar is corrupt"):
        strict.read("val")
    lenient = SOURCES.create("shards", root=str(tmp_path), splits={"val": "val-000000.tar"}, on_bad_sample="skip")
    assert 0 < lenient.read("val").num_images < 20


def test_the_index_cache_gives_the_same_index(shard_root, tmp_path):
    kw = dict(root=str(shard_root), splits={"train": "train-*.tar"}, index_cache=str(tmp_path))
    cold = SOURCES.create("shards", **kw).index("train")
    assert len(list((tmp_path / "shards").glob("index-*.npz"))) == 1
    warm = SOURCES.create("shards", **kw).index("train")
    for name in cold.ARRAYS:
        assert np.array_equal(getattr(cold, name), getattr(warm, name))
    assert cold.shards == warm.shards and len(cold) == 60


# -- the command and the preset --------------------------------------------------------------
def test_the_command_writes_shards_that_data_shards_reads(synthetic_root, tmp_path):
    from hydra.core.hydra_config import HydraConfig

    conf = str(REPO / "vlr" / "conf")
    spec = [f"data.{k}={v}" for k, v in SPEC.items()]
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose(
            "write_shards",
            overrides=[f"data.root={synthetic_root}", *spec, f"out={tmp_path}", "shard_size=16"],
            return_hydra_config=True,
        )
        HydraConfig.instance().set_config(cfg)
        write_shards(cfg)
        assert sorted(p.name for p in tmp_path.glob("*.tar")) == [
            *(f"test-00000{i}.tar" for i in range(2)),
            *(f"train-00000{i}.tar" for i in range(4)),
            *(f"val-00000{i}.tar" for i in range(2)),
        ]
        train = compose(
            "train",
            overrides=["data=shards", f"data.root={tmp_path}", "data.on_bad_sample=skip"],
            return_hydra_config=True,
        )
    assert train.data.on_bad_image == "skip" and train.data.source == "shards"
    source = SOURCES.create("shards", root=str(tmp_path), splits=dict(train.data.splits))
    assert source.read("train").num_captions == 300 and source.read("test").num_images == 20


# -- a run on shards stopped mid-epoch and resumed ----------------------------------------------
def test_a_run_on_shards_stopped_mid_epoch_resumes_to_the_same_weights(synthetic_root, tmp_path, monkeypatch):
    """10 steps an epoch (20 images x 5 captions / batch 10), stopped at step 13 of the second
    epoch, its last.ckpt from step 12; the same command again ends bit-equal to an uninterrupted
    run, so the shards' item sequence resumed at its step (augmentation seeded per item, dropout's
    RNG state in last.ckpt). Each of 2 ranks' resumed sequences: the test above; a real SIGKILL
    and SIGTERM of a run: tests/test_resume.py."""
    import lightning.pytorch as pl

    import vlr.train
    from tests.conftest import run_vlr

    source = SOURCES.create("synthetic", root=str(synthetic_root), **SPEC)
    write_split(source.read("train").keep_images(list(range(20))), tmp_path / "shards", "train", 8)
    for split in ("val", "test"):
        write_split(source.read(split), tmp_path / "shards", split, 8)
    args = ["data=shards", f"data.root={tmp_path / 'shards'}", "data.image_transform=builtin", "data.image_size=64",
            "data.batch_size=10", "data.num_workers=0", "trainer.max_epochs=2",
            "callbacks.last_checkpoint.every_n_steps=3", "logger=csv", "seed=3", "test=false"]  # fmt: skip

    class StopAt13(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 13:
                raise Died

    real = vlr.train.instantiate_group

    def with_stop(group):
        return [*real(group), StopAt13()] if group is not None and "last_checkpoint" in group else real(group)

    with monkeypatch.context() as patch:
        patch.setattr(vlr.train, "instantiate_group", with_stop)
        with pytest.raises(Died):
            run_vlr("train", *args, dir=tmp_path / "resumed")
    last = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 12  # mid-epoch 2
    resumed = run_vlr("train", *args, dir=tmp_path / "resumed")
    assert resumed.returncode == 0 and f"resuming from {last}" in resumed.output, resumed.output[-3000:]
    whole = run_vlr("train", *args, dir=tmp_path / "whole")
    assert whole.returncode == 0, whole.output[-3000:]
    a, b = whole.checkpoint(), resumed.checkpoint()
    assert a["global_step"] == b["global_step"] == 20
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key


# -- bad records of evaluation splits, counted in the run summary (issue 31) ----------------------
def _eval_dm(root: Path, policy: str) -> RetrievalDataModule:
    return RetrievalDataModule(
        name="x",
        source="shards",
        root=str(root),
        splits={"train": "part-*.tar", "val": "part-*.tar", "test": "part-*.tar"},
        on_bad_sample=policy,
        image_size=8,
        augment=False,
        num_workers=0,
        tokenizer=build_tokenizer(None, ["a"], vocab_size=50),
    )


def test_bad_evaluation_images_are_skipped_and_counted(tmp_path):
    """val/test under skip: the index's bad records and the image that does not decode (007) are
    left out before evaluation, and counted per split."""
    _img2dataset_shard(tmp_path / "part-00000.tar")
    dm = _eval_dm(tmp_path, "skip")
    val = dm.split("val")
    assert list(val.captions) == ["a red square", "a blue square", "only json", "the same image again"]
    assert val.num_images == 3 and val.text_to_image.tolist() == [0, 1, 2, 2]
    assert dm.bad_samples == {"val": 3 + 1}


def test_an_undecodable_evaluation_image_names_shard_and_key_only(tmp_path):
    shard = _tar(tmp_path / "part-00000.tar", [("000.jpg", _jpeg("red")), ("000.txt", b"a"), ("001.png", b"xx"),
                                               ("001.txt", b"b")])  # fmt: skip
    dm = _eval_dm(tmp_path, "error")
    with pytest.raises(ImageLoadError) as err:
        dm._eval_loaders("val")[0].dataset[1]
    assert str(err.value) == f"cannot decode image {shard}, key 001: not an image format PIL can read"
    assert dm.bad_samples == {}


def _with_bad_val_records(shard_root: Path, out: Path) -> Path:
    """``shard_root`` with two bad records (an undecodable image, a caption without image) in its val shard."""
    out.mkdir()
    for shard in shard_root.glob("*.tar"):
        (out / shard.name).symlink_to(shard)
    val = out / "val-000000.tar"
    val.unlink()
    with tarfile.open(shard_root / "val-000000.tar") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]  # type: ignore[union-attr]
    _tar(val, [*members, ("zzz-bad.png", b"not a png"), ("zzz-bad.txt", b"bad"), ("zzz-lone.txt", b"no image")])
    return out


def test_a_run_counts_the_bad_records_it_skipped_in_metrics_json(shard_root, tmp_path):
    """train and eval on shards with data.on_bad_sample=skip (eval accepts the option):
    metrics.json says how many records each split left out."""
    from tests.conftest import run_vlr

    root = _with_bad_val_records(shard_root, tmp_path / "shards")
    (tmp_path / "shards" / "test-000000.tar").unlink()  # the test split is val's shards too
    data = [
        "data=shards", f"data.root={root}", "data.splits.test=val-*.tar", "data.image_transform=builtin",
        "data.image_size=64", "data.batch_size=10", "data.num_workers=0", "data.on_bad_sample=skip",
    ]  # fmt: skip
    run = run_vlr(
        "train", *data, "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "logger=none", dir=tmp_path / "run"
    )
    assert run.returncode == 0, run.output[-3000:]
    counts = {k: v for k, v in run.metrics.items() if k.startswith("data/")}
    assert counts == {
        "data/bad_samples/train": 0,
        "data/bad_samples/val": 2,
        "data/bad_samples/test": 2,
        "data/skipped_images/train": 0,  # every training image decoded
    }
    assert run.metrics["test/i2t/R@1"] >= 0  # the 20 good images were evaluated
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    evaluated = run_vlr("eval", f"ckpt_path={ckpt}", "split=val", "data.on_bad_sample=skip", dir=tmp_path / "eval")
    assert evaluated.returncode == 0, evaluated.output[-3000:]
    assert evaluated.metrics["data/bad_samples/val"] == 2


def test_bad_sample_counts_go_to_the_wandb_summary(tmp_path):
    from vlr.tracking.loggers import WandbLogger
    from vlr.tracking.reporting import bad_sample_counts, summarise_in_wandb

    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="vlr-test")
    trainer = SimpleNamespace(loggers=[logger], datamodule=SimpleNamespace(bad_samples={"val": 2, "train": 0}))
    try:
        summarise_in_wandb(trainer, bad_sample_counts(trainer))
        assert dict(logger.experiment.summary) == {"data/bad_samples/train": 0.0, "data/bad_samples/val": 2.0}
    finally:
        logger.experiment.finish()


# -- shards named by URL, downloaded once into data.shard_cache (issue 31) -------------------------
@pytest.fixture
def shard_server(shard_root):
    """``shard_root`` served over HTTP on localhost (no internet), with the paths each request asked for."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    asked: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(shard_root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def test_shards_named_by_url_are_downloaded_once_and_read_as_local(shard_root, shard_server, tmp_path):
    base, asked = shard_server
    cache = tmp_path / "downloads"
    splits = {"train": f"{base}/train-{{000000..000002}}.tar", "val": "val-000000.tar"}  # val: relative to a URL root
    remote = SOURCES.create("shards", root=base, splits=splits, shard_cache=str(cache))
    local = SOURCES.create("shards", root=str(shard_root), splits={"train": "train-*.tar", "val": "val-*.tar"})
    for split in ("train", "val"):
        got, want = remote.read(split), local.read(split)
        assert list(got.captions) == list(want.captions) and got.num_images == want.num_images
        assert np.array_equal(np.asarray(load_rgb(got.image_paths[7])), np.asarray(load_rgb(want.image_paths[7])))
    assert sorted(asked) == ["/train-000000.tar", "/train-000001.tar", "/train-000002.tar", "/val-000000.tar"]
    kept = sorted(p.name.split("-", 1)[1] for p in cache.iterdir() if p.suffix == ".tar")
    assert kept == ["train-000000.tar", "train-000001.tar", "train-000002.tar", "val-000000.tar"]
    assert not [p for p in cache.iterdir() if ".tmp" in p.name]  # written whole, then renamed
    for p in cache.glob("*.tar"):
        name = p.name.split("-", 1)[1]
        assert p.read_bytes() == (shard_root / name).read_bytes()
    again = SOURCES.create("shards", root=base, splits=splits, shard_cache=str(cache))
    assert again.read("val").num_images == 20 and len(asked) == 4  # from the cache: no new request


def test_a_shard_url_that_cannot_be_downloaded_is_one_line(shard_server, tmp_path):
    from vlr.data.shards.download import ShardDownloadError

    base, _ = shard_server
    source = SOURCES.create("shards", root=base, splits={"val": "val-{000000..000001}.tar"}, shard_cache=str(tmp_path))
    with pytest.raises(ShardDownloadError) as err:
        source.read("val")
    assert str(err.value) == f"data.splits.val: cannot download {base}/val-000001.tar: HTTP 404 File not found"
    assert len(list(tmp_path.glob("*.tar"))) == 1 and not list(tmp_path.glob("*tmp*"))  # the good one only


def test_the_shards_preset_downloads_into_the_cache_root(shard_root, shard_server, tmp_path):
    """``data=shards data.root=<URL>``: the composed preset downloads into data.shard_cache (under
    the VLR cache folder by default) and a run trains on the shards."""
    from tests.conftest import compose_config, run_vlr

    base, asked = shard_server
    cfg = compose_config("data=shards", f"data.root={base}", root=tmp_path)
    assert cfg.data.shard_cache == f"{tmp_path}/data/cache/shard_downloads"
    data = ["data=shards", f"data.root={base}", "data.image_transform=builtin", "data.image_size=64"]
    small = ["data.batch_size=10", "data.num_workers=0", "trainer.max_epochs=1", "+trainer.limit_train_batches=2"]
    globbed = run_vlr("train", *data, *small, "logger=none", dir=tmp_path / "globbed", root=tmp_path)
    assert globbed.error == (
        f"error: data.splits.train: {base}/train-*.tar: a glob cannot list remote shards; name them with a brace "
        "pattern, e.g. train-{000000..000009}.tar"
    )
    data += ["data.splits.train='train-{000000..000002}.tar'", "data.splits.val=val-000000.tar"]
    data += ["data.splits.test=test-000000.tar"]
    run = run_vlr("train", *data, *small, "logger=none", dir=tmp_path / "run", root=tmp_path)
    assert run.returncode == 0, run.output[-3000:]
    assert len(list((tmp_path / "data" / "cache" / "shard_downloads").glob("*.tar"))) == len(asked) == 5
    assert run.metrics["test/i2t/R@1"] >= 0


@pytest.mark.parametrize(
    "members",
    [
        [("000.json", json.dumps({"captions": []}).encode())],
        [("000.json", json.dumps({"captions": ["fine", " "]}).encode())],
        [("000.json", json.dumps({"caption": ""}).encode())],
        [("000.txt", b"")],
    ],
    ids=["empty list", "blank caption", "empty caption", "empty txt"],
)
def test_a_record_without_a_usable_caption_is_named_or_skipped(tmp_path, members):
    """An empty caption list (or blank text) is a bad record: named with its shard and key, or
    skipped and counted; never a caption-less image that breaks evaluation later."""
    _tar(tmp_path / "s-0.tar", [("000.jpg", _jpeg("red")), *members, ("001.jpg", _jpeg("blue")), ("001.txt", b"ok")])
    source = SOURCES.create("shards", root=str(tmp_path), splits={"train": "s-0.tar"})
    with pytest.raises(BadSampleError, match=r"s-0.tar, key 000: no caption"):
        source.read("train")
    skipping = SOURCES.create("shards", root=str(tmp_path), splits={"train": "s-0.tar"}, on_bad_sample="skip")
    assert list(skipping.read("train").captions) == ["ok"] and skipping.index("train").bad_samples == 1


def test_writing_into_a_folder_that_holds_shards_is_refused(tmp_path):
    """A second write with another shard size would leave the first write's extra shards
    beside the new ones, and ``<split>-*.tar`` would read both: refused, nothing touched."""
    from omegaconf import OmegaConf

    out = tmp_path / "out"
    out.mkdir()
    (out / "val-000002.tar").write_bytes(b"an earlier write")
    cfg = OmegaConf.create({"out": str(out), "splits": ["val"], "shard_size": 10, "data": {}})
    with pytest.raises(ConfigError, match=r"already holds shards \(val-000002.tar\)"):
        write_shards(cfg)
    assert (out / "val-000002.tar").read_bytes() == b"an earlier write"
