"""``data.val_scope``: the held-out images spent at round 0 (round0, 0.3.2's default) or kept out to
validate every round (rounds, 0.3.1), end to end on the tiny run, plus the table both print."""

from __future__ import annotations

import json

import pytest
from helpers import tiny

from plabel.commands.train import train_main
from plabel.trainer.outputs import OVERCONFIDENT_TEMPERATURE, format_table

# 5 labeled per class: auto holds 1 per class out (10 validation images, 40 left).
ARGS = tiny({"data.labeled_per_class": 5})


def _run(tmp_path, capsys, **options: str) -> tuple[dict, str]:
    out = tmp_path / "run"
    argv = [*ARGS, *[w for k, v in options.items() for w in (f"--{k}", v)], "--output_dir", str(out)]
    assert train_main(argv) == 0
    return json.loads((out / "summary.json").read_text()), capsys.readouterr().out


@pytest.mark.parametrize("augment", ["auto", "light"])
def test_round0_chooses_and_calibrates_then_trains_on_every_label(tmp_path, capsys, augment):
    summary, printed = _run(tmp_path, capsys, **{"data.augment": augment})
    rows = summary["rounds"]
    assert [r["labeled"] for r in rows] == [50, 50]  # the 10 validation images joined the 40
    assert all(r["val_accuracy"] is None for r in rows) and summary["best_round_by_validation"] is None
    assert rows[1]["precision_estimate"] is not None and rows[1]["validation_images"] == 10  # round 0's temperature
    assert rows[1]["calibrated_at_round0"] is True and " from 10 validation images at round 0" in printed
    assert not (tmp_path / "run" / "model_best.safetensors").exists()
    assert ("data.augment auto: " in printed) == (augment == "auto")  # a fixed level has nothing to choose
    assert "round 0 without the 10 validation images: validation accuracy " in printed
    assert "labeled 40 + 10 validation (trained on after round 0 chooses), pool " in printed
    assert "model.safetensors is the last round's weights; no round was validated (data.val_scope round0" in printed
    assert "| estimate |" in printed and "val_acc" not in printed  # the table: the estimate without a validation column
    assert "defaults changed in plabel 0.3.2 that this run uses: data.val_scope round0 (0.3.1: rounds)" in printed
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    fitted = [m["select/confidence_temperature_round0"] for m in metrics if "select/confidence_temperature_round0" in m]
    used = [m["select/confidence_temperature"] for m in metrics if "select/confidence_temperature" in m]
    assert len(fitted) == 1 and used == fitted  # round 1 used the temperature round 0 fitted, not a new one
    assert rows[1]["confidence_temperature"] == pytest.approx(fitted[0])
    assert ("likely low: round 0's model was overconfident" in printed) == (fitted[0] >= OVERCONFIDENT_TEMPERATURE)
    assert ("%* | " in printed) == (fitted[0] >= OVERCONFIDENT_TEMPERATURE)  # the table's estimate cell says it too


def test_rounds_keeps_them_out_and_validates_every_round(tmp_path, capsys):
    summary, printed = _run(tmp_path, capsys, **{"data.val_scope": "rounds"})
    rows = summary["rounds"]
    assert [r["labeled"] for r in rows] == [40, 40]
    assert all(r["val_accuracy"] is not None for r in rows) and summary["best_round_by_validation"] is not None
    assert (tmp_path / "run" / "model_best.safetensors").exists()
    assert "round 0 without the" not in printed and "best round by validation: " in printed
    assert " validation images), " in printed and "at round 0)" not in printed  # the temperature of each round
    assert "labeled 40 + 10 validation, pool " in printed and "defaults changed in plabel 0.3.2" not in printed


def test_the_table_shows_an_estimate_without_a_validation_column():
    row = {"round_index": 1, "top_k_percent": 60.0, "labeled": 100, "pseudo_labeled": 10, "pseudo_label_precision": None,
           "test_accuracy": 0.5, "precision_estimate": 0.9}
    header = format_table([row]).splitlines()[0]
    assert "estimate" in header and "val_acc" not in header
    assert "estimate" not in format_table([{**row, "precision_estimate": None}]).splitlines()[0]
    assert "val_acc" in format_table([{**row, "val_accuracy": 0.8}]).splitlines()[0]


def test_a_budget_too_small_to_hold_out_names_neither_scope_nor_margin(tmp_path, capsys):
    """At 3 labeled per class auto's fifth rounds to none: validation scope and augment margin change
    nothing there, so the run's 'defaults changed' lines leave them out (0.3.1's auto stays)."""
    out = tmp_path / "run"
    assert train_main([*tiny({"data.labeled_per_class": 3}), "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "without them it is light" in printed  # auto had nothing to choose with
    assert "defaults changed in plabel 0.3.1 that this run uses: data.val_per_class auto" in printed
    assert "defaults changed in plabel 0.3.2" not in printed and "defaults changed in plabel 0.3.3" not in printed
