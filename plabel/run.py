"""One plabel run: round 0 (supervised baseline), then score -> select -> train per round.

The run is resumable at any step: its state is (position, finished rounds, current
selection) plus what Accelerate checkpoints (model, optimizer), and everything random is
seeded from the position, so a restarted run replays the uninterrupted one exactly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker
from accelerate.utils import InitProcessGroupKwargs

from plabel.checkpoint import (
    list_checkpoints, load_checkpoint, remove_partial_checkpoints, save_checkpoint, verify_checkpoint, checkpoint_seq,
)
from plabel.config import ConfigError, RunConfig, diff_configs, flatten
from plabel.data.splits import IndexedImages, Splits, build_transform, make_splits
from plabel.distributed import share_from_main, sum_across_processes
from plabel.faults import Preempted, fault_point, install_preemption_handlers, stop_requested
from plabel.loop import LoaderOptions, RoundPosition, accuracy, score_dataset, train_round
from plabel.models import build_model
from plabel.round_selection import RoundSelection, select_for_round
from plabel.selection import Selection
from plabel.tracking import RunLogger, resolve_wandb_mode, start_trackers

# Fields that may change between a run and its resumption without changing its results.
RESUME_IGNORES = (
    "output_dir", "resume", "collective_timeout_s", "data.num_workers", "data.persistent_workers", "data.pin_memory",
    "train.cpu_threads",
)
RESUME_IGNORE_PREFIXES = ("tracking.", "checkpoint.")
RUN_INFO = "run_info.json"


@dataclass
class RoundResult:
    round_index: int
    labeled: int
    pseudo_labeled: int
    pseudo_label_precision: Optional[float]
    test_accuracy: float
    top_k_percent: Optional[float] = None


@dataclass
class RunState:
    """plabel's part of a checkpoint (JSON). Accelerate holds the model and optimizer."""

    next_round: int = 0
    mid_round: bool = False  # True: position is inside round next_round, its selection made
    position: dict[str, int] = field(default_factory=lambda: dataclasses.asdict(RoundPosition(0)))
    rows: list[dict[str, Any]] = field(default_factory=list)
    pending_metrics: dict[str, float] = field(default_factory=dict)  # selection metrics, logged at round end
    seq: int = 0  # sequence number of the last checkpoint written
    metrics_offset: int = 0  # bytes of metrics.jsonl that belong to this state
    num_processes: int = 1
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunDir:
    path: Path
    status: str  # new | resume | restart | complete
    checkpoint: Optional[Path] = None
    wandb_run_id: str = ""
    notes: list[str] = field(default_factory=list)


def say(accelerator: Accelerator, message: str) -> None:
    """Print once per job (the global main process), not once per node like accelerator.print."""
    if accelerator.is_main_process:
        print(message, flush=True)


def build_accelerator(cfg: RunConfig, extra_trackers: Sequence[GeneralTracker] = ()) -> tuple[Accelerator, str]:
    wandb_mode = resolve_wandb_mode(cfg.tracking)
    log_with: list[Any] = (["wandb"] if wandb_mode != "disabled" else []) + list(extra_trackers)
    accelerator = Accelerator(
        # Without CUDA, Accelerate only joins launched processes into one (gloo) group when told
        # it is on CPU; otherwise each process silently trains alone.
        cpu=not torch.cuda.is_available(),
        mixed_precision=cfg.train.mixed_precision,
        log_with=log_with or None,
        kwargs_handlers=[InitProcessGroupKwargs(timeout=dt.timedelta(seconds=cfg.collective_timeout_s))],
    )
    if accelerator.device.type == "cpu":
        # `accelerate launch` exports OMP_NUM_THREADS=1 even for a single process, which would
        # leave all but one core idle; share this machine's cores among its processes instead.
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        torch.set_num_threads(cfg.train.cpu_threads or max(1, len(os.sched_getaffinity(0)) // local_processes))
    return accelerator, wandb_mode


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return [
        k for k in diff_configs(saved, current, RESUME_IGNORES) if not k.startswith(RESUME_IGNORE_PREFIXES)
    ]


def _differences_message(where: str, saved: dict[str, Any], current: dict[str, Any], names: list[str]) -> str:
    fs, fc = flatten(saved), flatten(current)
    shown = "; ".join(f"{n}: {fs.get(n)!r} there, {fc.get(n)!r} now" for n in names[:6])
    more = f" (+{len(names) - 6} more)" if len(names) > 6 else ""
    return f"{where} was written by a different configuration ({shown}{more})"


def _newest_valid_checkpoint(run_dir: Path, notes: list[str]) -> Optional[Path]:
    for removed in remove_partial_checkpoints(run_dir):
        notes.append(f"removed unfinished checkpoint {removed} (the job died while writing it)")
    for ckpt in list_checkpoints(run_dir):
        problem = verify_checkpoint(ckpt)
        if problem is None:
            return ckpt
        notes.append(f"skipping corrupt checkpoint: {problem}")
    return None


def _decide_run_dir(cfg: RunConfig, config_name: str, resolved: dict[str, Any]) -> RunDir:
    """Main process only: where this run writes and whether it starts, resumes or is done."""
    path = Path(cfg.output_dir) if cfg.output_dir else Path("runs") / f"{config_name}-seed{cfg.seed}"
    notes: list[str] = []
    if cfg.resume not in ("auto", "never"):
        ckpt = Path(cfg.resume)
        problem = verify_checkpoint(ckpt)
        if problem is not None:
            raise ConfigError(f"resume: {problem}; point it at a complete <run>/checkpoints/ckpt-NNNNNN folder")
        saved = json.loads((ckpt / "plabel_state.json").read_text())["config"]
        differences = config_differences(saved, resolved)
        if differences:
            raise ConfigError("resume: " + _differences_message(str(ckpt), saved, resolved, differences))
        own_run = ckpt.resolve().parent.parent == path.resolve()
        if path.exists() and any(path.iterdir()) and not own_run:
            raise ConfigError(f"output_dir: {path} already holds files; resume into the checkpoint's own run folder or a new one")
        info = json.loads((ckpt.parent.parent / RUN_INFO).read_text()) if (ckpt.parent.parent / RUN_INFO).is_file() else {}
        return RunDir(path, "resume", ckpt, info.get("wandb_run_id", secrets.token_hex(4)), notes)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return RunDir(path, "new", None, secrets.token_hex(4), notes)
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
    info = json.loads((path / RUN_INFO).read_text()) if (path / RUN_INFO).is_file() else {}
    run_id = info.get("wandb_run_id", secrets.token_hex(4))
    if (path / "summary.json").is_file():
        return RunDir(path, "complete", None, run_id, notes)
    ckpt = _newest_valid_checkpoint(path, notes)
    return RunDir(path, "resume" if ckpt else "restart", ckpt, run_id, notes)


def open_run_dir(
    accelerator: Accelerator, cfg: RunConfig, config_name: str, resolved: dict[str, Any], model_info: dict[str, Any]
) -> RunDir:
    """Decide on the main process, create the folder there, and tell every process.

    ``run_info.json`` records the W&B run id (so a resumed job continues the same W&B run) and
    the model's input/output shape (so ``plabel score`` can rebuild it without the data).
    """
    decision: Optional[RunDir] = None
    error: Optional[str] = None
    if accelerator.is_main_process:
        try:
            decision = _decide_run_dir(cfg, config_name, resolved)
            decision.path.mkdir(parents=True, exist_ok=True)
            if decision.status in ("new", "restart"):
                (decision.path / "metrics.jsonl").write_text("")
            if decision.status in ("new", "restart") or not (decision.path / RUN_INFO).is_file():
                (decision.path / RUN_INFO).write_text(
                    json.dumps(
                        {"wandb_run_id": decision.wandb_run_id, "num_processes": accelerator.num_processes, **model_info}
                    ) + "\n"
                )
            (decision.path / "config.yaml").write_text(yaml.safe_dump({**resolved, "output_dir": str(decision.path)}, sort_keys=False))
        except ConfigError as err:
            error = str(err)
    error, decision = share_from_main(accelerator, (error, decision))
    if error:
        raise ConfigError(error)
    assert decision is not None
    return decision


def write_pseudo_labels(path: Path, splits: Splits, selection: Selection, selected_entropy: torch.Tensor) -> None:
    """CSV: pool_index, source_index, pseudo_label, entropy, true_label (diagnostics only).

    ``selected_entropy`` is aligned with ``selection.indices``."""
    idx = selection.indices
    # float64 holds indices exactly up to 2**53; one array lets savetxt write it in one call.
    table = np.column_stack(
        [
            idx.numpy(),
            splits.pool_source_indices[idx].numpy(),
            selection.labels.numpy(),
            selected_entropy.double().numpy(),
            splits.pool_labels[idx].numpy(),
        ]
    ).astype(np.float64)
    np.savetxt(
        path, table, delimiter=",", fmt=["%d", "%d", "%d", "%.9g", "%d"],
        header="pool_index,source_index,pseudo_label,entropy,true_label", comments="",
    )


def log_selection_media(logger: RunLogger, step: int, splits: Splits, picked: RoundSelection, max_rows: int = 64) -> None:
    """W&B-only extras: entropy histograms and a table of up to ``max_rows`` selected samples
    (evenly spread over the selection's entropy order, so both ends of it show)."""
    if logger.wandb_mode == "disabled":
        return
    selection = picked.selection
    order = torch.argsort(picked.selected_entropy, stable=True)
    rows = order[torch.linspace(0, len(order) - 1, min(max_rows, len(order))).long()] if len(order) else order
    samples = [
        (
            splits.train_source.image(int(splits.pool_source_indices[selection.indices[r]])),
            int(selection.labels[r]),
            float(picked.selected_entropy[r]),
            int(splits.pool_labels[selection.indices[r]]),
        )
        for r in rows.tolist()
    ]
    logger.log_selection_media(step, picked.histogram_edges, picked.histograms, samples)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "round | k%   | labeled | pseudo | precision | test_acc",
        "------|------|---------|--------|-----------|---------",
    ]
    for r in rows:
        k = "-" if r["top_k_percent"] is None else f"{r['top_k_percent']:g}"
        p = r["pseudo_label_precision"]
        prec = "-" if p is None else f"{100 * p:.2f}%"
        lines.append(
            f"{r['round_index']:5d} | {k:>4} | {r['labeled']:7d} | {r['pseudo_labeled']:6d} | {prec:>9} | {100 * r['test_accuracy']:.2f}%"
        )
    return "\n".join(lines)


def loader_options(cfg: RunConfig, accelerator: Accelerator) -> LoaderOptions:
    pin = cfg.data.pin_memory if cfg.data.pin_memory is not None else accelerator.device.type == "cuda"
    return LoaderOptions(cfg.data.num_workers, cfg.data.persistent_workers, pin, cfg.train.channels_last)


def make_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.train.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.train.lr, momentum=0.9, nesterov=True, weight_decay=cfg.train.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)


def reset_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Forget moments between rounds: each round restarts its learning-rate schedule."""
    inner = getattr(optimizer, "optimizer", optimizer)
    inner.state.clear()


def check_num_classes(cfg: RunConfig, splits: Splits) -> int:
    if cfg.model.num_classes is None:
        return splits.num_classes
    highest = max(int(splits.train_source.labels.max()), int(splits.test_source.labels.max()))
    if highest >= cfg.model.num_classes:
        raise ConfigError(
            f"model.num_classes: labels go up to {highest} but the model has {cfg.model.num_classes} outputs "
            f"(labels must lie in 0..{cfg.model.num_classes - 1}); raise model.num_classes or fix data.train.label_column"
        )
    return cfg.model.num_classes


def _print_done(accelerator: Accelerator, summary: dict[str, Any]) -> None:
    say(accelerator, "\n" + format_table(summary["rounds"]))
    say(accelerator, 
        f"baseline {100 * summary['baseline_accuracy']:.2f}% -> final {100 * summary['final_accuracy']:.2f}% "
        f"({100 * summary['gain_over_baseline']:+.2f} points) in {summary['wall_time_s']} s; outputs in {summary['output_dir']}"
    )


def _truncate_replayed_metrics(accelerator: Accelerator, checkpoint: Path, out_dir: Path) -> int:
    """Cut metrics.jsonl back to what the checkpoint had logged; return how many entries the
    replay of the steps after it will log again (the trackers already have them)."""
    saved_state = json.loads((checkpoint / "plabel_state.json").read_text())
    if not accelerator.is_main_process or checkpoint.resolve().parent.parent != out_dir.resolve():
        return 0
    with open(out_dir / "metrics.jsonl", "r+") as f:
        f.seek(saved_state["metrics_offset"])
        replayed = sum(1 for _ in f)
        f.truncate(saved_state["metrics_offset"])
    return replayed


class RoundRunner:
    """One run's rounds: data, model and optimizer on this process, the checkpointed state, and
    the three things a round does (select, train, evaluate). Built by :func:`run`."""

    def __init__(
        self, cfg: RunConfig, accelerator: Accelerator, wandb_mode: str, splits: Splits, num_classes: int,
        resolved: dict[str, Any], run_dir: RunDir,
    ) -> None:
        self.cfg, self.accelerator, self.splits, self.num_classes = cfg, accelerator, splits, num_classes
        self.out_dir = out_dir = run_dir.path
        self.state = RunState(num_processes=accelerator.num_processes, config=resolved)
        already_tracked = 0 if run_dir.checkpoint is None else _truncate_replayed_metrics(accelerator, run_dir.checkpoint, out_dir)
        say(accelerator, f"plabel run -> {out_dir}  ({accelerator.num_processes} process(es) on {accelerator.device.type}; {run_dir.status})")
        say(accelerator, yaml.safe_dump(resolved, sort_keys=False).rstrip())
        self.logger = start_trackers(
            accelerator, cfg.tracking, wandb_mode, out_dir.name, out_dir, flatten(resolved), run_dir.wandb_run_id,
            already_tracked,
        )

        self.channels = channels = splits.train_source.channels
        self.train_tf = build_transform(channels, cfg.data.augment, train=True)
        eval_tf = build_transform(channels, cfg.data.augment, train=False)
        self.labeled = IndexedImages(splits.train_source, splits.labeled_source_indices, self.train_tf)
        self.pool = IndexedImages(splits.train_source, splits.pool_source_indices, eval_tf)
        self.test = IndexedImages(splits.test_source, splits.test_source_indices, eval_tf)
        say(accelerator,
            f"data: {splits.train_source.description}; labeled {len(self.labeled)}, pool {len(self.pool)}, "
            f"test {len(self.test)}, {num_classes} classes"
        )

        self.options = loader_options(cfg, accelerator)
        torch.manual_seed(cfg.seed)  # identical initial weights on every process
        model = build_model(cfg.model.name, channels, num_classes)
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model, self.optimizer = accelerator.prepare(model, make_optimizer(cfg, model))

        self.selection: Optional[Selection] = None
        if run_dir.checkpoint is not None:
            self._restore(run_dir.checkpoint, resolved)
        existing = list_checkpoints(out_dir) if accelerator.is_main_process else []
        self.state.seq = share_from_main(accelerator, max([self.state.seq] + [checkpoint_seq(p) for p in existing]))

    def _restore(self, checkpoint: Path, resolved: dict[str, Any]) -> None:
        accelerator = self.accelerator
        loaded, tensors = load_checkpoint(accelerator, checkpoint)
        self.state = RunState(**{**loaded, "num_processes": accelerator.num_processes, "config": resolved})
        if loaded["num_processes"] != accelerator.num_processes:
            say(accelerator,
                f"warning: checkpoint written by {loaded['num_processes']} processes, resuming with "
                f"{accelerator.num_processes}; the run continues but will not replay the original exactly"
            )
        if tensors["indices"].numel() or self.state.next_round > 0:
            self.selection = Selection(tensors["indices"].long(), tensors["labels"].long())
        say(accelerator, f"resumed from {checkpoint} at round {self.state.next_round}, global step {self.state.position['global_step']}")

    def save(self, stage: str) -> None:
        state, selection = self.state, self.selection
        state.seq += 1
        state.metrics_offset = self.logger.offset()
        empty = torch.empty(0, dtype=torch.long)
        tensors = {
            "indices": selection.indices if selection is not None else empty,
            "labels": selection.labels if selection is not None else empty,
        }
        path = save_checkpoint(self.accelerator, self.out_dir, state.seq, dataclasses.asdict(state), tensors, self.cfg.checkpoint.keep)
        say(self.accelerator, f"checkpoint ({stage}) -> {path}")

    def start_round(self, round_index: int) -> None:
        """Select this round's pseudo-labels (rounds > 0) and enter the round; its metrics wait in
        the state until the round ends."""
        cfg, accelerator = self.cfg, self.accelerator
        pending: dict[str, float] = {"round/index": round_index}
        if round_index > 0:
            picked = select_for_round(
                accelerator, self.model, self.pool, self.splits.pool_labels, cfg.pseudo.percent_for_round(round_index),
                self.num_classes, cfg.pseudo.class_balanced, self.selection if cfg.pseudo.accumulate else None, round_index,
                cfg.train.eval_batch_size, cfg.pseudo.eps, self.options, cfg.pseudo.score, cfg.seed,
            )
            self.selection = picked.selection
            pending.update(picked.metrics)
            if pending["select/nonfinite_scores"] > 0:
                say(accelerator,
                    f"warning: round {round_index}: {int(pending['select/nonfinite_scores'])} pool samples had "
                    "NaN/Inf logits and were not selected"
                )
            if accelerator.is_main_process:
                write_pseudo_labels(
                    self.out_dir / f"pseudo_labels_round{round_index:02d}.csv", self.splits, picked.selection, picked.selected_entropy
                )
                log_selection_media(self.logger, self.state.position["global_step"], self.splits, picked)
            if cfg.pseudo.reinit_model:
                torch.manual_seed(cfg.seed + 7919 * round_index)
                fresh = build_model(cfg.model.name, self.channels, self.num_classes)
                accelerator.unwrap_model(self.model).load_state_dict(fresh.state_dict())
            reset_optimizer(self.optimizer)
        self.state.position = dataclasses.asdict(RoundPosition(round_index, global_step=self.state.position["global_step"]))
        self.state.pending_metrics = pending
        self.state.mid_round = True

    def _after_step(self, position: RoundPosition, epoch_ended: bool) -> None:
        """Fault hook, periodic/epoch-end checkpoints, and the preemption stop, after every step."""
        fault_point(f"step:{position.global_step}", self.accelerator)
        stop = stop_requested(self.accelerator)
        every = self.cfg.checkpoint.every_steps
        round_over = epoch_ended and position.epoch == self.cfg.train.epochs  # the round-end checkpoint follows
        if stop or (every and position.global_step % every == 0) or (epoch_ended and not round_over):
            self.state.position = dataclasses.asdict(position)
            self.save("preemption" if stop else "epoch end" if epoch_ended else "periodic")
        if stop:
            raise Preempted(f"stopped at global step {position.global_step}")

    def train_and_evaluate(self, round_index: int) -> None:
        """Train the rest of the round, test, log the round's row and checkpoint its end."""
        cfg, accelerator, state, selection = self.cfg, self.accelerator, self.state, self.selection
        pseudo = None
        if round_index > 0 and selection is not None:
            pseudo = IndexedImages(
                self.splits.train_source, self.splits.pool_source_indices[selection.indices], self.train_tf, labels=selection.labels
            )
        try:
            position = train_round(
                accelerator, self.model, self.optimizer, self.labeled, pseudo, cfg.train, cfg.pseudo, cfg.seed,
                RoundPosition(**state.position), self.logger.log, cfg.tracking.log_every, self._after_step, self.options,
            )
        except Preempted:
            self.logger.close()
            raise
        acc = accuracy(score_dataset(accelerator, self.model, self.test, cfg.train.eval_batch_size, cfg.pseudo.eps, self.options))
        pseudo_count = len(selection) if (selection is not None and round_index > 0) else 0
        self.logger.log(
            {**state.pending_metrics, "round/test_accuracy": acc, "round/labeled": len(self.labeled), "round/pseudo_labeled": pseudo_count},
            position.global_step,
        )
        row = RoundResult(
            round_index, len(self.labeled), pseudo_count, state.pending_metrics.get("select/pseudo_label_precision"), acc,
            cfg.pseudo.percent_for_round(round_index) if round_index else None,
        )
        state.rows.append(dataclasses.asdict(row))
        table = format_table(state.rows).splitlines()
        say(accelerator, "\n".join(table if round_index == 0 or len(state.rows) == 1 else table[-1:]))
        state.position = dataclasses.asdict(position)
        state.next_round, state.mid_round, state.pending_metrics = round_index + 1, False, {}
        self.save(f"round {round_index} done")
        if stop_requested(accelerator):
            self.logger.close()
            raise Preempted(f"stopped after round {round_index}")

    def finish(self, started: float, cpu_started: float) -> dict[str, Any]:
        """Final weights, summary.json, the closing lines; returns the summary."""
        accelerator, rows = self.accelerator, self.state.rows
        accelerator.wait_for_everyone()
        accelerator.save_model(self.model, self.out_dir)  # model.safetensors, main process only
        baseline = rows[0]["test_accuracy"]
        # CPU seconds of this session (not of earlier, interrupted ones), summed over processes:
        # what a sweep over many runs reports as its cost.
        cpu_time = sum_across_processes(accelerator, torch.tensor([time.process_time() - cpu_started], dtype=torch.float64))
        summary: dict[str, Any] = {
            "output_dir": str(self.out_dir),
            "num_processes": accelerator.num_processes,
            "baseline_accuracy": baseline,
            "final_accuracy": rows[-1]["test_accuracy"],
            "best_accuracy": max(r["test_accuracy"] for r in rows),
            "gain_over_baseline": rows[-1]["test_accuracy"] - baseline,
            "wall_time_s": round(time.time() - started, 1),
            "cpu_time_s": round(float(cpu_time[0]), 1),
            "rounds": rows,
        }
        self.logger.write_summary(summary)
        _print_done(accelerator, summary)
        offline_dir = self.logger.offline_run_dir()
        self.logger.close()
        if offline_dir is not None:
            say(accelerator, f"W&B ran offline; upload with: wandb sync {offline_dir}")
        return summary


def run(cfg: RunConfig, config_name: str = "run", extra_trackers: Sequence[GeneralTracker] = ()) -> dict[str, Any]:
    """Run (or resume) every round; return the summary (also written to summary.json).

    Raises ConfigError for user errors (before any training) and Preempted after writing a
    checkpoint when a preemption signal arrived.
    """
    started, cpu_started = time.time(), time.process_time()
    install_preemption_handlers()
    accelerator, wandb_mode = build_accelerator(cfg, extra_trackers)
    # Data problems are user errors: find them on every process before a run folder exists.
    splits = make_splits(cfg.data, cfg.seed)
    num_classes = check_num_classes(cfg, splits)
    resolved = cfg.to_dict()
    model_info = {
        "num_classes": num_classes, "channels": splits.train_source.channels, "image_size": list(splits.train_source.image_size),
    }
    run_dir = open_run_dir(accelerator, cfg, config_name, resolved, model_info)
    resolved["output_dir"] = str(run_dir.path)
    for note in run_dir.notes:
        say(accelerator, f"note: {note}")
    if run_dir.status == "complete":
        summary = json.loads((run_dir.path / "summary.json").read_text())
        say(accelerator, f"{run_dir.path} holds a complete run of this configuration; nothing to do.")
        _print_done(accelerator, summary)
        accelerator.end_training()
        return summary

    runner = RoundRunner(cfg, accelerator, wandb_mode, splits, num_classes, resolved, run_dir)
    for round_index in range(runner.state.next_round, cfg.pseudo.rounds + 1):
        if not runner.state.mid_round:
            runner.start_round(round_index)
        runner.train_and_evaluate(round_index)
    return runner.finish(started, cpu_started)
