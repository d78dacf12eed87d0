"""Hugging Face datasets: a hub name, or a local copy (save_to_disk folder, parquet, imagefolder)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from plabel.config import ConfigError, SourceConfig
from plabel.data.base import UNLABELED, ImageSource, UnreadableImage, checked_labels, first_line
from plabel.data.pixels import DECODE_ERRORS, MODES, decode_failure, to_uint8_chw


class HFImageSource(ImageSource):
    """A Hugging Face ``datasets.Dataset``; the image column is decoded per index, by plabel.

    An ``Image`` column is read undecoded (bytes and path) and decoded here, so a corrupt file
    becomes an :class:`UnreadableImage` that names the file, and sizes may differ between rows
    (every image is resized later, to the model's input size).
    """

    may_fail = True
    uniform_size = False

    def __init__(
        self, dataset: Any, image_column: str, labels: torch.Tensor, class_names: list[str], description: str, field: str
    ) -> None:
        import datasets

        # Only the image column is fetched per sample, so other heavy columns are never decoded.
        dataset = dataset.select_columns([image_column])
        if isinstance(dataset.features[image_column], datasets.Image):
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
        self.dataset = dataset
        self.image_column = image_column
        self.field = field
        self.labels = labels
        self.num_classes = len(class_names)
        self.class_names = class_names
        self.description = description
        # Folders mixing greyscale and colour files are common; a few spread-out rows decide, and
        # colour wins so that no colour image is flattened to grey. Unreadable rows are passed over.
        probes = np.unique(np.linspace(0, len(labels) - 1, min(len(labels), 8)).astype(int))
        decoded = [image for image in (self._try(int(i)) for i in probes) if image is not None]
        if not decoded:
            raise ConfigError(f"{field}.image_column: none of rows {probes.tolist()} of {image_column!r} is a readable image")
        self.image_size = (int(decoded[0].shape[1]), int(decoded[0].shape[2]))
        self.channels = max(int(image.shape[0]) for image in decoded)

    def _try(self, index: int) -> Optional[torch.Tensor]:
        try:
            return self._decode(index, mode=None)
        except UnreadableImage:
            return None

    def _decode(self, index: int, mode: Optional[str]) -> torch.Tensor:
        value = self.dataset[int(index)][self.image_column]
        try:
            return to_uint8_chw(value, mode)
        except DECODE_ERRORS as e:
            raise UnreadableImage(f"{self.describe(index)}: {decode_failure(e)}") from None

    def describe(self, index: int) -> str:
        value = self.dataset[int(index)][self.image_column]
        path = value.get("path") if isinstance(value, dict) else None
        return f"{path} (row {index})" if path else f"row {index} of column {self.image_column!r}"

    def sample_name(self, index: int) -> str:
        value = self.dataset[int(index)][self.image_column]
        path = value.get("path") if isinstance(value, dict) else None
        return str(path) if path else str(index)

    def convert_to(self, channels: int) -> None:
        """Decode every image to ``channels`` from now on (a pool takes the labeled set's)."""
        self.channels = channels

    def image(self, index: int) -> torch.Tensor:
        return self._decode(index, MODES[self.channels])


_SAVE_TO_DISK_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")
_COMMON_SPLITS = ("train", "test", "validation", "valid", "val", "eval")
_LOCAL_COPY_HINT = "a save_to_disk folder, a .parquet file or folder, or an imagefolder of class subfolders"


def open_hf(cfg: SourceConfig, field: str = "data.train", labeled: bool | None = True) -> HFImageSource:
    """A Hugging Face dataset from a local copy (preferred when ``cfg.name`` exists) or the hub.

    ``labeled`` False (an unlabeled pool): only the image column is needed; labels, if any, are
    ignored and every sample gets ``UNLABELED``; None: labels when the label column exists."""
    path = Path(cfg.name).expanduser()
    if not path.exists() and (cfg.name.startswith(("/", ".", "~")) or path.suffix == ".parquet"):
        raise ConfigError(f"{field}.name: local path {cfg.name!r} does not exist; point it at {_LOCAL_COPY_HINT}")
    dataset = _load_local_hf(path, cfg, field) if path.exists() else _load_hub_hf(cfg, field)
    if labeled is not False and _is_imagefolder(path) and cfg.image_column in dataset.column_names:
        # Class = the top-level folder under the root, as torchvision's ImageFolder has it; the
        # imagefolder builder takes the folder just above each file (a sub-folder of a class).
        names = _top_level_folders(dataset, cfg.image_column, _class_root(path, cfg.split), field)
        labels, _, class_names = checked_labels(names, field, f"{field}.name")
        description = f"hf {cfg.name} (imagefolder, {len(labels)} images in {len(class_names)} class folders)"
        return HFImageSource(dataset, cfg.image_column, labels, class_names, description, field)
    columns = list(dataset.column_names)
    if labeled is None:
        labeled = cfg.label_column in columns
    needed = ((cfg.image_column, "image_column"), (cfg.label_column, "label_column"))
    for column, key in needed if labeled else needed[:1]:
        if column not in columns:
            raise ConfigError(f"{field}.{key}: column {column!r} is not in {cfg.name}; columns present: {', '.join(columns)}")
    import datasets

    if not labeled:
        description = f"hf {cfg.name} ({cfg.split}, {len(dataset)} unlabeled rows)"
        if len(dataset) == 0:
            raise ConfigError(f"{field}.name: {cfg.name} holds no rows; check {field}.split and the path or name")
        unlabeled = torch.full((len(dataset),), UNLABELED, dtype=torch.long)
        return HFImageSource(dataset, cfg.image_column, unlabeled, [], description, field)

    feature = dataset.features[cfg.label_column]
    declared = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    # Reading one column in numpy format honours any indices mapping and decodes no images.
    values = dataset.with_format("numpy", columns=[cfg.label_column])[:][cfg.label_column]
    labels, _, names = checked_labels(values, field, f"{field}.label_column", declared)
    description = f"hf {cfg.name} ({cfg.split}, {len(labels)} rows)"
    return HFImageSource(dataset, cfg.image_column, labels, names, description, field)


def _is_imagefolder(path: Path) -> bool:
    """A local folder read by the imagefolder builder: no save_to_disk marker, no parquet file."""
    markers = (*_SAVE_TO_DISK_MARKERS, "metadata.csv", "metadata.jsonl", "metadata.parquet")  # metadata files carry their own labels
    return path.is_dir() and not any((path / m).is_file() for m in markers) and not any(path.rglob("*.parquet"))


def _class_root(path: Path, split: str) -> Path:
    """Where the class folders are: root/<split>/ when the folder is split that way, else root."""
    return path / split if (path / split).is_dir() else path


def _image_files(root: Path, field: str) -> list[str]:
    """Every image file under ``root`` (any depth; hidden files and folders skipped), sorted."""
    from plabel.data.pool_index import scan_folder

    try:
        index = scan_folder(root, field)
    except ConfigError:
        raise ConfigError(f"{field}.name: no image files under {str(root)!r}; a labeled imagefolder keeps images under root/<class>/") from None
    return [str(index.path(i)) for i in range(len(index))]


def _top_level_folders(dataset: Any, image_column: str, root: Path, field: str) -> list[str]:
    """Each image's top-level folder under ``root``; images lying in ``root`` itself are refused."""
    import datasets

    column = dataset.cast_column(image_column, datasets.Image(decode=False)).with_format("arrow")[:][image_column]
    paths = column.combine_chunks().field("path").to_pylist()
    base = str(root.resolve())
    tops, loose = [], []
    for p in paths:
        rel = os.path.relpath(os.path.realpath(p), base) if p else ""
        parts = Path(rel).parts
        if len(parts) < 2 or parts[0] == "..":
            loose.append(p)
        tops.append(parts[0] if parts else "")
    if loose:
        layout = "no class folders at all" if len(loose) == len(paths) else f"{len(loose)} image(s) beside the class folders"
        raise ConfigError(
            f"{field}.name: {root} holds {layout} (e.g. {Path(loose[0]).name!r}); a labeled imagefolder keeps each image "
            "under root/<class>/ (any depth below it); images without labels go in data.unlabeled (source folder)"
        )
    return tops


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
            return datasets.load_dataset("parquet", data_files=[str(p) for p in parquet], split="train", cache_dir=cache_dir(cfg))
        if path.is_dir() and not _is_imagefolder(path):  # an imagefolder with a metadata file
            return datasets.load_dataset("imagefolder", data_dir=str(path), split=cfg.split, cache_dir=cache_dir(cfg))
        if path.is_dir():
            # The image files are listed here, not left to the builder's split patterns: a file
            # whose path says "train" (a datasets cache written into the folder by plabel < 0.3)
            # would otherwise become the train split.
            files = _image_files(_class_root(path, cfg.split), field)
            return datasets.load_dataset("imagefolder", data_files={"train": files}, split="train", cache_dir=cache_dir(cfg))
    except Exception as e:  # empty folder, unreadable file, unknown split: datasets raises many types
        if isinstance(e, ValueError) and "split" in str(e).lower():  # how datasets reports an unknown split
            raise ConfigError(f"{field}.split: {cfg.name}: {first_line(e)}") from e
        raise ConfigError(f"{field}.name: could not read {cfg.name} ({first_line(e)}); it should be {_LOCAL_COPY_HINT}") from e
    raise ConfigError(f"{field}.name: {cfg.name} is a file but not .parquet; point it at {_LOCAL_COPY_HINT}")


def cache_dir(cfg: SourceConfig) -> Optional[str]:
    """The datasets cache: Hugging Face's usual one (HF_HOME / HF_DATASETS_CACHE) unless root names
    another. The default root "data" is the torchvision download folder, and often the folder a
    user keeps their images in: a cache written there turned the images into a broken dataset."""
    return None if cfg.root in ("", "data", "./data") else cfg.root


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
        return datasets.load_dataset(cfg.name, split=cfg.split, cache_dir=cache_dir(cfg))
    except Exception as e:  # offline, unknown name, gated repo, unknown split: all unreachable for us
        raise ConfigError(
            f"{field}.name: could not load {cfg.name!r} from the Hugging Face hub and no such local path exists "
            f"({first_line(e)}); offline, point {field}.name at {_LOCAL_COPY_HINT}"
        ) from e
