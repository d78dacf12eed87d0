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
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (total, labeled term, pseudo term); each term is a mean over its own batch.

    The terms are computed separately so alpha weighs the whole pseudo batch against the whole
    labeled batch whatever their sizes. With no pseudo batch the pseudo term is 0. When these
    batches are one process's part of a global batch, ``share_*`` is the part's size over the
    global batch's, and each term is this part's share of the global mean (summing the shares of
    all processes gives the global batch's loss). ``label_smoothing`` smooths both terms' targets.
    Targets are class indices, or (batch, classes) probabilities (soft pseudo-labels).
    """
    smooth = label_smoothing
    loss_labeled = _weighted(F.cross_entropy(_at_least_fp32(logits_labeled), targets_labeled, label_smoothing=smooth), share_labeled)
    if logits_pseudo is None or targets_pseudo is None or logits_pseudo.shape[0] == 0:
        loss_pseudo = torch.zeros((), device=logits_labeled.device)
    else:
        logits_pseudo = _at_least_fp32(logits_pseudo)
        loss_pseudo = _weighted(F.cross_entropy(logits_pseudo, _like(targets_pseudo, logits_pseudo), label_smoothing=smooth), share_pseudo)
    return loss_labeled + alpha * loss_pseudo, loss_labeled, loss_pseudo


def _at_least_fp32(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are upcast for the loss; float64 ones (the tests' float64 checks) stay."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _like(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Soft targets (probabilities) in the logits' dtype; class indices as they are."""
    return targets.to(logits.dtype) if targets.is_floating_point() else targets


def _weighted(mean: torch.Tensor, share: float) -> torch.Tensor:
    return mean if share == 1.0 else mean * share


def mixed_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    partner_targets: torch.Tensor,
    is_pseudo: torch.Tensor,
    partner_is_pseudo: torch.Tensor,
    lam: float,
    alpha: float,
    n_labeled: int,
    n_pseudo: int,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`combined_loss` for a mixup batch: row i's input was ``lam * x_i + (1 - lam) * x_partner(i)``.

    Each row's loss is ``lam`` times its own target's cross-entropy, counted in its own term
    (labeled or pseudo), plus ``1 - lam`` times its partner's, counted in the partner's term;
    each term is divided by its global batch size (``n_labeled``, ``n_pseudo``), so the rows of
    one process give that process's share of the global batch's loss, and ``lam`` = 1 gives
    :func:`combined_loss` exactly. Returns (total, labeled term, pseudo term).
    """
    logits = _at_least_fp32(logits)
    own = F.cross_entropy(logits, _like(targets, logits), reduction="none", label_smoothing=label_smoothing)
    other = F.cross_entropy(logits, _like(partner_targets, logits), reduction="none", label_smoothing=label_smoothing)

    def term(pseudo: bool, n: int) -> torch.Tensor:
        if n == 0:
            return torch.zeros((), device=logits.device)
        mine, theirs = (is_pseudo == pseudo).float(), (partner_is_pseudo == pseudo).float()
        return (lam * (own * mine).sum() + (1.0 - lam) * (other * theirs).sum()) / n

    loss_labeled, loss_pseudo = term(False, n_labeled), term(True, n_pseudo)
    return loss_labeled + alpha * loss_pseudo, loss_labeled, loss_pseudo
