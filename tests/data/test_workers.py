"""Loader workers leave SIGTERM and SIGINT to the main process (a scheduler signals the whole
process group; a worker dying of it broke the main loop before Lightning could save)."""

import signal

from torch.utils.data import DataLoader, Dataset

from vlr.data.workers import WorkerInit


class SignalDispositions(Dataset):
    """Each item: whether the worker ignores SIGTERM and SIGINT."""

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return [signal.getsignal(signal.SIGTERM) == signal.SIG_IGN, signal.getsignal(signal.SIGINT) == signal.SIG_IGN]


def test_workers_ignore_stop_signals_and_keep_lightnings_seeding(monkeypatch):
    loader = DataLoader(SignalDispositions(), num_workers=1, worker_init_fn=WorkerInit(3), collate_fn=list)
    assert [item for batch in loader for item in batch] == [[True, True], [True, True]]
    assert signal.getsignal(signal.SIGTERM) != signal.SIG_IGN  # the main process keeps its own

    seeds = []
    monkeypatch.setenv("PL_SEED_WORKERS", "1")
    monkeypatch.setattr("vlr.data.workers.pl_worker_init_function", lambda wid, rank=None: seeds.append((wid, rank)))
    WorkerInit(3)(5)  # as a worker would call it (here: in this process, handlers restored below)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    assert seeds == [(5, 3)]


def test_the_datamodules_loaders_use_it(synthetic_root):
    from tests.conftest import SYNTHETIC_ROOT_SPEC, compose_config
    from vlr.build import build_data_and_model

    cfg = compose_config(f"data.root={synthetic_root}", *SYNTHETIC_ROOT_SPEC, "data.num_workers=0", "logger=none")
    datamodule, _ = build_data_and_model(cfg)
    datamodule.setup("fit")
    assert isinstance(datamodule.train_dataloader().worker_init_fn, WorkerInit)
    assert all(isinstance(loader.worker_init_fn, WorkerInit) for loader in datamodule.val_dataloader())
