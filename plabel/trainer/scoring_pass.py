"""Scoring a dataset: the one pass that serves the pool (selection), the test set (accuracy) and
``plabel score``. Each process scores its own shard; results carry sample positions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset, Subset

from plabel.config import RunConfig
from plabel.data.splits import UNREADABLE
from plabel.distributed.collectives import broadcast_buffers, gather_pool, max_across_processes, shard_range, sum_across_processes
from plabel.distributed.processes import print_once
from plabel.method.scores import energy, entropy, margin, max_probability, nearest_neighbours
from plabel.models.features import capture_features
from plabel.trainer.faults import Preempted, fault_point, stop_requested
from plabel.trainer.progress import Progress
from plabel.trainer.scoring_cache import ScoreCache
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
    cache: Optional[ScoreCache] = None  # the pool's pass: parts written to the run folder, reused on resume
    stoppable: bool = False  # look for a preemption signal after every flush (the pool's pass in a run)
    flush_batches: int = 32  # batches between copies to the host (and, for the pool's pass, to disk)
    confidence_temperature: Optional[float] = None  # adds column "confidence": top probability of softmax(logits / T)
    views: int = 1  # views averaged per image (pseudo.score_views): the clean one and views - 1 noisy ones
    noise: str = "shift"  # what the noisy views are (pseudo.score_noise): fixed shifts, or MC dropout
    view_seed: int = 0  # MC dropout: salts the per-batch seeds (the run's seed and round)
    probabilities: int = 0  # > 0 (the number of classes): keep each sample's probabilities (soft pseudo-labels)

    @staticmethod
    def from_config(cfg: RunConfig, options: LoaderOptions) -> "ScorePlan":
        return ScorePlan(cfg.train.eval_batch_size, cfg.pseudo.eps, options, flush_batches=cfg.checkpoint.score_flush_batches)


SCORE_COLUMNS = {
    "entropy": torch.float32, "prediction": torch.long, "label": torch.long,
    "max_probability": torch.float32, "margin": torch.float32, "energy": torch.float32,
}


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
    max_probability, margin, energy (-logsumexp), with ``plan.probabilities`` each sample's
    probabilities (a (shard, classes) column), and with ``plan.reference`` the cosine
    similarity and Euclidean distance of each sample's features to the nearest reference feature. Per-batch results
    stay on the device and reach the host every ``plan.flush_batches`` batches, so the GPU is not
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
    if plan.views > 1:
        names["disagreement"] = torch.float32
    if plan.confidence_temperature is not None:
        names["confidence"] = torch.float32
    columns = {name: torch.empty(len(shard), dtype=dtype) for name, dtype in names.items()}
    if plan.probabilities:  # soft pseudo-labels: num_classes floats per pool sample on its process
        columns["probabilities"] = torch.empty((len(shard), plan.probabilities), dtype=torch.float32)
    remaining = _take_cached(plan.cache, shard, columns)
    options = plan.options
    loader = DataLoader(
        Subset(dataset, remaining), batch_size=plan.batch_size, shuffle=False, **options.dataloader_kwargs()
    )
    if plan.cache is not None:
        reused = int(sum_across_processes(accelerator, torch.tensor([len(shard) - len(remaining)], dtype=torch.float64))[0])
        if reused:
            print_once(accelerator, f"{plan.label}: {reused} of {size} samples scored before the restart are taken from {plan.cache.folder}")
    progress = Progress(len(loader), f"{plan.label} (this process: {len(shard)} samples)", accelerator.is_main_process, unit="batches")
    # Every process looks for a stop signal as often as the busiest one (each look is a collective).
    looks = _looks_needed(accelerator, len(loader), plan.flush_batches) if plan.stoppable else 0
    flushes = 0
    pending: list[dict[str, torch.Tensor]] = []
    stop = False
    with capture_features(bare, plan.num_classes, plan.reference is not None) as features:
        for x, y, index in loader:
            progress.update()
            with accelerator.autocast():
                logits = _view_logits(bare, x.to(accelerator.device, non_blocking=True), plan, int(index[0]))
            batch = _batch_scores(logits, y.to(accelerator.device, non_blocking=True), plan, features)
            batch["at"] = index.to(accelerator.device, non_blocking=True).long() - shard.start
            pending.append(batch)
            if len(pending) == plan.flush_batches:
                _flush(pending, columns, plan.cache, shard.start)
                flushes += 1
                if plan.stoppable:
                    fault_point(f"flush:{flushes}", accelerator)
                if looks:
                    looks -= 1
                    if stop_requested(accelerator):
                        stop = True
                        break
    _flush(pending, columns, plan.cache, shard.start)
    while looks and not stop:  # the looks this process still owes the busier ones
        looks -= 1
        stop = stop_requested(accelerator)
    progress.close()
    bare.train(was_training)
    if stop:
        raise Preempted(f"stopped while {plan.label.split(':')[-1].strip()}; the finished part is kept in the run folder")
    return torch.arange(shard.start, shard.stop), columns


def _take_cached(cache: Optional[ScoreCache], shard: range, columns: dict[str, torch.Tensor]) -> Sequence[int]:
    """Fill ``columns`` from the parts a stopped job finished; the shard positions still to score.

    Parts are whole scoring batches, so what remains is whole batches too and is scored in the
    same batches as an uninterrupted pass would (the same logits, bit for bit)."""
    parts = cache.done(shard) if cache is not None else []
    if not parts:  # the usual pass: the shard itself, not a list of a million positions
        return shard
    todo = torch.ones(len(shard), dtype=torch.bool)
    for start, stop, part in parts:
        if set(part) != set(columns):
            continue
        for name, column in columns.items():
            column[start - shard.start : stop - shard.start] = part[name]
        todo[start - shard.start : stop - shard.start] = False
    return (torch.nonzero(todo).flatten() + shard.start).tolist()


def _looks_needed(accelerator: Accelerator, batches: int, flush_batches: int) -> int:
    """Stop-signal looks of the busiest process: one per full flush."""
    mine = torch.tensor([batches // flush_batches], dtype=torch.float32)
    return int(max_across_processes(accelerator, mine)[0])


# The noisy views of ``score_noise: shift``, in order: one-pixel moves (dy, dx), then diagonal ones.
SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1), (2, 0), (-2, 0), (0, 2), (0, -2))


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` (N, C, H, W) moved by (dy, dx) pixels, the border repeated into the gap (no randomness)."""
    h, w = x.shape[-2:]
    pad = (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0))  # left, right, top, bottom
    moved = torch.nn.functional.pad(x, pad, mode="replicate")
    top, left = max(-dy, 0), max(-dx, 0)
    return moved[..., top : top + h, left : left + w]


def _view_logits(model: torch.nn.Module, x: torch.Tensor, plan: ScorePlan, first: int) -> list[torch.Tensor]:
    """The model's logits for each view of the batch ``x`` whose first sample is at position ``first``;
    the clean view comes last (the guard's features are taken from the last forward).

    MC dropout's views run the model in training mode with every BatchNorm in eval mode, seeded
    by (view_seed, first, view): a batch is the same on any number of processes (whole scoring
    batches), so its masks, and its scores, are too.
    """
    layout = plan.options.layout
    if plan.views == 1:
        return [model(layout(x))]
    out = []
    if plan.noise == "shift":
        for dy, dx in SHIFTS[: plan.views - 1]:
            out.append(model(layout(shifted(x, dy, dx))))
    else:
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        model.train()
        for m in norms:
            m.eval()
        for view in range(1, plan.views):
            torch.manual_seed((plan.view_seed * 1_000_003 + first) * 64 + view)
            out.append(model(layout(x)))
        model.eval()
    out.append(model(layout(x)))
    return out


def _batch_scores(
    view_logits: list[torch.Tensor], y: torch.Tensor, plan: ScorePlan, features: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """One batch's columns, on the device. Several views: the scores of their averaged softmax
    (log of the mean probability as logits), energy of the mean logits, and ``disagreement``, the
    number of views whose argmax is not the averaged prediction's."""
    scaled = [v.float() / plan.temperature for v in view_logits]
    if len(scaled) == 1:
        logits = mean_logits = scaled[0]
    else:
        probs = torch.stack([torch.softmax(v, dim=1) for v in scaled])
        logits, mean_logits = probs.mean(dim=0).log(), torch.stack(scaled).mean(dim=0)
    unreadable = y == UNREADABLE
    # A blank stand-in was scored for an unreadable image: its scores mean nothing, never select it.
    nan = torch.full_like(logits, float("nan"))
    logits, mean_logits = torch.where(unreadable[:, None], nan, logits), torch.where(unreadable[:, None], nan, mean_logits)
    prediction = logits.argmax(dim=1)
    out = {
        "entropy": entropy(logits, plan.eps), "prediction": prediction, "label": y.long(),
        "max_probability": max_probability(logits), "margin": margin(logits), "energy": energy(mean_logits),
    }
    if len(scaled) > 1:
        votes = torch.stack([v.argmax(dim=1) for v in scaled])
        disagree = (votes != prediction[None]).sum(dim=0).float()
        out["disagreement"] = torch.where(unreadable, torch.full_like(disagree, float("nan")), disagree)
    if plan.probabilities:
        out["probabilities"] = torch.softmax(logits, dim=1)  # several views: their mean probability
    if plan.confidence_temperature is not None:  # calibrated on validation images scored the same way
        out["confidence"] = max_probability(logits / plan.confidence_temperature)
    if plan.reference is not None:
        out["similarity"], out["distance"] = nearest_neighbours(features[-1], plan.reference)
        features.clear()
    return out


def _flush(
    pending: list[dict[str, torch.Tensor]], columns: dict[str, torch.Tensor], cache: Optional[ScoreCache] = None, offset: int = 0
) -> None:
    """Write the waiting batches' results into the host arrays (one device-to-host copy per
    column) and, with a cache, into the run folder (one part per contiguous run of positions)."""
    if not pending:
        return
    at = torch.cat([b["at"] for b in pending]).cpu()
    for name, column in columns.items():
        column[at] = torch.cat([b[name] for b in pending]).cpu()
    pending.clear()
    if cache is not None:
        at = torch.sort(at).values
        breaks = torch.nonzero(at[1:] != at[:-1] + 1).flatten() + 1
        for run in torch.tensor_split(at, breaks):
            lo, hi = int(run[0]), int(run[-1]) + 1
            cache.write(lo + offset, hi + offset, {name: column[lo:hi].clone() for name, column in columns.items()})


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
