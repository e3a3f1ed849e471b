"""model.compile=true: torch.compile'd towers give the eager numbers, train, and keep the checkpoint names."""

import shutil

import pytest
import torch
from hydra.errors import InstantiationException

from tests.conftest import quiet_trainer, small_run
from tests.test_config import _compose
from vlr.build import build_data_and_model
from vlr.errors import ConfigError

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("cc") or shutil.which("gcc")), reason="torch.compile on CPU needs a C compiler"
    ),
]


def _build(tmp_path, monkeypatch, root, *overrides):
    monkeypatch.setenv("VLR_ROOT", str(tmp_path))
    cfg = _compose(small_run(root, "data.augment=false", "data.shuffle=false", *overrides))
    torch.manual_seed(0)
    return build_data_and_model(cfg)


def test_compiled_towers_match_eager_and_train(tmp_path, monkeypatch, synthetic_root):
    datamodule, eager = _build(tmp_path, monkeypatch, synthetic_root, "objective=infonce")
    _, compiled = _build(tmp_path, monkeypatch, synthetic_root, "objective=infonce", "model.compile=true")
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints load either way
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    eager.eval(), compiled.eval()  # no dropout: compiled kernels draw their own random numbers
    results = []
    for module in (eager, compiled):
        terms = module.objective.batch_terms(module.encoder, batch, module.reference)
        torch.stack(list(terms.values())).sum().backward()
        results.append((terms, {n: p.grad for n, p in module.named_parameters() if p.grad is not None}))
    (eager_terms, eager_grads), (compiled_terms, compiled_grads) = results
    assert torch.allclose(eager_terms["itc_i2t"], compiled_terms["itc_i2t"], atol=1e-5)
    assert eager_grads.keys() == compiled_grads.keys() and len(eager_grads) > 10
    for name in eager_grads:
        assert torch.allclose(eager_grads[name], compiled_grads[name], rtol=1e-3, atol=1e-5), name

    before = {n: p.detach().clone() for n, p in compiled.encoder.image_tower.named_parameters()}
    compiled.train()
    trainer = quiet_trainer()
    trainer.fit(compiled, datamodule=datamodule)
    assert trainer.global_step == 2
    assert any(not torch.equal(p, before[n]) for n, p in compiled.encoder.image_tower.named_parameters())


def test_a_virtual_step_through_compiled_towers_is_refused(tmp_path, monkeypatch, synthetic_root):
    with pytest.raises(
        (ConfigError, InstantiationException),
        match="model.compile=true: objective=covlr re-runs the towers with stepped weights",
    ):
        _build(tmp_path, monkeypatch, synthetic_root, "objective=covlr", "model.compile=true")
