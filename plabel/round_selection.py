"""One round's pseudo-labels: score the pool shard by shard, select globally, report.

Memory per process is O(shard) and communication does not grow with the pool: scores stay on
the process that computed them, the exact global selection comes from the sharded radix
select (``plabel.distributed_select``), and the statistics are reduced from per-shard sums and
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

from plabel.distributed import gather_concat, max_across_processes, sum_across_processes
from plabel.distributed_select import all_gather_selected, select_pseudo_labels_sharded
from plabel.faults import fault_point
from plabel.loop import LoaderOptions, score_shard
from plabel.selection import Selection, ranking_scores

HISTOGRAM_BINS = 40
HISTOGRAMS = ("selected", "rest", "correct", "wrong")


@dataclass
class RoundSelection:
    selection: Selection
    selected_entropy: torch.Tensor  # (n_selected,) aligned with selection.indices
    metrics: dict[str, float]
    histogram_edges: torch.Tensor  # (HISTOGRAM_BINS + 1,) entropy bin edges in bits
    histograms: dict[str, torch.Tensor]  # name -> (HISTOGRAM_BINS,) counts over the whole pool


def select_for_round(
    accelerator: Accelerator,
    model: torch.nn.Module,
    pool: Dataset,
    pool_labels: torch.Tensor,
    percent: float,
    num_classes: int,
    class_balanced: bool,
    previous: Optional[Selection],
    round_index: int,
    batch_size: int,
    eps: float,
    options: LoaderOptions = LoaderOptions(),
    score: str = "entropy",
    seed: int = 0,
) -> RoundSelection:
    """Score the pool and pick this round's pseudo-labels, identically on every process.

    ``pool_labels`` are the pool's true labels, used only for precision and diagnostics.
    ``previous`` (accumulating rounds) keeps earlier picks with their labels. ``score`` picks
    the ranking (see :func:`plabel.selection.ranking_scores`); statistics are always reported
    on entropy.
    """
    pool_size = len(pool)  # type: ignore[arg-type]
    index, columns = score_shard(accelerator, model, pool, batch_size, eps, options)
    fault_point(f"scored:{round_index}", accelerator)
    start, stop = (int(index[0]), int(index[-1]) + 1) if index.numel() else (0, 0)
    previous_local = None
    if previous is not None:
        mine = (previous.indices >= start) & (previous.indices < stop)
        previous_local = (previous.indices[mine], previous.labels[mine])
    entropy = columns["entropy"]
    ranking = ranking_scores(columns, index, score, seed, round_index)
    local_idx, local_labels = select_pseudo_labels_sharded(
        accelerator, index, ranking, columns["prediction"], pool_size, percent, num_classes,
        class_balanced, previous_local,
    )
    selection = all_gather_selected(accelerator, local_idx, local_labels)
    selected_entropy = gather_concat(accelerator, entropy[local_idx - start])

    chosen = torch.zeros(index.numel(), dtype=torch.bool)
    chosen[local_idx - start] = True
    correct = torch.zeros(index.numel(), dtype=torch.bool)
    correct[local_idx - start] = local_labels == columns["label"][local_idx - start]
    finite = torch.isfinite(entropy)
    totals = sum_across_processes(
        accelerator,
        torch.tensor(
            [
                float((~finite).sum()),
                float(entropy[chosen & finite].double().sum()), float((chosen & finite).sum()),
                float(entropy[~chosen & finite].double().sum()), float((~chosen & finite).sum()),
                float((columns["prediction"] == columns["label"]).sum()),
            ],
            dtype=torch.float64,
        ),
    )
    nonfinite, sel_sum, sel_n, rest_sum, rest_n, pool_correct = totals.tolist()
    local_max = entropy[chosen & finite].max() if bool((chosen & finite).any()) else torch.tensor(-math.inf)
    selected_max = float(max_across_processes(accelerator, local_max.reshape(1).float())[0])

    # Fixed bins over the possible range [0, log2 C] so per-shard counts add up exactly.
    edges = torch.linspace(0.0, math.log2(num_classes), HISTOGRAM_BINS + 1)
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
        "select/pseudo_label_precision": (
            float((selection.labels == pool_labels[selection.indices]).double().mean()) if n else math.nan
        ),
        "select/entropy_selected_mean": sel_sum / sel_n if sel_n else math.nan,
        "select/entropy_selected_max": selected_max if sel_n else math.nan,
        "select/entropy_rest_mean": rest_sum / rest_n if rest_n else math.nan,
        "select/pool_prediction_accuracy": pool_correct / max(1, pool_size),
        "select/top_k_percent": percent,
    }
    class_counts = torch.bincount(selection.labels, minlength=num_classes)
    for c in range(num_classes):
        metrics[f"select/class_{c}"] = float(class_counts[c])
    return RoundSelection(
        selection, selected_entropy, metrics, edges, {name: hists[i] for i, name in enumerate(HISTOGRAMS)}
    )
