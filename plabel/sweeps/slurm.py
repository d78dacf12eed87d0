"""The SLURM backend: one ``sbatch --array`` job, one array task per missing run.

Each task runs ``launch/slurm_single_node.sbatch`` (the single run's script: its time-limit signal,
checkpoint and requeue) on its own (row, seed), read from ``<sweep>/slurm/tasks-<n>.txt``, and
records the run's exit status where ``plabel sweep --status`` reads it (not when the task was
requeued: it runs again). Submissions are listed in ``<sweep>/slurm/jobs.txt``; ``--status`` asks
``squeue`` which of their tasks SLURM still holds (queued or running), and resubmitting the same
sweep submits only the runs that are neither done nor held by SLURM.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any, Optional

from plabel.config import ConfigError
from plabel.distributed.processes import EXIT_PREEMPTED
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
        f"#SBATCH --gpus-per-node={resources.get('gpus') or 0}",
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
    lines += ["set -uo pipefail", f"cd {shlex.quote(str(TRAIN_PY.parent))}"]
    if str(resources.get("gpus") or 0).strip() == "0":  # no GPUs: the single-run script's CPU form, unless the environment says otherwise
        lines += ["export PLABEL_CPU=${PLABEL_CPU:-1}", "export PLABEL_ACCELERATE_CONFIG=${PLABEL_ACCELERATE_CONFIG:-launch/cpu_2proc.yaml}"]
    if resources.get("processes"):
        lines.append(f"export PLABEL_PROCS_PER_NODE={int(resources['processes'])}")
    lines += [
        f'line=$(sed -n "${{SLURM_ARRAY_TASK_ID}}p" {shlex.quote(str(tasks_file))})',
        'row=${line% *}; seed=${line##* }',
        f'log={shlex.quote(str(out))}/logs/$row-seed$seed.log',
        'rm -f "${log%.log}.exit"',
        'echo "plabel sweep: $row seed $seed is array task ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}'
        ' (job $SLURM_JOB_ID, start $((${SLURM_RESTART_COUNT:-0} + 1)))" >>"$log"',
        "# The single-run script requeues this task (by its array name ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID});",
        "# the run folder is the sweep's (its --output_dir, the last one, wins).",
        f'mapfile -t args <{shlex.quote(str(out))}/slurm/args/$row-seed$seed.txt  # train.py\'s arguments, one a line',
        f'bash {shlex.quote(str(SINGLE_RUN_SCRIPT))} "${{args[@]}}" >>"$log" 2>&1 &',
        "child=$!",
        "requeue=0  # the time-limit signal: the single-run script checkpoints and requeues this task",
        "stopped=0  # scancel, preemption: training checkpoints and stops (not requeued)",
        "trap 'requeue=1; kill -USR1 $child 2>/dev/null' USR1",
        "trap 'stopped=1; kill -TERM $child 2>/dev/null' TERM",
        'while kill -0 "$child" 2>/dev/null; do wait "$child"; done',
        'wait "$child"; status=$?',
        f"# What --status reads: a requeued task runs again (no exit status); a stopped one is recorded as {EXIT_PREEMPTED},",
        "# plabel's stopped-on-request status (accelerate launch turns it into 1): interrupted, not failed.",
        "recorded=$status",
        f"if ((stopped && status != 0)); then recorded={EXIT_PREEMPTED}; fi",
        'if ! ((requeue && status != 0)); then echo "$recorded" > "${log%.log}.exit"; fi',
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
        if any("\n" in a for a in args):
            raise ConfigError(f"--backend slurm: a train.py argument of {row_name} seed {seed} holds a line break: {args}")
        # One argument a line, read back whole (mapfile): a JSON list with spaces stays one argument.
        (out / "slurm" / "args" / f"{row_name}-seed{seed}.txt").write_text("".join(a + "\n" for a in args))
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


def queue(out: Path) -> Optional[dict[tuple[str, int], tuple[str, str]]]:
    """The sweep's runs that SLURM still holds (pending, requeued, running): (row, seed) -> (array
    task ``<job>_<i>``, SLURM state), from the submissions in ``<sweep>/slurm/jobs.txt`` and
    ``squeue``. Empty when nothing was submitted; None when the queue cannot be read (no squeue
    here, or the controller does not answer)."""
    jobs_file = out / "slurm" / "jobs.txt"
    if not jobs_file.is_file():
        return {}
    tasks: dict[str, list[tuple[str, int]]] = {}  # array job id -> its tasks, in task order
    for line in jobs_file.read_text().splitlines():
        if not line.strip():
            continue
        job, script = line.split()[:2]
        tasks_file = out / "slurm" / script.replace("sweep-", "tasks-").replace(".sbatch", ".txt")
        if tasks_file.is_file():
            tasks[job] = [(row, int(seed)) for row, seed in (t.split() for t in tasks_file.read_text().splitlines() if t.strip())]
    if not tasks:
        return {}
    try:  # -r: one line per array task, pending ones included
        done = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(tasks), "-o", "%F %K %T"], capture_output=True, text=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        # One job id SLURM has forgotten (ended more than MinJobAge ago) is an error, not an empty list.
        return {} if "Invalid job id" in done.stderr else None
    held: dict[tuple[str, int], tuple[str, str]] = {}
    for line in done.stdout.splitlines():
        words = line.split()
        if len(words) != 3 or words[0] not in tasks or not words[1].isdigit():
            continue
        job, index, state = words
        runs = tasks[job]
        if 1 <= int(index) <= len(runs):
            held[runs[int(index) - 1]] = (f"{job}_{index}", state)
    return held
