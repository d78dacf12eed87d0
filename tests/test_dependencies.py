"""Every third-party module plabel or its tests import is declared in pyproject.toml, so
``pip install -e '.[test]'`` in a fresh venv is all a machine needs."""

from __future__ import annotations

import ast
import re
import sys
import tomllib

from helpers import ROOT

# import name -> distribution name, where they differ
DISTRIBUTIONS = {"yaml": "pyyaml", "PIL": "pillow", "huggingface_hub": "huggingface_hub", "sklearn": "scikit-learn"}
# imported only where absent is handled (the line says how to install it), or only on a machine with them
OPTIONAL = {"torch_xla", "lomo_optim", "slurm"}


def _imports(folder: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("plabel", "__future__"):
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _declared(*extras: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + [s for e in extras for s in project["optional-dependencies"][e]]
    return {re.split(r"[<>=!~\[; ]", s, maxsplit=1)[0].lower().replace("-", "_") for s in specs}


def _missing(found: dict[str, set[str]], declared: set[str], local: set[str] = frozenset()) -> dict[str, set[str]]:
    return {name: files for name, files in found.items()
            if DISTRIBUTIONS.get(name, name).lower().replace("-", "_") not in declared and name not in OPTIONAL | local}


def test_the_package_declares_what_it_imports():
    assert _missing(_imports("plabel"), _declared("export")) == {}


def test_the_tests_declare_what_they_import():
    local = {p.stem for p in (ROOT / "tests").glob("*.py")}  # helpers, own_data, ...
    assert _missing(_imports("tests"), _declared("test", "export"), local) == {}
