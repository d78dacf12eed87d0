"""The committed sweep grids: each loads and checks as `plabel sweep` would, and the field set's
grids are what their generator writes (configs/sweeps/field-*.yaml say "edit that, not this file")."""

from __future__ import annotations

import pytest
import yaml
from helpers import ROOT

from plabel.experiments.field.grids import GRIDS
from plabel.sweeps.grid import load_grid

GRID_FILES = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", GRID_FILES, ids=[p.stem for p in GRID_FILES])
def test_every_committed_grid_loads(path):
    grid = load_grid(path)  # unknown option, bad value, duplicate row: a ConfigError here
    assert grid.rows and grid.seeds


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_each_field_grid_is_its_generators(name):
    spec = GRIDS[name]()
    spec.pop("_comment")
    committed = yaml.safe_load((ROOT / "configs" / "sweeps" / f"{name}.yaml").read_text())
    assert committed == spec, f"configs/sweeps/{name}.yaml: rerun python -m plabel.experiments.field.grids {name}"
