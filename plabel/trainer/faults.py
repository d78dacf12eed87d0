"""Stopping cleanly: preemption signals, and named fault points for the resume tests.

SLURM (and most schedulers) send SIGTERM, or a requested signal such as SIGUSR1, some time
before killing a job. The handler only sets a flag; the training loop checks it at each step
boundary on every process (one all-reduce) so all processes stop at the same step, write one
checkpoint and exit with EXIT_PREEMPTED (plabel/distributed/processes.py).
"""

from __future__ import annotations

import faulthandler
import functools
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from types import FrameType
from typing import Iterator, Optional

from accelerate import Accelerator

from plabel.distributed.collectives import any_process
from plabel.distributed.processes import EXIT_INTERRUPTED, launcher_main


# What a scheduler sends before it kills a job; loader workers are forked with them blocked
# (trainer/setup.py) so that only the training process acts on them.
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
STACK_DUMP_SIGNAL = signal.SIGUSR2
# Ctrl-C reaches every process of the terminal's foreground group, loader workers included (and
# torch's elastic agent forwards it to its workers): the workers leave it to training too.
WORKER_IGNORED_SIGNALS = (*PREEMPTION_SIGNALS, signal.SIGINT)

_signal_received: Optional[int] = None


def _handler(signum: int, frame: Optional[FrameType]) -> None:
    # A second signal while the checkpoint is being written changes nothing: the flag is
    # already set, and the checkpoint is only published by an atomic rename when complete.
    global _signal_received
    if _signal_received is None:
        _signal_received = signum


def _interrupt_handler(prog: str, signum: int, frame: Optional[FrameType]) -> None:
    # The first Ctrl-C stops the run as a preemption does (a checkpoint at the next step, then one
    # line). A second one stops at once: os._exit, because a KeyboardInterrupt raised wherever the
    # process stands (a loader worker handing over a batch) left tracebacks from other threads.
    # The newest complete checkpoint stays (one is published by an atomic rename or not at all),
    # the kernel releases the run folder's lock, and W&B's helper ends with its parent.
    global _signal_received
    if _signal_received is not None:
        import multiprocessing

        if launcher_main():
            print(f"{prog}: interrupted again: stopped at once; the newest checkpoint in the run folder is kept; "
                  "run the same command again to resume from it", file=sys.stderr, flush=True)
        for child in multiprocessing.active_children():  # loader workers would linger up to 5 s
            child.kill()
        sys.stdout.flush()
        os._exit(EXIT_INTERRUPTED)
    _signal_received = signum
    if launcher_main():  # after the progress line Ctrl-C cut, not on it
        lead = "\n" if sys.stderr.isatty() else ""
        print(f"{lead}interrupted: stopping at the next step to write a checkpoint (Ctrl-C again stops at once)",
              file=sys.stderr, flush=True)


@contextmanager
def interrupt_stops_the_run(prog: str) -> Iterator[None]:
    """Ctrl-C as a stop request while the ``prog`` command runs; the previous handler comes back
    after it (a test or script calling the command in-process keeps its KeyboardInterrupt, and
    :func:`plabel.trainer.run.run` called from Python never takes it over)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGINT, functools.partial(_interrupt_handler, prog))
    try:
        yield
    finally:
        if not interrupted():  # once stopped by Ctrl-C, a second press while the process ends is still "at once", 130
            signal.signal(signal.SIGINT, previous)


def interrupted() -> bool:
    """Whether the stop came from Ctrl-C (SIGINT) rather than a scheduler's signal."""
    return _signal_received == signal.SIGINT


def install_preemption_handlers() -> None:
    for sig in PREEMPTION_SIGNALS:
        signal.signal(sig, _handler)
    # A run that seems stuck: `kill -USR2 <pid>` prints every thread's Python stack to stderr and
    # the run goes on. faulthandler's handler is C-level, so it answers even while the main thread
    # waits in a collective or on a loader worker (and forked loader workers inherit it).
    # The process's own stderr: sys.stderr may be a stream without a file descriptor (a notebook,
    # pytest's capture), which faulthandler cannot write to.
    stream = sys.stderr if _has_fileno(sys.stderr) else sys.__stderr__
    if stream is not None and _has_fileno(stream):
        faulthandler.register(STACK_DUMP_SIGNAL, file=stream, all_threads=True, chain=False)


def _has_fileno(stream: object) -> bool:
    try:
        stream.fileno()  # type: ignore[attr-defined]
        return True
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return False


def watch_parent(parent_pid: int, world_size: int) -> None:
    """Never outlive the launcher: stop when the process that started this one dies.

    torch's elastic agent starts workers in their own sessions, so killing ``accelerate launch``
    (even its whole process group) leaves them running, still writing into the run folder. Here
    the kernel is asked for a signal when the parent dies (Linux ``PR_SET_PDEATHSIG``), and a
    thread also compares the parent pid every second (the parent may die before the request is
    made). With several processes the job cannot go on without its launcher: SIGKILL, nothing is
    written again. With one process, SIGTERM: the preemption path writes a checkpoint at the next
    step and exits, which is what ``accelerate launch`` (which does not forward signals to a
    single worker) would have wanted.
    """
    sig = signal.SIGKILL if world_size > 1 else signal.SIGTERM
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig))

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os.kill(os.getpid(), sig)

    threading.Thread(target=watch, name="plabel-parent-watch", daemon=True).start()


def reset_preemption_flag() -> None:
    global _signal_received
    _signal_received = None


def stop_requested(accelerator: Accelerator) -> bool:
    """True on every process when any process has received a preemption signal."""
    return any_process(accelerator, _signal_received is not None)


def stop_check_due(accelerator: Accelerator, global_step: int, epoch_ended: bool, every: int) -> bool:
    """Whether this step looks for a preemption signal: every step with one process (a local flag),
    else every ``every`` steps (``checkpoint.stop_check_every``) and at epoch ends. Every process
    decides alike, as each look is a collective the host waits for."""
    return accelerator.num_processes == 1 or epoch_ended or global_step % every == 0


class Preempted(Exception):
    """Raised after the preemption checkpoint is written."""


def fault_point(name: str, accelerator: Accelerator) -> None:
    """Test hook: ``PLABEL_FAULT=<name>@<rank>:<kill|raise>`` makes that rank die at ``name``.

    Names: ``step:<round>:<epoch>:<step>`` (after that step's update), ``scored:<round>``
    (after scoring, before selection), ``flush:<n>`` (the pool's pass, after its n-th flush; the
    action ``term`` sends this process SIGTERM instead of dying), ``checkpoint:<global_step>`` (checkpoint files
    partly written, not yet published). Used by the kill/resume and fault tests; unset in
    normal runs, where this is one dictionary lookup.
    """
    spec = os.environ.get("PLABEL_FAULT")
    if not spec:
        return
    target, _, rest = spec.partition("@")
    rank_text, _, action = rest.partition(":")
    if target != name or int(rank_text or 0) != accelerator.process_index:
        return
    if action == "raise":
        raise RuntimeError(f"injected fault at {name} on rank {accelerator.process_index}")
    if action == "term":  # a scheduler's preemption signal, delivered right here
        os.kill(os.getpid(), signal.SIGTERM)
        return
    os.kill(os.getpid(), signal.SIGKILL)
