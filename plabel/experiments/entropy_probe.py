"""The entropy report's pieces that need no process or config: the probe inputs (validation
images followed by noise), where the noise lands in the entropy order, and the two figures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import Dataset

from plabel.data.splits import IndexedImages

NOISE_KINDS = ("gaussian", "uniform", "shuffled")
VALIDATION, NOISE = 0, 1  # source labels, as in the article: 0 = validation image, 1 = noise
LOWEST_FRACTION = 0.10  # the article's candidate set: the lowest-entropy 10% of all samples


# ---------------------------------------------------------------------------------------------
# Inputs: validation images followed by noise, in one dataset so one scoring pass serves both


def _noise_generator(seed: int, position: int) -> torch.Generator:
    # One generator per item: noise item j is a function of (seed, j) alone, so loader order,
    # workers and process count cannot change it.
    return torch.Generator().manual_seed((seed * 1_000_003 + position) % (2**63 - 1))


class ValidationAndNoise(Dataset):
    """Items 0..n-1: the validation images; items n..2n-1: one noise input each.

    Yields ``(x, source, position)`` with source 0 (validation) or 1 (noise), so
    :func:`plabel.trainer.scoring_pass.score_dataset` returns the source as its ``label`` column. Noise item
    n + j is derived from validation image j only for ``shuffled``.
    """

    def __init__(self, validation: IndexedImages, noise: str, seed: int) -> None:
        if noise not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {noise!r}")
        self.validation = validation
        self.noise = noise
        self.seed = seed
        self.n = len(validation)
        self.shape = tuple(validation[0][0].shape)  # the model's input: where gaussian noise is drawn
        self.pixel_shape = (validation.source.channels, *validation.source.image_size)  # a source image

    def __len__(self) -> int:
        return 2 * self.n

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, int]:
        if position < self.n:
            return self.validation[position][0], VALIDATION, position
        return self.noise_input(position - self.n), NOISE, position

    def noise_input(self, j: int) -> torch.Tensor:
        """Noise input j, (C, H, W) float32 in the model's normalised input space."""
        generator = _noise_generator(self.seed, j)
        if self.noise == "gaussian":
            return torch.randn(self.shape, generator=generator)
        if self.noise == "uniform":
            # uint8 pixels through the eval transform: uniform in [0, 1], normalised like a real image.
            pixels = torch.randint(0, 256, self.pixel_shape, generator=generator, dtype=torch.uint8)
        else:
            image = self.validation.source.image(int(self.validation.source_indices[j]))  # uint8 (C, H, W)
            c, h, w = image.shape
            order = torch.randperm(h * w, generator=generator)
            pixels = image.reshape(c, h * w)[:, order].reshape(c, h, w)  # channels of a pixel stay together
        return self.validation.transform(pixels)


# ---------------------------------------------------------------------------------------------
# The numbers: pure functions of (entropy, source)


def entropy_order(entropy: torch.Tensor) -> torch.Tensor:
    """Sample positions by ascending entropy; ties keep position order; NaN (bad logits) last."""
    return torch.sort(entropy, stable=True).indices


def summarize_entropy(entropy: torch.Tensor, source: torch.Tensor) -> dict[str, Any]:
    """Where the noise lands when all samples are sorted by entropy, lowest first.

    ``entropy`` and ``source`` are (n_samples,); source is 0 (validation) or 1 (noise). The
    lowest 10% holds floor(0.1 * n_samples) samples, at least 1 (the article: 12 of 128).
    """
    order = entropy_order(entropy)
    sorted_source = source[order]
    noise_ranks = torch.nonzero(sorted_source == NOISE).flatten()
    first_noise = int(noise_ranks[0]) if noise_ranks.numel() else None
    lowest = max(1, int(LOWEST_FRACTION * entropy.numel()))
    noise_in_lowest = int((sorted_source[:lowest] == NOISE).sum())

    def mean(values: torch.Tensor) -> Optional[float]:
        return float(values.double().mean()) if values.numel() else None

    return {
        "first_noise_rank_0based": first_noise,
        "first_noise_rank_1based": None if first_noise is None else first_noise + 1,
        "lowest_10_percent": {
            "count": lowest,
            "noise_count": noise_in_lowest,
            "noise_share": noise_in_lowest / lowest,
        },
        "mean_entropy_bits": {"validation": mean(entropy[source == VALIDATION]), "noise": mean(entropy[source == NOISE])},
        "n": {"validation": int((source == VALIDATION).sum()), "noise": int((source == NOISE).sum())},
    }


def format_sorted(entropy: torch.Tensor, source: torch.Tensor) -> str:
    """The article's listing: ``source : entropy`` per line, lowest entropy first, full float repr."""
    order = entropy_order(entropy)
    return "".join(f"{int(s)} : {float(e)!r}\n" for s, e in zip(source[order].tolist(), entropy[order].tolist()))


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib's object API renders with Agg and leaves pyplot's global state alone)


def plot_entropy_per_sample(path: Path, entropy: torch.Tensor, source: torch.Tensor, noise: str) -> None:
    """One bar panel per source, sample order on x; y scales differ, as in the article."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, code, title, colour in (
        (axes[0], VALIDATION, "validation (test images)", "tab:blue"),
        (axes[1], NOISE, f"noise: {noise}", "tab:orange"),
    ):
        values = entropy[source == code].numpy()
        ax.bar(range(len(values)), values, color=colour, width=0.9)
        ax.set_title(f"{title}, n={len(values)}")
        ax.set_xlabel("sample")
        ax.set_ylabel("entropy (bits)")
    fig.suptitle("Entropy of the round-0 model's prediction per sample (note the different y scales)")
    fig.savefig(path, dpi=110)


def plot_entropy_histogram(path: Path, entropy: torch.Tensor, source: torch.Tensor, noise: str, threshold: float) -> None:
    """Both distributions on one log-x histogram; ``threshold`` marks the top of the lowest 10%."""
    import numpy as np
    from matplotlib.figure import Figure

    values = entropy.double().numpy()
    finite = np.isfinite(values)
    positive = values[finite & (values > 0)]
    # Entropies span ~1e-15..log2(classes); an exact 0 (all other probabilities underflowed)
    # has no place on a log axis, so it is drawn at the floor and counted in the legend.
    floor = positive.min() / 2 if positive.size else 1e-16
    top = max(float(values[finite].max()) if finite.any() else 1.0, floor * 10)
    bins = np.logspace(np.log10(floor), np.log10(top * 1.05), 40)
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    for code, label, colour in ((VALIDATION, "validation", "tab:blue"), (NOISE, f"noise: {noise}", "tab:orange")):
        v = values[(source.numpy() == code) & finite]
        zeros = int((v <= 0).sum())
        extra = f", {zeros} exactly 0 (drawn at {floor:.0e})" if zeros else ""
        ax.hist(np.clip(v, floor, None), bins=bins, alpha=0.6, color=colour, label=f"{label} (n={len(v)}{extra})")
    if math.isfinite(threshold):
        ax.axvline(max(threshold, floor), color="black", linestyle="--", linewidth=1, label="top of the lowest 10%")
    ax.set_xscale("log")
    ax.set_xlabel("entropy (bits, log scale)")
    ax.set_ylabel("samples")
    ax.set_title("Entropy: validation images vs noise")
    ax.legend()
    fig.savefig(path, dpi=110)
