"""Images that are in two roles at once: a pool image that is also a labeled or test image, a test
image that is also a labeled one.

A natural layout (``/data/{labeled,unlabeled,test}`` with the pool pointed at ``/data``) puts every
labeled and test image into the pool: test images would then be pseudo-labeled and trained on. An
image counts as the same when it is the same file (resolved path) or has the same bytes (SHA-256,
computed only for pool files whose size matches a labeled or test file's). Sources without files
(tensors: the embedded digits, idx files, torchvision sets) are not compared.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from plabel.config import ConfigError, DataConfig
from plabel.data.base import ImageSource

CHUNK = 512  # rows of a Hugging Face dataset read at once


@dataclass(frozen=True)
class FileRef:
    """One sample's file: its resolved path (None for bytes without a file), size, and a reader."""

    path: Optional[str]
    size: Optional[int]
    read: Callable[[], bytes]


def _file(path: Path, resolve: bool = True) -> FileRef:
    where = path.resolve() if resolve else path
    try:
        size: Optional[int] = os.stat(where).st_size
    except OSError:
        size = None
    return FileRef(str(where), size, where.read_bytes)


def file_refs(source: ImageSource) -> Optional[Iterator[FileRef]]:
    """Each sample's file, in order; None for a source without files."""
    from plabel.data.hf_source import HFImageSource
    from plabel.data.unlabeled import IgnoredLabels, ListedSource

    while isinstance(source, IgnoredLabels):
        source = source.base
    if isinstance(source, ListedSource):
        return _listed(source)
    if isinstance(source, HFImageSource):
        return _hf(source)
    return None


def _listed(source: "ListedSource") -> Iterator[FileRef]:  # type: ignore[name-defined]  # noqa: F821
    index = source.index
    if index.kind == "tar":
        for i in range(len(index)):
            yield FileRef(None, int(index.sizes[i]), lambda i=i: source._bytes(i))  # type: ignore[index]
        return
    root = Path(index.root).resolve()  # once: resolving a million names one by one would take minutes
    for i in range(len(index)):
        yield _file(root / index.name(i), resolve=False)


def _hf(source: "HFImageSource") -> Iterator[FileRef]:  # type: ignore[name-defined]  # noqa: F821
    dataset, column = source.dataset, source.image_column
    for start in range(0, len(dataset), CHUNK):
        for value in dataset[start : start + CHUNK][column]:
            if not isinstance(value, dict):
                yield FileRef(None, None, lambda: b"")
                continue
            data, path = value.get("bytes"), value.get("path")
            if data is not None:
                real = Path(path).resolve() if path and Path(path).is_file() else None
                yield FileRef(str(real) if real else None, len(data), lambda data=data: data)
            elif path:
                yield _file(Path(path))
            else:
                yield FileRef(None, None, lambda: b"")


@dataclass
class Known:
    """The files of the labeled and test sets, by path and by (size, digest)."""

    paths: dict[str, str]  # resolved path -> role
    digests: dict[tuple[int, str], str]  # (size, sha256) -> role
    sizes: set[int]

    @staticmethod
    def of(roles: dict[str, Optional[Iterator[FileRef]]]) -> "Known":
        paths: dict[str, str] = {}
        digests: dict[tuple[int, str], str] = {}
        for role, refs in roles.items():
            for ref in refs or ():
                if ref.path:
                    paths.setdefault(ref.path, role)
                if ref.size:
                    try:
                        digests.setdefault((ref.size, hashlib.sha256(ref.read()).hexdigest()), role)
                    except OSError:  # unreadable: the run reports it where it reads the image
                        pass
        return Known(paths, digests, {size for size, _ in digests})

    def role_of(self, ref: FileRef) -> Optional[tuple[str, str]]:
        """(role, how) when ``ref`` is a known file: the same path, or the same bytes."""
        if ref.path and ref.path in self.paths:
            return self.paths[ref.path], "path"
        if ref.size in self.sizes:
            try:
                role = self.digests.get((ref.size, hashlib.sha256(ref.read()).hexdigest()))  # type: ignore[index]
            except OSError:
                return None
            if role is not None:
                return role, "bytes"
        return None


@dataclass
class Overlap:
    """Positions of one source's samples that are known files, counted by role and by how."""

    positions: torch.Tensor  # (n,) int64, ascending
    roles: dict[str, int]
    by_bytes: int
    example: str

    def __bool__(self) -> bool:
        return bool(self.positions.numel())


def find_overlap(refs: Optional[Iterator[FileRef]], known: Known, describe: Callable[[int], str]) -> Overlap:
    positions, roles, by_bytes, example = [], {}, 0, ""
    if refs is not None and (known.paths or known.digests):
        for i, ref in enumerate(refs):
            hit = known.role_of(ref)
            if hit is None:
                continue
            role, how = hit
            positions.append(i)
            roles[role] = roles.get(role, 0) + 1
            by_bytes += how == "bytes"
            example = example or describe(i)
    return Overlap(torch.tensor(positions, dtype=torch.long), roles, by_bytes, example)


def pool_overlap_line(overlap: Overlap, pool_size: int, action: str) -> str:
    """The one line a run prints (or raises) about pool images that are labeled or test images."""
    roles = " and ".join(f"{n} {role}" for role, n in sorted(overlap.roles.items()))
    how = f"{len(overlap.positions) - overlap.by_bytes} the same file, {overlap.by_bytes} the same bytes elsewhere"
    return (f"data.unlabeled: {len(overlap.positions)} of the pool's {pool_size} images are {roles} images ({how}; "
            f"e.g. {overlap.example}); {action}")


def refuse_test_in_labeled(labeled: ImageSource, test: ImageSource) -> list[str]:
    """A test set that holds labeled training images measures nothing: refused, naming them."""
    found = find_overlap(file_refs(test), Known.of({"labeled": file_refs(labeled)}), test.describe)
    if found:
        raise ConfigError(
            f"data.test: {len(found.positions)} of its {len(test)} images are also labeled training images "
            f"({len(found.positions) - found.by_bytes} the same file, {found.by_bytes} the same bytes; e.g. {found.example}); "
            "remove them from the test set or from data.train"
        )
    return []


def without_known_images(
    cfg: DataConfig, pool: ImageSource, labeled: ImageSource, test: ImageSource | None, pool_indices: torch.Tensor, offset: int
) -> tuple[torch.Tensor, str | None]:
    """The pool less its images that are labeled or test images (or a refusal, with data.pool_overlap refuse)."""
    roles = {"labeled": file_refs(labeled)}
    if test is not None:
        roles["test"] = file_refs(test)
    found = find_overlap(file_refs(pool), Known.of(roles), pool.describe)
    if not found:
        return pool_indices, None
    if cfg.pool_overlap == "refuse":
        raise ConfigError(pool_overlap_line(found, len(pool), "point data.unlabeled at a folder without them, "
                                            "or set data.pool_overlap drop to leave them out"))
    keep = torch.ones(len(pool), dtype=torch.bool)
    keep[found.positions] = False
    kept = pool_indices[keep[pool_indices - offset]]
    return kept, "note: " + pool_overlap_line(found, len(pool), "left out of the pool (data.pool_overlap refuse stops instead)")
