"""Reading and writing a run folder's own small files (config.yaml, run_info.json, summary.json).

Written whole or not at all (a temporary file renamed into place: a full disk leaves the old file,
never an empty one, and no temporary file behind). Read with one clear line when a file cannot be
parsed, naming it and what to do, instead of a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import yaml

from plabel.config import ConfigError


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` via ``.tmp-<name>`` and a rename; the temporary file never outlives a failure."""
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read(path: Path, parse: Callable[[str], Any], kind: str, fix: str) -> Any:
    try:
        text = path.read_text()
        value = parse(text) if text.strip() else None
    except (ValueError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid {kind} ({type(e).__name__}); {fix}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {'empty' if value is None else f'not a {kind} mapping'} (a full disk can leave it so); {fix}")
    return value


def read_config(path: Path, fix: str) -> dict[str, Any]:
    return _read(path, yaml.safe_load, "YAML", fix)


def read_json(path: Path, fix: str) -> dict[str, Any]:
    return _read(path, json.loads, "JSON", fix)


WRITE_ERRNOS = {"ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EACCES", "EPERM", "ENOTDIR", "EISDIR", "EEXIST", "ENAMETOOLONG"}


def write_hint(error: OSError) -> str:
    """What to do when a write failed, by why it failed."""
    import errno

    code = errno.errorcode.get(error.errno or 0, "")
    if code in ("ENOSPC", "EDQUOT", "EFBIG"):
        return "free some space (or choose an --output_dir on another disk), then rerun the same command: it resumes"
    if code == "EROFS":
        return "the file system is read-only; choose a writable --output_dir"
    if code in ("EACCES", "EPERM"):
        return "no permission to write there; choose another --output_dir or fix its permissions"
    if code in ("ENOTDIR", "EEXIST"):
        return "a part of that path is a file, not a folder; choose another --output_dir"
    return "choose another --output_dir"


def restart_hint(run_dir: Path) -> str:
    """What to do about a damaged file of a run folder."""
    return (f"remove {run_dir} to start afresh, or start from one of its checkpoints in a new folder "
            f"(--resume {run_dir}/checkpoints/ckpt-NNNNNN --output_dir <new folder>)")
