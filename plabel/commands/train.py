"""``train.py`` / ``plabel train``: parse the config, run, and turn the expected endings that are
not success into exit codes (user error: 2; preempted after a checkpoint: 75; Ctrl-C: 130)."""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from plabel.commands.common import run_command
from plabel.config.args import resolve_config
from plabel.distributed.processes import EXIT_INTERRUPTED, EXIT_PREEMPTED, launcher_main

# Read at import, as early as a worker can: the launcher that started this process. If it dies
# before watch_parent runs, the pid no longer matches and the worker stops at once.
PARENT_PID = os.getppid()


def train_main(argv: Optional[Sequence[str]] = None, prog: str = "train.py", watch_launcher: bool = False) -> int:
    """Run training; ``watch_launcher`` (the process's own entry point only): stop with the launcher."""

    def body() -> int:
        from plabel.sweeps.runs import planned_run

        cfg, name = resolve_config(argv, prog, sweep=planned_run)
        from plabel.data.precheck import precheck

        precheck(cfg)  # what a folder listing shows, before any image is read
        # Heavy imports after argument parsing, so --help and config errors answer at once.
        from plabel.trainer import faults
        from plabel.trainer.run import run

        if watch_launcher:
            faults.watch_parent(PARENT_PID, int(os.environ.get("WORLD_SIZE", "1")))
        try:
            with faults.interrupt_stops_the_run(prog):
                run(cfg, config_name=name)
        except faults.Preempted as stop:
            how = "interrupted" if faults.interrupted() else "preempted"
            if launcher_main():
                # What was kept is in the reason (a checkpoint, the pool pass's finished part, or nothing
                # when round 0's augmentation trials were stopped).
                print(f"{prog}: {how} ({stop}); run the same command again to resume", file=sys.stderr)
            return EXIT_INTERRUPTED if faults.interrupted() else EXIT_PREEMPTED
        return 0

    return run_command(prog, body)
