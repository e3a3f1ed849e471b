"""Re-ranking under DDP (`vlr.models.rerank`): token states gathered from every rank's shard with
the sampler's repeated items dropped, each rank scoring its own block of queries, and the scores
every rank ends with equal to one process's."""

import torch

from tests.distributed import simulated_world
from vlr.models.fusion import FusionEncoder
from vlr.models.rerank import TokenStore, pair_scorer

N_IMG, N_TXT, L, K = 7, 12, 5, 4


def _data():
    g = torch.Generator().manual_seed(0)
    mask = (torch.arange(L)[None, :] < torch.randint(2, L + 1, (N_TXT,), generator=g)[:, None]).long()
    mask[[0, 7]] = 1  # each rank's shard below holds a full-length caption: one padded length
    return {
        "image_tokens": torch.randn(N_IMG, 3, 8, generator=g),
        "text_tokens": torch.randn(N_TXT, L, 16, generator=g),
        "text_mask": mask,
        "i2t": torch.randint(0, N_TXT, (N_IMG, K), generator=g),
        "t2i": torch.randint(0, N_IMG, (N_TXT, K), generator=g),
    }


def _store(data, images, captions) -> TokenStore:
    store = TokenStore()
    for chunk in images.split(2):
        store.add_images(chunk, data["image_tokens"][chunk])
    for chunk in captions.split(3):
        length = int(data["text_mask"][chunk].sum(1).max())  # a loader pads to its batch's longest
        store.add_texts(chunk, data["text_tokens"][chunk][:, :length], data["text_mask"][chunk][:, :length])
    return store


def test_two_ranks_score_half_the_pairs_each_and_agree_with_one(monkeypatch):
    data = _data()
    fusion = FusionEncoder(16, 8, layers=1, heads=4).eval()
    calls: list[int] = []

    def score(text_tokens, text_mask, image_tokens):
        calls.append(text_tokens.shape[0])
        return fusion.match_score(text_tokens, text_mask, image_tokens)

    one = _store(data, torch.arange(N_IMG), torch.arange(N_TXT))
    scorer = pair_scorer(score, one.gathered(), batch_size=5)
    want = {d: scorer(d, torch.arange(data[d].shape[0]), data[d]) for d in ("i2t", "t2i")}
    assert sum(calls) == (N_IMG + N_TXT) * K

    # DistributedSampler's shards: interleaved, the last repeated to even them (image 0)
    shards = {
        0: (torch.tensor([0, 2, 4, 6]), torch.tensor([0, 2, 4, 6, 8, 10])),
        1: (torch.tensor([1, 3, 5, 0]), torch.tensor([1, 3, 5, 7, 9, 11])),
    }
    # two jobs of 2 simulated ranks: the gather of the token states, then the scoring (a pass
    # before the ranks agree sees stand-in tokens, which a scorer's indices do not fit)
    gathered = simulated_world(monkeypatch, 2).run(lambda rank: _store(data, *shards[rank]).gathered())
    per_rank_calls = {}

    def rank_step(rank):
        calls.clear()
        tokens = gathered[rank]
        scorer = pair_scorer(score, tokens, batch_size=5)
        out = {d: scorer(d, torch.arange(data[d].shape[0]), data[d]) for d in ("i2t", "t2i")}
        per_rank_calls[rank] = sum(calls)
        return out, tokens["image_idx"], tokens["text_idx"]

    world = simulated_world(monkeypatch, 2)
    results = world.run(rank_step)
    for rank_result, image_idx, text_idx in results:  # (asserted here: early passes see stand-ins)
        assert torch.equal(image_idx, torch.arange(N_IMG)) and torch.equal(text_idx, torch.arange(N_TXT))
        for d in ("i2t", "t2i"):
            torch.testing.assert_close(rank_result[d], want[d], rtol=1e-5, atol=1e-6)
    # queries split in contiguous blocks: ceil(7/2)=4 + 3 images, 6 + 6 captions
    assert per_rank_calls == {0: (4 + 6) * K, 1: (3 + 6) * K}
