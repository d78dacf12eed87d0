"""Metrics: Weights & Biases through Accelerate's tracker API, plus files readable without W&B.

Only the main process writes (Accelerate instantiates trackers there alone; the others get a
logger that does nothing). Every logged dict
also lands in ``metrics.jsonl``; the final numbers in ``summary.json``. A compute node without
internet must never block or crash on W&B: ``auto`` goes offline unless credentials exist,
and a failing online start falls back to offline with one warning line.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Optional

import torch
from accelerate import Accelerator

from plabel.trainer.run_files import write_atomic


@dataclass(frozen=True)
class Replay:
    """What a resumed run will send again: its first ``entries`` logs, and anything up to ``last_step``."""

    entries: int = 0
    last_step: int = -1



def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_safe(value: Any) -> Any:
    """``value`` with every NaN/Inf (at any depth) replaced by None: what JSON can hold (no bare NaN)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return _jsonable(value)


def dump_json(value: Any, **kwargs: Any) -> str:
    """Strict JSON: non-finite numbers become null, and a bare NaN can never slip through."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)


class RunLogger:
    """Sends metric dicts to the trackers and appends them to ``metrics.jsonl`` (main process).

    Built by :func:`start_trackers`, which gives the other processes a :class:`QuietLogger`:
    the same calls, doing nothing, so callers never ask which process they are on.
    """

    def __init__(self, accelerator: Accelerator, out_dir: Path, wandb_mode: str, replay: Optional["Replay"] = None) -> None:
        self.accelerator = accelerator
        self.out_dir = out_dir
        self.wandb_mode = wandb_mode
        # A resumed run replays the steps between its checkpoint and the crash exactly, so its
        # first ``replay.entries`` log calls repeat entries the trackers already hold: they go
        # to metrics.jsonl (which was cut back to the checkpoint) but not again to W&B, whose
        # step numbers must keep increasing; likewise media up to ``replay.last_step``.
        replay = replay or Replay()
        self._already_tracked = replay.entries
        self._last_sent_step = replay.last_step
        self._file: Optional[IO[str]] = open(out_dir / "metrics.jsonl", "a")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Scalars only; ``step`` is the global optimizer step, increasing across rounds."""
        clean = {k: _jsonable(v) for k, v in metrics.items()}
        if self._already_tracked > 0:
            self._already_tracked -= 1
        else:
            self.accelerator.log(clean, step=step)
        assert self._file is not None
        self._file.write(dump_json({"step": step, **clean}) + "\n")
        self._file.flush()

    def offset(self) -> int:
        """Bytes written to metrics.jsonl so far, for checkpoints."""
        if self._file is None:
            return 0
        self._file.flush()
        return self._file.tell()

    def _wandb_run(self) -> Any:
        if self.wandb_mode == "disabled":
            return None
        try:
            return self.accelerator.get_tracker("wandb", unwrap=True)
        except (ValueError, KeyError):
            return None

    def log_rich(self, objects: dict[str, Any], step: int) -> None:
        """W&B-only objects (histograms, images, tables); skipped when W&B is off, and for a step W&B
        already has (a resumed run replaying what it sent before it stopped)."""
        run = self._wandb_run()
        if run is not None and hasattr(run, "log") and step > self._last_sent_step:
            run.log(objects, step=step)

    def log_selection_media(
        self,
        round_index: int,
        step: int,
        edges: torch.Tensor,
        histograms: dict[str, torch.Tensor],
        samples: list[tuple[torch.Tensor, int, float, int]],
        class_names: list[str],
    ) -> None:
        """Per-round W&B entropy histograms (whole-pool counts: selected vs rest, correct vs
        wrong pseudo-labels) and a bounded table of selected samples, with class names."""
        if self.wandb_mode == "disabled":
            return
        import wandb

        objects: dict[str, Any] = {
            f"select/entropy_hist_{name}": wandb.Histogram(np_histogram=(counts.numpy(), edges.numpy()))
            for name, counts in histograms.items()
            if float(counts.sum()) > 0
        }
        table = wandb.Table(columns=["image", "pseudo_label", "entropy", "true_label", "pseudo_class", "true_class"])
        for image, pseudo, ent, true in samples:
            picture = wandb.Image(image.permute(1, 2, 0).squeeze(-1).numpy())
            # Negative labels (junk, nobody knows) must not index the names from the end.
            true_class = class_names[true] if true >= 0 else {-2: "(junk)", -3: "(unlabeled)"}.get(true, "")
            table.add_data(picture, pseudo, ent, true if true >= 0 else None, class_names[pseudo], true_class)
        objects["select/samples"] = table
        objects["round/index"] = round_index  # these charts plot against rounds (define_metric below)
        self.log_rich(objects, step)

    def log_pseudo_labels(self, round_index: int, step: int, csv_path: Path, max_rows: int) -> None:
        """The round's pseudo-label CSV as a W&B table (saved under the run folder's media, so a
        copied folder syncs it), capped at ``max_rows`` rows."""
        if self.wandb_mode == "disabled" or max_rows <= 0:
            return
        import csv

        import wandb

        with open(csv_path, newline="") as f:
            reader = csv.reader(f)
            columns = next(reader)
            rows = [row for _, row in zip(range(max_rows), reader)]
        table = wandb.Table(columns=columns, data=rows)
        self.log_rich({f"select/pseudo_labels_round{round_index:02d}": table, "round/index": round_index}, step)

    def log_model(self, name: str, files: list[Path]) -> None:
        """Final weights (and what rebuilds them) as a W&B model artifact."""
        run = self._wandb_run()
        if run is None or not hasattr(run, "log_artifact"):
            return
        import wandb

        artifact = wandb.Artifact(name, type="model", metadata={"run_folder": str(self.out_dir)})
        for path in files:
            if path.is_file():
                artifact.add_file(str(path), name=path.name)
            elif path.is_dir():
                artifact.add_dir(str(path), name=path.name)
        run.log_artifact(artifact)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_atomic(self.out_dir / "summary.json", dump_json(summary, indent=2) + "\n")
        run = self._wandb_run()
        if run is not None and hasattr(run, "summary"):
            run.summary.update({k: _jsonable(v) for k, v in summary.items() if isinstance(v, (int, float, str))})

    def offline_run_dirs(self) -> list[Path]:
        """Every offline segment of this W&B run (a resumed run writes one per segment)."""
        run = self._wandb_run() if self.wandb_mode == "offline" else None
        run_dir = getattr(run, "dir", None)
        if not run_dir:
            return []
        segment = Path(run_dir).parent
        return sorted(segment.parent.glob(f"offline-run-*-{run.id}")) or [segment]

    def close(self, preempted: bool = False) -> None:
        """Finish the trackers (``preempted``: tell W&B the run will resume), then leave together.

        Closing a tracker never turns a run into a failure: on a preempted node W&B's own helper
        process may already be gone (SLURM signals every process of the job), and its
        ``ConnectionResetError`` becomes one warning line. Every process waits until the main
        process has closed its trackers before any of them exits, so a scheduler that ends the
        job when the first process exits (``srun --kill-on-bad-exit``) cannot cut W&B off.
        """
        if self._file is not None:
            self._file.close()
            self._file = None
        self._finish_trackers(preempted)
        self.accelerator.wait_for_everyone()
        self.accelerator.trackers = []  # finished above; end_training only ends the process group
        self.accelerator.end_training()

    def _finish_trackers(self, preempted: bool) -> None:
        from plabel.distributed.processes import EXIT_PREEMPTED

        for tracker in self.accelerator.trackers:
            try:
                run = getattr(tracker, "run", None)
                if preempted and run is not None and hasattr(run, "mark_preempting"):
                    run.mark_preempting()  # W&B shows the run as preempted, not finished
                    run.finish(exit_code=EXIT_PREEMPTED)
                else:
                    tracker.finish()
            except Exception as e:  # the tracker's connection is gone; the run's own files are complete
                print(f"warning: could not close the {tracker.name} tracker cleanly ({type(e).__name__}: {e}); "
                      f"its local files are in {self.out_dir}", flush=True)
                if tracker.name == "wandb":
                    _forget_wandb_helper()


def _forget_wandb_helper() -> None:
    """W&B's atexit hook would try the dead helper again and print a traceback as the process
    exits (its helper is gone when a launcher ends the process tree: accelerate's one-process
    launcher does on Ctrl-C and SIGTERM). Its teardown unregisters that hook before it fails."""
    try:
        import wandb

        wandb.teardown()
    except Exception:
        pass


class QuietLogger(RunLogger):
    """What the non-main processes log through: nothing, and no file (see :class:`RunLogger`)."""

    def __init__(self, accelerator: Accelerator, out_dir: Path, wandb_mode: str) -> None:
        self.accelerator, self.out_dir, self.wandb_mode, self._file = accelerator, out_dir, wandb_mode, None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def log_rich(self, objects: dict[str, Any], step: int) -> None:
        pass

    def log_selection_media(self, *args: Any, **kwargs: Any) -> None:
        pass

    def write_summary(self, summary: dict[str, Any]) -> None:
        pass

    def offline_run_dirs(self) -> list[Path]:
        return []

    def log_pseudo_labels(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log_model(self, *args: Any, **kwargs: Any) -> None:
        pass

    def _finish_trackers(self, preempted: bool) -> None:
        pass


