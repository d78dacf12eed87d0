"""Starting the trackers a run logs to: which W&B mode (credentials or not), Accelerate's
trackers with a fallback to offline, and what a resumed run sends again (``Replay``).

The loggers themselves are in ``plabel.trainer.tracking``.
"""

from __future__ import annotations

import json
import netrc
import os
from pathlib import Path
from typing import Any, Optional

from accelerate import Accelerator

from plabel.config import TrackingConfig
from plabel.distributed.processes import on_main, print_once
from plabel.trainer.tracking import QuietLogger, Replay, RunLogger


def has_wandb_credentials() -> bool:
    """True when an API key is in the environment or in ~/.netrc (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def resolve_wandb_mode(cfg: TrackingConfig) -> str:
    """online / offline / disabled. In auto mode a WANDB_MODE set in the environment (e.g. by a
    cluster profile) decides; otherwise credentials do. An explicit config mode always wins."""
    if cfg.mode != "auto":
        return cfg.mode
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode in ("online", "offline", "disabled"):
        return env_mode
    return "online" if has_wandb_credentials() else "offline"


def _drop_wandb(accelerator: Accelerator) -> None:
    """Take W&B out of the trackers the Accelerator will start (it was asked for, then turned off)."""
    from accelerate.tracking import GeneralTracker

    # LoggerType.WANDB's str() is "wandb" (its .name is "WANDB"); a tracker object has .name.
    accelerator.log_with = [
        t for t in accelerator.log_with if (t.name if isinstance(t, GeneralTracker) else str(t)) != "wandb"
    ]


def _reset_wandb() -> None:
    """Forget a failed W&B start (its service and its claim on the run id), so the next start is clean."""
    import wandb

    for step in (lambda: wandb.run is not None and wandb.run.finish(exit_code=1, quiet=True), wandb.teardown):
        try:
            step()
        except Exception:  # already half gone: what is left is torn down by the next step
            pass


def truncate_metrics(out_dir: Path, offset: int) -> Replay:
    """Cut ``metrics.jsonl`` back to ``offset`` bytes (what a checkpoint had logged); the entries
    cut are what the replay of the steps after it will log again."""
    with open(out_dir / "metrics.jsonl", "r+") as f:
        f.seek(offset)
        cut = [json.loads(line)["step"] for line in f if line.strip()]
        f.truncate(offset)
    return Replay(len(cut), max(cut, default=-1))


def start_trackers(
    accelerator: Accelerator,
    cfg: TrackingConfig,
    wandb_mode: str,
    run_name: str,
    out_dir: Path,
    config: dict[str, Any],
    wandb_run_id: Optional[str] = None,
    replay: Optional[Replay] = None,
) -> RunLogger:
    """Start the trackers given to the Accelerator (``log_with``) and return the run logger.

    ``wandb_run_id`` is fixed when the run folder is created, so a resumed or requeued job
    continues the same W&B run (``resume="allow"``) instead of starting a new one.
    """
    init_kwargs: dict[str, Any] = {}
    if wandb_mode != "disabled":
        wandb_dir = Path(cfg.wandb_dir) if cfg.wandb_dir else out_dir
        try:
            on_main(accelerator, lambda: wandb_dir.mkdir(parents=True, exist_ok=True))
        except OSError as e:  # a run never dies for tracking
            print_once(accelerator, f"warning: W&B is off for this run: cannot create tracking.wandb_dir {wandb_dir} "
                       f"({e.strerror or e}); metrics.jsonl and summary.json are complete")
            wandb_mode = "disabled"
    if wandb_mode != "disabled":
        # W&B stages table images and artifact files in a data folder of the user's home by
        # default: kept under the run folder instead, copying the folder keeps all that a later
        # `wandb sync` uploads (unless the user chose a data folder).
        if "WANDB_DATA_DIR" not in os.environ:
            os.environ["WANDB_DATA_DIR"] = str((wandb_dir / "wandb" / "data").resolve())
        import wandb

        init_kwargs["wandb"] = {
            "entity": cfg.entity,
            "group": cfg.group,
            "job_type": cfg.job_type,
            "name": cfg.run_name or run_name,
            "tags": cfg.tags or None,
            "notes": cfg.notes,
            "dir": str(wandb_dir),
            "mode": wandb_mode,
            "id": wandb_run_id,
            "resume": "allow" if wandb_run_id else None,
            # Bounded wait: a node without internet must not hang at start.
            "settings": wandb.Settings(init_timeout=float(os.environ.get("WANDB_INIT_TIMEOUT", 60)), silent=True),
        }
    # A run never dies for tracking: an online start that fails for any reason (no network, a
    # wrong key, a server that answers badly) goes offline; an offline start that fails too
    # leaves W&B off, with metrics.jsonl and summary.json as complete as ever.
    fallbacks = {"online": "offline", "offline": "disabled"}
    if wandb_mode == "disabled":
        _drop_wandb(accelerator)
    while True:
        try:
            accelerator.init_trackers(cfg.project, config=config, init_kwargs=init_kwargs)
            break
        except Exception as err:
            if wandb_mode == "disabled":  # not W&B's failure: a tracker given by the caller
                raise
            following = fallbacks[wandb_mode]
            reason = (str(err).strip().splitlines() or [""])[0][:300]
            then = "continuing offline (upload later with wandb sync)" if following == "offline" else (
                "W&B is off for this run; metrics.jsonl and summary.json are complete")
            print_once(accelerator, f"warning: W&B {wandb_mode} start failed ({type(err).__name__}: {reason}); {then}")
            accelerator.trackers = []
            _reset_wandb()
            wandb_mode = following
            if following == "offline":
                init_kwargs["wandb"]["mode"] = "offline"
            else:  # the other trackers (a test's recorder, ...) start without W&B
                _drop_wandb(accelerator)
    logger = on_main(accelerator, lambda: RunLogger(accelerator, out_dir, wandb_mode, replay))
    if logger is None:
        return QuietLogger(accelerator, out_dir, wandb_mode)
    run = logger._wandb_run()
    if run is not None and hasattr(run, "define_metric"):
        # Round-level numbers and media plot against rounds; step metrics against optimizer steps.
        run.define_metric("round/index")
        run.define_metric("round/*", step_metric="round/index")
        run.define_metric("select/*", step_metric="round/index")
        if wandb_mode == "online" and getattr(run, "url", None):
            print_once(accelerator, f"W&B run: {run.url}")
    return logger
