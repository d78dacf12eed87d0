"""Stopping cleanly: preemption signals, and named fault points for the resume tests.

SLURM (and most schedulers) send SIGTERM, or a requested signal such as SIGUSR1, some time
before killing a job. The handler only sets a flag; the training loop checks it at each step
boundary on every process (one all-reduce) so all processes stop at the same step, write one
checkpoint and exit with EXIT_PREEMPTED.
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Optional

from accelerate import Accelerator

from plabel.distributed.collectives import any_process

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again later" - rerun the same command to resume

_signal_received: Optional[int] = None


def _handler(signum: int, frame: Optional[FrameType]) -> None:
    # A second signal while the checkpoint is being written changes nothing: the flag is
    # already set, and the checkpoint is only published by an atomic rename when complete.
    global _signal_received
    if _signal_received is None:
        _signal_received = signum


def install_preemption_handlers() -> None:
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, _handler)


def reset_preemption_flag() -> None:
    global _signal_received
    _signal_received = None


def stop_requested(accelerator: Accelerator) -> bool:
    """True on every process when any process has received a preemption signal."""
    return any_process(accelerator, _signal_received is not None)


class Preempted(Exception):
    """Raised after the preemption checkpoint is written."""


def fault_point(name: str, accelerator: Accelerator) -> None:
    """Test hook: ``PLABEL_FAULT=<name>@<rank>:<kill|raise>`` makes that rank die at ``name``.

    Names: ``step:<round>:<epoch>:<step>`` (after that step's update), ``scored:<round>``
    (after scoring, before selection), ``checkpoint:<global_step>`` (checkpoint files
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
    os.kill(os.getpid(), signal.SIGKILL)
