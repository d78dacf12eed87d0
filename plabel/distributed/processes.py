"""Which process acts: the global main process writes files and prints, and decides what every
process then follows. The only place plabel asks "am I the main process?".

Light on purpose (no torch import), so the command line can print a user error on the job's
first process before anything heavy is loaded.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

from plabel.config.schema import ConfigError

if TYPE_CHECKING:
    from accelerate import Accelerator

T = TypeVar("T")

# How a run that stopped early ends, whichever command it ran; both mean "rerun the same command to
# resume" (a sweep and its status read them so). Preempted: EX_TEMPFAIL, "try again later", after a
# checkpoint. Ctrl-C: 128 + SIGINT, what a shell reports for a Ctrl-C'd command.
EXIT_PREEMPTED = 75
EXIT_INTERRUPTED = 130
RESUMABLE_EXITS = (EXIT_PREEMPTED, EXIT_INTERRUPTED)


def launcher_main() -> bool:
    """Before an Accelerator exists: whether this is the job's first process (prints user errors)."""
    return os.environ.get("RANK", "0") == "0"


def print_once(accelerator: Accelerator, message: str) -> None:
    """Print once per job (the global main process), not once per node like ``accelerator.print``,
    and never glued to a progress bar being drawn (tqdm clears it, prints, redraws)."""
    if accelerator.is_main_process:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stdout)
        sys.stdout.flush()


def on_main(accelerator: Accelerator, action: Callable[[], T]) -> Optional[T]:
    """Run ``action`` (a file write, a tracker call) on the global main process only; None elsewhere."""
    return action() if accelerator.is_main_process else None


def decide_on_main(accelerator: Accelerator, decide: Callable[[], T]) -> T:
    """Run ``decide`` on the main process and return its result on every process.

    A :class:`ConfigError` raised there is raised on every process, so all of them stop with the
    same one-line message instead of the others waiting in the next collective.
    """
    result: Optional[T] = None
    error: Optional[str] = None
    if accelerator.is_main_process:
        try:
            result = decide()
        except ConfigError as err:
            error = str(err)
    error, result = share_from_main(accelerator, (error, result))
    if error:
        raise ConfigError(error)
    return result  # type: ignore[return-value]


def share_from_main(accelerator: Accelerator, obj: T) -> T:
    """Return the main process's ``obj`` on every process (a picklable object)."""
    if accelerator.num_processes == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    box: list[Any] = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]
