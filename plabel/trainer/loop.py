"""Training one round: seeded loaders that replay exactly, and the alpha-weighted step.

Batch sizes are global: a step trains the whole job on ``train.batch_size`` labeled and
``train.pseudo_batch_size`` pseudo-labeled draws, split across processes, so a run draws the
same samples (with the same augmentation, alpha and learning rate) on any number of processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset, Sampler

from plabel.config import PseudoConfig, TrainConfig
from plabel.data.splits import Repeated
from plabel.distributed.collectives import Comm, sum_across_processes
from plabel.distributed.global_batch import global_batch, split_range
from plabel.method.loss import combined_loss, mixed_loss
from plabel.method.schedule import alpha_at, lr_at
from plabel.trainer.progress import Progress
from plabel.trainer.setup import LoaderOptions


@dataclass
class RoundPosition:
    """Where training stands; enough to replay the same batches after a restart."""

    round_index: int
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0


def seed_step(seed: int, position: RoundPosition) -> None:
    """Seed dropout (and anything else drawing from the global RNG) for one step, on every process alike.

    Seeding per step makes a step's randomness a function of where it is, so a run restarted
    mid-epoch replays exactly what it would have done; seeding every process alike lets dropout
    draw the global batch's mask everywhere (``plabel.distributed.global_batch``).
    """
    key = step_seed(seed, position)
    # What torch.manual_seed seeds, without its per-call cost: for a backend not yet started (CUDA
    # on a CPU run; XPU and MTIA everywhere) it queues the seeding with a formatted stack trace,
    # three of them a step. Draws here come from the CPU generator and, on a GPU, CUDA's.
    torch.default_generator.manual_seed(key)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(key)


def step_seed(seed: int, position: RoundPosition) -> int:
    """A 63-bit seed for (seed, round, epoch, step), distinct for every position.

    Inside the fields plabel 0.3.0 packed (round < 1,000, epoch < 10,000, step < 100,000) it is
    that packing, so every committed result still replays bit for bit; beyond them (where step
    100,005 of an epoch would have reused step 5 of the next) numpy's SeedSequence hashes the tuple
    into 63 bits, which meet a packed seed only by chance."""
    r, e, k = position.round_index, position.epoch, position.step_in_epoch
    if 0 <= seed and r < 1_000 and e < 10_000 and k < 100_000:
        return ((((seed * 1_000 + r) * 10_000 + e) * 100_000 + k) * 1_024) % (2**63 - 1)
    entropy = [seed & (2**64 - 1), r, e, k, 1]  # the trailing 1: a tuple the packing never hashes
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]) & (2**63 - 1)


class GlobalBatchSampler(Sampler[list[int]]):
    """Step by step, this process's slice of the step's global batch of draws (see :class:`Repeated`).

    An epoch's draws are ordered by ``torch.randperm(steps * batch)`` seeded with ``seed + epoch``
    (on one process, exactly what Accelerate's seedable sampler drew before batches became
    global); step ``s`` trains on draws ``s * batch ... (s + 1) * batch - 1`` of that order, and
    process ``r`` takes its :func:`split_range` of them. So the whole job sees the same draws at
    every step whatever the number of processes, and a restart at step ``k`` starts there without
    loading the steps before it.
    """

    def __init__(self, steps: int, batch: int, seed: int, world: int, rank: int) -> None:
        self.steps, self.batch, self.seed = steps, batch, seed
        self.part = split_range(batch, world, rank)
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return self.steps - self.start_step

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.steps * self.batch, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        for step in range(self.start_step, self.steps):
            first = step * self.batch
            yield order[first + self.part.start : first + self.part.stop].tolist()


def make_train_loader(
    accelerator: Accelerator, dataset: Dataset, batch_size: int, steps: int, seed: int, options: LoaderOptions
) -> DataLoader:
    """A loader of this process's part of ``steps`` global batches of ``batch_size`` per epoch.

    The dataset is cycled to ``steps x batch_size`` draws (:class:`Repeated`, augmentation seeded
    per draw); :class:`GlobalBatchSampler` picks this process's draws of each step.
    """
    sampler = GlobalBatchSampler(steps, batch_size, seed, accelerator.num_processes, accelerator.process_index)
    return DataLoader(Repeated(dataset, steps * batch_size, seed), batch_sampler=sampler, **options.dataloader_kwargs())


def _set_epoch(loader: DataLoader, epoch_id: int, start_step: int) -> Iterator[Any]:
    """Position ``loader`` at ``start_step`` of epoch ``epoch_id`` and return its iterator."""
    loader.batch_sampler.set_epoch(epoch_id, start_step)  # type: ignore[union-attr]  # draw order
    loader.dataset.set_epoch(epoch_id)  # type: ignore[attr-defined]  # augmentation seeds
    return iter(loader)


def steps_per_epoch(train_cfg: TrainConfig, pseudo_labeled: int) -> int:
    """Steps in one epoch of a round with ``pseudo_labeled`` selected samples (``train.budget``)."""
    if train_cfg.budget == "data" and pseudo_labeled:
        return max(train_cfg.steps_per_epoch, -(-pseudo_labeled // train_cfg.pseudo_batch_size))
    return train_cfg.steps_per_epoch


@dataclass(frozen=True)
class Mixup:
    """This process's rows of a mixup step: mixed inputs, each row's partner (a global row) and its target."""

    inputs: torch.Tensor
    partners: torch.Tensor
    partner_targets: torch.Tensor
    lam: float


def mixup_partners(
    accelerator: Accelerator, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, total: int, mixup_alpha: float,
    seed: int, position: RoundPosition,
) -> Mixup:
    """Mix this process's rows (global rows ``rows`` of a ``total``-row step) with partners drawn
    from the whole global batch.

    lambda ~ Beta(a, a) and the partner permutation are drawn from the step's position alone, so
    every process (and any number of them) draws the same; the global batch's inputs are gathered
    so a row's partner may live on another process (with one process, nothing is sent).
    """
    key = [seed, position.round_index, position.epoch, position.step_in_epoch]
    lam = float(np.random.default_rng(key).beta(mixup_alpha, mixup_alpha))
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(int(np.random.default_rng(key).integers(2**62))))
    perm = perm.to(rows.device)
    if accelerator.num_processes == 1:
        all_x, all_y = x, y
    else:
        comm = Comm(accelerator)
        order = comm.gather_uneven(rows)
        all_x = torch.empty((total, *x.shape[1:]), dtype=x.dtype, device=x.device)
        all_y = torch.empty((total, *y.shape[1:]), dtype=y.dtype, device=y.device)
        all_x[order], all_y[order] = comm.gather_uneven(x), comm.gather_uneven(y)
    partners = perm[rows]
    return Mixup(lam * x + (1.0 - lam) * all_x[partners], partners, all_y[partners], lam)


@dataclass(frozen=True)
class TrainPlan:
    """What every round trains with: sizes, steps and schedules, the seed, logging, loading."""

    train: TrainConfig
    pseudo: PseudoConfig
    seed: int
    log_every: int
    options: LoaderOptions = LoaderOptions()


def train_round(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    labeled: Dataset,
    pseudo: Optional[Dataset],
    plan: TrainPlan,
    position: RoundPosition,
    log: Callable[[dict[str, float], int], None],
    after_step: Callable[[RoundPosition, bool], None] = lambda position, epoch_ended: None,
    step_times: Optional[list[float]] = None,
) -> RoundPosition:
    """Train one round from ``position`` (which may be mid-epoch, after a restart).

    ``after_step(position, epoch_ended)`` runs after every optimizer step with the position
    already advanced (checkpointing and preemption live there). ``step_times`` collects each
    step's host time (the first includes torch.compile's compilation). Nothing in a step waits
    for the device except at logging steps (``.item()``). Returns the final position.
    """
    train_cfg, pseudo_cfg, seed, options = plan.train, plan.pseudo, plan.seed, plan.options
    steps = steps_per_epoch(train_cfg, len(pseudo) if pseudo is not None else 0)  # type: ignore[arg-type]
    total_steps = train_cfg.epochs * steps
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    labeled_loader = make_train_loader(accelerator, labeled, train_cfg.batch_size, steps, seed, options)
    pseudo_loader = (
        make_train_loader(accelerator, pseudo, train_cfg.pseudo_batch_size, steps, seed + 1, options)
        if pseudo is not None and len(pseudo) > 0  # type: ignore[arg-type]
        else None
    )
    # This process's rows of the step's global forward batch [labeled; pseudo], for the layers
    # that must see the global batch (plabel.distributed.global_batch).
    n_l, n_p = train_cfg.batch_size, train_cfg.pseudo_batch_size if pseudo_loader is not None else 0
    part_l, part_p = split_range(n_l, world, rank), split_range(n_p, world, rank)
    rows = torch.cat([torch.arange(part_l.start, part_l.stop), n_l + torch.arange(part_p.start, part_p.stop)]).to(device)
    # Each process's share of the global means; DDP averages gradients, so the loss it backpropagates
    # is scaled by the world size: the gradient is that of the global batch's loss.
    share_l, share_p = len(part_l) / n_l, (len(part_p) / n_p if n_p else 1.0)
    model.train()
    progress = Progress(
        total_steps, f"round {position.round_index}", accelerator.is_main_process,
        initial=position.epoch * steps + position.step_in_epoch,
    )
    while position.epoch < train_cfg.epochs:
        epoch_id = position.round_index * 10_000 + position.epoch
        alpha = alpha_at(
            position.epoch, pseudo_cfg.alpha_schedule, pseudo_cfg.alpha_max,
            pseudo_cfg.alpha_ramp_epochs, pseudo_cfg.lee_t1, pseudo_cfg.lee_t2,
        ) if pseudo_loader is not None else 0.0
        # Replaying a partly done epoch: the sampler starts at the step where it stopped, with
        # the same draw order (set by the epoch), loading nothing before it.
        labeled_iter = _set_epoch(labeled_loader, epoch_id, position.step_in_epoch)
        pseudo_iter = _set_epoch(pseudo_loader, epoch_id, position.step_in_epoch) if pseudo_loader is not None else None
        epoch = position.epoch
        while position.epoch == epoch:
            started = time.perf_counter()
            x_l, y_l, _ = (t.to(device, non_blocking=True) for t in next(labeled_iter))
            x_p, y_p = (None, None)
            if pseudo_iter is not None:
                x_p, y_p, _ = (t.to(device, non_blocking=True) for t in next(pseudo_iter))
            seed_step(seed, position)
            lr = lr_at(position.epoch * steps + position.step_in_epoch, total_steps, train_cfg.lr, train_cfg.lr_schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with global_batch(accelerator, rows, n_l + n_p, train_cfg.sync_batchnorm):
                if train_cfg.mixup_alpha > 0:
                    if y_p is not None and y_p.dim() == 2:  # soft pseudo-labels: every target a distribution
                        y_l = torch.nn.functional.one_hot(y_l, y_p.shape[1]).to(y_p.dtype)
                    x, y = (torch.cat([x_l, x_p]), torch.cat([y_l, y_p])) if x_p is not None else (x_l, y_l)
                    mix = mixup_partners(accelerator, x, y, rows, n_l + n_p, train_cfg.mixup_alpha, seed, position)
                    loss, loss_l, loss_p = mixed_loss(
                        model(options.layout(mix.inputs)), y, mix.partner_targets, rows >= n_l, mix.partners >= n_l,
                        mix.lam, alpha, n_l, n_p, train_cfg.label_smoothing,
                    )
                elif x_p is not None:
                    # One forward over both batches: BatchNorm sees the same mix it is evaluated on.
                    logits = model(options.layout(torch.cat([x_l, x_p])))
                    loss, loss_l, loss_p = combined_loss(
                        logits[: len(x_l)], y_l, logits[len(x_l):], y_p, alpha, share_l, share_p, train_cfg.label_smoothing
                    )
                else:
                    loss, loss_l, loss_p = combined_loss(
                        model(options.layout(x_l)), y_l, None, None, 0.0, share_l, label_smoothing=train_cfg.label_smoothing
                    )
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss * world if world > 1 else loss)
            optimizer.step()
            position.global_step += 1
            position.step_in_epoch += 1
            progress.update(1)
            if step_times is not None:
                step_times.append(time.perf_counter() - started)
            if position.global_step % plan.log_every == 0:
                log(
                    {
                        # Shares of the global means, summed: the global batch's losses.
                        "train/loss": sum_across_processes(accelerator, loss.detach().double().reshape(1)).item(),
                        "train/loss_labeled": sum_across_processes(accelerator, loss_l.detach().double().reshape(1)).item(),
                        "train/loss_pseudo": sum_across_processes(accelerator, loss_p.detach().double().reshape(1)).item(),
                        "train/alpha": alpha,
                        "train/lr": lr,
                        "train/round": position.round_index,
                        "train/epoch": position.epoch,
                    },
                    position.global_step,
                )
            epoch_ended = position.step_in_epoch == steps
            if epoch_ended:
                position.epoch += 1
                position.step_in_epoch = 0
            after_step(position, epoch_ended)
    progress.close()
    return position
