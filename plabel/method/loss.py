"""The combined objective: CE on labeled + alpha * CE on pseudo-labeled samples."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def combined_loss(
    logits_labeled: torch.Tensor,
    targets_labeled: torch.Tensor,
    logits_pseudo: torch.Tensor | None,
    targets_pseudo: torch.Tensor | None,
    alpha: float,
    share_labeled: float = 1.0,
    share_pseudo: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (total, labeled term, pseudo term); each term is a mean over its own batch.

    The terms are computed separately so alpha weighs the whole pseudo batch against the whole
    labeled batch whatever their sizes. With no pseudo batch the pseudo term is 0. When these
    batches are one process's part of a global batch, ``share_*`` is the part's size over the
    global batch's, and each term is this part's share of the global mean (summing the shares of
    all processes gives the global batch's loss).
    """
    loss_labeled = _weighted(F.cross_entropy(logits_labeled.float(), targets_labeled), share_labeled)
    if logits_pseudo is None or targets_pseudo is None or logits_pseudo.shape[0] == 0:
        loss_pseudo = torch.zeros((), device=logits_labeled.device)
    else:
        loss_pseudo = _weighted(F.cross_entropy(logits_pseudo.float(), targets_pseudo), share_pseudo)
    return loss_labeled + alpha * loss_pseudo, loss_labeled, loss_pseudo


def _weighted(mean: torch.Tensor, share: float) -> torch.Tensor:
    return mean if share == 1.0 else mean * share
