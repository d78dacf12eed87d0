"""The one seam where processes talk to each other.

Everything here works unchanged in a single process (Accelerate's collectives return the local
value). The training loop calls these; scoring, selection and losses never call collectives.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

T = TypeVar("T")


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
    device = accelerator.device
    # Pad shards to a common length with index -1 so all_gather sees equal shapes.
    idx = accelerator.pad_across_processes(local_indices.to(device).long(), dim=0, pad_index=-1)
    gathered_idx = accelerator.gather(idx).cpu()
    keep = gathered_idx >= 0
    gathered_idx = gathered_idx[keep]
    counts = torch.bincount(gathered_idx, minlength=pool_size)
    if counts.numel() != pool_size or not bool((counts == 1).all()):
        raise RuntimeError(
            f"gather_pool: shards do not partition the pool of {pool_size} "
            f"({int((counts == 0).sum())} unscored, {int((counts > 1).sum())} scored twice)"
        )
    out: dict[str, torch.Tensor] = {}
    for name, values in columns.items():
        padded = accelerator.pad_across_processes(values.to(device), dim=0, pad_index=0)
        flat = accelerator.gather(padded).cpu()[keep]
        array = torch.empty(pool_size, dtype=values.dtype)
        array[gathered_idx] = flat
        out[name] = array
    return out


def shard_range(accelerator: Accelerator, size: int) -> range:
    """This process's contiguous, unpadded slice of ``range(size)``.

    Same split as ``accelerator.split_between_processes`` (the first ``size % world`` processes
    take one extra) but without materialising the index list, and with no padded duplicates, so
    a pass over the pool scores every sample exactly once whatever the world size.
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    base, extra = divmod(size, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def share_from_main(accelerator: Accelerator, obj: T) -> T:
    """Return the main process's ``obj`` on every process (a picklable object)."""
    if accelerator.num_processes == 1:
        return obj
    box: list[Any] = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]


def mean_across_processes(accelerator: Accelerator, value: float) -> float:
    """Average a Python float over processes (for logging losses)."""
    t = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(t, reduction="mean").item())


def sync_buffers(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Copy the main process's buffers (BatchNorm statistics) to every process, in place."""
    if accelerator.num_processes == 1:
        return
    for buffer in model.buffers():
        torch.distributed.broadcast(buffer.data, src=0)


def sum_across_processes(accelerator: Accelerator, values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over processes of a small tensor (counts, sums); CPU result."""
    if accelerator.num_processes == 1:
        return values.clone()
    return accelerator.reduce(values.to(accelerator.device), reduction="sum").cpu()


def max_across_processes(accelerator: Accelerator, values: torch.Tensor) -> torch.Tensor:
    """Element-wise max over processes of a small float tensor; CPU result."""
    if accelerator.num_processes == 1:
        return values.clone()
    gathered = accelerator.gather(values.to(accelerator.device).unsqueeze(0))
    return gathered.max(dim=0).values.cpu()


def gather_concat(accelerator: Accelerator, local: torch.Tensor) -> torch.Tensor:
    """Concatenate each process's 1-D ``local`` (lengths may differ) in rank order, on every process.

    With contiguous shards in rank order (:func:`shard_range`), per-sample values of a selection
    come out in ascending pool order. Costs O(total length), not O(pool).
    """
    if accelerator.num_processes == 1:
        return local.clone()
    lengths = accelerator.gather(torch.tensor([local.numel()], device=accelerator.device)).cpu()
    padded = accelerator.pad_across_processes(local.to(accelerator.device), dim=0)
    parts = accelerator.gather(padded.unsqueeze(0)).cpu()  # (world, longest)
    return torch.cat([parts[r, : int(n)] for r, n in enumerate(lengths)])
