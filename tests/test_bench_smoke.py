"""``python -m plabel.bench.speed <command> --smoke`` runs and prints a table of finite, positive numbers.

No timing assertions: CI machines are shared and slow. Together ~40 s, mostly process start-up.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plabel.bench.speed import channels, input_transform, seeded_model

ROOT = Path(__file__).resolve().parents[1]

# command -> the start of the column that must be filled in at least one row
KEY_COLUMNS = {"scoring": "samples/s", "train": "images/s", "pool": "median s"}


def run_bench(command: str, *args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
    done = subprocess.run(
        [sys.executable, "-m", "plabel.bench.speed", command, "--smoke", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, f"bench_speed {command} failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    return done.stdout


def parse_table(output: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in output.splitlines() if line.startswith("|")]
    assert len(lines) >= 3, f"no markdown table in:\n{output}"
    split = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    header, separator, rows = split[0], split[1], split[2:]
    assert all(set(cell) == {"-"} for cell in separator)
    assert all(len(row) == len(header) for row in rows)
    return header, rows


def numbers(cell: str) -> list[float]:
    """Every number in a cell: "1234", "1,000", "1008 / 1012"."""
    return [float(part.replace(",", "")) for part in cell.split("/") if part.strip()]


# CI time: the pool benchmark (a folder of images written and read twice) runs with -m slow.
@pytest.mark.parametrize("command", [c if c != "pool" else pytest.param(c, marks=pytest.mark.slow) for c in KEY_COLUMNS])
def test_smoke_prints_a_table_of_positive_finite_numbers(command: str, tmp_path: Path) -> None:
    key_column = KEY_COLUMNS[command]
    output = run_bench(command, *(["--data-dir", str(tmp_path)] if command == "pool" else []))
    assert output.lstrip().startswith(f"bench_speed {command}:")
    assert "machine: " in output and "torch " in output and "device cpu" in output
    header, rows = parse_table(output)
    key = next((i for i, name in enumerate(header) if name.startswith(key_column)), None)
    assert key is not None, f"no {key_column!r} column in {header}"
    filled = [row for row in rows if row[key]]
    assert filled, f"no row fills {key_column!r}:\n{output}"
    for row in rows:
        for name, cell in zip(header, row):
            if cell and name not in ("path", "phase"):
                values = numbers(cell)
                assert values and all(math.isfinite(v) and v > 0 for v in values), f"{name}={cell!r} in:\n{output}"
    assert ": met" in output or ": **NOT met**" in output  # the verdict line; smoke sizes prove no target
    if command == "pool":
        assert "same on every process: yes" in output


def test_torchvision_models_take_the_grey_digits_as_three_channels() -> None:
    """``--model torchvision/<name>``: the digits are repeated to 3 channels, as a run does
    (torchvision's builders take no other count); plabel's and timm's models keep 1."""
    cfg = argparse.Namespace(model="torchvision/resnet18", image_size=28)
    digit = torch.zeros(1, 28, 28, dtype=torch.uint8)
    digit[0, 10:18, 12:16] = 255
    x = input_transform(cfg, "light", train=True)(digit)
    assert x.shape == (3, 28, 28) and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert seeded_model(cfg.model, False, 0).eval()(x[None]).shape == (1, 10)
    assert channels("small_cnn") == 1 and channels("timm/test_resnet") == 1
