"""The ``pseudo`` section: how each round scores the pool, selects and trains on pseudo-labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union

from plabel.config.errors import ConfigError
from plabel.config.fields import SECTION, option, require_non_negative, require_positive


@dataclass
class PseudoConfig:
    __pydantic_config__ = SECTION

    rounds: int = option(4, "pseudo-labeling rounds after round 0 (the supervised baseline)")
    top_k_percent: Union[float, list[float]] = option(
        [60.0, 80.0, 90.0, 95.0],
        "percent of the whole pool selected per round (lowest entropy): one number, or one per round "
        "(since plabel 0.3: 60/80/90/95, all but the least certain; 0.2: 20/40/60/80)",
    )
    score: Literal["entropy", "max_probability", "margin", "energy", "disagreement", "random"] = option(
        "entropy",
        "what ranks the pool: entropy (lowest first), max_probability or margin (highest first), energy "
        "(-logsumexp of the logits, lowest first), disagreement (with score_views > 1: the number of views whose "
        "argmax differs from the averaged prediction, lowest first, ties by entropy; UPS-like), or random (the "
        "baseline: same counts, random samples). Entropy beat random picks only on weak teachers (MNIST at 1 and 2 "
        "labels a class, 26-class letters at 10; textures at 3 leaned so) and was level elsewhere: docs/results.md, "
        "'When the selection pays'",
    )
    score_views: int = option(
        1,
        "views of each pool image the teacher averages (softmax probabilities) before scoring and labelling: 1 = "
        "the clean image; K > 1 = K passes (K times the scoring cost, which the run prints)",
    )
    score_noise: Literal["shift", "dropout"] = option(
        "shift",
        "what differs between the views: shift = the clean image and fixed one-pixel shifts (test-time "
        "augmentation, no randomness); dropout = MC dropout, K passes with dropout on, seeded by the pool position "
        "(so the same on any number of processes)",
    )
    calibrate: bool = option(
        False,
        "before ranking, fit a temperature on the labeled set (its augmented views: the model has memorised the "
        "clean ones) and score softmax(logits / T); it changes entropy's order, not max_probability's",
    )
    teacher: Literal["model", "ema"] = option(
        "model", "what scores the pool: the model, or an exponential moving average of its weights (Mean Teacher)"
    )
    ema_decay: float = option(0.99, "teacher ema: weight of the average at each optimizer step (0.99: about the last 100 steps)")
    guard: Literal["none", "knn"] = option(
        "none",
        "a junk guard that does not trust the softmax: knn = a pool sample is never selected when its features "
        "(the classifier's input) are less similar in direction (cosine), or farther (Euclidean), from the nearest "
        "labeled sample than all but guard_quantile of the labeled samples are from their own nearest one "
        "(KNN out-of-distribution score); k% is then taken of what it lets through",
    )
    guard_quantile: float = option(0.05, "knn guard: the share of the labeled samples' own nearest-neighbour similarities and distances beyond the thresholds")
    augment: Literal["same", "light", "affine", "strong", "elastic", "randaugment", "trivialaugment"] = option(
        "strong",
        "augmentation of the pseudo-labeled batch: same as the labeled batch, or a data.augment level (FixMatch / "
        "Noisy Student: the pseudo-label comes from the clean view, the loss from a strongly augmented one; "
        "since plabel 0.3 strong, 0.2: same)",
    )
    accumulate: bool = option(
        False,
        "keep earlier selections (with their first pseudo-labels) and fill up to k% from the rest; "
        "false re-selects from the whole pool each round",
    )
    reinit_model: bool = option(False, "re-initialise the model at the start of each round instead of continuing")
    soft_labels: bool = option(
        False,
        "train the pseudo term on the teacher's probabilities (its averaged views, sharpened by soft_temperature) "
        "instead of their argmax; the selection and the written pseudo-labels stay the argmax",
    )
    soft_temperature: float = option(
        1.0, "soft_labels: targets p^(1/T), renormalised; T < 1 sharpens (T -> 0 is the argmax), 1 keeps the teacher's"
    )
    class_balanced: bool = option(True, "select the same fraction of each predicted class instead of one global k%")
    min_precision: Optional[float] = option(
        None,
        "adaptive k: take fewer than the round's k% when the selection's estimated precision (calibrated on the "
        "validation images) would fall below this, down to the largest k whose estimate reaches it; None = always "
        "the round's k%. Needs validation images (data.val_per_class)",
    )
    eps: float = option(1e-10, "added inside log2 so a zero probability gives a finite entropy")
    alpha_schedule: Literal["linear", "lee", "constant"] = option(
        "constant",
        "weight of the pseudo-label loss over a round's epochs: constant = alpha_max from the first step (since plabel "
        "0.3: a round starts from a trained model); linear (0.2's default) = 0 in the first epoch up to alpha_max by "
        "alpha_ramp_epochs; lee = Lee (2013) T1/T2/alpha_f",
    )
    alpha_max: float = option(1.0, "final weight of the pseudo-label loss (alpha_f in Lee 2013)")
    alpha_ramp_epochs: int = option(5, "linear: epoch at which alpha reaches alpha_max")
    lee_t1: int = option(1, "lee: alpha is 0 before this epoch")
    lee_t2: int = option(6, "lee: alpha reaches alpha_max at this epoch")

    def percent_for_round(self, round_index: int) -> float:
        """k for pseudo-label round ``round_index`` (1-based)."""
        if isinstance(self.top_k_percent, list):
            return float(self.top_k_percent[round_index - 1])
        return float(self.top_k_percent)

    def validate(self) -> None:
        require_non_negative("pseudo.rounds", self.rounds)
        require_positive("pseudo.score_views", self.score_views)
        if not self.soft_temperature > 0:
            raise ConfigError(f"pseudo.soft_temperature: must be > 0, got {self.soft_temperature}")
        if self.soft_labels and self.accumulate:
            raise ConfigError(
                "pseudo.soft_labels: not with pseudo.accumulate (earlier picks keep their first hard labels); turn one off"
            )
        if self.score_noise == "shift" and self.score_views > 13:
            raise ConfigError(f"pseudo.score_views: shift has 13 views (the clean image and 12 shifts), got {self.score_views}")
        if self.score == "disagreement" and self.score_views < 2:
            raise ConfigError("pseudo.score: disagreement needs pseudo.score_views >= 2 (views to disagree)")
        ks = self.top_k_percent if isinstance(self.top_k_percent, list) else [self.top_k_percent]
        # rounds 0 is the supervised baseline alone: no k is used, so the default list is no error.
        if isinstance(self.top_k_percent, list) and len(ks) != self.rounds and self.rounds > 0:
            # The fix spelled out: on a command line a list is one quoted word (the schedule cut or
            # its last value repeated, only to show the form).
            example = ", ".join(f"{k:g}" for k in (ks + ks[-1:] * self.rounds)[: self.rounds])
            raise ConfigError(
                f"pseudo.top_k_percent: has {len(ks)} values ({', '.join(f'{k:g}' for k in ks)}) but pseudo.rounds is "
                f"{self.rounds}; give one per round (--pseudo.top_k_percent '[{example}]') or a single number"
            )
        if self.min_precision is not None and not 0 < self.min_precision < 1:
            raise ConfigError(f"pseudo.min_precision: must be in (0, 1), got {self.min_precision}")
        for k in ks:
            if not 0 < float(k) <= 100:
                raise ConfigError(f"pseudo.top_k_percent: {k} is outside (0, 100]")
        if not 0 < self.eps < 1e-3:
            raise ConfigError(f"pseudo.eps: must be in (0, 1e-3), got {self.eps}")
        require_non_negative("pseudo.alpha_max", self.alpha_max)
        if not 0 < self.ema_decay < 1:
            raise ConfigError(f"pseudo.ema_decay: must be in (0, 1), got {self.ema_decay}")
        if not 0 <= self.guard_quantile < 1:
            raise ConfigError(f"pseudo.guard_quantile: must be in [0, 1), got {self.guard_quantile}")
        require_non_negative("pseudo.alpha_ramp_epochs", self.alpha_ramp_epochs)
        require_non_negative("pseudo.lee_t1", self.lee_t1)
        if self.alpha_schedule == "lee" and self.lee_t2 <= self.lee_t1:
            raise ConfigError(f"pseudo.lee_t2: must be greater than pseudo.lee_t1 ({self.lee_t1}), got {self.lee_t2}")
