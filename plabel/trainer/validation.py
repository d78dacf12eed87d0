"""The held-out labeled images (``data.val_per_class``): what a run can know without test labels.

Three uses, one set: its accuracy after every round (did the round help?), the round whose
weights did best on it (``model_best.safetensors``), and the temperature that calibrates the
teacher's confidence (Guo et al. 2017), so the pool's selection gets a precision estimate that
needs no pool label: the mean calibrated top-class probability of the selected samples.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate import Accelerator
from torch.utils.data import Dataset

from plabel.distributed.collectives import gather_concat
from plabel.method.scores import fit_temperature
from plabel.models.state import save_weights
from plabel.trainer.scoring_pass import ScorePlan, accuracy, score_dataset, score_shard

BEST_FILE = "model_best.safetensors"


def validation_accuracy(accelerator: Accelerator, model: torch.nn.Module, data: Dataset, plan: ScorePlan, round_index: int) -> float:
    return accuracy(score_dataset(accelerator, model, data, dataclasses.replace(plan, label=f"round {round_index}: validating")))


def validation_probabilities(
    accelerator: Accelerator, model: torch.nn.Module, data: Dataset, plan: ScorePlan, num_classes: int, label: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities (n, classes) in float64, labels (n,)) of every validation image, in dataset
    order and the same on every process: shards are contiguous and in rank order, and each image is
    scored in the same batch whatever the number of processes."""
    plan = dataclasses.replace(plan, cache=None, stoppable=False, reference=None, probabilities=num_classes, label=label)
    _, columns = score_shard(accelerator, model, data, plan)
    return gather_concat(accelerator, columns["probabilities"]).double(), gather_concat(accelerator, columns["label"]).long()


def validation_scores(
    accelerator: Accelerator, model: torch.nn.Module, data: Dataset, plan: ScorePlan, num_classes: int, label: str
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy in nats) on the validation images, the same on every process."""
    probabilities, labels = validation_probabilities(accelerator, model, data, plan, num_classes, label)
    if not labels.numel():
        return math.nan, math.nan
    loss = float(-probabilities[torch.arange(labels.numel()), labels].clamp_min(1e-12).log().mean())
    return float((probabilities.argmax(dim=1) == labels).double().mean()), loss


def confidence_temperature(
    accelerator: Accelerator, scorer: torch.nn.Module, data: Dataset, plan: ScorePlan, num_classes: int
) -> float:
    """The temperature that fits the scorer's probabilities on the validation images, scored as the
    pool is (the same views), so ``softmax(logits / T)``'s top probability estimates how often
    the top class is right."""
    probabilities, labels = validation_probabilities(
        accelerator, scorer, data, plan, num_classes, plan.label.replace("scoring the pool", "calibrating on validation"))
    return fit_temperature(probabilities.clamp_min(1e-12).log().float(), labels)


@dataclasses.dataclass
class Best:
    """The best round so far by validation accuracy (ties: the later round, trained on more)."""

    round_index: Optional[int] = None
    val_accuracy: float = -math.inf

    def to_state(self) -> dict[str, Any]:
        return {"round_index": self.round_index, "val_accuracy": self.val_accuracy if self.round_index is not None else None}

    @staticmethod
    def from_state(state: dict[str, Any]) -> "Best":
        if not state or state.get("round_index") is None:
            return Best()
        return Best(int(state["round_index"]), float(state["val_accuracy"]))


def after_round(
    accelerator: Accelerator, model: torch.nn.Module, out_dir: Path, best: Best, round_index: int, val_accuracy: float,
    previous: Optional[float], n_val: int,
) -> tuple[Best, list[str]]:
    """Keep the round's weights when it is the best so far; the lines to print about it."""
    notes = []
    if previous is not None and val_accuracy < previous:
        spread = 196 / math.sqrt(max(1, n_val))  # a 95% binomial half-width at 50%, in points: the noise floor
        notes.append(f"note: round {round_index} lowered validation accuracy from {100 * previous:.2f}% to "
                     f"{100 * val_accuracy:.2f}% ({n_val} validation images: differences under ~{spread:.0f} points may be noise)")
    if val_accuracy >= best.val_accuracy:
        best = Best(round_index, val_accuracy)
        save_weights(accelerator, model, out_dir / BEST_FILE)
    return best, notes


def best_line(best: Best, last_round: int) -> str:
    """What the closing lines say about model.safetensors and model_best.safetensors."""
    if best.round_index is None:
        return ""
    if best.round_index == last_round:
        return (f"best round by validation: {best.round_index} (the last; {100 * best.val_accuracy:.2f}%): "
                f"model.safetensors and {BEST_FILE} are the same weights")
    return (f"best round by validation: {best.round_index} ({100 * best.val_accuracy:.2f}%): its weights are {BEST_FILE}; "
            f"model.safetensors is the last round's ({last_round})")
