"""``docs/configuration.md``, generated from the schema so it cannot drift from it.

    python -m plabel.config.reference > docs/configuration.md

``tests/test_docs.py`` checks that the committed page is exactly what this prints.
"""

from __future__ import annotations

from typing import Any

from plabel.config.load import iter_fields, type_name
from plabel.config.schema import RunConfig

_INTRO = """# Configuration reference

Every option of `train.py` (and `plabel train`), generated from `plabel/config/schema.py` (and its sections) by
`python -m plabel.config.reference > docs/configuration.md`; a test fails when this page and the
schema disagree. Give an option as `--section.name VALUE` (hyphens also work: `--train.batch-size`),
as `section.name=VALUE`, or in a YAML file passed with `--config` (precedence: defaults < file <
command line). `data.labeled.*` is another name for `data.train.*`. How the command line behaves:
[command-line.md](command-line.md).
"""


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The whole page."""
    sections: dict[str, list[str]] = {}
    for name, tp, default, help_text in iter_fields(RunConfig()):
        section = name.split(".")[0] if "." in name else "run"
        sections.setdefault(section, []).append(
            f"| `{name}` | {_cell(type_name(tp))} | `{_cell(repr(default))}` | {_cell(help_text)} |"
        )
    out = [_INTRO]
    for section, rows in sections.items():
        out += [f"## {section}", "", "| option | type | default | what it does |", "|---|---|---|---|", *rows, ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
