"""The REFERENCE selection: which pool samples get pseudo-labels, as pure tensor functions on
pool-sized arrays.

This is the definition a run's selection must match, not the code a run uses: a run never
gathers the pool, it calls :func:`plabel.distributed.sharded_selection.select_pseudo_labels_sharded`,
which the tests and ``plabel.bench.select`` check bit for bit against :func:`select_pseudo_labels`.
Every function here sees the scores of the *whole* pool, indexed by pool position, so the
result does not depend on how the pool was sharded. Ties are broken by pool index (lower
first), and non-finite scores are never selected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch


def num_to_select(pool_size: int, percent: float) -> int:
    """floor(pool_size * percent / 100); the tiny slack absorbs float error (20% of 3900 = 780)."""
    return min(pool_size, int(pool_size * percent / 100.0 + 1e-9))


def select_lowest(scores: torch.Tensor, k: int, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of the ``k`` lowest finite scores among ``eligible`` (bool mask), ties by index.

    Returns the chosen indices in ascending index order. Fewer than ``k`` come back when fewer
    eligible finite scores exist.
    """
    finite = torch.isfinite(scores)
    mask = finite if eligible is None else finite & eligible
    candidates = torch.nonzero(mask, as_tuple=False).flatten()  # ascending index order
    if k <= 0 or candidates.numel() == 0:
        return candidates[:0]
    # A stable sort keeps equal scores in candidate (= index) order: the tie-break by index.
    order = torch.sort(scores[candidates], stable=True).indices
    return torch.sort(candidates[order[:k]]).values


@dataclass(frozen=True)
class Selection:
    """Pseudo-labeled subset of the pool: ascending pool indices and their labels; with soft
    pseudo-labels also the probabilities the pseudo term trains on (``labels`` is their argmax)."""

    indices: torch.Tensor  # (n_selected,) int64
    labels: torch.Tensor  # (n_selected,) int64
    targets: Optional[torch.Tensor] = None  # (n_selected, num_classes) float32, rows sum to 1

    @staticmethod
    def empty() -> "Selection":
        return Selection(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))

    def __len__(self) -> int:
        return int(self.indices.numel())


def select_pseudo_labels(
    scores: torch.Tensor,
    predictions: torch.Tensor,
    percent: float,
    num_classes: int,
    class_balanced: bool = False,
    previous: Selection | None = None,
    of_eligible: bool = False,
) -> Selection:
    """Lowest-score ``percent`` of the pool with argmax labels.

    ``scores`` and ``predictions`` are (pool_size,). Global mode picks floor(N*k/100) samples.
    Class-balanced mode picks floor(n_c*k/100) in each predicted class c, so a class the model
    is unsure of is not crowded out. With ``previous`` (accumulating rounds), earlier picks keep
    their first labels and count toward the targets; only the shortfall is filled from the rest.
    ``of_eligible``: N (and n_c) count only the samples that can be picked (a finite score) or
    were picked before: k% of what a junk guard lets through, not of the whole pool.
    """
    pool_size, device = scores.numel(), scores.device
    labels_now = predictions.clone()
    # Masks live where the scores do (a GPU reference run must not mix devices).
    frozen = torch.zeros(pool_size, dtype=torch.bool, device=device)
    before = previous.indices.to(device) if previous is not None and len(previous) else None
    if previous is not None and before is not None:
        frozen[before] = True
        labels_now[before] = previous.labels.to(device)
    counted = (torch.isfinite(scores) | frozen) if of_eligible else torch.ones(pool_size, dtype=torch.bool, device=device)
    chosen = [before] if before is not None else []
    if class_balanced:
        for c in range(num_classes):
            in_class = labels_now == c
            target = num_to_select(int((in_class & counted).sum()), percent)
            shortfall = target - int((frozen & in_class).sum())
            if shortfall > 0:
                chosen.append(select_lowest(scores, shortfall, in_class & ~frozen))
    else:
        shortfall = num_to_select(int(counted.sum()), percent) - int(frozen.sum())
        if shortfall > 0:
            chosen.append(select_lowest(scores, shortfall, ~frozen))
    if not chosen:
        return Selection.empty()
    indices = torch.sort(torch.cat(chosen)).values
    return Selection(indices, labels_now[indices])


def sharpened(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """Rows ``p^(1/T) / sum(p^(1/T))`` (MixMatch's sharpening): T = 1 keeps them, T < 1 moves
    them toward their argmax. Computed as a softmax of ``log(p) / T`` so a small T cannot
    underflow every entry of a row to 0."""
    probabilities = probabilities.float()
    if temperature == 1.0:
        return probabilities / probabilities.sum(dim=1, keepdim=True)
    return torch.softmax(probabilities.clamp_min(torch.finfo(torch.float32).tiny).log() / temperature, dim=1)


def agreement_with(current: Selection, last: Selection, pool_size: int) -> tuple[float, float]:
    """(overlap, same label): the share of ``current``'s samples that ``last`` selected too, and of
    those the share given the same pseudo-label. NaN when there is nothing to compare.

    Measurable without any pool label: a selection that keeps flipping labels between rounds is
    one the model is not sure of."""
    if not len(current) or not len(last):
        return math.nan, math.nan
    last_labels = torch.full((pool_size,), -1, dtype=torch.long)
    last_labels[last.indices] = last.labels
    before = last_labels[current.indices]
    both = before >= 0
    overlap = float(both.double().mean())
    same = float((before[both] == current.labels[both]).double().mean()) if bool(both.any()) else math.nan
    return overlap, same
