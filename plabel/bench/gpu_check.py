"""The GPU check: one command, a few minutes on one GPU, results as files.

    bash scripts/gpu_check.sh --out $OUT           # on the GPU machine (installs what it lacks first)
    python -m plabel.bench.gpu_check --smoke --out /tmp/gpu-smoke   # every stage on the CPU, toy sizes, seconds

Stages (each prints as it goes; a stage that fails is recorded and the next one runs):
  1. checks    the GPU code paths against the CPU reference (``plabel.bench.gpu_checks``): scores,
               exact selection on device tensors, bf16/fp16 autocast, channels_last
  2. quickstart the default run (``train.py``, tracking off) on one GPU: wall time, per-round table
  3. speed     images/s of plabel's path against a bare loop in the same process, alternating,
               medians: the training step (combined loss, 50/50 labeled/pseudo) and pool scoring,
               for the CIFAR ResNet-18 at 32x32 and timm's ResNet-50 at 224x224, fp32 and bf16,
               bf16 with torch.compile
  4. data      images/s an on-disk image pool (a Hugging Face dataset of PNGs) delivers through
               the DataLoader with 0..16 workers, against what the GPU scores
  5. select    exact selection of 10^8 scores on the GPU against one torch.sort / torch.topk
Writes ``results.json`` and ``results.md`` (and the quick start's log) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from plabel.bench.gpu_log import say
from plabel.bench.gpu_speed import stage_speed
from plabel.bench.gpu_stages import markdown as more_markdown
from plabel.bench.gpu_stages import stage_launch, stage_pool
from plabel.config.args import SpellingsParser

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# 1. checks


def stage_checks(cfg: argparse.Namespace, accelerator: Accelerator) -> dict[str, Any]:
    from plabel.bench.gpu_checks import as_markdown, run_all

    rows = run_all(accelerator.device, accelerator)
    failed = [name for name, ok, _ in rows if not ok]
    say(f"checks: {len(rows) - len(failed)}/{len(rows)} ok" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return {"ok": not failed, "rows": [list(r) for r in rows], "markdown": as_markdown(rows)}


# ---------------------------------------------------------------------------------------------
# 2. the quick start


def stage_quickstart(cfg: argparse.Namespace, accelerator: Accelerator) -> dict[str, Any]:
    out = Path(cfg.out) / "quickstart-run"
    args = [sys.executable, str(ROOT / "train.py"), "--output_dir", str(out), "--tracking.mode", "disabled"]
    if cfg.smoke:
        args += ["--data.pool_limit", "200", "--data.test_holdout", "100", "--data.labeled_per_class", "4",
                 "--train.epochs", "1", "--train.steps_per_epoch", "3", "--pseudo.rounds", "1", "--pseudo.top_k_percent", "30"]
    started = time.perf_counter()
    with open(Path(cfg.out) / "quickstart.log", "w") as log:
        done = subprocess.run(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=cfg.quickstart_timeout)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"train.py exited {done.returncode}; see quickstart.log")
    summary = json.loads((out / "summary.json").read_text())
    from plabel.trainer.outputs import format_table

    table = format_table(summary["rounds"])
    say(f"quickstart: {wall:.1f} s wall (train.py start to end), final {100 * summary['final_accuracy']:.2f}%")
    return {"ok": True, "wall_s": round(wall, 1), "run_wall_s": summary["wall_time_s"], "table": table,
            "final_accuracy": summary["final_accuracy"], "baseline_accuracy": summary["baseline_accuracy"]}


# ---------------------------------------------------------------------------------------------
# 4. the data path


def stage_data(cfg: argparse.Namespace, accelerator: Accelerator) -> dict[str, Any]:
    try:
        import datasets  # noqa: F401
    except ModuleNotFoundError:
        return {"ok": False, "skipped": "the datasets package is missing (carry its wheel)"}
    from plabel.bench.digits import build_pool_dataset
    from plabel.config import SourceConfig
    from plabel.data.sources import open_source
    from plabel.data.splits import IndexedImages
    from plabel.data.transforms import plain_spec, source_transform
    from plabel.models.zoo import build_model

    n = 2000 if cfg.smoke else 30_000
    path, built = build_pool_dataset(str(Path(cfg.out) / "pool-data"), n, 0, min(8, os.cpu_count() or 1))
    source = open_source(SourceConfig(source="hf", name=str(path)), "data.train")
    size = 32
    pool = IndexedImages(source, torch.arange(len(source)), source_transform(source, plain_spec(3, (size, size)), "none", False))
    device = accelerator.device
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 10).to(device).eval().to(memory_format=torch.channels_last)
    batch = 512
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        for _ in range(3):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        reps = 3 if cfg.smoke else 20
        for _ in range(reps):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    gpu_rate = reps * batch / (time.perf_counter() - started)
    rows = []
    for workers in ([0, 2] if cfg.smoke else [0, 4, 8, 16]):
        loader = DataLoader(pool, batch_size=batch, num_workers=workers, pin_memory=device.type == "cuda",
                            persistent_workers=False, prefetch_factor=4 if workers else None)
        started, seen = time.perf_counter(), 0
        for x, _, _ in loader:
            seen += len(x)
            if seen >= min(n, 4096 if workers == 0 else 30_000):
                break
        rate = seen / (time.perf_counter() - started)
        rows.append({"workers": workers, "images_s": round(rate, 1), "share_of_gpu": round(rate / gpu_rate, 3)})
        say(f"data: {workers} workers deliver {rate:.0f} images/s ({100 * rate / gpu_rate:.0f}% of what the GPU scores)")
    return {"ok": True, "pool_images": n, "pool_built_s": built, "image": "28x28 PNG digits, resized to 32x32 RGB",
            "gpu_scores_images_s": round(gpu_rate, 1), "model": "resnet18 (CIFAR stem) bf16 channels_last, batch 512",
            "cpu_cores": os.cpu_count(), "rows": rows}


# ---------------------------------------------------------------------------------------------
# 5. exact selection at 10^8


def stage_select(cfg: argparse.Namespace, accelerator: Accelerator) -> dict[str, Any]:
    from plabel.distributed.sharded_selection import select_pseudo_labels_sharded

    device = accelerator.device
    n = 100_000 if cfg.smoke else 100_000_000
    g = torch.Generator(device=device).manual_seed(0)
    scores = (torch.randint(0, 1 << 20, (n,), generator=g, device=device).float() / (1 << 20))  # many ties
    predictions = torch.randint(0, 10, (n,), generator=g, device=device)
    indices = torch.arange(n, device=device)
    percent = 20.0
    k = int(n * percent / 100)

    def timed(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
        out, best = None, []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best.append(time.perf_counter() - started)
        return statistics.median(best), out

    sort_s, sorted_out = timed(lambda: torch.sort(scores, stable=True))
    topk_s, _ = timed(lambda: torch.topk(scores, k, largest=False))
    select_s, (idx, labels) = timed(lambda: select_pseudo_labels_sharded(
        accelerator, indices, scores, predictions, pool_size=n, percent=percent, num_classes=10))
    expected = torch.sort(sorted_out.indices[:k]).values  # the lowest k, ties by index (stable sort)
    identical = bool(torch.equal(idx, expected)) and bool(torch.equal(labels, predictions[expected]))
    balanced_s, _ = timed(lambda: select_pseudo_labels_sharded(
        accelerator, indices, scores, predictions, pool_size=n, percent=percent, num_classes=10, class_balanced=True), 1)
    say(f"select: n={n:.0e}: sort {sort_s:.3f} s, topk {topk_s:.3f} s, sharded select {select_s:.3f} s "
        f"({select_s / sort_s:.2f}x sort), identical to the stable sort: {identical}; class-balanced {balanced_s:.3f} s")
    variants, profile = _select_variants(accelerator, indices, scores, predictions, n, percent, expected, timed)
    return {"ok": identical, "n": n, "device": device.type, "sort_s": round(sort_s, 4), "topk_s": round(topk_s, 4),
            "select_s": round(select_s, 4), "select_over_sort": round(select_s / sort_s, 3), "identical": identical,
            "class_balanced_s": round(balanced_s, 4), "chunk_variants": variants, "profile": profile}


def _select_variants(accelerator: Accelerator, indices: torch.Tensor, scores: torch.Tensor, predictions: torch.Tensor,
                     n: int, percent: float, expected: torch.Tensor, timed: Callable[..., Any]) -> tuple[list[dict[str, Any]], str]:
    """The sharded select with other sweep chunk sizes (how many samples one kernel launch covers on
    a GPU), each checked identical; and the profiler's table of the shipped setting's kernels."""
    import plabel.distributed.sharded_selection as sharded

    shipped, rows = sharded.GPU_CHUNK, []
    call = lambda balanced=False: sharded.select_pseudo_labels_sharded(  # noqa: E731
        accelerator, indices, scores, predictions, pool_size=n, percent=percent, num_classes=10, class_balanced=balanced)
    try:
        for chunk in (1 << 22, 1 << 24, 1 << 26, 1 << 27):
            sharded.GPU_CHUNK = chunk
            seconds, (idx, _) = timed(call)
            balanced_s, _ = timed(lambda: call(True), 2)
            same = bool(torch.equal(idx, expected))
            rows.append({"gpu_chunk": chunk, "select_s": round(seconds, 4), "class_balanced_s": round(balanced_s, 4), "identical": same})
            say(f"select: GPU_CHUNK 2^{chunk.bit_length() - 1}: {seconds:.4f} s, class-balanced {balanced_s:.4f} s, identical {same}")
    finally:
        sharded.GPU_CHUNK = shipped
    table = ""
    try:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if indices.device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            call()
            if indices.device.type == "cuda":
                torch.cuda.synchronize()
        sort_by = "cuda_time_total" if indices.device.type == "cuda" else "cpu_time_total"
        table = prof.key_averages().table(sort_by=sort_by, row_limit=25)
    except Exception as e:  # the profile is a diagnosis, never a reason to lose the stage
        table = f"profiler failed: {type(e).__name__}: {e}"
    return rows, table


# ---------------------------------------------------------------------------------------------


# In the order they run: what every later number relies on first, the slowest and least certain last.
def stage_compile(cfg: argparse.Namespace, accelerator: Accelerator) -> dict[str, Any]:
    return stage_speed(cfg, accelerator, compiled_only=True)


# In the order they run: what every later number relies on first, the slowest and least certain last.
STAGES = {"checks": stage_checks, "select": stage_select, "quickstart": stage_quickstart, "speed": stage_speed,
          "pool": stage_pool, "launch": stage_launch, "compile": stage_compile, "data": stage_data}
# Seconds a stage needs at least; with less left of --budget-s it is skipped (recorded as such).
NEEDS = {"checks": 10, "select": 15, "quickstart": 60, "speed": 40, "pool": 45, "launch": 60, "compile": 150, "data": 40}


def markdown(results: dict[str, Any]) -> str:
    """The README-ready tables."""
    lines = [f"GPU check on {results['device']} ({results['when']}), torch {results['torch']}, "
             f"{'SMOKE (CPU, toy sizes)' if results['smoke'] else 'full'}; command: `{results['command']}`", ""]
    r = results["stages"]
    if "markdown" in r.get("checks", {}):
        lines += ["### Checks", "", r["checks"]["markdown"], ""]
    q = r.get("quickstart", {})
    if "table" in q:
        lines += ["### Quick start on one GPU", "", f"`python train.py` (default config): {q['wall_s']} s wall time "
                  f"({q['run_wall_s']} s inside the run)", "", "```", q["table"], "```", ""]
    cases = r.get("speed", {}).get("cases", []) + r.get("compile", {}).get("cases", [])
    if cases:
        lines += ["### plabel's path against a bare loop", "",
                  "| model | size | batch | precision | compile | train bare img/s | train plabel img/s | × | score bare img/s | score plabel img/s | × |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in cases:
            if "error" in c:
                lines.append(f"| {c['model']} | {c['size']} | | {c['precision']} | {c['compile']} | {c['error']} | | | | | |")
                continue
            t, sc = c["train"], c["score"]
            lines.append(f"| {c['model']} | {c['size']} | {c['batch']} | {c['precision']} | {c['compile']} | {t['bare_images_s']:.0f} | "
                         f"{t['plabel_images_s']:.0f} | {t['ratio']:.3f} | {sc['bare_images_s']:.0f} | {sc['plabel_images_s']:.0f} | {sc['ratio']:.3f} |")
        lines.append("")
    d = r.get("data", {})
    if d.get("rows"):
        lines += [f"### Data path: an on-disk pool ({d['pool_images']} {d['image']}), {d['cpu_cores']} CPU cores", "",
                  f"The GPU scores {d['gpu_scores_images_s']:.0f} images/s ({d['model']}).", "",
                  "| DataLoader workers | images/s delivered | share of what the GPU scores |", "|---|---|---|"]
        lines += [f"| {row['workers']} | {row['images_s']:.0f} | {100 * row['share_of_gpu']:.0f}% |" for row in d["rows"]]
        lines.append("")
    sel = r.get("select", {})
    if "sort_s" in sel:
        lines += [f"### Exact selection of {sel['n']:.0e} scores on {sel['device']}", "",
                  "| path | seconds | × sort |", "|---|---|---|",
                  f"| torch.sort (stable) | {sel['sort_s']} | 1.00 |", f"| torch.topk | {sel['topk_s']} | {sel['topk_s'] / sel['sort_s']:.2f} |",
                  f"| sharded radix select (global 20%) | {sel['select_s']} | {sel['select_over_sort']:.2f} |",
                  f"| sharded radix select (class-balanced, 10 classes) | {sel['class_balanced_s']} | {sel['class_balanced_s'] / sel['sort_s']:.2f} |",
                  "", f"Identical to the stable sort's lowest 20%: {sel['identical']}.", ""]
    lines += more_markdown(r)
    failed = [name for name, st in r.items() if not st.get("ok")]
    lines.append("Stages not ok: " + (", ".join(failed) if failed else "none"))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = SpellingsParser(prog="python -m plabel.bench.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"), help="folder for results (default: $OUT)")
    parser.add_argument("--smoke", action="store_true", help="every stage on the CPU at toy size, in seconds (CI)")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES), help="stages to run (default: all)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers for the speed stage (default: 8 on GPU, 0 smoke)")
    parser.add_argument("--quickstart-timeout", type=float, default=300.0, help="seconds the quick start may take (default 300)")
    parser.add_argument("--budget-s", type=float, default=0.0,
                        help="seconds the whole check may take: stages and speed cases that no longer fit are skipped, "
                             "saying so (default 0: no limit)")
    cfg = parser.parse_args(argv)
    cfg.deadline = time.perf_counter() + (cfg.budget_s if cfg.budget_s > 0 else 10**9)
    cfg.workers = cfg.workers if cfg.workers is not None else (0 if cfg.smoke else 8)
    # 40 steps a piece: the steady rate over 39 steps, with a round's setup (about 0.4 s on the H200) apart
    cfg.speed_steps, cfg.speed_pieces = (3, 2) if cfg.smoke else (40, 3)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    if not cfg.smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; use --smoke to run the stages on the CPU", file=sys.stderr)
        return 2
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    results: dict[str, Any] = {
        "device": device, "torch": torch.__version__, "smoke": cfg.smoke, "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(["python -m plabel.bench.gpu_check", *(argv if argv is not None else sys.argv[1:])]), "stages": {},
    }
    say(f"{device}, torch {torch.__version__}, stages {', '.join(cfg.stages)}, results in {cfg.out}")

    def write() -> None:
        (Path(cfg.out) / "results.json").write_text(json.dumps(results, indent=1, default=str))
        (Path(cfg.out) / "results.md").write_text(markdown(results))

    def partial(name: str, value: dict[str, Any]) -> None:
        results["stages"][name] = value
        write()

    cfg.partial = partial
    for name in [stage for stage in STAGES if stage in cfg.stages]:
        started = time.perf_counter()
        if cfg.deadline - started < NEEDS[name] and not cfg.smoke:
            say(f"{name}: skipped, {cfg.deadline - started:.0f} s left of the check's budget")
            results["stages"][name] = {"ok": False, "skipped": "out of time"}
            continue
        try:
            results["stages"][name] = STAGES[name](cfg, accelerator)
        except Exception as e:
            say(f"{name}: FAILED {type(e).__name__}: {e}")
            results["stages"][name] = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        results["stages"][name]["seconds"] = round(time.perf_counter() - started, 1)
        write()  # after every stage: a check stopped at its time limit keeps what it measured
    ok = all(stage.get("ok") for stage in results["stages"].values())
    say(f"done: {'all stages ok' if ok else 'some stages not ok'}; {cfg.out}/results.md")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
