"""The ``plabel`` console command: ``plabel <command> [options]``.

Each command's module is imported only when it runs, so ``plabel --help`` and a mistyped command
answer at once.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

from plabel.commands.common import EXIT_USER_ERROR

# command -> (module, function, one line for ``plabel --help``)
COMMANDS = {
    "train": ("plabel.commands.train", "train_main", "train with pseudo-label rounds (same options as train.py)"),
    "score": ("plabel.commands.score", "score_main", "score a dataset with a finished run's weights (CSV)"),
    "export": ("plabel.commands.export", "export_main", "a round's labeled + pseudo-labeled set as a HF dataset"),
    "launch": ("plabel.commands.launch", "launch_main", "accelerate launch train.py ..., with one line per mistake"),
    "sweep": ("plabel.commands.sweep", "sweep_main", "a grid of rows x seeds, locally or as a SLURM array, and its table"),
    "report": ("plabel.experiments.entropy_report", "report_main", "reports; 'plabel report entropy': the article's noise experiment"),
}


def usage() -> str:
    lines = ["usage: plabel <command> [options]   (plabel <command> --help: its options)", "", "commands:"]
    lines += [f"  {name:<8} {text}" for name, (_, _, text) in COMMANDS.items()]
    lines += ["", "  --version  print plabel's version"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``plabel <command> ...`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-V", "--version"):
        from plabel import __version__

        print(f"plabel {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else EXIT_USER_ERROR
    if argv[0] not in COMMANDS:
        print(f"plabel: error: unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)} (plabel --help)", file=sys.stderr)
        return EXIT_USER_ERROR
    module, function, _ = COMMANDS[argv[0]]
    command = getattr(importlib.import_module(module), function)
    if argv[0] == "train":
        return command(argv[1:], prog="plabel train", watch_launcher=True)
    if argv[0] == "report":
        return command(argv[1:], prog="plabel report")
    return command(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
