"""Loader defaults (data.num_workers / data.persistent_workers left unset: auto since 0.3.1, workers on a GPU, none on the CPU) and when their workers may be forked."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from plabel.config import RunConfig
from plabel.trainer.setup import auto_workers, loader_options


def test_auto_workers_keep_a_cpu_per_process_and_stop_at_eight():
    assert auto_workers("cuda", 1, 16) == 8
    assert auto_workers("cuda", 8, 16) == 1
    assert auto_workers("cuda", 4, 64) == 8
    assert auto_workers("cuda", 2, 2) == 0
    assert auto_workers("cpu", 1, 64) == 0


def _accelerator(device: str) -> SimpleNamespace:
    return SimpleNamespace(device=torch.device(device), num_processes=1)


def test_unset_means_auto_and_persistent_and_a_given_value_is_kept(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cfg = RunConfig()
    assert cfg.data.num_workers is None and cfg.data.persistent_workers is None
    cpu = loader_options(cfg, _accelerator("cpu"))
    assert (cpu.num_workers, cpu.persistent_workers, cpu.pin_memory) == (0, False, False)
    gpu = loader_options(cfg, _accelerator("cuda"))  # no tensor goes there: only the device type is read
    assert gpu.num_workers == auto_workers("cuda", 1, len(__import__("os").sched_getaffinity(0)))
    assert gpu.persistent_workers == (gpu.num_workers > 0) and gpu.pin_memory
    cfg.data.num_workers, cfg.data.persistent_workers = 3, False
    given = loader_options(cfg, _accelerator("cuda"))
    assert (given.num_workers, given.persistent_workers) == (3, False)


def test_a_closing_queue_feeder_is_waited_for_before_a_fork():
    """A loader's workers are forked only once the feeder threads of queues just closed have left
    (a fork while one exits can hang the worker inside os.fork()); live feeders are not waited on
    for long. The feeder here is held inside a send (more bytes than a pipe holds, nobody reading)
    so that it is still alive, and visibly closing, when it is looked at."""
    import contextlib
    import multiprocessing
    import threading

    from plabel.trainer.setup import _feeder_is_closing, _let_closing_feeders_finish

    queue = multiprocessing.Queue()
    queue.put(b"x" * (1 << 21))
    feeder = queue._thread
    assert feeder.name == "QueueFeederThread" and not _feeder_is_closing(feeder)
    queue.close()  # the close sentinel now waits behind the send
    assert feeder.is_alive() and _feeder_is_closing(feeder)
    def drain() -> None:
        # Only there to let the send through: once the pipe holds the message's tail the feeder takes
        # the close sentinel and closes the reader itself, maybe under this read (EBADF, not a failure).
        with contextlib.suppress(OSError):
            queue._reader.recv_bytes()

    reader = threading.Timer(1.0, drain)  # let the send finish a second from now
    reader.start()
    _let_closing_feeders_finish(live_wait_s=0.0, closing_wait_s=60.0)
    assert not feeder.is_alive()
    reader.join(timeout=60)
    assert not reader.is_alive()
