"""A real one-host SLURM cluster for the tests (marker ``slurm``): munged, slurmctld and one slurmd,
all started as root in a temporary folder, and stopped at the end. Shared by
tests/test_slurm_cluster.py (the single-run script) and tests/test_sweep_slurm.py (sweep arrays).

Each test module makes its own fixture from :func:`one_host_cluster`::

    @pytest.fixture(scope="module")
    def cluster(tmp_path_factory):
        with one_host_cluster(tmp_path_factory) as started:
            yield started          # (env with SLURM_CONF, the cluster's folder)

Needs SLURM and munge installed (Debian: slurm-wlm, munge; ``.ci/run`` installs them when it can)
and root (the daemons run as root); skips the test, saying which is missing, otherwise.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, free_port

NEEDED = ("sbatch", "scontrol", "scancel", "sinfo", "squeue", "slurmctld", "slurmd", "munged")

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


def why_not() -> str | None:
    """Why the cluster cannot start here, or None."""
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        return f"SLURM is not installed here (missing {', '.join(missing)}; Debian packages slurm-wlm and munge)"
    if os.geteuid() != 0:
        return "the one-host SLURM cluster needs root to start its daemons"
    if not Path("/etc/munge/munge.key").is_file():
        return "no munge key (/etc/munge/munge.key)"
    return None


def slurm(cmd: list[str], env: dict[str, str], check: bool = True) -> str:
    """A SLURM command's output (run from the repository root: sbatch's submit folder)."""
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {done.stderr}")
    return done.stdout


def job(jid: str, env: dict[str, str]) -> dict[str, str]:
    """``scontrol show job`` as a mapping (empty once SLURM has forgotten the job)."""
    text = slurm(["scontrol", "show", "job", jid], env, check=False)
    return dict(re.findall(r"(\w+)=(\S+)", text))


def until(condition, seconds: float, what: str, every: float = 0.5):
    """Poll ``condition`` until it is truthy (its value is returned) or fail after ``seconds``."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def release_requeued(jid: str, env: dict[str, str]) -> None:
    """Start a requeued job now: SLURM holds a requeued batch job for ~2 minutes (its BeginTime)."""
    # slurmd refuses a credential issued in the same second as the revocation of the job's last
    # one ("Killing non-startable batch job: Job credential revoked"; times have 1 s resolution).
    time.sleep(3)
    slurm(["scontrol", "update", f"jobid={jid}", "StartTime=now"], env)


@contextlib.contextmanager
def one_host_cluster(tmp_path_factory) -> Iterator[tuple[dict[str, str], Path]]:
    """Start the cluster (or skip the test, saying why); yields (env with SLURM_CONF, its folder)."""
    reason = why_not()
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
        slurm(["munged", "--force", f"--socket={folder}/munge.sock", f"--key-file={key}", f"--log-file={folder}/munged.log",
               f"--pid-file={folder}/munged.pid", f"--seed-file={folder}/munged.seed"], env)
        started.append(folder / "munged.pid")
        slurm(["slurmctld", "-f", str(conf), "-i"], env)
        started.append(folder / "slurmctld.pid")
        slurm(["slurmd", "-f", str(conf), "-N", "plabel1"], env)
        started.append(folder / "slurmd-plabel1.pid")
        until(lambda: "idle" in slurm(["sinfo", "-h", "-o", "%t"], env, check=False), 60, "the node to come up")
        yield env, folder
    finally:
        subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True, timeout=30)
        # Every job gone before the daemons stop: a job step still completing when slurmctld is
        # gone retries forever, and its slurmd then ignores SIGTERM.
        with contextlib.suppress(AssertionError, subprocess.SubprocessError):
            until(lambda: not slurm(["squeue", "-h"], env, check=False).strip(), 30, "the queue to empty")
        for pid_file in reversed(started):  # slurmd, slurmctld, munged
            with contextlib.suppress(AssertionError, ValueError, IndexError):
                until(pid_file.is_file, 10, f"{pid_file.name}")
                _stop(int(pid_file.read_text().split()[0]))


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie does not: nothing may reap the daemons' orphans here)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _stop(pid: int) -> None:
    """SIGTERM, then SIGKILL if the daemon is still there 10 s later."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.time() + 10
        while _alive(pid) and time.time() < deadline:
            time.sleep(0.2)
        if not _alive(pid):
            return
