"""The pool's listing, made once per run: the main process lists a folder/list/tar pool (or
reuses the run folder's ``pool_index.npz``), every other process reads that file. A resumed run
scores exactly the pool it started with; a pool that changed on disk since is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from accelerate import Accelerator

from plabel.config import ConfigError, RunConfig
from plabel.data.pool_index import INDEX_FILE, PathIndex, build_index
from plabel.data.unlabeled import LISTED_SOURCES
from plabel.distributed.processes import decide_on_main, on_main
from plabel.trainer.run_files import write_hint


def saved_listing(cfg: RunConfig, run_folder: Path) -> Optional[Path]:
    """The listing this run has: its own folder's, or (resuming from another run's checkpoint) that run's."""
    candidates = [run_folder / INDEX_FILE]
    if cfg.resume not in ("auto", "never"):
        candidates.insert(0, Path(cfg.resume).parent.parent / INDEX_FILE)
    return next((p for p in candidates if p.is_file()), None)


@dataclass
class PoolListing:
    """The run's pool listing (None: the pool needs none), notes to print, and what was created for it."""

    index: Optional[PathIndex] = None
    notes: list[str] = field(default_factory=list)
    created: list[Path] = field(default_factory=list)  # a new listing file, and the run folder if made for it

    def forget(self, accelerator: Accelerator) -> None:
        """A run refused before it started leaves nothing behind: remove what listing it created."""

        def remove() -> None:
            for path in self.created:
                if path.is_file():
                    path.unlink(missing_ok=True)
                elif path.is_dir() and not any(path.iterdir()):
                    path.rmdir()

        on_main(accelerator, remove)


def list_pool(accelerator: Accelerator, cfg: RunConfig, run_folder: Path) -> PoolListing:
    """The run's listing of a folder/list/tar pool, made once by the main process (or reused)."""
    source = cfg.data.unlabeled
    if source.source not in LISTED_SOURCES:
        return PoolListing()
    where_field = "data.unlabeled"

    def decide() -> tuple[str, list[str], list[str]]:
        saved = saved_listing(cfg, run_folder)
        fresh = build_index(source.source, source.root, where_field)  # also finds a missing or empty pool, first
        if saved is None:
            created = [] if run_folder.exists() else [run_folder]
            try:
                run_folder.mkdir(parents=True, exist_ok=True)
                fresh.save(run_folder / INDEX_FILE)
            except OSError as e:
                raise ConfigError(f"output_dir: cannot create or write {run_folder} ({e.strerror or e}); {write_hint(e)}") from None
            return str(run_folder / INDEX_FILE), [], [str(run_folder / INDEX_FILE), *map(str, created)]
        kept = PathIndex.load(saved)
        if (kept.kind, kept.root) != (fresh.kind, fresh.root):
            raise ConfigError(
                f"output_dir: {saved.parent} holds a run over another pool ({kept.kind} {kept.root}); pass a new "
                "--output_dir for a new run"
            )
        notes = []
        if kept.digest() != fresh.digest():
            added, removed = kept.difference(fresh)
            notes.append(
                f"note: data.unlabeled: the pool changed on disk since this run listed it ({added} added, {removed} "
                f"removed); the run keeps its own listing of {len(kept)} files ({saved}): removed files are skipped "
                "as unreadable, added ones are not scored. Start a new run (a new --output_dir) to use the new pool"
            )
        return str(saved), notes, []

    where, notes, created = decide_on_main(accelerator, decide)
    try:
        return PoolListing(PathIndex.load(Path(where)), notes, [Path(p) for p in created])
    except FileNotFoundError:
        raise ConfigError(
            f"output_dir: {where} was written by the main process but this process cannot see it; with several "
            "nodes the run folder must be on a shared file system"
        ) from None
