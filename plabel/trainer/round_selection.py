"""One round's pseudo-labels: score the pool shard by shard, select globally, report.

Memory per process is O(shard) and communication does not grow with the pool: scores stay on
the process that computed them, the exact global selection comes from the sharded radix
select (``plabel.distributed.sharded_selection``), and the statistics are reduced from per-shard sums and
fixed-bin histograms. Only the selection itself (indices, labels, entropies) is gathered, since
every process trains on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Optional

import torch
from accelerate import Accelerator
from torch.utils.data import Dataset

from plabel.config import RunConfig
from plabel.data.junk import JUNK
from plabel.data.splits import UNREADABLE
from plabel.data.unlabeled import UNLABELED
from plabel.distributed.collectives import broadcast_buffers, gather_concat, max_across_processes, sum_across_processes
from plabel.distributed.sharded_selection import all_gather_selected, select_pseudo_labels_sharded
from plabel.method.scores import fit_temperature, ranking_scores
from plabel.method.selection import Selection, agreement_with, sharpened
from plabel.models.features import capture_features
from plabel.trainer.faults import fault_point
from plabel.trainer.scoring_pass import ScorePlan, score_shard

HISTOGRAM_BINS = 40
HISTOGRAMS = ("selected", "rest", "correct", "wrong")


@dataclass
class RoundSelection:
    selection: Selection
    selected_entropy: torch.Tensor  # (n_selected,) aligned with selection.indices
    metrics: dict[str, float]
    histogram_edges: torch.Tensor  # (HISTOGRAM_BINS + 1,) entropy bin edges in bits
    histograms: dict[str, torch.Tensor]  # name -> (HISTOGRAM_BINS,) counts over the whole pool
    unreadable: torch.Tensor  # (n_unreadable,) pool positions whose image could not be decoded


@dataclass(frozen=True)
class SelectionRequest:
    """What one round's selection asks for (built from the run config by :meth:`for_round`)."""

    round_index: int
    percent: float  # of the whole pool (class_balanced: of each predicted class)
    num_classes: int
    class_balanced: bool
    score: str  # the ranking, see plabel.method.scores.ranking_scores
    seed: int  # salts the random ranking
    previous: Optional[Selection] = None  # accumulating rounds: earlier picks keep their labels
    calibrate: bool = False  # fit a temperature on the labeled set's augmented views before ranking
    guard: str = "none"  # "knn": never select a sample whose features are far from every labeled sample's
    guard_quantile: float = 0.05
    soft_temperature: float = 1.0  # soft pseudo-labels (with plan.probabilities): their sharpening
    min_precision: Optional[float] = None  # adaptive k: the largest k <= percent whose estimated precision reaches it

    @staticmethod
    def for_round(cfg: RunConfig, round_index: int, num_classes: int, previous: Optional[Selection]) -> "SelectionRequest":
        p = cfg.pseudo
        return SelectionRequest(
            round_index, p.percent_for_round(round_index), num_classes, p.class_balanced, p.score, cfg.seed,
            previous if p.accumulate else None, p.calibrate, p.guard, p.guard_quantile, p.soft_temperature, p.min_precision,
        )


@dataclass(frozen=True)
class LabeledViews:
    """The labeled set as the selection looks at it: clean (the eval transform) and augmented."""

    clean: Dataset
    augmented: Dataset


def _labeled_logits(model: torch.nn.Module, data: Dataset, device: torch.device, num_classes: int) -> tuple[torch.Tensor, ...]:
    """(logits, labels, features) of every labeled sample, computed alike on every process."""
    batch = [data[i] for i in range(len(data))]  # type: ignore[arg-type]  # labeled sets are small
    x = torch.stack([b[0] for b in batch]).to(device)
    with torch.no_grad(), capture_features(model, num_classes) as features:
        logits = torch.cat([model(chunk) for chunk in x.split(256)])
    return logits.float().cpu(), torch.tensor([b[1] for b in batch]), torch.cat(features).float().cpu()


@dataclass(frozen=True)
class Guard:
    """The knn junk guard's thresholds, from the labeled set's own nearest-neighbour statistics
    (leave one out): a pool sample passes when its features are at least as similar in direction
    as all but ``guard_quantile`` of the labeled samples are to their nearest other labeled
    sample, and no farther in distance than all but ``guard_quantile`` of them. The default
    thresholds let everything through (no guard)."""

    similarity: float = -math.inf
    distance: float = math.inf

    @staticmethod
    def fit(features: torch.Tensor, quantile: float) -> "Guard":
        """Thresholds from the labeled set's features (n, d)."""
        x = features.float()
        unit = torch.nn.functional.normalize(x, dim=1)
        similarity, distance = unit @ unit.T, torch.cdist(x, x)
        similarity.fill_diagonal_(-math.inf)  # leave one out: a sample's nearest other labeled sample
        distance.fill_diagonal_(math.inf)
        return Guard(
            float(torch.quantile(similarity.max(dim=1).values, quantile)),
            float(torch.quantile(distance.min(dim=1).values, 1.0 - quantile)),
        )

    def passes(self, columns: dict[str, torch.Tensor]) -> torch.Tensor:
        """Which samples the guard lets through (a NaN score never passes); columns without the
        guard's scores: all of them."""
        if "similarity" not in columns:
            return torch.ones_like(columns["entropy"], dtype=torch.bool)
        return (columns["similarity"] >= self.similarity) & (columns["distance"] <= self.distance)


def prepare_plan(
    accelerator: Accelerator, model: torch.nn.Module, labeled: Optional[LabeledViews], request: SelectionRequest,
    plan: ScorePlan, validation: Optional[Dataset] = None, fixed_temperature: Optional[float] = None,
) -> tuple[ScorePlan, Guard, dict[str, float]]:
    """The pool's scoring plan for this request: a fitted temperature, the guard's reference
    features, and (with validation images) the temperature that calibrates the precision
    estimate; returns (plan, guard, metrics). Every process computes the same (the labeled set
    is small, its augmentation seeded by the round)."""
    metrics: dict[str, float] = {}
    if validation is not None and len(validation):  # type: ignore[arg-type]
        from plabel.trainer.validation import confidence_temperature

        t = confidence_temperature(accelerator, model, validation, plan, request.num_classes)
        plan = replace(plan, confidence_temperature=t)
        metrics["select/confidence_temperature"] = t
    elif fixed_temperature is not None:  # data.val_scope round0: round 0's, the validation images since trained on
        plan = replace(plan, confidence_temperature=fixed_temperature)
        metrics["select/confidence_temperature"] = fixed_temperature
    if labeled is None or (not request.calibrate and request.guard == "none"):
        return plan, Guard(), metrics
    bare = accelerator.unwrap_model(model)
    broadcast_buffers(accelerator, bare)
    was_training = bare.training
    bare.eval()
    device, c = accelerator.device, request.num_classes
    if request.calibrate:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(request.seed * 1_000 + request.round_index)
            views = [_labeled_logits(bare, labeled.augmented, device, c) for _ in range(4)]
        temperature = fit_temperature(torch.cat([v[0] for v in views]), torch.cat([v[1] for v in views]))
        plan = replace(plan, temperature=temperature)
        metrics["select/temperature"] = temperature
    guard = Guard()
    if request.guard == "knn":
        _, _, features = _labeled_logits(bare, labeled.clean, device, c)
        guard = Guard.fit(features, request.guard_quantile)
        plan = replace(plan, reference=features.to(device), num_classes=c)
        metrics["select/guard_threshold"] = guard.similarity
        metrics["select/guard_distance"] = guard.distance
    bare.train(was_training)
    return plan, guard, metrics


def adaptive_percent(
    accelerator: Accelerator, select: Any, confidence: torch.Tensor, start: int, percent: float, target: float, steps: int = 12,
) -> float:
    """The largest k <= ``percent`` whose selection's estimated precision (mean calibrated top
    probability) reaches ``target``, by bisection on k (each step one sharded selection and one
    all-reduce; the estimate falls as k grows, since the ranking puts the surest first). 0 when even
    the surest sample falls short."""

    def estimate(k: float) -> float:
        local_idx, _ = select(k)
        sums = sum_across_processes(accelerator, torch.tensor(
            [float(confidence[local_idx - start].double().sum()), float(local_idx.numel())], dtype=torch.float64))
        return float(sums[0] / sums[1]) if sums[1] else math.nan

    if not estimate(percent) < target:  # the round's k already reaches it (or nothing to estimate)
        return percent
    lo, hi = 0.0, percent
    for _ in range(steps):
        mid = (lo + hi) / 2
        if estimate(mid) >= target:
            lo = mid
        else:
            hi = mid
    return round(lo, 4)


def select_for_round(
    accelerator: Accelerator,
    model: torch.nn.Module,
    pool: Dataset,
    pool_labels: torch.Tensor,
    request: SelectionRequest,
    plan: ScorePlan = ScorePlan(),
    labeled: Optional[LabeledViews] = None,
    last: Optional[Selection] = None,
    validation: Optional[Dataset] = None,
    fixed_temperature: Optional[float] = None,
) -> RoundSelection:
    """Score the pool and pick this round's pseudo-labels, identically on every process.

    ``pool_labels`` are the pool's true labels, used only for precision and diagnostics (and to
    count junk, label ``JUNK``); ``UNLABELED`` where nobody knows them (a user's own pool): precision
    is then measured on the known part only (an audit), and is NaN ("unknown") without one.
    Statistics are always reported on entropy, whatever ranking picks the samples. ``labeled`` is
    needed by calibration and the guard; ``last`` (the previous round's selection) gives the
    agreement between rounds. ``validation`` (held-out labeled images) calibrates the selection's
    precision estimate (``select/precision_estimate``), which needs no pool label; without it,
    ``fixed_temperature`` (round 0's, data.val_scope round0) does.
    """
    r = request
    pool_size = len(pool)  # type: ignore[arg-type]
    plan, guard, extra = prepare_plan(accelerator, model, labeled, r, plan, validation, fixed_temperature)
    index, columns = score_shard(accelerator, model, pool, plan)
    fault_point(f"scored:{r.round_index}", accelerator)
    start, stop = (int(index[0]), int(index[-1]) + 1) if index.numel() else (0, 0)
    previous_local = None
    if r.previous is not None:
        mine = (r.previous.indices >= start) & (r.previous.indices < stop)
        previous_local = (r.previous.indices[mine], r.previous.labels[mine])
    entropy = columns["entropy"]
    ranking = ranking_scores(columns, index, r.score, r.seed, r.round_index)
    guarded = torch.zeros(index.numel(), dtype=torch.bool)
    if "similarity" in columns:  # the guard: unlike every labeled sample, never selected
        guarded = ~guard.passes(columns) & torch.isfinite(ranking)
        ranking = torch.where(guarded, torch.full_like(ranking, float("nan")), ranking)
    def select(percent: float) -> tuple[torch.Tensor, torch.Tensor]:
        return select_pseudo_labels_sharded(
            accelerator, index, ranking, columns["prediction"], pool_size=pool_size, percent=percent,
            num_classes=r.num_classes, class_balanced=r.class_balanced, previous_local=previous_local,
            of_eligible=r.guard != "none",  # k% of what the guard lets through
        )

    percent = r.percent
    if r.min_precision is not None and "confidence" in columns:
        percent = adaptive_percent(accelerator, select, columns["confidence"], start, r.percent, r.min_precision)
        extra["select/adaptive_percent"] = percent
    local_idx, local_labels = select(percent)
    selection = all_gather_selected(accelerator, local_idx, local_labels)
    if "probabilities" in columns:  # soft pseudo-labels: the picks' probabilities, in pool order too
        picked = gather_concat(accelerator, columns["probabilities"][local_idx - start])
        selection = replace(selection, targets=sharpened(picked, r.soft_temperature))
    selected_entropy = gather_concat(accelerator, entropy[local_idx - start])

    chosen = torch.zeros(index.numel(), dtype=torch.bool)
    chosen[local_idx - start] = True
    correct = torch.zeros(index.numel(), dtype=torch.bool)
    correct[local_idx - start] = local_labels == columns["label"][local_idx - start]
    finite = torch.isfinite(entropy)
    unreadable = columns["label"] == UNREADABLE
    totals = sum_across_processes(
        accelerator,
        torch.tensor(
            [
                float((~finite & ~unreadable).sum()), float(unreadable.sum()), float(guarded.sum()),
                float((guarded & (columns["label"] == JUNK)).sum()),
                float(entropy[chosen & finite].double().sum()), float((chosen & finite).sum()),
                float(entropy[~chosen & finite].double().sum()), float((~chosen & finite).sum()),
                float((columns["prediction"] == columns["label"]).sum()),
                float(columns["confidence"][chosen & finite].double().sum()) if "confidence" in columns else 0.0,
            ],
            dtype=torch.float64,
        ),
    )
    nonfinite, unreadable_count, guarded_count, guarded_junk, sel_sum, sel_n, rest_sum, rest_n, pool_correct, conf_sum = totals.tolist()
    pool_known = not bool((pool_labels == UNLABELED).any())
    local_max = entropy[chosen & finite].max() if bool((chosen & finite).any()) else torch.tensor(-math.inf)
    selected_max = float(max_across_processes(accelerator, local_max.reshape(1).float())[0])

    # Fixed bins over the possible range [0, log2 C] so per-shard counts add up exactly.
    edges = torch.linspace(0.0, math.log2(r.num_classes), HISTOGRAM_BINS + 1)
    masks = {"selected": chosen, "rest": ~chosen, "correct": chosen & correct, "wrong": chosen & ~correct}
    local_hists = torch.stack(
        [torch.histogram(entropy[m & finite].clamp(0, float(edges[-1])), bins=edges).hist for m in masks.values()]
    )
    hists = sum_across_processes(accelerator, local_hists.double())

    n = len(selection)
    true_labels = pool_labels[selection.indices]
    junk = true_labels == JUNK
    known = true_labels != UNLABELED  # junk is known too: a pseudo-label on it is always wrong
    real = int((~junk & known).sum())
    real_right = (selection.labels == true_labels) & ~junk & known
    metrics: dict[str, float] = {
        **extra,
        "select/num_selected": float(n),
        "select/fraction_of_pool": n / max(1, pool_size),
        "select/nonfinite_scores": nonfinite,
        "select/unreadable": unreadable_count,
        "select/pseudo_label_precision": (
            float((selection.labels[known] == true_labels[known]).double().mean()) if bool(known.any()) else math.nan
        ),
        "select/entropy_selected_mean": sel_sum / sel_n if sel_n else math.nan,
        "select/entropy_selected_max": selected_max if sel_n else math.nan,
        "select/entropy_rest_mean": rest_sum / rest_n if rest_n else math.nan,
        "select/pool_prediction_accuracy": pool_correct / max(1, pool_size) if pool_known else math.nan,
        "select/top_k_percent": percent,  # the k used: the round's, or less (pseudo.min_precision)
    }
    if "confidence" in columns:  # the mean calibrated top probability of the selected: their expected precision
        metrics["select/precision_estimate"] = conf_sum / sel_n if sel_n else math.nan
    if r.guard != "none":
        metrics["select/guarded"] = guarded_count
    if not pool_known:  # a user's own pool: what can be measured without its labels
        metrics["select/audited"] = float(known.sum())
    if last is not None and r.round_index > 1:
        metrics["select/overlap_with_previous"], metrics["select/agreement_with_previous"] = agreement_with(selection, last, pool_size)
    if bool((pool_labels == JUNK).any()):  # a dirty pool (data.junk_share): how much junk got through
        pool_junk = float((pool_labels == JUNK).sum())
        metrics.update({
            "select/junk_selected": float(junk.sum()), "select/junk_share": float(junk.sum()) / n if n else 0.0,
            "select/precision_real": float(real_right.sum()) / real if real else math.nan,
            "select/junk_in_pool": pool_junk,
        })
        if r.guard != "none":
            metrics["select/guarded_junk_share"] = guarded_junk / pool_junk
    class_counts = torch.bincount(selection.labels, minlength=r.num_classes)
    for c in range(r.num_classes):
        metrics[f"select/class_{c}"] = float(class_counts[c])
    unreadable_positions = gather_concat(accelerator, index[unreadable]) if unreadable_count else index[:0]
    return RoundSelection(
        selection, selected_entropy, metrics, edges, {name: hists[i] for i, name in enumerate(HISTOGRAMS)},
        unreadable_positions,
    )
