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
import itertools
import math
import os
import statistics
from dataclasses import replace
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset

from plabel.bench.common import EPS, autocast, channels, input_transform, seeded_model
from plabel.bench.digits import NUM_CLASSES, synthetic_source
from plabel.bench.speed_pool import bench_pool
from plabel.bench.timing import interleaved, machine_line, median_total, paired_ratios, table, verdict
from plabel.config import PseudoConfig, RunConfig
from plabel.config.args import SpellingsParser
from plabel.data.splits import IndexedImages
from plabel.trainer.loop import RoundPosition, TrainPlan, make_train_loader, train_round
from plabel.trainer.scoring_pass import ScorePlan, score_shard
from plabel.trainer.setup import LoaderOptions, make_optimizer

TARGET_RATIO = 0.95
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
    print(table(["path", "batch", "samples/s (median)", "ms/batch", "x bare (median of paired pieces)"], rows))
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
    print(table(["path", "images/step", "images/s (median)", "ms/step", "x plain step (median of paired repeats)"], rows))
    print(
        f"\ntrain_round ({cfg.batch_size} + {cfg.pseudo_batch_size}) / plain step = {ratio:.3f} "
        f"(target >= {TARGET_RATIO}: {verdict(ratio >= TARGET_RATIO)}); paired ratios span "
        f"{min(pairs):.3f}-{max(pairs):.3f}; loading is {100 * loading_share:.0f}% of a train_round step; "
        f"load average at end {os.getloadavg()[0]:.2f}",
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
