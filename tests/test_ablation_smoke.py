"""The ablations through plabel sweep (one runner): a tiny grid runs, reuses finished runs, and its
table carries what only the ablations measured (corrupted accuracy, the class histogram)."""

import json

import pytest

from plabel.experiments.ablation import main


@pytest.mark.slow  # CI time: the grids that replaced it run in tests/test_sweep.py
def test_ablation_smoke(tmp_path):
    out = tmp_path / "abl"
    args = ["--out", str(out), "--labels", "4", "--seeds", "0", "1", "--jobs", "2", "--rows", "random_curriculum",
            "--epochs", "1", "--steps-per-epoch", "2", "--pool-limit", "200", "--test-holdout", "100"]
    assert main(args) == 0
    table = json.loads((out / "sweep.json").read_text())
    (row,) = table["rows"]
    assert row["row"] == "random_curriculum" and row["complete"]
    assert len(row["accuracy_per_round"]) == 6  # 5 rounds (k 20 -> 100%) and round 0
    assert row["precision_per_round"][0] is None and 0 <= row["precision_per_round"][-1][0] <= 1
    assert sum(row["class_histogram_last_round"]) == 200  # k = 100% in the last round
    assert 0 <= row["corrupted_accuracy"][0] <= 1
    per_seed = list(row["per_seed_final_accuracy"].values())
    assert len(per_seed) == 2 and row["final_accuracy"][0] == pytest.approx(sum(per_seed) / 2)
    for seed in (0, 1):
        assert (out / "random_curriculum" / f"seed{seed}" / "corrupted.json").is_file()
    assert "corrupted accuracy" in (out / "sweep.md").read_text()
    # Rerunning reuses the finished runs instead of training again: their files are untouched.
    summaries = [out / "random_curriculum" / f"seed{seed}" / "summary.json" for seed in (0, 1)]
    before = [summary.stat().st_mtime_ns for summary in summaries]
    assert main(args) == 0
    assert [summary.stat().st_mtime_ns for summary in summaries] == before
