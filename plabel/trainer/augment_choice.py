"""``data.augment auto``: round 0 trained with and without augmentation, the one the validation
images prefer kept.

No augmentation fits every dataset: on the MNIST digits the default moves were worth 7 points of
round-0 accuracy, on letters drawn in many fonts and colours they cost 10 to 17 (the network is
still learning what a letter is when round 0 ends, and moved letters slow it down; results in
docs/results.md). So the run trains round 0 twice from the same initial weights, with the
augmented candidate and with none, and keeps the one with the higher validation accuracy; on a
tie, or a margin within the noise of the validation images, the augmented one. The choice is
printed, logged and kept in the checkpoints (a resumed run uses it; a run stopped during the
trials redoes them: no checkpoint is written inside a trial, but a preemption signal still stops
the run within ``checkpoint.stop_check_every`` steps, so a scheduler's grace period is not spent
on trials that will be redone). Costs one extra round 0.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Callable

import torch
from accelerate import Accelerator

from plabel.trainer.faults import Preempted, fault_point, stop_requested
from plabel.trainer.loop import RoundPosition, TrainPlan, train_round
from plabel.trainer.scoring_pass import ScorePlan
from plabel.trainer.validation import validation_accuracy

AUTO = "auto"


def candidates(data_channels: int) -> tuple[str, str]:
    """(the augmented candidate, none): grey images get small affine moves; colour ones the same
    family (glyphs, shapes and signs are moved, not cropped or flipped)."""
    return ("light" if data_channels == 1 else "affine"), "none"


def margin_needed(n_val: int) -> float:
    """How much better "none" must be to win: two validation images, or a 1.5 binomial standard
    error at 50% accuracy, whichever is more (so a small validation set does not choose by chance)."""
    return max(2.0 / max(1, n_val), 1.5 * 0.5 / math.sqrt(max(1, n_val)))


def trial_step(accelerator: Accelerator, level: str, stop_check_every: int) -> Callable[[RoundPosition, bool], None]:
    """What runs after each step of a trial: the fault point ``trial:<level>:<global step>`` (tests),
    and the preemption check every ``stop_check_every`` steps and at epoch ends, as in training."""
    def after_step(position: RoundPosition, epoch_ended: bool) -> None:
        fault_point(f"trial:{level}:{position.global_step}", accelerator)
        look = accelerator.num_processes == 1 or epoch_ended or position.global_step % stop_check_every == 0
        if look and stop_requested(accelerator):
            raise Preempted(f"stopped during round 0's augmentation trials ({level}); a resumed run redoes them")
    return after_step


@dataclasses.dataclass
class Trial:
    level: str
    val_accuracy: float
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]


def choose(
    accelerator: Accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer, data: dict[str, Any], pseudo: None,
    plan: TrainPlan, start: RoundPosition, val: Any, score_plan: ScorePlan, quiet_log: Callable[[dict[str, float], int], None],
    stop_check_every: int = 1,
) -> tuple[Trial, list[Trial], RoundPosition]:
    """Train round 0 on each of ``data`` (level -> labeled dataset) from the same weights; leave
    the model and optimizer in the winner's state. Returns (winner, all trials, position after)."""
    bare = accelerator.unwrap_model(model)
    initial_model, initial_optimizer = copy.deepcopy(bare.state_dict()), copy.deepcopy(optimizer.state_dict())
    trials, position = [], start
    for level, labeled in data.items():
        bare.load_state_dict(initial_model)
        optimizer.load_state_dict(initial_optimizer)
        position = train_round(accelerator, model, optimizer, labeled, pseudo, plan,
                               dataclasses.replace(start), quiet_log, trial_step(accelerator, level, stop_check_every))
        acc = validation_accuracy(accelerator, model, val, score_plan, 0)
        trials.append(Trial(level, acc, copy.deepcopy(bare.state_dict()), copy.deepcopy(optimizer.state_dict())))
    augmented, plain = trials
    winner = plain if plain.val_accuracy >= augmented.val_accuracy + margin_needed(len(val)) else augmented
    bare.load_state_dict(winner.model_state)
    optimizer.load_state_dict(winner.optimizer_state)
    return winner, trials, position


def choice_line(winner: Trial, trials: list[Trial], n_val: int) -> str:
    scores = ", ".join(f"{t.level} {100 * t.val_accuracy:.1f}%" for t in trials)
    return (f"data.augment auto: {winner.level} (round 0 trained with each; validation accuracy {scores} on {n_val} images; "
            f"none must lead by {100 * margin_needed(n_val):.1f} points to be chosen)")
