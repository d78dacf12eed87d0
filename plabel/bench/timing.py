"""Timing for the benchmarks: paths interleaved on the same pieces of work (a shared machine's load
hits them alike), paired ratios, the machine line, and the tables they print."""

from __future__ import annotations

import gc
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch


def interleaved(paths: dict[str, Callable[[Any], Any]], pieces: list[Any], repeats: int) -> dict[str, list[list[float]]]:
    """``times[name][repeat][piece]``: wall time of each path on each piece of work.

    Every path runs on a piece before the next piece starts, and the order of the paths reverses
    from one piece to the next, so a change in machine load (this machine is shared) hits the
    measurements being compared alike; paths compared with each other should be neighbours.
    """
    times: dict[str, list[list[float]]] = {name: [] for name in paths}
    names, turn = list(paths), 0
    for _ in range(repeats):
        for name in names:
            times[name].append([])
        for piece in pieces:
            for name in names if turn % 2 == 0 else names[::-1]:
                gc.collect()
                started = time.perf_counter()
                paths[name](piece)
                times[name][-1].append(time.perf_counter() - started)
            turn += 1
    return times


def median_total(times: list[list[float]]) -> float:
    """Median over repeats of one path's time for all pieces."""
    return statistics.median(sum(pieces) for pieces in times)


def paired_ratios(baseline: list[list[float]], path: list[list[float]]) -> list[float]:
    """Baseline time / path time for every piece (> 1: the path is faster); report the median."""
    return [b / p for bs, ps in zip(baseline, path) for b, p in zip(bs, ps)]


def machine_line(device: str, threads: int, load: float) -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "unknown CPU",
    ) if Path("/proc/cpuinfo").is_file() else "unknown CPU"
    return (
        f"machine: {os.cpu_count()} CPUs ({cpu}), torch {torch.__version__}, device {device}, "
        f"{threads} torch thread(s) per process, 1-min load average {load:.2f} at start"
    )


def verdict(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
