"""The ``tracking`` and ``checkpoint`` sections: what a run reports, and what it keeps to resume from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from plabel.config.fields import SECTION, option, require_non_negative, require_positive


@dataclass
class TrackingConfig:
    __pydantic_config__ = SECTION

    mode: Literal["auto", "online", "offline", "disabled"] = option(
        "auto", "W&B mode; auto = online when W&B credentials exist, else offline (sync later)"
    )
    project: str = option("plabel", "W&B project")
    entity: Optional[str] = option(None, "W&B entity (team or user); None = your default")
    group: Optional[str] = option(None, "W&B group (plabel sweep: the sweep's name)")
    job_type: Optional[str] = option(None, "W&B job type (plabel sweep: the row's name), so W&B groups a sweep's runs by row")
    run_name: Optional[str] = option(None, "W&B run name (default: the output folder's name)")
    tags: list[str] = option([], "W&B tags")
    notes: Optional[str] = option(None, "W&B notes")
    wandb_dir: Optional[str] = option(None, "folder for W&B files (default: the run's output folder)")
    log_every: int = option(10, "log step metrics every this many steps")
    table_rows: int = option(
        200_000, "rows of each round's pseudo-label CSV sent to W&B as a table (0: none; the CSV itself is always written)"
    )
    log_model: bool = option(True, "send the final weights (with config.yaml and run_info.json) to W&B as a model artifact")
    log_checkpoint: bool = option(False, "also send the last checkpoint to W&B in that artifact")

    def validate(self) -> None:
        require_positive("tracking.log_every", self.log_every)
        require_non_negative("tracking.table_rows", self.table_rows)


@dataclass
class CheckpointConfig:
    __pydantic_config__ = SECTION

    every_steps: int = option(0, "also checkpoint every this many optimizer steps (0 = only at epoch and round ends)")
    keep: int = option(2, "newest checkpoints kept; older ones are deleted once a newer one is complete")
    stop_check_every: int = option(
        10,
        "with several processes, look for a preemption signal every this many steps and at every epoch end (each look "
        "is an all-reduce the host waits for); one process looks at every step, for free",
    )

    score_flush_batches: int = option(
        32,
        "the pool's scoring pass copies results to the host and to the run folder every this many eval batches, and "
        "looks for a preemption signal then: a job stopped mid-pass stops within one flush, and its resumption scores "
        "only the rest",
    )

    def validate(self) -> None:
        require_positive("checkpoint.score_flush_batches", self.score_flush_batches)
        require_non_negative("checkpoint.every_steps", self.every_steps)
        require_positive("checkpoint.keep", self.keep)
        require_positive("checkpoint.stop_check_every", self.stop_check_every)
