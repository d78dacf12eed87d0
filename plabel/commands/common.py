"""What every command shares: a user error is one line on stderr (from the job's first process
only) and exit status 2, before anything heavy is imported or any file is written."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from plabel.config import ConfigError, RunConfig, config_from_dict
from plabel.distributed.processes import EXIT_INTERRUPTED, launcher_main

EXIT_USER_ERROR = 2


def quiet_libraries() -> None:
    """Library log lines and progress bars never come before or after plabel's one-line errors:
    datasets and huggingface_hub stay silent (plabel turns their exceptions into its lines) (a user's environment can still say otherwise)."""
    for name, value in (("DATASETS_VERBOSITY", "critical"), ("HF_HUB_VERBOSITY", "critical"),
                        ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
        os.environ.setdefault(name, value)
    if "datasets" in sys.modules:  # already imported (a test, a notebook): tell it directly
        import datasets

        datasets.utils.logging.set_verbosity(datasets.utils.logging.CRITICAL)
        datasets.disable_progress_bars()


def run_command(prog: str, body: Callable[[], Optional[int]]) -> int:
    """Run a command's ``body``; a :class:`ConfigError` becomes ``<prog>: error: <line>``, exit 2,
    and so does a file that could not be written (a full disk, a read-only file system): one line
    naming the path and the reason. Ctrl-C is ``<prog>: interrupted``, exit 130."""
    quiet_libraries()
    try:
        return body() or 0
    except ConfigError as err:
        if launcher_main():
            print(f"{prog}: error: {err}", file=sys.stderr)
        else:
            # The launcher ends every process as soon as one exits non-zero: the others wait a
            # moment, so the first process's line is written before it is cut off.
            import time

            time.sleep(2.0)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # Ctrl-C outside training's own stop (plabel score, a listing, parsing)
        if launcher_main():
            print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `plabel sweep --status | head -1`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    except OSError as err:
        import errno

        from plabel.trainer.run_files import WRITE_ERRNOS, write_hint

        if errno.errorcode.get(err.errno or 0, "") not in WRITE_ERRNOS:
            raise
        where = err.filename or "a file"
        print(f"{prog}: error: cannot write {where} ({err.strerror}); {write_hint(err)}", file=sys.stderr)
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
    from plabel.trainer.run_files import read_config, read_json

    fix = "this run folder is damaged; rerun its train.py command to complete it, or use another --run"
    cfg = config_from_dict(read_config(run_dir / "config.yaml", fix))
    info = read_json(run_dir / "run_info.json", fix)
    return run_dir, cfg, info
