"""``plabel launch``: ``accelerate launch`` for plabel, where a mistake is one line and an exit status.

    plabel launch train.py [training options]                                   # one process
    plabel launch --config_file launch/multi_gpu.yaml train.py [training options]   # every GPU of a node

The same options as ``accelerate launch`` (its own parser reads them), with three differences:

* the training options are checked here, before any process starts: a mistake that needs no image
  is ``train.py: error: <line>``, exit status 2, within a few seconds, and nothing is launched;
* launcher values nobody gave (no ``--config_file``, no ``accelerate config`` file) are set to
  Accelerate's own defaults without its warning, and said in one line;
* when a process ends with an error, the launcher adds nothing: no ``CalledProcessError`` or
  ``ChildFailedError`` traceback after the process's own line (or traceback), and the exit status
  is the process's (2: a user error, 75: preempted and checkpointed, 1: a crash).

``accelerate launch train.py ...`` keeps working as before.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from plabel.commands.common import EXIT_USER_ERROR, quiet_libraries
from plabel.config import ConfigError

PROG = "plabel launch"


def _is_plabel_train(script: str) -> bool:
    path = Path(script)
    return path.name == "train.py" and path.is_file() and "plabel" in path.read_text(errors="replace")[:4000]


def _check_training_options(script: str, options: Sequence[str]) -> Optional[int]:
    """Resolve the training options as train.py will; an exit status when they are wrong (or --help)."""
    from plabel.config.args import resolve_config
    from plabel.data.precheck import precheck

    try:
        from plabel.sweeps.runs import planned_run

        cfg, _ = resolve_config(list(options), Path(script).name, sweep=planned_run)
        precheck(cfg)
    except ConfigError as err:
        print(f"{Path(script).name}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except SystemExit as done:  # --help, or argparse's own usage error (already printed)
        return int(done.code or 0)
    return None


def _fill_defaults(args: Any) -> Optional[str]:
    """Accelerate's defaults for the values nobody gave, without its warning; the line that says so."""
    from accelerate.commands.config import default_config_file

    if args.config_file is not None or os.path.isfile(default_config_file):
        return None  # a config file gives them
    filled = []
    if args.num_processes is None:  # as Accelerate does: one per GPU found, else one
        import torch

        devices = torch.cuda.device_count() if torch.cuda.is_available() and not args.cpu else 0
        args.num_processes = max(devices, 1)
        args.multi_gpu = args.multi_gpu or devices > 1
        filled.append(f"{args.num_processes} process(es)")
    if args.num_machines is None:
        args.num_machines = 1
    if args.mixed_precision is None:
        args.mixed_precision = "no"
        filled.append("mixed precision no")
    if args.dynamo_backend is None:
        args.dynamo_backend = "no"
    return f"{PROG}: {', '.join(filled)} (Accelerate's defaults; --num_processes, --mixed_precision or --config_file set them)" if filled else None


def _exit_status(error: BaseException) -> int:
    """The failed process's own exit status, from the launcher's exception."""
    if isinstance(error, subprocess.CalledProcessError):
        return int(error.returncode) or 1
    failures = getattr(error, "failures", None) or {}  # torch's ChildFailedError: rank -> ProcessFailure
    codes = [int(getattr(f, "exitcode", 1) or 1) for f in failures.values()]
    # A user error on one rank stops the others (their status is the launcher's SIGTERM): report it.
    return EXIT_USER_ERROR if EXIT_USER_ERROR in codes else next((c for c in codes if c > 0), 1)


def _quiet_launcher_logs() -> None:
    """The launcher's own error report would repeat what the failing process printed, and its
    warnings on Ctrl-C ("Received 2 death signal, shutting down workers") what the run says in one
    line. torch gives some of its elastic loggers a level of their own at import, so the parent's
    level alone left those: they are imported here and each is set."""
    import torch.distributed.run  # noqa: F401  (imports the launcher, agent and process modules)

    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher", "torch.distributed.run")):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def launch_main(argv: Optional[Sequence[str]] = None) -> int:
    quiet_libraries()
    from accelerate.commands.launch import launch_command, launch_command_parser

    parser = launch_command_parser()
    parser.prog = PROG
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if _is_plabel_train(args.training_script):
        status = _check_training_options(args.training_script, args.training_script_args)
        if status is not None:
            return status
    note = _fill_defaults(args)
    if note:
        print(note, file=sys.stderr)
    _quiet_launcher_logs()
    from plabel.distributed.one_process import use_for_accelerate

    use_for_accelerate()
    try:
        launch_command(args)
    except Exception as error:
        if isinstance(error, subprocess.CalledProcessError) or type(error).__name__ == "ChildFailedError":
            return _exit_status(error)
        raise
    return 0
