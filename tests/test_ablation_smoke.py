"""A tiny version of the ablation sweep: it runs, reuses finished runs, and reports."""

import json

import pytest

from plabel.experiments.ablation import main


@pytest.mark.slow  # CI time: the grids that replaced it run in tests/test_sweep.py
def test_ablation_smoke(tmp_path, capsys):
    args = ["--out", str(tmp_path / "abl"), "--labels", "4", "--seeds", "0", "1", "--jobs", "2", "--rows", "random_curriculum",
            "--epochs", "1", "--steps-per-epoch", "2", "--pool-limit", "200", "--test-holdout", "100"]
    assert main(args) == 0
    results = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    random_row = results["rows"]["4/random_curriculum"]
    assert len(random_row["accuracy_per_round"]) == 6
    assert random_row["precision_per_round"][0] is None and 0 <= random_row["precision_per_round"][-1] <= 1
    assert sum(random_row["last_selection_class_histogram_seed_last"]) == 200  # k = 100% in the last round
    assert 0 <= random_row["corrupted_accuracy"][0] <= 1
    # Two seeds, run two at a time: both are in the row, which reports their mean and spread.
    per_seed = random_row["per_seed_final_accuracy"]
    assert len(per_seed) == 2 and random_row["final_accuracy"][0] == pytest.approx(sum(per_seed) / 2)
    assert random_row["final_accuracy"][1] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2**0.5)
    assert results["total_cpu_time_s"] > 0
    for seed in (0, 1):
        assert (tmp_path / "abl" / "labels4" / "random_curriculum" / f"seed{seed}" / "corrupted.json").is_file()
    table = (tmp_path / "abl" / "ablation.md").read_text()
    assert "| 4 | random_curriculum | 12 |" in table  # 6 rounds x 1 epoch x 2 steps
    assert "| random_curriculum | random samples, same counts as entropy_curriculum | ablation base + `--pseudo.score random` |" in table
    assert (tmp_path / "abl" / "accuracy_per_round.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Rerunning reuses the finished run instead of training again: its files are untouched.
    summaries = [tmp_path / "abl" / "labels4" / "random_curriculum" / f"seed{seed}" / "summary.json" for seed in (0, 1)]
    before = [summary.stat().st_mtime_ns for summary in summaries]
    assert main(args) == 0
    assert [summary.stat().st_mtime_ns for summary in summaries] == before
