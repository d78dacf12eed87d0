"""One plabel run, top to bottom: round 0 (the supervised baseline), then score -> select ->
train per round, resumable at any step.

    accelerator  <- trainer/setup.py        (devices, precision, trackers)
    splits       <- data/splits.py          (labeled / pool / test, seeded and stratified)
    model, input <- models/prepare.py       (built-in, timm or torchvision; weights; size, channels)
    run folder   <- trainer/run_dir.py      (new, resume from a checkpoint, or already complete)
    each round   <- trainer/rounds.py       (select: round_selection.py; train: loop.py; test)
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from accelerate.tracking import GeneralTracker

from plabel.config import ConfigError, RunConfig
from plabel.data.splits import make_splits
from plabel.distributed.processes import print_once
from plabel.models.prepare import prepare_model
from plabel.trainer.faults import install_preemption_handlers
from plabel.trainer.outputs import closing_lines
from plabel.trainer.pool_listing import list_pool
from plabel.trainer.rounds import RoundRunner
from plabel.trainer.run_dir import open_run_dir, run_path
from plabel.trainer.run_files import read_json
from plabel.trainer.setup import (
    build_accelerator,
    check_batch_split,
    check_num_classes,
    check_readable,
    data_notes,
    launcher_precision_note,
)


def run(cfg: RunConfig, config_name: str = "run", extra_trackers: Sequence[GeneralTracker] = ()) -> dict[str, Any]:
    """Run (or resume) every round; return the summary (also written to summary.json).

    Raises ConfigError for user errors (before any training) and Preempted after writing a
    checkpoint when a preemption signal arrived.
    """
    started, cpu_started = time.time(), time.process_time()
    install_preemption_handlers()
    accelerator, wandb_mode = build_accelerator(cfg, extra_trackers)
    check_batch_split(cfg, accelerator.num_processes)
    # Data problems are user errors: find them on every process before a run folder exists (a
    # listed pool's index, written first, is the one file that may precede it).
    listing = list_pool(accelerator, cfg, run_path(cfg, config_name))
    try:
        splits = make_splits(cfg.data, cfg.seed, listing.index)
        num_classes = check_num_classes(cfg, splits)
        prepared = prepare_model(accelerator, cfg, splits.train_source, num_classes)
        check_readable(accelerator, splits)
    except ConfigError:
        listing.forget(accelerator)
        raise
    resolved = cfg.to_dict()
    # The precision in effect, not null: the config's, or what the launcher said. A resumed run
    # that would train at another precision is then a config difference like any other.
    resolved["train"]["mixed_precision"] = accelerator.mixed_precision
    model_info = {
        **prepared.run_info(cfg.model.name, splits.train_source.channels, splits.class_names),
        "mixed_precision": accelerator.mixed_precision,
    }
    run_dir = open_run_dir(accelerator, cfg, config_name, resolved, model_info)  # locked: one writer per folder
    try:
        resolved["output_dir"] = str(run_dir.path)
        precision_note = launcher_precision_note(cfg, accelerator)
        notes = [note if note.startswith("note:") else f"note: {note}"
                 for note in run_dir.notes + listing.notes + data_notes(cfg, splits) + ([precision_note] if precision_note else [])]
        if run_dir.status == "complete":
            for note in notes:
                print_once(accelerator, note)
            summary = read_json(
                run_dir.path / "summary.json",
                "remove it and rerun the same command: the run resumes from its newest checkpoint and writes it again",
            )
            print_once(accelerator, f"{run_dir.path} holds a complete run of this configuration; nothing to do.")
            print_once(accelerator, closing_lines(summary))
            accelerator.end_training()
            return summary

        runner = RoundRunner(cfg, accelerator, wandb_mode, splits, prepared, resolved, run_dir, notes)
        for round_index in range(runner.state.next_round, cfg.pseudo.rounds + 1):
            if not runner.state.mid_round:
                runner.start_round(round_index)
            runner.train_and_evaluate(round_index)
        return runner.finish(started, cpu_started)
    finally:
        run_dir.release()
