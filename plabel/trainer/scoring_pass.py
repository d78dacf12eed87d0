"""Scoring a dataset: the one pass that serves the pool (selection), the test set (accuracy) and
``plabel score``. Each process scores its own shard; results carry sample positions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset, Subset

from plabel.config import RunConfig
from plabel.data.splits import UNREADABLE
from plabel.distributed.collectives import broadcast_buffers, gather_pool, shard_range
from plabel.method.scores import entropy, margin, max_probability
from plabel.trainer.progress import Progress
from plabel.trainer.setup import LoaderOptions


@dataclass(frozen=True)
class ScorePlan:
    """How a scoring pass runs: batch per process, entropy's log guard, loading and layout."""

    batch_size: int = 512
    eps: float = 1e-10
    options: LoaderOptions = LoaderOptions()
    label: str = "scoring"  # what the progress line calls the pass (pool, test, ...)

    @staticmethod
    def from_config(cfg: RunConfig, options: LoaderOptions) -> "ScorePlan":
        return ScorePlan(cfg.train.eval_batch_size, cfg.pseudo.eps, options)


SCORE_COLUMNS = {
    "entropy": torch.float32, "prediction": torch.long, "label": torch.long,
    "max_probability": torch.float32, "margin": torch.float32,
}


@torch.no_grad()
def score_shard(
    accelerator: Accelerator, model: torch.nn.Module, dataset: Dataset, plan: ScorePlan = ScorePlan()
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Score this process's contiguous shard of ``dataset``: (shard indices, shard-sized columns).

    The bare model runs in eval mode under the run's autocast; results are written into
    preallocated shard-sized arrays at (dataset position - shard start), so memory is a few
    bytes per sample and the order does not depend on batching. Columns: entropy (bits),
    prediction (argmax), label (the dataset's label; for the pool the true label, diagnostics
    only; ``UNREADABLE`` for an image that could not be decoded, whose scores are NaN),
    max_probability, margin.
    """
    size = len(dataset)  # type: ignore[arg-type]
    bare = accelerator.unwrap_model(model)
    # DDP leaves each process with its own BatchNorm running statistics after the last step;
    # score with the main process's so every shard sees the same model.
    broadcast_buffers(accelerator, bare)
    was_training = bare.training
    bare.eval()
    shard = shard_range(accelerator, size, plan.batch_size)
    columns = {name: torch.empty(len(shard), dtype=dtype) for name, dtype in SCORE_COLUMNS.items()}
    options = plan.options
    loader = DataLoader(
        Subset(dataset, shard), batch_size=plan.batch_size, shuffle=False, **options.dataloader_kwargs()
    )
    progress = Progress(len(loader), f"{plan.label} (this process: {len(shard)} samples)", accelerator.is_main_process, unit="batches")
    for x, y, index in loader:
        progress.update()
        with accelerator.autocast():
            logits = bare(options.layout(x.to(accelerator.device, non_blocking=True)))
        logits = logits.float()
        unreadable = (y == UNREADABLE).to(logits.device)
        if bool(unreadable.any()):  # a blank stand-in was scored: its scores mean nothing, never select it
            logits[unreadable] = float("nan")
        at = index.long() - shard.start
        columns["entropy"][at] = entropy(logits, plan.eps).cpu()
        columns["prediction"][at] = logits.argmax(dim=1).cpu()
        columns["label"][at] = y.long()
        columns["max_probability"][at] = max_probability(logits).cpu()
        columns["margin"][at] = margin(logits).cpu()
    progress.close()
    bare.train(was_training)
    return torch.arange(shard.start, shard.stop), columns


def score_dataset(
    accelerator: Accelerator, model: torch.nn.Module, dataset: Dataset, plan: ScorePlan = ScorePlan()
) -> dict[str, torch.Tensor]:
    """Score every sample of ``dataset`` once; dataset-sized arrays on every process.

    :func:`score_shard` on each process, then the all-gather reference path. Used for the test
    set and ``plabel score``; the pool's selection uses the sharded path instead.
    """
    index, columns = score_shard(accelerator, model, dataset, plan)
    return gather_pool(accelerator, index, columns, len(dataset))  # type: ignore[arg-type]


def accuracy(scores: dict[str, torch.Tensor]) -> float:
    """Share of samples whose prediction equals their label."""
    n = scores["label"].numel()
    return float((scores["prediction"] == scores["label"]).sum()) / n if n else math.nan
