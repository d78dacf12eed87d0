"""The held-out labeled images scored on 1, 2 and 3 gloo processes: the augmentation trials' loss
and accuracy, and the calibration temperature, must not depend on the number of processes.

An odd count (23 images, scoring batch 4: 6 batches, the last of 3) leaves the processes unequal
shards and one of them a short batch. Each image is scored in the same batch whatever the number of
processes (shards are whole batches), one thread per process, and the model runs in float64, so
the gathered probabilities agree to rounding on any x86 CPU and the tolerances can be tight.
"""

import pytest
import torch
from helpers import Float64, run_processes
from torch.utils.data import Dataset

from plabel.models.builtin import SmallCNN
from plabel.trainer.scoring_pass import ScorePlan
from plabel.trainer.validation import confidence_temperature, validation_scores

N_IMAGES, CLASSES = 23, 10


class Images(Dataset):
    """(image, label, position) triples, as IndexedImages gives them."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(7)
        self.x = torch.rand(N_IMAGES, 1, 28, 28, generator=g)
        self.y = torch.randint(0, CLASSES, (N_IMAGES,), generator=g)

    def __len__(self) -> int:
        return N_IMAGES

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i]), i


def _model() -> torch.nn.Module:
    torch.manual_seed(3)
    model = SmallCNN(1, CLASSES, batch_norm=True, dropout=0.3)
    # Trained BatchNorm statistics, not the initial ones, so eval mode is not an identity.
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    return Float64(model)


def _scores_on_ranks(accelerator):
    model, data, plan = _model(), Images(), ScorePlan(batch_size=4, label="scoring the pool")
    accuracy, loss = validation_scores(accelerator, model, data, plan, CLASSES, "round 0: validating (none)")
    return accuracy, loss, confidence_temperature(accelerator, model, data, plan, CLASSES)


@pytest.fixture(scope="module")
def one_process():
    (result,) = run_processes(_scores_on_ranks, 1)
    return result


@pytest.mark.parametrize("world", [2, 3])
def test_validation_loss_accuracy_and_temperature_do_not_depend_on_the_process_count(world, one_process):
    accuracy, loss, temperature = one_process
    assert 0 < loss < 20 and temperature != 1.0  # a real score and a real fit, not a default
    for rank_accuracy, rank_loss, rank_temperature in run_processes(_scores_on_ranks, world):
        assert rank_accuracy == accuracy  # a count of 23: exact
        assert rank_loss == pytest.approx(loss, rel=1e-9, abs=0)
        # LBFGS on the same logits up to float32 rounding of the probabilities column.
        assert rank_temperature == pytest.approx(temperature, rel=1e-5, abs=0)
