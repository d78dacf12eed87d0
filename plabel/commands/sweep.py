"""``plabel sweep GRID.yaml``: a grid of rows x seeds, run side by side here or as one SLURM array
job, then one table. Finished runs are never run again; interrupted ones resume.

    plabel sweep configs/sweeps/tiny.yaml --backend local --jobs 2      # run what is missing, then the table
    plabel sweep configs/sweeps/tiny.yaml --backend slurm --gpus 1 --cpus 8 --time 04:00:00 --max-parallel 8
    plabel sweep configs/sweeps/tiny.yaml --status                      # done / running / queued / failed / interrupted / missing
    plabel sweep configs/sweeps/tiny.yaml --collect                     # the table from what is done
    plabel sweep configs/sweeps/tiny.yaml --wandb-sweep                 # the equivalent W&B sweep file
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from plabel.commands.common import run_command
from plabel.config import ConfigError
from plabel.config.args import OneLineParser


def build_parser() -> argparse.ArgumentParser:
    """``plabel sweep``'s options (also read by the docs tests)."""
    parser = OneLineParser(prog="plabel sweep", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("grid", help="the grid file (configs/sweeps/*.yaml shows the format)")
    parser.add_argument("options", nargs="*", metavar="key=value",
                        help="train.py options for every run, on top of the grid's (a machine's paths: data.test.root=/data/mnist-test)")
    parser.add_argument("--rows", nargs="+", default=None, help="run only these rows (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="run only these seeds (default: the grid's)")
    parser.add_argument("--out", default=None, help="the sweep's folder (default: runs/sweeps/<grid name>)")
    parser.add_argument("--backend", choices=("local", "slurm"), default="local",
                        help="local: runs side by side on this machine, cores split between them; slurm: one sbatch --array job")
    parser.add_argument("--jobs", type=int, default=1, help="local: runs at once (default 1); each gets cores / jobs torch threads")
    parser.add_argument("--status", action="store_true",
                        help="say what is done, running, queued (in SLURM), failed (with its last error line), interrupted or missing")
    parser.add_argument("--collect", action="store_true", help="write the table (sweep.md/json/csv/png) from the finished runs")
    parser.add_argument("--wandb_sweep", action="store_true",
                        help="write <out>/wandb-sweep.yaml: the W&B sweep over rows x seeds (wandb sweep <file>; wandb agent runs train.py)")
    for name, help_text in (("gpus", "GPUs per task (0: the CPU form of the single-run script)"), ("cpus", "CPU cores per task"),
                            ("processes", "training processes per task (default: one per GPU, 1 without GPUs)"),
                            ("time", "time limit per task (HH:MM:SS)"),
                            ("max_parallel", "array tasks running at once (sbatch --array=...%%N)"),
                            ("partition", "SLURM partition"), ("account", "SLURM account")):
        parser.add_argument(f"--{name}", default=None, help=f"slurm: {help_text} (default: the grid file's slurm: section)")
    return parser


def sweep_main(argv: Optional[Sequence[str]] = None) -> int:
    """Run a grid of rows x seeds and write its table."""
    return run_command("plabel sweep", lambda: _sweep(build_parser().parse_args(argv)))


def _sweep(args: argparse.Namespace) -> int:
    from plabel.sweeps.grid import load_grid
    from plabel.sweeps.runs import states
    from plabel.sweeps.slurm import queue

    grid = load_grid(args.grid, _options(args.options))  # every row checked before anything runs or is submitted
    out = Path(args.out or Path("runs") / "sweeps" / grid.name).resolve()
    if args.status:
        _print_status(grid, out)
        return 0
    if args.wandb_sweep:
        path = write_wandb_sweep(grid, out)
        print(f"W&B sweep file -> {path}  (wandb sweep {path}; then wandb agent <sweep id>)")
        return 0
    if args.collect:
        return _table(grid, out)
    for name in args.rows or []:
        if "=" in name:  # --rows takes every word after it, options typed last included
            raise ConfigError(f"--rows: {name!r} is an option, not a row: put key=value options before --rows "
                              f"(plabel sweep {args.grid} {name} --rows ...)")
        grid.row(name)  # an unknown row is one line
    unknown_seeds = sorted(set(args.seeds or []) - set(grid.seeds))
    if unknown_seeds:
        raise ConfigError(f"--seeds: {unknown_seeds[0]} is not among the grid's seeds {grid.seeds}")
    held = queue(out)  # runs SLURM still holds (an earlier --backend slurm submission) are not run again
    if held is None:
        raise ConfigError(f"{out}: this sweep was submitted to SLURM and squeue does not answer here; run this where it does "
                          f"(so that queued runs are not run twice), or delete {out}/slurm/jobs.txt if none of its jobs is queued")
    found = states(grid, out, held)
    todo = [(s.row, s.seed) for s in found if s.state not in ("done", "running", "queued")
            and (args.rows is None or s.row in args.rows) and (args.seeds is None or s.seed in args.seeds)]
    if not todo:
        if all(s.state == "done" for s in found):
            print(f"sweep {grid.name}: every run is done ({len(found)} runs); nothing to run or submit")
            return _table(grid, out)
        print(f"sweep {grid.name}: nothing to run or submit: " + _counts(found) + f"  (plabel sweep {args.grid} --status)")
        return 0
    if args.backend == "slurm":
        from plabel.sweeps.slurm import submit

        resources = {**grid.slurm, **{k: getattr(args, k) for k in ("gpus", "cpus", "processes", "time", "max_parallel", "partition",
                                                                    "account") if getattr(args, k) is not None}}
        job = submit(grid, out, todo, resources)
        print(f"sweep {grid.name}: submitted array job {job} with {len(todo)} run(s) -> {out}  (plabel sweep {args.grid} --status)")
        for i, (row, seed) in enumerate(todo, 1):
            print(f"  task {job}_{i}: {row} seed {seed}")
        return 0
    ended = _run_locally(grid, out, todo, max(1, args.jobs))
    code = _table(grid, out)
    return ended or code


def _options(words: list[str]) -> dict[str, Any]:
    """``key=value`` words as typed train.py options (``--key`` spellings accepted too)."""
    from plabel.config.args import typed_value
    from plabel.config.load import iter_fields
    from plabel.sweeps.grid import _canonical

    types = {name: tp for name, tp, _, _ in iter_fields()}
    out: dict[str, Any] = {}
    for word in words:
        key, eq, text = word.partition("=")
        name = _canonical(key)
        if not eq or name not in types:
            raise ConfigError(f"{word}: expected key=value with a train.py option (data.test.root=/data/mnist-test)")
        out[name] = typed_value(types[name], text)
    return out


def _run_locally(grid: Any, out: Path, todo: list[tuple[str, int]], jobs: int) -> int:
    """Run ``todo`` here, ``jobs`` at a time; 0, 1 when a run failed, 130 when Ctrl-C stopped it.

    Ctrl-C reaches the runs themselves (the terminal signals its whole foreground group): each
    writes a checkpoint and exits 130. The sweep only stops starting runs; a KeyboardInterrupt
    here would leave the executor starting every queued run after it, traceback last."""
    from plabel.sweeps.runs import log_file, train_command
    from plabel.distributed.processes import EXIT_INTERRUPTED, EXIT_PREEMPTED, RESUMABLE_EXITS

    threads = max(1, len(os.sched_getaffinity(0)) // jobs)  # concurrent runs share the cores
    (out / "logs").mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def one(row: str, seed: int) -> Optional[int]:
        if stop.is_set():
            return None
        log = log_file(out, row, seed)
        # Unless the grid, the row or a key=value option sets the threads (then they win: the same
        # threads as the same run under --backend slurm give the same numbers).
        split = [] if "train.cpu_threads" in grid.overrides(grid.row(row)) else ["--train.cpu_threads", str(threads)]
        cmd = train_command(grid, grid.row(row), seed, out, split)
        with open(log, "a") as f:
            status = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1")).returncode
        log.with_suffix(".exit").write_text(f"{status}\n")
        return status

    def on_interrupt(signum: int, frame: Any) -> None:
        if not stop.is_set():
            print(f"sweep {grid.name}: interrupted: the running runs write a checkpoint and stop; no other run starts", flush=True)
        stop.set()

    failed, stopped, skipped = 0, 0, 0
    previous = signal.signal(signal.SIGINT, on_interrupt) if threading.current_thread() is threading.main_thread() else None
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(one, row, seed): (row, seed) for row, seed in todo}
            for future in concurrent.futures.as_completed(futures):
                row, seed = futures[future]
                status = future.result()
                if status is None:
                    skipped += 1
                    continue
                stopped += status in RESUMABLE_EXITS
                failed += status not in (0, *RESUMABLE_EXITS)
                said = {0: "done", EXIT_INTERRUPTED: "stopped (interrupted; resumes)", EXIT_PREEMPTED: "stopped (preempted; resumes)"}
                print(f"sweep {grid.name}: {row} seed {seed} " + said.get(status, f"failed (exit {status}; {log_file(out, row, seed)})"),
                      flush=True)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if stop.is_set():
        print(f"sweep {grid.name}: interrupted: {stopped} run(s) stopped with a checkpoint, {skipped} not started; "
              "run the same command again to go on", flush=True)
        return EXIT_INTERRUPTED
    return 1 if failed or stopped else 0  # a run preempted by someone's SIGTERM is not a finished sweep


def _counts(found: list[Any]) -> str:
    from plabel.sweeps.runs import STATES

    return ", ".join(f"{sum(s.state == state for s in found)} {state}" for state in STATES)


def _print_status(grid: Any, out: Path) -> None:
    from plabel.sweeps.runs import states
    from plabel.sweeps.slurm import queue

    held = queue(out)
    found = states(grid, out, held)
    note = "  (SLURM's queue not read: squeue does not answer here)" if held is None else ""
    print(f"sweep {grid.name} ({out}): " + _counts(found) + note)
    for s in found:
        print(f"  {s.row:24s} seed {s.seed:<4d} {s.state}" + (f"  {s.detail}" if s.detail else ""))


def _table(grid: Any, out: Path) -> int:
    from plabel.sweeps.table import write_table

    if not out.is_dir():
        raise ConfigError(f"--out: {out} does not exist; run the sweep first")
    table = write_table(grid, out)
    missing = [r["row"] for r in table["rows"] if not r["complete"]]
    print((out / "sweep.md").read_text().rstrip())
    print(f"table -> {out}/sweep.md, sweep.json, sweep.csv, sweep.png" + (f"  (rows missing seeds: {', '.join(missing)})" if missing else ""))
    return 0


def write_wandb_sweep(grid: Any, out: Path) -> Path:
    """A W&B grid sweep over rows x seeds whose runs are exactly the local/SLURM ones."""
    out.mkdir(parents=True, exist_ok=True)
    from plabel.sweeps.runs import TRAIN_PY

    spec = {
        "name": grid.name,
        "program": str(TRAIN_PY),
        "method": "grid",
        "parameters": {
            "grid": {"value": str(grid.path)},
            "sweep_out": {"value": str(out)},
            "row": {"values": [row.name for row in grid.rows]},
            "seed": {"values": list(grid.seeds)},
        },
        "command": ["${env}", "python", "${program}", "${args}"],
    }
    path = out / "wandb-sweep.yaml"
    path.write_text(f"# wandb sweep {path}   (written by plabel sweep {grid.path} --wandb-sweep)\n" + yaml.safe_dump(spec, sort_keys=False))
    return path
