"""Every collective: where processes exchange tensors (the other half of the seam,
``processes.py``, decides which process acts).

Everything here works unchanged in a single process (Accelerate's collectives return the local
value). The trainer calls these; scoring, selection math and losses never call collectives.
Tensors handed to a collective are moved to ``accelerator.device`` first (NCCL takes no CPU
tensors) and results come back on the CPU; flags travel as int32, which every backend reduces
(NCCL has no bool all-reduce).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator

from plabel.distributed.global_batch import split_range

# ---------------------------------------------------------------------------------------------
# Collectives with byte accounting (the benchmarks report what selection sends).


@dataclass
class Traffic:
    """Bytes of tensors this process handed to collectives and got back (for benchmarks)."""

    sent: int = 0
    received: int = 0


class Comm:
    """Sum and gather on ``accelerator.device``, counting bytes into ``traffic``.

    Accelerate's reduce/gather return the local value with one process, so callers never branch
    on the world size. Results come back on the input's device.
    """

    def __init__(self, accelerator: Accelerator, traffic: Traffic | None = None) -> None:
        self.accelerator = accelerator
        self.traffic = traffic if traffic is not None else Traffic()

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum); every process gets the total."""
        nbytes = t.numel() * t.element_size()
        self.traffic.sent += nbytes
        self.traffic.received += nbytes
        if self.world == 1:
            return t.clone()
        return self.accelerator.reduce(t.to(self.accelerator.device), reduction="sum").to(t.device)

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """All-gather an equal-shaped tensor: (world, *t.shape), rows in rank order."""
        nbytes = t.numel() * t.element_size()
        self.traffic.sent += nbytes
        self.traffic.received += self.world * nbytes
        out = self.accelerator.gather(t.to(self.accelerator.device)[None]).to(t.device)
        return out.view(self.world, *t.shape)

    def gather_uneven(self, local: torch.Tensor) -> torch.Tensor:
        """Concatenate each process's ``local`` (first dims may differ) along dim 0, in rank order.

        Costs O(total length): one gather of the lengths, one of the padded parts.
        """
        lengths = self.gather(torch.tensor([local.shape[0]], dtype=torch.long)).flatten()
        longest = int(lengths.max())
        padded = local.new_zeros((longest, *local.shape[1:]))
        padded[: local.shape[0]] = local
        parts = self.gather(padded)  # (world, longest, ...)
        return torch.cat([parts[r, : int(n)] for r, n in enumerate(lengths)])


def gather_concat(accelerator: Accelerator, local: torch.Tensor) -> torch.Tensor:
    """Each process's 1-D ``local`` concatenated in rank order, on every process (CPU)."""
    return Comm(accelerator).gather_uneven(local.cpu())


def sum_across_processes(accelerator: Accelerator, values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over processes of a small tensor (counts, sums); CPU result."""
    return Comm(accelerator).sum(values.cpu())


def max_across_processes(accelerator: Accelerator, values: torch.Tensor) -> torch.Tensor:
    """Element-wise max over processes of a small float tensor; CPU result."""
    return Comm(accelerator).gather(values.cpu()).max(dim=0).values


def mean_across_processes(accelerator: Accelerator, value: float) -> float:
    """Average a Python float over processes (for logging losses)."""
    total = sum_across_processes(accelerator, torch.tensor([value], dtype=torch.float64))
    return float(total[0]) / accelerator.num_processes


def gather_lists(accelerator: Accelerator, items: list[Any]) -> list[Any]:
    """Every process's (small, picklable) list, concatenated in rank order, on every process."""
    if accelerator.num_processes == 1:
        return list(items)
    from accelerate.utils import gather_object

    return list(gather_object(items))


def any_process(accelerator: Accelerator, flag: bool) -> bool:
    """True on every process when ``flag`` is true on any (one small all-reduce)."""
    return bool(sum_across_processes(accelerator, torch.tensor([int(flag)], dtype=torch.int32))[0] > 0)


def broadcast_buffers(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Copy the main process's buffers (BatchNorm statistics) to every process, in place."""
    if accelerator.num_processes == 1:
        return
    for buffer in model.buffers():
        torch.distributed.broadcast(buffer.data, src=0)


# ---------------------------------------------------------------------------------------------
# Passes over a whole dataset: which samples a process handles, and putting results together.


def shard_range(accelerator: Accelerator, size: int, batch: int = 1) -> range:
    """This process's contiguous, unpadded slice of ``range(size)``, made of whole ``batch``-sized blocks.

    ``range(size)`` is cut into blocks ``[b * batch, (b + 1) * batch)`` (the last may be short) and
    each process takes a contiguous run of blocks (the first ``blocks % world`` one more). With the
    scoring batch as ``batch``, every sample is scored in the same batch whatever the number of
    processes, so its logits cannot change with it; no sample is padded or scored twice.
    """
    blocks = split_range(-(-size // batch), accelerator.num_processes, accelerator.process_index)
    return range(min(blocks.start * batch, size), min(blocks.stop * batch, size))


def gather_pool(
    accelerator: Accelerator,
    local_indices: torch.Tensor,
    columns: dict[str, torch.Tensor],
    pool_size: int,
) -> dict[str, torch.Tensor]:
    """Gather per-sample values from every process into pool-sized arrays (the reference path).

    ``local_indices`` (n_local,) are pool positions scored by this process; each column is
    (n_local,). Values are written at their pool index, so the shard layout cannot change the
    result. Every process returns the same CPU arrays. The shards must partition the pool
    (see :func:`shard_range`): each index scored exactly once.
    """
    comm = Comm(accelerator)
    gathered_idx = comm.gather_uneven(local_indices.cpu().long())
    counts = torch.bincount(gathered_idx, minlength=pool_size)
    if counts.numel() != pool_size or not bool((counts == 1).all()):
        raise RuntimeError(
            f"gather_pool: shards do not partition the pool of {pool_size} "
            f"({int((counts == 0).sum())} unscored, {int((counts > 1).sum())} scored twice)"
        )
    out: dict[str, torch.Tensor] = {}
    for name, values in columns.items():
        array = torch.empty(pool_size, dtype=values.dtype)
        array[gathered_idx] = comm.gather_uneven(values.cpu())
        out[name] = array
    return out
