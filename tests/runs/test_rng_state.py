"""Every DDP rank resumes its own RNG stream (issue 29): with dropout on, a 2-process run killed
and resumed ended up to 5.9e-4 from the uninterrupted run, because the checkpoint held rank 0's
RNG state only and every rank continued from it. Ranks simulated in this process: each saves
through `TorchRNGState` with a gather that returns every rank's state (what DDP's all_gather
returns), rank 0's checkpoint is loaded by each rank, and each must draw what it would have drawn."""

import types

import torch

from vlr.callbacks import TorchRNGState


def _trainer(rank: int, world_size: int, saved: list[torch.Tensor] | None = None):
    """A trainer as the callback sees it on ``rank``: ``all_gather`` gives every rank's ``saved`` state."""

    def all_gather(own: torch.Tensor) -> torch.Tensor:
        assert saved is not None and torch.equal(own, saved[rank])  # each rank sends its own state
        return torch.stack(saved)

    strategy = types.SimpleNamespace(root_device=torch.device("cpu"), all_gather=all_gather)
    return types.SimpleNamespace(global_rank=rank, world_size=world_size, strategy=strategy)


def _resumed(checkpoint: dict, rank: int, world_size: int) -> torch.Tensor:
    """What ``rank`` draws (a dropout mask's numbers) after restoring ``checkpoint`` in a fresh process."""
    torch.manual_seed(12345)
    callback = TorchRNGState()
    callback.setup(_trainer(rank, world_size), None, "fit")
    callback.load_state_dict(checkpoint)
    return torch.rand(6)


def test_each_rank_resumes_its_own_rng_stream():
    with torch.random.fork_rng():
        states = []
        for rank in range(2):  # the ranks' streams differ (each drew its own dropout masks)
            torch.manual_seed(100 + rank)
            torch.rand(rank + 3)
            states.append(torch.get_rng_state())
        uninterrupted = []
        for rank in range(2):
            torch.set_rng_state(states[rank])
            uninterrupted.append(torch.rand(6))
        saved = []
        for rank in range(2):  # every rank saves together; rank 0 writes the file
            torch.set_rng_state(states[rank])
            callback = TorchRNGState()
            callback.setup(_trainer(rank, 2, states), None, "fit")
            saved.append(callback.state_dict())
        checkpoint = saved[0]
        assert checkpoint["torch_rng_per_rank"].shape == (2, states[0].numel())
        for rank in range(2):
            assert torch.equal(_resumed(checkpoint, rank, 2), uninterrupted[rank]), rank
        assert not torch.equal(uninterrupted[0], uninterrupted[1])  # rank 0's state would not serve rank 1


def test_a_checkpoint_of_another_world_size_restores_rank_zeros_state(caplog):
    with torch.random.fork_rng():
        torch.manual_seed(7)
        zero = torch.get_rng_state()
        want = torch.rand(6)
        checkpoint = {"torch_rng": zero, "torch_rng_per_rank": torch.stack([zero, torch.zeros_like(zero)])}
        with caplog.at_level("WARNING", logger="vlr.callbacks.rng_state"):
            assert torch.equal(_resumed(checkpoint, 0, 1), want)
        assert "holds the RNG states of 2 ranks, this run has 1" in caplog.text
        assert torch.equal(_resumed({"torch_rng": zero}, 1, 2), want)  # a checkpoint of rank 0's state only
