"""The unlabeled pool's index: which files (or tar members) the pool is, in a fixed order.

A user's pool is a folder of 200k or 10M files, a list of paths, or tar shards. It is listed once
per run, sorted, and kept as one UTF-8 blob plus offsets (a few dozen bytes per file instead of
a Python string's ~80), with a SHA-256 digest of the listing. The run folder keeps it
(``pool_index.npz``): a resumed run, every process and ``plabel export`` / ``score`` read the same
pool, and a pool that changed on disk since is found by listing again and comparing digests.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import tarfile
import zipfile
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from plabel.config import ConfigError

INDEX_FILE = "pool_index.npz"
# Archive members and files PIL cannot open as images are not part of a pool.
_NOT_IMAGES = {".txt", ".json", ".csv", ".cls", ".npy", ".npz", ".pth", ".md", ".yaml", ".yml", ".xml", ".pdf"}


def image_extensions() -> frozenset[str]:
    """Every extension PIL opens (``.png``, ``.jpg``, ``.webp``, ``.tif``, ...), lower case."""
    from PIL import Image

    Image.init()  # registers every plugin, not only the few loaded on first use
    return frozenset(ext.lower() for ext in Image.registered_extensions()) - _NOT_IMAGES


@dataclass
class PathIndex:
    """N names (relative paths or tar members) in one blob; for tars, where each member's bytes are.

    ``names`` are UTF-8 bytes of every name back to back, ``offsets`` (N + 1,) their bounds.
    ``shards``/``starts``/``sizes`` are set for tar pools only: member i lies in
    ``shard_files[shards[i]]`` at byte ``starts[i]``, ``sizes[i]`` bytes long.
    """

    kind: str  # folder | list | tar
    root: str  # the folder, the list's folder, or the shards' folder
    names: np.ndarray  # uint8 blob
    offsets: np.ndarray  # int64 (N + 1,)
    skipped: int = 0  # files that are not images (folder) or members that are not (tar)
    shard_files: list[str] = field(default_factory=list)
    shards: Optional[np.ndarray] = None  # int32 (N,)
    starts: Optional[np.ndarray] = None  # int64 (N,)
    sizes: Optional[np.ndarray] = None  # int64 (N,)

    @staticmethod
    def from_names(kind: str, root: str, names: Iterable[str], skipped: int = 0, **tar: object) -> "PathIndex":
        encoded = [n.encode("utf-8", "surrogateescape") for n in names]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        return PathIndex(kind, root, blob, offsets, skipped, **tar)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def name(self, i: int) -> str:
        return bytes(self.names[self.offsets[i] : self.offsets[i + 1]]).decode("utf-8", "surrogateescape")

    def path(self, i: int) -> Path:
        """Where sample i's file is (folders and lists)."""
        return Path(self.root) / self.name(i)

    def digest(self) -> str:
        """SHA-256 of the listing (names, and for tars where each member lies)."""
        h = hashlib.sha256()
        for part in (self.names, self.offsets, self.shards, self.starts, self.sizes):
            if part is not None:
                h.update(np.ascontiguousarray(part).tobytes())
        for shard in self.shard_files:
            h.update(shard.encode() + b"\0")
        return h.hexdigest()

    def save(self, path: Path) -> None:
        """Atomically (a temporary file renamed into place), with numpy's format: no pickle."""
        arrays = {"names": self.names, "offsets": self.offsets,
                  "meta": np.frombuffer(f"{self.kind}\n{self.root}\n{self.skipped}\n{self.digest()}".encode(), np.uint8),
                  "shard_files": np.frombuffer("\n".join(self.shard_files).encode(), np.uint8)}
        if self.shards is not None:
            arrays.update(shards=self.shards, starts=self.starts, sizes=self.sizes)  # type: ignore[arg-type]
        tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def load(path: Path) -> "PathIndex":
        damaged = f"data.unlabeled: {path} is damaged"
        fix = "remove it to list the pool again (the run then scores the pool as it is on disk now)"
        try:
            with np.load(path, allow_pickle=False) as z:
                kind, root, skipped, digest = bytes(z["meta"]).decode().split("\n")
                shard_text = bytes(z["shard_files"]).decode()
                index = PathIndex(
                    kind, root, z["names"], z["offsets"], int(skipped), shard_text.split("\n") if shard_text else [],
                    z["shards"] if "shards" in z else None, z["starts"] if "starts" in z else None,
                    z["sizes"] if "sizes" in z else None,
                )
        except (ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as e:
            raise ConfigError(f"{damaged} ({type(e).__name__}); {fix}") from None
        if index.digest() != digest:
            raise ConfigError(f"{damaged} (its digest does not match); {fix}")
        return index

    def difference(self, other: "PathIndex") -> tuple[int, int]:
        """(names in ``other`` not here, names here not in ``other``): added and removed since."""
        mine = {self.name(i) for i in range(len(self))}
        theirs = {other.name(i) for i in range(len(other))}
        return len(theirs - mine), len(mine - theirs)


def scan_folder(root: Path, field: str) -> PathIndex:
    """Every image file under ``root`` at any depth, in path order (by path components: each
    folder's entries by name, a sub-folder's files where its name sorts).

    Hidden files and folders (a leading dot) are skipped; symlinked folders are followed once (a
    folder reached twice, through a link loop or two links, is listed once); files PIL cannot
    open by extension are counted, not listed. Names go straight into one growing byte blob, so
    memory stays near the blob's size (a few dozen bytes a file) however many files there are.
    """
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise ConfigError(f"{field}.root: {str(root)!r} {what}; point it at the folder of unlabeled images")
    extensions = image_extensions()
    blob = bytearray()
    offsets = array("q", [0])
    skipped = 0
    seen: set[tuple[int, int]] = set()
    # Depth first; each folder's entries sorted by name, so the order is sorting by path components.
    stack: list[tuple[str, Iterator[tuple[str, bool]]]] = []

    def enter(folder: Path, prefix: str) -> None:
        nonlocal skipped
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in seen:
                return
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = []
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    try:
                        is_dir = entry.is_dir()  # follows symlinks
                        is_file = not is_dir and entry.is_file()
                    except OSError:
                        is_dir = is_file = False
                    if is_dir:
                        entries.append((entry.name, True))
                    elif is_file and os.path.splitext(entry.name)[1].lower() in extensions:
                        entries.append((entry.name, False))
                    else:
                        skipped += 1  # not an image by its extension, or a broken link
        except OSError as e:
            raise ConfigError(f"{field}.root: cannot list {folder} ({e.strerror or e}); check its permissions") from None
        entries.sort()
        stack.append((prefix, iter(entries)))

    enter(root, "")
    while stack:
        prefix, entries = stack[-1]
        step = next(entries, None)
        if step is None:
            stack.pop()
            continue
        name, is_dir = step
        if is_dir:
            enter(root / (prefix + name), prefix + name + "/")
        else:
            blob += (prefix + name).encode("utf-8", "surrogateescape")
            offsets.append(len(blob))
    if len(offsets) == 1:
        raise ConfigError(
            f"{field}.root: no image files under {str(root)!r}" + (f" ({skipped} other files)" if skipped else "")
            + f"; image files have one of the extensions PIL reads ({', '.join(sorted(extensions)[:6])}, ...)"
        )
    return PathIndex("folder", str(root), np.frombuffer(bytes(blob), dtype=np.uint8), np.frombuffer(offsets, dtype=np.int64).copy(), skipped)


_PATH_COLUMNS = ("path", "file_name", "filename", "file", "image", "image_path")


def read_list(list_file: Path, field: str) -> PathIndex:
    """The paths a ``.txt`` (one a line, ``#`` comments) or ``.csv`` (a path column) file names,
    relative to the list's own folder, in the list's order. Missing files are one error."""
    if not list_file.is_file():
        what = "is a folder, not a file" if list_file.is_dir() else "does not exist"
        raise ConfigError(f"{field}.root: list {str(list_file)!r} {what}; give a .txt or .csv file of image paths")
    text = list_file.read_text(errors="surrogateescape")
    if list_file.suffix.lower() == ".csv":
        rows = list(csv.reader(io.StringIO(text)))
        header = [h.strip().lower() for h in rows[0]] if rows else []
        column = next((header.index(c) for c in _PATH_COLUMNS if c in header), None)
        body = rows[1:] if column is not None else rows
        entries = [r[column or 0].strip() for r in body if r and r[column or 0].strip()]
    else:
        entries = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not entries:
        raise ConfigError(f"{field}.root: list {str(list_file)!r} names no image; put one path per line")
    base = list_file.parent
    missing = [e for e in entries if not (base / e).is_file()]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:3])
        raise ConfigError(
            f"{field}.root: {len(missing)} of the {len(entries)} files {list_file} names do not exist (e.g. {shown}; "
            f"paths are relative to {str(base)!r}); fix or remove those lines"
        )
    seen: dict[str, int] = {}
    for line, e in enumerate(entries, 1):
        key = os.path.normpath(e)
        if key in seen:
            raise ConfigError(f"{field}.root: {list_file} names {e!r} twice (entries {seen[key]} and {line}); a pool holds each image once")
        seen[key] = line
    return PathIndex.from_names("list", str(base), entries)


def expand_braces(pattern: str) -> list[str]:
    """WebDataset's shard patterns: ``shards-{000..009}.tar`` and ``{a,b}.tar`` (nested alike)."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    head, tail, body = pattern[: match.start()], pattern[match.end() :], match.group(1)
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        a, b = numeric.groups()
        width = len(a) if a.startswith("0") else 0
        choices = [str(n).zfill(width) for n in range(int(a), int(b) + 1)]
    else:
        choices = body.split(",")
    return [out for choice in choices for out in expand_braces(head + choice + tail)]


def tar_shards(spec: str, field: str) -> tuple[Path, list[str]]:
    """The shards a folder (every ``*.tar`` in it, sorted) or a brace pattern names; all must exist."""
    path = Path(spec).expanduser()
    if path.is_dir():
        shards = sorted(p.name for p in path.iterdir() if p.suffix == ".tar" and not p.name.startswith("."))
        if not shards:
            raise ConfigError(f"{field}.root: no .tar shard in {str(path)!r}; give a folder of .tar files or a pattern like shards-{{000..009}}.tar")
        return path, shards
    files = [Path(p) for p in expand_braces(spec)]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise ConfigError(
            f"{field}.root: {len(missing)} of the {len(files)} shards {spec!r} names do not exist (e.g. {missing[0]!r}); "
            "give a folder of .tar files or a pattern of existing ones"
        )
    parents = {p.parent for p in files}
    if len(parents) != 1:
        raise ConfigError(f"{field}.root: the shards {spec!r} names lie in several folders; keep one pool's shards in one folder")
    return parents.pop(), [p.name for p in files]


def scan_tars(spec: str, field: str) -> PathIndex:
    """Every image member of WebDataset-style tar shards: one per sample key (the member's path up
    to the first dot of its file name), the shard order given, members in archive order."""
    folder, shards = tar_shards(spec, field)
    extensions = image_extensions()
    names: list[str] = []
    shard_ids: list[int] = []
    starts: list[int] = []
    sizes: list[int] = []
    skipped = 0
    for s, shard in enumerate(shards):
        keys: set[str] = set()
        try:
            with tarfile.open(folder / shard, mode="r:") as archive:  # headers only: member data is skipped
                for member in archive:
                    base = member.name.rsplit("/", 1)[-1]
                    if not member.isfile() or base.startswith("."):
                        continue
                    key = member.name[: len(member.name) - len(base)] + base.split(".", 1)[0]
                    if os.path.splitext(base)[1].lower() not in extensions or key in keys:
                        skipped += 1  # labels, captions, or a second image of the same sample
                        continue
                    keys.add(key)
                    names.append(f"{shard}/{member.name}")
                    shard_ids.append(s)
                    starts.append(member.offset_data)
                    sizes.append(member.size)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ConfigError(f"{field}.root: shard {folder / shard} cannot be read as a tar file ({type(e).__name__}: {e}); re-copy or remove it") from None
    if not names:
        raise ConfigError(f"{field}.root: the shards in {str(folder)!r} hold no image member ({skipped} other members)")
    return PathIndex.from_names(
        "tar", str(folder), names, skipped, shard_files=shards, shards=np.asarray(shard_ids, dtype=np.int32),
        starts=np.asarray(starts, dtype=np.int64), sizes=np.asarray(sizes, dtype=np.int64),
    )


def build_index(kind: str, root: str, field: str) -> PathIndex:
    """List the pool a source config names (folder, list or tar)."""
    path = Path(root).expanduser()
    if kind == "folder":
        return scan_folder(path, field)
    if kind == "list":
        return read_list(path, field)
    if kind == "tar":
        return scan_tars(root, field)
    raise ValueError(f"not a listed source: {kind}")
