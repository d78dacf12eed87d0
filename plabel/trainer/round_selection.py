"""One round's pseudo-labels: score the pool shard by shard, select globally, report.

Memory per process is O(shard) and communication does not grow with the pool: scores stay on
the process that computed them, the exact global selection comes from the sharded radix
select (``plabel.distributed.sharded_selection``), and the statistics are reduced from per-shard sums and
fixed-bin histograms. Only the selection itself (indices, labels, entropies) is gathered, since
every process trains on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from accelerate import Accelerator
from torch.utils.data import Dataset

from plabel.config import RunConfig
from plabel.data.splits import UNREADABLE
from plabel.distributed.collectives import gather_concat, max_across_processes, sum_across_processes
from plabel.distributed.sharded_selection import all_gather_selected, select_pseudo_labels_sharded
from plabel.method.scores import ranking_scores
from plabel.method.selection import Selection
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

    @staticmethod
    def for_round(cfg: RunConfig, round_index: int, num_classes: int, previous: Optional[Selection]) -> "SelectionRequest":
        return SelectionRequest(
            round_index, cfg.pseudo.percent_for_round(round_index), num_classes, cfg.pseudo.class_balanced,
            cfg.pseudo.score, cfg.seed, previous if cfg.pseudo.accumulate else None,
        )


def select_for_round(
    accelerator: Accelerator,
    model: torch.nn.Module,
    pool: Dataset,
    pool_labels: torch.Tensor,
    request: SelectionRequest,
    plan: ScorePlan = ScorePlan(),
) -> RoundSelection:
    """Score the pool and pick this round's pseudo-labels, identically on every process.

    ``pool_labels`` are the pool's true labels, used only for precision and diagnostics.
    Statistics are always reported on entropy, whatever ranking picks the samples.
    """
    r = request
    pool_size = len(pool)  # type: ignore[arg-type]
    index, columns = score_shard(accelerator, model, pool, plan)
    fault_point(f"scored:{r.round_index}", accelerator)
    start, stop = (int(index[0]), int(index[-1]) + 1) if index.numel() else (0, 0)
    previous_local = None
    if r.previous is not None:
        mine = (r.previous.indices >= start) & (r.previous.indices < stop)
        previous_local = (r.previous.indices[mine], r.previous.labels[mine])
    entropy = columns["entropy"]
    ranking = ranking_scores(columns, index, r.score, r.seed, r.round_index)
    local_idx, local_labels = select_pseudo_labels_sharded(
        accelerator, index, ranking, columns["prediction"], pool_size=pool_size, percent=r.percent,
        num_classes=r.num_classes, class_balanced=r.class_balanced, previous_local=previous_local,
    )
    selection = all_gather_selected(accelerator, local_idx, local_labels)
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
                float((~finite & ~unreadable).sum()), float(unreadable.sum()),
                float(entropy[chosen & finite].double().sum()), float((chosen & finite).sum()),
                float(entropy[~chosen & finite].double().sum()), float((~chosen & finite).sum()),
                float((columns["prediction"] == columns["label"]).sum()),
            ],
            dtype=torch.float64,
        ),
    )
    nonfinite, unreadable_count, sel_sum, sel_n, rest_sum, rest_n, pool_correct = totals.tolist()
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
    metrics: dict[str, float] = {
        "select/num_selected": float(n),
        "select/fraction_of_pool": n / max(1, pool_size),
        "select/nonfinite_scores": nonfinite,
        "select/unreadable": unreadable_count,
        "select/pseudo_label_precision": (
            float((selection.labels == pool_labels[selection.indices]).double().mean()) if n else math.nan
        ),
        "select/entropy_selected_mean": sel_sum / sel_n if sel_n else math.nan,
        "select/entropy_selected_max": selected_max if sel_n else math.nan,
        "select/entropy_rest_mean": rest_sum / rest_n if rest_n else math.nan,
        "select/pool_prediction_accuracy": pool_correct / max(1, pool_size),
        "select/top_k_percent": r.percent,
    }
    class_counts = torch.bincount(selection.labels, minlength=r.num_classes)
    for c in range(r.num_classes):
        metrics[f"select/class_{c}"] = float(class_counts[c])
    unreadable_positions = gather_concat(accelerator, index[unreadable]) if unreadable_count else index[:0]
    return RoundSelection(
        selection, selected_entropy, metrics, edges, {name: hists[i] for i, name in enumerate(HISTOGRAMS)},
        unreadable_positions,
    )
