"""Fusion reads token states from the towers vlr builds; any other tower is refused in one line
naming it (vlr/models/tokens.py)."""

import pytest
import torch
from torch import nn

from vlr.errors import ConfigError
from vlr.models.tokens import image_tokens, text_tokens, token_width


class Custom(nn.Module):
    def forward(self, x):
        return x


class CustomImages(Custom):
    data_config = {}  # what marks an image tower


def test_a_tower_without_token_states_is_named():
    msg = r"model.fusion: the {} tower {} does not expose token states; fusion supports vlr.towers.ImageTower"
    with pytest.raises(ConfigError, match=msg.format("image", "Custom")):
        image_tokens(Custom(), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ConfigError, match=msg.format("text", "Custom")):
        text_tokens(Custom(), torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long))
    with pytest.raises(ConfigError, match=msg.format("image", "CustomImages")):
        token_width(CustomImages())
    with pytest.raises(ConfigError, match=msg.format("text", "Custom")):
        token_width(Custom())


def test_clip_towers_give_their_own_pooled_output_beside_their_token_states():
    """The pooled vector equals the tower's forward (the ITC embedding does not change when fusion
    reads the tokens); the tokens have the width token_width says. Random tiny CLIP, nothing
    downloaded."""
    from vlr.towers import CLIPImageTower, CLIPTextTower

    config = {
        "projection_dim": 8,
        "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
        "text_config": {"hidden_size": 12, "intermediate_size": 24, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "vocab_size": 50, "max_position_embeddings": 16},
    }  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        image, text = CLIPImageTower(config=config).eval(), CLIPTextTower(config=config).eval()
        pixels = torch.randn(2, 3, 32, 32)
    ids = torch.tensor([[1, 5, 7, 2, 0], [1, 9, 2, 0, 0]])
    mask = (ids > 0).long()
    with torch.no_grad():
        pooled, tokens = image_tokens(image, pixels)
        assert torch.equal(pooled, image(pixels)) and pooled.shape == (2, 8)
        assert tokens.shape == (2, 1 + (32 // 16) ** 2, 16) and token_width(image) == 16  # CLS + 4 patches
        pooled, tokens = text_tokens(text, ids, mask)
        assert torch.equal(pooled, text(ids, mask)) and pooled.shape == (2, 8)
        assert tokens.shape == (2, 5, 12) and token_width(text) == 12
