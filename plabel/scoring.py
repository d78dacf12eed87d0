"""Per-sample uncertainty scores computed from logits. Pure tensor functions."""

from __future__ import annotations

import torch


def entropy(logits: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Shannon entropy in bits of softmax(logits), one value per row.

    H = -sum_i p_i * log2(p_i + eps). ``logits`` is (batch, classes); the result is (batch,)
    float32. The eps guard keeps H finite when a probability underflows to 0 (extreme logits);
    computing in float32 keeps bf16/fp16 logits from collapsing small entropies to 0.
    Rows holding NaN/Inf logits give NaN, which selection treats as "never select".
    """
    probs = torch.softmax(logits.float(), dim=1)
    return -(probs * torch.log2(probs + eps)).sum(dim=1)


def max_probability(logits: torch.Tensor) -> torch.Tensor:
    """Largest softmax probability per row, (batch,)."""
    return torch.softmax(logits.float(), dim=1).max(dim=1).values


def margin(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 softmax probability per row, (batch,)."""
    top2 = torch.softmax(logits.float(), dim=1).topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]
