"""The run folder: where a run writes, and whether it starts, resumes, restarts or is already done.

Rerunning the same command must never overwrite results: a folder written by another
configuration is refused with the fields that differ, a complete run is reported as such, and
an interrupted one resumes from its newest valid checkpoint (chosen by the checkpointer).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from accelerate import Accelerator

from plabel.config import ConfigError, RunConfig, diff_configs, flatten
from plabel.config.defaults_history import changed_defaults_hint, with_absent_keys
from plabel.data.pool_index import INDEX_FILE
from plabel.distributed.processes import decide_on_main
from plabel.trainer.checkpointer import STATE_FILE, newest_valid_checkpoint, verify_checkpoint
from plabel.trainer.run_files import read_config, read_json, restart_hint, write_atomic, write_hint

# Fields that may change between a run and its resumption without changing its results.
RESUME_IGNORES = (
    "output_dir", "resume", "collective_timeout_s", "data.num_workers", "data.persistent_workers", "data.pin_memory",
    "train.cpu_threads", "verbose",
)
RESUME_IGNORE_PREFIXES = ("tracking.", "checkpoint.")
RUN_INFO = "run_info.json"
LOCK_FILE = ".plabel.lock"


class RunLock:
    """One writer per run folder: an exclusive ``flock`` on ``<run>/.plabel.lock``.

    Taken by the job's main process before it decides anything about the folder and held for the
    life of the run; the kernel releases it when the process ends however it ends, so a lock file
    left by a dead run is simply taken over. The file says who holds it, for the refusal message.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self.fd: Optional[int] = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            self.fd = None
            raise ConfigError(
                f"output_dir: {folder} is in use by a running plabel job ({holder}); wait for it to end or stop it, "
                "or choose another --output_dir"
            ) from None
        os.ftruncate(self.fd, 0)
        started = dt.datetime.now().isoformat(timespec="seconds")
        os.write(self.fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode())

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __getstate__(self) -> dict[str, Any]:  # other processes get the decision, not the lock
        return {"path": self.path, "fd": None}


@dataclass
class RunDir:
    path: Path
    status: str  # new | resume | restart | complete
    checkpoint: Optional[Path] = None
    wandb_run_id: str = ""
    notes: list[str] = field(default_factory=list)
    lock: Optional[RunLock] = None  # held by the main process for the life of the run

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Fields that change results and differ. A run folder from before 0.2 recorded no effective
    precision (null): it cannot be compared, so it is not held against the run."""
    ignore = RESUME_IGNORES + (("train.mixed_precision",) if flatten(saved).get("train.mixed_precision") is None else ())
    return [k for k in diff_configs(with_absent_keys(saved), current, ignore) if not k.startswith(RESUME_IGNORE_PREFIXES)]


def _differences_message(where: str, saved: dict[str, Any], current: dict[str, Any], names: list[str]) -> str:
    fs, fc = flatten(with_absent_keys(saved)), flatten(current)
    shown = "; ".join(f"{n}: {fs.get(n)!r} there, {fc.get(n)!r} now" for n in names[:6])
    more = f" (+{len(names) - 6} more)" if len(names) > 6 else ""
    return f"{where} was written by a different configuration ({shown}{more}){changed_defaults_hint(names, with_absent_keys(saved))}"


def _run_id(path: Path) -> str:
    """The W&B run id recorded in the folder (a new one if none was)."""
    info = read_json(path / RUN_INFO, restart_hint(path)) if (path / RUN_INFO).is_file() else {}
    return info.get("wandb_run_id", secrets.token_hex(4))


def _from_checkpoint(cfg: RunConfig, path: Path, resolved: dict[str, Any]) -> RunDir:
    """``resume: <checkpoint folder>``: start from that checkpoint, into its own run or a new folder."""
    ckpt = Path(cfg.resume)
    problem = verify_checkpoint(ckpt)
    if problem is not None:
        raise ConfigError(f"resume: {problem}; point it at a complete <run>/checkpoints/ckpt-NNNNNN folder")
    saved = json.loads((ckpt / STATE_FILE).read_text())["config"]
    differences = config_differences(saved, resolved)
    if differences:
        raise ConfigError("resume: " + _differences_message(str(ckpt), saved, resolved, differences))
    own_run = ckpt.resolve().parent.parent == path.resolve()
    if _holds_files(path) and not own_run:
        raise ConfigError(f"output_dir: {path} already holds files; resume into the checkpoint's own run folder or a new one")
    return RunDir(path, "resume", ckpt, _run_id(ckpt.parent.parent))


def _holds_files(path: Path) -> bool:
    # The pool's listing is written before the run decides anything (trainer/pool_listing.py).
    return path.is_dir() and any(p.name not in (LOCK_FILE, INDEX_FILE) for p in path.iterdir())


def run_path(cfg: RunConfig, config_name: str) -> Path:
    """The run folder: output_dir, or runs/<config name>-seed<seed>."""
    return Path(cfg.output_dir) if cfg.output_dir else Path("runs") / f"{config_name}-seed{cfg.seed}"


def decide_run_dir(cfg: RunConfig, config_name: str, resolved: dict[str, Any]) -> RunDir:
    """Main process only: lock the run folder, then decide whether the run starts, resumes or is done.

    Deciding under the lock means a second launch cannot decide "new" while the first is writing.
    """
    path = run_path(cfg, config_name)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output_dir: {path} is a file; choose a folder")
    created_dir = not path.exists()
    created_lock = not (path / LOCK_FILE).exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = RunLock(path)
    except OSError as e:
        raise ConfigError(f"output_dir: cannot create or write {path} ({e.strerror or e}); {write_hint(e)}") from None
    try:
        decision = _decide(cfg, path, resolved)
    except ConfigError:  # a refused run leaves nothing behind (unlinked while still locked: no race)
        if created_lock:
            (path / LOCK_FILE).unlink(missing_ok=True)
        lock.release()
        if created_dir:
            path.rmdir()
        raise
    decision.lock = lock
    return decision


def _decide(cfg: RunConfig, path: Path, resolved: dict[str, Any]) -> RunDir:
    if cfg.resume not in ("auto", "never"):
        return _from_checkpoint(cfg, path, resolved)
    if not _holds_files(path):
        return RunDir(path, "new", None, secrets.token_hex(4))
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"output_dir: {path} already holds files that are not a plabel run; choose a new --output_dir")
    if cfg.resume == "never":
        raise ConfigError(f"output_dir: {path} already holds a run and resume is 'never'; choose a new --output_dir")
    saved = read_config(path / "config.yaml", restart_hint(path))
    differences = config_differences(saved, resolved)
    if differences:
        raise ConfigError(
            "output_dir: " + _differences_message(str(path), saved, resolved, differences)
            + "; pass a new --output_dir for a new run"
        )
    if (path / "summary.json").is_file():
        return RunDir(path, "complete", None, _run_id(path))
    notes: list[str] = []
    ckpt = newest_valid_checkpoint(path, notes)
    return RunDir(path, "resume" if ckpt else "restart", ckpt, _run_id(path), notes)


def _prepare(decision: RunDir, resolved: dict[str, Any], num_processes: int, model_info: dict[str, Any]) -> None:
    """Main process: create the folder and (re)write what describes the run."""
    path = decision.path
    path.mkdir(parents=True, exist_ok=True)
    if decision.status in ("new", "restart"):
        (path / "metrics.jsonl").write_text("")
    if decision.status in ("new", "restart") or not (path / RUN_INFO).is_file():
        info = {"wandb_run_id": decision.wandb_run_id, "num_processes": num_processes, **model_info}
        write_atomic(path / RUN_INFO, json.dumps(info) + "\n")
    write_atomic(path / "config.yaml", yaml.safe_dump({**resolved, "output_dir": str(path)}, sort_keys=False))


def open_run_dir(
    accelerator: Accelerator, cfg: RunConfig, config_name: str, resolved: dict[str, Any], model_info: dict[str, Any]
) -> RunDir:
    """Decide on the main process, create the folder there, and tell every process.

    ``run_info.json`` records the W&B run id (so a resumed job continues the same W&B run) and
    the model's input/output shape (so ``plabel score`` can rebuild it without the data).
    """

    def decide() -> RunDir:
        decision = decide_run_dir(cfg, config_name, resolved)
        _prepare(decision, resolved, accelerator.num_processes, model_info)
        return decision

    return decide_on_main(accelerator, decide)
