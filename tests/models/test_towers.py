"""Towers load local weights (how users with pretrained weights run offline)."""

import torch
from transformers import BertConfig, BertModel

from tests.conftest import tiny_bert
from vlr.towers import ImageTower, TextTower, build_tokenizer

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)


def test_timm_tower_loads_a_local_checkpoint(tmp_path):
    torch.manual_seed(0)
    original = ImageTower("vit_tiny_patch16_224", model_kwargs=TINY_VIT).eval()
    path = tmp_path / "vit.pth"
    torch.save(original.backbone.state_dict(), path)
    torch.manual_seed(1)
    loaded = ImageTower("vit_tiny_patch16_224", checkpoint_path=str(path), model_kwargs=TINY_VIT).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(original(x), loaded(x))
    assert not torch.equal(ImageTower("vit_tiny_patch16_224", model_kwargs=TINY_VIT).eval()(x), original(x))


def test_transformers_tower_loads_a_local_directory(tmp_path):
    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=16,
        ),
        add_pooling_layer=False,
    ).eval()
    bert.save_pretrained(tmp_path / "bert")
    tower = TextTower(name_or_path=str(tmp_path / "bert"), pooling="cls").eval()
    ids, mask = torch.randint(0, 50, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    assert torch.equal(tower(ids, mask), bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0])


def test_mean_pooling_ignores_padding():
    tower = TextTower(
        config=tiny_bert(),
        vocab_size=30,
        pooling="mean",
    ).eval()
    ids = torch.tensor([[2, 5, 6, 3, 0, 0]])
    full = tower(ids, torch.tensor([[1, 1, 1, 1, 0, 0]]))
    hidden = tower.encoder(input_ids=ids[:, :4], attention_mask=torch.ones(1, 4, dtype=torch.long)).last_hidden_state
    assert torch.allclose(full, hidden.mean(1), atol=1e-5)


def test_wordpiece_tokenizer_is_trained_and_cached(tmp_path):
    texts = ["a red circle on the left", "a blue square at the top", "there is a green triangle"] * 20
    tok = build_tokenizer(None, texts, vocab_size=120, cache_dir=tmp_path)
    enc = tok(["a red circle"], return_tensors="pt")
    assert tok.convert_ids_to_tokens(enc["input_ids"][0]) == ["[CLS]", "a", "red", "circle", "[SEP]"]
    assert len(list(tmp_path.glob("wordpiece-120-*/tokenizer.json"))) == 1
    again = build_tokenizer(None, texts, vocab_size=120, cache_dir=tmp_path)
    assert again.get_vocab() == tok.get_vocab()
