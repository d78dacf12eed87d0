"""The command line of ``train.py`` (and of the commands that take a run config), built from the
schema: every config field is an option (``--train.epochs 5``), and ``key=value`` words work
too. Values are read as YAML scalars or lists (``--pseudo.top_k_percent [20,40]``); string
fields keep the text as typed. A parse error is a :class:`ConfigError` (one line), not argparse's
usage dump.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, NoReturn, Optional, Sequence

from plabel.config.load import iter_fields, load_config, parse_value
from plabel.config.schema import ConfigError, RunConfig


def accepts_str(tp: Any) -> bool:
    """Whether a field of annotation ``tp`` takes free text (then its option is not YAML-parsed)."""
    if tp is str:
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(accepts_str(a) for a in typing.get_args(tp))
    return False


def _literal_choices(tp: Any) -> str:
    for arg in [tp, *typing.get_args(tp)]:
        if typing.get_origin(arg) is typing.Literal:
            return " {" + ",".join(str(a) for a in typing.get_args(arg)) + "}"
    return ""


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; we want the one line that says what to fix."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            words = message.removeprefix("unrecognized arguments: ")
            raise ConfigError(f"{words}: unknown config key; run with --help for every option")
        raise ConfigError(f"{message}; run with --help for every option")


def build_parser(prog: str = "train.py") -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="Semi-supervised training with entropy-selected pseudo-labels. "
        "Precedence: defaults < --config file < options given here.",
        allow_abbrev=False,  # --train.epoch must be an error, not a silent --train.epochs
    )
    parser.add_argument(
        "--config", default=None,
        help="experiment YAML (see configs/); without it the built-in defaults run, which configs/default.yaml spells out",
    )
    for name, tp, default, help_text in iter_fields():
        parser.add_argument(
            f"--{name}", dest=name, default=argparse.SUPPRESS, metavar="VALUE",
            help=f"{help_text}{_literal_choices(tp)} (default: {default!r})",
        )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.epochs=3")
    return parser


def parse_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted name -> typed value; string fields keep the text as typed."""
    types_by_name = {name: tp for name, tp, _, _ in iter_fields()}
    raw: dict[str, str] = {k: v for k, v in vars(args).items() if k in types_by_name}
    for word in args.overrides:
        if "=" not in word:
            raise ConfigError(f"{word}: expected key=value (e.g. train.epochs=3) or --key value")
        key, value = word.split("=", 1)
        key = key.lstrip("-")
        if key not in types_by_name:
            raise ConfigError(f"{key}: unknown config key; run with --help for the list")
        raw[key] = value
    return {key: typed_value(types_by_name[key], text) for key, text in raw.items()}


def typed_value(tp: Any, text: str) -> Any:
    """Command-line text for a field of annotation ``tp``: free text for string fields, else YAML."""
    if accepts_str(tp) and text not in ("null", "None", "~"):
        return text
    return parse_value(text)


def resolve_config(argv: Optional[Sequence[str]] = None, prog: str = "train.py") -> tuple[RunConfig, str]:
    """Parse argv into a validated config and a short name for the run folder."""
    args = build_parser(prog).parse_args(argv)
    cfg = load_config(args.config, parse_overrides(args))
    return cfg, config_name(args.config)


def config_name(config_path: Optional[str]) -> str:
    """The name a run folder starts with: the config file's stem, or ``default``."""
    return Path(config_path).stem if config_path else "default"
