"""One global batch, whatever the number of processes: how it is split, and the two layers whose
result would otherwise depend on the split.

A step trains on a global batch of ``B`` draws; process ``r`` takes the contiguous slice
:func:`split_range` gives it (sizes differ by at most one when ``B`` is not a multiple of the
world size). Two layers see the whole local batch at once and would still depend on the split:

* **BatchNorm** normalises with the statistics of the batch it sees. Inside :func:`global_batch`,
  ``F.batch_norm`` in training mode all-reduces per-channel sums, sums of squares and counts
  (differentiably), so every process normalises with the statistics of the global batch and
  updates identical running statistics. torch's own ``SyncBatchNorm`` would do the same on GPUs
  only (it refuses CPU tensors) and replaces modules (losing timm's fused BatchNormAct layers);
  patching the function serves torch's and timm's BatchNorm layers alike.
* **Dropout** draws a mask for the tensor it sees. Inside :func:`global_batch`, ``F.dropout``
  draws the mask of the global batch's rows from a generator seeded identically on every process
  and keeps this process's rows, so a sample gets the same mask on 1 or 64 processes. On CPU with
  one process this is bit for bit what ``F.dropout`` draws, so single-process runs are unchanged.

* **Stochastic depth** (timm's ``DropPath``, torchvision's ``StochasticDepth`` in row mode) draws
  one keep/drop per sample. Inside :func:`global_batch` both draw the global batch's column from the
  identically seeded generator and keep this process's rows, as dropout does.

Any other layer that draws per-sample randomness itself (DropBlock, a model's own ``torch.rand``)
is not covered: its draws are the same on every process, so N processes differ from one there.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from accelerate import Accelerator

_original_batch_norm = F.batch_norm
_original_dropout = F.dropout
_ORIGINAL: dict[str, Any] = {}  # the libraries' own stochastic-depth functions, by attribute name


def split_range(total: int, world: int, rank: int) -> range:
    """``rank``'s contiguous part of ``range(total)``: the first ``total % world`` parts hold one more."""
    base, extra = divmod(total, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


class _State:
    rows: Optional[torch.Tensor] = None  # global row of each local row, in the order of the local batch
    global_rows: int = 0
    sync_batch_norm: bool = False


_state = _State()


@contextlib.contextmanager
def global_batch(accelerator: Accelerator, rows: torch.Tensor, global_rows: int, sync_batch_norm: bool) -> Iterator[None]:
    """Within this block (one training forward), BatchNorm and dropout act on the global batch.

    ``rows`` (local batch,) are the positions of this process's rows in the global batch of
    ``global_rows`` rows. With one process on CPU nothing is patched: the layers already see the
    whole batch and draw what the patched ones would.
    """
    world = accelerator.num_processes
    if world == 1 and accelerator.device.type == "cpu":
        yield
        return
    _state.rows, _state.global_rows = rows.to(accelerator.device), global_rows
    _state.sync_batch_norm = sync_batch_norm and world > 1
    # One process has no statistics to share: BatchNorm stays torch's own (no wrapper on the call
    # path). Dropout is patched on a GPU even then: CUDA's kernel draws another mask than the
    # global-batch draw that N processes make, and one GPU must train as N do.
    patch_norm = _state.sync_batch_norm
    if patch_norm:
        F.batch_norm = _global_batch_norm  # type: ignore[assignment]
    F.dropout = _global_dropout  # type: ignore[assignment]
    depth = _stochastic_depth_modules()
    for module, (name, patched) in depth.items():
        _ORIGINAL.setdefault(name, getattr(module, name))
        setattr(module, name, patched)
    try:
        yield
    finally:
        F.batch_norm, F.dropout = _original_batch_norm, _original_dropout  # type: ignore[assignment]
        for module, (name, _) in depth.items():
            setattr(module, name, _ORIGINAL[name])
        _state.rows = None


def _stochastic_depth_modules() -> dict[Any, tuple[str, Any]]:
    """The per-sample stochastic-depth functions of the libraries already imported (their modules
    look the function up at call time): module -> (attribute, the global-batch version)."""
    import sys

    found = {}
    for module_name, attribute, patched in (("timm.layers.drop", "drop_path", _global_drop_path),
                                            ("torchvision.ops.stochastic_depth", "stochastic_depth", _global_stochastic_depth)):
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attribute):
            found[module] = (attribute, patched)
    return found


def _global_mask(x: torch.Tensor, keep: float) -> Optional[torch.Tensor]:
    """The global batch's per-sample keep mask, this process's rows (None: not the training batch)."""
    rows = _state.rows
    if rows is None or x.dim() == 0 or x.shape[0] != rows.numel():
        return None
    return x.new_empty((_state.global_rows, *([1] * (x.dim() - 1)))).bernoulli_(keep)[rows]


def _global_drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True) -> torch.Tensor:
    """timm.layers.drop.drop_path, drawing for the global batch (the same arguments, the same draw on one process)."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1 - drop_prob
    mask = _global_mask(x, keep)
    if mask is None:
        return _ORIGINAL["drop_path"](x, drop_prob, training, scale_by_keep)
    if keep > 0.0 and scale_by_keep:
        mask.div_(keep)
    return x * mask


def _global_stochastic_depth(input: torch.Tensor, p: float, mode: str, training: bool = True) -> torch.Tensor:
    """torchvision.ops.stochastic_depth, drawing for the global batch in row mode (batch mode draws one
    value for everyone: identical on every process already)."""
    if not training or p == 0.0 or mode != "row":
        return _ORIGINAL["stochastic_depth"](input, p, mode, training)
    keep = 1.0 - p
    mask = _global_mask(input, keep)
    if mask is None:
        return _ORIGINAL["stochastic_depth"](input, p, mode, training)
    if keep > 0.0:
        mask.div_(keep)
    return input * mask


def _global_batch_norm(
    input: torch.Tensor, running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor],
    weight: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None, training: bool = False,
    momentum: float = 0.1, eps: float = 1e-5,
) -> torch.Tensor:
    if not (training and _state.sync_batch_norm):
        return _original_batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    channels = input.shape[1]
    dims = [0, *range(2, input.dim())]
    # Sums in float64: var = E[x^2] - E[x]^2 loses digits in float32 when the mean is large.
    x = input.double()
    count = torch.full((1,), input.numel() // channels, dtype=torch.float64, device=input.device)
    totals = _AllReduceSum.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
    n = totals[-1]
    mean = totals[:channels] / n
    var = (totals[channels : 2 * channels] / n - mean * mean).clamp(min=0)
    # Normalise in float32, or float64 for a float64 model (the tests' cross-process checks run
    # in float64, where summation order moves results by ~1e-15 instead of ~1e-3).
    dtype = torch.promote_types(input.dtype, torch.float32)
    mean, var, x = mean.to(dtype), var.to(dtype), input.to(dtype)
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(mean.detach().to(running_mean.dtype), alpha=momentum)
            unbiased = var.detach() * (n / (n - 1).clamp(min=1))
            running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
    shape = [1, channels] + [1] * (input.dim() - 2)
    y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + eps)
    if weight is not None:
        y = y * weight.view(shape)
    if bias is not None:
        y = y + bias.view(shape)
    return y.to(input.dtype)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes, differentiably: the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        torch.distributed.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        torch.distributed.all_reduce(out)
        return out


def _global_dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
    rows = _state.rows
    if not training or p == 0 or rows is None or input.dim() == 0 or input.shape[0] != rows.numel():
        return _original_dropout(input, p, training, inplace)
    if p == 1:
        return input.mul_(0) if inplace else input * 0
    # The whole global batch's mask from the (identically seeded) default generator, then our rows:
    # what one process holding the global batch draws, in the same order as F.dropout's CPU path.
    noise = torch.empty((_state.global_rows, *input.shape[1:]), dtype=input.dtype, device=input.device)
    noise.bernoulli_(1 - p)
    noise = noise[rows].div_(1 - p)
    return input.mul_(noise) if inplace else input * noise


__all__: list[Any] = ["global_batch", "split_range"]
