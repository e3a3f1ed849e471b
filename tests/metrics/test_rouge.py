import hashlib
import logging

import numpy as np
import pytest
import torch

from tests.metrics.brute_force import rouge_l_dp
from vlr.metrics import rouge_l_relevance, tokenize_caption
from vlr.metrics.relevance.rouge_l import _encode

WORDS = "a the man woman dog cat red blue sits runs on under park street ball small big".split()


def test_tokenizer_lowercases_and_drops_punctuation():
    assert tokenize_caption("A Dog, running!  In the park.") == ["a", "dog", "running", "in", "the", "park"]


def test_hand_checked_values():
    caps = ["a man rides a horse", "A horse!", "the cat sat on the mat", "a cat"]
    rel = rouge_l_relevance(caps, [0, 0, 1, 1], use_cache=False)
    # "a cat" vs img0: LCS("a cat", "a man rides a horse") = 1 -> P=1/2 R=1/5; vs "a horse" -> P=1/2 R=1/2
    # P_max=.5, R_max=.5 -> F = (1+1.44)*.25/(.5+1.44*.5) = .5
    assert rel[3, 0].item() == pytest.approx(0.5)
    # "the cat sat on the mat" vs img0 ("a man rides a horse", "a horse"): no shared word -> 0
    assert rel[2, 0].item() == 0.0
    # "a man rides a horse" vs img0 contains itself -> 1
    assert rel[0, 0].item() == pytest.approx(1.0)
    # vs "a cat": LCS=1 P=1/5 R=1/2; vs "the cat sat on the mat": 0 -> F=(2.44*.1)/(.5+1.44*.2)
    assert rel[0, 1].item() == pytest.approx(2.44 * 0.1 / (0.5 + 1.44 * 0.2))


def test_matches_dynamic_programming_lcs_on_random_captions():
    rng = np.random.default_rng(0)
    n_img = 12
    t2i = np.repeat(np.arange(n_img), rng.integers(1, 5, n_img))
    caps = [list(rng.choice(WORDS, rng.integers(1, 9))) for _ in t2i]
    caps[3] = []  # an empty caption scores 0 everywhere (and as a reference gives recall 0)
    rel = rouge_l_relevance(caps, t2i, use_cache=False)
    for q, cand in enumerate(caps):
        for j in range(n_img):
            refs = [caps[c] for c in np.where(t2i == j)[0]]
            assert rel[q, j].item() == pytest.approx(rouge_l_dp(cand, refs), abs=1e-6), (q, j)


def test_word_encoding_never_merges_words_across_the_surrogate_gap():
    words = [[f"w{i}"] for i in range(0xD800 - 0x100 + 5)]
    enc = _encode(words)
    assert len(set(enc)) == len(words)
    assert all(not (0xD800 <= ord(s) < 0xE000) for s in enc)


def test_cache_is_keyed_by_content_and_used_when_whole(tmp_path, monkeypatch):
    import vlr.metrics.relevance.rouge_l as rouge

    caps = ["a red ball", "a blue ball", "a dog"]
    first = rouge_l_relevance(caps, [0, 0, 1], cache_dir=tmp_path)
    files = list(tmp_path.glob("rouge_l_*.npy"))
    assert len(files) == 1
    np.testing.assert_array_equal(np.load(files[0]), first.numpy())
    monkeypatch.setattr(rouge, "_compute", lambda *a, **k: pytest.fail("a whole cache must not be recomputed"))
    assert torch.equal(rouge_l_relevance(caps, [0, 0, 1], cache_dir=tmp_path), first)
    monkeypatch.undo()
    # other captions -> another key, another file
    rouge_l_relevance(["a red ball", "a blue cat", "a dog"], [0, 0, 1], cache_dir=tmp_path)
    assert len(list(tmp_path.glob("rouge_l_*.npy"))) == 2


def _garbage(path, good):
    path.write_bytes(b"\x93NUMPY garbage")


def _truncated(path, good):
    path.write_bytes(path.read_bytes()[:-7])


def _edited(path, good):  # a plausible value, but not what was written
    bad = good.copy()
    bad[0, 0] = 0.123
    np.save(path, bad)


def _huge(path, good):  # what a garbage cache gave before: NDCG = -636625088
    bad = good.copy()
    bad[1, 0] = -3e9
    np.save(path, bad)
    path.with_suffix(".sha256").write_text(hashlib.sha256(bad.tobytes()).hexdigest())


def _nan(path, good):
    bad = good.copy()
    bad[2, 1] = np.nan
    np.save(path, bad)
    path.with_suffix(".sha256").write_text(hashlib.sha256(bad.tobytes()).hexdigest())


@pytest.mark.parametrize("damage", [_garbage, _truncated, _edited, _huge, _nan], ids=lambda f: f.__name__[1:])
def test_a_damaged_cache_is_recomputed_with_a_warning(tmp_path, caplog, damage):
    caps = ["a red ball", "a blue ball", "a dog"]
    good = rouge_l_relevance(caps, [0, 0, 1], cache_dir=tmp_path).numpy()
    (path,) = tmp_path.glob("rouge_l_*.npy")
    damage(path, good)
    with caplog.at_level(logging.WARNING, logger="vlr.metrics.relevance.rouge_l"):
        again = rouge_l_relevance(caps, [0, 0, 1], cache_dir=tmp_path)
    assert f"ROUGE-L cache {path} is damaged" in caplog.text
    np.testing.assert_array_equal(again.numpy(), good)
    np.testing.assert_array_equal(np.load(path), good)  # rewritten whole


def test_errors():
    with pytest.raises(ValueError, match="one entry per caption"):
        rouge_l_relevance(["a", "b"], [0], use_cache=False)
    with pytest.raises(ValueError, match="num_images=1"):
        rouge_l_relevance(["a", "b"], [0, 3], num_images=1, use_cache=False)
