"""Sources held in memory as one uint8 tensor: the embedded MNIST digits and MNIST-format idx files."""

from __future__ import annotations

import gzip
import importlib.resources
import math
import struct
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from plabel.config import ConfigError
from plabel.data.base import TensorImageSource, checked_labels


def open_embedded(field: str = "data.train") -> TensorImageSource:
    """The 5,000 MNIST digits shipped in ``plabel/data/embedded/`` (500 per digit; source and
    licence in the README beside them)."""
    resource = importlib.resources.files("plabel.data") / "embedded" / "mnist_5k.npz"
    with importlib.resources.as_file(resource) as path, np.load(path) as stored:  # no pickle: allow_pickle stays False
        images, labels = stored["images"], stored["labels"]
    if images.shape != (5000, 28, 28) or images.dtype != np.uint8:
        raise ConfigError(f"{field}.source: the embedded digits are damaged ({images.dtype} {images.shape}); reinstall plabel")
    digits = [str(d) for d in range(10)]
    label_tensor, num_classes, names = checked_labels(labels, field, f"{field}.source", digits)
    pixels = torch.from_numpy(np.ascontiguousarray(images[:, None]))
    return TensorImageSource(pixels, label_tensor, num_classes, f"embedded MNIST ({len(labels)} digits)", names)


# MNIST-format files (http://yann.lecun.com/exdb/mnist/), gzipped or not.

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# MNIST names the test split "t10k"; any other split name is used as the file prefix itself.
_IDX_PREFIXES = {"train": "train", "test": "t10k"}


def read_idx(path: Path) -> np.ndarray:
    """Parse one idx file: magic (0, 0, dtype code, ndim), ndim big-endian uint32 sizes, data."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path.name} is not an idx file (magic bytes {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path.name} is truncated inside its header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path.name}: header says shape {dims} ({expected} bytes) but {len(raw) - header} bytes follow")
    # bytearray keeps the array writable, so torch.from_numpy does not warn.
    return np.frombuffer(bytearray(raw[header:]), dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="), copy=False)


def _find_idx_pair(folder: Path, split: str, field: str) -> tuple[Path, Path]:
    prefix = _IDX_PREFIXES.get(split, split)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not files:
        raise ConfigError(
            f"{field}.root: folder {str(folder)!r} is empty; put MNIST-format idx files there "
            f"({prefix}-images-idx3-ubyte.gz, {prefix}-labels-idx1-ubyte.gz)"
        )

    def pick(kind: str, idx: str) -> Optional[Path]:
        hits = [p for p in files if p.name.startswith(prefix + "-") and kind in p.name and idx in p.name]
        # Prefer an uncompressed copy when both exist: it reads faster and holds the same bytes.
        return min(hits, key=lambda p: (p.suffix == ".gz", p.name), default=None)

    images, labels = pick("images", "idx3"), pick("labels", "idx1")
    if images is None or labels is None:
        present = ", ".join(p.name for p in files[:6]) + (", ..." if len(files) > 6 else "")
        raise ConfigError(
            f"{field}.root: no {prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz] pair in "
            f"{str(folder)!r} for {field}.split={split!r} (found: {present})"
        )
    return images, labels


def open_idx(root: str, split: str = "train", field: str = "data.train") -> TensorImageSource:
    """The images/labels idx pair for ``split`` ("train" -> train-*, "test" -> t10k-*) in ``root``."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{field}.root: folder {root!r} does not exist; point it at a folder of MNIST-format idx files")
    image_path, label_path = _find_idx_pair(folder, split, field)
    try:
        images, labels = read_idx(image_path), read_idx(label_path)
    except ValueError as e:
        raise ConfigError(f"{field}.root: {e}") from None
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ConfigError(
            f"{field}.root: {image_path.name} holds {images.dtype} of shape {images.shape}, expected uint8 (N, H, W)"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise ConfigError(
            f"{field}.root: {image_path.name} holds {len(images)} images but {label_path.name} holds "
            f"{labels.shape[0] if labels.ndim else 0} labels; the two files must come from the same split"
        )
    label_tensor, num_classes, names = checked_labels(labels, field, f"{field}.root")
    pixels = torch.from_numpy(images).unsqueeze(1)  # (N, 1, H, W)
    h, w = images.shape[1:]
    return TensorImageSource(pixels, label_tensor, num_classes, f"idx {root} ({split}, {len(images)} images {h}x{w})", names)
