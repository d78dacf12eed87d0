"""torchvision's datasets (MNIST, CIFAR, SVHN, ...) under a local root, downloaded only when asked."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from plabel.config import ConfigError, SourceConfig
from plabel.data.base import ImageSource, checked_labels, first_line
from plabel.data.pixels import MODES, to_uint8_chw


class TorchvisionImageSource(ImageSource):
    """A torchvision dataset; its samples are PIL images, converted per index."""

    def __init__(
        self, dataset: Any, labels: torch.Tensor, num_classes: int, description: str, class_names: list[str]
    ) -> None:
        self.dataset = dataset
        self.labels = labels
        self.num_classes = num_classes
        self.class_names = class_names
        self.description = description
        first = to_uint8_chw(dataset[0][0])
        self.channels = int(first.shape[0])
        self.image_size = (int(first.shape[1]), int(first.shape[2]))

    def image(self, index: int) -> torch.Tensor:
        return to_uint8_chw(self.dataset[int(index)][0], MODES[self.channels])


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
                f"{field}.download: fetching {cfg.name} into {cfg.root!r} failed ({first_line(e)}); "
                f"check the network or copy the files there"
            ) from None
        raise ConfigError(
            f"{field}.root: torchvision {cfg.name} not found under {cfg.root!r} (expected {layout}); "
            f"set {field}.download=true or point {field}.root at a folder holding {cfg.name}"
        ) from None
    targets = dataset.targets if hasattr(dataset, "targets") else dataset.labels
    classes = getattr(dataset, "classes", None)  # SVHN has no class list
    labels, num_classes, names = checked_labels(np.asarray(targets), field, f"{field}.root", list(classes) if classes else None)
    description = f"torchvision {cfg.name} ({cfg.split}, {len(labels)} images)"
    return TorchvisionImageSource(dataset, labels, num_classes, description, names)
