"""Stage 3 of the GPU check (``plabel.bench.gpu_check``): images/s of plabel's training step and
pool scoring against a bare loop in the same process, alternating, medians; fp32 and bf16, and bf16
with torch.compile (stage ``compile``)."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader, RandomSampler

from plabel.bench.gpu_log import say


def _synthetic(n: int, size: int, channels: int, seed: int = 0) -> Any:
    from plabel.data.base import TensorImageSource

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    return TensorImageSource(images, labels, 10, f"synthetic {channels}x{size}x{size}")


def _speed_case(cfg: argparse.Namespace, name: str, size: int, batch: int, precision: str, compiled: bool) -> dict[str, Any]:
    """One model/precision/compile: train and score throughput, plabel vs bare, alternating."""
    from accelerate.state import AcceleratorState, PartialState

    from plabel.bench.timing import interleaved, paired_ratios
    from plabel.config import PseudoConfig, RunConfig, TrainConfig
    from plabel.data.splits import IndexedImages
    from plabel.data.transforms import build_transform, plain_spec
    from plabel.models.zoo import build_model
    from plabel.trainer.loop import RoundPosition, TrainPlan, train_round
    from plabel.trainer.scoring_pass import ScorePlan, score_shard
    from plabel.trainer.setup import LoaderOptions, make_optimizer

    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision)
    device = accelerator.device
    steps, pieces = cfg.speed_steps, cfg.speed_pieces
    options = LoaderOptions(num_workers=cfg.workers, persistent_workers=cfg.workers > 0, pin_memory=device.type == "cuda")
    spec = plain_spec(3, (size, size))
    transform = build_transform(3, spec, "none", train=False, resize=False)
    source = _synthetic(batch * 16, size, 3)
    half = batch // 2
    labeled = IndexedImages(source, torch.arange(0, len(source) // 2), transform)
    pseudo = IndexedImages(source, torch.arange(len(source) // 2, len(source)), transform)
    pool = IndexedImages(source, torch.arange(min(len(source), batch * 12)), transform)

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model(name, 3, 10).to(device).to(memory_format=torch.channels_last)

    run_cfg = RunConfig()
    run_cfg.train.optimizer = "sgd"
    plabel_model, bare_model = fresh(), fresh()
    plabel_model, plabel_opt = accelerator.prepare(plabel_model, make_optimizer(run_cfg, plabel_model))
    bare_opt = make_optimizer(run_cfg, bare_model)
    if compiled:
        backend = "aot_eager" if cfg.smoke else "inductor"  # smoke: the compile path without a C compiler's minutes
        plabel_model, bare_model = torch.compile(plabel_model, backend=backend), torch.compile(bare_model, backend=backend)
    plan = TrainPlan(TrainConfig(epochs=1, steps_per_epoch=steps, batch_size=half, pseudo_batch_size=half, optimizer="sgd"),
                     PseudoConfig(alpha_schedule="constant"), seed=0, log_every=10**9,
                     options=LoaderOptions(options.num_workers, options.persistent_workers, options.pin_memory, True))
    rounds = iter(range(10**6))
    # Draws with replacement: a piece's steps need not fit in the (small) synthetic set, as plabel's Repeated cycles it.
    bare_loader = DataLoader(labeled, batch_size=batch, sampler=RandomSampler(labeled, True, steps * batch), drop_last=True,
                             **options.dataloader_kwargs())
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # Seconds from a piece's start to the end of its first step (on the host): a round's setup
    # (loaders, workers) plus one step. The steady rate leaves it out, for both paths alike.
    first: dict[str, list[float]] = {"bare": [], "plabel": []}

    def plabel_train(_: int) -> None:
        started = time.perf_counter()
        marks: list[float] = []

        def after(position: Any, ended: bool) -> None:
            if not marks:
                marks.append(time.perf_counter() - started)

        train_round(accelerator, plabel_model, plabel_opt, labeled, pseudo, plan, RoundPosition(next(rounds)), lambda m, s: None, after)
        sync()
        first["plabel"].append(marks[0])

    def bare_train(_: int) -> None:
        started = time.perf_counter()
        bare_model.train()
        for step, (x, y, _) in zip(range(steps), bare_loader):
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            with torch.autocast(**autocast):
                loss = F.cross_entropy(bare_model(x).float(), y)
            bare_opt.zero_grad(set_to_none=True)
            loss.backward()
            bare_opt.step()
            if step == 0:
                first["bare"].append(time.perf_counter() - started)
        sync()

    score_plan = ScorePlan(batch, options=LoaderOptions(options.num_workers, False, options.pin_memory, True))

    def plabel_score(_: int) -> None:
        score_shard(accelerator, plabel_model, pool, score_plan)
        sync()

    @torch.no_grad()
    def bare_score(_: int) -> None:
        bare_model.eval()
        for x, _, _ in DataLoader(pool, batch_size=batch, **options.dataloader_kwargs()):
            with torch.autocast(**autocast):
                bare_model(x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last))
        sync()

    result: dict[str, Any] = {"model": name, "size": size, "batch": batch, "precision": precision, "compile": compiled}
    for what, paths, images in (
        ("train", {"bare": bare_train, "plabel": plabel_train}, steps * batch),
        ("score", {"bare": bare_score, "plabel": plabel_score}, len(pool)),
    ):
        started = time.perf_counter()
        for fn in paths.values():
            fn(0)  # warm-up: kernels, allocator, compilation
        warm = time.perf_counter() - started
        for marks in first.values():
            marks.clear()
        times = interleaved(paths, list(range(pieces)), 1)
        extra = ""
        if what == "train":  # steady state: every step after the first (a round's setup is reported beside it)
            setup = {k: statistics.median(v) for k, v in first.items()}
            times = {k: [[t - f for t, f in zip(v[0], first[k])]] for k, v in times.items()}
            images = (steps - 1) * batch
            extra = f"; a round's setup + first step: bare {setup['bare']:.2f} s, plabel {setup['plabel']:.2f} s"
        ratio = statistics.median(paired_ratios(times["bare"], times["plabel"]))
        rate = {k: images / statistics.median(v[0]) for k, v in times.items()}
        result[what] = {"bare_images_s": round(rate["bare"], 1), "plabel_images_s": round(rate["plabel"], 1),
                        "ratio": round(ratio, 3), "warmup_s": round(warm, 1)}
        if what == "train":
            result[what].update(setup_bare_s=round(setup["bare"], 3), setup_plabel_s=round(setup["plabel"], 3), steps=steps)
        say(f"speed {name} {size}px {precision}{' compiled' if compiled else ''} {what}: bare {rate['bare']:.0f}, "
            f"plabel {rate['plabel']:.0f} images/s, ratio {ratio:.3f} (warm-up {warm:.1f} s){extra}")
    return result


def stage_speed(cfg: argparse.Namespace, accelerator: Accelerator, compiled_only: bool = False) -> dict[str, Any]:
    """fp32 and bf16 (stage ``speed``), or bf16 with torch.compile (stage ``compile``, run last: its
    compilation is the slowest and least certain part of the check)."""
    if cfg.smoke:
        cases = [("small_cnn", 28, 16, "bf16", True)] if compiled_only else [("small_cnn", 28, 16, "no", False), ("small_cnn", 28, 16, "bf16", False)]
    else:
        kinds = (("bf16", True),) if compiled_only else (("no", False), ("bf16", False))
        cases = [(m, s, b, p, c) for p, c in kinds for m, s, b in (("resnet18", 32, 512), ("timm/resnet50", 224, 128))]
    rows: list[dict[str, Any]] = []
    stage = "compile" if compiled_only else "speed"
    for name, size, batch, precision, compiled in cases:
        left = cfg.deadline - time.perf_counter()
        if left < (120 if compiled else 30) and not cfg.smoke:
            say(f"speed {name} {precision} compile={compiled}: skipped, {left:.0f} s left of the check's budget")
            rows.append({"model": name, "size": size, "precision": precision, "compile": compiled, "error": "skipped: out of time"})
            continue
        try:
            rows.append(_speed_case(cfg, name, size, batch, precision, compiled))
        except Exception as e:  # one case failing (e.g. compile) must not cost the others
            say(f"speed {name} {precision} compile={compiled}: FAILED {type(e).__name__}: {e}")
            rows.append({"model": name, "size": size, "precision": precision, "compile": compiled, "error": f"{type(e).__name__}: {e}"})
        cfg.partial(stage, {"ok": False, "partial": True, "cases": rows})  # kept if the check is stopped mid-stage
    return {"ok": all("error" not in r for r in rows), "cases": rows}
