"""The field set's report (issue 37's map): pairing by seed, per-round precision of each arm, several arms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plabel.experiments.field.report import load, main, map_points, precision_table


def _run(root: Path, row: str, seed: int, base: float, final: float, precisions: list[float]) -> None:
    rounds = [{"round_index": 0, "pseudo_label_precision": None}]
    rounds += [{"round_index": i + 1, "pseudo_label_precision": p} for i, p in enumerate(precisions)]
    folder = root / row / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"baseline_accuracy": base, "final_accuracy": final, "rounds": rounds}))


@pytest.fixture
def sweeps(tmp_path: Path) -> Path:
    _run(tmp_path, "signs-10-v032", 5, 0.60, 0.73, [0.70, 0.80])
    _run(tmp_path, "signs-10-v032", 6, 0.60, 0.70, [0.60, 0.70])  # no twin at seed 6: left out of every pairing
    _run(tmp_path, "signs-10-v032_random", 5, 0.60, 0.71, [0.60, 0.75])
    _run(tmp_path, "signs-10-cand", 5, 0.50, 0.75, [0.50, 0.60])
    _run(tmp_path, "signs-10-cand_random", 5, 0.50, 0.74, [0.40, 0.55])
    return tmp_path


def test_the_precision_table_pairs_the_arms_round_by_round_on_shared_seeds(sweeps):
    table = precision_table(load([sweeps]), "v032", "v032_random").splitlines()
    assert table[0] == "| set | labels/class | seeds | round 1: v032 / random | round 2: v032 / random |"
    assert table[2] == "| signs | 10 | 5 | 70.00 / 60.00 (+10.0) | 80.00 / 75.00 (+5.0) |"  # seed 6 has no twin


def test_map_points_pair_by_seed_and_name_their_arm(sweeps):
    [point] = map_points(load([sweeps]), "v032", "v032_random")
    assert point["variant"] == "v032" and point["random_seeds"] == 1
    assert point["vs_random"][0] == pytest.approx(2.0)  # seed 5 only
    assert point["vs_baseline"][0] == pytest.approx((13.0 + 10.0) / 2)  # every seed of the reference


def test_several_references_share_one_map(sweeps, capsys):
    out = sweeps / "map.png"
    assert main([str(sweeps), "--reference", "cand", "v032", "--out", str(out)]) == 0
    points = json.loads(out.with_suffix(".json").read_text())
    assert [p["variant"] for p in points] == ["cand", "v032"] and out.stat().st_size > 0
    printed = capsys.readouterr().out
    assert "round 1: cand / random" in printed and "round 1: v032 / random" in printed


def test_one_twin_per_reference(sweeps, capsys):
    with pytest.raises(SystemExit):
        main([str(sweeps), "--reference", "cand", "v032", "--twin", "cand_random"])
    assert "--twin: 1 given for 2 --reference" in capsys.readouterr().err


def test_the_temperature_table_reads_round0_temperature_and_signed_errors(tmp_path, capsys):
    folder = tmp_path / "house-10-v032" / "seed7"
    folder.mkdir(parents=True)
    lines = [{"select/confidence_temperature_round0": 4.65, "round/index": 0},
             {"select/precision_estimate": 0.40, "select/pseudo_label_precision": 0.45},
             {"select/precision_estimate": 0.30, "select/pseudo_label_precision": 0.50},
             {"select/precision_estimate": 0.35, "select/pseudo_label_precision": 0.55}]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in lines) + "\n")
    out = tmp_path / "t.json"
    assert main([str(tmp_path), "--temperatures", str(out)]) == 0
    [row] = json.loads(out.read_text())
    assert row["row"] == "house-10-v032" and row["seed"] == 7 and row["errors"] == pytest.approx([-5.0, -20.0, -20.0])
    assert "| house-10-v032 | 7 | 4.65 | -5.0 | -20.0 to -20.0 | likely low |" in capsys.readouterr().out


def test_pooled_references_are_one_arm_with_each_pair_from_its_own_twin(sweeps, capsys):
    out = sweeps / "map.png"
    assert main([str(sweeps), "--reference", "cand", "v032", "--pooled", "cand", "v032", "--out", str(out)]) == 0
    [point] = json.loads(out.with_suffix(".json").read_text())
    assert point["variant"] == "default" and point["random_seeds"] == 2 and point["seeds"] == 3
    # cand − cand_random at seed 5 (+1.0) and v032 − v032_random at seed 5 (+2.0): never cand − v032_random
    assert point["vs_random"][0] == pytest.approx(1.5)
    assert point["round0"][0] == pytest.approx((50 + 60 + 60) / 3)
    with pytest.raises(SystemExit):
        main([str(sweeps), "--reference", "cand", "--pooled", "cand", "v032"])
    assert "--pooled: v032 not among --reference" in capsys.readouterr().err


def test_the_map_table_counts_the_seeds_each_arm_led(sweeps, capsys):
    assert main([str(sweeps), "--reference", "cand", "v032", "--pooled", "cand", "v032"]) == 0
    printed = capsys.readouterr().out
    assert "| default | signs | 10 | 56.7 ± 5.8 | +1.50 ± 0.71 (2 seeds) | 2 / 0 / 0 | +16.00 ± 7.94 |" in printed
