"""The single-node SLURM script under a real SLURM: a one-host cluster (munged, slurmctld and one
slurmd, all started here in a temporary folder) takes the job, the time-limit signal (SIGUSR1 to
the batch shell) makes training checkpoint and the script requeue the job, and the requeued job
resumes and ends exactly as an uninterrupted run.

The cluster is tests/slurm_cluster.py's. Needs SLURM and munge installed (Debian: slurm-wlm,
munge; ``.ci/run`` installs them when it can) and root (the daemons run as root); skipped, saying
which is missing, otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT, launch_command, subprocess_env, tiny
from safetensors.torch import load_file
from slurm_cluster import job, one_host_cluster, release_requeued, slurm, until

pytestmark = pytest.mark.slurm

ARGS = tiny({"train.steps_per_epoch": 40, "checkpoint.every_steps": 10, "collective_timeout_s": 120})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with one_host_cluster(tmp_path_factory) as started:
        yield started


def _outcome(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    return {
        "weights": load_file(str(out / "model.safetensors")),
        "rounds": summary["rounds"],
        "selection": (out / "pseudo_labels_round01.csv").read_text(),
        "metrics": (out / "metrics.jsonl").read_text(),
    }


def test_time_limit_signal_requeues_the_job_and_it_resumes_exactly(cluster, tmp_path):
    env, folder = cluster
    reference = tmp_path / "reference"
    cmd = launch_command([str(ROOT / "train.py"), *ARGS, "--output_dir", str(reference)], processes=2)
    proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    job_env = subprocess_env(
        SLURM_CONF=env["SLURM_CONF"], PLABEL_CPU="1", PLABEL_PROCS_PER_NODE="2",
        PLABEL_ACCELERATE_CONFIG="launch/cpu_2proc.yaml", PLABEL_RUNS_DIR=str(tmp_path / "runs"),
    )
    log = tmp_path / "job-%j.out"
    # The CPU form of the script's resources (the script asks for 8 GPUs by default).
    jid = slurm(["sbatch", "--parsable", "--gpus-per-node=0", f"--cpus-per-task={os.cpu_count() or 2}", f"--output={log}",
                 "--job-name=tiny", "launch/slurm_single_node.sbatch", *ARGS], job_env).strip()
    out = tmp_path / "runs" / f"tiny-{jid}"
    try:
        until(lambda: any((out / "checkpoints").glob("ckpt-*")), 240, "the job's first checkpoint")
    except AssertionError as failed:  # say why: the job's state and the end of its log
        written = Path(str(log).replace("%j", jid))
        tail = written.read_text()[-3000:] if written.exists() else "(no job log)"
        raise AssertionError(f"{failed}; job: {job(jid, env)}; log: {tail}") from None
    slurm(["scancel", "--signal=USR1", "--batch", jid], env)  # what --signal=B:USR1@120 sends before the limit

    # The script requeues the job; SLURM holds a requeued batch job for ~2 minutes: start it now.
    until(lambda: job(jid, env).get("Restarts") == "1" and job(jid, env).get("JobState") == "PENDING", 240, "the requeue")
    release_requeued(jid, env)
    until(lambda: job(jid, env).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED"), 300, "the job to end")
    text = Path(str(log).replace("%j", jid)).read_text()
    assert job(jid, env)["JobState"] == "COMPLETED", text[-3000:]
    assert "start 1:" in text and "got SIGUSR1" in text and "requeueing job" in text and "start 2:" in text
    assert "resumed from" in text

    resumed, whole = _outcome(out), _outcome(reference)
    for name, tensor in whole["weights"].items():
        assert (resumed["weights"][name] == tensor).all(), name
    assert resumed["rounds"] == whole["rounds"] and resumed["selection"] == whole["selection"]
    assert resumed["metrics"] == whole["metrics"]
