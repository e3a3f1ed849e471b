import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import Died
from vlr.objectives import create_objective
from vlr.objectives.base import Stages

# a small synthetic run for the CLI tests: 40 images x 5 captions / batch 20 = 10 steps per epoch
SMALL_RUN = [
    "data.num_train=40",
    "data.num_val=15",
    "data.num_test=15",
    "data.batch_size=20",
    "data.num_workers=0",
    "logger=csv",
]


def _setup(**kw):
    g = torch.Generator().manual_seed(0)
    v = F.normalize(torch.randn(5, 4, generator=g), dim=-1)
    t = F.normalize(torch.randn(5, 4, generator=g), dim=-1)
    u, w = torch.randn(5, 3, generator=g), torch.randn(5, 6, generator=g)
    ids = torch.tensor([0, 0, 1, 2, 3])
    torch.manual_seed(0)
    kw = {"lambda_init": 0.3, **kw}
    obj = create_objective(
        "sad", embed_dim=4, image_reference_dim=3, text_reference_dim=6, temperature=0.1, relation_temperature=0.5, **kw
    )
    return obj, v, t, u, w, ids


def _relations(x, tau):
    x = x.double().numpy()
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = x @ x.T / tau
    return np.array([[s[i, j] for j in range(len(x)) if j != i] for i in range(len(x))])


def _soft_ce(student, reference, head, ids, tau, head_on="reference"):
    if head_on == "reference":  # the release: reference -> student space, the student embedding as is
        s = student.detach().double().numpy()
        te = F.normalize(head(reference), dim=-1).detach().double().numpy()
    else:
        s = F.normalize(head(student), dim=-1).detach().double().numpy()
        te = F.normalize(reference, dim=-1).double().numpy()
    logits = s @ te.T / tau
    total = 0.0
    for i in range(len(ids)):
        pos = [j for j in range(len(ids)) if ids[j] == ids[i]]
        log_z = np.log(np.exp(logits[i]).sum())
        total -= sum(logits[i, j] - log_z for j in pos) / len(pos)
    return total / len(ids)


def test_terms_match_hand_computation():
    obj, v, t, u, w, ids = _setup()
    terms = obj(v, t, ids, reference={"image": u, "text": w})
    assert set(terms) == {"itc_i2t", "itc_t2i", "iic", "ttc", "kd", "kdi", "kdt"}
    r_s, r_i, r_t = _relations(v + t, 0.5), _relations(u, 0.5), _relations(w, 0.5)
    r_e = 0.3 * r_t + 0.7 * r_i
    assert terms["kd"].item() == pytest.approx(2.0 * np.abs(r_s - r_e).mean(), rel=1e-5)
    assert terms["kdi"].item() == pytest.approx(np.abs(r_i - r_e).mean(), rel=1e-5)
    assert terms["kdt"].item() == pytest.approx(np.abs(r_t - r_e).mean(), rel=1e-5)
    ids_l = ids.tolist()
    # the release: heads map the reference (3-d image, 6-d text) into the 4-d student space, and the
    # shared ITC temperature (0.1 here) scales the logits
    assert (obj.image_head.in_features, obj.image_head.out_features) == (3, 4)
    assert terms["iic"].item() == pytest.approx(_soft_ce(v, u, obj.image_head, ids_l, 0.1), rel=1e-5)
    assert terms["ttc"].item() == pytest.approx(2.0 * _soft_ce(t, w, obj.text_head, ids_l, 0.1), rel=1e-5)
    assert obj.log_values()["lambda"] == pytest.approx(0.3)


def test_head_on_student_maps_the_student_into_the_reference_space():
    obj, v, t, u, w, ids = _setup(head_on="student", distill_temperature=0.07)
    assert (obj.image_head.in_features, obj.image_head.out_features) == (4, 3)
    terms = obj(v, t, ids, reference={"image": u, "text": w})
    ids_l = ids.tolist()
    assert terms["iic"].item() == pytest.approx(_soft_ce(v, u, obj.image_head, ids_l, 0.07, "student"), rel=1e-5)
    assert terms["ttc"].item() == pytest.approx(2.0 * _soft_ce(t, w, obj.text_head, ids_l, 0.07, "student"), rel=1e-5)


def test_the_shared_temperature_learns_through_the_distillation_terms():
    obj, v, t, u, w, ids = _setup()
    obj(v, t, ids, reference={"image": u, "text": w})["iic"].backward()
    assert obj.temperature.log_value.grad is not None and obj.temperature.log_value.grad.abs().item() > 0


def test_lambda_only_moves_through_kd_terms():
    obj, v, t, u, w, ids = _setup()
    v, t = v.clone().requires_grad_(True), t.clone().requires_grad_(True)
    terms = obj(v, t, ids, reference={"image": u, "text": w})
    (terms["kdi"] + terms["kdt"]).backward()
    assert v.grad is None and t.grad is None  # the lambda-only terms never touch the student
    # with mae and kdi = kdt they are lambda*c and (1 - lambda)*c: their sum is flat in lambda
    assert obj.fusion_logit.grad.abs().item() < 1e-6
    obj.zero_grad()
    obj(v, t, ids, reference={"image": u, "text": w})["kd"].backward()
    assert obj.fusion_logit.grad.abs().item() > 1e-4  # kd moves it


def test_lambda_keeps_moving_near_its_bounds():
    """lambda = sigmoid(a): pushed towards 1 for many steps it approaches 1, never reaches it,
    and its gradient never vanishes (a clamp to [0, 1] left it stuck with zero gradient)."""
    _, v, t, u, w, ids = _setup()
    obj = create_objective(
        "sad",
        embed_dim=4,
        image_reference_dim=3,
        text_reference_dim=4,
        relation_temperature=0.5,
        lambda_init=0.9,
        weights={"kdi": 0.0, "kdt": 0.0},
    )
    optimizer = torch.optim.SGD([obj.fusion_logit], lr=2.0)
    history = []
    for _ in range(40):
        optimizer.zero_grad()
        # kd towards R_T alone: the student relations equal the text reference's, so lambda -> 1
        terms = obj(v, t, ids, reference={"image": u, "text": (v + t).detach() * 2.0})
        terms["kd"].backward()
        assert obj.fusion_logit.grad.abs().item() > 0
        optimizer.step()
        history.append(obj.log_values()["lambda"])
    assert history[-1] > history[0] > 0.9 and history[-1] < 1.0
    assert all(b >= a for a, b in zip(history, history[1:], strict=False))


def test_fixed_lambda_may_sit_on_a_bound():
    obj, v, t, u, w, ids = _setup(lambda_init=0.0, learnable_lambda=False)
    assert not any("fusion" in n for n, _ in obj.named_parameters())
    terms = obj(v, t, ids, reference={"image": u, "text": w})
    r_s, r_i = _relations(v + t, 0.5), _relations(u, 0.5)
    assert terms["kd"].item() == pytest.approx(2.0 * np.abs(r_s - r_i).mean(), rel=1e-5)


def test_half_of_the_epochs_are_stage_one_by_default(caplog):
    obj = _setup(stage1_epochs="half")[0]
    assert obj.stages(5) == Stages(stage2_epoch=2, from_best=True)
    obj.set_epoch(1, 5)
    assert obj.stage1_epochs == 2 and obj.in_stage1
    obj.set_epoch(2, 5)
    assert not obj.in_stage1
    assert obj.stages(1) is None
    assert obj.stages(-1) is None  # a run bounded by max_steps alone: no stage 1, said in a warning
    obj.set_epoch(0, -1)
    assert obj.stage1_epochs == 0 and not obj.in_stage1
    assert "objective.stage1_epochs=half: the run has no epoch count" in caplog.text


@pytest.mark.parametrize("distance", ["mse", "kl", "wasserstein"])
def test_other_distances_are_zero_for_identical_structure(distance):
    _, v, t, u, w, ids = _setup()
    obj = create_objective(
        "sad",
        embed_dim=4,
        image_reference_dim=4,
        text_reference_dim=6,
        distance=distance,
        student="image",
        lambda_init=0.0,
        learnable_lambda=False,
    )
    terms = obj(v, t, ids, reference={"image": v * 3.0, "text": w})  # same directions as the student
    assert obj(v, t, ids, reference={"image": u @ torch.ones(3, 4), "text": w})["kd"].item() > 1e-3
    assert terms["kd"].item() == pytest.approx(0.0, abs=1e-5)  # float32 relations scaled by 1/0.07


def test_bad_options():
    with pytest.raises(ValueError, match="objective.distance must be one of"):
        _setup(distance="l1")
    with pytest.raises(ValueError, match=r"objective.weights has unknown terms \['itm'\]"):
        _setup(weights={"itm": 2.0})
    with pytest.raises(ValueError, match="objective.head_on must be one of"):
        _setup(head_on="both")
    with pytest.raises(ValueError, match=r"objective.lambda_init=0.0: a learnable lambda is sigmoid\(a\)"):
        _setup(lambda_init=0.0)
    with pytest.raises(ValueError, match="objective.stage1_epochs must be an integer >= 0 or 'half', got 'all'"):
        _setup(stage1_epochs="all")
    obj, v, t, u, w, ids = _setup()
    with pytest.raises(ValueError, match="objective=sad needs reference embeddings"):
        obj(v, t, ids)


@pytest.mark.slow
def test_two_stage_schedule_trains_itc_first_then_all_terms_from_the_best_checkpoint(tmp_path):
    import csv
    import json

    import torch

    from tests.conftest import run_vlr

    run_dir = tmp_path / "run"
    args = ["objective=sad", "objective.stage1_epochs=2", "trainer.max_epochs=3", *SMALL_RUN]
    run = run_vlr("train", *args, "trainer.log_every_n_steps=1", dir=run_dir)
    assert run.returncode == 0, run.output[-3000:]
    rows = [r for r in csv.DictReader(open(run_dir / "csv" / "metrics.csv")) if r.get("train/loss/kd")]
    by_epoch = {}
    for r in rows:
        by_epoch.setdefault(int(r["epoch"]), []).append(r)
    assert sorted(by_epoch) == [0, 1, 2]
    for epoch, stage_rows in by_epoch.items():
        for r in stage_rows:
            assert float(r["train/stage"]) == (1.0 if epoch < 2 else 2.0)
            for term in ("kd", "iic", "ttc", "kdi", "kdt"):
                assert (float(r[f"train/loss/{term}"]) == 0.0) == (epoch < 2), (epoch, term)
            assert float(r["train/loss/itc_i2t"]) > 0
    assert "stage 2 starts from the best stage-1 checkpoint" in run.output and "checkpoints/best.ckpt" in run.output
    # stage 2 chooses its best among its own epochs (the release's stage 2 is a run of its own): the
    # tested checkpoint and the reported val numbers are stage 2's, whatever stage 1 scored
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["epoch"] == 2 and best["callbacks"]["ObjectiveSchedule"] == {"stage2_started": True}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    val = [r for r in csv.DictReader(open(run_dir / "csv" / "metrics.csv")) if r.get("val/rsum")]
    assert metrics["val/rsum"] == pytest.approx(float(next(r for r in val if int(r["epoch"]) == 2)["val/rsum"]))


@pytest.mark.slow
def test_a_run_resumed_in_the_middle_of_stage_2_stays_in_stage_2(tmp_path, monkeypatch):
    """Lightning runs no epoch-start hook for an epoch resumed in its middle: the schedule must
    still follow the restored epoch, and the resumed run end with the uninterrupted one's weights."""
    import csv

    import torch

    import vlr.callbacks.last_checkpoint as last_checkpoint
    from tests.conftest import run_vlr

    args = [
        "objective=sad",
        "objective.stage1_epochs=1",
        "trainer.max_epochs=2",
        *SMALL_RUN,
        "trainer.log_every_n_steps=1",
        "callbacks.last_checkpoint.every_n_steps=3",
        "test=false",
    ]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run_vlr("train", *args, dir=whole).returncode == 0
    # last.ckpt is written at steps 3, 6, 9, 10 (epoch end), 12: the run dies right after the 5th, mid stage 2
    written = []
    real = last_checkpoint.atomic_write

    def dies_after_the_5th_last_ckpt(path, write, what="file"):
        out = real(path, write, what)
        written.append(path)
        if sum(str(p).endswith("last.ckpt") for p in written) == 5:
            raise Died
        return out

    monkeypatch.setattr(last_checkpoint, "atomic_write", dies_after_the_5th_last_ckpt)
    with pytest.raises(Died):
        run_vlr("train", *args, dir=resumed)
    monkeypatch.undo()
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12
    run = run_vlr("train", *args, dir=resumed)
    assert run.returncode == 0, run.output[-3000:]
    assert "resuming from" in run.output
    rows = [r for r in csv.DictReader(open(resumed / "csv" / "metrics.csv")) if r.get("train/stage")]
    after = [r for r in rows if int(r["step"]) >= 12]
    assert after and all(float(r["train/stage"]) == 2.0 and float(r["train/loss/kd"]) > 0 for r in after)
    w1 = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    w2 = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


@pytest.mark.parametrize(
    "options, message",
    [
        (
            ["objective.stage1_epochs=3", "trainer.max_epochs=3"],
            "objective.stage1_epochs=3 but trainer.max_epochs=3: stage 2 would never run",
        ),
        (
            ["objective.stage1_epochs=1", "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2"],
            "objective.stage2_from=best: stage 1 (1 epochs) is never validated",
        ),
        (
            ["objective.stage1_epochs=1", "trainer.max_epochs=3", "~callbacks"],
            "objective.stage2_from=best needs a ModelCheckpoint that monitors a val metric",
        ),
    ],
)
def test_a_two_stage_schedule_that_cannot_work_is_refused_before_training(tmp_path, options, message):
    from tests.conftest import run_vlr

    run = run_vlr("train", "objective=sad", *options, *SMALL_RUN, dir=tmp_path / "run")
    assert run.returncode == 1
    lines = [line for line in run.output.splitlines() if line.strip()]
    assert message in lines[-1], run.output[-2000:]
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()  # no step was trained


def test_inert_options_are_refused_by_name():
    from vlr.errors import ConfigError

    with pytest.raises(ConfigError, match="objective.weights.kd=0 leaves the learnable lambda without a gradient"):
        _setup(weights={"kd": 0.0})
    _setup(weights={"kd": 0.0}, learnable_lambda=False)  # a fixed lambda: fine
    _setup(weights={"kd": 0.0}, distance="mse")  # mse: kdi + kdt do depend on lambda
    # a learnable temperature must start inside its bounds; a fixed one may be any positive value
    with pytest.raises(ConfigError, match=r"objective.relation_temperature=1.0 is outside the bounds \[0.001, 0.5\]"):
        create_objective("sad", embed_dim=4, relation_temperature=1.0, learnable_relation_temperature=True)
    fixed = create_objective("sad", embed_dim=4, relation_temperature=1.0)
    assert fixed.relation_temperature().item() == pytest.approx(1.0)
