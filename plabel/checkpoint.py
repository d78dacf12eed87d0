"""Atomic, verifiable checkpoints: Accelerate's save_state plus plabel's own run state.

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

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from plabel.faults import fault_point

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


def save_checkpoint(
    accelerator: Accelerator,
    run_dir: Path,
    seq: int,
    state: dict[str, Any],
    selection_tensors: dict[str, torch.Tensor],
    keep: int,
) -> Path:
    """Write checkpoint ``seq`` from every process; publish it atomically; keep the newest ``keep``."""
    root = run_dir / CHECKPOINTS
    tmp = root / f"{TMP_PREFIX}{seq:06d}"
    final = root / f"{PREFIX}{seq:06d}"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # every process writes its part (its RNG state)
    if accelerator.is_main_process:
        save_file({k: v.contiguous() for k, v in selection_tensors.items()}, str(tmp / SELECTION_FILE))
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
    fault_point(f"checkpoint:{state['position']['global_step']}", accelerator)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {"files": {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
        for p in files + [tmp / MANIFEST_FILE]:
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        os.rename(tmp, final)
        _fsync_dir(root)
        for old in list_checkpoints(run_dir)[keep:]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore model/optimizer/RNG through Accelerate; return plabel's state and selection."""
    accelerator.load_state(str(path))  # Accelerate loads with weights_only=True
    state = json.loads((path / STATE_FILE).read_text())
    selection = load_file(str(path / SELECTION_FILE))
    return state, selection
