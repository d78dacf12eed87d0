"""The unlabeled pool a user brings: a folder of images at any depth, a list of paths, tar
shards (:mod:`plabel.data.pool_index` lists them) or a dataset whose labels are absent or
ignored; and :class:`LabeledAndPool`, the one source the rest of plabel trains on (labeled
samples first, then the pool).

Pool samples carry the label ``UNLABELED``: their pseudo-label precision is unknown unless an
audit file (``data.audit``) gives some of them their true labels.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from plabel.config import ConfigError, SourceConfig
from plabel.data.base import UNLABELED, ImageSource, UnreadableImage
from plabel.data.pixels import DECODE_ERRORS, MODES, decode_failure, to_uint8_chw
from plabel.data.pool_index import PathIndex, build_index

__all__ = ["UNLABELED", "IgnoredLabels", "LabeledAndPool", "ListedSource", "LISTED_SOURCES", "open_unlabeled", "read_audit"]
LISTED_SOURCES = ("folder", "list", "tar")  # pools plabel lists itself (pool_index.npz)


class ListedSource(ImageSource):
    """Images named by a :class:`PathIndex`: files of a folder or a list, or members of tar shards.

    Decoded per index; a file that cannot be decoded is an :class:`UnreadableImage` naming it.
    Grey and colour files may mix: a few spread-out files decide (colour wins), and
    :meth:`convert_to` makes every image match the labeled set's channels.
    """

    may_fail = True
    uniform_size = False

    def __init__(self, index: PathIndex, field: str) -> None:
        self.index = index
        self.field = field
        self.labels = torch.full((len(index),), UNLABELED, dtype=torch.long)
        self.num_classes, self.class_names = 0, []
        where = {"folder": "folder", "list": "list", "tar": "tar shards"}[index.kind]
        self.description = f"{len(index)} unlabeled images ({where} {index.root})"
        self._handles: dict[int, Any] = {}
        self._pid = os.getpid()
        self._mode: Optional[str] = None
        probes = np.unique(np.linspace(0, len(index) - 1, min(len(index), 8)).astype(int))
        decoded = []
        for i in probes.tolist():
            try:
                decoded.append(self.image(int(i)))
            except UnreadableImage:
                pass
        if not decoded:
            raise ConfigError(f"{field}.root: none of the pool's files {', '.join(index.name(int(i)) for i in probes[:3])} ... is a readable image")
        self.image_size = (int(decoded[0].shape[1]), int(decoded[0].shape[2]))
        self.channels = max(int(d.shape[0]) for d in decoded)

    def convert_to(self, channels: int) -> None:
        """Decode every image to ``channels`` (the labeled set's) from now on."""
        self.channels, self._mode = channels, MODES[channels]

    def _bytes(self, i: int) -> bytes:
        """Member i of a tar shard; each process (and DataLoader worker) opens shards itself."""
        index = self.index
        if os.getpid() != self._pid:  # a forked worker must not share the parent's file offsets
            self._handles, self._pid = {}, os.getpid()
        s = int(index.shards[i])  # type: ignore[index]
        handle = self._handles.get(s)
        if handle is None:
            handle = self._handles[s] = open(Path(index.root) / index.shard_files[s], "rb")
        handle.seek(int(index.starts[i]))  # type: ignore[index]
        data = handle.read(int(index.sizes[i]))  # type: ignore[index]
        if len(data) != int(index.sizes[i]):  # type: ignore[index]
            raise EOFError(f"the shard ends inside this member ({len(data)} of {int(index.sizes[i])} bytes)")  # type: ignore[index]
        return data

    def image(self, index: int) -> torch.Tensor:
        from PIL import Image

        try:
            if self.index.kind == "tar":
                opened = Image.open(io.BytesIO(self._bytes(index)))
            else:
                opened = Image.open(self.index.path(index))
            with opened:
                return to_uint8_chw(opened, self._mode)
        except DECODE_ERRORS as e:
            raise UnreadableImage(f"{self.describe(index)}: {decode_failure(e)}") from None

    def sample_name(self, index: int) -> str:
        return self.index.name(index)

    def describe(self, index: int) -> str:
        name = self.index.name(index)
        return name if self.index.kind == "tar" else str(Path(self.index.root) / name)

    def __getstate__(self) -> dict[str, Any]:  # open shard files do not travel to workers
        return {**self.__dict__, "_handles": {}}


class IgnoredLabels(ImageSource):
    """Any labeled source used as a pool: the same images, every label ``UNLABELED``."""

    def __init__(self, base: ImageSource) -> None:
        self.base = base
        self.labels = torch.full((len(base),), UNLABELED, dtype=torch.long)
        self.num_classes, self.class_names = 0, []
        self.channels, self.image_size = base.channels, base.image_size
        self.uniform_size, self.may_fail = base.uniform_size, base.may_fail
        self.description = f"{base.description}, labels ignored"

    def convert_to(self, channels: int) -> None:
        if hasattr(self.base, "convert_to"):
            self.base.convert_to(channels)  # type: ignore[attr-defined]
        self.channels = channels

    def image(self, index: int) -> torch.Tensor:
        image = self.base.image(index)
        if image.shape[0] == self.channels:
            return image
        from torchvision.transforms.v2.functional import rgb_to_grayscale

        return image.expand(3, -1, -1).clone() if self.channels == 3 else rgb_to_grayscale(image)

    def sample_name(self, index: int) -> str:
        return self.base.sample_name(index)

    def describe(self, index: int) -> str:
        return self.base.describe(index)


class LabeledAndPool(ImageSource):
    """The labeled source's samples (indices 0..L-1, their labels), then the pool's (L..L+P-1).

    The rest of plabel addresses one source with labeled, pool and (held-out) test indices; this
    keeps that true when the pool is a separate source. Pool images are decoded with the labeled
    set's channels; sizes may differ (every image is resized to the model's input).
    """

    def __init__(self, labeled: ImageSource, pool: ImageSource) -> None:
        self.labeled_part, self.pool_part = labeled, pool
        if hasattr(pool, "convert_to"):
            pool.convert_to(labeled.channels)  # type: ignore[attr-defined]
        self.offset = len(labeled)
        self.labels = torch.cat([labeled.labels, pool.labels])
        self.num_classes, self.class_names = labeled.num_classes, labeled.class_names
        self.channels, self.image_size = labeled.channels, labeled.image_size
        self.uniform_size = labeled.uniform_size and pool.uniform_size and tuple(pool.image_size) == tuple(labeled.image_size)
        self.may_fail = labeled.may_fail or pool.may_fail
        self.description = f"labeled: {labeled.description}; pool: {pool.description}"

    def image(self, index: int) -> torch.Tensor:
        if index < self.offset:
            return self.labeled_part.image(index)
        return self.pool_part.image(index - self.offset)

    def sample_name(self, index: int) -> str:
        if index < self.offset:
            return self.labeled_part.sample_name(index)
        return self.pool_part.sample_name(index - self.offset)

    def describe(self, index: int) -> str:
        if index < self.offset:
            return self.labeled_part.describe(index)
        return self.pool_part.describe(index - self.offset)


def open_unlabeled(cfg: SourceConfig, field: str = "data.unlabeled", index: Optional[PathIndex] = None) -> ImageSource:
    """The pool ``cfg`` names; ``index`` is the run's saved listing (folder, list, tar), if any."""
    if cfg.source in LISTED_SOURCES:
        return ListedSource(index if index is not None else build_index(cfg.source, cfg.root, field), field)
    if cfg.source == "hf":
        from plabel.data.hf_source import open_hf

        return open_hf(cfg, field, labeled=False)
    from plabel.data.sources import open_source

    return IgnoredLabels(open_source(cfg, field))


def read_audit(path: str, pool: ImageSource, class_names: list[str]) -> torch.Tensor:
    """The pool's labels with the audited samples' true labels filled in (``data.audit``).

    The audit file is a CSV with a ``path`` column (the pool's own sample names, as the
    pseudo-label CSVs write them) and a ``label`` column (a class name or id).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"data.audit: {path!r} does not exist; give a CSV of path,label rows for hand-checked pool images")
    with open(file, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise ConfigError(f"data.audit: {path} needs a header with 'path' and 'label' columns and at least one row")
    positions = {pool.sample_name(i): i for i in range(len(pool))}
    ids = {name: i for i, name in enumerate(class_names)}
    labels = pool.labels.clone()
    unknown_paths, unknown_labels = [], []
    for row in rows:
        where = positions.get(row["path"].strip())
        text = row["label"].strip()
        label = ids.get(text, int(text) if text.isdigit() and int(text) < len(class_names) else None)
        if where is None:
            unknown_paths.append(row["path"])
        elif label is None:
            unknown_labels.append(text)
        else:
            labels[where] = label
    if unknown_paths:
        hint = "use the pool's own names, as the pseudo-label CSVs' path column writes them"
        if len(unknown_paths) == len(rows) and len(pool):  # not one matches: most likely the root, not the file
            hint = (f"not one matches, so data.unlabeled's root is likely not the folder these paths are relative to "
                    f"(the pool names its images like {pool.sample_name(0)!r}); {hint}")
        raise ConfigError(
            f"data.audit: {len(unknown_paths)} of its {len(rows)} paths are not in the pool (e.g. {unknown_paths[0]!r}); {hint}"
        )
    if unknown_labels:
        raise ConfigError(f"data.audit: label {unknown_labels[0]!r} is not a class ({', '.join(class_names[:8])}, ...)")
    return labels
