"""Atomic, verifiable checkpoints: Accelerate's save_state plus plabel's own run state. The
:class:`Checkpointer` decides when to write one, writes it, and restores it;
:func:`newest_valid_checkpoint` says which one a resumed run starts from.

Layout: ``<run>/checkpoints/ckpt-<seq>/`` holds what ``accelerator.save_state`` writes (model
as safetensors, optimizer, RNG states), ``plabel_state.json`` (position, finished rounds,
metrics-file offset, ...), ``selection.safetensors`` (current pseudo-labels) and
``manifest.json`` (size and sha256 of every file). A checkpoint is written under a hidden
``.tmp-`` name and published by one ``rename`` once every process has finished writing, so a
kill at any moment leaves either the previous checkpoint or the new one, never half of one.
Checkpoint names carry our own sequence number, never Accelerate's automatic counter (which
restarts at 0 after ``load_state`` and would overwrite or prune the wrong checkpoint).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from plabel.config import CheckpointConfig
from plabel.distributed.processes import on_main, share_from_main
from plabel.method.selection import Selection
from plabel.trainer.faults import fault_point
from plabel.trainer.loop import RoundPosition
from plabel.trainer.tracking import dump_json

CHECKPOINTS = "checkpoints"
STATE_FILE = "plabel_state.json"
SELECTION_FILE = "selection.safetensors"
MANIFEST_FILE = "manifest.json"
PREFIX = "ckpt-"
TMP_PREFIX = ".tmp-ckpt-"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_seq(path: Path) -> int:
    return int(path.name[len(PREFIX):])


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Published checkpoints, newest first."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=checkpoint_seq, reverse=True)


def remove_partial_checkpoints(run_dir: Path) -> list[str]:
    """Delete unpublished (``.tmp-``) checkpoint folders left by a kill; return their names."""
    root = run_dir / CHECKPOINTS
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(TMP_PREFIX):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
    return removed


def verify_checkpoint(path: Path) -> Optional[str]:
    """None when every file matches the manifest, else what is wrong (one line)."""
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        return f"{path}: no {MANIFEST_FILE}"
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        return f"{manifest_path}: unreadable"
    for name, expected in manifest["files"].items():
        file = path / name
        if not file.is_file():
            return f"{file}: missing"
        if file.stat().st_size != expected["size"] or _sha256(file) != expected["sha256"]:
            return f"{file}: contents do not match the manifest (corrupted)"
    return None


def _publish(tmp: Path, final: Path, keep: int) -> None:
    """Main process: manifest, fsync, atomic rename, prune to the newest ``keep``."""
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest = {"files": {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}}
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    for p in files + [tmp / MANIFEST_FILE]:
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    os.rename(tmp, final)
    _fsync_dir(final.parent)
    for old in list_checkpoints(final.parent.parent)[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def newest_valid_checkpoint(run_dir: Path, notes: list[str]) -> Optional[Path]:
    """Which checkpoint a run resumes from: the newest whose files match its manifest.

    Unpublished ones (a kill while writing) are deleted; corrupt ones are skipped. What was
    done goes into ``notes`` for the run to print.
    """
    for removed in remove_partial_checkpoints(run_dir):
        notes.append(f"removed unfinished checkpoint {removed} (the job died while writing it)")
    for ckpt in list_checkpoints(run_dir):
        problem = verify_checkpoint(ckpt)
        if problem is None:
            return ckpt
        notes.append(f"skipping corrupt checkpoint: {problem}")
    return None


@dataclass
class RunState:
    """plabel's part of a checkpoint (JSON). Accelerate holds the model and optimizer."""

    next_round: int = 0
    mid_round: bool = False  # True: position is inside round next_round, its selection made
    position: dict[str, int] = field(default_factory=lambda: dataclasses.asdict(RoundPosition(0)))
    rows: list[dict[str, Any]] = field(default_factory=list)
    pending_metrics: dict[str, float] = field(default_factory=dict)  # selection metrics, logged at round end
    seq: int = 0  # sequence number of the last checkpoint written
    metrics_offset: int = 0  # bytes of metrics.jsonl that belong to this state
    unreadable_pool: list[int] = field(default_factory=list)  # pool positions whose image could not be decoded
    num_processes: int = 1
    config: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)  # the best round by validation so far (validation.Best)
    choices: dict[str, Any] = field(default_factory=dict)  # what the run chose from its data (data.augment auto)


class Checkpointer:
    """The one owner of ``<run>/checkpoints/``: when to write (:meth:`due`), how (:meth:`save`),
    and what to restore (:meth:`restore`; which one: :func:`newest_valid_checkpoint`)."""

    def __init__(self, accelerator: Accelerator, run_dir: Path, cfg: CheckpointConfig, epochs_per_round: int) -> None:
        self.accelerator = accelerator
        self.run_dir = run_dir
        self.cfg = cfg
        self.epochs_per_round = epochs_per_round
        # Never reuse a sequence number, even one of a checkpoint newer than the one resumed.
        existing = on_main(accelerator, lambda: [checkpoint_seq(p) for p in list_checkpoints(run_dir)]) or []
        self.highest_seq: int = share_from_main(accelerator, max([0, *existing]))

    def due(self, global_step: int, epoch: int, epoch_ended: bool, stop: bool) -> Optional[str]:
        """The kind of checkpoint to write after this step, or None.

        Preemption always; every ``checkpoint.every_steps`` steps; at each epoch end except the
        round's last (the round-end checkpoint, written after testing, follows).
        """
        round_over = epoch_ended and epoch == self.epochs_per_round
        every = self.cfg.every_steps
        if stop:
            return "preemption"
        if (every and global_step % every == 0) or (epoch_ended and not round_over):
            return "epoch end" if epoch_ended else "periodic"
        return None

    def save(self, state: RunState, selection: Optional[Selection]) -> Path:
        """Write the next checkpoint from every process; publish it atomically."""
        accelerator = self.accelerator
        state.seq = self.highest_seq = max(self.highest_seq, state.seq) + 1
        root = self.run_dir / CHECKPOINTS
        tmp, final = root / f"{TMP_PREFIX}{state.seq:06d}", root / f"{PREFIX}{state.seq:06d}"
        try:
            on_main(accelerator, lambda: _fresh_dir(tmp))
            accelerator.wait_for_everyone()
            accelerator.save_state(str(tmp))  # every process writes its part (its RNG state)
            chosen = selection if selection is not None else Selection.empty()
            tensors = {"indices": chosen.indices.contiguous(), "labels": chosen.labels.contiguous()}
            if chosen.targets is not None:  # soft pseudo-labels: what the resumed round trains on
                tensors["targets"] = chosen.targets.contiguous()
            on_main(accelerator, lambda: save_file(tensors, str(tmp / SELECTION_FILE)))
            on_main(accelerator, lambda: (tmp / STATE_FILE).write_text(dump_json(dataclasses.asdict(state), indent=1)))
            fault_point(f"checkpoint:{state.position['global_step']}", accelerator)
            accelerator.wait_for_everyone()
            on_main(accelerator, lambda: _publish(tmp, final, self.cfg.keep))
            accelerator.wait_for_everyone()
        except (OSError, RuntimeError) as e:
            # torch.save reports a full disk as a RuntimeError ("unexpected pos ..."): tell it by the free space.
            full = isinstance(e, RuntimeError) and shutil.disk_usage(root).free < 64 * 2**20
            # Leave no half-written checkpoint behind (the newest complete one stays).
            on_main(accelerator, lambda: shutil.rmtree(tmp, ignore_errors=True))
            if full:
                import errno

                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp)) from None
            raise
        return final

    def newest(self) -> Optional[Path]:
        """The newest published checkpoint of this run, if any."""
        found = list_checkpoints(self.run_dir)
        return found[0] if found else None

    def restore(self, path: Path) -> tuple[dict[str, Any], Optional[Selection]]:
        """Load model/optimizer/RNG through Accelerate; return plabel's saved state and selection
        (None when the checkpoint was written before any selection)."""
        self.accelerator.load_state(str(path))  # Accelerate loads with weights_only=True
        state = json.loads((path / STATE_FILE).read_text())
        tensors = load_file(str(path / SELECTION_FILE))
        selection = None
        if tensors["indices"].numel() or state["next_round"] > 0:
            selection = Selection(tensors["indices"].long(), tensors["labels"].long(), tensors.get("targets"))
        return state, selection


def _fresh_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
