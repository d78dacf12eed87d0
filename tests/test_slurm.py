"""The SLURM batch scripts, run for real on this machine under a fake SLURM.

Stand-ins on PATH: ``scontrol`` (node names, and a log of ``requeue`` calls) and ``srun``
(starts its command once per "node" here, with that node's SLURM_NODEID, and forwards SIGUSR1
as srun does). Two "nodes" x 1 CPU process join one gloo group over loopback and train a tiny
run; then the time-limit path: SIGUSR1 to the batch shell -> checkpoint -> requeue -> resume.
"""

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
from helpers import ROOT, free_port, tiny

from plabel.trainer.checkpointer import list_checkpoints

VENV_BIN = ROOT / ".venv" / "bin"
JOB_ID, JOB_NAME = "4242", "tiny"
# collective_timeout_s: a stuck process fails the test in a minute.
TINY = tiny({"train.steps_per_epoch": 4, "train.eval_batch_size": 512, "collective_timeout_s": 60})
LONG = [*TINY, "--train.steps_per_epoch", "40"]  # the last value wins: time to signal mid-round

SCONTROL = """#!/bin/bash
# scontrol stand-in: every node of the fake allocation is this machine.
echo "$*" >> {log}
case $1 in
    show) for ((i = 0; i < SLURM_NNODES; i++)); do echo 127.0.0.1; done ;;
    requeue) ;;
    *) exit 1 ;;
esac
"""

SRUN = """#!/bin/bash
# srun stand-in: the command once per node ($SLURM_NNODES), all here, in parallel. Like srun, it
# forwards SIGUSR1 to the tasks and answers SIGTERM by killing them.
echo "srun $*" >> {log}
while [[ $# -gt 0 && $1 == -* ]]; do shift; done  # options, all --name=value or flags
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do
    SLURM_NODEID=$node SLURM_PROCID=$node SLURM_LOCALID=0 "$@" &
    pids+=($!)
done
trap 'kill -USR1 "${{pids[@]}}" 2>/dev/null' USR1
trap 'kill -KILL "${{pids[@]}}" 2>/dev/null' TERM
status=0
for pid in "${{pids[@]}}"; do
    while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done
    wait "$pid" || status=$?
done
exit $status
"""


@pytest.fixture
def slurm(tmp_path):
    """Environment of a fake 2-node job whose stand-in commands log to tmp_path/slurm.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "slurm.log"
    log.touch()
    for name, text in (("scontrol", SCONTROL), ("srun", SRUN)):
        (bin_dir / name).write_text(text.format(log=log))
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PLABEL_"))}
    env.update(
        PATH=f"{bin_dir}:{VENV_BIN}:{env['PATH']}",
        SLURM_JOB_ID=JOB_ID, SLURM_JOB_NAME=JOB_NAME, SLURM_NNODES="2", SLURM_JOB_NODELIST="node[1-2]",
        SLURM_SUBMIT_DIR=str(ROOT),
        SLURM_GPUS_ON_NODE="8",  # PLABEL_CPU=1 must win: one process per node, whatever the GPUs
        PLABEL_CPU="1", PLABEL_RUNS_DIR=str(tmp_path / "runs"), PLABEL_MAIN_PORT=str(free_port()),
        OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
    )
    return env, tmp_path / "runs" / f"{JOB_NAME}-{JOB_ID}", log


class BatchJob:
    """``bash <script> <args>`` in its own session; output collected line by line."""

    def __init__(self, script: str, args: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen(
            ["bash", str(ROOT / script), *args], cwd=ROOT, env=env, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self._reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, marker: str, timeout: float) -> None:
        deadline = time.time() + timeout
        while not any(marker in line for line in self.lines):
            assert self.proc.poll() is None, f"ended before {marker!r}:\n{self.output[-3000:]}"
            assert time.time() < deadline, f"no {marker!r} in {timeout} s:\n{self.output[-3000:]}"
            time.sleep(0.1)

    def finish(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        """Everything it started, workers included (torch starts those in sessions of their own)."""
        try:
            family = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for p in family:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(timeout=30)


def run_job(script: str, args: list[str], env: dict[str, str]) -> tuple[int, str]:
    job = BatchJob(script, args, env)
    try:
        return job.finish(), job.output
    finally:
        job.kill()


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_multi_node_two_nodes_train_to_the_end(slurm):
    env, run_dir, log = slurm
    code, output = run_job("launch/slurm_multi_node.sbatch", TINY, env)
    assert code == 0, output[-3000:]
    assert summary(run_dir)["num_processes"] == 2
    assert summary(run_dir)["output_dir"] == str(run_dir)
    assert "2 nodes x 1 processes" in output
    srun_call = next(line for line in log.read_text().splitlines() if line.startswith("srun"))
    assert "--ntasks-per-node=1" in srun_call and "--nodes=2" in srun_call
    assert "requeue" not in log.read_text()


def test_single_node_two_cpu_processes(slurm):
    env, run_dir, log = slurm
    env.update(PLABEL_ACCELERATE_CONFIG="launch/cpu_2proc.yaml", PLABEL_PROCS_PER_NODE="2")
    code, output = run_job("launch/slurm_single_node.sbatch", TINY, env)
    assert code == 0, output[-3000:]
    assert summary(run_dir)["num_processes"] == 2
    assert "srun" not in log.read_text()


@pytest.mark.slow  # CI time: the real one-host SLURM's test (tests/test_slurm_cluster.py) covers it by default
def test_time_limit_signal_checkpoints_requeues_and_resumes(slurm):
    env, run_dir, log = slurm
    job = BatchJob("launch/slurm_multi_node.sbatch", LONG, env)
    try:
        job.wait_for_line("checkpoint (round 0 done)", timeout=180)
        job.proc.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@120 sends to the batch shell
        code = job.finish(timeout=120)  # a guard against a hang; promptness is the mid-round checkpoint below
    finally:
        job.kill()
    assert code != 0, job.output[-3000:]
    assert f"requeue {JOB_ID}" in log.read_text().splitlines(), job.output[-3000:]
    assert "checkpoint (preemption)" in job.output
    assert not (run_dir / "summary.json").exists()
    newest = list_checkpoints(run_dir)[0]
    state = json.loads((newest / "plabel_state.json").read_text())
    assert state["mid_round"] and state["next_round"] == 1

    # The requeued job: same job id, so the same command finds the run folder and resumes.
    env["SLURM_RESTART_COUNT"] = "1"
    code, output = run_job("launch/slurm_multi_node.sbatch", LONG, env)
    assert code == 0, output[-3000:]
    assert f"job {JOB_ID}, start 2" in output
    assert f"resumed from {newest}" in output
    assert summary(run_dir)["num_processes"] == 2
    assert log.read_text().count("requeue") == 1
