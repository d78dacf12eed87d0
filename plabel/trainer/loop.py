"""Training one round: seeded loaders that replay exactly, and the alpha-weighted step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader, skip_first_batches
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from plabel.config import PseudoConfig, TrainConfig
from plabel.data.splits import Repeated
from plabel.distributed.collectives import mean_across_processes
from plabel.method.loss import combined_loss
from plabel.method.schedule import alpha_at, lr_at
from plabel.trainer.setup import LoaderOptions


@dataclass
class RoundPosition:
    """Where training stands; enough to replay the same batches after a restart."""

    round_index: int
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0


def seed_step(seed: int, position: RoundPosition, process_index: int) -> None:
    """Seed dropout (and anything else drawing from the global RNG) for one step on one process.

    Seeding per step makes a step's randomness a function of where it is, so a run restarted
    mid-epoch replays exactly what it would have done.
    """
    key = (((seed * 1_000 + position.round_index) * 10_000 + position.epoch) * 100_000 + position.step_in_epoch) * 1_024
    torch.manual_seed((key + process_index) % (2**63 - 1))


def make_train_loader(
    accelerator: Accelerator, dataset: Dataset, batch_size: int, steps: int, seed: int, options: LoaderOptions
) -> DataLoader:
    """A per-process loader that yields exactly ``steps`` batches of ``batch_size`` per epoch.

    The dataset is cycled to steps x batch x processes items and sharded by Accelerate with a
    seedable sampler, so ``set_epoch`` fixes the order on every process.
    """
    length = steps * batch_size * accelerator.num_processes
    loader = DataLoader(
        Repeated(dataset, length, seed),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        **options.dataloader_kwargs(),
    )
    # The module-level helper (not accelerator.prepare) because the pseudo-labeled set changes
    # every round and these loaders carry no state worth checkpointing: position is all we need.
    return prepare_data_loader(
        loader,
        device=accelerator.device,
        num_processes=accelerator.num_processes,
        process_index=accelerator.process_index,
        put_on_device=True,
        use_seedable_sampler=True,
        data_seed=seed,
    )


def _set_epoch(loader: DataLoader, epoch_id: int) -> None:
    loader.set_epoch(epoch_id)  # type: ignore[attr-defined]  # sampler order
    loader.dataset.set_epoch(epoch_id)  # type: ignore[attr-defined]  # augmentation seeds


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
) -> RoundPosition:
    """Train one round from ``position`` (which may be mid-epoch, after a restart).

    ``after_step(position, epoch_ended)`` runs after every optimizer step with the position
    already advanced (checkpointing and preemption live there). Returns the final position.
    """
    train_cfg, pseudo_cfg, seed, options = plan.train, plan.pseudo, plan.seed, plan.options
    steps = train_cfg.steps_per_epoch
    total_steps = train_cfg.epochs * steps
    labeled_loader = make_train_loader(accelerator, labeled, train_cfg.batch_size, steps, seed, options)
    pseudo_loader = (
        make_train_loader(accelerator, pseudo, train_cfg.pseudo_batch_size, steps, seed + 1, options)
        if pseudo is not None and len(pseudo) > 0  # type: ignore[arg-type]
        else None
    )
    model.train()
    progress = tqdm(
        total=total_steps,
        initial=position.epoch * steps + position.step_in_epoch,
        desc=f"round {position.round_index}",
        disable=not accelerator.is_main_process,
        leave=False,
    )
    while position.epoch < train_cfg.epochs:
        epoch_id = position.round_index * 10_000 + position.epoch
        alpha = alpha_at(
            position.epoch, pseudo_cfg.alpha_schedule, pseudo_cfg.alpha_max,
            pseudo_cfg.alpha_ramp_epochs, pseudo_cfg.lee_t1, pseudo_cfg.lee_t2,
        ) if pseudo_loader is not None else 0.0
        # Replaying a partly done epoch: set_epoch fixes the sampler order, so skipping the
        # first batches (without loading them) lands on the same samples.
        _set_epoch(labeled_loader, epoch_id)
        labeled_iter = iter(skip_first_batches(labeled_loader, position.step_in_epoch))
        pseudo_iter = None
        if pseudo_loader is not None:
            _set_epoch(pseudo_loader, epoch_id)
            pseudo_iter = iter(skip_first_batches(pseudo_loader, position.step_in_epoch))
        epoch = position.epoch
        while position.epoch == epoch:
            x_l, y_l, _ = next(labeled_iter)
            x_p, y_p = (None, None)
            if pseudo_iter is not None:
                x_p, y_p, _ = next(pseudo_iter)
            seed_step(seed, position, accelerator.process_index)
            lr = lr_at(position.epoch * steps + position.step_in_epoch, total_steps, train_cfg.lr, train_cfg.lr_schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if x_p is not None:
                # One forward over both batches: BatchNorm sees the same mix it is evaluated on.
                logits = model(options.layout(torch.cat([x_l, x_p])))
                loss, loss_l, loss_p = combined_loss(logits[: len(x_l)], y_l, logits[len(x_l):], y_p, alpha)
            else:
                loss, loss_l, loss_p = combined_loss(model(options.layout(x_l)), y_l, None, None, 0.0)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            position.global_step += 1
            position.step_in_epoch += 1
            progress.update(1)
            if position.global_step % plan.log_every == 0:
                log(
                    {
                        "train/loss": mean_across_processes(accelerator, loss.item()),
                        "train/loss_labeled": mean_across_processes(accelerator, loss_l.item()),
                        "train/loss_pseudo": mean_across_processes(accelerator, loss_p.item()),
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
