"""The SLURM backend: one ``sbatch --array`` job, one array task per missing run.

Each task runs ``launch/slurm_single_node.sbatch`` (the single run's script: its time-limit signal,
checkpoint and requeue) on its own (row, seed), read from ``<sweep>/slurm/tasks-<n>.txt``, and
records the run's exit status where ``plabel sweep --status`` reads it. Resubmitting the same sweep
submits only the runs that are neither done nor running.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any, Optional

from plabel.config import ConfigError
from plabel.sweeps.grid import Grid
from plabel.sweeps.runs import TRAIN_PY, log_file, train_args

SINGLE_RUN_SCRIPT = TRAIN_PY.parent / "launch" / "slurm_single_node.sbatch"


def array_script(grid: Grid, out: Path, tasks_file: Path, tasks: list[tuple[str, int]], resources: dict[str, Any]) -> str:
    """The sbatch script of one array job over ``tasks`` (row, seed), task i = line i of ``tasks_file``."""
    n = len(tasks)
    cap = resources.get("max_parallel")
    lines = [
        "#!/bin/bash",
        f"# plabel sweep {grid.path}: {n} run(s) of sweep {grid.name!r}, written by plabel sweep --backend slurm.",
        "# Each array task is one (row, seed), run by the single-run script (time-limit signal, checkpoint, requeue).",
        f"#SBATCH --job-name=plabel-{grid.name}",
        f"#SBATCH --array=1-{n}" + (f"%{cap}" if cap else ""),
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        f"#SBATCH --gpus-per-node={resources.get('gpus', 0)}",
        f"#SBATCH --cpus-per-task={resources.get('cpus', 4)}",
        f"#SBATCH --time={resources.get('time', '24:00:00')}",
        "#SBATCH --signal=B:USR1@120",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        f"#SBATCH --output={out}/logs/slurm-%A_%a.out",
    ]
    for key in ("partition", "account"):
        if resources.get(key):
            lines.append(f"#SBATCH --{key}={resources[key]}")
    lines += [
        "set -uo pipefail",
        f"cd {shlex.quote(str(TRAIN_PY.parent))}",
        f'line=$(sed -n "${{SLURM_ARRAY_TASK_ID}}p" {shlex.quote(str(tasks_file))})',
        'row=${line% *}; seed=${line##* }',
        f'log={shlex.quote(str(out))}/logs/$row-seed$seed.log',
        'rm -f "${log%.log}.exit"',
        "# The single-run script's requeue works on this task's own job id; its run folder is the sweep's.",
        f'bash {shlex.quote(str(SINGLE_RUN_SCRIPT))} $(cat {shlex.quote(str(out))}/slurm/args/$row-seed$seed.txt) >>"$log" 2>&1 &',
        "child=$!",
        "trap 'kill -USR1 $child 2>/dev/null' USR1",
        "trap 'kill -TERM $child 2>/dev/null' TERM",
        'while kill -0 "$child" 2>/dev/null; do wait "$child"; done',
        'wait "$child"; status=$?',
        'echo "$status" > "${log%.log}.exit"',
        'exit "$status"',
    ]
    return "\n".join(lines) + "\n"


def submit(grid: Grid, out: Path, tasks: list[tuple[str, int]], resources: dict[str, Any],
           extra: Optional[list[str]] = None) -> str:
    """Write the array script and each task's train.py arguments, submit, return the job id."""
    (out / "slurm" / "args").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    for row_name, seed in tasks:
        args = train_args(grid, grid.row(row_name), seed, out, extra)
        (out / "slurm" / "args" / f"{row_name}-seed{seed}.txt").write_text(" ".join(shlex.quote(a) for a in args) + "\n")
        log_file(out, row_name, seed).with_suffix(".exit").unlink(missing_ok=True)
    number = len(list((out / "slurm").glob("sweep-*.sbatch"))) + 1  # one script and task list per submission
    tasks_file = out / "slurm" / f"tasks-{number}.txt"
    tasks_file.write_text("".join(f"{row} {seed}\n" for row, seed in tasks))
    script = out / "slurm" / f"sweep-{number}.sbatch"
    script.write_text(array_script(grid, out, tasks_file, tasks, resources))
    try:  # from the repository root: the single-run script finds train.py there
        done = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=120,
                              cwd=TRAIN_PY.parent)
    except FileNotFoundError:
        raise ConfigError("--backend slurm: sbatch is not on PATH; run on a SLURM login node or use --backend local") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ConfigError(f"--backend slurm: sbatch refused the array job ({reason}); script: {script}")
    job = done.stdout.strip().split(";")[0]
    with open(out / "slurm" / "jobs.txt", "a") as f:
        f.write(f"{job} {script.name}\n")
    return job
