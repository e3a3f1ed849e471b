"""The WordPiece vlr trains on captions: deterministic, cached, and rebuilt when its cache is damaged."""

import hashlib
import logging
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from vlr.towers.tokenizer import build_tokenizer

CAPTIONS = [
    f"a {c} {s} on the {p}" for c in ("red", "green", "blue") for s in ("circle", "square") for p in ("left", "right")
]
BUILD = (
    "import sys; from vlr.towers.tokenizer import train_wordpiece; "
    "sys.stdout.write(train_wordpiece(sys.argv[1].split('|'), 40).backend_tokenizer.to_str())"
)


@pytest.mark.slow  # three processes: a hash seed is fixed at interpreter start
def test_the_same_captions_give_the_same_tokenizer_byte_for_byte_in_any_process():
    procs = [  # three processes at once, each with its own thread count and hash seed
        subprocess.Popen(
            [sys.executable, "-c", BUILD, "|".join(CAPTIONS * 3)],
            env={**os.environ, "RAYON_NUM_THREADS": threads, "PYTHONHASHSEED": threads, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for threads in ("1", "2", "4")
    ]
    outputs = set()
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-2000:]
            outputs.add(hashlib.sha256(out.encode()).hexdigest())
    finally:
        for proc in procs:
            proc.kill()
    assert len(outputs) == 1


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
