"""Image sources: one interface (``base.ImageSource``) over the embedded MNIST digits, idx files,
torchvision datasets and Hugging Face datasets.

Every user-facing failure raises :class:`ConfigError` with one line that names the config field
(``data.train.root``, ``data.test.image_column``, ...) and says how to fix it.
"""

from __future__ import annotations

from plabel.config import ConfigError, SourceConfig
from plabel.data.base import ImageSource, TensorImageSource
from plabel.data.files import open_embedded, open_idx, read_idx
from plabel.data.hf_source import open_hf
from plabel.data.pixels import to_uint8_chw
from plabel.data.torchvision_source import open_torchvision

__all__ = ["ImageSource", "TensorImageSource", "open_embedded", "open_hf", "open_idx", "open_source", "open_torchvision", "read_idx", "to_uint8_chw"]


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
