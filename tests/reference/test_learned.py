"""reference=learned: encoders fitted on the data's disjoint corpus, cached, embedding what the run sees."""

import dataclasses
import json

import pytest
import torch

from vlr.data.synthetic import SyntheticSpec, generate_synthetic
from vlr.errors import ConfigError
from vlr.reference import LearnedReference
from vlr.reference.learned import ConvEncoder

FIT = dict(image_size=32, image_dim=16, text_dim=16, image_epochs=1, text_epochs=2, batch_size=16)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("learned") / "data"
    generate_synthetic(root, SyntheticSpec(num_train=8, num_val=4, num_test=4, seed=2, version=3, reference_images=48))
    return root


def test_the_corpus_is_disjoint_from_the_splits_and_has_no_labels(corpus):
    rows = json.loads((corpus / "reference_corpus" / "captions.json").read_text())
    assert len(rows) == 48 and all(set(r) == {"filename", "captions"} and len(r["captions"]) == 6 for r in rows)
    split_captions = {
        s["raw"] for e in json.loads((corpus / "dataset_synthetic.json").read_text())["images"] for s in e["sentences"]
    }
    assert not split_captions & {c for r in rows for c in r["captions"]}


def test_fitted_once_cached_and_reproducible(corpus, tmp_path):
    first = LearnedReference(str(corpus / "reference_corpus"), **FIT)
    meta = first.directory / "meta.json"
    stamp = meta.stat().st_mtime_ns
    again = LearnedReference(str(corpus / "reference_corpus"), **FIT)
    assert again.directory == first.directory and meta.stat().st_mtime_ns == stamp  # loaded, not refitted
    # a fresh fit of the same corpus (another copy of the data) gives the same weights, bit for bit
    copy = tmp_path / "copy"
    generate_synthetic(copy, SyntheticSpec(num_train=8, num_val=4, num_test=4, seed=2, version=3, reference_images=48))
    with torch.no_grad():  # as vlr.build may be called: fitting still trains
        other = LearnedReference(str(copy / "reference_corpus"), **FIT)
    assert other.directory.name == first.directory.name  # the same key: settings + corpus
    for a, b in zip(first.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    fitted = json.loads(meta.read_text())
    assert fitted["corpus_images"] == 48 and len(fitted["image_loss_per_epoch"]) == FIT["image_epochs"]
    assert fitted["text_loss_per_epoch"][-1] < fitted["text_loss_per_epoch"][0]  # it learned something
    torch.manual_seed(0)  # the fit's seed: the image encoder as initialised there, before training
    assert not torch.equal(ConvEncoder(16).out.weight, first.image_encoder.out.weight)
    with pytest.raises(ConfigError, match=r"reference=learned needs a reference corpus at .*nowhere/reference_corpus"):
        LearnedReference(str(tmp_path / "nowhere" / "reference_corpus"), **FIT)


def test_it_embeds_the_captions_and_images_the_run_has(corpus):
    ref = LearnedReference(str(corpus / "reference_corpus"), **FIT)
    clean = ["a large red circle on the left with a small blue square at the top", "two shapes"]
    weak = ["a large circle on the with a small square at the", "two shapes"]  # text_weak dropped attributes

    @dataclasses.dataclass
    class Split:  # what prepare() reads of a CaptionSplit
        captions: list

    ref.prepare("train", Split(clean))
    ref.prepare("weak", Split(weak))
    index = {"caption_idx": torch.tensor([0, 1])}
    a, b = ref.embed("text", "train", index), ref.embed("text", "weak", index)
    assert torch.allclose(a.norm(dim=1), torch.ones(2)) and not torch.allclose(a[0], b[0])
    assert torch.equal(a[1], b[1])
    images = torch.randn(3, 3, 64, 64)
    batch = {"images": images, "image_idx": torch.tensor([4, 0, 2])}
    rows = ref.embed("image", "train", batch)
    expected = torch.nn.functional.normalize(
        ref.image_encoder(torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear")), dim=-1
    )
    assert rows.shape == (3, 16) and torch.allclose(rows, expected, atol=1e-6)
    # cached per dataset index (the training images are not augmented): other pixels, same rows
    again = ref.embed("image", "train", {"images": torch.zeros(3, 3, 64, 64), "image_idx": torch.tensor([4, 0, 2])})
    assert torch.equal(again, rows)
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
