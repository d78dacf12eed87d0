"""A sweep's grid file: a base config, rows (a name, a description, train.py overrides) and seeds.

    # plabel sweep configs/sweeps/ablation.yaml --backend local --jobs 2
    name: ablation                 # the W&B group; runs go to runs/sweeps/<name>/<row>/seed<k>/
    base: ../default.yaml          # optional train.py --config (relative to this file)
    options: {data.test_holdout: 1000}   # optional overrides every row gets
    seeds: [0, 1, 2]
    rows:
      - name: default
        description: the shipped default
        overrides: {}
      - name: random
        description: random picks of the same counts
        overrides: {pseudo.score: random}
    slurm: {gpus: 1, cpus: 8, time: "02:00:00", max_parallel: 8, partition: null, account: null}

Every row is checked as a whole train.py config before anything runs or is submitted: an unknown
option, a wrong type, a duplicate row name or an empty grid is one line naming the row and field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from plabel.config import ConfigError, load_config
from plabel.config.load import SECTION_ALIASES, iter_fields

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# What a grid can ask to be measured on every finished run, beside its summary (plabel.sweeps.table):
# corrupted = test accuracy of the final weights on a corrupted copy of the test set (Gaussian pixel
# noise and small rotations, plabel.sweeps.evaluations), cached in the run folder; junk_kinds =
# the junk in the last round's selection by kind (a dirty pool); class_histogram = the last
# selection's pseudo-labels per class (the row's last seed).
EVALUATIONS = ("corrupted", "junk_kinds", "class_histogram")
SLURM_KEYS = ("gpus", "cpus", "time", "max_parallel", "partition", "account", "processes")


@dataclass(frozen=True)
class Row:
    name: str
    description: str
    overrides: dict[str, Any]


@dataclass(frozen=True)
class Grid:
    path: Path
    name: str
    base: Optional[Path]
    options: dict[str, Any]
    seeds: list[int]
    rows: list[Row]
    slurm: dict[str, Any] = field(default_factory=dict)
    evaluate: list[str] = field(default_factory=list)  # extra measures of each finished run (EVALUATIONS)

    def row(self, name: str) -> Row:
        for row in self.rows:
            if row.name == name:
                return row
        raise ConfigError(f"{self.path}: no row {name!r}; rows: {', '.join(r.name for r in self.rows)}")

    def overrides(self, row: Row) -> dict[str, Any]:
        """What train.py gets for this row: the grid's options, then the row's."""
        return {**self.options, **row.overrides}

    def runs(self) -> list[tuple[Row, int]]:
        return [(row, seed) for row in self.rows for seed in self.seeds]


def _canonical(key: str) -> str:
    key = key.lstrip("-").replace("-", "_")
    for alias, section in SECTION_ALIASES.items():
        if key.startswith(alias + "."):
            key = section + key[len(alias):]
    return key


def load_grid(path: str | Path, extra: Optional[dict[str, Any]] = None) -> Grid:
    """Read and check a grid file; a ConfigError (one line) for anything wrong in it.

    ``extra``: options for every run given on the command line (a machine's data path), on top of
    the grid's ``options``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: grid file does not exist; see configs/sweeps/ for examples")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a grid file is a mapping with name, seeds and rows")
    unknown = sorted(set(data) - {"name", "base", "options", "seeds", "rows", "slurm", "evaluate"})
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; a grid has name, base, options, seeds, rows, slurm, evaluate")
    evaluate = data.get("evaluate") or []
    if not isinstance(evaluate, list) or set(evaluate) - set(EVALUATIONS):
        raise ConfigError(f"{path}: evaluate takes a list of {', '.join(EVALUATIONS)}")
    name = str(data.get("name") or path.stem)
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{path}: name {name!r} must be letters, digits, '.', '_' or '-' (it names folders and the W&B group)")
    base = (path.parent / data["base"]).resolve() if data.get("base") else None
    if base is not None and not base.is_file():
        raise ConfigError(f"{path}: base {data['base']!r} does not exist (paths are relative to the grid file)")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: seed listed twice in {seeds}")
    options = {**_overrides(data.get("options") or {}, f"{path}: options"), **_overrides(extra or {}, "plabel sweep")}
    rows_data = data.get("rows")
    if not isinstance(rows_data, list) or not rows_data:
        raise ConfigError(f"{path}: the grid has no rows; give rows: a list of name / description / overrides")
    rows: list[Row] = []
    for i, item in enumerate(rows_data):
        where = f"{path}: rows[{i}]"
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(f"{where}: a row is a mapping with name, description and overrides")
        extra = sorted(set(item) - {"name", "description", "overrides"})
        if extra:
            raise ConfigError(f"{where} {item['name']!r}: unknown key {extra[0]!r}; a row has name, description, overrides")
        row_name = str(item["name"])
        if not _NAME.fullmatch(row_name):
            raise ConfigError(f"{where}: row name {row_name!r} must be letters, digits, '.', '_' or '-' (it names a folder)")
        if any(r.name == row_name for r in rows):
            raise ConfigError(f"{where}: row name {row_name!r} is used twice; row names must be unique")
        rows.append(Row(row_name, str(item.get("description") or ""), _overrides(item.get("overrides") or {}, f"{where} {row_name!r}")))
    slurm = data.get("slurm") or {}
    if not isinstance(slurm, dict) or set(slurm) - set(SLURM_KEYS):
        raise ConfigError(f"{path}: slurm takes {', '.join(SLURM_KEYS)}")
    grid = Grid(path.resolve(), name, base, options, seeds, rows, slurm, list(evaluate))
    for row in rows:  # each row must make a valid train.py config
        try:
            load_config(base, {**grid.overrides(row), "seed": seeds[0]})
        except ConfigError as e:
            raise ConfigError(f"{path}: row {row.name!r}: {e}") from None
    return grid


def _overrides(values: Any, where: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: overrides are a mapping of train.py options (pseudo.score: random)")
    known = {name for name, *_ in iter_fields()}
    out = {}
    for key, value in values.items():
        name = _canonical(str(key))
        if name not in known:
            raise ConfigError(f"{where}: {key}: unknown train.py option; run train.py --help for every option")
        if name in ("output_dir", "seed"):
            raise ConfigError(f"{where}: {key}: set by the sweep (one folder and seed per run); take it out of the row")
        out[name] = value
    return out
