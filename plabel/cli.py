"""Command line: ``train.py`` / ``plabel train`` share this parser and the config system.

Every config field is an option (``--train.epochs 5``); ``key=value`` words work too. Values
are read as YAML scalars or lists (``--pseudo.top_k_percent [20,40]``). A user error prints
one line and exits with status 2 before any training starts.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Optional, Sequence

from plabel.config import ConfigError, RunConfig, iter_fields, load_config, parse_value

EXIT_USER_ERROR = 2


def accepts_str(tp: Any) -> bool:
    if tp is str:
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(accepts_str(a) for a in typing.get_args(tp))
    return False


def _literal_choices(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return " {" + ",".join(str(a) for a in typing.get_args(tp)) + "}"
    return ""


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; we want the one line that says what to fix."""

    def error(self, message: str) -> typing.NoReturn:
        if message.startswith("unrecognized arguments: "):
            words = message.removeprefix("unrecognized arguments: ")
            raise ConfigError(f"{words}: unknown config key; run with --help for every option")
        raise ConfigError(f"{message}; run with --help for every option")


def build_parser(prog: str = "train.py") -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="Semi-supervised training with entropy-selected pseudo-labels. "
        "Precedence: defaults < --config file < options given here.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # --train.epoch must be an error, not a silent --train.epochs
    )
    parser.add_argument(
        "--config", default=None,
        help="experiment YAML (see configs/); without it the built-in defaults run, which configs/default.yaml spells out",
    )
    for name, tp, default, help_text in iter_fields(RunConfig):
        parser.add_argument(
            f"--{name}", dest=name, default=argparse.SUPPRESS, metavar="VALUE",
            help=f"{help_text}{_literal_choices(tp)} (default: {default!r})",
        )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.epochs=3")
    return parser


def parse_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted name -> typed value; string fields keep the text as typed."""
    types_by_name = {name: tp for name, tp, _, _ in iter_fields(RunConfig)}
    raw: dict[str, str] = {k: v for k, v in vars(args).items() if k in types_by_name}
    for word in args.overrides:
        if "=" not in word:
            raise ConfigError(f"{word}: expected key=value (e.g. train.epochs=3) or --key value")
        key, value = word.split("=", 1)
        key = key.lstrip("-")
        if key not in types_by_name:
            raise ConfigError(f"{key}: unknown config key; run with --help for the list")
        raw[key] = value
    out: dict[str, Any] = {}
    for key, text in raw.items():
        tp = types_by_name[key]
        if accepts_str(tp) and text not in ("null", "None", "~"):
            out[key] = text
        else:
            out[key] = parse_value(text)
    return out


def resolve_config(argv: Optional[Sequence[str]] = None, prog: str = "train.py") -> tuple[RunConfig, str]:
    """Parse argv into a validated config and a short name for the run folder."""
    args = build_parser(prog).parse_args(argv)
    cfg = load_config(args.config, parse_overrides(args))
    name = Path(args.config).stem if args.config else "default"
    return cfg, name


def is_main_launcher_process() -> bool:
    """Before Accelerate exists: print user errors once, not once per process."""
    return os.environ.get("RANK", "0") == "0"


def train_main(argv: Optional[Sequence[str]] = None, prog: str = "train.py") -> int:
    from plabel.run import run  # heavy imports after argument parsing, so --help is quick

    from plabel.faults import EXIT_PREEMPTED, Preempted

    try:
        cfg, name = resolve_config(argv, prog)
        run(cfg, config_name=name)
    except ConfigError as err:
        if is_main_launcher_process():
            print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Preempted as stop:
        if is_main_launcher_process():
            print(f"{prog}: preempted ({stop}); checkpoint written - run the same command again to resume", file=sys.stderr)
        return EXIT_PREEMPTED
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``plabel <command> ...`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from plabel.commands import export_main, score_main

    commands = {
        "train": lambda rest: train_main(rest, prog="plabel train"),
        "score": score_main,
        "export": export_main,
        # Imported on use: plabel.report loads torch, which would slow every --help.
        "report": lambda rest: __import__("plabel.report", fromlist=["report_main"]).report_main(rest, prog="plabel report"),
    }
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: plabel {" + ",".join(commands) + "} [options]   (plabel <command> --help for options)")
        return 0 if argv and argv[0] in ("-h", "--help") else EXIT_USER_ERROR
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
