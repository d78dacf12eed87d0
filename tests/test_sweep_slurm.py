"""plabel sweep --backend slurm under a real SLURM (the one-host cluster of tests/slurm_cluster.py):
the tiny grid (2 rows x 2 seeds) is one array job of 4 tasks; --status at each stage (missing,
queued/running, queued again after a requeue, done); the task that keeps the array's own job id
takes the time-limit signal, is requeued alone (not the whole array), resumes and completes; a
resubmission submits nothing while every run is done or held by SLURM, and only a lost run
otherwise; the collected table is byte-identical to the same grid run with --backend local
(which runs meanwhile, into another folder). Skipped, saying why, where SLURM, munge or root are
missing (marker ``slurm``).

The first tests need no SLURM: stand-in sbatch and squeue show what is submitted, that each task
gets its train.py arguments whole, and how --status and a resubmission read SLURM's queue.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT
from slurm_cluster import job, one_host_cluster, release_requeued, slurm, until

from plabel.cli import main as plabel_main

TINY_GRID = ROOT / "configs" / "sweeps" / "tiny.yaml"
# Long enough to be signalled after a checkpoint (80 steps, a checkpoint every 10); one torch
# thread in both backends, so the numbers are the same (local --jobs would split the cores).
OPTIONS = ["train.steps_per_epoch=20", "checkpoint.every_steps=10", "train.cpu_threads=1"]
TABLE = ("sweep.md", "sweep.json", "sweep.csv")
# One core and one process per task: two tasks at once on the 2-core test node.
SLURM = ("--backend", "slurm", "--cpus", "1", "--processes", "1")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with one_host_cluster(tmp_path_factory) as started:
        yield started


def _sweep(out: Path, capsys, *argv: str) -> str:
    """``plabel sweep`` on the tiny grid (in this process: its sbatch and squeue see SLURM_CONF)."""
    capsys.readouterr()
    code = plabel_main(["sweep", str(TINY_GRID), *OPTIONS, "--out", str(out), *argv])
    text = capsys.readouterr().out
    assert code == 0, text
    return text


def _status(out: Path, capsys) -> dict[tuple[str, int], str]:
    """--status as (row, seed) -> state plus detail."""
    lines = _sweep(out, capsys, "--status").splitlines()[1:]
    return {(line.split()[0], int(line.split()[2])): " ".join(line.split()[3:]) for line in lines}


def _states(out: Path, capsys) -> list[str]:
    return [text.split()[0] for text in _status(out, capsys).values()]


def _stand_ins(tmp_path: Path, monkeypatch) -> Path:
    """sbatch answering job 77, squeue printing <tmp>/queue.txt (or failing as without a controller)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/bash\necho 77\n")
    (bin_dir / "squeue").write_text(f"#!/bin/bash\nif [ -f {tmp_path}/down ]; then echo 'squeue: error: Unable to contact slurm controller' >&2; "
                                    f"exit 1; fi\ncat {tmp_path}/queue.txt\n")
    for tool in ("sbatch", "squeue"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "queue.txt"


def test_array_script_arguments_and_queue_with_stand_in_slurm(tmp_path, capsys, monkeypatch):
    from plabel.sweeps.grid import load_grid
    from plabel.sweeps.runs import train_args

    queue = _stand_ins(tmp_path, monkeypatch)
    out = tmp_path / "sweep"
    text = _sweep(out, capsys, "--backend", "slurm", "--processes", "1")
    assert "submitted array job 77 with 4 run(s)" in text and "task 77_4: random seed 1" in text
    script = (out / "slurm" / "sweep-1.sbatch").read_text()
    assert "#SBATCH --array=1-4%2" in script and "#SBATCH --gpus-per-node=0" in script  # the grid's slurm: section
    assert "export PLABEL_CPU=${PLABEL_CPU:-1}" in script and "export PLABEL_PROCS_PER_NODE=1" in script
    # Each argument arrives whole in the task (the W&B tags are a JSON list with a space).
    args_file = out / "slurm" / "args" / "random-seed1.txt"
    read = subprocess.run(["bash", "-c", f"mapfile -t a <{args_file}; printf '%s\\0' \"${{a[@]}}\""], capture_output=True, text=True)
    grid = load_grid(TINY_GRID, {o.split("=")[0]: int(o.split("=")[1]) for o in OPTIONS})
    expected = train_args(grid, grid.row("random"), 1, out.resolve())
    assert read.stdout.split("\0")[:-1] == expected and '["random", "seed1"]' in expected

    # SLURM holds all four: one runs, three wait; a resubmission submits nothing.
    queue.write_text("77 1 RUNNING\n77 2 PENDING\n77 3 PENDING\n77 4 PENDING\n")
    status = _status(out, capsys)
    assert status[("entropy", 0)] == "running slurm task 77_1 RUNNING" and status[("random", 1)] == "queued slurm task 77_4 PENDING"
    assert "nothing to run or submit: 0 done, 1 running, 3 queued" in _sweep(out, capsys, "--backend", "slurm")
    # Three left the queue without running (cancelled while pending): only they are submitted again.
    queue.write_text("77 1 RUNNING\n")
    assert "submitted array job 77 with 3 run(s)" in _sweep(out, capsys, "--backend", "slurm")
    assert (out / "slurm" / "tasks-2.txt").read_text() == "entropy 1\nrandom 0\nrandom 1\n"
    # No controller: --status says it could not read the queue; a resubmission is refused (not run twice).
    (tmp_path / "down").touch()
    capsys.readouterr()
    assert plabel_main(["sweep", str(TINY_GRID), *OPTIONS, "--out", str(out), "--status"]) == 0
    assert "SLURM's queue not read" in capsys.readouterr().out.splitlines()[0]
    assert plabel_main(["sweep", str(TINY_GRID), *OPTIONS, "--out", str(out), "--backend", "slurm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "squeue does not answer here" in err[0], err


# CI time: runs with -m slow; tests/test_slurm_cluster.py keeps a real SLURM's requeue in the default
# run, and the array script above is checked against a stand-in SLURM by default.
@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_sweep_is_one_array_requeues_one_task_and_tables_as_local(cluster, tmp_path, capsys, monkeypatch):
    env, _ = cluster
    for name, value in (("SLURM_CONF", env["SLURM_CONF"]), ("OMP_NUM_THREADS", "1"), ("PYTHONUNBUFFERED", "1")):
        monkeypatch.setenv(name, value)  # sbatch passes this environment on to the tasks
    for name in ("PLABEL_CPU", "PLABEL_PROCS_PER_NODE", "PLABEL_ACCELERATE_CONFIG", "PLABEL_RUNS_DIR", "WANDB_MODE", "PLABEL_FAULT"):
        monkeypatch.delenv(name, raising=False)  # the array script's own CPU form (the grid's gpus: 0)
    out, local = tmp_path / "slurm", tmp_path / "local"

    # Before submission: every run missing.
    assert _states(out, capsys) == ["missing"] * 4
    text = _sweep(out, capsys, *SLURM)
    (line,) = (out / "slurm" / "jobs.txt").read_text().splitlines()  # one submission
    array = line.split()[0]
    assert f"submitted array job {array} with 4 run(s)" in text and f"task {array}_4: random seed 1" in text
    # One array job of 4 tasks (-r: a line per task, pending ones included).
    tasks = {tuple(line.split()) for line in slurm(["squeue", "-h", "-r", "-j", array, "-o", "%F %K"], env).splitlines()}
    assert tasks == {(array, str(i)) for i in range(1, 5)}, tasks
    # The same grid under the local backend, meanwhile (a second out folder; same threads).
    local_run = subprocess.Popen(
        [sys.executable, "-m", "plabel.cli", "sweep", str(TINY_GRID), *OPTIONS, "--out", str(local), "--backend", "local", "--jobs", "2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        # Held by SLURM (queued or running, never missing): a resubmission submits nothing.
        assert set(_states(out, capsys)) <= {"queued", "running"}
        assert "nothing to run or submit" in _sweep(out, capsys, *SLURM)
        assert len((out / "slurm" / "jobs.txt").read_text().splitlines()) == 1
        until(lambda: "running" in _states(out, capsys), 120, "a running task")

        signalled, run = f"{array}_4", out / "random" / "seed1"
        until(lambda: any((run / "checkpoints").glob("ckpt-*")), 240, "task 4's first checkpoint", every=0.2)
        # The last task to start keeps the array's own job id: its requeue must be its own, not the array's.
        assert job(signalled, env)["JobId"] == array
        slurm(["scancel", "--signal=USR1", "--batch", signalled], env)  # what --signal=B:USR1@120 sends before the limit
        until(lambda: job(signalled, env).get("Restarts") == "1" and job(signalled, env).get("JobState") == "PENDING", 120,
              "the requeue of task 4")
        restarts = {i: job(f"{array}_{i}", env).get("Restarts") for i in (1, 2, 3)}
        assert restarts == {1: "0", 2: "0", 3: "0"}, f"task 4's requeue requeued other tasks of the array: {restarts}"
        # Requeued and held (SLURM holds a requeued job ~2 minutes): queued, not failed, no exit status.
        state = _status(out, capsys)[("random", 1)]
        assert state.startswith("queued") and signalled in state, state
        assert not (out / "logs" / "random-seed1.exit").exists()

        # A lost run while task 4 is held: the resubmission is one task, for the lost run alone.
        until(lambda: _status(out, capsys)[("entropy", 1)] == "done", 120, "entropy seed 1 to be done", every=1)
        shutil.rmtree(out / "entropy" / "seed1")
        until(lambda: _status(out, capsys)[("entropy", 1)] == "missing", 30, "entropy seed 1 to be missing")  # its task gone from squeue
        text = _sweep(out, capsys, *SLURM)
        again = (out / "slurm" / "jobs.txt").read_text().splitlines()[1].split()[0]
        assert f"submitted array job {again} with 1 run(s)" in text and (out / "slurm" / "tasks-2.txt").read_text() == "entropy 1\n"

        release_requeued(signalled, env)
        until(lambda: _states(out, capsys) == ["done"] * 4, 300, "every run to be done", every=1)
        until(lambda: not slurm(["squeue", "-h", "-j", f"{array},{again}"], env, check=False).strip(), 60, "the jobs to leave the queue")
        for i in range(1, 5):  # task 4 alone was requeued; the finished ones were not
            record = job(f"{array}_{i}", env)
            assert record["JobState"] == "COMPLETED" and record["Restarts"] == ("1" if i == 4 else "0"), record
        assert job(f"{again}_1", env)["JobState"] == "COMPLETED"
        log = (out / "logs" / "random-seed1.log").read_text()
        assert "got SIGUSR1" in log and f"requeueing job {signalled} " in log and "resumed from" in log, log[-3000:]
        assert f"array task {signalled} (job {array}, start 2)" in log
        assert (out / "logs" / "random-seed1.exit").read_text().strip() == "0"

        # Everything done: nothing is submitted, the table is written.
        assert "every run is done (4 runs); nothing to run or submit" in _sweep(out, capsys, *SLURM)
        assert len((out / "slurm" / "jobs.txt").read_text().splitlines()) == 2
        _sweep(out, capsys, "--collect")
        output, _ = local_run.communicate(timeout=600)
    finally:
        if local_run.poll() is None:
            local_run.kill()
    assert local_run.returncode == 0, output[-3000:]
    for name in TABLE:  # same runs, same threads: the same numbers to the last byte
        assert (local / name).read_bytes() == (out / name).read_bytes(), name
