"""What a run writes for people: the per-round table, the pseudo-label CSVs, the closing lines,
and the W&B selection media. Main process only (callers go through the seam)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from plabel.config import RunConfig
from plabel.config.load import flatten
from plabel.data.splits import Splits
from plabel.data.unlabeled import UNLABELED
from plabel.distributed.global_batch import split_range
from plabel.method.selection import Selection
from plabel.trainer.round_selection import RoundSelection
from plabel.trainer.tracking import RunLogger


@dataclass
class RoundResult:
    """One row of the per-round table (and of ``summary.json``'s ``rounds``)."""

    round_index: int
    labeled: int
    pseudo_labeled: int
    pseudo_label_precision: Optional[float]
    test_accuracy: float
    top_k_percent: Optional[float] = None
    junk_share: Optional[float] = None  # of the selection, when the pool holds junk (data.junk_share)
    precision_real: Optional[float] = None  # pseudo-label precision on the real (non-junk) samples selected
    val_accuracy: Optional[float] = None  # on the held-out labeled images (data.val_per_class)
    precision_estimate: Optional[float] = None  # the selection's precision as estimated without pool labels
    validation_images: Optional[int] = None  # how many calibrated the estimate (its uncertainty, below)
    calibrated_at_round0: Optional[bool] = None  # data.val_scope round0: the temperature is round 0's
    confidence_temperature: Optional[float] = None  # the T the estimate divided the teacher's logits by


# Round 0's temperature above which the estimate of a later round (data.val_scope round0) likely reads
# low. A large T means round 0's model was sure of wrong answers; the rounds' teachers, trained on the
# pool, are not, so T over-corrects them. Chosen on 0.3.2's runs at seeds 5-6 of the field set: the
# seven with T >= 3.6 read 8-50 points low from round 2 on, the eight with T <= 3.14 within -11.5 to
# +7.8; on seed 7, run after, 6 of 6 on the cut's side (docs/results.md, "When the round line calls the estimate").
OVERCONFIDENT_TEMPERATURE = 3.5


def estimate_halfwidth(estimate: float, n: int) -> float:
    """How far the precision estimate can be off for want of validation images: the 95% half-width
    of a proportion measured on ``n`` images (Agresti-Coull, so that 20 of 20 right is not +-0).
    The calibration cannot be finer than the accuracy it is fitted to; on the field set the
    estimate's error stayed mostly inside it (docs/results.md#data-nobody-tuned-for)."""
    p = (estimate * n + 2) / (n + 4)
    return 1.96 * math.sqrt(p * (1 - p) / (n + 4))


def likely_low(r: dict[str, Any]) -> bool:
    """Whether a round's estimate, calibrated at round 0, came from an overconfident round 0 (T at or
    above the cut): the round line and the table's estimate cell both say so."""
    t = r.get("confidence_temperature")
    return bool(r.get("calibrated_at_round0")) and t is not None and t >= OVERCONFIDENT_TEMPERATURE


def format_table(rows: Sequence[dict[str, Any]], junk: Optional[bool] = None, validation: Optional[bool] = None) -> str:
    """The per-round table; a ``junk`` column (share of the selection) when the pool holds junk
    (``junk``; by default, when a row has a junk share: round 0 alone has none); ``estimate`` (the
    selection's precision estimated without pool labels; also when a row has one) and ``val_acc``
    columns when the run validates (``validation``; by default, when a row has a validation accuracy).
    An estimate that is likely low (:func:`likely_low`) is marked ``*`` and footnoted under the table,
    so a reader of the table alone is warned as the round line warns."""
    if junk is None:
        junk = any(r.get("junk_share") is not None for r in rows)
    if validation is None:
        validation = any(r.get("val_accuracy") is not None for r in rows)
    # data.val_scope round0: the estimate is calibrated at round 0 and no later round is validated.
    estimates = validation or any(r.get("precision_estimate") is not None for r in rows)
    lines = [
        "round | k%   | labeled | pseudo | precision | " + ("estimate | " if estimates else "") + ("junk   | " if junk else "")
        + ("val_acc | " if validation else "") + "test_acc",
        "------|------|---------|--------|-----------|-" + ("---------|-" if estimates else "") + ("-------|-" if junk else "")
        + ("--------|-" if validation else "") + "--------",
    ]
    for r in rows:
        k = "-" if r["top_k_percent"] is None else f"{r['top_k_percent']:g}"
        p = r["pseudo_label_precision"]
        # A user's own pool has no labels: its precision is unknown, never 0 (an audit measures some).
        prec = ("unknown" if r["pseudo_labeled"] else "-") if p is None else f"{100 * p:.2f}%"
        junk_cell = ""
        if junk:
            share = r.get("junk_share")
            junk_cell = ("-" if share is None else f"{100 * share:.2f}%").rjust(6) + " | "
        estimate_cell = val_cell = ""
        if estimates:
            e = r.get("precision_estimate")
            estimate_cell = ("-" if e is None else f"{100 * e:.2f}%" + ("*" if likely_low(r) else "")).rjust(8) + " | "
        if validation:
            v = r.get("val_accuracy")
            val_cell = ("-" if v is None else f"{100 * v:.2f}%").rjust(7) + " | "
        lines.append(
            f"{r['round_index']:5d} | {k:>4} | {r['labeled']:7d} | {r['pseudo_labeled']:6d} | {prec:>9} | {estimate_cell}{junk_cell}"
            f"{val_cell}{100 * r['test_accuracy']:.2f}%"
        )
    low = [r for r in rows if estimates and r.get("precision_estimate") is not None and likely_low(r)]
    if low:
        lines.append(f"* likely low: round 0's model was overconfident (T {low[0]['confidence_temperature']:.3g}, "
                     f"at or above {OVERCONFIDENT_TEMPERATURE}; on the field set such estimates read 8-50 points low: docs/outputs.md)")
    return "\n".join(lines)


def round_line(r: dict[str, Any]) -> str:
    """The line a round ends with (the table comes once, at the end of the run)."""
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    spread = lambda e, n: f" ± {100 * estimate_halfwidth(e, n):.1f} from {n} validation images" if n else ""  # noqa: E731
    # Round 0's calibration (data.val_scope round0) was fitted to a weaker model than the rounds'
    # teachers: on the field set it read up to 50 points low by the last round (docs/results.md).
    when = " at round 0" if r.get("calibrated_at_round0") else ""
    if likely_low(r):
        when += f"; likely low: round 0's model was overconfident, T {r['confidence_temperature']:.3g}"
    parts = []
    if r["round_index"] == 0:
        head = f"round 0 (the supervised baseline, {r['labeled']} labeled)"
    else:
        head = f"round {r['round_index']} (k {r['top_k_percent']:.4g}%)"
        p, e = r["pseudo_label_precision"], r.get("precision_estimate")
        parts.append(f"{r['pseudo_labeled']} pseudo-labels, precision {'unknown' if p is None else pct(p)}"
                     + (f" (estimated {pct(e)}{spread(e, r.get('validation_images'))}{when})" if e is not None else ""))
        if r.get("junk_share") is not None:
            parts.append(f"junk {pct(r['junk_share'])}")
    if r.get("val_accuracy") is not None:
        parts.append(f"val {pct(r['val_accuracy'])}")
    parts.append(f"test {pct(r['test_accuracy'])}")
    return f"{head}: {', '.join(parts)}"


def closing_lines(summary: dict[str, Any]) -> str:
    """The table of every round and the baseline -> final line a run ends with."""
    return "\n" + format_table(summary["rounds"]) + "\n" + (
        f"baseline {100 * summary['baseline_accuracy']:.2f}% -> final {100 * summary['final_accuracy']:.2f}% "
        f"({100 * summary['gain_over_baseline']:+.2f} points) in {summary['wall_time_s']} s; outputs in {summary['output_dir']}"
    )


PSEUDO_LABEL_COLUMNS = (
    "pool_index", "source_index", "pseudo_label", "entropy", "true_label", "pseudo_label_name", "true_label_name", "path",
)


def write_pseudo_labels(path: Path, splits: Splits, selection: Selection, selected_entropy: torch.Tensor) -> None:
    """CSV: pool_index, source_index, pseudo_label, entropy, true_label (diagnostics only; empty
    where nobody knows it), the two labels' class names, and path: the sample's file under the
    pool's root, tar member or dataset row (what a person or ``plabel export`` finds it by).

    ``selected_entropy`` is aligned with ``selection.indices``. Written to a temporary file and
    renamed, so a crash never leaves half a CSV."""
    idx = selection.indices
    names = list(splits.class_names)
    special = {-2: "(junk)", -1: "(unreadable)", UNLABELED: ""}  # plabel.data.junk.JUNK, plabel.data.splits.UNREADABLE

    def name(label: int) -> str:
        return names[label] if label >= 0 else special.get(label, str(label))

    true = splits.pool_labels[idx].tolist()
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        _write_rows(tmp, splits, idx, selection, selected_entropy, true, name)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_rows(tmp: Path, splits: Splits, idx: torch.Tensor, selection: Selection, selected_entropy: torch.Tensor,
                true: list[int], name: Any) -> None:
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(PSEUDO_LABEL_COLUMNS)
        writer.writerows(
            (i, source, label, f"{e:.9g}", "" if t == UNLABELED else t, name(label), name(t), splits.pool_name(i))
            for i, source, label, e, t in zip(
                idx.tolist(), splits.pool_source_indices[idx].tolist(), selection.labels.tolist(),
                selected_entropy.double().tolist(), true,
            )
        )


def log_selection_media(
    logger: RunLogger, round_index: int, step: int, splits: Splits, picked: RoundSelection, max_rows: int = 64
) -> None:
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
    logger.log_selection_media(round_index, step, picked.histogram_edges, picked.histograms, samples, splits.class_names)


def config_line(resolved: dict[str, Any], out_dir: Path) -> str:
    """One line: the options this run sets that differ from plabel's defaults (config.yaml has all)."""
    defaults = flatten(RunConfig().to_dict())
    ignore = ("output_dir", "train.mixed_precision", "verbose")
    changed = [f"{k}={v}" for k, v in flatten(resolved).items() if k not in ignore and defaults.get(k, object()) != v]
    return f"config: {', '.join(changed) if changed else 'the defaults'} (all of it: {out_dir / 'config.yaml'}; --verbose prints it)"


def batch_note(cfg: RunConfig, world: int) -> str:
    """The printed line that says batch sizes are global (they were per process before 0.2)."""
    def split(total: int) -> str:
        return "/".join(str(len(split_range(total, world, r))) for r in range(world))

    note = (f"batches are global: each step trains the whole job on {cfg.train.batch_size} labeled + "
            f"{cfg.train.pseudo_batch_size} pseudo-labeled samples")
    if world > 1:
        note += f" (per process: {split(cfg.train.batch_size)} + {split(cfg.train.pseudo_batch_size)})"
    return note


def unreadable_note(splits: Splits, new: list[int], round_index: int) -> Optional[str]:
    """The warning naming pool images that could not be decoded, the first time they are found."""
    if not new:
        return None
    source, indices = splits.train_source, splits.pool_source_indices
    names = [source.describe(int(indices[p])) for p in new[:5]]
    more = f" and {len(new) - 5} more (summary.json lists them)" if len(new) > 5 else ""
    return f"warning: round {round_index}: skipped {len(new)} unreadable pool image(s): {'; '.join(names)}{more}"


def finite_or_none(value: Optional[float]) -> Optional[float]:
    return value if value is not None and math.isfinite(value) else None


def views_note(views: int, noise: str) -> str:
    kind = "one-pixel shifts" if noise == "shift" else "MC dropout passes"
    return f"pool scoring: {views} views per image (the clean one and {views - 1} {kind}), {views}x the cost of one pass"


def compile_note(round_index: int, step_times: Sequence[float]) -> str:
    steady = sorted(step_times[1:])[len(step_times[1:]) // 2]
    return (f"torch.compile: round {round_index}'s first step took {step_times[0]:.1f} s "
            f"(compiling), the others {steady:.3f} s (median, host time)")


def run_summary(out_dir: Any, num_processes: int, rows: list[dict[str, Any]], wall_s: float, cpu_s: float,
                best: dict[str, Any], unreadable: list[str]) -> dict[str, Any]:
    """summary.json: the run's rows and what they add up to; ``best`` is ``validation.Best.to_state()``."""
    baseline = rows[0]["test_accuracy"]
    return {
        "output_dir": str(out_dir),
        "num_processes": num_processes,
        "baseline_accuracy": baseline,
        "final_accuracy": rows[-1]["test_accuracy"],
        "best_accuracy": max(r["test_accuracy"] for r in rows),
        "gain_over_baseline": rows[-1]["test_accuracy"] - baseline,
        "wall_time_s": wall_s,
        "cpu_time_s": cpu_s,
        "rounds": rows,
        "best_round_by_validation": best.get("round_index"),
        "best_val_accuracy": best.get("val_accuracy"),
        "unreadable_pool_images": unreadable,
    }
