"""ITM re-ranking cost (docs/fusion.md): per query at k = 16, 128, 256, and the evaluation time
re-ranked / plain, for the tiny preset and a CLIP-sized fusion encoder; random weights, no download.

Per query: ``vlr.models.rerank.pair_scorer`` over k candidates (the code the evaluator runs),
timed over a few queries. The eval ratio is for a COCO-shaped split (5 captions per image):
plain = the towers' forward over every image and caption (timed per item on a batch; the
metrics' own time left out, so the ratio is an upper bound), re-ranked = plain + k pairs for
every image query and every caption query. Every pair's FLOPs are counted too, which is how
docs/fusion.md scales the CPU figure to a GPU estimate.
"""

from __future__ import annotations

import time

import torch

from vlr.models.fusion import FusionEncoder
from vlr.models.rerank import pair_scorer

KS = (16, 128, 256)
CAPTIONS_PER_IMAGE = 5
TEXT_TOKENS = 32  # a long caption (vlr's tiny tokenizer's max_length; COCO captions are ~12-20)
# name: fusion widths and token counts, towers for the plain pass, queries timed per k
PRESETS = {
    "tiny": {
        "width": 96, "image_width": 96, "layers": 2, "heads": 4, "image_tokens": 65,  # 64 px / 8 px patches + CLS
        "queries": 8,
    },
    "clip_sized": {  # CLIP ViT-B/32 tokens (50 x 768) and text width 512; X-VLM's 6 fusion layers
        "width": 512, "image_width": 768, "layers": 6, "heads": 8, "image_tokens": 50,
        "queries": 1,
    },
}  # fmt: skip


def pair_flops(width: int, image_width: int, layers: int, image_tokens: int, text_tokens: int) -> float:
    """Multiply-adds x 2 of one (caption, image) pair through the fusion layers (the head is noise)."""
    w, n, L = width, image_tokens, text_tokens
    self_attention = 4 * L * w * w + 2 * L * L * w
    cross_attention = 2 * L * w * w + 2 * n * image_width * w + 2 * L * n * w
    feed_forward = 2 * L * w * 4 * w
    return 2.0 * layers * (self_attention + cross_attention + feed_forward)


def _tokens(p: dict, g: torch.Generator) -> dict[str, torch.Tensor]:
    n = max(KS) + 1
    return {
        "image_idx": torch.arange(n),
        "image_tokens": torch.randn(n, p["image_tokens"], p["image_width"], generator=g),
        "text_idx": torch.arange(n),
        "text_tokens": torch.randn(n, TEXT_TOKENS, p["width"], generator=g),
        "text_mask": torch.ones(n, TEXT_TOKENS, dtype=torch.long),
    }


def _per_query_seconds(fusion: FusionEncoder, tokens: dict, k: int, queries: int) -> float:
    score = pair_scorer(fusion.match_score, tokens, batch_size=256)
    candidates = torch.stack([torch.roll(torch.arange(k), q) for q in range(queries)])
    score("i2t", torch.arange(queries), candidates[:, :1].expand(queries, 1).clone())  # warm-up
    start = time.perf_counter()
    score("i2t", torch.arange(queries), candidates)
    return (time.perf_counter() - start) / queries


def _tower_seconds_per_item(name: str) -> tuple[float, float]:
    """(seconds per image, seconds per caption) of the preset's towers' forward, batch 8."""
    from vlr.towers import CLIPImageTower, CLIPTextTower, ImageTower, TextTower

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if name == "tiny":
            kwargs = {"img_size": 64, "patch_size": 8, "embed_dim": 96, "depth": 3, "num_heads": 3}
            image: torch.nn.Module = ImageTower("vit_tiny_patch16_224", model_kwargs=kwargs)
            bert = {"model_type": "bert", "hidden_size": 96, "num_hidden_layers": 2, "num_attention_heads": 3,
                    "intermediate_size": 192, "max_position_embeddings": 64}  # fmt: skip
            text: torch.nn.Module = TextTower(config=bert, vocab_size=600, pooling="mean")
            size, vocab = 64, 600
        else:
            image, text = CLIPImageTower(config={}), CLIPTextTower(config={})
            size, vocab = 224, 49408
        images = torch.randn(8, 3, size, size)
        ids = torch.randint(0, vocab, (8, TEXT_TOKENS))
    image.eval(), text.eval()
    out = []
    with torch.no_grad():
        for run in (lambda: image(images), lambda: text(ids, torch.ones_like(ids))):
            run()  # warm-up
            start = time.perf_counter()
            run()
            out.append((time.perf_counter() - start) / 8)
    return out[0], out[1]


@torch.no_grad()
def run(tmp=None) -> dict:
    figures: dict[str, float] = {}
    ratios: dict[str, float] = {}
    g = torch.Generator().manual_seed(0)
    for name, p in PRESETS.items():
        fusion = FusionEncoder(p["width"], p["image_width"], layers=p["layers"], heads=p["heads"]).eval()
        tokens = _tokens(p, g)
        t_image, t_caption = _tower_seconds_per_item(name)
        plain_per_image = t_image + CAPTIONS_PER_IMAGE * t_caption  # one image and its captions
        flops = pair_flops(p["width"], p["image_width"], p["layers"], p["image_tokens"], TEXT_TOKENS)
        figures[f"rerank_{name}_pair_gflop"] = flops / 1e9
        for k in KS:
            per_query = _per_query_seconds(fusion, tokens, k, p["queries"])
            figures[f"rerank_{name}_ms_per_query_k{k}"] = 1e3 * per_query
            # every image and every caption is a query: (1 + captions per image) queries per image
            reranked_per_image = plain_per_image + (1 + CAPTIONS_PER_IMAGE) * per_query
            ratios[f"rerank_{name}_eval_k{k}_vs_plain"] = reranked_per_image / plain_per_image
        figures[f"rerank_{name}_us_per_pair_k256"] = 1e6 * figures[f"rerank_{name}_ms_per_query_k256"] / 1e3 / 256
        figures[f"rerank_{name}_plain_ms_per_image_with_captions"] = 1e3 * plain_per_image
    notes = {
        "rerank": f"CPU, {torch.get_num_threads()} threads, random weights; {TEXT_TOKENS} text tokens per caption; "
        f"{CAPTIONS_PER_IMAGE} captions per image; eval ratio excludes the metrics' own time (an upper bound)"
    }
    return {"ratios": ratios, "figures": figures, "notes": notes}
