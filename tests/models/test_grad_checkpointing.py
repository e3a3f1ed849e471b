"""model.grad_checkpointing=true: the same gradients (activations recomputed in backward)."""

import pytest
import torch

from tests.conftest import small_run
from tests.test_config import _compose
from vlr.build import build_data_and_model


def _grads(tmp_path, monkeypatch, root, overrides):
    monkeypatch.setenv("VLR_ROOT", str(tmp_path))
    cfg = _compose(small_run(root, "data.augment=false", "data.shuffle=false", *overrides))
    torch.manual_seed(0)
    datamodule, module = build_data_and_model(cfg)
    datamodule.setup("fit")
    module.reference.prepare("train", datamodule.split("train"))
    batch = next(iter(datamodule.train_dataloader()))
    torch.manual_seed(1)  # the same dropout masks for both runs
    terms = module.objective.batch_terms(module.encoder, batch, module.reference)
    torch.stack(list(terms.values())).sum().backward()
    return module, {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "objective", [["objective=infonce"], ["objective=sad"], ["objective=covlr", "objective.virtual_params=projections"]]
)
def test_checkpointed_towers_give_the_same_gradients(tmp_path, monkeypatch, synthetic_root, objective):
    _, plain = _grads(tmp_path, monkeypatch, synthetic_root, objective)
    module, ckpt = _grads(tmp_path, monkeypatch, synthetic_root, [*objective, "model.grad_checkpointing=true"])
    assert module.encoder.image_tower.backbone.grad_checkpointing
    text = module.encoder.text_tower.encoder
    assert getattr(text, "is_activation_checkpointing", None) or text.is_gradient_checkpointing
    assert plain.keys() == ckpt.keys() and len(plain) > 10
    for name in plain:
        assert torch.allclose(plain[name], ckpt[name], rtol=1e-4, atol=1e-6), name


def test_a_virtual_step_through_checkpointed_towers_is_refused(tmp_path, monkeypatch, synthetic_root):
    """Checkpointing recomputes a block in backward with the module's own weights, outside CoVLR's
    functional call with the stepped ones: the meta-gradient would be wrong, so it is refused."""
    from vlr.errors import ConfigError

    with pytest.raises(
        ConfigError,
        match=r"objective=covlr re-runs the towers with stepped weights .* "
        r"model.grad_checkpointing=false, or objective.virtual_params=projections",
    ):
        _grads(tmp_path, monkeypatch, synthetic_root, ["objective=covlr", "model.grad_checkpointing=true"])
