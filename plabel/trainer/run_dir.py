"""The run folder: where a run writes, and whether it starts, resumes, restarts or is already done.

Rerunning the same command must never overwrite results: a folder written by another
configuration is refused with the fields that differ, a complete run is reported as such, and
an interrupted one resumes from its newest valid checkpoint (chosen by the checkpointer).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from accelerate import Accelerator

from plabel.config import ConfigError, RunConfig, diff_configs, flatten
from plabel.distributed.processes import decide_on_main
from plabel.trainer.checkpointer import STATE_FILE, newest_valid_checkpoint, verify_checkpoint

# Fields that may change between a run and its resumption without changing its results.
RESUME_IGNORES = (
    "output_dir", "resume", "collective_timeout_s", "data.num_workers", "data.persistent_workers", "data.pin_memory",
    "train.cpu_threads",
)
RESUME_IGNORE_PREFIXES = ("tracking.", "checkpoint.")
RUN_INFO = "run_info.json"


@dataclass
class RunDir:
    path: Path
    status: str  # new | resume | restart | complete
    checkpoint: Optional[Path] = None
    wandb_run_id: str = ""
    notes: list[str] = field(default_factory=list)


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return [
        k for k in diff_configs(saved, current, RESUME_IGNORES) if not k.startswith(RESUME_IGNORE_PREFIXES)
    ]


def _differences_message(where: str, saved: dict[str, Any], current: dict[str, Any], names: list[str]) -> str:
    fs, fc = flatten(saved), flatten(current)
    shown = "; ".join(f"{n}: {fs.get(n)!r} there, {fc.get(n)!r} now" for n in names[:6])
    more = f" (+{len(names) - 6} more)" if len(names) > 6 else ""
    return f"{where} was written by a different configuration ({shown}{more})"


def _run_id(path: Path) -> str:
    """The W&B run id recorded in the folder (a new one if none was)."""
    info = json.loads((path / RUN_INFO).read_text()) if (path / RUN_INFO).is_file() else {}
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
    if path.exists() and any(path.iterdir()) and not own_run:
        raise ConfigError(f"output_dir: {path} already holds files; resume into the checkpoint's own run folder or a new one")
    return RunDir(path, "resume", ckpt, _run_id(ckpt.parent.parent))


def decide_run_dir(cfg: RunConfig, config_name: str, resolved: dict[str, Any]) -> RunDir:
    """Main process only: where this run writes and whether it starts, resumes or is done."""
    path = Path(cfg.output_dir) if cfg.output_dir else Path("runs") / f"{config_name}-seed{cfg.seed}"
    if cfg.resume not in ("auto", "never"):
        return _from_checkpoint(cfg, path, resolved)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return RunDir(path, "new", None, secrets.token_hex(4))
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"output_dir: {path} already holds files that are not a plabel run; choose a new --output_dir")
    if cfg.resume == "never":
        raise ConfigError(f"output_dir: {path} already holds a run and resume is 'never'; choose a new --output_dir")
    saved = yaml.safe_load((path / "config.yaml").read_text())
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
        (path / RUN_INFO).write_text(json.dumps(info) + "\n")
    (path / "config.yaml").write_text(yaml.safe_dump({**resolved, "output_dir": str(path)}, sort_keys=False))


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
