"""``data.val_scope round0``'s round 0 on 1 and 3 gloo processes: the trials, the choice, the
temperature, the restart and the retraining on every labeled image must not depend on the
number of processes.

The model trains in float64 (helpers.Float64): N processes sum gradients and BatchNorm statistics
in another order than one process does, which in float32 moved small weights by ~1e-3 relative,
by an amount that depends on the CPU's kernels. In float64 the same order effects are ~1e-13, so
the tolerances below are tight on any x86 CPU. Counts (the choice, the restart) are exact.

SGD (momentum, whose state the restart must also put back), not the default AdamW: the
convolutions' biases feed BatchNorm, so their true gradient is zero and what they get is float64
rounding (~1e-17), which AdamW divides by its eps (1e-8) into steps of ~1e-10 that differ with the
process count (measured: up to 1.7e-9 after 9 steps). That is AdamW on a zero gradient, not the
refit; with SGD every weight agrees to ~1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import Float64, run_processes

from plabel.config import PseudoConfig, RunConfig, TrainConfig
from plabel.data.files import open_embedded
from plabel.data.splits import IndexedImages
from plabel.data.transforms import build_transform, plain_spec
from plabel.models.zoo import build_model
from plabel.trainer.loop import RoundPosition, TrainPlan, train_round
from plabel.trainer.round0 import restart, run_trials
from plabel.trainer.scoring_pass import ScorePlan
from plabel.trainer.setup import make_optimizer

CLASSES = 10


def _images(indices: torch.Tensor, level: str, train: bool) -> IndexedImages:
    return IndexedImages(open_embedded(), indices, build_transform(1, plain_spec(1, (28, 28)), level, train, resize=False))


def _weights(accelerator, model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in accelerator.unwrap_model(model).state_dict().items()}


def _round0_on_ranks(accelerator):
    """auto's two trials without the 23 validation images, the temperature, the restart, and round 0
    trained again on all 60 labeled images: what each step leaves."""
    torch.manual_seed(0)
    cfg = RunConfig()
    cfg.data.augment, cfg.data.val_scope, cfg.train.optimizer = "auto", "round0", "sgd"
    model = Float64(build_model("small_cnn", 1, CLASSES, dropout=0.2))
    model, optimizer = accelerator.prepare(model, make_optimizer(cfg, model))  # the plan sets each step's lr
    initial = _weights(accelerator, model)
    train = TrainConfig(epochs=3, steps_per_epoch=3, batch_size=7, eval_batch_size=4, optimizer="sgd", lr=0.01)
    plan = TrainPlan(train, PseudoConfig(), seed=5, log_every=1)
    kept, every = torch.arange(37), torch.arange(60)
    levels = {level: _images(kept, level, train=True) for level in ("light", "none")}
    val = _images(torch.arange(37, 60), "none", train=False)  # 23 images, batch 4: unequal shards, a short batch
    outcome = run_trials(accelerator, cfg, model, optimizer, levels, plan, RoundPosition(0), val, ScorePlan(batch_size=4), CLASSES)
    restart(accelerator, model, optimizer, outcome)
    restarted = _weights(accelerator, model)
    final = train_round(accelerator, model, optimizer, _images(every, outcome.level, train=True), None, plan,
                        RoundPosition(0), lambda m, step: None)
    return {
        "level": outcome.level, "temperature": outcome.temperature, "metrics": outcome.metrics,
        "restarted_exactly": all(np.array_equal(restarted[k], initial[k]) for k in initial),
        "steps": final.global_step, "weights": _weights(accelerator, model), "initial": initial,
    }


@pytest.fixture(scope="module")
def one_process():
    (result,) = run_processes(_round0_on_ranks, 1, timeout=300)
    return result


def test_round0_restarts_from_its_initial_weights_and_trains_again(one_process):
    assert one_process["level"] in ("light", "none") and one_process["temperature"] not in (None, 1.0)
    assert one_process["restarted_exactly"]  # every tensor, byte for byte
    moved = [k for k, v in one_process["weights"].items() if np.issubdtype(v.dtype, np.floating)
             and not np.array_equal(v, one_process["initial"][k])]
    assert moved and one_process["steps"] > 0  # the second round 0 trained


def test_round0_choice_temperature_and_retrained_weights_do_not_depend_on_the_process_count(one_process):
    for rank in run_processes(_round0_on_ranks, 3, timeout=300):
        assert rank["level"] == one_process["level"] and rank["restarted_exactly"] and rank["steps"] == one_process["steps"]
        for key, value in one_process["metrics"].items():
            assert rank["metrics"][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        # LBFGS on the same logits up to float32 rounding of the probabilities column (test_validation_processes).
        assert rank["temperature"] == pytest.approx(one_process["temperature"], rel=1e-5, abs=0)
        for key, tensor in one_process["weights"].items():
            assert tensor.dtype == np.float64 or not np.issubdtype(tensor.dtype, np.floating), key
            assert np.allclose(rank["weights"][key], tensor, rtol=1e-9, atol=1e-12), key
