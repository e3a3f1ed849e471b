"""Text tower: any transformers encoder by name or local path, or built from a config."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from vlr.towers.locking import lock_groups, set_hf_grad_checkpointing, transformer_groups


class TextTower(nn.Module):
    """A transformers encoder pooled to one vector per caption.

    Either ``name_or_path`` (hub name or local directory) or ``config`` (a dict with
    ``model_type`` and its fields, e.g. a small ``bert`` trained from scratch; its
    ``vocab_size`` is filled in from the tokenizer). ``pooling``: ``cls`` or ``mean``
    (mean over non-padding tokens). ``unlocked_layers=N``: only the last N layer groups (the
    embeddings, then each transformer layer) train (`vlr.towers.locking`).
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        config: dict | None = None,
        pooling: str = "cls",
        vocab_size: int | None = None,
        freeze: bool = False,
        unlocked_layers: int | None = None,
    ):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"model.text_tower.pooling must be 'cls' or 'mean', got '{pooling}'")
        if (name_or_path is None) == (config is None):
            raise ValueError("model.text_tower needs exactly one of name_or_path or config")
        if name_or_path is not None:
            self.encoder = AutoModel.from_pretrained(str(name_or_path), add_pooling_layer=False)
        else:
            cfg = dict(config or {})
            model_type = cfg.pop("model_type")
            if vocab_size is not None:
                cfg["vocab_size"] = vocab_size
            self.encoder = AutoModel.from_config(AutoConfig.for_model(model_type, **cfg), add_pooling_layer=False)
        self.pooling = pooling
        self.out_dim = self.encoder.config.hidden_size
        if freeze:
            self.encoder.requires_grad_(False)
        lock_groups(transformer_groups(self.encoder), unlocked_layers, "model.text_tower.unlocked_layers")

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """transformers' own switch (non-reentrant checkpoints, which work with CoVLR's functional step)."""
        set_hf_grad_checkpointing(self.encoder, enable, "text")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.pool(hidden, attention_mask)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One vector per caption from its token states (what fusion also reads, `vlr.models.tokens`)."""
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
