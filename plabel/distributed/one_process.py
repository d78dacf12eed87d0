"""The one-process launch: signals go to the training process, never a kill of its process tree.

accelerate (1.16) answers Ctrl-C or SIGTERM on its one-process launcher by terminating the child's
whole process tree, W&B's helper included, and SIGKILLing whatever is left 5 s later: a
checkpoint that takes longer is cut off, and W&B's helper is gone before the run can close it
(a warning line, or a traceback from W&B's exit hook). ``plabel launch`` runs that child here
instead: the training process stops on its own (trainer/faults.py: a checkpoint, one line,
exit 75 or 130) and the launcher waits for it.
"""

from __future__ import annotations

import signal
import subprocess
from types import FrameType
from typing import Any, Optional

# What a scheduler sends the launcher alone (SLURM's --signal to the batch step, `kill <pid>`):
# passed on. A terminal's Ctrl-C already reaches the child (the same process group), so the
# launcher only lets it pass: forwarding it too would be a second press ("stop at once").
FORWARDED = (signal.SIGTERM, signal.SIGUSR1)


def run_child(cmd: list[str], current_env: dict[str, str], quiet: bool = False) -> None:
    """Run ``cmd`` as accelerate's one-process launcher does (same command and environment), and
    raise ``CalledProcessError`` with its exit status when it fails. ``quiet`` (``--quiet``) is
    taken for accelerate's signature and changes nothing: accelerate would exit 1 instead, but
    ``plabel launch`` passes the run's own status on (75 and 130 say "rerun to resume")."""
    process = subprocess.Popen(cmd, env=current_env)

    def forward(signum: int, frame: Optional[FrameType]) -> None:
        if process.poll() is None:
            process.send_signal(signum)

    def let_pass(signum: int, frame: Optional[FrameType]) -> None:
        pass

    # Set after the child started: a handler set before would be reset at its exec anyway, but an
    # ignored signal would not.
    previous: dict[int, Any] = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, let_pass)
    try:
        process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if process.returncode != 0:
        raise subprocess.CalledProcessError(returncode=process.returncode, cmd=cmd)


def use_for_accelerate() -> None:
    """Make accelerate's one-process launcher run its child through :func:`run_child`. Versions
    without ``_run_subprocess`` (before 1.16) wait on the child themselves and kill no tree."""
    import threading

    import accelerate.commands.launch as accelerate_launch

    if hasattr(accelerate_launch, "_run_subprocess") and threading.current_thread() is threading.main_thread():
        accelerate_launch._run_subprocess = run_child
