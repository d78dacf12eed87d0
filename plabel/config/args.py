"""The command line of ``train.py`` (and of the commands that take a run config), built from the
schema: every config field is an option (``--train.epochs 5``), and ``key=value`` words work
too. Values are read as YAML scalars or lists (``--pseudo.top_k_percent [20,40]``); string
fields keep the text as typed; booleans are also flags (``--pseudo.accumulate``,
``--no-pseudo.accumulate``). Options are spelt with underscores, as Hugging Face and Accelerate
spell theirs; the hyphenated spelling (``--train.batch-size``, ``--output-dir``) is accepted
everywhere too. A parse error is a :class:`ConfigError` (one line), not argparse's usage dump.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence

from plabel.config.load import SECTION_ALIASES, iter_fields, load_config, parse_value
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


def canonical_option(word: str) -> str:
    """``--train.batch-size=8`` -> ``--train.batch_size=8``; ``--no_x`` -> ``--no-x``; other words unchanged."""
    if not word.startswith("--") or word == "--":
        return word
    name, eq, value = word[2:].partition("=")
    negated = name.startswith(("no-", "no_"))
    name = name[3:] if negated else name
    return "--" + ("no-" if negated else "") + name.replace("-", "_") + eq + value


def _is_bool(tp: Any) -> bool:
    return tp is bool or (typing.get_origin(tp) in (typing.Union, types.UnionType) and bool in typing.get_args(tp))


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; we want the one line that says what to fix. Option
    names are read in their canonical spelling (:func:`canonical_option`)."""

    def parse_known_args(self, args: Optional[Sequence[str]] = None, namespace: Any = None) -> Any:  # type: ignore[override]
        words = list(args) if args is not None else sys.argv[1:]
        return super().parse_known_args([canonical_option(w) for w in words], namespace)

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            words = message.removeprefix("unrecognized arguments: ")
            raise ConfigError(f"{words}: unknown config key; run with --help for every option")
        raise ConfigError(f"{message}; run with --help for every option")


class SpellingsParser(argparse.ArgumentParser):
    """A parser for the experiment and benchmark commands: every long option answers to both
    spellings, ``--test-root`` and ``--test_root`` (as ``train.py`` and the ``plabel`` commands do)."""

    def add_argument(self, *names: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        spelled = list(names)
        for name in names:
            if isinstance(name, str) and name.startswith("--"):
                for other in ("--" + name[2:].replace("-", "_"), "--" + name[2:].replace("_", "-")):
                    if other not in spelled:
                        spelled.append(other)
        return super().add_argument(*spelled, **kwargs)

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", SpellingsParser)
        return super().add_subparsers(**kwargs)


def _escape_percent(text: str) -> str:
    # argparse %-formats help strings; the schema's help says "k%" and "5%" as plain text.
    return text.replace("%", "%%")


def _aliases(name: str) -> list[str]:
    """Other spellings of option ``name``: --data.labeled.root for --data.train.root."""
    return [f"--{alias}{name[len(section):]}" for alias, section in SECTION_ALIASES.items() if name.startswith(section + ".")]


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
        if _is_bool(tp):
            # A flag alone means true; a value still works (--pseudo.accumulate false), as does --no-<name>.
            parser.add_argument(
                f"--{name}", dest=name, default=argparse.SUPPRESS, metavar="BOOL", nargs="?", const="true",
                help=_escape_percent(f"{help_text} (default: {default!r}; --no-{name} for false)"),
            )
            parser.add_argument(
                f"--no-{name}", dest=name, action="store_const", const="false", default=argparse.SUPPRESS, help=argparse.SUPPRESS
            )
            continue
        parser.add_argument(
            f"--{name}", *_aliases(name), dest=name, default=argparse.SUPPRESS, metavar="VALUE",
            help=_escape_percent(f"{help_text}{_literal_choices(tp)} (default: {default!r})"),
        )
    sweep = parser.add_argument_group("one run of a plabel sweep (what a W&B sweep agent passes)")
    sweep.add_argument("--grid", default=None, help="a sweep's grid file: its base config and the row's overrides, under the options given here")
    sweep.add_argument("--row", default=None, help="the grid's row to run (with --grid)")
    sweep.add_argument("--sweep_out", default=None, help="the sweep's folder (with --grid; default runs/sweeps/<grid name>)")
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
        key = key.lstrip("-").replace("-", "_")
        for alias, section in SECTION_ALIASES.items():
            if key.startswith(alias + "."):
                key = section + key[len(alias):]
        if key not in types_by_name:
            raise ConfigError(f"{key}: unknown config key; run with --help for the list")
        raw[key] = value
    return {key: typed_value(types_by_name[key], text) for key, text in raw.items()}


def typed_value(tp: Any, text: str) -> Any:
    """Command-line text for a field of annotation ``tp``: free text for string fields, else YAML."""
    if accepts_str(tp) and text not in ("null", "None", "~"):
        return text
    return parse_value(text)


# ``--grid G --row R``: (args, overrides) -> (config file, overrides) of that sweep run. The sweeps
# layer provides it (plabel.sweeps.runs.planned_run); config never imports sweeps.
SweepHook = Callable[[argparse.Namespace, dict[str, Any]], tuple[Optional[str], dict[str, Any]]]


def resolve_config(argv: Optional[Sequence[str]] = None, prog: str = "train.py", sweep: Optional[SweepHook] = None) -> tuple[RunConfig, str]:
    """Parse argv into a validated config and a short name for the run folder (``sweep``: how
    ``--grid``/``--row`` name a sweep's run; without it they are refused)."""
    words = [canonical_option(w) for w in (argv if argv is not None else sys.argv[1:])]
    _refuse_both_spellings(words)
    args = build_parser(prog).parse_args(argv)
    overrides = parse_overrides(args)
    config_path = args.config
    if args.grid or args.row:
        if not (args.grid and args.row):
            raise ConfigError("--grid and --row: give both (a grid file and one of its rows)")
        if sweep is None:
            raise ConfigError("--grid and --row: name a sweep's run for train.py and plabel train only")
        config_path, overrides = sweep(args, overrides)
    cfg = load_config(config_path, overrides)
    return cfg, config_name(config_path)


def _refuse_both_spellings(words: list[str]) -> None:
    """--data.labeled.X and --data.train.X name one field: giving both is ambiguous, not last-wins."""
    given = {w[2:].split("=", 1)[0] for w in words if w.startswith("--")}
    for alias, section in SECTION_ALIASES.items():
        for name in given:
            if name.startswith(alias + ".") and section + name[len(alias):] in given:
                raise ConfigError(f"--{name}: the same field as --{section}{name[len(alias):]}; give one of them")


def config_name(config_path: Optional[str]) -> str:
    """The name a run folder starts with: the config file's stem, or ``default``."""
    return Path(config_path).stem if config_path else "default"
