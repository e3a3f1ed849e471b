"""Tie tolerance (issue 29): scores within ``tie_tolerance`` are tied, so float rounding that
depends on the eval batch size or the number of ranks never decides a metric.

The independent computation: the same embeddings with their near-ties snapped to exact ties,
scored with exact ties (``tie_tolerance=0``), which `tests/metrics/test_ties.py` checks
against Monte Carlo tie-breaking."""

import math

import pytest
import torch
from torch.utils.data import DistributedSampler

from tests.distributed import synced
from vlr.errors import ConfigError
from vlr.metrics import RetrievalEvaluator, neighbourhood_overlap, retrieval_metrics
from vlr.metrics.ranking import TIE_TOLERANCE, best_positive_rank, check_tie_tolerance, ndcg


def test_two_candidates_1e7_apart_are_a_tie():
    query = torch.tensor([[1.0]], dtype=torch.float64)
    gallery = torch.tensor([[0.5], [0.5 + 1e-7], [0.1]], dtype=torch.float64)  # positive 0; 1 is 1e-7 higher
    tied = best_positive_rank(query, gallery, torch.tensor([[0]]))
    assert (tied.above.item(), tied.tied_negatives.item(), tied.tied_positives.item()) == (0, 1, 1)
    assert tied.rank("expected").item() == 0.5 and tied.hit_probability(1, "expected").item() == 0.5
    strict = best_positive_rank(query, gallery, torch.tensor([[0]]), tolerance=0.0)
    assert strict.rank("expected").item() == 1.0  # exact comparison: the negative wins by rounding
    clear = best_positive_rank(query, torch.tensor([[0.5], [0.5 + 2e-5]], dtype=torch.float64), torch.tensor([[0]]))
    assert clear.rank("expected").item() == 1.0  # more than the tolerance above: strictly better


def test_ndcg_averages_gains_over_near_tied_items():
    query = torch.tensor([[1.0]], dtype=torch.float64)
    gallery = torch.tensor([[0.0], [0.9], [0.9 + 1e-7], [0.3]], dtype=torch.float64)  # item 0 is the query
    gains = lambda q: torch.tensor([[0.0, 0.0, 1.0, 0.5]], dtype=torch.float64)  # noqa: E731
    got = ndcg(query, gallery, gains, torch.tensor([0]), (2,))[2].item()
    # items 1 and 2 are one tie group: mean gain 0.5 at ranks 0 and 1
    want = (0.5 + 0.5 / math.log2(3)) / (1.0 + 0.5 / math.log2(3))
    assert got == pytest.approx(want, abs=1e-12)
    strict = ndcg(query, gallery, gains, torch.tensor([0]), (2,), tolerance=0.0)[2].item()
    assert strict == pytest.approx(1.0 / (1.0 + 0.5 / math.log2(3)), abs=1e-12)  # item 2 first by 1e-7


def _near_tied_case(seed=0, n_img=23):
    """Quantised embeddings (many exact ties, distinct scores >= 1/16 apart), and the same with
    every row moved by < 1e-7: the near-ties rounding makes of exact ties."""
    g = torch.Generator().manual_seed(seed)
    t2i = torch.repeat_interleave(torch.arange(n_img), torch.randint(1, 5, (n_img,), generator=g))
    img = torch.randint(-1, 2, (n_img, 3), generator=g).double() / 4
    txt = img[t2i] + torch.randint(-1, 2, (t2i.numel(), 3), generator=g).double() / 4
    labels = torch.randint(0, 3, (n_img,), generator=g)
    rel = torch.randint(0, 4, (t2i.numel(), n_img), generator=g).double() / 3

    def nudged(x):
        return x + (torch.rand(x.shape, generator=g, dtype=torch.float64) - 0.5) * 4e-8

    return img, txt, nudged(img), nudged(txt), t2i, labels, rel


@pytest.mark.parametrize("ties", ["expected", "pessimistic", "optimistic"])
def test_near_ties_score_as_exact_ties(ties):
    img, txt, img_n, txt_n, t2i, labels, rel = _near_tied_case()
    kw = dict(image_labels=labels, relevance=rel, ks=(1, 3, 5), ndcg_ks=(3, 10), ties=ties)
    exact = retrieval_metrics(img, txt, t2i, tie_tolerance=0.0, **kw)
    assert retrieval_metrics(img_n, txt_n, t2i, **kw) == pytest.approx(exact, abs=1e-9)
    unprotected = retrieval_metrics(img_n, txt_n, t2i, tie_tolerance=0.0, **kw)
    assert max(abs(unprotected[k] - exact[k]) for k in exact) > 1.0  # without a tolerance, rounding decides
    for k in (1, 3, 7):
        assert neighbourhood_overlap(img_n, txt_n[: img.shape[0]], k) == pytest.approx(
            neighbourhood_overlap(img, txt[: img.shape[0]], k, tolerance=0.0), abs=1e-12
        )


def test_a_tie_group_that_runs_past_the_fetched_top_is_averaged_whole():
    """NDCG@k fetches the top 2k + 16; a tie group at the k-th place reaching beyond them is
    sorted whole (60 items tied, 1e-7 apart in a chain)."""
    g = torch.Generator().manual_seed(1)
    n = 80
    scores = torch.cat([torch.tensor([0.9, 0.8]), 0.5 + torch.arange(n - 2) * 1e-7]).double()
    gallery = torch.cat([torch.zeros(1, 2), torch.stack([scores, torch.zeros(n)], 1)]).double()
    query = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    gains_row = torch.cat([torch.zeros(1), torch.rand(n, generator=g)]).double()[None]
    got = ndcg(query, gallery, lambda q: gains_row, torch.tensor([0]), (5,))[5].item()
    gallery_exact = gallery.clone()
    gallery_exact[3:, 0] = 0.5  # the chain as one exact tie
    want = ndcg(query, gallery_exact, lambda q: gains_row, torch.tensor([0]), (5,), tolerance=0.0)[5].item()
    assert got == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("bad", [-1e-6, float("nan"), 0.5, "x"])
def test_a_bad_tolerance_is_refused_naming_the_option(bad):
    with pytest.raises(ConfigError, match=r"^model.evaluation.tie_tolerance must be"):
        check_tie_tolerance(bad)


# ---- the evaluator: eval batch size and ranks

N_IMG = 101  # odd: DistributedSampler pads the last batch of 2 ranks


def _split():
    """101 images, 5 captions each, many of them duplicates (as the synthetic data's are)."""
    g = torch.Generator().manual_seed(0)
    t2i = torch.arange(N_IMG).repeat_interleave(5)
    img = torch.nn.functional.normalize(torch.randn(N_IMG, 16, generator=g), dim=-1)
    words = torch.randn(40, 16, generator=g)  # a caption is one of 40 "sentences" near its image
    sentence = torch.randint(0, 40, (t2i.numel(),), generator=g)
    txt = torch.nn.functional.normalize(img[t2i] * 0.3 + words[sentence], dim=-1)
    txt[1::5] = txt[0::5]  # every image's second caption duplicates its first
    txt[7::25] = txt[2::25][: txt[7::25].shape[0]]  # and some duplicate another image's caption
    return img, txt, t2i


def _rounded(emb: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """``emb`` as a batched float32 forward pass returns it: rounding that depends on where an
    item sits in its batch (up to 2 ulps), so duplicates in different batches differ."""
    position = torch.arange(batch.numel(), dtype=torch.float32)[:, None]
    return emb[batch] * (1.0 + torch.remainder(position * 7 + batch[:, None], 3) * 1.2e-7)


def _evaluated(batch: int, world_size: int = 1, **options) -> dict:
    img, txt, t2i = _split()
    ranks = []
    relevance = torch.rand(t2i.numel(), N_IMG, generator=torch.Generator().manual_seed(1))
    for rank in range(world_size):
        ev = RetrievalEvaluator(t2i, relevance=relevance, ndcg_ks=(10, 20), overlap_ks=(10,), **options)
        for n, kind, emb in ((N_IMG, "image", img), (t2i.numel(), "text", txt)):
            order = torch.tensor(list(DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=False)))
            for b in order.split(batch):
                rounded = _rounded(emb, b)
                ev.update(**{f"{kind}_emb": rounded, f"{kind}_idx": b, f"{kind}_ref": rounded.flip(1)})
        ranks.append(ev)
    if world_size > 1:
        synced(ranks)
    return ranks[0].compute()


def test_metrics_do_not_depend_on_the_eval_batch_size_or_the_number_of_ranks():
    small, large, two_ranks = _evaluated(7), _evaluated(101), _evaluated(7, world_size=2)
    assert small.keys() == large.keys() == two_ranks.keys()
    for other in (large, two_ranks):
        worst = max(small, key=lambda k: abs(small[k] - other[k]))
        assert abs(small[worst] - other[worst]) <= 1e-3, (worst, small[worst], other[worst])
    # exact comparison on the same embeddings: the batching decides near-ties by more than 1e-3
    exact = _evaluated(7, tie_tolerance=0.0), _evaluated(101, tie_tolerance=0.0)
    assert max(abs(exact[0][k] - exact[1][k]) for k in exact[0]) > 1e-3


def test_the_default_tolerance_is_the_configured_one():
    from omegaconf import OmegaConf

    from tests.conftest import CONF_DIR

    for preset in sorted((CONF_DIR / "model").glob("*.yaml")):
        evaluation = OmegaConf.load(preset).get("evaluation")
        if evaluation is not None:
            assert evaluation.tie_tolerance == TIE_TOLERANCE, preset.name


def test_vlr_eval_of_one_model_does_not_depend_on_the_eval_batch_size(tmp_path):
    """The entry point end to end on an odd-sized split (101 test images): the same model
    (the towers as built from one seed) scored with eval batches of 7 and of 101."""
    from tests.conftest import run_vlr
    from vlr.data.synthetic import SyntheticSpec, generate_synthetic

    root = tmp_path / "data"
    generate_synthetic(root, SyntheticSpec(num_train=10, num_val=5, num_test=N_IMG, seed=3))
    spec = (f"data.root={root}", "data.num_train=10", "data.num_val=5", f"data.num_test={N_IMG}",
            "data.generator_seed=3", "data.num_workers=0")  # fmt: skip
    runs = [run_vlr("eval", *spec, f"data.eval_batch_size={b}", dir=tmp_path / f"eval{b}") for b in (7, N_IMG)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].output[-2000:]
    small, large = (r.metrics for r in runs)
    assert small.keys() == large.keys() and len(small) > 30
    worst = max(small, key=lambda k: abs(small[k] - large[k]))
    assert abs(small[worst] - large[worst]) <= 1e-3, (worst, small[worst], large[worst])
    assert runs[0].json("evaluation.json")["tie_tolerance"] == TIE_TOLERANCE
