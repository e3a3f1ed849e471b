"""A run's reference on its own: the test split's single-modal retrieval scored with the
reference's embeddings (the study's "reference alone" rows), through the same evaluator.

Building the run (``vlr.build``) also generates the data and fits a learned reference, so the
study calls this first, once per generator seed, before any cell needs them.

    python -m experiments.imbalance.reference_alone --out ref.json experiment=imbalance_study data.generator_seed=1
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

SINGLE_MODAL = ("i2i/", "t2t/")


def compose_config(overrides: list[str], output_dir: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    import vlr

    with initialize_config_dir(config_dir=str(Path(vlr.__file__).parent / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.output_dir={output_dir}"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def _pad(rows: torch.Tensor, width: int) -> torch.Tensor:
    """Zero columns up to ``width``: single-modal similarities are unchanged (the image and text
    sides of a reference may have different widths; the cross-modal numbers are discarded)."""
    return F.pad(rows, (0, width - rows.shape[1]))


def reference_alone(overrides: list[str]) -> dict[str, float]:
    import lightning.pytorch as pl

    from vlr.build import as_dict, build_data_and_model
    from vlr.metrics import build_evaluator
    from vlr.reference import lifecycle

    with tempfile.TemporaryDirectory() as scratch:
        cfg = compose_config(overrides, scratch)
        if cfg.get("num_threads"):
            torch.set_num_threads(int(cfg.num_threads))
        pl.seed_everything(cfg.seed, workers=True)
        datamodule, model = build_data_and_model(cfg)
        datamodule.setup("test")
        reference = model.reference
        # the module's own preparation (frozen_init without distillation embeds its rows up front)
        lifecycle.prepare_reference(reference, "test", "test", datamodule, model.encoder, torch.device("cpu"))
        relevance = as_dict(cfg.relevance) if cfg.get("relevance") is not None else None
        evaluator = build_evaluator(
            datamodule.eval_targets("test"),
            relevance,
            split="test",
            ks=model.eval_ks,
            ndcg_ks=model.eval_ndcg_ks,
            overlap_ks=model.eval_overlap_ks,
            ties=model.eval_ties,
        )
        width = max(reference.image_dim, reference.text_dim)
        images, captions = datamodule.test_dataloader()
        for batch in images:
            evaluator.update(
                image_emb=_pad(reference.embed("image", "test", batch), width), image_idx=batch["image_idx"]
            )
        for batch in captions:
            evaluator.update(
                text_emb=_pad(reference.embed("text", "test", batch), width), text_idx=batch["caption_idx"]
            )
        metrics = evaluator.compute()
    out = {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(SINGLE_MODAL)}
    return {**out, **duplicate_captions(datamodule)}


def duplicate_captions(datamodule) -> dict[str, float]:
    """Generated data's share of captions whose text another image of the split also has (its
    generator.json), as ``duplicate_captions/<split>`` in %; nothing for other data."""
    manifest = Path(getattr(datamodule.source, "root", "")) / "generator.json"
    if not manifest.is_file():
        return {}
    fractions = json.loads(manifest.read_text()).get("duplicate_captions", {})
    return {f"duplicate_captions/{split}": 100 * float(v) for split, v in sorted(fractions.items())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    from vlr.tracking.noise import silence_known_noise

    silence_known_noise()
    metrics = reference_alone(args.overrides)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(metrics, indent=1) + "\n")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
