"""Objective modes x tower presets x data formats, as all-pairs cases (`tests.pairwise`): each
trains two steps, evaluates, and resumes.

Every objective in every mode it advertises, with the presets' own classes with tiny local
stand-ins (``tiny_pretrained``, ``tiny_clip``, ``tiny_open_clip``), attention included, so the
kernels a mode needs (second order: twice-differentiable attention) are exercised, on the same
images in every format vlr reads (``data_formats``). Every pair of a mode and a preset, of a mode
and a format, and of a preset and a format meets in some case (45 cases, not 180). Each case:
every loss term finite at both steps and both towers moved; the validation's rsum is the sum of
its six recalls; resumed from the step-1 checkpoint, the run ends bit-equal to the uninterrupted
one (the checkpoint carries weights, optimizer, the objective's schedule, the RNG, the sampler's
place). Sizes come from the encoder and the reference, never another group's config, so
``model=clip_vit_b32 objective=sad`` builds.
"""

import math

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import compose_config, quiet_trainer, tower_preset
from tests.pairwise import pairwise
from vlr.build import build_data_and_model
from vlr.errors import ConfigError

pytestmark = pytest.mark.slow

MODES = {
    "infonce": ["objective=infonce"],
    "triplet": ["objective=triplet"],
    "covlr": ["objective=covlr"],
    "covlr+projections": ["objective=covlr", "objective.virtual_params=projections"],
    "covlr+second_order": ["objective=covlr", "objective.second_order=true"],
    "covlr+consistency": ["objective=covlr", "objective.consistency_weight=10", "data.paired_captions=true"],
    "relation_kd": ["objective=relation_kd"],
    "sad": ["objective=sad"],
    "sad+head_on_student": ["objective=sad", "objective.head_on=student", "objective.distance=kl"],
}
# vit_bert first: the greedy cases fill their free slots with first values, and its tiny stand-in
# trains 3x faster than model=tiny (which trains a WordPiece on each format's captions)
PRESETS = ("vit_bert", "clip_vit_b32", "open_clip", "tiny")
FORMATS = ("synthetic", "karpathy", "coco_captions", "lavis", "vizwiz")
CASES = pairwise({"mode": list(MODES), "preset": PRESETS, "data_format": FORMATS})


class _Terms(pl.Callback):
    """The loss terms logged at each step."""

    def __init__(self):
        self.seen: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/loss")})


def _trainer(ckpt_dir, *callbacks):
    checkpoints = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=1, save_top_k=-1)
    return quiet_trainer(enable_checkpointing=True, num_sanity_val_steps=0, callbacks=[checkpoints, *callbacks])


@pytest.mark.parametrize("mode, preset, data_format", CASES)
def test_mode_preset_and_format_train_evaluate_and_resume(
    tmp_path, data_formats, tiny_pretrained, tiny_clip, tiny_open_clip, mode, preset, data_format
):
    towers = tower_preset(preset, tiny_pretrained, tiny_clip, tiny_open_clip)
    overrides = [*data_formats[data_format], "data.batch_size=10", "data.eval_batch_size=50", "data.num_workers=0"]
    cfg = compose_config(*overrides, "logger=none", *towers, *MODES[mode], root=tmp_path, run_dir=tmp_path)
    pl.seed_everything(0)
    datamodule, module = build_data_and_model(cfg)
    before = {n: p.detach().clone() for n, p in module.encoder.named_parameters()}

    terms = _Terms()
    trainer = _trainer(tmp_path / "ckpt", terms)
    if preset in ("clip_vit_b32", "open_clip") and mode == "covlr+projections":
        # CLIP keeps its joint space: identity projections, nothing for the virtual step to move
        with pytest.raises(ConfigError, match="objective.virtual_params=projections, but the encoder has no trainable"):
            trainer.fit(module, datamodule=datamodule)
        return
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 2 and len(terms.seen) == 2
    assert all(math.isfinite(v) for step in terms.seen for v in step.values())
    if mode.endswith("consistency"):
        assert terms.seen[-1]["train/loss/caption_consistency"] > 0
    for tower in ("image_tower", "text_tower"):
        assert any(
            not torch.equal(p, before[n]) for n, p in module.encoder.named_parameters() if n.startswith(tower)
        ), tower
    final = {k: v.clone() for k, v in module.state_dict().items()}

    metrics = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).validate(
        module, datamodule=datamodule, verbose=False
    )[0]
    for key in ("val/rsum", "val/rsum_single", "val/image/overlap@10", "val/text/overlap@10"):
        assert math.isfinite(metrics[key]), key
    recalls = sum(metrics[f"val/{d}/R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
    assert metrics["val/rsum"] == pytest.approx(recalls, abs=1e-3)

    step1 = next((tmp_path / "ckpt").glob("*step=1.ckpt"))
    resumed = _trainer(tmp_path / "ckpt")
    resumed.fit(module, datamodule=datamodule, ckpt_path=str(step1), weights_only=True)
    assert resumed.global_step == 2
    changed = [k for k, v in module.state_dict().items() if not torch.equal(v, final[k])]
    assert changed == []
