"""``fusion=default`` end to end, in process: ITM is its own loss term beside any objective's,
re-ranked metrics sit beside the plain ones, and options that cannot work are one line."""

import json

import pytest

from tests.conftest import run_vlr, small_run

FUSION = ("fusion=default", "eval.rerank.k=8", "+trainer.limit_train_batches=2", "trainer.max_epochs=1")


@pytest.mark.parametrize("objective", ["infonce", "covlr"])  # the one-pass step and CoVLR's own step
def test_fusion_trains_with_the_objective_and_reports_rerank_beside_plain(tmp_path, synthetic_root, objective, capsys):
    from vlr.tracking.reporting import print_metrics_table

    run = run_vlr("train", *small_run(synthetic_root, *FUSION, f"objective={objective}"), dir=tmp_path / "run")
    assert run.returncode == 0, run.output
    metrics = run.json()
    for d in ("i2t", "t2i"):
        # re-ranking permutes each query's top 8 only: the top-10 set, so R@10, is the plain one
        assert metrics[f"test/rerank/{d}/R@10"] == pytest.approx(metrics[f"test/{d}/R@10"], abs=1e-6)
        assert metrics[f"test/rerank/{d}/R@1"] <= metrics[f"test/rerank/{d}/R@5"] <= metrics[f"test/{d}/R@10"]
    assert "test/rerank/rsum" in metrics and "test/rsum" in metrics
    assert not any(k.startswith(("test/rerank/i2i", "test/rerank/t2t")) for k in metrics)
    info = json.loads((run.dir / "evaluation.json").read_text())
    assert info["rerank"]["k"] == 8 and "ITC" in info["rerank"]["single_modal"]
    capsys.readouterr()
    print_metrics_table({k: v for k, v in metrics.items() if k.startswith("test/")}, "test")
    table = capsys.readouterr().out
    # the console's table of the re-ranked numbers comes after the plain one, with its rsum
    assert "test [rerank gallery]" in table and f"rsum = {metrics['test/rerank/rsum']:.2f}" in table
    if objective == "infonce":  # vlr.eval re-ranks a trained run's test split with its own k
        again = run_vlr("eval", f"ckpt_path={run.dir / 'checkpoints' / 'best.ckpt'}", "eval.rerank.k=3",
                        "logger=none", dir=tmp_path / "eval")  # fmt: skip
        assert again.returncode == 0, again.output
        evaluated = again.json()
        assert evaluated["test/rsum"] == pytest.approx(metrics["test/rsum"], abs=1e-6)
        assert json.loads((again.dir / "evaluation.json").read_text())["rerank"]["k"] == 3
        assert evaluated["test/rerank/rsum"] != metrics["test/rerank/rsum"]  # k=3, not the run's 8


def test_itm_is_a_named_loss_term_weighted_by_objective_itm_weight(tmp_path, synthetic_root):
    from tests.conftest import compose_config
    from vlr.build import build_data_and_model
    from vlr.models.with_fusion import negatives_generator, training_terms_with_itm

    cfg = compose_config(
        *small_run(synthetic_root, "fusion=default", "objective.itm_weight=2.0"),
        run_dir=tmp_path / "run",
        root=tmp_path,
    )
    dm, model = build_data_and_model(cfg)
    assert model.objective.itm_weight == 2.0
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    model.eval()  # no dropout: both weights see the same forward
    terms = {}
    for weight in (2.0, 0.5):
        model.objective.itm_weight = weight
        out = training_terms_with_itm(
            model.encoder, model.objective, model.reference, model.fusion, model.fusion_options, batch,
            negatives_generator(0, 0, 0),
        )  # fmt: skip
        terms[weight] = {k: float(v.detach()) for k, v in out.items()}
    assert set(terms[2.0]) == {"itc_i2t", "itc_t2i", "itm"}
    assert terms[2.0]["itm"] == pytest.approx(4 * terms[0.5]["itm"], rel=1e-6) and terms[2.0]["itm"] > 0
    assert terms[2.0]["itc_i2t"] == pytest.approx(terms[0.5]["itc_i2t"], rel=1e-6)
    plain = model.objective.batch_terms(model.encoder, batch, model.reference)  # the objective's own pass
    assert {k: float(v) for k, v in plain.items()} == pytest.approx({k: terms[2.0][k] for k in plain}, rel=1e-6)


def test_rerank_without_fusion_is_one_line(tmp_path, synthetic_root):
    run = run_vlr("train", *small_run(synthetic_root, "fusion=default", "eval.rerank.k=4", "~model.fusion"),
                  dir=tmp_path / "run")  # fmt: skip
    assert run.returncode == 1
    assert run.error == (
        "error: eval.rerank.k=4 re-ranks with the ITM head of a fusion encoder, and this model has none: "
        "train with fusion=default (docs/fusion.md), or leave eval.rerank.k at 0"
    )


def test_a_default_run_builds_no_fusion(tmp_path, synthetic_root):
    from tests.conftest import compose_config
    from vlr.build import build_data_and_model

    cfg = compose_config(*small_run(synthetic_root), run_dir=tmp_path / "run", root=tmp_path)
    assert "fusion" not in cfg.model and cfg.eval.rerank.k == 0 and "itm_weight" not in cfg.objective
    _, model = build_data_and_model(cfg)
    assert model.fusion_options is None and model.rerank_k == 0
    assert not any(k.startswith("fusion.") for k in model.state_dict())
