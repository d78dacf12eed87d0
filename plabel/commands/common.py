"""What every command shares: a user error is one line on stderr (from the job's first process
only) and exit status 2, before anything heavy is imported or any file is written."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from plabel.config import ConfigError, RunConfig, config_from_dict
from plabel.distributed.processes import launcher_main

EXIT_USER_ERROR = 2


def run_command(prog: str, body: Callable[[], Optional[int]]) -> int:
    """Run a command's ``body``; a :class:`ConfigError` becomes ``<prog>: error: <line>``, exit 2."""
    try:
        return body() or 0
    except ConfigError as err:
        if launcher_main():
            print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


def run_splits(run_dir: Path, cfg: RunConfig) -> Any:
    """The run's own split, over the pool it listed (``pool_index.npz``) when it listed one."""
    from plabel.data.pool_index import INDEX_FILE, PathIndex
    from plabel.data.splits import make_splits

    saved = run_dir / INDEX_FILE
    return make_splits(cfg.data, cfg.seed, PathIndex.load(saved) if saved.is_file() else None)


def load_run(run: str) -> tuple[Path, RunConfig, dict[str, Any]]:
    """A run folder's path, its resolved config and its ``run_info.json``."""
    run_dir = Path(run)
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "run_info.json").is_file():
        raise ConfigError(f"--run: {run_dir} is not a plabel run folder (no config.yaml / run_info.json)")
    cfg = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    info = json.loads((run_dir / "run_info.json").read_text())
    return run_dir, cfg, info
