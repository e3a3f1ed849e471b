"""Text tokenizers: a transformers tokenizer by name or path, or a WordPiece trained on the training captions.

The trained tokenizer needs no download; it is cached by the captions' content and
vocabulary size, so every DDP rank and ``vlr.eval`` get the identical vocabulary.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from filelock import FileLock
from transformers import AutoTokenizer, PreTrainedTokenizerFast

SPECIAL = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}


def train_wordpiece(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token=SPECIAL["unk_token"]))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL.values()))
    tok.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
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
    key = hashlib.sha256(("\n".join(train_texts) + f"|{vocab_size}").encode()).hexdigest()[:16]
    target = Path(cache_dir) / f"wordpiece-{vocab_size}-{key}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "tokenizer.json").exists():
            tmp = target.with_name(target.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            train_wordpiece(train_texts, vocab_size).save_pretrained(tmp)
            os.replace(tmp, target)
    return PreTrainedTokenizerFast.from_pretrained(str(target))
