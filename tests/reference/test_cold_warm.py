"""A cold cache and a warm cache give the same run (issue 27): building anything -- the data,
the learned reference's fit, ROUGE-L, the tokenizer -- never touches the global RNG, so a
run whose caches were just filled and a run that finds them full train identically."""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from vlr.train import train

CONF = Path(__file__).resolve().parents[2] / "vlr" / "conf"

REFERENCES = {
    "frozen_init": ["reference=frozen_init"],
    # feature files on disk: the generator's oracle files, read as a user's own features
    "features": ["reference=features", "reference.path=${data.root}/reference"],
    "learned": ["reference=learned", "data.reference_images=20", "reference.image_epochs=2", "reference.text_epochs=3"],
    "oracle": ["reference=oracle"],
    # the teacher-quality controls of `make study`: a noisy oracle, and the learned reference shuffled
    "noisy_oracle": ["reference=noisy_oracle", "reference.level=0.5"],
    "shuffled": [
        "reference=shuffled",
        "data.reference_images=20",
        "reference.base.image_epochs=2",
        "reference.base.text_epochs=3",
    ],
}
# every kind of synthetic data: generator version 2 (partial captions) and 3 (captions name every
# object); and data that is not generated: the same images and captions read as a Karpathy JSON
# (``data=flickr30k``), whose NDCG is graded by ROUGE-L (its cache filled by the cold run)
SIZE = ["data.num_train=20", "data.num_val=12", "data.num_test=12", "data.captions_per_image=2"]
DATA = {"v2": ["data.generator_version=2", *SIZE], "v3": ["data.generator_version=3", *SIZE], "karpathy": []}
# a structure-preserving objective, so the reference shapes the training and not only overlap@k
OBJECTIVE = ["objective=relation_kd"]


def _karpathy(tmp_path: Path) -> list[str]:
    """A Karpathy-format dataset of 20/12/12 generated images (not a synthetic source: nothing is
    generated or oracle-graded when it is read), as a user's own data."""
    from vlr.data.synthetic import SyntheticSpec, generate_synthetic

    root = tmp_path / "karpathy"
    generate_synthetic(root, SyntheticSpec(num_train=20, num_val=12, num_test=12, captions_per_image=2, seed=5))
    (root / "dataset_flickr30k.json").write_text((root / "dataset_synthetic.json").read_text())
    (root / "dataset_synthetic.json").unlink()
    return ["data=flickr30k", f"data.root={root}", "data.image_dir=''"]


def _run(root: Path, out: Path, overrides: list[str]) -> dict[str, float]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "logger=none",
                f"paths.root_dir={root}",
                f"paths.output_dir={out}",
                "data.batch_size=20",
                "data.num_workers=0",
                "trainer.max_epochs=1",
                *overrides,
            ],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    torch.manual_seed(12345)  # whatever the global RNG holds before a run must not matter: train seeds it
    train(cfg)
    return json.loads((out / "metrics.json").read_text())


# every reference kind and every data kind, pairwise (each reference once, the data alternating),
# and the learned reference -- the one with a cache that fitting fills -- on both
CASES = [
    ("frozen_init", "v2"),
    ("features", "v3"),
    ("learned", "v2"),
    ("learned", "v3"),
    ("oracle", "v3"),
    ("noisy_oracle", "v2"),
    ("shuffled", "v3"),
    ("frozen_init", "karpathy"),
]


@pytest.mark.parametrize("reference, data", CASES)
def test_cold_and_warm_caches_give_the_same_metrics(tmp_path, monkeypatch, reference, data):
    root = tmp_path / "root"  # data, its reference files and the learned reference's cache live here
    monkeypatch.setenv("VLR_CACHE_DIR", str(tmp_path / "cache"))  # ROUGE-L and tokenizers
    if data == "karpathy":  # graded by ROUGE-L, the relevance of data without a ground truth
        overrides = [*REFERENCES[reference], *_karpathy(tmp_path), *OBJECTIVE]
        graded = "test/t2t/rouge_l_NDCG@10"
    else:
        overrides = [*REFERENCES[reference], *DATA[data], *OBJECTIVE, "relevance.also=[rouge_l]"]
        graded = "test/i2i/scene_NDCG@10"
    cold = _run(root, tmp_path / "cold", overrides)
    learned_cache = list((root / "data").rglob("learned_reference/*/*.safetensors"))
    assert (reference in ("learned", "shuffled")) == bool(learned_cache)  # the cold run filled the cache
    warm = _run(root, tmp_path / "warm", overrides)
    assert set(cold) == set(warm) and graded in cold and "test/t2t/rouge_l_NDCG@10" in cold
    differ = {k: (cold[k], warm[k]) for k in cold if abs(cold[k] - warm[k]) > 1e-6}
    assert differ == {}
