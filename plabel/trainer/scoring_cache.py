"""A pool's scoring pass that survives preemption: each flush of results is also written to the
run folder, so a job stopped in the middle of scoring a 1M pool stops within a flush and the
resumed job scores only what is missing.

Files are ``<run>/scoring/round<RR>-step<S>/<start>-<stop>.safetensors``: the columns of pool
positions ``[start, stop)``, which are whole scoring batches (the pass is batch-aligned, see
``shard_range``), so a resumed job on any number of processes can take them as they are. The
folder name holds the round and the global step its scoring started at: results of another model
(an older checkpoint, another round) are never reused. The folder is removed once the round's
first checkpoint holds the selection.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

_PART = re.compile(r"(\d+)-(\d+)\.safetensors")


@dataclass(frozen=True)
class ScoreCache:
    """Where one scoring pass keeps its finished parts."""

    folder: Path

    @staticmethod
    def for_round(run_dir: Path, round_index: int, global_step: int) -> "ScoreCache":
        return ScoreCache(run_dir / "scoring" / f"round{round_index:02d}-step{global_step}")

    def done(self, shard: range) -> list[tuple[int, int, dict[str, torch.Tensor]]]:
        """Finished parts inside ``shard`` as (start, stop, columns), ascending; unreadable parts are ignored."""
        if not self.folder.is_dir():
            return []
        parts = []
        for path in self.folder.iterdir():
            match = _PART.fullmatch(path.name)
            if not match:
                continue
            start, stop = int(match.group(1)), int(match.group(2))
            if start < shard.start or stop > shard.stop:
                continue
            try:
                parts.append((start, stop, load_file(str(path))))
            except Exception:  # a part cut short by a crash: score those samples again
                continue
        return sorted(parts, key=lambda p: p[0])

    def write(self, start: int, stop: int, columns: dict[str, torch.Tensor]) -> None:
        """Positions ``[start, stop)``'s columns, published by an atomic rename."""
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"{start:010d}-{stop:010d}.safetensors"
        tmp = self.folder / f".tmp-{final.name}-{os.getpid()}"
        save_file({k: v.contiguous() for k, v in columns.items()}, str(tmp))
        os.replace(tmp, final)

    @staticmethod
    def clear(run_dir: Path) -> None:
        shutil.rmtree(run_dir / "scoring", ignore_errors=True)
