"""Every objective in every mode it advertises trains with every tower preset.

The presets' own classes with tiny local stand-ins (a saved tiny timm ViT + BERT for
``vit_bert``, a saved tiny CLIP for ``clip_vit_b32``), attention included, so the kernels a
mode needs (second order: twice-differentiable attention) are exercised. Two optimizer
steps each; every loss term finite, and the towers move.
"""

import lightning.pytorch as pl
import pytest
import torch

from tests.conftest import quiet_trainer, small_run
from tests.test_config import _compose
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


def _preset(name, tiny_pretrained, tiny_clip, tiny_open_clip=None) -> list[str]:
    if name == "open_clip":
        return [
            "model=open_clip",
            f"model.arch={tiny_open_clip['arch']}",
            f"model.pretrained={tiny_open_clip['pretrained']}",
            "data.image_transform=tower",
        ]
    if name == "tiny":
        return []
    if name == "vit_bert":
        return [
            "model=vit_bert",
            "model.image_tower.name=vit_tiny_patch16_224",
            "model.image_tower.pretrained=false",
            f"model.image_tower.checkpoint_path={tiny_pretrained['timm']}",
            "data.image_size=32",
            *(f"+model.image_tower.model_kwargs.{k}={v}" for k, v in tiny_pretrained["timm_kwargs"].items()),
            f"model.text_tower.name_or_path={tiny_pretrained['bert']}",
        ]
    return ["model=clip_vit_b32", f"model.image_tower.name_or_path={tiny_clip['dir']}", "data.image_transform=tower"]


@pytest.mark.parametrize("preset", ["tiny", "vit_bert", "clip_vit_b32", "open_clip"])
@pytest.mark.parametrize("mode", list(MODES))
def test_every_objective_mode_trains_with_every_tower_preset(
    tmp_path, monkeypatch, synthetic_root, tiny_pretrained, tiny_clip, tiny_open_clip, preset, mode
):
    monkeypatch.setenv("VLR_ROOT", str(tmp_path))
    towers = _preset(preset, tiny_pretrained, tiny_clip, tiny_open_clip)
    cfg = _compose(small_run(synthetic_root, *towers, *MODES[mode]))
    pl.seed_everything(0)
    datamodule, module = build_data_and_model(cfg)
    before = {n: p.detach().clone() for n, p in module.encoder.named_parameters()}
    terms_seen = []

    class _Terms(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            terms_seen.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/loss")})

    trainer = quiet_trainer(callbacks=[_Terms()])
    if (
        preset in ("clip_vit_b32", "open_clip") and mode == "covlr+projections"
    ):  # CLIP keeps its joint space: identity projections
        with pytest.raises(ConfigError, match="objective.virtual_params=projections, but the encoder has no trainable"):
            trainer.fit(module, datamodule=datamodule)
        return
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 2 and len(terms_seen) == 2
    assert all(torch.isfinite(torch.tensor(v)) for step in terms_seen for v in step.values())
    if mode.endswith("consistency"):
        assert terms_seen[-1]["train/loss/caption_consistency"] > 0
    for tower in ("image_tower", "text_tower"):
        assert any(
            not torch.equal(p, before[n]) for n, p in module.encoder.named_parameters() if n.startswith(tower)
        ), tower
