import pytest
import torch
from torch.utils.data import DistributedSampler

from tests.distributed import synced
from vlr.metrics import RetrievalEvaluator, neighbourhood_overlap, retrieval_metrics

N_IMG, CAPS = 41, 3  # odd sizes: DistributedSampler pads with repeats on 2 ranks
N_TXT = N_IMG * CAPS - 2  # the last image gets one caption


def _data():
    g = torch.Generator().manual_seed(0)
    t2i = torch.arange(N_IMG).repeat_interleave(CAPS)[:N_TXT]
    img = torch.nn.functional.normalize(torch.randn(N_IMG, 8, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(img[t2i] + torch.randn(N_TXT, 8, generator=g), dim=-1)
    labels = torch.randint(0, 5, (N_IMG,), generator=g)
    rel = torch.rand(N_TXT, N_IMG, generator=g)
    img_ref = torch.randn(N_IMG, 8, generator=g)
    txt_ref = torch.randn(N_TXT, 8, generator=g)
    return img, txt, t2i, labels, rel, img_ref, txt_ref


def _evaluator(rank: int, world_size: int, batch: int) -> RetrievalEvaluator:
    """An evaluator updated with what rank ``rank`` of ``world_size`` sees (DistributedSampler's shard)."""
    img, txt, t2i, labels, rel, img_ref, txt_ref = _data()
    ev = RetrievalEvaluator(t2i, image_labels=labels, relevance=rel, ndcg_ks=(5, 10), overlap_ks=(3, 5))
    for n, kind, emb, ref in ((N_IMG, "image", img, img_ref), (N_TXT, "text", txt, txt_ref)):
        if world_size > 1:
            idx = torch.tensor(list(DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=False)))
        else:
            idx = torch.arange(n)
        for b in idx.split(batch):
            ev.update(**{f"{kind}_emb": emb[b], f"{kind}_idx": b, f"{kind}_ref": ref[b]})
    return ev


def _evaluate(rank: int, world_size: int, batch: int) -> dict:
    return _evaluator(rank, world_size, batch).compute()


def test_single_process_equals_functional():
    img, txt, t2i, labels, rel, img_ref, txt_ref = _data()
    got = _evaluate(0, 1, batch=5)
    want = retrieval_metrics(img, txt, t2i, image_labels=labels, relevance=rel, ndcg_ks=(5, 10))
    for k in (3, 5):
        want[f"image/overlap@{k}"] = neighbourhood_overlap(img, img_ref, k)
        want[f"text/overlap@{k}"] = neighbourhood_overlap(txt, txt_ref, k)
    assert got == want


def test_two_ranks_equal_one_exactly():
    """Each rank's shard (DistributedSampler pads 41 images with a repeat), synced as DDP syncs
    before compute (tests.distributed.synced): every rank's numbers equal one process's."""
    one = _evaluate(0, 1, batch=4)
    ranks = [_evaluator(rank, 2, batch=4) for rank in range(2)]
    shards = [torch.cat(ev.image_idx).tolist() for ev in ranks]
    assert len(shards[0]) == len(shards[1]) == 21 and set(shards[0]) | set(shards[1]) == set(range(N_IMG))
    synced(ranks)
    for ev in ranks:
        assert ev.compute() == one  # exact: padding duplicates dropped, same rows, same order


def test_missing_items_are_reported():
    t2i = torch.tensor([0, 0, 1, 1, 2])
    ev = RetrievalEvaluator(t2i)
    ev.update(image_emb=torch.randn(2, 4), image_idx=torch.tensor([0, 2]))
    ev.update(text_emb=torch.randn(5, 4), text_idx=torch.arange(5))
    with pytest.raises(
        RuntimeError, match=r"saw 2 distinct images but the split has 3; missing indices \(first 10\): \[1\]"
    ):
        ev.compute()


def test_a_limited_pass_is_scored_over_what_it_saw_when_allowed():
    """Debug runs (fast_dev_run, limit_val_batches): the images seen and those of their captions
    that were seen, scored as a split of their own -- the same numbers as retrieval_metrics on it."""
    img, txt, t2i, labels, rel, img_ref, txt_ref = _data()
    seen_images = torch.tensor([3, 0, 7, 12, 5, 20])
    seen_texts = torch.arange(0, 40)  # captions of images 0..13: those of 1, 2, 4, ... lack their image
    ev = RetrievalEvaluator(t2i, image_labels=labels, relevance=rel, ndcg_ks=(5,), overlap_ks=(3,))
    ev.update(image_emb=img[seen_images], image_idx=seen_images, image_ref=img_ref[seen_images])
    ev.update(text_emb=txt[seen_texts], text_idx=seen_texts, text_ref=txt_ref[seen_texts])
    with pytest.raises(RuntimeError, match="saw 6 distinct images but the split has 41"):
        ev.compute()
    ev.allow_partial = True
    got = ev.compute()
    images = torch.tensor([0, 3, 5, 7, 12])  # 20 is dropped: none of its captions was seen
    captions = torch.tensor([c for c in seen_texts.tolist() if int(t2i[c]) in images.tolist()])
    owner = torch.tensor([images.tolist().index(int(t2i[c])) for c in captions])
    want = retrieval_metrics(
        img[images], txt[captions], owner, image_labels=labels[images], relevance=rel[captions][:, images], ndcg_ks=(5,)
    )
    want["image/overlap@3"] = neighbourhood_overlap(img[images], img_ref[images], 3)
    want["text/overlap@3"] = neighbourhood_overlap(txt[captions], txt_ref[captions], 3)
    assert got == want
    assert ev.last_coverage == (5, N_IMG, len(captions), N_TXT)
