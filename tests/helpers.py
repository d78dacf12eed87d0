"""What the tests share: the tiny run config, starting train.py (one process, or N under
``accelerate launch``), and the process spawner of plabel's benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil  # accelerate's dependency
import torch

from plabel.bench.processes import free_port, run_processes

ROOT = Path(__file__).resolve().parents[1]

# A run that takes seconds: 200-image pool, 40 labels, 2 epochs x 3 steps per round, 1 round, one thread.
TINY_CONFIG: dict[str, Any] = {
    "data.pool_limit": 200, "data.test_holdout": 100, "data.labeled_per_class": 4,
    "train.epochs": 2, "train.steps_per_epoch": 3, "train.batch_size": 8, "train.pseudo_batch_size": 8,
    "train.eval_batch_size": 64, "pseudo.rounds": 1, "pseudo.top_k_percent": 30, "tracking.mode": "disabled",
    # Byte-identity across process counts holds on CPU only at the same threads per process
    # (oneDNN's sums follow the thread count): every run of the tests uses one thread per process.
    "train.cpu_threads": 1,
    # Round 0 as long as the others (0.3.1's default is 3x): the tests check mechanics, not teachers.
    "train.round0_epochs": 2,
}


def tiny(changes: dict[str, Any] | None = None) -> list[str]:
    """train.py options for the tiny run, with ``changes`` (dotted name -> value) applied."""
    merged = {**TINY_CONFIG, **(changes or {})}
    return [word for name, value in merged.items() for word in (f"--{name}", str(value))]


TINY = tiny()


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment a test's subprocess runs in: one thread, unbuffered, no W&B mode forced."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    env.pop("WANDB_MODE", None)
    env.pop("PLABEL_FAULT", None)
    env.update(extra)
    return env


def launch_command(script: list[str], processes: int) -> list[str]:
    """``python <script...>`` for one process, else ``accelerate launch`` with the 2-process CPU file."""
    if processes == 1:
        return [sys.executable, *script]
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "launch/cpu_2proc.yaml"),
        "--num_processes", str(processes), "--main_process_port", str(free_port()), *script,
    ]


def run_train(args: list[str], processes: int = 1, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """train.py with ``args`` in a subprocess, output captured."""
    cmd = launch_command([str(ROOT / "train.py"), *args], processes)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=subprocess_env(**env), timeout=timeout)


def _describe(p: psutil.Process) -> str:
    """One line per process of a stuck tree: pid, state and command, read before it is killed."""
    try:
        return f"{p.pid} {p.status()} {' '.join(p.cmdline()[:3])}"
    except psutil.Error:
        return f"{p.pid} gone"


def communicate_or_dump(proc: subprocess.Popen, timeout: float, dump_wait: float = 5.0) -> str:
    """``proc.communicate(timeout)[0]``; when it times out, every process of the tree prints its
    threads' stacks (plabel's SIGUSR2 stack dump), the tree is killed, and the test fails with the
    end of the output, so that a rare hang says where it stood."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for p in tree:
            try:
                p.send_signal(signal.SIGUSR2)
            except psutil.Error:
                pass
        time.sleep(dump_wait)  # the dumps are written at once; the processes go on, so nothing is waited for
        listing = "\n".join(_describe(p) for p in tree)
        for p in tree:
            try:
                p.kill()
            except psutil.Error:
                pass
        out = proc.communicate()[0]
        raise AssertionError(f"timed out after {timeout} s; processes:\n{listing}\noutput (with stacks):\n{(out or '')[-12000:]}") from None


class Float64(torch.nn.Module):
    """``model`` in float64, its inputs cast on the way in.

    Cross-process equivalence checks train in float64: N processes sum a gradient or a BatchNorm
    statistic in another order than one process does, and which order (and which kernel) oneDNN
    uses depends on the CPU. In float32 that moved small conv gradients by ~1e-3 relative, more on
    some CPUs than others; in float64 it is ~1e-13, so the checks can be tight on any x86 CPU.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.double())


__all__ = ["Float64", "ROOT", "TINY", "TINY_CONFIG", "communicate_or_dump", "free_port", "launch_command", "run_processes", "run_train", "subprocess_env", "tiny"]
