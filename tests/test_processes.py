"""Processes that never outlive their job, one writer per run folder, resuming on another process
count, and what a user sees under ``accelerate launch``."""

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from helpers import ROOT, launch_command, run_train, subprocess_env, tiny
from safetensors.torch import load_file

# 3 rounds of 2 epochs x 12 steps: long enough (~15 s on 2 processes) to be killed mid-way.
LONG = tiny({"train.steps_per_epoch": 12, "pseudo.rounds": 2, "pseudo.top_k_percent": "[30, 60]", "checkpoint.every_steps": 5})


def _start(out: Path, processes: int, extra=(), **env) -> subprocess.Popen:
    # --verbose: a line for every checkpoint, which the kill tests count to time their kills.
    cmd = launch_command([str(ROOT / "train.py"), *LONG, "--verbose", *extra, "--output_dir", str(out)], processes)
    return subprocess.Popen(
        cmd, cwd=ROOT, env=subprocess_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group, as a shell job or a SLURM step would be
    )


def _survivors(out: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if str(out) in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


def _wait_gone(out: Path, seconds: float) -> list[psutil.Process]:
    deadline = time.time() + seconds
    while time.time() < deadline:
        alive = [p for p in _survivors(out) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return []
        time.sleep(0.2)
    return alive


def _outcome(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    return {
        "weights": load_file(str(out / "model.safetensors")),
        "rounds": summary["rounds"],
        "selections": [(out / f"pseudo_labels_round{r:02d}.csv").read_text() for r in (1, 2)],
        "metrics": (out / "metrics.jsonl").read_text(),
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    proc = _start(out, 2)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log[-3000:]
    return _outcome(out)


@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)])  # CI time
def test_sigkill_to_the_launcher_group_leaves_no_worker_and_the_rerun_matches(tmp_path, uninterrupted, seed):
    out = tmp_path / "run"
    proc = _start(out, 2)
    rng = random.Random(seed)
    checkpoints, wanted = 0, rng.randint(1, 14)  # a random point of rounds 0-2: after the n-th checkpoint...
    for line in proc.stdout:
        checkpoints += "checkpoint (" in line
        if checkpoints == wanted:
            break
    time.sleep(rng.uniform(0.0, 0.8))  # ... and a random part of the steps after it
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert _wait_gone(out, 10.0) == []  # the workers (in their own sessions) followed their launcher
    proc = _start(out, 2)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log[-3000:]
    assert "resumed from" in log or "restart" in log
    resumed = _outcome(out)
    for name, tensor in uninterrupted["weights"].items():
        assert (resumed["weights"][name] == tensor).all(), name
    assert resumed["rounds"] == uninterrupted["rounds"] and resumed["selections"] == uninterrupted["selections"]
    assert resumed["metrics"] == uninterrupted["metrics"]


def test_a_second_launch_on_a_live_run_folder_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    first = _start(out, 2)
    # The folder exists only once the first job holds its lock. On a loaded machine starting two
    # processes can take minutes: wait for it rather than racing it.
    deadline = time.time() + 300
    while not (out / "checkpoints").is_dir() and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
    assert (out / "checkpoints").is_dir() and first.poll() is None, "the first job never started training"
    # Frozen, not finished: the whole run takes seconds, and on a loaded machine it could end (and
    # free its folder) while the second job is still importing. A stopped process keeps its lock.
    frozen = [first_process := psutil.Process(first.pid), *first_process.children(recursive=True)]
    for process in frozen:
        process.suspend()
    try:
        second = run_train([*LONG, "--output_dir", str(out)])
    finally:  # killed, and let run so its workers see their launcher gone, even if the second launch failed
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        for process in frozen:
            try:
                process.resume()
            except psutil.NoSuchProcess:
                pass
    assert second.returncode == 2, second.stdout[-2000:]
    line = second.stderr.strip().splitlines()[-1]
    assert line.startswith(f"train.py: error: output_dir: {out} is in use by a running plabel job (pid ")
    assert _wait_gone(out, 10.0) == []
    assert (out / ".plabel.lock").is_file()  # left by the dead run; the kernel released its lock
    again = run_train([*LONG, "--output_dir", str(out)])
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.slow  # CI time: tests/test_failures.py's Ctrl-C test sends SIGTERM to a one-process `plabel launch` too
def test_sigterm_to_a_one_process_launcher_checkpoints_and_stops_the_worker(tmp_path):
    out = tmp_path / "run"
    proc = _start(out, 1)
    seen = ""
    for line in proc.stdout:
        seen += line
        if "checkpoint (epoch end)" in line:
            break
    os.kill(proc.pid, signal.SIGTERM)  # one process started as `python train.py`: the signal reaches the run itself
    assert _wait_gone(out, 10.0) == []
    state = json.loads(sorted((out / "checkpoints").glob("ckpt-*/plabel_state.json"))[-1].read_text())
    assert state["position"]["global_step"] >= 12  # the worker wrote a checkpoint past the one we waited for
    rerun = _start(out, 1)
    log = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0 and "resumed from" in log, log[-3000:]


def test_resuming_with_another_process_count_continues_the_run(tmp_path):
    out = tmp_path / "run"
    crashed = _start(out, 2, PLABEL_FAULT="step:30@0:kill")  # round 1, after a periodic checkpoint
    crashed.communicate(timeout=300)
    assert crashed.returncode != 0
    assert _wait_gone(out, 10.0) == []
    resumed = _start(out, 3)
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log[-3000:]
    assert "note: checkpoint written by 2 processes, resuming with 3; batches are global" in log
    assert json.loads((out / "summary.json").read_text())["num_processes"] == 3


def test_a_pool_smaller_than_the_job_and_an_empty_selection_write_valid_json(tmp_path):
    out = tmp_path / "run"
    args = tiny({"data.pool_limit": 2, "pseudo.top_k_percent": 10, "train.batch_size": 6, "train.pseudo_batch_size": 3})
    proc = run_train([*args, "--output_dir", str(out)], processes=3)
    assert proc.returncode == 0, proc.stderr[-3000:]

    def no_nan(text):
        raise AssertionError(f"bare {text} in JSON")

    summary = json.loads((out / "summary.json").read_text(), parse_constant=no_nan)
    assert summary["rounds"][1]["pseudo_labeled"] == 0 and summary["rounds"][1]["pseudo_label_precision"] is None
    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=no_nan)
    assert "nan" not in proc.stdout.lower()
    assert "    1 |   10 |      40 |      0 |         - |" in proc.stdout


def test_a_user_error_under_accelerate_launch_is_plabels_line_first_and_exit_1(tmp_path):
    cmd = launch_command([str(ROOT / "train.py"), "--pseudo.top_k_percent", "150"], processes=2)
    proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1  # the launcher's status; plabel's own is 2 (python train.py)
    ours = [line for line in proc.stderr.splitlines() if line.startswith("train.py:")]
    assert ours == ["train.py: error: pseudo.top_k_percent: 150.0 is outside (0, 100]"]  # once, not once per process
    first = next(line for line in proc.stderr.splitlines() if line.strip() and not line.startswith(("W", "E", "I")))
    assert first == ours[0]
