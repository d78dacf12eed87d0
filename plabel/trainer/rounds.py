"""One run's rounds: select (rounds > 0), train, test, checkpoint. Built by :func:`plabel.trainer.run.run`.

The run's state is (position, finished rounds, current selection) plus what Accelerate
checkpoints (model, optimizer, RNG), and everything random is seeded from the position, so a
restarted run replays the uninterrupted one exactly.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import yaml
from accelerate import Accelerator
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from plabel.config import RunConfig
from plabel.config.defaults_history import changed_defaults_note, unaugmented_data_note
from plabel.data.splits import IndexedImages, SoftTargets, Splits
from plabel.data.transforms import source_transform
from plabel.distributed.collectives import sum_across_processes
from plabel.distributed.processes import on_main, print_once
from plabel.method.selection import Selection
from plabel.models.prepare import PreparedModel, fresh_model
from plabel.models.state import save_weights
from plabel.trainer.augment_choice import AUTO, pipelines
from plabel.trainer.checkpointer import STATE_FILE, Checkpointer, RunState
from plabel.trainer.faults import Preempted, fault_point, stop_check_due, stop_requested
from plabel.trainer.loop import RoundPosition, TrainPlan, train_round
from plabel.trainer.outputs import (
    RoundResult,
    batch_note,
    closing_lines,
    compile_note,
    config_line,
    finite_or_none,
    log_selection_media,
    round_line,
    run_summary,
    unreadable_note,
    views_note,
    write_pseudo_labels,
)
from plabel.trainer.round0 import TEMPERATURE, refits, restart, run_trials, trials_due, unvalidated_line
from plabel.trainer.round_selection import LabeledViews, SelectionRequest, select_for_round
from plabel.trainer.run_dir import RunDir
from plabel.trainer.scoring_cache import ScoreCache
from plabel.trainer.scoring_pass import ScorePlan, accuracy, score_dataset
from plabel.trainer.setup import loader_options, make_optimizer, reset_optimizer, run_facts
from plabel.trainer.trackers import Replay, start_trackers, truncate_metrics
from plabel.trainer.validation import Best, after_round, best_line, validation_accuracy


class RoundRunner:
    """One run's rounds: data, model and optimizer on this process, the checkpointed state, and
    the three things a round does (select, train, evaluate)."""

    def __init__(
        self, cfg: RunConfig, accelerator: Accelerator, wandb_mode: str, splits: Splits, prepared: PreparedModel,
        resolved: dict[str, Any], run_dir: RunDir, notes: Sequence[str] = (),
    ) -> None:
        self.cfg, self.accelerator, self.splits, self.prepared = cfg, accelerator, splits, prepared
        self.num_classes = num_classes = prepared.num_classes
        self.out_dir = out_dir = run_dir.path
        self.state = RunState(num_processes=accelerator.num_processes, config=resolved)
        replay = self._cut_replayed_metrics(run_dir.checkpoint)
        print_once(accelerator, f"plabel run -> {out_dir}  ({accelerator.num_processes} process(es) on {accelerator.device.type}; {run_dir.status})")
        # The whole config is in config.yaml; the screen shows what this run changed (--verbose: all of it).
        print_once(accelerator, yaml.safe_dump(resolved, sort_keys=False).rstrip() if cfg.verbose else config_line(resolved, out_dir))
        for note in notes:
            print_once(accelerator, note)
        print_once(accelerator, batch_note(cfg, accelerator.num_processes))
        for note in (changed_defaults_note(resolved, cfg.given, held_out=len(splits.val_source_indices) > 0), unaugmented_data_note(resolved)):
            if note:
                print_once(accelerator, note)
        self.wandb_run_id = run_dir.wandb_run_id
        wandb_config = {**resolved, "run": run_facts(accelerator)}  # nested sections: W&B wants no dots in keys
        self.logger = start_trackers(
            accelerator, cfg.tracking, wandb_mode, out_dir.name, out_dir, wandb_config, run_dir.wandb_run_id, replay,
        )

        spec, train_source = prepared.spec, splits.train_source
        eval_tf = source_transform(train_source, spec, "none", train=False)
        test_tf = source_transform(splits.test_source, spec, "none", train=False)
        # auto: round 0 tries each candidate level (plabel.trainer.augment_choice); else the one level.
        self.levels = pipelines(cfg, train_source, spec, splits.labeled_source_indices, eval_tf)
        self.labeled, self.pseudo_tf = self.levels.labeled[self.levels.preferred], self.levels.pseudo_tf[self.levels.preferred]
        if cfg.data.augment == AUTO and not splits.val_source_indices.numel():
            print_once(accelerator, f"note: data.augment auto needs validation images to choose; without them it is {self.levels.preferred}")
        self.labeled_views = LabeledViews(IndexedImages(train_source, splits.labeled_source_indices, eval_tf), self.labeled)
        self.pool = IndexedImages(train_source, splits.pool_source_indices, eval_tf, skip_unreadable=True)
        self.test = IndexedImages(splits.test_source, splits.test_source_indices, test_tf)
        self.val = IndexedImages(train_source, splits.val_source_indices, eval_tf) if splits.val_source_indices.numel() else None
        # data.val_scope round0: once round 0 has chosen with them, the validation images are trained on too.
        self.refit = refits(cfg, self.val is not None)
        every = torch.sort(torch.cat([splits.labeled_source_indices, splits.val_source_indices])).values
        self.levels_all = pipelines(cfg, train_source, spec, every, eval_tf) if self.refit else self.levels
        self.clean_all = IndexedImages(train_source, every, eval_tf) if self.refit else self.labeled_views.clean
        self.best = Best()
        for note in prepared.notes:
            print_once(accelerator, note)
        if cfg.pseudo.score_views > 1:
            print_once(accelerator, views_note(cfg.pseudo.score_views, cfg.pseudo.score_noise))
        print_once(accelerator,
            f"data: {splits.train_source.description}; labeled {len(self.labeled)}"
            + (f" + {len(self.val)} validation{' (trained on after round 0 chooses)' if self.refit else ''}" if self.val else "")
            + f", pool {len(self.pool)}, test {len(self.test)}, {num_classes} classes"
        )

        self.options = loader_options(cfg, accelerator)
        if cfg.data.num_workers is None and self.options.num_workers:  # the auto default chose workers: say so
            print_once(accelerator, f"loading: {self.options.num_workers} DataLoader workers per process, persistent "
                       "(data.num_workers unset: auto on a GPU; --data.num_workers 0 loads in the training process)")
        self.plan = TrainPlan(cfg.train, cfg.pseudo, cfg.seed, cfg.tracking.log_every, self.options)
        round0 = dataclasses.replace(cfg.train, epochs=cfg.train.epochs_of_round0())
        self.plan_round0 = dataclasses.replace(self.plan, train=round0)
        self.score_plan = ScorePlan.from_config(cfg, self.options)
        model = prepared.model  # identical initial weights on every process (seeded in prepare_model)
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model, self.optimizer = accelerator.prepare(model, make_optimizer(cfg, model))
        if cfg.train.compile:  # compiled around DDP; unwrap_model keeps the compiled wrapper for scoring
            self.model = torch.compile(self.model, backend=cfg.train.compile_backend)
        self.teacher: Optional[AveragedModel] = None
        if cfg.pseudo.teacher == "ema":  # scores the pool; saved in every checkpoint, so resuming replays it
            unwrapped = accelerator.unwrap_model(self.model)
            self.teacher = AveragedModel(unwrapped, multi_avg_fn=get_ema_multi_avg_fn(cfg.pseudo.ema_decay), use_buffers=True)
            accelerator.register_for_checkpointing(self.teacher)

        self.checkpointer = Checkpointer(accelerator, out_dir, cfg.checkpoint, cfg.train.epochs)
        self.selection: Optional[Selection] = None
        if run_dir.checkpoint is not None:
            self._restore(run_dir.checkpoint, resolved)

    def _cut_replayed_metrics(self, checkpoint: Optional[Path]) -> Replay:
        """Resuming in the checkpoint's own run: cut metrics.jsonl back to what the checkpoint had
        logged; return what the replay will log again (the trackers already have it)."""
        if checkpoint is None or checkpoint.resolve().parent.parent != self.out_dir.resolve():
            return Replay()
        offset = json.loads((checkpoint / STATE_FILE).read_text())["metrics_offset"]
        return on_main(self.accelerator, lambda: truncate_metrics(self.out_dir, offset)) or Replay()

    def _restore(self, checkpoint: Path, resolved: dict[str, Any]) -> None:
        accelerator = self.accelerator
        loaded, self.selection = self.checkpointer.restore(checkpoint)
        self.state = RunState(**{**loaded, "num_processes": accelerator.num_processes, "config": resolved})
        self.best = Best.from_state(self.state.best)
        if "data.augment" in self.state.choices or TEMPERATURE in self.state.choices:  # chosen at round 0: kept
            self._use_level(self.state.choices.get("data.augment", self.levels.preferred), TEMPERATURE in self.state.choices)
        if loaded["num_processes"] != accelerator.num_processes:
            print_once(accelerator,
                f"note: checkpoint written by {loaded['num_processes']} processes, resuming with "
                f"{accelerator.num_processes}; batches are global, so the run continues with the same draws"
            )
        print_once(accelerator, f"resumed from {checkpoint} at round {self.state.next_round}, global step {self.state.position['global_step']}")

    def save(self, stage: str) -> None:
        self.state.metrics_offset = self.logger.offset()
        path = self.checkpointer.save(self.state, self.selection)
        if self.cfg.verbose or stage not in ("epoch end", "periodic"):  # one a round, and a preemption's, by default
            print_once(self.accelerator, f"checkpoint ({stage}) -> {path}")
        # Every checkpoint after a pool's scoring pass holds that round's selection: its parts are done with.
        on_main(self.accelerator, lambda: ScoreCache.clear(self.out_dir))

    def start_round(self, round_index: int) -> None:
        """Select this round's pseudo-labels (rounds > 0) and enter the round; its metrics wait in
        the state until the round ends."""
        cfg, accelerator = self.cfg, self.accelerator
        pending: dict[str, float] = {"round/index": round_index}
        if round_index > 0:
            request = SelectionRequest.for_round(cfg, round_index, self.num_classes, self.selection)
            # A stop during the pool's pass keeps its finished parts (the round-end checkpoint holds
            # the model that scored them); the resumed job scores only the rest.
            cache = ScoreCache.for_round(self.out_dir, round_index, self.state.position["global_step"])
            plan = dataclasses.replace(
                self.score_plan, label=f"round {round_index}: scoring the pool", cache=cache, stoppable=True,
                views=cfg.pseudo.score_views, noise=cfg.pseudo.score_noise, view_seed=cfg.seed * 1_000 + round_index,
                probabilities=self.num_classes if cfg.pseudo.soft_labels else 0,
            )
            scorer = self.teacher.module if self.teacher is not None else self.model
            try:
                picked = select_for_round(
                    accelerator, scorer, self.pool, self.splits.pool_labels, request, plan, self.labeled_views, self.selection,
                    None if self.refit else self.val, self.state.choices.get(TEMPERATURE),
                )
            except Preempted:
                self.logger.close(preempted=True)
                raise
            self.selection = picked.selection
            pending.update(picked.metrics)
            if pending["select/nonfinite_scores"] > 0:
                print_once(accelerator,
                    f"warning: round {round_index}: {int(pending['select/nonfinite_scores'])} pool samples had "
                    "NaN/Inf logits and were not selected"
                )
            csv_path = self.out_dir / f"pseudo_labels_round{round_index:02d}.csv"
            on_main(accelerator, lambda: write_pseudo_labels(csv_path, self.splits, picked.selection, picked.selected_entropy))
            # At the round's first step: the previous round's numbers are logged at its last one.
            first_step = self.state.position["global_step"] + 1
            log_selection_media(self.logger, round_index, first_step, self.splits, picked)
            self.logger.log_pseudo_labels(round_index, first_step, csv_path, cfg.tracking.table_rows)
            known = set(self.state.unreadable_pool)
            self.state.unreadable_pool = sorted(known | set(picked.unreadable.tolist()))
            note = unreadable_note(self.splits, sorted(set(picked.unreadable.tolist()) - known), round_index)
            if note:
                print_once(accelerator, note)
            if cfg.pseudo.reinit_model:
                accelerator.unwrap_model(self.model).load_state_dict(fresh_model(cfg, self.prepared, round_index))
            reset_optimizer(self.optimizer)
        self.state.position = dataclasses.asdict(RoundPosition(round_index, global_step=self.state.position["global_step"]))
        self.state.pending_metrics = pending
        self.state.mid_round = True

    def _after_step(self, position: RoundPosition, epoch_ended: bool) -> None:
        """EMA teacher, fault hook, the checkpoint the checkpointer asks for, and the preemption stop."""
        if self.teacher is not None:
            self.teacher.update_parameters(self.accelerator.unwrap_model(self.model))
        fault_point(f"step:{position.global_step}", self.accelerator)
        look = stop_check_due(self.accelerator, position.global_step, epoch_ended, self.cfg.checkpoint.stop_check_every)
        stop = stop_requested(self.accelerator) if look else False
        stage = self.checkpointer.due(position.global_step, position.epoch, epoch_ended, stop)
        if stage is not None:
            self.state.position = dataclasses.asdict(position)
            self.save(stage)
        if stop:
            raise Preempted(f"stopped at global step {position.global_step}; checkpoint written")

    def _use_level(self, level: str, every_label: bool = False) -> None:
        levels = self.levels_all if every_label else self.levels
        self.labeled, self.pseudo_tf = levels.labeled[level], levels.pseudo_tf[level]
        clean = self.clean_all if every_label else self.labeled_views.clean
        self.labeled_views = LabeledViews(clean, self.labeled)  # the guard's and calibration's views, too

    def _round0_trials(self, plan: TrainPlan) -> Optional[RoundPosition]:
        """Round 0 without the validation images (plabel.trainer.round0). Returns the position to go
        on from (val_scope rounds), or None: round 0 restarts on every labeled image (round0)."""
        start = RoundPosition(**self.state.position)
        levels = self.levels.labeled if self.cfg.data.augment == AUTO else {self.levels.preferred: self.labeled}
        outcome = run_trials(self.accelerator, self.cfg, self.model, self.optimizer, levels, plan, start, self.val,
                             self.score_plan, self.splits.num_classes)
        level = outcome.level or self.levels.preferred
        if outcome.level is not None:
            self.state.choices["data.augment"] = outcome.level
        if outcome.temperature is not None:
            self.state.choices[TEMPERATURE] = outcome.temperature
            restart(self.accelerator, self.model, self.optimizer, outcome)
        self._use_level(level, self.refit)
        if self.teacher is not None:  # the EMA teacher starts from the weights round 0 goes on from
            self.teacher.module.load_state_dict(self.accelerator.unwrap_model(self.model).state_dict())
        self.state.pending_metrics.update(outcome.metrics)
        for line in outcome.lines:
            print_once(self.accelerator, line)
        return None if self.refit else outcome.position

    def train_and_evaluate(self, round_index: int) -> None:
        """Train the rest of the round, test, log the round's row and checkpoint its end."""
        cfg, accelerator, state, selection = self.cfg, self.accelerator, self.state, self.selection
        pseudo = None
        if round_index > 0 and selection is not None:
            pseudo = IndexedImages(
                self.splits.train_source, self.splits.pool_source_indices[selection.indices], self.pseudo_tf, labels=selection.labels
            )
            if selection.targets is not None:
                pseudo = SoftTargets(pseudo, selection.targets)
        step_times: list[float] = []
        plan = self.plan_round0 if round_index == 0 else self.plan
        self.checkpointer.epochs_per_round = plan.train.epochs
        try:
            chosen = None
            if round_index == 0 and trials_due(cfg, state.choices, self.val is not None):
                chosen = self._round0_trials(plan)
            if chosen is not None:
                position = chosen
            else:
                position = train_round(
                    accelerator, self.model, self.optimizer, self.labeled, pseudo, plan, RoundPosition(**state.position),
                    self.logger.log, self._after_step, step_times,
                )
        except Preempted:
            self.logger.close(preempted=True)
            raise
        if cfg.train.compile and len(step_times) > 2:
            print_once(accelerator, compile_note(round_index, step_times))
        plan = dataclasses.replace(self.score_plan, label=f"round {round_index}: testing")
        acc = accuracy(score_dataset(accelerator, self.model, self.test, plan))
        pseudo_count = len(selection) if (selection is not None and round_index > 0) else 0
        val_acc, val_notes = None, []
        if self.val is not None and not self.refit:
            val_acc = validation_accuracy(accelerator, self.model, self.val, self.score_plan, round_index)
            previous = state.rows[-1].get("val_accuracy") if state.rows else None
            self.best, val_notes = after_round(accelerator, self.model, self.out_dir, self.best, round_index, val_acc, previous, len(self.val))
            state.best = self.best.to_state()
        self.logger.log(
            {**state.pending_metrics, "round/test_accuracy": acc, "round/labeled": len(self.labeled), "round/pseudo_labeled": pseudo_count,
             **({"round/val_accuracy": val_acc} if val_acc is not None else {})},
            position.global_step,
        )
        precision = finite_or_none(state.pending_metrics.get("select/pseudo_label_precision"))  # none selected: none
        row = RoundResult(
            round_index, len(self.labeled), pseudo_count, precision, acc,
            state.pending_metrics.get("select/top_k_percent", cfg.pseudo.percent_for_round(round_index)) if round_index else None,
            state.pending_metrics.get("select/junk_share"), finite_or_none(state.pending_metrics.get("select/precision_real")),
            val_acc, finite_or_none(state.pending_metrics.get("select/precision_estimate")), len(self.val) if self.val is not None else None,
            self.refit or None, finite_or_none(state.pending_metrics.get("select/confidence_temperature")),
        )
        state.rows.append(dataclasses.asdict(row))
        print_once(accelerator, round_line(state.rows[-1]))  # the table comes once, at the end
        for note in val_notes:
            print_once(accelerator, note)
        state.position = dataclasses.asdict(position)
        state.next_round, state.mid_round, state.pending_metrics = round_index + 1, False, {}
        self.save(f"round {round_index} done")
        if stop_requested(accelerator):
            self.logger.close(preempted=True)
            raise Preempted(f"stopped after round {round_index}; checkpoint written")

    def finish(self, started: float, cpu_started: float) -> dict[str, Any]:
        """Final weights, summary.json, the closing lines; returns the summary."""
        accelerator, rows = self.accelerator, self.state.rows
        accelerator.wait_for_everyone()
        save_weights(accelerator, self.model, self.out_dir / "model.safetensors")  # plain keys, compiled or not
        # CPU seconds of this session (not of earlier, interrupted ones), summed over processes:
        # what a sweep over many runs reports as its cost.
        cpu_time = sum_across_processes(accelerator, torch.tensor([time.process_time() - cpu_started], dtype=torch.float64))
        unreadable = [self.splits.train_source.describe(int(self.splits.pool_source_indices[p])) for p in self.state.unreadable_pool[:1000]]
        summary = run_summary(self.out_dir, accelerator.num_processes, rows, round(time.time() - started, 1),
                              round(float(cpu_time[0]), 1), self.best.to_state(), unreadable)
        self.logger.write_summary(summary)
        if self.cfg.tracking.log_model:
            files = [self.out_dir / name for name in ("model.safetensors", "config.yaml", "run_info.json")]
            if self.cfg.tracking.log_checkpoint and self.checkpointer.newest() is not None:
                files.append(self.checkpointer.newest())
            self.logger.log_model(f"model-{self.wandb_run_id}", files)
        print_once(accelerator, closing_lines(summary))
        line = unvalidated_line(len(self.val)) if self.refit and self.val is not None else best_line(self.best, rows[-1]["round_index"])
        if line:
            print_once(accelerator, line)
        offline_dirs = self.logger.offline_run_dirs()
        self.logger.close()
        if offline_dirs:
            print_once(accelerator, "W&B ran offline; upload with: wandb sync " + " ".join(str(d) for d in offline_dirs))
        return summary
