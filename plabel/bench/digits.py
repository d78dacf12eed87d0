"""Synthetic MNIST-like digits for the benchmarks: the 5,000 embedded digits, each shifted by up to
3 pixels and dimmed at random, in memory or written once as an on-disk Hugging Face dataset."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from plabel.data.sources import TensorImageSource, open_embedded

NUM_CLASSES = 10
MAX_SHIFT = 3
CHUNK = 10_000  # digits generated (and, for the pool, written) per piece


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
