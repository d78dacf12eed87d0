"""Building what a run (and the commands and reports that reuse its pieces) trains with: the
Accelerator, loader options, the optimizer, the number of classes."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import multiprocessing.context
import multiprocessing.popen_fork
import multiprocessing.queues
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker
from accelerate.utils import InitProcessGroupKwargs

from plabel.config import ConfigError, RunConfig
from plabel.data.base import UnreadableImage
from plabel.data.splits import Splits
from plabel.distributed.collectives import gather_lists, shard_range
from plabel.trainer.faults import WORKER_IGNORED_SIGNALS
from plabel.trainer.trackers import resolve_wandb_mode


@dataclass(frozen=True)
class LoaderOptions:
    """How batches are loaded and laid out; the same for training and scoring."""

    num_workers: int = 0
    persistent_workers: bool = False
    pin_memory: bool = False
    channels_last: bool = False

    def dataloader_kwargs(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "persistent_workers": self.persistent_workers and self.num_workers > 0,
            "pin_memory": self.pin_memory,
            "worker_init_fn": ignore_preemption_signals if self.num_workers > 0 else None,
            "multiprocessing_context": worker_context() if self.num_workers > 0 else None,
        }

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x


def ignore_preemption_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM/SIGUSR1 (and Ctrl-C's SIGINT) to their training process,
    which checkpoints and then ends them. A scheduler or launcher signals the whole process group; a worker dying of it
    would crash the training step ("DataLoader worker is killed by signal") before the checkpoint.
    Workers still end with their process (torch's loaders watch their parent). The workers start
    with these signals blocked (``worker_context``); one that arrived before this point is
    pending, and ignoring it discards it."""
    for sig in WORKER_IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_IGNORED_SIGNALS)


class _KillOnTerminate(multiprocessing.popen_fork.Popen):
    """``terminate()`` sends SIGKILL: the workers ignore SIGTERM, so torch's shutdown and
    multiprocessing's exit handler (terminate, then join) would otherwise wait for them forever
    (an interpreter leaving with a loader still iterating hung at exit)."""

    def terminate(self) -> None:
        self.kill()


def _feeder_is_closing(thread: threading.Thread) -> bool:
    """Whether a queue's feeder thread is on its way out: its queue was closed (the close sentinel
    waits in its buffer) or it has closed its end of the pipe. A feeder's arguments are multiprocessing's
    ``Queue._feed(buffer, notempty, send_bytes, writelock, reader_close, writer_close, ...)``;
    on a Python laid out otherwise every feeder counts as live (the short wait)."""
    args = getattr(thread, "_args", ())
    if len(args) < 6:
        return False
    buffer, writer_close = args[0], args[5]
    try:
        if any(item is multiprocessing.queues._sentinel for item in list(buffer)):  # type: ignore[attr-defined]
            return True
        # a live feeder writes to its pipe; one that closed it is past the sentinel, leaving
        return bool(getattr(getattr(writer_close, "__self__", None), "closed", False))
    except (TypeError, RuntimeError, AttributeError):
        return False


def _let_closing_feeders_finish(live_wait_s: float = 0.5, closing_wait_s: float = 10.0) -> None:
    """Fork only once the queue feeder threads of a loader just shut down have exited. CPython 3.11
    re-initialises its thread-state lock only after the forked child has used it, so a fork while
    another thread holds it leaves the worker stuck inside os.fork() for ever (seen: a worker of
    the test pass, forked as the training loader's feeders were exiting; its rank then waits in
    the next collective). A closing feeder exits as soon as it is scheduled, which on a loaded
    machine took longer than half a second (a preemption test then hung after "scoring the
    pool"): those are waited for up to ``closing_wait_s``. Live feeders (a persistent loader's)
    never exit and cost at most ``live_wait_s`` in all."""
    start = time.monotonic()
    for thread in threading.enumerate():
        if thread.name != "QueueFeederThread" or thread is threading.current_thread():
            continue
        budget = closing_wait_s if _feeder_is_closing(thread) else live_wait_s
        thread.join(max(0.0, start + budget - time.monotonic()))


class _BlockedSignalsProcess(multiprocessing.context.ForkProcess):
    """A fork whose child starts with the preemption signals blocked. torch's worker installs a
    C handler that dies of SIGTERM before ``worker_init_fn`` can ignore it; a launcher signalling
    the process group just as a round's loader starts its workers killed one in that window."""

    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _KillOnTerminate(process_obj)

    def start(self) -> None:
        _let_closing_feeders_finish()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_IGNORED_SIGNALS)
        try:
            super().start()
        finally:
            # A signal that came meanwhile is delivered to this (training) process now.
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _BlockedSignalsContext(multiprocessing.context.ForkContext):
    Process = _BlockedSignalsProcess  # type: ignore[assignment]


def worker_context() -> Optional[multiprocessing.context.BaseContext]:
    """The loader workers' start method: fork with the preemption signals blocked where this
    platform forks (Linux: Python's and torch's default there), else the platform's default."""
    if not hasattr(signal, "pthread_sigmask") or "fork" not in multiprocessing.get_all_start_methods():
        return None
    if multiprocessing.get_context().get_start_method() != "fork":
        return None  # spawn/forkserver (chosen, or this Python's default): keep it
    return _BlockedSignalsContext()


def build_accelerator(cfg: RunConfig, extra_trackers: Sequence[GeneralTracker] = ()) -> tuple[Accelerator, str]:
    """The run's Accelerator (trackers attached, not started) and the W&B mode it resolved to."""
    wandb_mode = resolve_wandb_mode(cfg.tracking)
    log_with: list[Any] = (["wandb"] if wandb_mode != "disabled" else []) + list(extra_trackers)
    accelerator = Accelerator(
        # Without CUDA, Accelerate only joins launched processes into one (gloo) group when told
        # it is on CPU; otherwise each process silently trains alone.
        cpu=not torch.cuda.is_available(),
        mixed_precision=cfg.train.mixed_precision,
        log_with=log_with or None,
        kwargs_handlers=[InitProcessGroupKwargs(timeout=dt.timedelta(seconds=cfg.collective_timeout_s))],
    )
    if accelerator.device.type == "cpu":
        # `accelerate launch` exports OMP_NUM_THREADS=1 even for a single process, which would
        # leave all but one core idle; share this machine's cores among its processes instead.
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        torch.set_num_threads(cfg.train.cpu_threads or max(1, len(os.sched_getaffinity(0)) // local_processes))
    return accelerator, wandb_mode


def auto_workers(device_type: str, local_processes: int, cpus: int) -> int:
    """``data.num_workers`` left unset: on a GPU, enough loader workers to keep it fed (the GPU
    check measured a quick start's step 3x slower when one process decoded and augmented alone),
    one CPU per process kept for the training loop; on the CPU, none (they would take the cores
    the model computes on)."""
    if device_type != "cuda":
        return 0
    return max(0, min(8, cpus // max(1, local_processes) - 1))


def loader_options(cfg: RunConfig, accelerator: Accelerator) -> LoaderOptions:
    pin = cfg.data.pin_memory if cfg.data.pin_memory is not None else accelerator.device.type == "cuda"
    workers = cfg.data.num_workers
    if workers is None:
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        workers = auto_workers(accelerator.device.type, local_processes, len(os.sched_getaffinity(0)))
    # Persistent by default: a round's loaders otherwise start their workers again every epoch.
    persistent = cfg.data.persistent_workers if cfg.data.persistent_workers is not None else workers > 0
    return LoaderOptions(workers, persistent, pin, cfg.train.channels_last)


def _cache_lomo_lookup() -> None:
    """Accelerate's optimizer step asks twice a step whether the ``lomo_optim`` package is installed,
    each time a fresh ``importlib`` search of sys.path (0.2 ms a step on the development CPU, the
    main cost beside the model on a small one). Whether a package is installed does not change
    during a run: remember the answer. Nothing else in Accelerate's step changes."""
    import functools

    import accelerate.optimizer as accelerated

    lookup = getattr(accelerated, "is_lomo_available", None)
    if lookup is not None and not hasattr(lookup, "cache_info"):
        accelerated.is_lomo_available = functools.cache(lookup)


_cache_lomo_lookup()


def make_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.train.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.train.lr, momentum=0.9, nesterov=True, weight_decay=cfg.train.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)


def reset_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Forget moments between rounds: each round restarts its learning-rate schedule."""
    inner = getattr(optimizer, "optimizer", optimizer)
    inner.state.clear()


def check_batch_split(cfg: RunConfig, world: int) -> None:
    """Batch sizes are global and split across processes: each process needs at least one sample."""
    for name, value in (("train.batch_size", cfg.train.batch_size), ("train.pseudo_batch_size", cfg.train.pseudo_batch_size)):
        if value < world:
            raise ConfigError(
                f"{name}: {value} is smaller than the {world} processes; batch sizes are global (split across "
                f"processes), so give at least {world} or launch fewer processes"
            )


def check_num_classes(cfg: RunConfig, splits: Splits) -> int:
    """The model's output count: the data's classes, or ``model.num_classes`` if it covers them."""
    if cfg.model.num_classes is None:
        return splits.num_classes
    highest = max(int(splits.train_source.labels.max()), int(splits.test_source.labels.max()))
    if highest >= cfg.model.num_classes:
        raise ConfigError(
            f"model.num_classes: labels go up to {highest} but the model has {cfg.model.num_classes} outputs "
            f"(labels must lie in 0..{cfg.model.num_classes - 1}); raise model.num_classes or fix data.train.label_column"
        )
    return cfg.model.num_classes


def check_readable(accelerator: Accelerator, splits: Splits) -> None:
    """Decode every labeled and test image once (each process a share): one that cannot be read
    stops the run here, named, instead of at the end of round 0. Pool images are checked as they
    are scored, and skipped."""
    for what, source, indices in (
        ("labeled", splits.train_source, splits.labeled_source_indices),
        ("test", splits.test_source, splits.test_source_indices),
    ):
        if not source.may_fail:
            continue
        mine = shard_range(accelerator, int(indices.numel()))
        bad: list[str] = []
        for index in indices[mine.start : mine.stop].tolist():
            try:
                source.image(int(index))
            except UnreadableImage as e:
                bad.append(str(e))
        bad = gather_lists(accelerator, bad)
        if bad:
            more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
            raise ConfigError(
                f"data.{'train' if what == 'labeled' else 'test'}: unreadable {what} image {bad[0]}{more}; "
                f"fix or remove the file{'s' if len(bad) > 1 else ''}"
            )


def data_notes(cfg: RunConfig, splits: Splits) -> list[str]:
    """What a user of their own data should know about the split (printed once, at the start)."""
    if cfg.data.unlabeled.source == "none":
        return list(splits.notes)
    held = int(splits.val_source_indices.numel())
    split = f"{splits.labeled_source_indices.numel()} for training" + (f", {held} validation" if held else "")
    notes = list(splits.notes) + [f"note: own data: every sample of data.train is labeled ({split}); data.labeled_per_class is not used"]
    n = int(splits.test_source_indices.numel())
    if cfg.data.test.source == "holdout" and n < 1000:
        notes.append(
            f"note: the test set is {n} labeled samples held out of data.train: small, so test accuracy moves in steps of "
            f"{100 / n:.2f} points and is uncertain by up to ±{98 / n ** 0.5:.1f} points (95%); give a separate labeled "
            "test set with data.test.source/name for a firmer number"
        )
    return notes


def launcher_precision_note(cfg: RunConfig, accelerator: Accelerator) -> Optional[str]:
    """A line when the config's train.mixed_precision overrides what ``accelerate launch`` was told."""
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if cfg.train.mixed_precision is not None and launcher and launcher != cfg.train.mixed_precision:
        return (f"note: train.mixed_precision {cfg.train.mixed_precision!r} overrides the launcher's {launcher!r} "
                "(accelerate launch --mixed_precision or its config file); leave it unset to follow the launcher")
    return None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")), ""
    ) if cpuinfo.is_file() else ""
    return f"cpu ({model})" if model else "cpu"


def _git_commit() -> Optional[str]:
    """The commit of the plabel source this run uses (``-dirty`` when it has local changes)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def run_facts(accelerator: Accelerator) -> dict[str, Any]:
    """What ran, beside the config: effective precision, processes and their devices, versions."""
    from plabel import __version__

    devices = gather_lists(accelerator, [_device_name(accelerator.device)])
    return {
        "mixed_precision": accelerator.mixed_precision, "num_processes": accelerator.num_processes,
        "devices": devices, "plabel_version": __version__, "torch_version": torch.__version__,
        "git_commit": _git_commit() if accelerator.is_main_process else None,
    }
