"""The towers' token states (`vlr.models.tokens`): the pooled output beside them is bit for bit
the tower's own forward (so ITC embeddings do not change with fusion on); a tower without token
states is one line naming it."""

import pytest
import torch
from torch import nn

from vlr.errors import ConfigError
from vlr.models.tokens import image_tokens, text_tokens, token_width
from vlr.towers import ImageTower, TextTower


def test_pooled_outputs_equal_the_towers_forward_exactly():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        image = ImageTower(
            "vit_tiny_patch16_224", model_kwargs={"img_size": 32, "patch_size": 8, "embed_dim": 24, "depth": 1,
                                                 "num_heads": 2}
        ).eval()  # fmt: skip
        bert = {"model_type": "bert", "hidden_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2,
                "intermediate_size": 32, "max_position_embeddings": 16}  # fmt: skip
        text = TextTower(config=bert, vocab_size=50, pooling="mean").eval()
        images = torch.randn(3, 3, 32, 32)
        ids = torch.randint(0, 50, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    pooled, tokens = image_tokens(image, images)
    assert torch.equal(pooled, image(images)) and tokens.shape == (3, 1 + 16, 24)
    pooled, tokens = text_tokens(text, ids, mask)
    assert torch.equal(pooled, text(ids, mask)) and tokens.shape == (3, 7, 24)
    assert token_width(image) == 24 and token_width(text) == 24


def test_a_tower_without_token_states_is_one_line():
    with pytest.raises(ConfigError, match=r"^model.fusion: the text tower Linear does not expose token states"):
        text_tokens(nn.Linear(2, 2), torch.zeros(1, 2), torch.ones(1, 2))
    with pytest.raises(ConfigError, match="the image tower Linear does not expose token states"):
        image_tokens(nn.Linear(2, 2), torch.zeros(1, 2))
