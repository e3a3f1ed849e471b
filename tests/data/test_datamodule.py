import pytest
import torch

from vlr.data import RetrievalDataModule
from vlr.models import build_tokenizer


class _FakeTrainer:
    def __init__(self, world_size, global_rank=0):
        self.world_size, self.global_rank = world_size, global_rank


def _dm(root, **kw):
    dm = RetrievalDataModule(
        name="synthetic", source="synthetic", root=str(root), num_train=60, num_val=20, num_test=20,
        generator_seed=3, image_size=64, num_workers=0, **kw,
    )
    dm.prepare_data()
    dm.set_tokenizer(build_tokenizer(None, dm.train_captions(), vocab_size=200), max_length=16)
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
    assert batch["pair_input_ids"].shape[0] == 16 and batch["pair_attention_mask"].shape == batch["pair_input_ids"].shape
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
    with pytest.raises(ValueError, match="data.batch_size=10 is the global batch and must be divisible by the world size"):
        dm.setup("fit")


def test_eval_loaders_cover_unique_images_and_all_captions(synthetic_root):
    dm = _dm(synthetic_root, eval_batch_size=7)
    dm.setup("test")
    images, captions = dm.test_dataloader()
    seen_images = torch.cat([b["image_idx"] for b in images]).tolist()
    seen_captions = torch.cat([b["caption_idx"] for b in captions]).tolist()
    assert seen_images == list(range(20)) and seen_captions == list(range(100))
    targets = dm.eval_targets("test")
    assert targets["relevance"].shape == (100, 20)
    assert targets["image_labels"].shape == (20,)
    # a caption is maximally relevant to its own image (it is one of the references)
    own = targets["relevance"][torch.arange(100), targets["text_to_image"]]
    assert torch.allclose(own, torch.ones(100))


def test_setup_needs_tokenizer(synthetic_root):
    dm = RetrievalDataModule(name="s", source="synthetic", root=str(synthetic_root))
    with pytest.raises(RuntimeError, match="needs a tokenizer"):
        dm.setup("fit")


def test_unknown_source():
    with pytest.raises(KeyError, match="unknown data source 'flickr'; registered: coco_captions, karpathy, lavis, synthetic"):
        RetrievalDataModule(name="x", source="flickr", root="/nowhere")


def test_unknown_data_option_is_an_error_not_ignored():
    with pytest.raises(TypeError, match="num_trian"):
        RetrievalDataModule(name="s", source="synthetic", root="/nowhere", num_trian=10)
