import pytest
import torch

from vlr.data import RetrievalDataModule
from vlr.errors import ConfigError
from vlr.metrics import rouge_l_relevance
from vlr.towers import build_tokenizer


class _FakeTrainer:
    def __init__(self, world_size, global_rank=0):
        self.world_size, self.global_rank = world_size, global_rank


def _dm(root, **kw):
    dm = RetrievalDataModule(
        name="synthetic",
        source="synthetic",
        root=str(root),
        num_train=60,
        num_val=20,
        num_test=20,
        generator_seed=3,
        image_size=64,
        num_workers=0,
        tokenizer=lambda captions: build_tokenizer(None, captions, vocab_size=200),
        max_length=16,
        **kw,
    )
    dm.prepare_data()
    return dm


def test_train_batches(synthetic_root):
    dm = _dm(synthetic_root, batch_size=16, shuffle=False, augment=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (16, 3, 64, 64)
    assert batch["input_ids"].shape[0] == 16 and batch["input_ids"].shape[1] <= 16
    assert batch["attention_mask"].shape == batch["input_ids"].shape
    # one item per caption, in order when not shuffled: 5 captions per image
    assert batch["caption_idx"].tolist() == list(range(16))
    assert batch["image_idx"].tolist() == [c // 5 for c in range(16)]
    assert len(dm.train_dataloader()) == 300 // 16  # drop_last


def test_paired_captions_carry_another_caption_of_the_same_image(synthetic_root):
    dm = _dm(synthetic_root, batch_size=16, shuffle=False, augment=False, paired_captions=True)
    dm.setup("fit")
    dataset = dm.train_dataloader().dataset
    split = dm.split("train")
    for k in range(40):
        item = dataset[(k, 0)]
        own = [split.captions[c] for c in range(split.num_captions) if int(split.text_to_image[c]) == item["image_idx"]]
        assert item["pair_caption"] in own and item["pair_caption"] != item["caption"] or len(set(own)) == 1
    assert dataset[(7, 0)]["pair_caption"] == dataset[(7, 0)]["pair_caption"]  # seeded by (seed, epoch, index)
    batch = next(iter(dm.train_dataloader()))
    assert (
        batch["pair_input_ids"].shape[0] == 16 and batch["pair_attention_mask"].shape == batch["pair_input_ids"].shape
    )
    plain = _dm(synthetic_root, batch_size=16)
    plain.setup("fit")
    assert "pair_input_ids" not in next(iter(plain.train_dataloader()))


def test_global_batch_is_divided_by_world_size(synthetic_root):
    dm = _dm(synthetic_root, batch_size=16)
    dm.trainer = _FakeTrainer(world_size=4)
    dm.setup("fit")
    assert dm.train_dataloader().batch_size == 4
    # unshuffled: rank r's batches interleave so the 4 ranks' first batches form items 0..15
    firsts = []
    for rank in range(4):
        dm.trainer = _FakeTrainer(world_size=4, global_rank=rank)
        dm.shuffle = False
        firsts += next(iter(dm.train_dataloader()))["caption_idx"].tolist()
    assert sorted(firsts) == list(range(16))
    dm = _dm(synthetic_root, batch_size=10)
    dm.trainer = _FakeTrainer(world_size=4)
    with pytest.raises(
        ValueError, match="data.batch_size=10 is the global batch and must be divisible by the world size"
    ):
        dm.setup("fit")


def test_eval_loaders_cover_unique_images_and_all_captions(synthetic_root):
    dm = _dm(synthetic_root, eval_batch_size=7)
    dm.setup("test")
    images, captions = dm.test_dataloader()
    seen_images = torch.cat([b["image_idx"] for b in images]).tolist()
    seen_captions = torch.cat([b["caption_idx"] for b in captions]).tolist()
    assert seen_images == list(range(20)) and seen_captions == list(range(100))
    targets = dm.eval_targets("test")
    relevance = rouge_l_relevance(targets["captions"], targets["text_to_image"], num_images=targets["num_images"])
    assert relevance.shape == (100, 20)
    assert targets["image_labels"].shape == (20,)
    # a caption is maximally relevant to its own image (it is one of the references)
    own = relevance[torch.arange(100), targets["text_to_image"]]
    assert torch.allclose(own, torch.ones(100))


def test_setup_needs_tokenizer(synthetic_root):
    dm = RetrievalDataModule(name="s", source="synthetic", root=str(synthetic_root))
    with pytest.raises(ConfigError, match="RetrievalDataModule needs a tokenizer"):
        dm.setup("fit")


def test_unknown_source():
    with pytest.raises(
        KeyError,
        match="unknown data source 'flickr'; registered: coco_captions, karpathy, lavis, shards, synthetic, vizwiz",
    ):
        RetrievalDataModule(name="x", source="flickr", root="/nowhere")


def test_unknown_data_option_is_an_error_not_ignored():
    with pytest.raises(TypeError, match="num_trian"):
        RetrievalDataModule(name="s", source="synthetic", root="/nowhere", num_trian=10)


def test_a_resumed_fit_continues_the_restored_epoch_after_its_trained_batches(synthetic_root):
    """Lightning asks for the loader after restoring the checkpoint (the datamodule's own state
    included): the sampler learns the epoch and skips the batches the checkpoint had trained."""
    from types import SimpleNamespace

    dm = _dm(synthetic_root, batch_size=20, shuffle=True, augment=False)
    dm.setup("fit")
    fresh = [b["caption_idx"].tolist() for b in dm.train_dataloader()]  # no trainer: epoch 0, from its start

    def resumed(epoch, done, limit=1.0, saved_epoch=None):
        dm.load_state_dict({"epoch": epoch if saved_epoch is None else saved_epoch, "trained_batches": done})
        dm.trainer = SimpleNamespace(
            world_size=1, global_rank=0, current_epoch=epoch, limit_train_batches=limit, state=SimpleNamespace(fn="fit")
        )
        return [b["caption_idx"].tolist() for b in dm.train_dataloader()]

    epoch2 = resumed(2, 0)
    assert len(epoch2) == len(fresh) == 15 and epoch2 != fresh  # 300 captions / 20: another epoch's order
    assert resumed(2, 4) == epoch2[4:]
    assert resumed(2, 15) == epoch2  # a finished epoch skips nothing
    assert resumed(2, 3, limit=3) == epoch2  # limit_train_batches=3: 3 batches were the whole epoch
    assert resumed(2, 4, saved_epoch=1) == epoch2  # batches counted in an earlier epoch skip nothing now
    dm.trainer = None
    assert [b["caption_idx"].tolist() for b in dm.train_dataloader()] == fresh


def test_cache_images_serves_the_same_batches_and_reads_each_image_once(synthetic_root, monkeypatch):
    import vlr.data.datasets as datasets

    def batches(dm):
        dm.setup("fit")
        loader = dm.train_dataloader()
        out = []
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)
            out += [b["images"] for b in loader]
        return torch.cat(out), torch.cat([b["images"] for b in dm.val_dataloader()[0]])

    plain_train, plain_val = batches(_dm(synthetic_root, batch_size=16, augment=False))
    reads = []
    original = datasets.load_rgb
    monkeypatch.setattr(datasets, "load_rgb", lambda path: reads.append(path) or original(path))
    cached = _dm(synthetic_root, batch_size=16, augment=False, cache_images=True)
    cached_train, cached_val = batches(cached)
    assert torch.equal(cached_train, plain_train) and torch.equal(cached_val, plain_val)
    assert len(reads) == len(set(reads)) == 60 + 20  # each train and val image once, over two epochs
    assert sorted(cached.image_cache) == ["train", "val"] and len(cached.image_cache["train"]) == 60


def test_cache_images_with_augmentation_is_an_error(synthetic_root):
    with pytest.raises(ConfigError, match="data.cache_images=true needs data.augment=false"):
        _dm(synthetic_root, augment=True, cache_images=True)
