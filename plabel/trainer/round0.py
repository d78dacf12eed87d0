"""Round 0 with held-out validation images: what they choose, and whether they are then trained on.

``data.val_scope rounds`` (0.3.1) keeps them out of training for the whole run: they choose round
0's augmentation (``data.augment auto``, :mod:`plabel.trainer.augment_choice`), validate every
round and calibrate each round's precision estimate.

``data.val_scope round0`` (0.3.2's default) spends them at round 0 only. Round 0 is trained
without them (once per candidate level under auto, else once); the winner's validation loss
chooses the level and its probabilities fit the temperature that calibrates the precision
estimate of every later round; then round 0 is trained again, from the same initial weights, on
every labeled image. Why: at 10 labels per class two images a class are a fifth of the labels,
and on the field set's fresh seeds the default with nothing held out ended 4.4 to 45.9 points
higher by the last round on every set and seed measured (docs/results.md, "What the validation
fifth costs"), while the choice of level needs the held-out images only once. What it gives up:
no round is validated, so there is no best round to keep (``model.safetensors`` is the last
round's) and the temperature is the round-0 model's, not refitted per round.

The choice and the temperature live in the checkpoint's ``choices``; a run stopped during the
trials redoes them (no checkpoint is written inside a trial), one stopped during the second
round 0 resumes it on every labeled image.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Optional

import torch
from accelerate import Accelerator

from plabel.config import RunConfig
from plabel.trainer.augment_choice import AUTO, Trial, choice_line, choose
from plabel.trainer.loop import RoundPosition, TrainPlan
from plabel.trainer.scoring_pass import ScorePlan
from plabel.trainer.validation import confidence_temperature

TEMPERATURE = "confidence_temperature"  # choices key: the round-0 temperature (val_scope round0)


def refits(cfg: RunConfig, has_validation: bool) -> bool:
    """Whether round 0 is trained again on every labeled image once the validation images have chosen."""
    return has_validation and cfg.data.val_scope == "round0"


def trials_due(cfg: RunConfig, choices: dict[str, Any], has_validation: bool) -> bool:
    """Whether round 0 must still train without the validation images (to choose, or to calibrate)."""
    if not has_validation:
        return False
    if refits(cfg, has_validation):
        return TEMPERATURE not in choices
    return cfg.data.augment == AUTO and "data.augment" not in choices


def calibration_plan(cfg: RunConfig, plan: ScorePlan) -> ScorePlan:
    """The validation images scored as the pool will be (the same views), for the round-0 temperature."""
    return dataclasses.replace(plan, label="round 0: calibrating on validation", views=cfg.pseudo.score_views,
                               noise=cfg.pseudo.score_noise, view_seed=cfg.seed * 1_000)


@dataclasses.dataclass
class Round0Outcome:
    """What round 0's trials leave: the level (auto), the temperature (round0 scope), the lines to
    print, the metrics to log, and the weights to train again from (round0 scope)."""

    level: Optional[str]
    temperature: Optional[float]
    lines: list[str]
    metrics: dict[str, float]
    position: RoundPosition
    initial_model: Optional[dict[str, torch.Tensor]] = None
    initial_optimizer: Optional[dict[str, Any]] = None


def run_trials(
    accelerator: Accelerator, cfg: RunConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer, levels: dict[str, Any],
    plan: TrainPlan, start: RoundPosition, val: Any, score_plan: ScorePlan, num_classes: int,
) -> Round0Outcome:
    """Round 0 without the validation images: each of ``levels`` (level -> labeled dataset; one
    unless auto) from the same weights. The model is left in the winner's state (val_scope rounds
    trains on from there) and, for round0 scope, the initial weights are returned to train again from."""
    refit = refits(cfg, True)
    bare = accelerator.unwrap_model(model)
    initial_model = copy.deepcopy(bare.state_dict()) if refit else None
    initial_optimizer = copy.deepcopy(optimizer.state_dict()) if refit else None
    winner, trials, position = choose(accelerator, model, optimizer, levels, None, plan, start, val, score_plan, lambda m, s: None,
                                      num_classes, cfg.checkpoint.stop_check_every, cfg.data.augment_margin)
    lines: list[str] = []
    metrics: dict[str, float] = {}
    if cfg.data.augment == AUTO:
        lines.append(choice_line(winner, trials, len(val), cfg.data.augment_margin))
        for t in trials:
            metrics.update({f"round/val_accuracy_{t.level}": t.val_accuracy, f"round/val_loss_{t.level}": t.val_loss})
    temperature = None
    if refit:
        temperature = confidence_temperature(accelerator, model, val, calibration_plan(cfg, score_plan), num_classes)
        metrics.update({"round/val_accuracy_before_refit": winner.val_accuracy, "round/val_loss_before_refit": winner.val_loss,
                        "select/confidence_temperature_round0": temperature})
        lines.append(refit_line(winner, len(val), temperature))
    return Round0Outcome(winner.level if cfg.data.augment == AUTO else None, temperature, lines, metrics, position,
                         initial_model, initial_optimizer)


def refit_line(winner: Trial, n_val: int, temperature: float) -> str:
    return (f"round 0 without the {n_val} validation images: validation accuracy {100 * winner.val_accuracy:.1f}%, loss "
            f"{winner.val_loss:.3f}; confidence temperature {temperature:.3f} (calibrates every round's precision estimate). "
            f"Training round 0 again on every labeled image (data.val_scope round0)")


def restart(accelerator: Accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer, outcome: Round0Outcome) -> None:
    """Back to round 0's initial weights and optimizer state, to train it again on every labeled image."""
    accelerator.unwrap_model(model).load_state_dict(outcome.initial_model)  # type: ignore[arg-type]
    optimizer.load_state_dict(outcome.initial_optimizer)  # type: ignore[arg-type]


def unvalidated_line(n_val: int) -> str:
    """The closing line that names model.safetensors when no round was validated (val_scope round0)."""
    return (f"model.safetensors is the last round's weights; no round was validated (data.val_scope round0: the {n_val} "
            "validation images chose round 0 and calibrated the estimate, then were trained on). --data.val_scope rounds "
            "keeps them out to validate every round and keep the best round's weights")
