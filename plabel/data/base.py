"""What every image source is: labels for all samples up front (read without decoding a single
image, so splitting and stratifying the pool stays cheap) and images decoded lazily, one index at
a time, as uint8 ``(C, H, W)`` tensors. Normalisation and augmentation happen later, in the
dataset built on top."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Optional

import numpy as np
import torch

from plabel.config import ConfigError

UNLABELED = -3  # the label of a pool sample nobody labeled (junk is -2, an unreadable image -1)


class UnreadableImage(Exception):
    """A sample whose image cannot be decoded; the message names it (file or row) and says why."""


class ImageSource(ABC):
    """Labels for every sample up front; images decoded lazily, one index at a time."""

    labels: torch.Tensor  # (N,) int64, all labels
    num_classes: int  # from dataset metadata when present, else max(label) + 1
    class_names: list[str]  # one per class id ("0", "1", ... when the data has no names)
    channels: int  # 1 or 3: every image is converted to this
    image_size: tuple[int, int]  # (H, W) of the first image; of every image when uniform_size
    uniform_size: bool = True  # False: sizes may differ between images (they are resized later)
    may_fail: bool = False  # True: an image can turn out unreadable (files, encoded bytes)
    description: str  # one line for logs, e.g. "embedded MNIST (5000 digits)"

    def __len__(self) -> int:
        return int(self.labels.numel())

    @abstractmethod
    def image(self, index: int) -> torch.Tensor:
        """Sample ``index`` as a uint8 ``(channels, H, W)`` tensor the caller may modify.

        Raises :class:`UnreadableImage` when the sample cannot be decoded."""

    def describe(self, index: int) -> str:
        """How a person finds sample ``index`` (a file path, or its row)."""
        return f"row {index}"

    def sample_name(self, index: int) -> str:
        """The name outputs give sample ``index``: its path under the source's root, a tar
        member, or (sources without files) its row."""
        return str(index)


class TensorImageSource(ImageSource):
    """Images already decoded into one uint8 ``(N, C, H, W)`` tensor (embedded MNIST, idx files)."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, description: str,
        class_names: Optional[list[str]] = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be uint8 (N, 1|3, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.num_classes = num_classes
        self.class_names = class_names or [str(c) for c in range(num_classes)]
        self.channels = int(images.shape[1])
        self.image_size = (int(images.shape[2]), int(images.shape[3]))
        self.description = description

    def image(self, index: int) -> torch.Tensor:
        # A copy, so an in-place augmentation can never write into the shared pixel store.
        return self.images[index].clone()


def checked_labels(
    values: Any, field: str, where: str, names: Optional[list[str]] = None
) -> tuple[torch.Tensor, int, list[str]]:
    """Labels as an int64 tensor, the class count and the class names.

    ``names`` come from dataset metadata (a ``ClassLabel``, torchvision's ``classes``). String
    labels are mapped to ids in sorted order and keep their text as the class names.
    """
    array = np.asarray(values)
    if array.ndim == 1 and array.dtype.kind in "UO" and array.size and all(isinstance(v, str) for v in array.tolist()):
        names = sorted(set(array.tolist()))
        array = np.searchsorted(np.asarray(names), array)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ConfigError(f"{where}: labels must be integer class ids or class names, got {array.dtype} of shape {array.shape}")
    if array.size == 0:
        raise ConfigError(f"{where}: the dataset holds no samples; check {field}.split and the path or name")
    negative = int((array < 0).sum())
    if negative:
        raise ConfigError(
            f"{where}: {negative} labels are negative (e.g. {int(array.min())}; Hugging Face uses -1 for "
            f"'no label'); pick a labelled split with {field}.split or drop those rows"
        )
    num_classes = len(names) if names else int(array.max()) + 1
    if int(array.max()) >= num_classes:
        raise ConfigError(f"{where}: label {int(array.max())} is out of range for the {num_classes} declared classes")
    class_names = list(names) if names else [str(c) for c in range(num_classes)]
    return torch.as_tensor(array.astype(np.int64)), num_classes, class_names


def first_line(error: Exception) -> str:
    """``Type: first line`` of an exception, so a wrapped message stays on one line."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
