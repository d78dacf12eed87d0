"""Docs that cannot drift: every relative link and anchor resolves, every option in a command of
README.md or docs/ exists, every file or module path named exists, the configuration page is what
the schema generates, and the README stays short."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from helpers import ROOT

from plabel.config.args import build_parser, canonical_option
from plabel.config.reference import render

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)\)|\!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {_slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def _prose(page: Path) -> str:
    return FENCE.sub("", page.read_text())


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_and_anchors_resolve(page):
    broken = []
    for match in LINK.finditer(_prose(page)):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        path_part, _, anchor = target.partition("#")
        file = (page.parent / path_part).resolve() if path_part else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target} (no such anchor)")
    assert not broken, f"{page.name}: {broken}"


def _commands(page: Path) -> list[list[str]]:
    """Shell commands in the page's code blocks, continuation lines joined, comments dropped."""
    out = []
    for block in FENCE.findall(page.read_text()):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith(("$ ", "PLABEL_")):
                line = line.lstrip("$ ")
            try:
                words = shlex.split(line)
            except ValueError:
                continue
            if words:
                out.append(words)
    return out


def _train_options() -> set[str]:
    parser = build_parser()
    return {s for action in parser._actions for s in action.option_strings}


def _command_options(name: str) -> set[str]:
    from plabel.commands.export import build_parser as export_parser
    from plabel.commands.score import build_parser as score_parser
    from plabel.commands.sweep import build_parser as sweep_parser

    parser = {"score": score_parser, "export": export_parser, "sweep": sweep_parser}[name]()
    return {s for action in parser._actions for s in action.option_strings}


def _options_after(words: list[str], start: int) -> list[str]:
    return [canonical_option(w).split("=", 1)[0] for w in words[start:] if w.startswith("--")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_option_in_a_command_exists(page):
    train, unknown = _train_options(), []
    for words in _commands(page):
        for i, w in enumerate(words):
            if w in ("train.py", "plabel") or w.endswith(".sbatch"):
                break
        else:
            continue
        if w == "plabel":
            command = words[i + 1] if i + 1 < len(words) else ""
            start = i + 2
            if command in ("score", "export", "sweep"):
                known = _command_options(command)
            elif command == "train":
                known = train
            elif command == "launch" and "train.py" in words[i:]:  # accelerate's options, then train.py's
                known, start = train, words.index("train.py", i) + 1
            else:
                continue
        else:
            known, start = train, i + 1
        unknown += [f"{' '.join(words[: i + 2])}: {o}" for o in _options_after(words, start) if o not in known]
    assert not unknown, f"{page.name}: {unknown}"


PATH = re.compile(r"`((?:plabel|tests|configs|launch|scripts|docs|results|\.ci)/[^`\s*<>]*)`")
MODULE = re.compile(r"python -m (plabel(?:\.\w+)+)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_path_and_module_named_exists(page):
    text = page.read_text()
    missing = [p for p in PATH.findall(text) if not (ROOT / p.rstrip(".,;:")).exists()]
    for module in MODULE.findall(text):
        parts = module.split(".")
        if not ((ROOT.joinpath(*parts).with_suffix(".py")).is_file() or (ROOT.joinpath(*parts) / "__main__.py").is_file()):
            missing.append(module)
    assert not missing, f"{page.name}: {missing}"


def test_configuration_page_is_what_the_schema_generates():
    assert (ROOT / "docs" / "configuration.md").read_text() == render(), (
        "docs/configuration.md is stale: python -m plabel.config.reference > docs/configuration.md"
    )


def test_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def _import_graph() -> dict[str, set[str]]:
    """plabel module -> the plabel modules it imports (at module level or inside functions)."""
    import ast

    graph: dict[str, set[str]] = {}
    for path in (ROOT / "plabel").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("plabel"):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("plabel"))
        graph[name] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_no_import_circle_in_plabel():
    graph, cycles = _import_graph(), []

    def walk(node: str, trail: list[str]) -> None:
        for nxt in graph[node]:
            if nxt in trail:
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in done:
                walk(nxt, trail + [nxt])
        done.add(node)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            walk(module, [module])
    assert not cycles, cycles[:3]


@pytest.mark.parametrize("module,argv", [
    ("plabel.experiments.ablation", ["--out", "x", "--test_root", "t", "--steps_per_epoch", "3"]),
    ("plabel.experiments.ablation", ["--out", "x", "--test-root", "t", "--steps-per-epoch", "3"]),
    ("plabel.bench.pool", ["--score_sample", "5", "--full-score-workers", "-1"]),
])
def test_experiment_and_benchmark_commands_take_both_spellings(module, argv, monkeypatch):
    import importlib

    captured = {}

    def parse_only(self, args=None, namespace=None):
        captured["args"] = original(self, args, namespace)
        raise SystemExit(0)

    from plabel.config.args import SpellingsParser

    original = SpellingsParser.parse_args
    monkeypatch.setattr(SpellingsParser, "parse_args", parse_only)
    with pytest.raises(SystemExit):
        importlib.import_module(module).main(argv)
    assert captured["args"] is not None


@pytest.mark.parametrize("command", ["train", "score", "export", "sweep", "report", "launch"])
def test_every_command_prints_its_help(command, capsys):
    """--help of every plabel command (a stray % in a help string once made `plabel sweep --help` crash)."""
    from plabel.cli import main

    try:
        code = main([command, "--help"])
    except SystemExit as ended:
        code = ended.code
    assert code == 0
    assert "usage:" in capsys.readouterr().out
