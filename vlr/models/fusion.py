"""`FusionEncoder`: the cross-modal fusion encoder and ITM head of ALBEF / X-VLM / BLIP, small and native.

Each layer is a post-LayerNorm BERT layer with one cross-attention block between the
self-attention and the feed-forward part: the queries are the caption's token states (the
text tower's last hidden states), the keys and values the image tower's patch tokens. The
parameter names follow transformers' BERT layout as those releases extend it
(``layer.{i}.attention.self.query``, ``layer.{i}.crossattention.output.LayerNorm``,
``layer.{i}.intermediate.dense``, ...), so a released checkpoint's fusion layers map onto it
key for key (`vlr.models.fusion_checkpoint`). The ITM head reads the fused [CLS] (position 0):
a linear layer (ALBEF, BLIP) or X-VLM's two-layer MLP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ITM_HEADS = ("linear", "mlp")


class _QueryKeyValue(nn.Module):
    def __init__(self, width: int, memory_width: int):
        super().__init__()
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(memory_width, width)
        self.value = nn.Linear(memory_width, width)


class _DenseNorm(nn.Module):
    """BERT's ``output``: ``dense`` then ``LayerNorm`` over the residual sum."""

    def __init__(self, width_in: int, width: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(width_in, width)
        self.LayerNorm = nn.LayerNorm(width, eps=eps)


class _Dense(nn.Module):
    def __init__(self, width_in: int, width: int):
        super().__init__()
        self.dense = nn.Linear(width_in, width)


class _Attention(nn.Module):
    """``self.{query,key,value}`` and ``output.{dense,LayerNorm}``, as BERT names them;
    keys and values come from ``memory_width``-wide states (the image tokens for cross-attention)."""

    def __init__(self, width: int, memory_width: int, heads: int, dropout: float, eps: float):
        super().__init__()
        self.self = _QueryKeyValue(width, memory_width)
        self.output = _DenseNorm(width, width, eps)
        self.heads, self.dropout = heads, dropout

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None) -> torch.Tensor:
        b, n, width = x.shape
        head_dim = width // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, t.shape[1], self.heads, head_dim).transpose(1, 2)

        q = split(self.self.query(x))
        k, v = split(self.self.key(memory)), split(self.self.value(memory))
        mask = None if memory_mask is None else memory_mask[:, None, None, :].bool()
        p = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        attended = attended.transpose(1, 2).reshape(b, n, width)
        out = F.dropout(self.output.dense(attended), p, self.training)
        return self.output.LayerNorm(out + x)


class FusionLayer(nn.Module):
    """Self-attention over the caption, cross-attention to the image tokens, feed-forward."""

    def __init__(self, width: int, image_width: int, heads: int, intermediate: int, dropout: float, eps: float):
        super().__init__()
        self.attention = _Attention(width, width, heads, dropout, eps)
        self.crossattention = _Attention(width, image_width, heads, dropout, eps)
        self.intermediate = _Dense(width, intermediate)
        self.output = _DenseNorm(intermediate, width, eps)
        self.dropout = dropout

    def forward(self, text, text_mask, image, image_mask) -> torch.Tensor:
        x = self.attention(text, text, text_mask)
        x = self.crossattention(x, image, image_mask)
        hidden = F.gelu(self.intermediate.dense(x))
        out = F.dropout(self.output.dense(hidden), self.dropout, self.training)
        return self.output.LayerNorm(out + x)


class FusionEncoder(nn.Module):
    """``layers`` fusion layers of width ``width`` (the text tokens' width) over image tokens of
    width ``image_width``, and the 2-way ITM head (logit 1 = "matched").

    Built under a forked RNG seeded with ``init_seed``, so building it leaves the global RNG
    where it was (a run without fusion and one with it draw the same tower weights)."""

    def __init__(
        self,
        width: int,
        image_width: int,
        layers: int = 2,
        heads: int = 4,
        intermediate_size: int | None = None,
        dropout: float = 0.1,
        layer_norm_eps: float = 1e-12,
        itm_head: str = "linear",
        init_seed: int = 0,
    ):
        super().__init__()
        if width % heads:
            raise ValueError(f"model.fusion.heads={heads} does not divide the text token width {width}")
        if itm_head not in ITM_HEADS:
            raise ValueError(f"model.fusion.itm_head must be one of {ITM_HEADS}, got {itm_head!r}")
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(init_seed)  # the CPU generator alone: CUDA untouched
            inner = intermediate_size or 4 * width
            self.layer = nn.ModuleList(
                FusionLayer(width, image_width, heads, inner, dropout, layer_norm_eps) for _ in range(layers)
            )
            if itm_head == "linear":
                self.itm_head: nn.Module = nn.Linear(width, 2)
            else:  # X-VLM's build_mlp: Linear, LayerNorm, GELU, Linear
                self.itm_head = nn.Sequential(
                    nn.Linear(width, 2 * width), nn.LayerNorm(2 * width), nn.GELU(), nn.Linear(2 * width, 2)
                )
            self.apply(_bert_init)
        self.width, self.image_width = width, image_width

    def forward(
        self,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        image_tokens: torch.Tensor,
        image_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The ITM logits [B, 2] of pairs (caption b, image b)."""
        x = text_tokens
        for layer in self.layer:
            x = layer(x, text_mask, image_tokens, image_mask)
        return self.itm_head(x[:, 0])

    def match_score(self, text_tokens, text_mask, image_tokens, image_mask=None) -> torch.Tensor:
        """The re-ranking score of pairs: the ITM log-odds logit(matched) - logit(not matched),
        monotone in the ITM probability of a match that the 2-way cross-entropy trains."""
        logits = self(text_tokens, text_mask, image_tokens, image_mask)
        return logits[:, 1] - logits[:, 0]


def _bert_init(module: nn.Module) -> None:
    """BERT's initialisation: normal(0, 0.02) weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
