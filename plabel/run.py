"""One plabel run: round 0 (supervised baseline), then score -> select -> train per round."""

from __future__ import annotations

import datetime as dt
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

from plabel.config import ConfigError, RunConfig, flatten
from plabel.data.splits import IndexedImages, Splits, build_transform, make_splits
from plabel.distributed import share_from_main
from plabel.loop import RoundPosition, accuracy, score_dataset, train_round
from plabel.models import build_model
from plabel.selection import Selection, select_pseudo_labels
from plabel.tracking import RunLogger, resolve_wandb_mode, start_trackers


@dataclass
class RoundResult:
    round_index: int
    labeled: int
    pseudo_labeled: int
    pseudo_label_precision: Optional[float]
    test_accuracy: float
    top_k_percent: Optional[float] = None
    extra: dict[str, Any] = field(default_factory=dict)


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
    return accelerator, wandb_mode


def prepare_run_dir(accelerator: Accelerator, cfg: RunConfig, config_name: str) -> Path:
    """Create the run folder on the main process; refuse one that already holds files."""
    error: Optional[str] = None
    path: Optional[str] = None
    if accelerator.is_main_process:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        candidate = Path(cfg.output_dir) if cfg.output_dir else Path("runs") / f"{config_name}-{stamp}"
        if candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
            error = (
                f"output_dir: {candidate} already holds files from another run; "
                "pass a new --output_dir (plabel never overwrites a run)"
            )
        else:
            candidate.mkdir(parents=True, exist_ok=True)
            path = str(candidate)
    error, path = share_from_main(accelerator, (error, path))
    if error:
        raise ConfigError(error)
    assert path is not None
    return Path(path)


def write_pseudo_labels(path: Path, splits: Splits, selection: Selection, entropies: torch.Tensor) -> None:
    """CSV: pool_index, source_index, pseudo_label, entropy, true_label (diagnostics only)."""
    idx = selection.indices
    # float64 holds indices exactly up to 2**53; one array lets savetxt write it in one call.
    table = np.column_stack(
        [
            idx.numpy(),
            splits.pool_source_indices[idx].numpy(),
            selection.labels.numpy(),
            entropies[idx].double().numpy(),
            splits.pool_labels[idx].numpy(),
        ]
    ).astype(np.float64)
    np.savetxt(
        path, table, delimiter=",", fmt=["%d", "%d", "%d", "%.9g", "%d"],
        header="pool_index,source_index,pseudo_label,entropy,true_label", comments="",
    )


def selection_metrics(
    selection: Selection, scores: dict[str, torch.Tensor], pool_labels: torch.Tensor, num_classes: int
) -> dict[str, float]:
    """Precision against the pool's true labels, entropy of selected vs rest, class histogram."""
    ent = scores["entropy"]
    chosen = torch.zeros(ent.numel(), dtype=torch.bool)
    chosen[selection.indices] = True
    finite = torch.isfinite(ent)
    metrics: dict[str, float] = {
        "select/num_selected": float(len(selection)),
        "select/fraction_of_pool": len(selection) / max(1, ent.numel()),
        "select/nonfinite_scores": float((~finite).sum()),
        "select/pseudo_label_precision": (
            float((selection.labels == pool_labels[selection.indices]).float().mean()) if len(selection) else float("nan")
        ),
        "select/entropy_selected_mean": float(ent[chosen & finite].mean()) if bool((chosen & finite).any()) else float("nan"),
        "select/entropy_selected_max": float(ent[chosen & finite].max()) if bool((chosen & finite).any()) else float("nan"),
        "select/entropy_rest_mean": float(ent[~chosen & finite].mean()) if bool((~chosen & finite).any()) else float("nan"),
        "select/pool_prediction_accuracy": float((scores["prediction"] == pool_labels).float().mean()),
    }
    hist = torch.bincount(selection.labels, minlength=num_classes)
    for c in range(num_classes):
        metrics[f"select/class_{c}"] = float(hist[c])
    return metrics


def format_table(rows: Sequence[RoundResult]) -> str:
    lines = [
        "round | k%   | labeled | pseudo | precision | test_acc",
        "------|------|---------|--------|-----------|---------",
    ]
    for r in rows:
        k = "-" if r.top_k_percent is None else f"{r.top_k_percent:g}"
        prec = "-" if r.pseudo_label_precision is None else f"{100 * r.pseudo_label_precision:.2f}%"
        lines.append(
            f"{r.round_index:5d} | {k:>4} | {r.labeled:7d} | {r.pseudo_labeled:6d} | {prec:>9} | {100 * r.test_accuracy:.2f}%"
        )
    return "\n".join(lines)


def run(cfg: RunConfig, config_name: str = "run", extra_trackers: Sequence[GeneralTracker] = ()) -> dict[str, Any]:
    """Run every round; return the summary (also written to summary.json)."""
    started = time.time()
    accelerator, wandb_mode = build_accelerator(cfg, extra_trackers)
    # Data problems are user errors: find them before a run folder or tracker exists.
    splits = make_splits(cfg.data, cfg.seed)
    out_dir = prepare_run_dir(accelerator, cfg, config_name)
    resolved = cfg.to_dict()
    resolved["output_dir"] = str(out_dir)
    if accelerator.is_main_process:
        (out_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    accelerator.print(f"plabel run -> {out_dir}  ({accelerator.num_processes} process(es) on {accelerator.device.type})")
    accelerator.print(yaml.safe_dump(resolved, sort_keys=False).rstrip())
    logger = start_trackers(accelerator, cfg.tracking, wandb_mode, out_dir.name, out_dir, flatten(resolved))

    channels = splits.train_source.channels
    train_tf = build_transform(channels, cfg.data.augment, train=True)
    eval_tf = build_transform(channels, cfg.data.augment, train=False)
    labeled = IndexedImages(splits.train_source, splits.labeled_source_indices, train_tf)
    pool = IndexedImages(splits.train_source, splits.pool_source_indices, eval_tf)
    test = IndexedImages(splits.test_source, splits.test_source_indices, eval_tf)
    accelerator.print(
        f"data: {splits.train_source.description}; labeled {len(labeled)}, pool {len(pool)}, test {len(test)}, "
        f"{splits.num_classes} classes"
    )

    torch.manual_seed(cfg.seed)  # identical initial weights on every process
    model = build_model(cfg.model.name, channels, splits.num_classes)
    optimizer = make_optimizer(cfg, model)
    model, optimizer = accelerator.prepare(model, optimizer)

    rows: list[RoundResult] = []
    selection: Optional[Selection] = None
    position = RoundPosition(round_index=0)
    for round_index in range(cfg.pseudo.rounds + 1):
        pseudo = None
        k = None
        round_metrics: dict[str, float] = {"round/index": round_index}
        if round_index > 0:
            k = cfg.pseudo.percent_for_round(round_index)
            scores = score_dataset(accelerator, model, pool, cfg.train.eval_batch_size, cfg.pseudo.eps, cfg.data.num_workers)
            picked = select_pseudo_labels(
                scores["entropy"], scores["prediction"], k, splits.num_classes,
                cfg.pseudo.class_balanced, selection if cfg.pseudo.accumulate else None,
            )
            selection = share_from_main(accelerator, picked)
            round_metrics.update(selection_metrics(selection, scores, splits.pool_labels, splits.num_classes))
            round_metrics["select/top_k_percent"] = k
            if accelerator.is_main_process:
                write_pseudo_labels(out_dir / f"pseudo_labels_round{round_index:02d}.csv", splits, selection, scores["entropy"])
            pseudo = IndexedImages(
                splits.train_source, splits.pool_source_indices[selection.indices], train_tf, labels=selection.labels
            )
            if cfg.pseudo.reinit_model:
                torch.manual_seed(cfg.seed + 7919 * round_index)
                fresh = build_model(cfg.model.name, channels, splits.num_classes)
                accelerator.unwrap_model(model).load_state_dict(fresh.state_dict())
            reset_optimizer(optimizer)
        position = RoundPosition(round_index=round_index, global_step=position.global_step)
        position = train_round(
            accelerator, model, optimizer, labeled, pseudo, cfg.train, cfg.pseudo, cfg.seed, position,
            logger.log, cfg.tracking.log_every,
        )
        test_scores = score_dataset(accelerator, model, test, cfg.train.eval_batch_size, cfg.pseudo.eps, cfg.data.num_workers)
        acc = accuracy(test_scores)
        round_metrics["round/test_accuracy"] = acc
        round_metrics["round/labeled"] = len(labeled)
        round_metrics["round/pseudo_labeled"] = 0 if selection is None or round_index == 0 else len(selection)
        logger.log(round_metrics, position.global_step)
        rows.append(
            RoundResult(
                round_index, len(labeled), int(round_metrics["round/pseudo_labeled"]),
                round_metrics.get("select/pseudo_label_precision"), acc, k,
            )
        )
        accelerator.print(format_table(rows).splitlines()[-1] if round_index else "\n".join(format_table(rows).splitlines()))

    accelerator.wait_for_everyone()
    accelerator.save_model(model, out_dir)  # model.safetensors, main process only
    baseline = rows[0].test_accuracy
    summary: dict[str, Any] = {
        "output_dir": str(out_dir),
        "num_processes": accelerator.num_processes,
        "baseline_accuracy": baseline,
        "final_accuracy": rows[-1].test_accuracy,
        "best_accuracy": max(r.test_accuracy for r in rows),
        "gain_over_baseline": rows[-1].test_accuracy - baseline,
        "wall_time_s": round(time.time() - started, 1),
        "rounds": [r.__dict__ for r in rows],
    }
    logger.write_summary(summary)
    accelerator.print("\n" + format_table(rows))
    accelerator.print(
        f"baseline {100 * baseline:.2f}% -> final {100 * rows[-1].test_accuracy:.2f}% "
        f"({100 * summary['gain_over_baseline']:+.2f} points) in {summary['wall_time_s']} s; outputs in {out_dir}"
    )
    offline_dir = logger.offline_run_dir()
    logger.close()
    if offline_dir is not None:
        accelerator.print(f"W&B ran offline; upload with: wandb sync {offline_dir}")
    return summary


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
