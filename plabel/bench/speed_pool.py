"""``python -m plabel.bench.speed pool``: an on-disk Hugging Face dataset of N digits, opened with
``open_source`` (source hf), scored by :func:`score_shard` and selected by the sharded exact
selection on gloo CPU processes (one thread each). Target: peak RSS < 2 GiB per process."""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from plabel.bench.common import EPS, channels, seeded_model
from plabel.bench.digits import NUM_CLASSES, build_pool_dataset
from plabel.bench.processes import run_processes
from plabel.bench.select import digest, peak_rss_mib
from plabel.bench.timing import machine_line, table, verdict
from plabel.config import SourceConfig
from plabel.data.sources import open_source
from plabel.data.splits import IndexedImages
from plabel.data.transforms import plain_spec, source_transform
from plabel.distributed.sharded_selection import all_gather_selected, select_pseudo_labels_sharded
from plabel.trainer.scoring_pass import ScorePlan, score_shard
from plabel.trainer.setup import LoaderOptions

TARGET_RSS_MIB = 2048


def _pool_task(accelerator: Accelerator, cfg: argparse.Namespace, path: str) -> dict[str, Any]:
    """One process: open the HF folder, score its shard, run the sharded selection."""
    started_rss = peak_rss_mib()
    source = open_source(SourceConfig(source="hf", name=path), "data.train")
    transform = source_transform(source, plain_spec(channels(cfg.model), (28, 28)), "none", train=False)
    pool = IndexedImages(source, torch.arange(len(source)), transform)
    model = accelerator.prepare(seeded_model(cfg.model, cfg.channels_last, cfg.seed))
    options = LoaderOptions(channels_last=cfg.channels_last)
    opened_rss = peak_rss_mib()
    score_times, select_times, selected, shard = [], [], "", 0
    for _ in range(cfg.repeats):
        gc.collect()
        accelerator.wait_for_everyone()
        started = time.perf_counter()
        index, columns = score_shard(accelerator, model, pool, ScorePlan(cfg.batch_size, EPS, options))
        score_times.append(time.perf_counter() - started)
        accelerator.wait_for_everyone()
        started = time.perf_counter()
        local_idx, local_labels = select_pseudo_labels_sharded(
            accelerator, index, columns["entropy"], columns["prediction"], pool_size=len(pool), percent=cfg.percent,
            num_classes=NUM_CLASSES, class_balanced=cfg.class_balanced,
        )
        selection = all_gather_selected(accelerator, local_idx, local_labels)
        select_times.append(time.perf_counter() - started)
        selected, shard = digest(selection.indices, selection.labels), len(index)
        del index, columns, selection  # before the next repeat allocates its own
    return dict(
        score=score_times, select=select_times, started_rss=started_rss, opened_rss=opened_rss,
        peak_rss=peak_rss_mib(), shard=shard, selected=selected,
    )


def _folder_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def bench_pool(cfg: argparse.Namespace) -> None:
    path, built = build_pool_dataset(cfg.data_dir, cfg.n, cfg.seed, cfg.build_processes)
    print(
        f"bench_speed pool: {cfg.n:,} digits in {path} ({_folder_mib(path):.0f} MiB on disk, Image/PNG column; "
        + (f"built in {built:.0f} s" if built is not None else "cached")
        + f"); {cfg.model}, batch {cfg.batch_size}, mixed precision {cfg.mixed_precision}, channels_last "
        f"{cfg.channels_last}; {'class-balanced' if cfg.class_balanced else 'global'} selection of {cfg.percent:g}%; "
        f"median of {cfg.repeats} repeat(s) of the slowest process",
        flush=True,
    )
    print(machine_line(f"cpu ({cfg.processes} gloo processes)", 1, cfg.load_at_start) + "\n", flush=True)
    started = time.perf_counter()
    per_rank = run_processes(_pool_task, cfg.processes, cfg, str(path), timeout=cfg.timeout, mixed_precision=cfg.mixed_precision)
    wall = time.perf_counter() - started
    score = statistics.median(max(ts) for ts in zip(*(r["score"] for r in per_rank)))
    select = statistics.median(max(ts) for ts in zip(*(r["select"] for r in per_rank)))
    peaks = [r["peak_rss"] for r in per_rank]
    peak_cell = " / ".join(f"{p:.0f}" for p in peaks)
    started_cell = " / ".join(f"{r['started_rss']:.0f}" for r in per_rank)
    opened_cell = " / ".join(f"{r['opened_rss']:.0f}" for r in per_rank)
    rows = [
        [f"{cfg.n:,}", str(cfg.processes), "score_shard (PNG decode + transform + forward)", f"{score:.1f}",
         f"{cfg.n / score:.0f}", f"{cfg.n / score / cfg.processes:.0f}", started_cell, opened_cell, peak_cell],
        ["", "", "select_pseudo_labels_sharded + all_gather_selected", f"{select:.2f}", "", "", "", "", ""],
        ["", "", "**score + select**", f"{score + select:.1f}", f"{cfg.n / (score + select):.0f}",
         f"{cfg.n / (score + select) / cfg.processes:.0f}", "", "", ""],
    ]
    # RSS at start is torch + torchvision + datasets imported (~1 GiB with CUDA builds of torch).
    print(table(["N", "processes", "phase", "median s", "samples/s", "samples/s/proc", "RSS at start MiB",
                  "RSS after open MiB", "peak RSS MiB"], rows))
    print(
        f"\npeak RSS per process < {TARGET_RSS_MIB} MiB: {verdict(max(peaks) < TARGET_RSS_MIB)}; selected "
        f"{per_rank[0]['selected'].split(':')[0]} samples, same on every process: "
        f"{'yes' if len({r['selected'] for r in per_rank}) == 1 else '**NO**'}; process wall time "
        f"{wall:.0f} s (start-up included); load average at end {os.getloadavg()[0]:.2f}",
        flush=True,
    )
