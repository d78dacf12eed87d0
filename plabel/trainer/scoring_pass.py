"""Scoring a dataset: the one pass that serves the pool (selection), the test set (accuracy) and
``plabel score``. Each process scores its own shard; results carry sample positions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset, Subset

from plabel.config import RunConfig
from plabel.data.splits import UNREADABLE
from plabel.distributed.collectives import broadcast_buffers, gather_pool, shard_range
from plabel.method.scores import energy, entropy, margin, max_probability, nearest_neighbours
from plabel.models.features import capture_features
from plabel.trainer.progress import Progress
from plabel.trainer.setup import LoaderOptions


@dataclass(frozen=True)
class ScorePlan:
    """How a scoring pass runs: batch, entropy's log guard, loading and layout, and what it measures."""

    batch_size: int = 512
    eps: float = 1e-10
    options: LoaderOptions = LoaderOptions()
    label: str = "scoring"  # what the progress line calls the pass (pool, test, ...)
    temperature: float = 1.0  # scores of softmax(logits / T) (pseudo.calibrate)
    reference: Optional[torch.Tensor] = None  # (n, d) features: adds each sample's nearest similarity and distance
    num_classes: Optional[int] = None  # to find the classifier whose input is the feature (with reference)

    @staticmethod
    def from_config(cfg: RunConfig, options: LoaderOptions) -> "ScorePlan":
        return ScorePlan(cfg.train.eval_batch_size, cfg.pseudo.eps, options)


SCORE_COLUMNS = {
    "entropy": torch.float32, "prediction": torch.long, "label": torch.long,
    "max_probability": torch.float32, "margin": torch.float32, "energy": torch.float32,
}
FLUSH_BATCHES = 32  # results wait on the device this many batches before one copy to the host


@torch.no_grad()
def score_shard(
    accelerator: Accelerator, model: torch.nn.Module, dataset: Dataset, plan: ScorePlan = ScorePlan()
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Score this process's shard of ``dataset`` (whole eval batches): (shard indices, shard-sized columns).

    The bare model runs in eval mode under the run's autocast; results are written into
    preallocated shard-sized arrays at (dataset position - shard start), so memory is a few
    bytes per sample and the order does not depend on batching. Columns: entropy (bits),
    prediction (argmax), label (the dataset's label; for the pool the true label, diagnostics
    only; ``UNREADABLE`` for an image that could not be decoded, whose scores are NaN),
    max_probability, margin, energy (-logsumexp), and with ``plan.reference`` the cosine
    similarity and Euclidean distance of each sample's features to the nearest reference feature. Per-batch results
    stay on the device and reach the host every ``FLUSH_BATCHES`` batches, so the GPU is not
    stopped after every batch.
    """
    size = len(dataset)  # type: ignore[arg-type]
    bare = accelerator.unwrap_model(model)
    # DDP leaves each process with its own BatchNorm running statistics after the last step;
    # score with the main process's so every shard sees the same model.
    broadcast_buffers(accelerator, bare)
    was_training = bare.training
    bare.eval()
    shard = shard_range(accelerator, size, plan.batch_size)
    names = dict(SCORE_COLUMNS, **(dict.fromkeys(("similarity", "distance"), torch.float32) if plan.reference is not None else {}))
    columns = {name: torch.empty(len(shard), dtype=dtype) for name, dtype in names.items()}
    options = plan.options
    loader = DataLoader(
        Subset(dataset, shard), batch_size=plan.batch_size, shuffle=False, **options.dataloader_kwargs()
    )
    progress = Progress(len(loader), f"{plan.label} (this process: {len(shard)} samples)", accelerator.is_main_process, unit="batches")
    pending: list[dict[str, torch.Tensor]] = []
    with capture_features(bare, plan.num_classes, plan.reference is not None) as features:
        for x, y, index in loader:
            progress.update()
            with accelerator.autocast():
                logits = bare(options.layout(x.to(accelerator.device, non_blocking=True)))
            batch = _batch_scores(logits, y.to(accelerator.device, non_blocking=True), plan, features)
            batch["at"] = index.to(accelerator.device, non_blocking=True).long() - shard.start
            pending.append(batch)
            if len(pending) == FLUSH_BATCHES:
                _flush(pending, columns)
    _flush(pending, columns)
    progress.close()
    bare.train(was_training)
    return torch.arange(shard.start, shard.stop), columns


def _batch_scores(
    logits: torch.Tensor, y: torch.Tensor, plan: ScorePlan, features: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """One batch's columns, on the device."""
    logits = logits.float() / plan.temperature
    unreadable = y == UNREADABLE
    # A blank stand-in was scored for an unreadable image: its scores mean nothing, never select it.
    logits = torch.where(unreadable[:, None], torch.full_like(logits, float("nan")), logits)
    out = {
        "entropy": entropy(logits, plan.eps), "prediction": logits.argmax(dim=1), "label": y.long(),
        "max_probability": max_probability(logits), "margin": margin(logits), "energy": energy(logits),
    }
    if plan.reference is not None:
        out["similarity"], out["distance"] = nearest_neighbours(features.pop(), plan.reference)
    return out


def _flush(pending: list[dict[str, torch.Tensor]], columns: dict[str, torch.Tensor]) -> None:
    """Write the waiting batches' results into the host arrays (one device-to-host copy per column)."""
    if not pending:
        return
    at = torch.cat([b["at"] for b in pending]).cpu()
    for name, column in columns.items():
        column[at] = torch.cat([b[name] for b in pending]).cpu()
    pending.clear()


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
