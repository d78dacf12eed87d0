"""The field set's builder: a user's layout, pictures that depend only on (set, split, index, seed),
truth for every pool image, nested label budgets; and the augmentation options it asked for."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import torch

from plabel.config import RunConfig
from plabel.data.transforms import build_transform, plain_spec
from plabel.experiments.field.build import SETS, main


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != "manifest.json"}


def test_every_set_is_a_users_layout_and_the_same_on_one_or_two_processes(tmp_path):
    args = ["--pool", "23", "--test", "12", "--budgets", "1", "2"]
    assert main(["--out", str(tmp_path / "a"), "--processes", "1", *args]) == 0
    assert main(["--out", str(tmp_path / "b"), "--processes", "2", *args]) == 0
    for kind in SETS:
        a, b = tmp_path / "a" / kind, tmp_path / "b" / kind
        assert _digest(a) == _digest(b), kind  # a picture depends on (set, split, index, seed) alone
        manifest = json.loads((a / "manifest.json").read_text())
        classes = manifest["classes"]
        assert sorted(p.name for p in (a / "labeled-2").iterdir()) == sorted(classes)
        for name in classes:  # nested budgets: labeled-1's picture is one of labeled-2's
            one = {p.name for p in (a / "labeled-1" / name).iterdir()}
            two = {p.name for p in (a / "labeled-2" / name).iterdir()}
            assert len(one) == 1 and len(two) == 2 and one < two
        pool = sorted(str(p.relative_to(a / "unlabeled")) for p in (a / "unlabeled").rglob("*") if p.is_file())
        truth = list(csv.DictReader((a / "truth.csv").open()))
        assert sorted(r["path"] for r in truth) == pool and len(pool) == 23
        assert all(r["label"] in classes for r in truth)
        assert not any(name in path for path in pool for name in classes if len(name) > 1)  # names tell nothing
        assert sum(1 for _ in (a / "test").rglob("*.*")) == 12


def test_flip_false_and_affine_have_no_flip_and_rounds_zero_alone_is_the_baseline():
    spec = plain_spec(3, (16, 16))
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    image[:, :, :4] = 255  # a bar on the left: a flip moves it right
    for augment, flip in (("light", False), ("affine", False)):
        transform = build_transform(3, spec, augment, train=True, flip=flip)
        assert not any("Flip" in type(t).__name__ for t in transform.transforms), augment
        torch.manual_seed(0)
        out = torch.stack([transform(image) for _ in range(40)])
        assert (out[:, 0, :, :3].mean() > out[:, 0, :, -3:].mean()), augment  # the bar stays on the left
    flipping = build_transform(3, spec, "light", train=True)
    assert any("Flip" in type(t).__name__ for t in flipping.transforms)  # the 0.3 behaviour is kept by default
    cfg = RunConfig()
    cfg.pseudo.rounds = 0
    cfg.validate()  # the default k list (4 values) is no error when there are no rounds


def test_the_round_0_tables_in_the_results_are_what_the_committed_runs_give():
    """docs/results.md's "Which moves round 0 wants" tables, recomputed from results/field/r0 and r0c."""
    from plabel.experiments.field.augment_rules import RULES, levels_table, load, table

    root = Path(__file__).resolve().parents[1]
    runs = load([root / "results" / "field" / "r0", root / "results" / "field" / "r0c"])
    doc = (root / "docs" / "results.md").read_text()
    for line in levels_table(runs)[2:]:
        assert line in doc, line
    for name, line in zip(RULES, table(runs, {"mnist": 1})[2:]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        mean, worst = cells[-2], cells[-1]
        assert any(row.endswith(f"| {mean} | {worst} |") or row.endswith(f"| **{mean}** | **{worst}** |")
                   for row in doc.splitlines() if row.startswith("| ")), (name, mean, worst)
