"""Every objective x every model preset x every data format: trains two steps, evaluates, resumes.

The presets' own classes with tiny local stand-ins (``tiny_pretrained``, ``tiny_clip``) and
the same images in every format vlr reads (``data_formats``). The resume part restarts from
the step-1 checkpoint and must end bit-equal to the uninterrupted run: the checkpoint
carries everything (weights, optimizer, the objective's schedule, the RNG, the sampler's
place). Sizes come from the encoder and the reference, never another group's config, so
``model=clip_vit_b32 objective=sad`` builds.
"""

import math

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import quiet_trainer
from tests.test_config import _compose
from tests.test_objective_matrix import _preset
from vlr.build import build_data_and_model

pytestmark = pytest.mark.slow

OBJECTIVES = ("infonce", "triplet", "covlr", "relation_kd", "sad")
FORMATS = ("synthetic", "karpathy", "coco_captions", "lavis", "vizwiz")


def _trainer(ckpt_dir):
    checkpoints = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=1, save_top_k=-1)
    return quiet_trainer(enable_checkpointing=True, num_sanity_val_steps=0, callbacks=[checkpoints])


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("preset", ["tiny", "vit_bert", "clip_vit_b32"])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_objective_preset_and_format_train_evaluate_and_resume(
    tmp_path, monkeypatch, data_formats, tiny_pretrained, tiny_clip, objective, preset, data_format
):
    monkeypatch.setenv("VLR_ROOT", str(tmp_path))
    overrides = [*data_formats[data_format], "data.batch_size=10", "data.eval_batch_size=50", "data.num_workers=0"]
    cfg = _compose([*overrides, "logger=none", *_preset(preset, tiny_pretrained, tiny_clip), f"objective={objective}"])
    pl.seed_everything(0)
    datamodule, module = build_data_and_model(cfg)

    trainer = _trainer(tmp_path / "ckpt")
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 2
    final = {k: v.clone() for k, v in module.state_dict().items()}

    metrics = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).validate(
        module, datamodule=datamodule, verbose=False
    )[0]
    for key in ("val/rsum", "val/rsum_single", "val/image/overlap@10", "val/text/overlap@10"):
        assert math.isfinite(metrics[key]), key
    assert 0 <= metrics["val/rsum"] <= 600

    step1 = next((tmp_path / "ckpt").glob("*step=1.ckpt"))
    resumed = _trainer(tmp_path / "ckpt")
    resumed.fit(module, datamodule=datamodule, ckpt_path=str(step1), weights_only=True)
    assert resumed.global_step == 2
    changed = [k for k, v in module.state_dict().items() if not torch.equal(v, final[k])]
    assert changed == []
