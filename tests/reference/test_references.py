import functools

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_bert
from vlr.data.corpus import CaptionSplit
from vlr.errors import ConfigError
from vlr.models import RetrievalModule
from vlr.objectives import create_objective
from vlr.objectives.base import reference_rows
from vlr.reference import FeatureFileError, FeatureReference, FrozenInitReference, save_features
from vlr.towers import ImageTower, TextTower


def _towers():
    image = ImageTower(
        "vit_tiny_patch16_224", model_kwargs=dict(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
    )
    text = TextTower(
        config=tiny_bert(),
        vocab_size=30,
    )
    return image, text


def _split(num_images, num_captions):
    return CaptionSplit(
        "train", [f"{i}.png" for i in range(num_images)], ["c"] * num_captions, torch.arange(num_captions) % num_images
    )


def test_frozen_init_cache_returns_the_reference_embeddings():
    torch.manual_seed(0)
    module = RetrievalModule(
        *_towers(), create_objective("covlr"), embed_dim=8, reference=functools.partial(FrozenInitReference, cache=True)
    )
    ref = module.reference
    images, ids = torch.randn(6, 3, 16, 16), torch.randint(0, 30, (6, 5))
    images[1] = images[0]  # rows 0 and 1 are the same image (index 4)
    full = {
        "images": images,
        "input_ids": ids,
        "attention_mask": torch.ones(6, 5, dtype=torch.long),
        "image_idx": torch.tensor([4, 4, 0, 7, 2, 9]),
        "caption_idx": torch.tensor([20, 21, 1, 35, 10, 45]),
    }
    # the towers' own outputs (16-d here), not the 8-d projections newly initialised on top of them
    enc = module.encoder
    with torch.no_grad():
        want = {
            "image": F.normalize(enc.image_tower.eval()(images), dim=-1),
            "text": F.normalize(enc.text_tower.eval()(ids, full["attention_mask"]), dim=-1),
        }
    assert (ref.image_dim, ref.text_dim) == (16, 16) and want["image"].shape[1] == 16
    for sel in ([0, 1, 2], [3, 4, 5], [5, 0, 3]):  # the cache grows, then serves rows computed earlier
        part = {k: v[sel] for k, v in full.items()}
        got = reference_rows(module.reference, part, torch.float32)
        assert torch.allclose(got["image"], want["image"][sel], atol=1e-6)
        assert torch.allclose(got["text"], want["text"][sel], atol=1e-6)
    assert module.reference._rows[("train", "image")][1].sum().item() == 5  # images 0, 2, 4, 7, 9
    # the reference never trains, and a trained encoder leaves it unchanged
    module.train()
    assert not module.reference.image_tower.training and not module.reference.text_tower.training
    assert module.encoder.training
    assert not any(k.startswith("reference.") and "_proj." in k for k in module.state_dict())


def test_checkpoints_of_the_earlier_reference_layout_still_load():
    """Before, frozen_init held the whole encoder (``reference.encoder.*``, projections included)."""
    torch.manual_seed(0)
    module = RetrievalModule(*_towers(), create_objective("covlr"), embed_dim=8)
    state = module.state_dict()
    old = {}
    for key, value in state.items():
        old[key.replace("reference.", "reference.encoder.", 1) if key.startswith("reference.") else key] = value
    old["reference.encoder.image_proj.weight"] = torch.zeros(8, 16)
    from vlr.runs.checkpoints import check_state_fits

    check_state_fits(module, old, "old.ckpt")  # fits once upgraded
    checkpoint = {"state_dict": old}
    module.on_load_checkpoint(checkpoint)
    assert checkpoint["state_dict"].keys() == state.keys()
    module.load_state_dict(checkpoint["state_dict"])


def test_feature_reference_looks_up_normalised_rows_and_sizes_the_sad_heads(tmp_path):
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(5, 7, generator=g), torch.randn(9, 3, generator=g)
    save_features(tmp_path, "train", image, text, {"what": "test"})
    objective = create_objective("sad", embed_dim=8)
    module = RetrievalModule(*_towers(), objective, embed_dim=8, reference=FeatureReference(str(tmp_path)))
    # the release's heads map the reference's features (7-d image, 3-d text) into the 8-d student space
    assert (objective.image_head.in_features, objective.text_head.in_features) == (7, 3)
    assert (objective.image_head.out_features, objective.text_head.out_features) == (8, 8)
    assert not any(k.startswith("reference.") for k in module.state_dict())  # no frozen copy in checkpoints
    module.reference.prepare("train", _split(5, 9))
    batch = {"image_idx": torch.tensor([4, 0, 4]), "caption_idx": torch.tensor([8, 2, 3])}
    got = reference_rows(module.reference, batch, torch.float32)
    assert torch.allclose(got["image"], F.normalize(image[[4, 0, 4]], dim=-1))
    assert torch.allclose(got["text"], F.normalize(text[[8, 2, 3]], dim=-1))


def test_feature_reference_rejects_files_that_do_not_match_the_split(tmp_path):
    save_features(tmp_path, "train", torch.randn(5, 7), torch.randn(9, 3), {})
    module = RetrievalModule(
        *_towers(), create_objective("infonce"), embed_dim=8, reference=FeatureReference(str(tmp_path))
    )
    with pytest.raises(
        FeatureFileError, match=r"train\.safetensors \['text'\]: has 9 rows but split 'train' has 10 captions"
    ):
        module.reference.prepare("train", _split(5, 10))
    with pytest.raises(FeatureFileError, match=r"no reference features for split 'val' in .*val\.safetensors"):
        module.reference.prepare("val", _split(5, 9))


def test_explicit_sad_head_size_must_match_the_reference(tmp_path):
    save_features(tmp_path, "train", torch.randn(5, 7), torch.randn(9, 3), {})
    objective = create_objective("sad", embed_dim=8, image_reference_dim=6)
    with pytest.raises(ValueError, match=r"objective.image_reference_dim=6 but the reference's image features have 7"):
        RetrievalModule(*_towers(), objective, embed_dim=8, reference=FeatureReference(str(tmp_path)))


def test_bad_reference_options_are_named():
    with pytest.raises(ConfigError, match="reference=features needs reference.path"):
        FeatureReference("")
    with pytest.raises(FeatureFileError, match="reference.path=/nonexistent/feats: no such directory"):
        FeatureReference("/nonexistent/feats")
    with pytest.raises(ConfigError, match="reference.cache must be true, false or auto, got 'sometimes'"):
        RetrievalModule(
            *_towers(),
            create_objective("infonce"),
            embed_dim=8,
            reference=functools.partial(FrozenInitReference, cache="sometimes"),
        )


def test_frozen_init_caches_unaugmented_splits_only_under_auto():
    ref = RetrievalModule(*_towers(), create_objective("covlr"), embed_dim=8).reference  # distils: a copy
    ref.prepare("train", _split(3, 3), augmented=True)
    ref.prepare("val", _split(3, 3))
    batch = {"images": torch.randn(2, 3, 16, 16), "image_idx": torch.tensor([0, 1])}
    ref.embed("image", "train", batch)
    ref.embed("image", "val", batch)
    assert ("train", "image") not in ref._rows and ("val", "image") in ref._rows
