import numpy as np
import pytest
from PIL import Image

from vlr.imbalance import ATTRIBUTE_WORDS, IMAGE_OPS, TEXT_OPS
from vlr.imbalance.ops import rng_for

CAPTION = "a large red circle on the left next to a small blue square".split()
VOCAB = ["alpha", "beta", "gamma"]


def _apply(op, words, strength, index=0, seed=0):
    return TEXT_OPS.get(op)(list(words), strength, rng_for(seed, op, index), VOCAB)


def test_attribute_omission_drops_only_attribute_words():
    assert _apply("attribute_omission", CAPTION, 0.0) == CAPTION
    full = _apply("attribute_omission", CAPTION, 1.0)
    assert full == [w for w in CAPTION if w not in ATTRIBUTE_WORDS] == "a circle on the next to a square".split()
    dropped = sum(len(CAPTION) - len(_apply("attribute_omission", CAPTION, 0.5, index=i)) for i in range(400))
    assert 0.45 < dropped / (400 * 5) < 0.55  # 5 attribute words per caption, each dropped w.p. 0.5


def test_word_dropout_rate_and_never_empty():
    words = [f"w{i}" for i in range(50)]
    kept = [len(_apply("word_dropout", words, 0.3, index=i)) for i in range(200)]
    assert 0.67 < np.mean(kept) / 50 < 0.73
    assert all(len(_apply("word_dropout", ["only"], 1.0, index=i)) == 1 for i in range(20))


@pytest.mark.parametrize("strength, n", [(0.0, 13), (0.5, 7), (0.9, 2), (1.0, 1)])
def test_truncation_keeps_the_first_words(strength, n):
    assert _apply("truncation", CAPTION, strength) == CAPTION[:n]


def test_caption_noise_replaces_with_vocabulary_words():
    out = [_apply("caption_noise", CAPTION, 0.25, index=i) for i in range(200)]
    replaced = sum(a != b for o in out for a, b in zip(o, CAPTION, strict=False))
    assert all(len(o) == len(CAPTION) and all(w in CAPTION or w in VOCAB for w in o) for o in out)
    assert 0.21 < replaced / (200 * len(CAPTION)) < 0.29


def test_ops_are_seeded_per_item():
    a = [_apply("word_dropout", CAPTION, 0.5, index=i) for i in range(10)]
    assert a == [_apply("word_dropout", CAPTION, 0.5, index=i) for i in range(10)]
    assert len({tuple(x) for x in a}) > 1
    assert a != [_apply("word_dropout", CAPTION, 0.5, index=i, seed=1) for i in range(10)]


def _grey(size=64, value=128):
    return Image.new("RGB", (size, size), (value,) * 3)


def _img_op(op, img, strength, index=0):
    return np.asarray(IMAGE_OPS.get(op)(img, strength, rng_for(0, op, index)), dtype=float)


def test_noise_has_the_stated_std():
    out = _img_op("noise", _grey(), 0.1)
    assert abs(out.std() - 12.75) < 0.5 and abs(out.mean() - 128) < 0.5


def test_occlusion_covers_the_stated_area():
    img = Image.new("RGB", (64, 64), (255, 0, 0))
    for i, s in enumerate((0.25, 0.5)):
        out = _img_op("occlusion", img, s, index=i)
        grey = (out == 128).all(axis=2).mean()
        assert grey == pytest.approx(round(np.sqrt(s) * 64) ** 2 / 64**2)


def test_downsample_lowers_resolution_and_blur_smooths():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (64, 64, 3)).astype(np.uint8))
    out = _img_op("downsample", img, 1.0)  # 8 x 8 pixels, each repeated in an 8 x 8 block
    assert len(np.unique(out.reshape(-1, 3), axis=0)) <= 64
    assert _img_op("blur", img, 0.5).std() < 0.5 * np.asarray(img, dtype=float).std()
    assert np.array_equal(_img_op("blur", img, 0.0), np.asarray(img, dtype=float))


def test_colour_omission_greys_the_stated_fraction_of_images_and_keeps_luminance():
    img = Image.new("RGB", (8, 8), (200, 30, 60))
    assert np.array_equal(_img_op("colour_omission", img, 0.0), np.asarray(img, dtype=float))
    grey = _img_op("colour_omission", img, 1.0)
    assert (grey == grey[..., :1]).all()  # R = G = B
    assert grey[0, 0, 0] == round(200 * 0.299 + 30 * 0.587 + 60 * 0.114)  # ITU-R 601 luma, PIL's
    greyed = [(_img_op("colour_omission", img, 0.3, index=i)[0, 0, 0] != 200) for i in range(1000)]
    assert 0.26 < np.mean(greyed) < 0.34


def test_unknown_op_lists_the_known_ones():
    with pytest.raises(
        KeyError, match="unknown text imbalance op 'shout'; registered: attribute_omission, caption_noise"
    ):
        TEXT_OPS.get("shout")
