"""Text tokenizers: a transformers tokenizer by name or path, or a WordPiece trained on the training captions.

The trained tokenizer needs no download; it is cached by the captions' content and
vocabulary size, so every DDP rank and ``vlr.eval`` get the identical vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

from filelock import FileLock
from transformers import AutoTokenizer, PreTrainedTokenizerFast

log = logging.getLogger(__name__)
VOCAB_VERSION = "vlr-wordpiece-2"  # 2: deterministic vocabulary (wordpiece_vocab)
CACHE_MANIFEST = "vlr-cache.json"  # sha256 of tokenizer.json, checked on every read
SPECIAL = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


def wordpiece_vocab(texts: list[str], vocab_size: int, normalizer, pre_tokenizer) -> dict[str, int]:
    """A WordPiece vocabulary as a pure function of the captions: special tokens, every character
    seen (alone and as a ``##`` continuation, so any word can be spelled), then whole words by
    count, ties broken alphabetically, up to ``vocab_size``. The `tokenizers` trainer is not
    deterministic (its hash maps break count ties at random: the same captions gave different
    vocabularies from run to run, and different results), so vlr builds the vocabulary itself."""
    words: Counter[str] = Counter()
    for text in texts:
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for w in words for c in w})
    vocab = [*SPECIAL.values(), *chars, *(f"##{c}" for c in chars)]
    taken = set(vocab)
    for word, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        if word not in taken:
            vocab.append(word)
            taken.add(word)
    return {token: i for i, token in enumerate(vocab)}


def train_wordpiece(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer over `wordpiece_vocab` (deterministic: the same captions
    give the same file byte for byte, whatever the process or thread count)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    vocab = wordpiece_vocab(texts, vocab_size, normalizer, pre_tokenizer)
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token=SPECIAL["unk_token"], max_input_chars_per_word=100))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)


def build_tokenizer(
    name_or_path: str | None,
    train_texts: list[str] | None = None,
    vocab_size: int = 1000,
    cache_dir: str | Path | None = None,
):
    """A transformers tokenizer (``name_or_path``), else a WordPiece trained on ``train_texts``."""
    if name_or_path:
        return AutoTokenizer.from_pretrained(str(name_or_path))
    if not train_texts:
        raise ValueError("model.tokenizer.name_or_path is null, so training captions are needed to train a WordPiece")
    if cache_dir is None:
        return train_wordpiece(train_texts, vocab_size)
    key = hashlib.sha256(("\n".join(train_texts) + f"|{vocab_size}|{VOCAB_VERSION}").encode()).hexdigest()[:16]
    target = Path(cache_dir) / f"wordpiece-{vocab_size}-{key}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        tokenizer = _load_cached(target)
        if tokenizer is None:
            tmp = target.with_name(target.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            train_wordpiece(train_texts, vocab_size).save_pretrained(tmp)
            digest = hashlib.sha256((tmp / "tokenizer.json").read_bytes()).hexdigest()
            (tmp / CACHE_MANIFEST).write_text(json.dumps({"tokenizer.json": digest}))
            if target.exists():
                shutil.rmtree(target)  # vlr's own cache entry, found broken above
            os.replace(tmp, target)
            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(target))
    return tokenizer


def _load_cached(target: Path) -> PreTrainedTokenizerFast | None:
    """The cached tokenizer when it is whole (its checksum matches and it loads), else None
    after a warning naming what is wrong; a missing entry is None silently."""
    if not target.exists():
        return None
    try:
        manifest = json.loads((target / CACHE_MANIFEST).read_text())
        data = (target / "tokenizer.json").read_bytes()
        if hashlib.sha256(data).hexdigest() != manifest["tokenizer.json"]:
            raise ValueError("tokenizer.json does not match its recorded checksum")
        return PreTrainedTokenizerFast.from_pretrained(str(target))
    except Exception as err:  # missing files, truncated JSON, checksum mismatch
        log.warning("tokenizer cache %s is damaged (%s); rebuilding it", target, str(err).splitlines()[0][:200])
        return None


class OpenCLIPTokenizer:
    """open_clip's tokenizer for ``arch`` behind the transformers call `Collate` makes. It
    pads to the model's context length (open_clip's text towers read every position); the
    mask marks the non-padding tokens."""

    def __init__(self, arch: str, max_length: int | None = None):
        import open_clip

        from vlr.errors import ConfigError
        from vlr.towers.open_clip_names import open_clip_name

        self.arch = arch
        self._tokenize = open_clip.get_tokenizer(open_clip_name(arch))
        context = getattr(self._tokenize, "context_length", None)
        if max_length is not None and context is not None and int(max_length) != int(context):
            raise ConfigError(
                f"model.tokenizer.max_length={max_length}, but {arch} reads {context} tokens (its context length); "
                "leave it null for open_clip models"
            )
        self.pad_token_id = int(getattr(self._tokenize, "pad_id", 0) or 0)

    def __call__(self, texts: list[str], return_tensors: str = "pt", **_ignored) -> dict:
        ids = self._tokenize(list(texts))
        return {"input_ids": ids, "attention_mask": (ids != self.pad_token_id).long()}

    def convert_tokens_to_ids(self, tokens):  # a tokenizer, not a factory of the captions (the datamodule asks)
        raise NotImplementedError("open_clip tokenizers map text to ids only")

    def __len__(self) -> int:
        return int(getattr(self._tokenize, "vocab_size", 0) or len(getattr(self._tokenize, "encoder", {})))
