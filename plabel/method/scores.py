"""Per-sample scores computed from logits, and the rankings selection uses. Pure tensor functions."""

from __future__ import annotations

import math

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


def energy(logits: torch.Tensor) -> torch.Tensor:
    """Free energy -logsumexp(logits) per row, (batch,): lower = the network responds more strongly
    (Liu et al. 2020); unlike the softmax it keeps the logits' scale."""
    return -torch.logsumexp(logits.float(), dim=1)


def nearest_neighbours(features: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of ``features`` (batch, d): the cosine similarity to its most similar row of
    ``reference`` (n, d), and the Euclidean distance to its nearest row; both (batch,).

    The similarity is the KNN out-of-distribution score (Sun et al. 2022) with k = 1; it only sees
    directions. The distance also sees lengths: an input unlike any digit can reach the head with
    features several times longer than any real sample's yet pointing like one class's (measured
    here: Gaussian noise through BatchNorm, cosine 0.93 to a labeled digit, distance 5x the
    labeled set's own).
    """
    x, ref = features.float().flatten(1), reference.float().to(features.device)
    unit = torch.nn.functional.normalize
    similarity = (unit(x, dim=1) @ unit(ref, dim=1).T).max(dim=1).values
    return similarity, torch.cdist(x, ref).min(dim=1).values


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, steps: int = 100) -> float:
    """The temperature T minimising the cross-entropy of softmax(logits / T) (Guo et al. 2017),
    kept in [0.05, 20]. ``logits`` (n, classes), ``labels`` (n,)."""
    log_t = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=steps)
    logits, labels = logits.detach().float(), labels.long()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    t = float(log_t.detach().exp().clamp(0.05, 20.0))
    if not math.isfinite(t):
        # LBFGS has no line search here and can step to NaN on a nearly flat loss (a teacher at
        # chance: "confidence temperature nan" was printed and every estimate dropped). The loss is
        # convex in 1/T, so a bounded search over log T finds the same minimum without stepping out.
        t = _bounded_temperature(logits, labels)
    return t


def _bounded_temperature(logits: torch.Tensor, labels: torch.Tensor, low: float = 0.05, high: float = 20.0) -> float:
    """Golden-section search of the cross-entropy over log T in [log low, log high]."""

    def loss(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(logits / math.exp(log_t), labels))

    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    for _ in range(60):  # the bracket shrinks by 0.618 a step: 60 steps reach ~1e-12 in log T
        if loss(c) <= loss(d):
            b, d = d, c
            c = b - ratio * (b - a)
        else:
            a, c = c, d
            d = a + ratio * (b - a)
    return math.exp((a + b) / 2)


def margin(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 softmax probability per row, (batch,)."""
    top2 = torch.softmax(logits.float(), dim=1).topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


_MASK64 = (1 << 64) - 1


def _signed64(value: int) -> int:
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _logical_shift(x: torch.Tensor, bits: int) -> torch.Tensor:
    # torch's >> on int64 is arithmetic (sign-extending); mask to get splitmix64's logical shift.
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def random_scores(indices: torch.Tensor, seed: int, salt: int) -> torch.Tensor:
    """Uniform [0, 1) floats that depend only on (pool index, seed, salt): splitmix64 of the index.

    A random selection baseline ranks by these, so "random" picks the same samples whatever the
    sharding or world size, with no pool-sized random draw on any process.
    """
    z = indices.long() + _signed64(seed * 0x9E3779B97F4A7C15 + salt * 0xD1B54A32D192ED03)
    z = (z ^ _logical_shift(z, 30)) * _signed64(0xBF58476D1CE4E5B9)
    z = (z ^ _logical_shift(z, 27)) * _signed64(0x94D049BB133111EB)
    z = z ^ _logical_shift(z, 31)
    return _logical_shift(z, 40).float() / float(1 << 24)


def ranking_scores(columns: dict[str, torch.Tensor], indices: torch.Tensor, kind: str, seed: int, round_index: int) -> torch.Tensor:
    """Lower = picked first. entropy and energy; max_probability and margin negated (higher = surer);
    disagreement (several views) before entropy;
    random: the baseline with the same counts. NaN/Inf entropies stay non-finite so they are
    never selected under any ranking."""
    if kind == "entropy":
        return columns["entropy"]
    if kind == "energy":
        scores = columns["energy"]
    elif kind == "max_probability":
        scores = -columns["max_probability"]
    elif kind == "margin":
        scores = -columns["margin"]
    elif kind == "disagreement":
        # Views that disagree first (an integer count), entropy within a count: entropy is at most
        # log2(classes) < 32 bits, so count * 32 + entropy orders by count, then by entropy.
        scores = columns["disagreement"] * 32.0 + columns["entropy"]
    elif kind == "random":
        scores = random_scores(indices, seed, round_index)
    else:
        raise ValueError(f"unknown selection score {kind!r}")
    return torch.where(torch.isfinite(columns["entropy"]), scores, torch.full_like(scores, float("nan")))
