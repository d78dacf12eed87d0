"""Benchmark: sharded exact selection against the all-gather reference, on gloo CPU processes.

    python -m plabel.bench.select --sizes 1e6 1e7 1e8 --processes 2 --repeats 3
    python -m plabel.bench.select --smoke        # one 1e4 pool, ~20 s (mostly process start-up), for CI

For each pool size N, three fresh sets of processes (so each peak RSS belongs to one path):
  * a local ``torch.sort`` of one process's shard: the time yardstick;
  * the scalable path: :func:`select_pseudo_labels_sharded`, then (second row)
    also :func:`all_gather_selected`, which hands every process the whole selection;
  * the reference: :func:`gather_pool` + :func:`select_pseudo_labels` on the full pool.
Each process generates its own shard (float32 scores from a few thousand values, so many ties, a
quarter negative, one NaN in ~1e5; random predictions). Times are the median over repeats of the
slowest process. Bytes are those of the tensors each process hands to collectives (sent) and gets
back (received); the reference's are computed from its gathered sizes. Exits non-zero unless both
paths select exactly the same samples and labels.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import math
import os
import resource
import statistics
import time
from typing import Any, Callable

import torch

from plabel.bench.processes import run_processes
from plabel.config.args import SpellingsParser
from plabel.distributed.collectives import Traffic, gather_pool, shard_range
from plabel.distributed.sharded_selection import all_gather_selected, select_pseudo_labels_sharded
from plabel.method.selection import select_pseudo_labels

Result = dict[str, Any]


def peak_rss_mib() -> float:
    """This process's peak resident set so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def digest(indices: torch.Tensor, labels: torch.Tensor) -> str:
    """A fingerprint of a selection, so processes return a hash instead of tens of MB."""
    h = hashlib.sha256(indices.long().numpy().tobytes())
    h.update(labels.long().numpy().tobytes())
    return f"{indices.numel()}:{h.hexdigest()[:16]}"


def make_shard(accelerator: Any, cfg: argparse.Namespace, size: int) -> tuple[torch.Tensor, ...]:
    """This process's (indices, scores, predictions); the same data for every path at one world size."""
    shard = shard_range(accelerator, size)
    n = len(shard)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + accelerator.process_index)
    # Few distinct values -> heavy ties; a quarter of them negative. Built in place to keep the
    # input footprint at 4 bytes a score.
    scores = torch.randint(cfg.distinct_scores, (n,), generator=gen, dtype=torch.int32).float()
    scores.sub_(cfg.distinct_scores // 4).div_(cfg.distinct_scores)
    scores[::100_003] = float("nan")
    predictions = torch.randint(cfg.num_classes, (n,), generator=gen)
    return torch.arange(shard.start, shard.stop), scores, predictions


def repeat(accelerator: Any, fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    """Wall times of ``repeats`` calls, and the last result (earlier ones are dropped first, so
    two results never coexist and inflate the peak)."""
    times, out = [], None
    for _ in range(repeats):
        out = None
        gc.collect()
        accelerator.wait_for_everyone()  # start together, so a time includes waiting for the slowest
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def run_sort(accelerator: Any, cfg: argparse.Namespace, size: int) -> Result:
    _, scores, _ = make_shard(accelerator, cfg, size)
    input_rss = peak_rss_mib()
    times, _ = repeat(accelerator, lambda: torch.sort(scores), cfg.repeats)
    return dict(times=times, input_rss=input_rss, peak_rss=peak_rss_mib(), sent=0, received=0)


def run_scalable(accelerator: Any, cfg: argparse.Namespace, size: int) -> list[Result]:
    indices, scores, predictions = make_shard(accelerator, cfg, size)
    input_rss = peak_rss_mib()
    # Traffic is the same every repeat; these hold the last one.
    select_traffic, gather_traffic = Traffic(), Traffic()

    def select() -> tuple[torch.Tensor, torch.Tensor]:
        select_traffic.sent = select_traffic.received = 0
        return select_pseudo_labels_sharded(
            accelerator, indices, scores, predictions, pool_size=size, percent=cfg.percent, num_classes=cfg.num_classes,
            class_balanced=cfg.class_balanced, traffic=select_traffic,
        )

    def select_and_gather() -> Any:
        gather_traffic.sent = gather_traffic.received = 0
        return all_gather_selected(accelerator, *select(), traffic=gather_traffic)

    times, (idx, labels) = repeat(accelerator, select, cfg.repeats)
    select_row = dict(
        times=times, input_rss=input_rss, peak_rss=peak_rss_mib(), sent=select_traffic.sent,
        received=select_traffic.received, selected=digest(idx, labels),
    )
    del idx, labels
    # Second phase, after the first, so its peak is that of the full selection on every process.
    times, everyone = repeat(accelerator, select_and_gather, cfg.repeats)
    gather_row = dict(
        times=times, input_rss=input_rss, peak_rss=peak_rss_mib(), sent=select_traffic.sent + gather_traffic.sent,
        received=select_traffic.received + gather_traffic.received,
        selected=digest(everyone.indices, everyone.labels),
    )
    return [select_row, gather_row]


def run_reference(accelerator: Any, cfg: argparse.Namespace, size: int) -> Result:
    indices, scores, predictions = make_shard(accelerator, cfg, size)
    input_rss = peak_rss_mib()

    def select() -> Any:
        pool = gather_pool(accelerator, indices, {"scores": scores, "predictions": predictions}, size)
        return select_pseudo_labels(
            pool["scores"], pool["predictions"], cfg.percent, cfg.num_classes, cfg.class_balanced
        )

    times, selection = repeat(accelerator, select, cfg.repeats)
    # gather_pool pads each of 3 columns (int64 indices, float32 scores, int64 predictions) to the
    # longest shard and all-gathers it, after an all-gather of its 1-D shape (one int64).
    world = accelerator.num_processes
    sent = 3 * 8 + math.ceil(size / world) * (8 + 4 + 8)
    shard = shard_range(accelerator, size)
    lo, hi = torch.searchsorted(selection.indices, torch.tensor([shard.start, shard.stop])).tolist()
    return dict(
        times=times, input_rss=input_rss, peak_rss=peak_rss_mib(), sent=sent, received=world * sent,
        selected=digest(selection.indices, selection.labels),
        local_selected=digest(selection.indices[lo:hi], selection.labels[lo:hi]),
    )


TASKS: dict[str, Callable[..., Any]] = {"sort": run_sort, "scalable": run_scalable, "reference": run_reference}


def spawn(task: str, cfg: argparse.Namespace, size: int) -> list[Any]:
    """Run one task on ``cfg.processes`` fresh gloo processes; results in rank order."""
    return run_processes(TASKS[task], cfg.processes, cfg, size, timeout=cfg.timeout)


def _summary(per_rank: list[Result]) -> Result:
    """Median over repeats of the slowest rank; worst rank for memory and bytes."""
    slowest = [max(ts) for ts in zip(*(r["times"] for r in per_rank))]
    return dict(
        time=statistics.median(slowest),
        peak=max(r["peak_rss"] for r in per_rank),
        above_input=max(r["peak_rss"] - r["input_rss"] for r in per_rank),
        sent=max(r["sent"] for r in per_rank),
        received=max(r["received"] for r in per_rank),
    )


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def bench_size(cfg: argparse.Namespace, size: int) -> tuple[list[str], bool]:
    """Table rows for one pool size, and whether the two paths selected the same samples."""
    sort = _summary(spawn("sort", cfg, size))
    scalable = spawn("scalable", cfg, size)
    reference = spawn("reference", cfg, size)
    select_rows = [r[0] for r in scalable]
    gather_rows = [r[1] for r in scalable]
    same_local = all(s["selected"] == ref["local_selected"] for s, ref in zip(select_rows, reference))
    same_full = all(g["selected"] == ref["selected"] for g, ref in zip(gather_rows, reference))
    n_selected = reference[0]["selected"].split(":")[0]
    rows = []
    for name, summary, same in (
        ("local torch.sort of one shard (yardstick)", sort, None),
        ("scalable: select_pseudo_labels_sharded", _summary(select_rows), same_local),
        ("scalable + all_gather_selected", _summary(gather_rows), same_full),
        ("reference: gather_pool + select_pseudo_labels", _summary(reference), True),
    ):
        ratio = summary["time"] / sort["time"]
        check = "" if same is None else ("yes" if same else "**NO**")
        rows.append(
            f"| {size:.0e} | {name} | {summary['time']:.3f} | {ratio:.2f} | {summary['peak']:.0f} | "
            f"{summary['above_input']:.0f} | {_bytes(summary['sent'])} | {_bytes(summary['received'])} | "
            f"{n_selected if same is not None else ''} | {check} |"
        )
    return rows, same_local and same_full


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = SpellingsParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7], help="pool sizes (default: 1e6 1e7)")
    parser.add_argument("--processes", type=int, default=2, help="gloo CPU processes, one thread each (default: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path; the median is shown (default: 3)")
    parser.add_argument("--percent", type=float, default=20.0, help="percent of the pool selected (default: 20)")
    parser.add_argument("--num-classes", type=int, default=10, help="classes of the random predictions (default: 10)")
    parser.add_argument("--class-balanced", action="store_true", help="per-class targets instead of one global one")
    parser.add_argument(
        "--distinct-scores", type=int, default=4096, help="distinct score values; fewer = more ties (default: 4096)"
    )
    parser.add_argument("--seed", type=int, default=0, help="data seed (default: 0)")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds to wait for one set of processes (default: 1800)"
    )
    parser.add_argument("--smoke", action="store_true", help="one 1e4 pool, one repeat: runs in seconds, for CI")
    cfg = parser.parse_args(argv)
    if cfg.smoke:
        cfg.sizes, cfg.repeats = [1e4], 1
    return cfg


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    mode = "class-balanced" if cfg.class_balanced else "global"
    print(
        f"bench_select: {cfg.processes} gloo CPU processes x 1 thread, {os.cpu_count()} cores, "
        f"torch {torch.__version__}; "
        f"{mode} selection of {cfg.percent:g}%, {cfg.num_classes} classes, {cfg.distinct_scores} distinct scores; "
        f"median of {cfg.repeats} repeat(s)\n",
        flush=True,
    )
    columns = ["N", "path", "median s", "x sort", "peak RSS/proc MiB", "above input MiB", "sent/proc",
               "received/proc", "selected", "identical"]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    identical = True
    for size in cfg.sizes:
        rows, same = bench_size(cfg, int(size))
        print("\n".join(rows), flush=True)
        identical &= same
    if not identical:
        raise SystemExit("bench_select: the scalable and reference selections differ")


if __name__ == "__main__":
    main()
