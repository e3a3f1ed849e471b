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
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--captions", required=True, help="a COCO captions file (captions_val2017.json)")
    parser.add_argument("--cxc", required=True, help="the folder of CxC's CSV files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30, help="the n-gram reference's epochs")
    args = parser.parse_args(argv)
    pairs = rated_caption_pairs(args.captions, args.cxc)
    corpus = _fit_corpus(pairs)
    ngram, _ = fit_text_encoder(corpus, dim=64, epochs=args.epochs, batch_size=128, seed=args.seed)
    scorers = {
        "rouge_l": rouge_l_pairs,
        "learned_ngram": _cosine(ngram),
        "frozen_init_tiny": _cosine(_tiny_text_tower([c for caps in corpus for c in caps], args.seed)),
    }
    rho = caption_rho(pairs, scorers)
    result = {"pairs": len(pairs["score"]), "pairs_in_cxc": pairs["total"], "fit_images": len(corpus), "spearman": rho}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
