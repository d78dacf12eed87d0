"""Benchmark: a user's pool of a million files, listed and scored.

    python -m plabel.bench.pool --files 1000000 --root /tmp/pool-1m          # makes the folder once
    python -m plabel.bench.pool --smoke                                        # 2,000 files, seconds (CI)

The folder holds ``--files`` tiny grey PNGs (8x8, random pixels, each file distinct), 1,000 to a
sub-folder. Each measurement runs in a fresh process, so its peak resident memory is its own:
  * listing: :func:`plabel.data.pool_index.scan_folder` (walk, filter by extension, sort), files/s,
    the kept index's bytes per file, and peak RSS above the process's RSS before listing;
  * saving and loading the listing (``pool_index.npz``, as a resumed run reads it);
  * scoring: the pool's pass (:func:`score_shard`: open, decode, resize to 28x28, the built-in
    small_cnn, entropy and friends) over the whole pool and over ``--score-sample`` files for each
    ``--workers`` count, images/s and peak RSS; one process, ``--threads`` torch threads.
"""

from __future__ import annotations

import io
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from plabel.config.args import SpellingsParser


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_folder(root: Path, files: int, seed: int = 0) -> float:
    """``files`` distinct 8x8 grey PNGs under root/dNNNN/; returns seconds taken (0 if it existed)."""
    marker = root / ".complete"
    if marker.is_file() and int(marker.read_text()) == files:
        return 0.0
    from PIL import Image

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    for start in range(0, files, 1000):
        folder = root / f"d{start // 1000:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(min(1000, files - start), 8, 8), dtype=np.uint8)
        for k, image in enumerate(pixels):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            (folder / f"{start + k:07d}.png").write_bytes(buffer.getvalue())
    marker.write_text(str(files))
    return time.perf_counter() - started


def _listing(root: str) -> dict[str, Any]:
    from plabel.data.pool_index import INDEX_FILE, PathIndex, scan_folder

    before = _rss_mib()
    started = time.perf_counter()
    index = scan_folder(Path(root), "bench")
    seconds = time.perf_counter() - started
    peak = _peak_mib() - before
    kept = index.names.nbytes + index.offsets.nbytes
    out = Path(root).parent / f"{Path(root).name}-{INDEX_FILE}"
    started = time.perf_counter()
    index.save(out)
    saved = time.perf_counter() - started
    started = time.perf_counter()
    PathIndex.load(out)
    loaded = time.perf_counter() - started
    out.unlink()
    return {"files": len(index), "seconds": seconds, "files_per_s": len(index) / seconds, "peak_above_start_mib": peak,
            "kept_bytes_per_file": kept / len(index), "save_s": saved, "load_s": loaded}


def _scoring(root: str, limit: int, workers: int, threads: int) -> dict[str, Any]:
    import torch
    from accelerate import Accelerator

    from plabel.data.pool_index import scan_folder
    from plabel.data.splits import IndexedImages
    from plabel.data.transforms import build_transform, plain_spec
    from plabel.data.unlabeled import ListedSource
    from plabel.models.builtin import SmallCNN
    from plabel.trainer.scoring_pass import ScorePlan, score_shard
    from plabel.trainer.setup import LoaderOptions

    torch.set_num_threads(threads)
    index = scan_folder(Path(root), "bench")
    source = ListedSource(index, "bench")
    n = min(limit, len(index)) if limit else len(index)
    data = IndexedImages(source, torch.arange(n), build_transform(1, plain_spec(1, (28, 28)), "none", train=False), skip_unreadable=True)
    model = SmallCNN(1, 10)
    accelerator = Accelerator(cpu=True)
    before = _rss_mib()
    started = time.perf_counter()
    _, columns = score_shard(accelerator, model, data, ScorePlan(512, 1e-10, LoaderOptions(num_workers=workers), label="bench"))
    seconds = time.perf_counter() - started
    assert bool(torch.isfinite(columns["entropy"]).all())
    return {"images": n, "workers": workers, "seconds": seconds, "images_per_s": n / seconds,
            "peak_above_start_mib": _peak_mib() - before, "peak_rss_mib": _peak_mib()}


def _child(queue: Any, fn: Any, args: tuple) -> None:
    queue.put(fn(*args))


def _in_fresh_process(fn: Any, *args: Any) -> dict[str, Any]:
    """``fn(*args)`` in a new (non-daemonic: it may start loader workers) process; its result."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(queue, fn, args))
    process.start()
    result = queue.get()
    process.join()
    return result


def main(argv: Any = None) -> int:
    parser = SpellingsParser(prog="python -m plabel.bench.pool", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1_000_000, help="files in the generated pool (default: 1,000,000)")
    parser.add_argument("--root", default="/tmp/plabel-pool-bench", help="where the pool folder is made (kept for reruns)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="data.num_workers values to score with")
    parser.add_argument("--score-sample", "--score_sample", type=int, default=50_000, help="files scored per workers value")
    parser.add_argument("--full-score-workers", "--full_score_workers", type=int, default=1,
                        help="workers for the whole-pool scoring pass; -1 skips it")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the scoring process")
    parser.add_argument("--smoke", action="store_true", help="2,000 files, one workers value: seconds, for CI")
    parser.add_argument("--cold", action="store_true",
                        help="also list once with the page cache dropped first (root only: /proc/sys/vm/drop_caches)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.files, args.workers, args.score_sample, args.full_score_workers = 2000, [0], 500, -1
        args.root = args.root + "-smoke"
    root = Path(args.root) / f"pool-{args.files}"
    made = make_folder(root, args.files)
    print(f"pool: {args.files:,} files under {root}" + (f" (made in {made:.0f} s)" if made else " (already there)"))
    print(f"machine: {os.cpu_count()} CPUs, one process, {args.threads} torch thread(s)\n")
    print("| step | files | seconds | files/s | peak RSS above start | kept index |\n|---|---|---|---|---|---|")
    for cold in ([True] if args.cold else []) + [False]:
        if cold:
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        listing = _in_fresh_process(_listing, str(root))
        print(f"| list (walk, filter, sort){', cold cache' if cold else ''} | {listing['files']:,} | {listing['seconds']:.1f} | "
              f"{listing['files_per_s']:,.0f} | {listing['peak_above_start_mib']:.0f} MiB | {listing['kept_bytes_per_file']:.1f} bytes/file |")
    print(f"| save / load pool_index.npz | {listing['files']:,} | {listing['save_s']:.2f} / {listing['load_s']:.2f} | | | |\n")
    runs = [(args.score_sample, w) for w in args.workers]
    if args.full_score_workers >= 0:
        runs.append((0, args.full_score_workers))
    print("| scoring pass | images | workers | seconds | images/s | peak RSS (above start) |\n|---|---|---|---|---|---|")
    for limit, workers in runs:
        r = _in_fresh_process(_scoring, str(root), limit, workers, args.threads)
        print(f"| {'whole pool' if not limit else 'sample'} | {r['images']:,} | {r['workers']} | {r['seconds']:.1f} | "
              f"{r['images_per_s']:,.0f} | {r['peak_rss_mib']:.0f} MiB ({r['peak_above_start_mib']:.0f} MiB) |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
