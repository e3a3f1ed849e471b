"""The loop's bookkeeping units, each alone: non-finite policy, objective schedule, RNG state."""

import tempfile
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from vlr.callbacks import ObjectiveSchedule, TorchRNGState, check_stages
from vlr.errors import ConfigError
from vlr.models.nonfinite import NonFiniteGuard
from vlr.objectives.base import Stages


def test_nonfinite_guard_passes_stops_or_skips_and_counts():
    finite, bad = torch.tensor(1.0), {"itc": torch.tensor(float("nan")), "kd": torch.tensor(2.0)}
    assert NonFiniteGuard()(finite, {"itc": finite}, "step 0")
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 7: itc=nan; trainer.skip_nonfinite=true"):
        NonFiniteGuard(skip=False)(torch.tensor(float("nan")), bad, "step 7")
    guard = NonFiniteGuard(skip=True)
    assert not guard(torch.tensor(float("inf")), bad, "step 1") and not guard(torch.tensor(float("nan")), bad, "s")
    assert guard.skipped == 2
    again = NonFiniteGuard(skip=True)
    again.load_state_dict(guard.state_dict())
    assert again.skipped == 2


class _Objective:
    def __init__(self, stages):
        self._stages, self.epochs = stages, []

    def set_epoch(self, epoch, max_epochs):
        self.epochs.append((epoch, max_epochs))

    def stages(self, max_epochs):
        return self._stages


def _trainer(tmp_path, epoch=0, **kw):
    callback = ModelCheckpoint(dirpath=tmp_path, monitor="val/rsum", mode="max")
    defaults = dict(
        max_epochs=4,
        limit_val_batches=1.0,
        check_val_every_n_epoch=1,
        current_epoch=epoch,
        checkpoint_callback=callback,
    )
    return SimpleNamespace(**{**defaults, **kw})


def test_objective_schedule_tells_the_epoch_and_starts_stage_two_once(tmp_path):
    objective = _Objective(Stages(stage2_epoch=2, from_best=False))
    module = SimpleNamespace(objective=objective)
    schedule = ObjectiveSchedule()
    trainer = _trainer(tmp_path, epoch=1)
    trainer.checkpoint_callback.best_model_path, trainer.checkpoint_callback.best_model_score = "a.ckpt", 3.0
    schedule.on_train_start(trainer, module)  # a run resumed in epoch 1's middle
    schedule.on_train_epoch_start(trainer, module)
    assert objective.epochs == [(1, 4), (1, 4)] and not schedule.stage2_started
    assert trainer.checkpoint_callback.best_model_path == "a.ckpt"
    trainer.current_epoch = 2
    schedule.on_train_epoch_start(trainer, module)
    # stage 2 chooses its best among its own epochs: the checkpoint callback forgets stage 1's
    assert schedule.stage2_started and trainer.checkpoint_callback.best_model_path == ""
    assert trainer.checkpoint_callback.best_model_score is None
    restored = ObjectiveSchedule()
    restored.load_state_dict(schedule.state_dict())
    assert restored.stage2_started


def test_objective_schedule_restores_the_best_stage_one_weights(tmp_path):
    net = torch.nn.Linear(2, 2)
    best = tmp_path / "best.ckpt"
    torch.save({"state_dict": {k: torch.full_like(v, 7.0) for k, v in net.state_dict().items()}}, best)
    module = SimpleNamespace(
        objective=_Objective(Stages(stage2_epoch=1, from_best=True)), device="cpu", load_state_dict=net.load_state_dict
    )
    trainer = _trainer(tmp_path, epoch=1)
    trainer.checkpoint_callback.best_model_path = str(best)
    ObjectiveSchedule().on_train_epoch_start(trainer, module)
    assert torch.equal(net.weight, torch.full((2, 2), 7.0))
    trainer.checkpoint_callback.best_model_path = ""
    with pytest.raises(RuntimeError, match="objective.stage2_from=best: no best checkpoint exists at epoch 1"):
        ObjectiveSchedule().on_train_epoch_start(trainer, module)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_epochs": 2}, "objective.stage1_epochs=2 but trainer.max_epochs=2: stage 2 would never run"),
        ({"check_val_every_n_epoch": 3}, r"objective.stage2_from=best: stage 1 \(2 epochs\) is never validated"),
        ({"limit_val_batches": 0}, r"stage 1 \(2 epochs\) is never validated"),
        ({"checkpoint_callback": None}, "objective.stage2_from=best needs a ModelCheckpoint that monitors"),
    ],
)
def test_impossible_stage_schedules_are_refused(tmp_path, options, message):
    trainer = _trainer(tmp_path, **options)
    with pytest.raises(ConfigError, match=message):
        check_stages(trainer, Stages(stage2_epoch=2, from_best=True))
    check_stages(_trainer(tmp_path), Stages(stage2_epoch=2, from_best=True))  # a schedule that works


def test_torch_rng_state_continues_where_it_was_saved():
    callback = TorchRNGState()
    state = callback.state_dict()
    want = torch.rand(5)
    torch.rand(3)
    callback.load_state_dict(state)
    assert torch.equal(torch.rand(5), want)


def test_parameter_counts_split_trainable_and_frozen_per_part():
    from tests.reference.test_references import _towers
    from vlr.callbacks import parameter_counts
    from vlr.models import RetrievalModule
    from vlr.objectives import create_objective

    image, text = _towers()
    text.requires_grad_(False)  # a frozen text tower
    module = RetrievalModule(image, text, create_objective("sad", embed_dim=8), embed_dim=8)
    counts = parameter_counts(module)

    def n(m, trainable=None):
        return sum(p.numel() for p in m.parameters() if trainable is None or p.requires_grad == trainable)

    assert counts["params/image_tower/trainable"] == n(image) and counts["params/image_tower/frozen"] == 0
    assert counts["params/text_tower/frozen"] == n(text) and counts["params/text_tower/trainable"] == 0
    assert counts["params/projections/trainable"] == 2 * (16 * 8 + 8)
    assert counts["params/objective/trainable"] == n(module.objective, True) > 0  # SAD's heads, temperature, lambda
    assert counts["params/reference/frozen"] == n(image) + n(text) and counts["params/reference/trainable"] == 0
    assert counts["params/total/trainable"] + counts["params/total/frozen"] == n(module)


def test_checkpoints_of_the_earlier_version_keep_their_run_state():
    """Before the callbacks held it, the module kept it as vlr_best_restored and vlr_torch_rng:
    a run resumed from such a checkpoint must not restore stage 2 twice, and must continue its RNG."""
    fit = SimpleNamespace(state=SimpleNamespace(fn="fit"))
    rng = torch.get_rng_state()
    want = torch.rand(3)
    old = {"vlr_best_restored": True, "vlr_torch_rng": rng, "state_dict": {}}
    schedule = ObjectiveSchedule()
    schedule.on_load_checkpoint(fit, None, old)
    assert schedule.stage2_started
    torch.rand(10)
    TorchRNGState().on_load_checkpoint(fit, None, old)
    assert torch.equal(torch.rand(3), want)


def test_a_checkpoint_written_with_another_reference_loads_with_the_one_configured():
    """The reference never trains: a model trained against feature files is evaluated against the
    frozen initial towers (and the other way round) with the configured reference kept."""
    from tests.reference.test_references import _towers
    from vlr.models import RetrievalModule
    from vlr.objectives import create_objective
    from vlr.reference import FeatureReference, save_features
    from vlr.runs.checkpoints import check_state_fits

    torch.manual_seed(0)
    frozen = RetrievalModule(*_towers(), create_objective("infonce"), embed_dim=8)
    with tempfile.TemporaryDirectory() as d:
        save_features(d, "train", torch.randn(5, 7), torch.randn(9, 3), {})
        features = RetrievalModule(*_towers(), create_objective("infonce"), embed_dim=8, reference=FeatureReference(d))
    for source, target in ((features, frozen), (frozen, features)):
        state = source.state_dict()
        check_state_fits(target, state, "x.ckpt")  # no mismatch reported
        checkpoint = {"state_dict": state}
        target.on_load_checkpoint(checkpoint)
        kept = {k: v.clone() for k, v in target.state_dict().items() if k.startswith("reference.")}
        target.load_state_dict(checkpoint["state_dict"])  # strict
        assert all(torch.equal(target.state_dict()[k], v) for k, v in kept.items())
        assert torch.equal(target.encoder.image_proj.weight, source.encoder.image_proj.weight)


def test_the_model_summary_leaves_out_flops_it_did_not_count(caplog):
    import lightning.pytorch as pl
    from lightning.pytorch.utilities.model_summary import ModelSummary as Summary

    from vlr.callbacks import ModelSummary

    class Net(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(3, 4)

    summary = Summary(Net(), max_depth=1)
    args = (
        summary._get_summary_data(),
        summary.total_parameters,
        summary.trainable_parameters,
        summary.model_size,
        summary.total_training_modes,
    )
    with caplog.at_level("INFO", logger="vlr.callbacks.model_summary"):
        ModelSummary.summarize(*args, total_flops=0)
    assert "Trainable params" in caplog.text and "16 " in caplog.text and "Linear" in caplog.text
    assert "Flops" not in caplog.text and "FLOPs" not in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="vlr.callbacks.model_summary"):
        ModelSummary.summarize(*args, total_flops=1234)
    assert "Total Flops" in caplog.text
