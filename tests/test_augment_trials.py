"""``data.augment auto`` under ``accelerate launch``: round 0's trials (light, none: grey digits) on 2
processes, killed or preempted inside a trial, rerun, and compared with an uninterrupted run."""

import json
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT, launch_command, subprocess_env, tiny
from safetensors.torch import load_file


# 5 labeled per class: 1 per class held out (auto), so auto trains round 0 twice; 2 epochs x 3 steps
# a trial (global steps 1-6 each), then one round. Grey digits: the candidates are light and none.
ARGS = tiny({"data.labeled_per_class": 5, "data.augment": "auto", "pseudo.rounds": 1, "checkpoint.stop_check_every": 2})


def launch(out: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = subprocess_env(**({"PLABEL_FAULT": fault} if fault else {}))
    cmd = launch_command([str(ROOT / "train.py"), *ARGS, "--output_dir", str(out)], processes=2)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def outcome(out: Path, stdout: str) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    return {
        "weights": load_file(str(out / "model.safetensors")),
        "rounds": summary["rounds"],
        "selection": (out / "pseudo_labels_round01.csv").read_text(),
        "choice": [line for line in stdout.splitlines() if line.startswith("data.augment auto:")],
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    proc = launch(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return outcome(out, proc.stdout)


def test_the_trials_run_on_two_processes_and_print_one_choice(reference):
    assert len(reference["choice"]) == 1, reference["choice"]  # the main process's line only
    assert "(round 0 trained with each; validation loss (accuracy) light " in reference["choice"][0]
    assert ", none " in reference["choice"][0] and "on 10 images; the lowest loss kept)" in reference["choice"][0]


@pytest.mark.parametrize("fault", ["trial:none:4@1:kill", "trial:light:3@0:term"])
def test_a_run_stopped_inside_a_trial_redoes_them_to_the_same_result(tmp_path, reference, fault):
    out = tmp_path / "run"
    stopped = launch(out, fault)
    assert stopped.returncode != 0  # 75 from each process; the launcher says 1 for several
    if fault.endswith("term"):  # a scheduler's signal: every process stops within stop_check_every steps
        assert "stopped during round 0's augmentation trials (light); a resumed run redoes them" in stopped.stdout + stopped.stderr
        assert "Traceback" not in stopped.stdout, stopped.stdout[-3000:]
    assert not (out / "summary.json").exists()
    rerun = launch(out)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    got = outcome(out, rerun.stdout)
    assert got["choice"] == reference["choice"]
    assert got["rounds"] == reference["rounds"] and got["selection"] == reference["selection"]
    for name, tensor in reference["weights"].items():
        assert got["weights"][name].equal(tensor), name
