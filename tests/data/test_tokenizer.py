"""The WordPiece vlr trains on captions: deterministic, cached, and rebuilt when its cache is damaged."""

import logging

import pytest

from vlr.towers.tokenizer import build_tokenizer, train_wordpiece

CAPTIONS = [
    f"a {c} {s} on the {p}" for c in ("red", "green", "blue") for s in ("circle", "square") for p in ("left", "right")
]


def test_the_vocabulary_is_a_function_of_the_captions_alone():
    """Specials, every character (alone and as ``##``), then whole words by count with ties
    alphabetical: computed independently here. Nothing depends on set or dict order (which the
    hash seed changes from process to process) or on the captions' order, so any process, with
    any hash seed or thread count, writes the same file byte for byte."""
    import random
    from collections import Counter

    texts = [*CAPTIONS * 3, "a red circle", "the the blue"]
    words = Counter(w for t in texts for w in t.lower().split())
    chars = sorted({c for w in words for c in w})
    ranked = sorted(words, key=lambda w: (-words[w], w))
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    want = [*special, *chars, *(f"##{c}" for c in chars)]
    want += [w for w in ranked if w not in want][: 60 - len(want)]  # a one-letter word is already in
    tok = train_wordpiece(texts, 60)
    assert sorted(tok.get_vocab(), key=tok.get_vocab().get) == want
    shuffled = texts[:]
    random.Random(3).shuffle(shuffled)
    assert train_wordpiece(shuffled, 60).backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()


def test_every_word_is_spelled_and_frequent_words_are_whole():
    tok = build_tokenizer(None, CAPTIONS, vocab_size=60)
    vocab = tok.get_vocab()
    assert {"red", "circle", "left"} <= set(vocab)
    # an unseen word of seen letters is spelled, never [UNK]
    assert tok.tokenize("a reed sale") == ["a", "r", "##e", "##e", "##d", "s", "##a", "##l", "##e"]


@pytest.mark.parametrize("damage", ["missing tokenizer.json", "garbage tokenizer.json", "edited tokenizer.json"])
def test_a_damaged_cache_is_rebuilt_with_a_warning(tmp_path, caplog, damage):
    first = build_tokenizer(None, CAPTIONS, vocab_size=60, cache_dir=tmp_path)
    (entry,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    good = (entry / "tokenizer.json").read_bytes()
    if damage == "missing tokenizer.json":
        (entry / "tokenizer.json").unlink()
    elif damage == "garbage tokenizer.json":
        (entry / "tokenizer.json").write_bytes(b"\x00\x01 not json")
    else:
        assert b'"red"' in good
        (entry / "tokenizer.json").write_bytes(good.replace(b'"red"', b'"rod"'))
    with caplog.at_level(logging.WARNING, logger="vlr.towers.tokenizer"):
        again = build_tokenizer(None, CAPTIONS, vocab_size=60, cache_dir=tmp_path)
    assert f"tokenizer cache {entry} is damaged" in caplog.text
    assert (entry / "tokenizer.json").read_bytes() == good and again.get_vocab() == first.get_vocab()
