"""The same run on 1, 2, 3 or 4 processes: global batches, the same draws and augmentation per
step, the first step's loss and update, and scores that do not depend on the process count.
Every multi-process case is compared with one process (gloo, CPU)."""

import numpy as np
import pytest
import torch
from helpers import Float64, run_processes

from plabel.config import PseudoConfig, TrainConfig
from plabel.data.base import TensorImageSource
from plabel.data.files import open_embedded
from plabel.data.splits import IndexedImages
from plabel.data.transforms import build_transform, plain_spec
from plabel.distributed.global_batch import split_range
from plabel.trainer.loop import GlobalBatchSampler, RoundPosition, TrainPlan, make_train_loader, train_round
from plabel.trainer.round_selection import SelectionRequest, select_for_round
from plabel.trainer.scoring_pass import ScorePlan, score_dataset

# CI time: 3 processes (the odd split) by default, 2 and 4 with -m slow.
WORLDS = [pytest.param(2, marks=pytest.mark.slow), 3, pytest.param(4, marks=pytest.mark.slow)]


@pytest.mark.parametrize("batch", [1, 7, 16, 33])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_sampler_splits_each_global_batch_in_rank_order(batch, world):
    steps = 5
    if batch < world:
        return  # refused before training (check_batch_split)
    reference = GlobalBatchSampler(steps, batch, seed=3, world=1, rank=0)
    reference.set_epoch(7, start_step=2)
    ranks = [GlobalBatchSampler(steps, batch, seed=3, world=world, rank=r) for r in range(world)]
    for sampler in ranks:
        sampler.set_epoch(7, start_step=2)
    per_rank = [list(s) for s in ranks]
    for step, whole in enumerate(reference):
        assert sum((part[step] for part in per_rank), []) == whole
    sizes = [len(split_range(batch, world, r)) for r in range(world)]
    assert sum(sizes) == batch and max(sizes) - min(sizes) <= 1


def _digits(n: int, train: bool, noise: bool = False) -> IndexedImages:
    """The first ``n`` embedded digits, or (``noise``) as many uniform-noise images."""
    source = open_embedded()
    if noise:
        pixels = torch.randint(0, 256, (n, 1, 28, 28), generator=torch.Generator().manual_seed(n), dtype=torch.uint8)
        source = TensorImageSource(pixels, source.labels[:n], 10, "noise")
    return IndexedImages(source, torch.arange(n), build_transform(1, plain_spec(1, (28, 28)), "light", train, resize=False))


def _draws(accelerator, batch, steps):
    """Per step: this rank's (sample positions, augmented images) over two epochs."""
    loader = make_train_loader(accelerator, _digits(50, train=True), batch, steps, seed=11, options=TrainPlan(None, None, 0, 1).options)
    out = []
    for epoch in (0, 1):
        loader.batch_sampler.set_epoch(epoch, 0)
        loader.dataset.set_epoch(epoch)
        out += [(positions.tolist(), images.numpy()) for images, _, positions in loader]
    return out  # numpy, not tensors: tensors cross the process boundary as shared memory that dies with the process


@pytest.fixture(scope="module")
def one_process_draws():
    (reference,) = run_processes(_draws, 1, 13, 6)
    return reference


@pytest.mark.parametrize("world", WORLDS)
def test_the_same_draws_and_augmentation_at_every_step(world, one_process_draws):
    reference = one_process_draws
    per_rank = run_processes(_draws, world, 13, 6)
    for step, (positions, images) in enumerate(reference):
        assert sum((rank[step][0] for rank in per_rank), []) == positions
        assert (np.concatenate([rank[step][1] for rank in per_rank]) == images).all()  # augmentation per draw


def _first_steps(accelerator, steps, noise):
    """Train ``steps`` steps of a small CNN (BatchNorm and dropout) on 7 labeled + 5 pseudo per step."""
    from plabel.config import RunConfig
    from plabel.models.zoo import build_model
    from plabel.trainer.setup import make_optimizer

    torch.manual_seed(0)
    model = Float64(build_model("small_cnn", 1, 10))  # see helpers.Float64
    # SGD: an update proportional to the gradient (Adam's first step is about its sign, which a
    # float-order difference can flip where a gradient is ~0).
    cfg = RunConfig()
    cfg.train.optimizer = "sgd"
    train = TrainConfig(epochs=1, steps_per_epoch=steps, batch_size=7, pseudo_batch_size=5, optimizer="sgd", lr=0.05)
    plan = TrainPlan(train, PseudoConfig(alpha_schedule="constant"), seed=5, log_every=1)
    model, optimizer = accelerator.prepare(model, make_optimizer(cfg, model))
    labeled, pool = _digits(40, train=True, noise=noise), _digits(60, train=True, noise=noise)
    pseudo = IndexedImages(pool.source, pool.source_indices, pool.transform, labels=torch.arange(60) % 10)
    logs = []
    train_round(accelerator, model, optimizer, labeled, pseudo, plan, RoundPosition(1), lambda m, step: logs.append(m))
    weights = {k: v.detach().numpy().copy() for k, v in accelerator.unwrap_model(model).state_dict().items()}
    return logs, weights


def _first_steps_both(accelerator, steps):
    """Losses and weights on digits and on noise images, in one set of processes."""
    return _first_steps(accelerator, steps, False), _first_steps(accelerator, steps, True)


@pytest.fixture(scope="module")
def one_process_steps():
    (reference,) = run_processes(_first_steps_both, 1, 2)
    return reference


@pytest.mark.parametrize("world", WORLDS)
def test_first_steps_have_the_loss_and_update_of_one_process(world, one_process_steps):
    got = run_processes(_first_steps_both, world, 2)[0]
    for (reference_logs, reference_weights), (logs, weights) in zip(one_process_steps, got):  # digits, noise
        # The losses of the global batch (not of one process's part) as one process computes them.
        assert len(logs) == len(reference_logs) == 2
        for mine, want in zip(logs, reference_logs):
            for key in ("train/loss", "train/loss_labeled", "train/loss_pseudo"):
                assert mine[key] == pytest.approx(want[key], rel=1e-12, abs=1e-14), key
        # The weights after two SGD steps, BatchNorm statistics and dropout masks included. In
        # float64 only summation order differs (~1e-13 relative even where, on digits, the first
        # convolutions' gradients are small sums of large terms): tight on any CPU.
        for name, tensor in reference_weights.items():
            assert np.allclose(weights[name], tensor, rtol=1e-9, atol=1e-12), name


BATCHES = {1: 101, 7: 613, 37: 613, 512: 613}  # eval batch -> (odd) pool size


def _scores(accelerator):
    """For every eval batch: the scores of the pool and the selection of a round, on this process."""
    from plabel.models.zoo import build_model

    torch.manual_seed(0)
    model = accelerator.prepare(build_model("small_cnn", 1, 10))
    out = {}
    for batch, pool_size in BATCHES.items():
        pool = _digits(pool_size, train=False)
        scores = score_dataset(accelerator, model, pool, ScorePlan(batch_size=batch))
        request = SelectionRequest(round_index=1, percent=30, num_classes=10, class_balanced=True, score="entropy", seed=0)
        picked = select_for_round(accelerator, model, pool, pool.labels, request, ScorePlan(batch_size=batch))
        out[batch] = ({k: v.numpy() for k, v in scores.items()}, picked.selection.indices.numpy(), picked.selection.labels.numpy())
    return out


@pytest.fixture(scope="module")
def one_process_scores():
    (reference,) = run_processes(_scores, 1)
    return reference


@pytest.mark.parametrize("world", WORLDS)
def test_scores_and_selection_are_byte_identical_for_any_eval_batch(world, one_process_scores):
    for rank_results in run_processes(_scores, world, timeout=300):
        for batch, (reference, ref_idx, ref_labels) in one_process_scores.items():
            scores, idx, labels = rank_results[batch]
            for name, column in reference.items():
                assert scores[name].tobytes() == column.tobytes(), (batch, name)
            assert idx.tobytes() == ref_idx.tobytes() and labels.tobytes() == ref_labels.tobytes(), batch


def _drop_path_steps(accelerator, name, rate):
    """Two SGD steps of a timm test network (drop_path_rate ``rate``), float64."""
    import timm

    from plabel.config import RunConfig
    from plabel.trainer.setup import make_optimizer

    torch.manual_seed(0)
    model = Float64(timm.create_model(name, num_classes=10, in_chans=1, drop_path_rate=rate))
    cfg = RunConfig()
    cfg.train.optimizer = "sgd"
    train = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=7, pseudo_batch_size=5, optimizer="sgd", lr=0.05)
    plan = TrainPlan(train, PseudoConfig(alpha_schedule="constant"), seed=5, log_every=1)
    model, optimizer = accelerator.prepare(model, make_optimizer(cfg, model))
    labeled, pool = _digits(40, train=True, noise=False), _digits(60, train=True, noise=False)
    pseudo = IndexedImages(pool.source, pool.source_indices, pool.transform, labels=torch.arange(60) % 10)
    logs = []
    train_round(accelerator, model, optimizer, labeled, pseudo, plan, RoundPosition(1), lambda m, step: logs.append(m))
    return [m["train/loss"] for m in logs], {k: v.detach().numpy().copy() for k, v in accelerator.unwrap_model(model).state_dict().items()}


@pytest.mark.parametrize("name,rate,world", [
    ("test_resnet", 0.5, 3), pytest.param("test_resnet", 0.5, 2, marks=pytest.mark.slow),  # DropPath in its residual blocks
    ("test_efficientnet", 0.0, 3),  # timm's fused BatchNormAct2d: normalised with the global batch too
])
def test_timm_stochastic_depth_and_fused_batchnorm_train_as_one_process(name, rate, world):
    (one,) = run_processes(_drop_path_steps, 1, name, rate)
    if rate:
        (without,) = run_processes(_drop_path_steps, 1, name, 0.0)
        assert one[0] != pytest.approx(without[0], rel=1e-6)  # stochastic depth is on and changes the steps
    losses, weights = run_processes(_drop_path_steps, world, name, rate)[0]
    assert losses == pytest.approx(one[0], rel=1e-12, abs=1e-14)
    for key, tensor in one[1].items():
        assert np.allclose(weights[key], tensor, rtol=1e-9, atol=1e-12), key
