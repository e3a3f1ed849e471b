"""`vlr.runs.run_variant`: which overrides make a run a variant of its cell (its W&B/MLflow label)."""

from vlr.runs import run_variant


def test_factors_and_plumbing_are_not_a_variant_and_anything_else_is():
    assert (
        run_variant(
            [
                "objective=covlr",
                "imbalance=text_weak",
                "imbalance.strength=0.5",
                "seed=3",
                "data=coco",
                "model=tiny",
                "logger=[csv,wandb]",
                "logger.wandb.offline=false",
                "hydra.run.dir=x",
                "trainer=ddp",
                "trainer.devices=4",
                "data.num_workers=8",
                "data.root=/d",
                "resume=false",
                "callbacks.last_checkpoint.every_n_steps=5",
                "paths.data_dir=/p",
            ]
        )
        is None
    )
    lr1 = run_variant(["objective=covlr", "model.optimizer.lr=0.001", "seed=0"])
    lr2 = run_variant(["objective=covlr", "model.optimizer.lr=0.0001", "seed=1"])
    assert lr1 and lr2 and lr1[0] != lr2[0] and lr1[1] == ["model.optimizer.lr=0.001"]
    assert (
        run_variant(["seed=2", "model.optimizer.lr=0.001", "objective=sad"])[0] == lr1[0]
    )  # seeds pool; objectives compare
    both = run_variant(["trainer.max_epochs=2", "objective.alpha=0.1", "experiment=smoke"])
    assert both[1] == ["experiment=smoke", "objective.alpha=0.1", "trainer.max_epochs=2"]
