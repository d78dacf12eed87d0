"""A sweep's runs on disk: one folder per (row, seed), what each run's command is, and its state.

    <sweep>/<row>/seed<k>/       the run folder (train.py's own: resumes, never reruns a finished run)
    <sweep>/logs/<row>-seed<k>.log    its output; .exit holds its exit status once it ended
    <sweep>/slurm/                    the SLURM backend's array scripts, task lists and job ids
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from plabel.distributed.processes import RESUMABLE_EXITS
from plabel.sweeps.grid import Grid, Row

TRAIN_PY = Path(__file__).resolve().parents[2] / "train.py"
STATES = ("done", "running", "queued", "failed", "interrupted", "missing")


def run_dir(out: Path, row: str, seed: int) -> Path:
    return out / row / f"seed{seed}"


def log_file(out: Path, row: str, seed: int) -> Path:
    return out / "logs" / f"{row}-seed{seed}.log"


def train_args(grid: Grid, row: Row, seed: int, out: Path, extra: Optional[list[str]] = None) -> list[str]:
    """train.py's arguments for one run: the grid's base and overrides, seed, folder and W&B grouping."""
    args = ["--config", str(grid.base)] if grid.base else []
    for key, value in grid.overrides(row).items():
        args += [f"--{key}", _text(value)]
    args += [
        "--seed", str(seed), "--output_dir", str(run_dir(out, row.name, seed)),
        "--tracking.group", grid.name, "--tracking.job_type", row.name,
        "--tracking.tags", json.dumps([row.name, f"seed{seed}"]),
    ]
    return args + list(extra or [])


def train_command(grid: Grid, row: Row, seed: int, out: Path, extra: Optional[list[str]] = None) -> list[str]:
    return [sys.executable, str(TRAIN_PY), *train_args(grid, row, seed, out, extra)]


def _text(value: Any) -> str:
    """A YAML value as train.py reads it back: lists and mappings as JSON (valid YAML), the rest as text."""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


@dataclass(frozen=True)
class RunState:
    row: str
    seed: int
    state: str  # done | running | queued | failed | interrupted | missing
    detail: str = ""  # the failing run's last error line; the interrupted run's newest checkpoint; its SLURM task


def _locked(folder: Path) -> bool:
    """Whether a live plabel job holds the run folder (its flock; a dead job's lock is free)."""
    lock = folder / ".plabel.lock"
    if not lock.is_file():
        return False
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def last_error_line(log: Path) -> str:
    """The line of a run's log that says why it failed (plabel's one-line error, else the last line)."""
    if not log.is_file():
        return ""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if "error:" in line or line.startswith(("RuntimeError", "ValueError", "Error", "Traceback")):
            return line[:300]
    return lines[-1][:300] if lines else ""


def state_of(out: Path, row: str, seed: int, queue: Optional[dict[tuple[str, int], tuple[str, str]]] = None) -> RunState:
    """The run's state. ``queue``: the sweep's runs that SLURM still holds, (row, seed) -> (task,
    SLURM state) (plabel.sweeps.slurm.queue): a pending or requeued task is ``queued``, not missing
    or interrupted, so a resubmission leaves it alone."""
    folder = run_dir(out, row, seed)
    if (folder / "summary.json").is_file():
        return RunState(row, seed, "done")
    task, slurm_state = (queue or {}).get((row, seed), ("", ""))
    if _locked(folder):
        return RunState(row, seed, "running", f"slurm task {task}" if task else "")
    if task:
        running = slurm_state in ("RUNNING", "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT")
        return RunState(row, seed, "running" if running else "queued", f"slurm task {task} {slurm_state}")
    exit_file = log_file(out, row, seed).with_suffix(".exit")
    status = exit_file.read_text().strip() if exit_file.is_file() else ""
    if status and status not in ("0", *map(str, RESUMABLE_EXITS)):  # preempted or Ctrl-C: both resume
        return RunState(row, seed, "failed", f"exit {status}: {last_error_line(log_file(out, row, seed))}")
    checkpoints = sorted((folder / "checkpoints").glob("ckpt-*")) if folder.is_dir() else []
    if checkpoints:
        return RunState(row, seed, "interrupted", f"resumes from {checkpoints[-1].name}")
    return RunState(row, seed, "missing")


def states(grid: Grid, out: Path, queue: Optional[dict[tuple[str, int], tuple[str, str]]] = None) -> list[RunState]:
    return [state_of(out, row.name, seed, queue) for row, seed in grid.runs()]


def planned_run(args: Any, overrides: dict[str, Any]) -> tuple[Optional[str], dict[str, Any]]:
    """``train.py --grid G --row R``: the row's run, as ``plabel sweep`` would start it (its folder,
    W&B group, job type and tags); options given on the command line still win."""
    from plabel.sweeps.grid import load_grid

    grid = load_grid(args.grid)
    row = grid.row(args.row)
    seed = int(overrides.get("seed", grid.seeds[0]))
    out = Path(args.sweep_out) if args.sweep_out else Path("runs") / "sweeps" / grid.name
    planned = {
        **grid.overrides(row), "seed": seed, "output_dir": str(run_dir(out, row.name, seed)),
        "tracking.group": grid.name, "tracking.job_type": row.name, "tracking.tags": [row.name, f"seed{seed}"],
    }
    return args.config or (str(grid.base) if grid.base else None), {**planned, **overrides}
