"""The single-node SLURM script under a real SLURM: a one-host cluster (munged, slurmctld and one
slurmd, all started here in a temporary folder) takes the job, the time-limit signal (SIGUSR1 to
the batch shell) makes training checkpoint and the script requeue the job, and the requeued job
resumes and ends exactly as an uninterrupted run.

Needs SLURM and munge installed (Debian: slurm-wlm, munge; ``.ci/run`` installs them when it can)
and root (the daemons run as root); skipped, saying which is missing, otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from helpers import ROOT, free_port, launch_command, subprocess_env, tiny
from safetensors.torch import load_file

pytestmark = pytest.mark.slurm

NEEDED = ("sbatch", "scontrol", "scancel", "sinfo", "slurmctld", "slurmd", "munged")
ARGS = tiny({"train.steps_per_epoch": 40, "checkpoint.every_steps": 10, "collective_timeout_s": 120})

SLURM_CONF = """\
ClusterName=plabeltest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={dir}/munge.sock
CredType=cred/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool/%n
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd-%n.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobRequeue=1
ReturnToService=2
MpiDefault=none
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd-%n.log
NodeName=plabel1 NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=test Nodes=plabel1 Default=YES MaxTime=INFINITE State=UP
"""


def _why_not() -> str | None:
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        return f"SLURM is not installed here (missing {', '.join(missing)}; Debian packages slurm-wlm and munge)"
    if os.geteuid() != 0:
        return "the one-host SLURM cluster needs root to start its daemons"
    if not Path("/etc/munge/munge.key").is_file():
        return "no munge key (/etc/munge/munge.key)"
    return None


def _slurm(cmd: list[str], env: dict[str, str], check: bool = True) -> str:
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)  # sbatch: submit dir
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {done.stderr}")
    return done.stdout


def _job(jid: str, env: dict[str, str]) -> dict[str, str]:
    text = _slurm(["scontrol", "show", "job", jid], env, check=False)
    return dict(re.findall(r"(\w+)=(\S+)", text))


def _until(condition, seconds: float, what: str):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip() or "localhost"
    key = folder / "munge.key"
    shutil.copy("/etc/munge/munge.key", key)
    key.chmod(0o600)
    conf = folder / "slurm.conf"
    conf.write_text(SLURM_CONF.format(
        host=host, dir=folder, ctld_port=free_port(), slurmd_port=free_port(), cpus=os.cpu_count() or 2,
    ))
    env = dict(os.environ, SLURM_CONF=str(conf))
    started = []
    try:
        _slurm(["munged", "--force", f"--socket={folder}/munge.sock", f"--key-file={key}", f"--log-file={folder}/munged.log",
                f"--pid-file={folder}/munged.pid", f"--seed-file={folder}/munged.seed"], env)
        started.append(folder / "munged.pid")
        _slurm(["slurmctld", "-f", str(conf), "-i"], env)
        started.append(folder / "slurmctld.pid")
        _slurm(["slurmd", "-f", str(conf), "-N", "plabel1"], env)
        started.append(folder / "slurmd-plabel1.pid")
        _until(lambda: "idle" in _slurm(["sinfo", "-h", "-o", "%t"], env, check=False), 60, "the node to come up")
        yield env, folder
    finally:
        subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True, timeout=30)
        for pid_file in reversed(started):
            _until(pid_file.is_file, 10, f"{pid_file.name}")
            try:
                os.kill(int(pid_file.read_text().split()[0]), 15)
            except (ProcessLookupError, ValueError):
                pass


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
    jid = _slurm(["sbatch", "--parsable", "--gpus-per-node=0", f"--cpus-per-task={os.cpu_count() or 2}", f"--output={log}",
                  "--job-name=tiny", "launch/slurm_single_node.sbatch", *ARGS], job_env).strip()
    out = tmp_path / "runs" / f"tiny-{jid}"
    _until(lambda: any((out / "checkpoints").glob("ckpt-*")), 240, "the job's first checkpoint")
    _slurm(["scancel", "--signal=USR1", "--batch", jid], env)  # what --signal=B:USR1@120 sends before the limit

    # The script requeues the job; SLURM holds a requeued batch job for ~2 minutes: start it now.
    _until(lambda: _job(jid, env).get("Restarts") == "1" and _job(jid, env).get("JobState") == "PENDING", 240, "the requeue")
    # slurmd refuses a credential issued in the same second as the revocation of the job's last
    # one ("Killing non-startable batch job: Job credential revoked"; times have 1 s resolution).
    time.sleep(3)
    _slurm(["scontrol", "update", f"jobid={jid}", "StartTime=now"], env)
    _until(lambda: _job(jid, env).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED"), 300, "the job to end")
    text = Path(str(log).replace("%j", jid)).read_text()
    assert _job(jid, env)["JobState"] == "COMPLETED", text[-3000:]
    assert "start 1:" in text and "got SIGUSR1" in text and "requeueing job" in text and "start 2:" in text
    assert "resumed from" in text

    resumed, whole = _outcome(out), _outcome(reference)
    for name, tensor in whole["weights"].items():
        assert (resumed["weights"][name] == tensor).all(), name
    assert resumed["rounds"] == whole["rounds"] and resumed["selection"] == whole["selection"]
    assert resumed["metrics"] == whole["metrics"]
