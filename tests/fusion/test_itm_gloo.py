"""ITM under 2 real gloo processes whose loaders padded their captions to different lengths: the
gather pads them to one length, and the ranks' mean loss and averaged gradients equal one
process's on the same global batch. (The process boundary is the point: the simulated ranks of
`tests.distributed` cannot agree on shapes that depend on another rank's.)"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.fusion.test_itm import IDS, B, _fusion
from vlr.models.itm import itm_loss

LENGTHS = torch.tensor([3, 5, 4, 2, 2, 6, 3, 4])  # rank 0 pads to 5, rank 1 to 6


def _batch():
    g = torch.Generator().manual_seed(4)
    mask = (torch.arange(6)[None, :] < LENGTHS[:, None]).long()
    return {
        "v": torch.nn.functional.normalize(torch.randn(B, 4, generator=g, dtype=torch.float64), dim=-1),
        "t": torch.nn.functional.normalize(torch.randn(B, 4, generator=g, dtype=torch.float64), dim=-1),
        "image_tokens": torch.randn(B, 5, 12, generator=g, dtype=torch.float64),
        "text_tokens": torch.randn(B, 6, 16, generator=g, dtype=torch.float64) * mask[..., None],
        "mask": mask,
    }


def _loss_and_grads(part, ids):
    fusion = _fusion()
    loss = itm_loss(fusion, part["v"], part["t"], part["image_tokens"], part["text_tokens"], part["mask"], ids,
                    torch.Generator().manual_seed(5))  # fmt: skip
    return loss.detach(), [g.detach() for g in torch.autograd.grad(loss, list(fusion.parameters()))]


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        full, sl = _batch(), slice(rank * B // 2, (rank + 1) * B // 2)
        length = int(LENGTHS[sl].max())
        part = {k: v[sl] for k, v in full.items()}
        part["text_tokens"], part["mask"] = part["text_tokens"][:, :length], part["mask"][:, :length]
        torch.save(_loss_and_grads(part, IDS[sl]), os.path.join(out, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_with_different_caption_lengths_equal_one_process(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(port, str(tmp_path)), nprocs=2, join=True)
    want_loss, want_grads = _loss_and_grads(_batch(), IDS)
    ranks = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    assert torch.stack([r[0] for r in ranks]).mean().item() == pytest.approx(want_loss.item(), rel=1e-10)
    for i, want in enumerate(want_grads):
        torch.testing.assert_close((ranks[0][1][i] + ranks[1][1][i]) / 2, want, rtol=1e-9, atol=1e-12)
