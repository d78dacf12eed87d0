"""The precision estimate's spread: how far it can be off for want of validation images."""

from __future__ import annotations

import math

import pytest

from plabel.trainer.outputs import OVERCONFIDENT_TEMPERATURE, estimate_halfwidth, format_table, round_line


@pytest.mark.parametrize("estimate,n,expected", [
    (1.0, 20, 0.1106),   # 20 of 20 right is not +-0: (22/24) measured on 24
    (0.5, 20, 0.2000),   # 1.96 * sqrt(0.25 / 24)
    (0.8, 60, 0.1013),   # (50/64) measured on 64
    (0.5, 10_000, 0.0098),
])
def test_the_halfwidth_is_agresti_coulls(estimate, n, expected):
    assert math.isclose(estimate_halfwidth(estimate, n), expected, abs_tol=5e-4)


def test_it_narrows_as_validation_images_grow():
    widths = [estimate_halfwidth(0.8, n) for n in (10, 20, 50, 200, 1000)]
    assert widths == sorted(widths, reverse=True) and widths[-1] < 0.03


def test_the_round_line_shows_it_only_where_validation_images_calibrated_the_estimate():
    row = {"round_index": 1, "top_k_percent": 60.0, "pseudo_labeled": 2335, "pseudo_label_precision": 0.9991,
           "precision_estimate": 1.0, "val_accuracy": 1.0, "test_accuracy": 0.959, "labeled": 80, "validation_images": 20}
    assert round_line(row) == ("round 1 (k 60%): 2335 pseudo-labels, precision 99.91% (estimated 100.00% ± 11.1 from 20 "
                               "validation images), val 100.00%, test 95.90%")
    assert "±" not in round_line({**row, "validation_images": None})  # a checkpoint from before 0.3.1 has no count


def test_a_round0_calibration_from_an_overconfident_model_is_called_likely_low():
    row = {"round_index": 4, "top_k_percent": 95.0, "pseudo_labeled": 3787, "pseudo_label_precision": None,
           "precision_estimate": 0.2289, "test_accuracy": 0.786, "labeled": 260, "validation_images": 52,
           "calibrated_at_round0": True, "confidence_temperature": 5.22}
    assert round_line(row) == ("round 4 (k 95%): 3787 pseudo-labels, precision unknown (estimated 22.89% ± 11.3 from 52 "
                               "validation images at round 0; likely low: round 0's model was overconfident, T 5.22), "
                               "test 78.60%")
    assert "likely low" not in round_line({**row, "confidence_temperature": 2.9})  # a mild T: no claim either way
    assert "likely low" in round_line({**row, "confidence_temperature": OVERCONFIDENT_TEMPERATURE})
    # data.val_scope rounds refits T on each round's own teacher: no round-0 transfer to warn of
    assert "likely low" not in round_line({**row, "calibrated_at_round0": None})


def test_the_table_marks_a_likely_low_estimate_and_says_why_under_it():
    base = {"top_k_percent": 60.0, "labeled": 260, "pseudo_labeled": 100, "pseudo_label_precision": None,
            "test_accuracy": 0.7, "validation_images": 52, "calibrated_at_round0": True}
    rows = [{**base, "round_index": 0, "top_k_percent": None, "pseudo_labeled": 0},
            {**base, "round_index": 1, "precision_estimate": 0.2289, "confidence_temperature": 5.22},
            {**base, "round_index": 2, "precision_estimate": 1.0, "confidence_temperature": 5.22}]
    lines = format_table(rows).splitlines()
    assert lines[3].split(" | ")[5] == " 22.89%*" and lines[4].split(" | ")[5] == "100.00%*"  # the column stays 8 wide
    assert lines[2].split(" | ")[5].strip() == "-"  # round 0 selects nothing: no estimate, no mark
    assert lines[-1].startswith("* likely low: round 0's model was overconfident (T 5.22, at or above 3.5;")
    mild = format_table([{**r, "confidence_temperature": 2.9} for r in rows])
    assert "*" not in mild and len(mild.splitlines()) == 5  # under the cut: bare estimates, no footnote
