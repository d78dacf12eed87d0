"""Benchmark: plabel's scoring and training steps against bare PyTorch loops, and one pool pass.

    python -m plabel.bench.speed scoring --batch-size 512 [--mixed-precision bf16] [--channels-last]
    python -m plabel.bench.speed train --batch-size 64 --pseudo-batch-size 64
    python -m plabel.bench.speed pool --n 1000000 --processes 2
    python -m plabel.bench.speed {scoring,train,pool} --smoke    # seconds each, for CI

scoring  samples/s of :func:`score_shard` against ``with torch.no_grad(): model(x)`` over the same
         DataLoader (dataset, eval transform, batch size, workers, autocast, memory format), with a
         loader-only row. Target: score_shard / bare >= 0.95, as the median of paired pieces (the
         paths take turns on pieces of a few batches, so load from other work hits both alike).
train    images/s of :func:`train_round` (labeled + pseudo batch, one forward over the
         concatenation, combined_loss, backward, step) against a plain cross-entropy step on one
         batch of the same total size, with loader-only rows. Data loading runs in the training
         process (num_workers 0 by default), so every step row includes it. Target: >= 0.95,
         as the median over repeats of the ratio between neighbouring runs.
pool     an on-disk Hugging Face dataset of N digits (built once, cached under --data-dir), opened
         with ``open_source`` (source hf), scored by :func:`score_shard` and selected by the sharded
         exact selection on gloo CPU processes (one thread each). Target: peak RSS < 2 GiB per process.

Images are the 5,000 embedded MNIST digits, each shifted by up to 3 pixels and dimmed at
random, so class structure and PNG sizes look like MNIST's. Times are medians over ``--repeats``;
each table is preceded by the machine line (CPUs, torch, device, threads, load average): numbers
from a busy machine are not comparable.
"""

from __future__ import annotations

import argparse
import copy
import gc
import itertools
import math
import os
import shutil
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset

from plabel.bench.processes import run_processes
from plabel.bench.select import digest, peak_rss_mib
from plabel.config import PseudoConfig, RunConfig, SourceConfig
from plabel.config.args import SpellingsParser
from plabel.config.model_names import check_model_name
from plabel.data.sources import TensorImageSource, open_embedded, open_source
from plabel.data.splits import IndexedImages
from plabel.data.transforms import build_transform, plain_spec, source_transform
from plabel.distributed.sharded_selection import all_gather_selected, select_pseudo_labels_sharded
from plabel.models import build_model
from plabel.models.prepare import model_channels
from plabel.trainer.loop import RoundPosition, TrainPlan, make_train_loader, train_round
from plabel.trainer.scoring_pass import ScorePlan, score_shard
from plabel.trainer.setup import LoaderOptions, make_optimizer

TARGET_RATIO = 0.95
TARGET_RSS_MIB = 2048
EPS = 1e-10  # PseudoConfig.eps's default
NUM_CLASSES = 10
MAX_SHIFT = 3
CHUNK = 10_000  # digits generated (and, for the pool, written) per piece


# ---------------------------------------------------------------------------------------------
# Synthetic MNIST-like digits.


def _base_digits() -> tuple[np.ndarray, np.ndarray]:
    source = open_embedded()
    return source.images[:, 0].numpy(), source.labels.numpy()


def _digit_chunk(base: tuple[np.ndarray, np.ndarray], seed: int, chunk: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunk ``chunk`` of the synthetic set: uint8 (size, 28, 28) and int64 (size,); a function
    of (seed, chunk) only, so the pool reads the same digits however it was built."""
    images, labels = base
    rng = np.random.default_rng([seed, chunk])
    pick = rng.integers(len(labels), size=size)
    m = MAX_SHIFT
    padded = np.pad(images[pick], ((0, 0), (m, m), (m, m)))
    dy, dx = rng.integers(0, 2 * m + 1, size=(2, size))
    rows = (np.arange(28)[None, :] + dy[:, None])[:, :, None]  # (size, 28, 1)
    cols = (np.arange(28)[None, :] + dx[:, None])[:, None, :]  # (size, 1, 28)
    shifted = padded[np.arange(size)[:, None, None], rows, cols]
    gain = rng.uniform(0.6, 1.0, size=(size, 1, 1))
    return np.rint(shifted * gain).astype(np.uint8), labels[pick].astype(np.int64)


def synthetic_source(n: int, seed: int) -> TensorImageSource:
    """``n`` digits in memory, the way plabel holds embedded MNIST and idx files."""
    base = _base_digits()
    parts = [_digit_chunk(base, seed, c, min(CHUNK, n - c * CHUNK)) for c in range(math.ceil(n / CHUNK))]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts])).unsqueeze(1)
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return TensorImageSource(images, labels, NUM_CLASSES, f"synthetic digits ({n})")


def _digit_rows(chunks: list[int], n: int, seed: int) -> Iterator[dict[str, Any]]:
    """Rows for ``Dataset.from_generator``: one chunk in memory at a time."""
    base = _base_digits()
    for chunk in chunks:
        images, labels = _digit_chunk(base, seed, chunk, min(CHUNK, n - chunk * CHUNK))
        for image, label in zip(images, labels):
            yield {"image": image, "label": int(label)}


def build_pool_dataset(data_dir: str, n: int, seed: int, processes: int) -> tuple[Path, float | None]:
    """The save_to_disk folder of ``n`` digits, and its build time (None when it was cached).

    Laid out like the hub's MNIST: an ``Image`` column (PNG bytes) and a ``ClassLabel``. Through
    plabel's HF source a PNG row decodes faster than a uint8 ``Array2D`` row, which comes back
    as nested Python lists. Written to a side folder and renamed, so an interrupted build is
    never mistaken for a finished one.
    """
    import datasets

    path = Path(data_dir).expanduser() / f"digits-{n}-seed{seed}"
    if (path / "state.json").is_file():
        return path, None
    partial, cache = path.with_name(path.name + ".partial"), path.with_name(path.name + ".cache")
    for stale in (partial, cache):
        shutil.rmtree(stale, ignore_errors=True)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(NUM_CLASSES)])}
    )
    chunks = list(range(math.ceil(n / CHUNK)))
    started = time.perf_counter()
    dataset = datasets.Dataset.from_generator(
        _digit_rows, features=features, gen_kwargs={"chunks": chunks, "n": n, "seed": seed},
        cache_dir=str(cache), num_proc=max(1, min(processes, len(chunks))),
    )
    dataset.save_to_disk(str(partial))
    del dataset
    shutil.rmtree(cache, ignore_errors=True)
    partial.rename(path)
    return path, time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# Shared pieces.


def channels(name: str) -> int:
    """Channels ``--model`` takes for the grey digits, as a run decides (torchvision's: 3, grey repeated)."""
    return model_channels(check_model_name(name).library, False, None, 1)


def input_transform(cfg: argparse.Namespace, augment: str, train: bool) -> Any:
    """The digits (28x28) as the model takes them: resized to ``--image-size`` when it differs."""
    size = cfg.image_size
    return build_transform(1, plain_spec(channels(cfg.model), (size, size)), augment, train, resize=size != 28)


def seeded_model(name: str, channels_last: bool, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(name, channels(name), NUM_CLASSES)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def autocast(device: torch.device, mixed_precision: str) -> torch.autocast:
    """What a bare loop would write; plabel's paths use ``accelerator.autocast`` instead."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16")


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


def _table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


# ---------------------------------------------------------------------------------------------
# scoring


def bench_scoring(cfg: argparse.Namespace) -> None:
    accelerator = Accelerator(cpu=True, mixed_precision=cfg.mixed_precision)
    device = accelerator.device
    options = LoaderOptions(num_workers=cfg.num_workers, persistent_workers=False, channels_last=cfg.channels_last)
    source = synthetic_source(cfg.n, cfg.seed)
    transform = input_transform(cfg, "none", train=False)
    # Pieces of a few batches, each its own dataset (positions from 0, as score_shard expects).
    step = cfg.segment_batches * cfg.batch_size
    pieces = [IndexedImages(source, torch.arange(s, min(s + step, cfg.n)), transform) for s in range(0, cfg.n, step)]
    model = seeded_model(cfg.model, cfg.channels_last, cfg.seed)
    bare = copy.deepcopy(model).eval()
    model = accelerator.prepare(model)

    def loader(data: Dataset) -> DataLoader:
        return DataLoader(data, batch_size=cfg.batch_size, shuffle=False, **options.dataloader_kwargs())

    def loader_only(data: Dataset) -> None:
        for _ in loader(data):
            pass

    @torch.no_grad()
    def bare_loop(data: Dataset) -> None:
        for x, _, _ in loader(data):
            with autocast(device, cfg.mixed_precision):
                bare(options.layout(x.to(device)))

    def plabel(data: Dataset) -> None:
        score_shard(accelerator, model, data, ScorePlan(cfg.batch_size, EPS, options))

    paths = {"loader": loader_only, "bare": bare_loop, "plabel": plabel}
    for fn in paths.values():
        fn(pieces[0])  # warm-up: allocator, kernels, lazy imports
    times = interleaved(paths, pieces, cfg.repeats)
    total = {name: median_total(ts) for name, ts in times.items()}
    batches = sum(math.ceil(len(p) / cfg.batch_size) for p in pieces)
    labels = {
        "loader": "DataLoader only (eval transform + collate)",
        "bare": "bare: `no_grad` model(x) loop",
        "plabel": "plabel: score_shard (+ entropy, margin, ... columns)",
    }
    rows = [
        [labels[name], str(cfg.batch_size), f"{cfg.n / total[name]:.0f}", f"{1000 * total[name] / batches:.2f}",
         "" if name == "loader" else f"{statistics.median(paired_ratios(times['bare'], times[name])):.3f}"]
        for name in paths
    ]
    pairs = paired_ratios(times["bare"], times["plabel"])
    ratio = statistics.median(pairs)
    print(
        f"bench_speed scoring: {cfg.model}, {cfg.n} samples {channels(cfg.model)}x{cfg.image_size}x{cfg.image_size}, batch {cfg.batch_size}, mixed precision "
        f"{cfg.mixed_precision}, channels_last {cfg.channels_last}, num_workers {cfg.num_workers}; {cfg.repeats} "
        f"repeat(s) of {len(pieces)} piece(s) of <= {cfg.segment_batches} batches, paths interleaved per piece"
    )
    print(machine_line(str(device), torch.get_num_threads(), cfg.load_at_start) + "\n")
    print(_table(["path", "batch", "samples/s (median)", "ms/batch", "x bare (median of paired pieces)"], rows))
    print(
        f"\nscore_shard / bare = {ratio:.3f} (target >= {TARGET_RATIO}: {verdict(ratio >= TARGET_RATIO)}); "
        f"paired ratios span {min(pairs):.3f}-{max(pairs):.3f} over {len(pairs)} pieces; "
        f"load average at end {os.getloadavg()[0]:.2f}",
        flush=True,
    )


# ---------------------------------------------------------------------------------------------
# train


def _train_sets(cfg: argparse.Namespace) -> tuple[IndexedImages, IndexedImages, IndexedImages]:
    """(labeled, pseudo, both): augmented digits; the pseudo set carries random pseudo-labels.

    Big enough (steps x total batch each) that the plain loader needs no cycling; train_round
    cycles them through :class:`Repeated` as in a run.
    """
    size = cfg.steps * (cfg.batch_size + cfg.pseudo_batch_size)
    source = synthetic_source(2 * size, cfg.seed)
    transform = input_transform(cfg, cfg.augment, train=True)
    pseudo_labels = torch.randint(NUM_CLASSES, (size,), generator=torch.Generator().manual_seed(cfg.seed))
    return (
        IndexedImages(source, torch.arange(size), transform),
        IndexedImages(source, torch.arange(size, 2 * size), transform, labels=pseudo_labels),
        IndexedImages(source, torch.arange(2 * size), transform),
    )


def _train_paths(cfg: argparse.Namespace, accelerator: Accelerator, options: LoaderOptions) -> dict[str, Callable[[int], None]]:
    """Each path runs ``steps`` steps (or loads ``steps`` batches); every model starts from the
    same weights and has its own optimizer from :func:`make_optimizer`."""
    device = accelerator.device
    total = cfg.batch_size + cfg.pseudo_batch_size
    labeled, pseudo, both = _train_sets(cfg)
    run_cfg = RunConfig()
    run_cfg.train = replace(run_cfg.train, optimizer=cfg.optimizer, epochs=1, pseudo_batch_size=cfg.pseudo_batch_size)
    pseudo_cfg = PseudoConfig(alpha_schedule="constant", alpha_max=1.0)  # alpha = 1 from the first step
    initial = seeded_model(cfg.model, cfg.channels_last, cfg.seed)
    plain_model = copy.deepcopy(initial).train()
    plain_optimizer = make_optimizer(run_cfg, plain_model)
    rounds = itertools.count()  # a new round index per call: a fresh sampler order, as in a new round

    def plain_batches(steps: int) -> Iterator[Any]:
        loader = DataLoader(both, batch_size=total, shuffle=True, drop_last=True, **options.dataloader_kwargs())
        return (batch for _, batch in zip(range(steps), loader))  # range first: no extra batch loaded

    def plain_loader(steps: int) -> None:
        for _ in plain_batches(steps):
            pass

    def plabel_loaders(steps: int) -> None:
        labeled_loader = make_train_loader(accelerator, labeled, cfg.batch_size, steps, cfg.seed, options)
        pseudo_loader = make_train_loader(accelerator, pseudo, cfg.pseudo_batch_size, steps, cfg.seed + 1, options)
        for _ in zip(labeled_loader, pseudo_loader):
            pass

    def plain_step(steps: int) -> None:
        for x, y, _ in plain_batches(steps):
            with autocast(device, cfg.mixed_precision):
                logits = plain_model(options.layout(x.to(device)))
            loss = F.cross_entropy(logits.float(), y.to(device))
            plain_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            plain_optimizer.step()

    def plabel_round(with_pseudo: bool) -> Callable[[int], None]:
        model = copy.deepcopy(initial)
        model, optimizer = accelerator.prepare(model, make_optimizer(run_cfg, model))

        def run(steps: int) -> None:
            train_cfg = replace(run_cfg.train, steps_per_epoch=steps, batch_size=cfg.batch_size if with_pseudo else total)
            plan = TrainPlan(train_cfg, pseudo_cfg, cfg.seed, log_every=10**9, options=options)
            train_round(
                accelerator, model, optimizer, labeled, pseudo if with_pseudo else None, plan, RoundPosition(next(rounds)),
                log=lambda metrics, step: None,
            )

        return run

    # Run order: the plain step sits between the two train_round paths it is compared with.
    return {
        "plain loader": plain_loader,
        "plabel loaders": plabel_loaders,
        "labeled only": plabel_round(with_pseudo=False),
        "plain": plain_step,
        "combined": plabel_round(with_pseudo=True),
    }


def bench_train(cfg: argparse.Namespace) -> None:
    accelerator = Accelerator(cpu=True, mixed_precision=cfg.mixed_precision)
    options = LoaderOptions(num_workers=cfg.num_workers, persistent_workers=False, channels_last=cfg.channels_last)
    total = cfg.batch_size + cfg.pseudo_batch_size
    paths = _train_paths(cfg, accelerator, options)
    labels = {
        "plain loader": f"loader only: plain DataLoader, {total}",
        "plabel loaders": f"loader only: make_train_loader x2, {cfg.batch_size} + {cfg.pseudo_batch_size}",
        "plain": f"plain step: cross_entropy on {total} labeled",
        "labeled only": f"plabel train_round: {total} labeled, no pseudo",
        "combined": f"plabel train_round: {cfg.batch_size} labeled + {cfg.pseudo_batch_size} pseudo, combined_loss",
    }
    for fn in paths.values():
        fn(min(2, cfg.steps))  # warm-up
    times = interleaved(paths, [cfg.steps], cfg.repeats)
    total_time = {name: median_total(ts) for name, ts in times.items()}
    rows = [
        [labels[name], str(total), f"{cfg.steps * total / total_time[name]:.0f}",
         f"{1000 * total_time[name] / cfg.steps:.1f}",
         "" if "loader" in name else f"{statistics.median(paired_ratios(times['plain'], times[name])):.3f}"]
        for name in labels
    ]
    pairs = paired_ratios(times["plain"], times["combined"])
    ratio = statistics.median(pairs)
    loading_share = total_time["plabel loaders"] / total_time["combined"]
    print(
        f"bench_speed train: {cfg.model}, {cfg.optimizer}, augment {cfg.augment}, {cfg.steps} steps per repeat, "
        f"mixed precision {cfg.mixed_precision}, channels_last {cfg.channels_last}, num_workers {cfg.num_workers}; "
        f"{cfg.repeats} repeat(s), paths interleaved"
    )
    print(machine_line(str(accelerator.device), torch.get_num_threads(), cfg.load_at_start) + "\n")
    print(_table(["path", "images/step", "images/s (median)", "ms/step", "x plain step (median of paired repeats)"], rows))
    print(
        f"\ntrain_round ({cfg.batch_size} + {cfg.pseudo_batch_size}) / plain step = {ratio:.3f} "
        f"(target >= {TARGET_RATIO}: {verdict(ratio >= TARGET_RATIO)}); paired ratios span "
        f"{min(pairs):.3f}-{max(pairs):.3f}; loading is {100 * loading_share:.0f}% of a train_round step; "
        f"load average at end {os.getloadavg()[0]:.2f}",
        flush=True,
    )


# ---------------------------------------------------------------------------------------------
# pool


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
    print(_table(["N", "processes", "phase", "median s", "samples/s", "samples/s/proc", "RSS at start MiB",
                  "RSS after open MiB", "peak RSS MiB"], rows))
    print(
        f"\npeak RSS per process < {TARGET_RSS_MIB} MiB: {verdict(max(peaks) < TARGET_RSS_MIB)}; selected "
        f"{per_rank[0]['selected'].split(':')[0]} samples, same on every process: "
        f"{'yes' if len({r['selected'] for r in per_rank}) == 1 else '**NO**'}; process wall time "
        f"{wall:.0f} s (start-up included); load average at end {os.getloadavg()[0]:.2f}",
        flush=True,
    )


# ---------------------------------------------------------------------------------------------
# Command line.


def _common(parser: argparse.ArgumentParser, repeats: int, batch_size: int) -> None:
    parser.add_argument("--model", default="small_cnn",
                        help="any model.name: small_cnn (default), resnet18 (~7x slower on CPU: lower --n/--steps), "
                        "timm/<name>, torchvision/<name>")
    parser.add_argument("--image-size", type=int, default=28,
                        help="digits are resized to this square size for the model (default: 28, their own)")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"batch size (default: {batch_size})")
    parser.add_argument("--mixed-precision", choices=["no", "bf16"], default="no",
                        help="autocast for both paths (default: no); bf16 pays off on CPUs with AVX512-BF16/AMX")
    parser.add_argument("--channels-last", action="store_true", help="channels_last model and inputs, both paths")
    parser.add_argument("--repeats", type=int, default=repeats, help=f"timed repeats; the median is shown (default: {repeats})")
    parser.add_argument("--seed", type=int, default=0, help="data and model seed (default: 0)")
    parser.add_argument("--smoke", action="store_true", help="a tiny size and one repeat: seconds, for CI")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = SpellingsParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    scoring = commands.add_parser("scoring", help="score_shard against a bare no_grad loop, one process")
    _common(scoring, repeats=5, batch_size=512)
    scoring.add_argument("--n", type=int, default=10_240, help="samples scored per repeat (default: 10240)")
    scoring.add_argument("--segment-batches", type=int, default=4,
                         help="batches per piece; paths alternate piece by piece (default: 4)")
    scoring.add_argument("--num-workers", type=int, default=0, help="DataLoader workers, both paths (default: 0)")
    scoring.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default (default: 0)")

    train = commands.add_parser("train", help="train_round's combined step against a plain step, one process")
    _common(train, repeats=5, batch_size=64)
    train.add_argument("--pseudo-batch-size", type=int, default=64,
                       help="pseudo batch; the plain step trains on batch + pseudo batch labeled samples (default: 64)")
    train.add_argument("--steps", type=int, default=15,
                       help="optimizer steps per repeat and path: one train_round epoch (default: 15)")
    train.add_argument("--augment", choices=["none", "light", "strong"], default="light",
                       help="training augmentation, both paths (default: light, plabel's default)")
    train.add_argument("--optimizer", choices=["adam", "sgd"], default="adam", help="as train.optimizer (default: adam)")
    train.add_argument("--num-workers", type=int, default=0, help="DataLoader workers, every path (default: 0)")
    train.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default (default: 0)")

    pool = commands.add_parser("pool", help="score + select an on-disk HF pool on gloo CPU processes")
    _common(pool, repeats=1, batch_size=512)
    pool.add_argument("--n", type=int, default=1_000_000, help="pool size (default: 1000000: ~70 s to build once, ~12 min to score at fp32 on 2 cores)")
    pool.add_argument("--processes", type=int, default=2, help="gloo CPU processes, one thread each (default: 2)")
    pool.add_argument("--data-dir", default="/tmp/plabel_bench_data",
                      help="where the dataset is built once and reused (default: /tmp/plabel_bench_data)")
    pool.add_argument("--build-processes", type=int, default=2, help="processes writing the dataset (default: 2)")
    pool.add_argument("--percent", type=float, default=20.0, help="percent of the pool selected (default: 20)")
    pool.add_argument("--class-balanced", action=argparse.BooleanOptionalAction, default=True,
                      help="per-class targets, plabel's default (default: on)")
    pool.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the processes (default: 3600)")

    cfg = parser.parse_args(argv)
    if cfg.smoke:
        cfg.repeats = 1
        if cfg.command == "scoring":
            cfg.n, cfg.batch_size = 512, 128
        elif cfg.command == "train":
            cfg.steps, cfg.batch_size, cfg.pseudo_batch_size = 3, 16, 16
        else:
            cfg.n, cfg.batch_size, cfg.build_processes = 2_000, 256, 1
    for name in ("batch_size", "repeats", "n", "steps", "pseudo_batch_size", "processes", "segment_batches"):
        if getattr(cfg, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(cfg, name)}")
    return cfg


def main(argv: list[str] | None = None) -> None:
    load_at_start = os.getloadavg()[0]  # before this process adds its own
    cfg = parse_args(argv)
    cfg.load_at_start = load_at_start
    if getattr(cfg, "threads", 0):
        torch.set_num_threads(cfg.threads)
    {"scoring": bench_scoring, "train": bench_train, "pool": bench_pool}[cfg.command](cfg)


if __name__ == "__main__":
    main()
