"""Two stages of the GPU check that a user's first real run depends on (``plabel.bench.gpu_check``):

* ``pool``    the pool's pass over an on-disk folder of JPEGs at 224x224, the way a run reads it
              (``scan_folder`` listing, ``ListedSource`` decoding, ``score_shard``), timm's
              ResNet-50 in bf16: images/s by DataLoader workers against what the model alone
              scores on the same batch already in GPU memory. It says how many loader workers a
              GPU needs before the pool pass stops being decode-bound.
* ``launch``  the quick start under ``accelerate launch --mixed_precision bf16`` (one process):
              wall time and the per-round table, as a user would start it.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
SIZE = 224


def _write_jpegs(args: tuple[str, int, int]) -> None:
    """Files start..stop-1: smooth random colour fields with noise, so JPEG has real work to do."""
    from PIL import Image

    root, start, stop = args
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        coarse = Image.fromarray(rng.integers(0, 256, (7, 7, 3), dtype=np.uint8)).resize((SIZE, SIZE), Image.BICUBIC)
        pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-24, 25, (SIZE, SIZE, 3), dtype=np.int16)
        buffer = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        folder = Path(root) / f"d{i // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:06d}.jpg").write_bytes(buffer.getvalue())


def make_jpeg_folder(root: Path, n: int, processes: int) -> float:
    """``n`` 224x224 JPEGs under root/dNNN/ (1,000 a folder); seconds taken (0 when already there)."""
    marker = root / ".complete"
    if marker.is_file() and marker.read_text() == str(n):
        return 0.0
    started = time.perf_counter()
    chunks = [(str(root), s, min(n, s + 250)) for s in range(0, n, 250)]
    if processes <= 1:
        for chunk in chunks:
            _write_jpegs(chunk)
    else:  # fork only from a single-threaded process (a lock held by another thread would hang the child)
        import threading

        context = "fork" if threading.active_count() == 1 else "spawn"
        with multiprocessing.get_context(context).Pool(processes) as pool:
            pool.map(_write_jpegs, chunks)
    marker.write_text(str(n))
    return time.perf_counter() - started


def stage_pool(cfg: argparse.Namespace, accelerator: Any) -> dict[str, Any]:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    from plabel.data.pool_index import scan_folder
    from plabel.data.splits import IndexedImages
    from plabel.data.transforms import build_transform, plain_spec
    from plabel.data.unlabeled import ListedSource
    from plabel.models.zoo import build_model
    from plabel.trainer.scoring_pass import ScorePlan, score_shard
    from plabel.trainer.setup import LoaderOptions

    cores = os.cpu_count() or 1
    n, size, name, batch = (240, 64, "small_cnn", 32) if cfg.smoke else (12_000, SIZE, "timm/resnet50", 256)
    root = Path(cfg.out) / "pool-jpeg"
    made = make_jpeg_folder(root, n, min(16, cores))
    listed = time.perf_counter()
    index = scan_folder(root, "bench")
    listing_s = time.perf_counter() - listed
    source = ListedSource(index, "bench")
    transform = build_transform(3, plain_spec(3, (size, size)), "none", train=False)  # resize + centre crop, as a run
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    bf16 = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16")
    device = bf16.device
    torch.manual_seed(0)
    model = build_model(name, 3, 10).to(device).eval().to(memory_format=torch.channels_last)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        for _ in range(3):
            model(x)
        sync()
        reps = 2 if cfg.smoke else 20
        started = time.perf_counter()
        for _ in range(reps):
            model(x)
        sync()
    model_rate = reps * batch / (time.perf_counter() - started)
    rows = []
    for workers in ([0, 2] if cfg.smoke else [0, 4, 8, 16]):
        m = min(n, 1024 if workers == 0 else n)  # 0 workers decode on the main thread: a sample is enough
        data = IndexedImages(source, torch.arange(m), transform, skip_unreadable=True)
        plan = ScorePlan(batch, options=LoaderOptions(num_workers=workers, pin_memory=device.type == "cuda", channels_last=True), label="pool")
        started = time.perf_counter()
        _, columns = score_shard(bf16, model, data, plan)
        sync()
        seconds = time.perf_counter() - started
        assert bool(torch.isfinite(columns["entropy"]).all()), "pool pass: non-finite entropy"
        rate = m / seconds
        rows.append({"workers": workers, "images": m, "seconds": round(seconds, 2), "images_s": round(rate, 1),
                     "share_of_model": round(rate / model_rate, 3)})
        print(f"[gpu_check] pool: {workers} workers score {rate:.0f} JPEGs/s ({100 * rate / model_rate:.0f}% of the model alone)", flush=True)
    return {"ok": True, "files": n, "made_s": round(made, 1), "listing_s": round(listing_s, 2), "size": size,
            "model": f"{name} bf16 channels_last, batch {batch}", "model_images_s": round(model_rate, 1),
            "cpu_cores": cores, "rows": rows}


def stage_launch(cfg: argparse.Namespace, accelerator: Any) -> dict[str, Any]:
    """The quick start as a user starts it on a GPU node, in bf16."""
    from plabel.trainer.outputs import format_table

    out = Path(cfg.out) / "launch-run"
    args = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
            "--mixed_precision", "bf16", "--dynamo_backend", "no", str(ROOT / "train.py"),
            "--output_dir", str(out), "--tracking.mode", "disabled"]
    if cfg.smoke:
        args[args.index("--mixed_precision") + 1] = "no"  # CPU autocast in bf16 is slow and not the point here
        args += ["--data.pool_limit", "200", "--data.test_holdout", "100", "--data.labeled_per_class", "4",
                 "--train.epochs", "1", "--train.steps_per_epoch", "3", "--pseudo.rounds", "1", "--pseudo.top_k_percent", "30"]
        if not torch.cuda.is_available():
            args.insert(args.index("--num_processes"), "--cpu")
    started = time.perf_counter()
    with open(Path(cfg.out) / "launch.log", "w") as log:
        done = subprocess.run(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=cfg.quickstart_timeout)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"accelerate launch exited {done.returncode}; see launch.log")
    summary = json.loads((out / "summary.json").read_text())
    precision = (yaml.safe_load((out / "config.yaml").read_text()).get("train") or {}).get("mixed_precision", "?")
    print(f"[gpu_check] launch: {wall:.1f} s wall, final {100 * summary['final_accuracy']:.2f}% (mixed precision {precision})", flush=True)
    return {"ok": True, "wall_s": round(wall, 1), "run_wall_s": summary["wall_time_s"], "table": format_table(summary["rounds"]),
            "final_accuracy": summary["final_accuracy"], "baseline_accuracy": summary["baseline_accuracy"],
            "mixed_precision": precision, "command": " ".join(["accelerate launch", *args[3:]]).replace(str(ROOT) + "/", "")}


def markdown(r: dict[str, Any]) -> list[str]:
    """README-ready lines for these stages."""
    lines: list[str] = []
    p = r.get("pool", {})
    if p.get("rows"):
        lines += [f"### The pool's pass over {p['files']} JPEGs at {p['size']}x{p['size']} on disk, {p['cpu_cores']} CPU cores", "",
                  f"The model alone ({p['model']}, batch already on the GPU) scores {p['model_images_s']:.0f} images/s; "
                  f"listing the folder took {p['listing_s']} s.", "",
                  "| DataLoader workers | images scored | images/s | share of the model alone |", "|---|---|---|---|"]
        lines += [f"| {row['workers']} | {row['images']} | {row['images_s']:.0f} | {100 * row['share_of_model']:.0f}% |" for row in p["rows"]]
        lines.append("")
    q = r.get("launch", {})
    if "table" in q:
        lines += ["### Quick start under `accelerate launch`, bf16, one GPU", "",
                  f"`{q['command']}`: {q['wall_s']} s wall time ({q['run_wall_s']} s inside the run; mixed precision {q['mixed_precision']})",
                  "", "```", q["table"], "```", ""]
    return lines
