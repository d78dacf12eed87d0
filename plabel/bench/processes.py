"""Run a function in N fresh gloo CPU processes, each with its own Accelerator, and collect results.

The one process spawner of the benchmarks and the multi-process tests. ``fn(accelerator, *args)``
runs on every rank (one torch thread each, like one GPU per process); its picklable return values
come back in rank order. A rank that raises makes :func:`run_processes` raise with that rank's
traceback, and processes still running then are terminated.
"""

from __future__ import annotations

import os
import socket
import traceback
from typing import Any, Callable, Optional

import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(
    rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple, mixed_precision: Optional[str], queue: Any
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world), ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1",
    )
    try:
        import torch
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState, PartialState

        torch.set_num_threads(1)
        accelerator = Accelerator(cpu=True, mixed_precision=mixed_precision)
        result = fn(accelerator, *args)
        if torch.distributed.is_initialized():  # a full run() ends training and destroys the group
            accelerator.wait_for_everyone()
        queue.put((rank, True, result))
        AcceleratorState._reset_state(True)
        PartialState._reset_state()
    except BaseException:  # report every failure, assertion errors included
        queue.put((rank, False, traceback.format_exc()))


def run_processes(
    fn: Callable[..., Any], world: int, *args: Any, timeout: float = 120.0, mixed_precision: Optional[str] = None,
) -> list[Any]:
    """``fn(accelerator, *args)`` on ``world`` fresh gloo CPU processes; results in rank order.

    Raises AssertionError naming the failed rank and its traceback (pytest shows it as a test
    failure); a process that has not answered within ``timeout`` seconds raises queue.Empty.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_worker, args=(r, world, port, fn, args, mixed_precision, queue)) for r in range(world)
    ]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    errors: list[str] = []
    try:
        for _ in range(world):
            rank, ok, payload = queue.get(timeout=timeout)
            if ok:
                results[rank] = payload
            else:
                errors.append(f"rank {rank}:\n{payload}")
                break  # other ranks may now hang in a collective; stop them below
    finally:
        for p in procs:
            p.join(timeout=30 if not errors and len(results) == world else 1)
            if p.is_alive():
                p.terminate()
    if errors:
        raise AssertionError("\n".join(errors))
    return [results[r] for r in range(world)]
