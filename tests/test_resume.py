"""Kill a 2-process run at several points, rerun the same command, and compare with an
uninterrupted run: final weights, selections and metrics must be identical."""

import json
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT, launch_command, subprocess_env, tiny
from safetensors.torch import load_file

# 3 rounds of 2 epochs x 4 steps: round 0 = steps 1-8, round 1 = 9-16, round 2 = 17-24.
# Periodic checkpoints every 3 steps put one mid-epoch (step 18 = round 2, epoch 0, step 2).
ARGS = tiny({
    "train.steps_per_epoch": 4, "pseudo.rounds": 2, "pseudo.top_k_percent": "[30, 60]", "tracking.log_every": 1,
    "checkpoint.every_steps": 3,
})


def launch(out: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = subprocess_env(**({"PLABEL_FAULT": fault} if fault else {}))
    cmd = launch_command([str(ROOT / "train.py"), *ARGS, "--output_dir", str(out)], processes=2)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def outcome(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    return {
        "weights": load_file(str(out / "model.safetensors")),
        "rounds": summary["rounds"],
        "selections": [(out / f"pseudo_labels_round{r:02d}.csv").read_text() for r in (1, 2)],
        "metrics": (out / "metrics.jsonl").read_text(),
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    proc = launch(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return outcome(out)


@pytest.mark.parametrize(
    "fault,resumed_from",
    [
        ("step:19@0:kill", "global step 18"),  # mid-epoch of a later round, from a mid-epoch checkpoint
        # CI time: the other kill points run with -m slow (and before every release of the resume code)
        pytest.param("scored:2@1:kill", "global step 16", marks=pytest.mark.slow),  # between scoring and selection
        pytest.param("checkpoint:18@0:kill", "global step 16", marks=pytest.mark.slow),  # while a checkpoint is written
    ],
)
def test_killed_run_resumes_to_identical_results(tmp_path, reference, fault, resumed_from):
    out = tmp_path / "run"
    killed = launch(out, fault)
    assert killed.returncode != 0
    assert not (out / "summary.json").exists()
    resumed = launch(out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and resumed_from in resumed.stdout, resumed.stdout[-2000:]
    if fault.startswith("checkpoint"):
        assert "removed unfinished checkpoint" in resumed.stdout
    got = outcome(out)
    assert got["rounds"] == reference["rounds"]
    assert got["selections"] == reference["selections"]
    assert got["metrics"] == reference["metrics"]
    assert got["weights"].keys() == reference["weights"].keys()
    for name, tensor in reference["weights"].items():
        assert got["weights"][name].equal(tensor), name
    assert not list((out / "checkpoints").glob(".tmp-*"))
