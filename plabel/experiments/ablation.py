"""The ablation sweep: which selections, schedules and settings make pseudo-labels pay.

    python -m plabel.experiments.ablation --test-root /path/to/mnist-test --labels 10 60 100 --seeds 0 1 2 \\
        --out results/ablation --jobs 2

Every row trains on the same split and seeds with the same total budget ((rounds + 1) x epochs
x steps_per_epoch optimizer steps; the supervised row spends it all in round 0; the "default"
rows keep the shipped configuration's own budget), through
``train.py`` itself, one run folder per (labels, row, seed) under ``--out``. Finished runs are
reused, so an interrupted sweep continues where it stopped. "The shipped configuration" is plabel
0.2's default (``configs/default-0.2.yaml``), which every committed ablation result was made with:
0.3 changed three defaults (README, "Quick start"), and this module keeps to the old ones so that
its results still reproduce. Each row reports test accuracy
mean ± std over seeds, pseudo-label precision per round, the last selection's class histogram,
and accuracy on a corrupted copy of the test set (Gaussian pixel noise and small rotations).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import yaml
from torch.utils.data import Dataset
from torchvision.transforms import v2

from plabel.config.args import SpellingsParser

ROUNDS = 5
CONFIG_0_2 = Path(__file__).resolve().parents[2] / "configs" / "default-0.2.yaml"  # what the results were made with
CURRICULUM = "[20, 40, 60, 80, 100]"
# name -> (description, overrides). All rows but the DEFAULT_ROWS: ROUNDS rounds, continued
# model, global selection, linear alpha ramp, --epochs x --steps-per-epoch per round, unless the
# row says otherwise. The DEFAULT_ROWS start from train.py's own configuration, budget included
# ("default" is it untouched apart from the test set: the run the README's targets are about).
DIRTY_ROWS = (  # the shipped configuration with one option changed: the dirty-pool sweep (--junk-share)
    "default_random", "default_guard", "default_guard_random", "default_energy", "default_calibrated",
    "default_ema", "default_strong", "default_best",
)
DEFAULT_ROWS = ("default", "default_nobn", "default_supervised", *DIRTY_ROWS)
GUARD = ["--pseudo.guard", "knn"]
ROWS: dict[str, tuple[str, list[str]]] = {
    "default_random": ("the shipped default, random samples instead of entropy (same k of the whole pool)", ["--pseudo.score", "random"]),
    "default_guard": ("the shipped default + the knn junk guard (k% of what it lets through)", GUARD),
    "default_guard_random": ("random samples among what the knn guard lets through: default_guard's counts", [*GUARD, "--pseudo.score", "random"]),
    "default_energy": ("the shipped default, ranked by energy (-logsumexp) instead of entropy", ["--pseudo.score", "energy"]),
    "default_calibrated": ("the shipped default, entropy after a temperature fitted on the labeled set", ["--pseudo.calibrate", "true"]),
    "default_ema": ("the shipped default, the pool scored by an EMA teacher (decay 0.99)", ["--pseudo.teacher", "ema"]),
    "default_strong": ("the shipped default, loss on strongly augmented views of the pseudo-labeled samples", ["--pseudo.augment", "strong"]),
    "default_best": ("the shipped default + knn guard + EMA teacher + strong augmentation", [*GUARD, "--pseudo.teacher", "ema", "--pseudo.augment", "strong"]),
    "default": ("the shipped default: entropy, class-balanced, k 20→80%, 4 rounds, its own budget", []),
    "default_nobn": ("the shipped default with model.name small_cnn_nobn (no BatchNorm)", ["--model.name", "small_cnn_nobn"]),
    "default_supervised": (
        "supervised only, the shipped default's whole budget (5 x 8 x 30 steps) in round 0",
        ["--pseudo.rounds", "0", "--pseudo.top_k_percent", "100", "--train.epochs", "40"],
    ),
    "supervised": ("supervised only, the whole budget in round 0", ["--pseudo.rounds", "0", "--pseudo.top_k_percent", "100"]),
    "entropy_constant": ("entropy, constant k = 50% per round", ["--pseudo.top_k_percent", "50"]),
    "entropy_curriculum": ("entropy, growing k 20→100%", []),
    "random_curriculum": ("random samples, same counts as entropy_curriculum", ["--pseudo.score", "random"]),
    "max_probability_curriculum": ("max-probability top-k, 20→100%", ["--pseudo.score", "max_probability"]),
    "margin_curriculum": ("margin (top-1 − top-2) top-k, 20→100%", ["--pseudo.score", "margin"]),
    "all_unlabeled": ("all unlabeled every round, no selection", ["--pseudo.top_k_percent", "100"]),
    "entropy_class_balanced": ("entropy 20→100%, class-balanced", ["--pseudo.class_balanced", "true"]),
    "alpha_constant": ("entropy 20→100%, alpha = 1 from the first epoch", ["--pseudo.alpha_schedule", "constant"]),
    "alpha_lee": ("entropy 20→100%, Lee (2013) T1/T2/alpha_f", ["--pseudo.alpha_schedule", "lee"]),
    "reinit_each_round": ("entropy 20→100%, model re-initialised each round", ["--pseudo.reinit_model", "true"]),
}


class CorruptedImages(Dataset):
    """A test set with Gaussian pixel noise and a small rotation, seeded per sample (the same
    corruption for every model compared)."""

    def __init__(self, base: Dataset, noise_std: float = 0.2, degrees: float = 15.0) -> None:
        self.base = base
        self.noise_std = noise_std
        self.rotate = v2.RandomRotation(degrees)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        x, y, index = self.base[i]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1_000_003 + i)
            # x is normalised to [-1, 1] (mean 0.5, std 0.5), so pixel noise of std s is 2s here.
            x = self.rotate(x) + torch.randn_like(x) * 2 * self.noise_std
        return x, y, index


def corrupted_accuracy(run_dir: Path) -> float:
    """Accuracy of a finished run's final weights on the corrupted test set."""
    from accelerate import Accelerator

    from plabel.config import config_from_dict
    from plabel.data.splits import IndexedImages, make_splits
    from plabel.data.transforms import source_transform
    from plabel.models.prepare import load_run_model
    from plabel.trainer.scoring_pass import ScorePlan, accuracy, score_dataset

    cfg = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    info = json.loads((run_dir / "run_info.json").read_text())
    splits = make_splits(cfg.data, cfg.seed)
    model, spec = load_run_model(run_dir, cfg, info)
    test_tf = source_transform(splits.test_source, spec, "none", train=False)
    test = IndexedImages(splits.test_source, splits.test_source_indices, test_tf)
    plan = ScorePlan(512, cfg.pseudo.eps, label="corrupted test set")
    scores = score_dataset(Accelerator(cpu=not torch.cuda.is_available()), model, CorruptedImages(test), plan)
    return accuracy(scores)


def row_overrides(row: str, epochs: int) -> list[str]:
    """The train.py options a row adds to its base; the supervised row gets the whole budget."""
    overrides = list(ROWS[row][1])
    if row == "supervised":  # the same number of optimizer steps, all in round 0
        overrides += ["--train.epochs", str(epochs * (ROUNDS + 1))]
    return overrides


def _mean_of(values: Any) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _run_one(train_cmd: list[str], run_dir: Path) -> dict[str, Any]:
    """Train one run (or reuse it when finished) and score its weights on the corrupted test set."""
    proc = subprocess.run(train_cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"ablation: {run_dir} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    summary["budget_steps"] = (cfg["pseudo"]["rounds"] + 1) * cfg["train"]["epochs"] * cfg["train"]["steps_per_epoch"]
    cached = run_dir / "corrupted.json"
    if not cached.is_file():
        cpu = time.process_time()
        cached.write_text(json.dumps({"accuracy": corrupted_accuracy(run_dir), "cpu_time_s": time.process_time() - cpu}))
    corrupted = json.loads(cached.read_text())
    summary["corrupted_accuracy"] = corrupted["accuracy"]
    summary["sweep_cpu_time_s"] = summary.get("cpu_time_s", 0.0) + corrupted["cpu_time_s"]
    return summary


def run_sweep(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = max(1, args.jobs)
    # Concurrent runs share the cores instead of fighting over them.
    threads = max(1, len(os.sched_getaffinity(0)) // jobs)
    common = ["--config", str(CONFIG_0_2), "--tracking.mode", "disabled", "--data.test_holdout", str(args.test_holdout), "--train.cpu_threads", str(threads)]
    if args.test_root:
        common += ["--data.test.source", "idx", "--data.test.root", args.test_root, "--data.test.split", "test"]
    if args.pool_limit:
        common += ["--data.pool_limit", str(args.pool_limit)]
    if args.junk_share:
        common += ["--data.junk_share", str(args.junk_share)]
    ablation_base = [
        "--train.epochs", str(args.epochs), "--train.steps_per_epoch", str(args.steps_per_epoch),
        "--pseudo.rounds", str(ROUNDS), "--pseudo.top_k_percent", CURRICULUM, "--pseudo.class_balanced", "false",
        "--pseudo.score", "entropy",
    ]
    train_py = str(Path(__file__).resolve().parents[2] / "train.py")
    tasks: list[tuple[int, str, int, Path, list[str]]] = []
    for labels in args.labels:
        for row in args.rows:
            overrides = row_overrides(row, args.epochs)
            base = common if row in DEFAULT_ROWS else common + ablation_base
            for seed in args.seeds:
                run_dir = out / f"labels{labels}" / row / f"seed{seed}"
                cmd = [sys.executable, train_py, *base, *overrides, "--data.labeled_per_class", str(labels),
                       "--seed", str(seed), "--output_dir", str(run_dir)]
                tasks.append((labels, row, seed, run_dir, cmd))

    started = time.time()
    summaries: dict[tuple[int, str, int], dict[str, Any]] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_run_one, cmd, run_dir): (labels, row, seed) for labels, row, seed, run_dir, cmd in tasks}
        for future in concurrent.futures.as_completed(futures):
            labels, row, seed = futures[future]
            summary = summaries[(labels, row, seed)] = future.result()
            print(f"labels/class {labels:4d}  {row:28s} seed {seed}: test {100 * summary['final_accuracy']:.2f}%  "
                  f"corrupted {100 * summary['corrupted_accuracy']:.2f}%  ({summary['wall_time_s']} s)", flush=True)

    results: dict[str, Any] = {"rows": {}, "args": {k: v for k, v in vars(args).items() if k not in ("out", "test_root")}}
    for labels in args.labels:
        for row in args.rows:
            runs = [summaries[(labels, row, seed)] for seed in args.seeds]
            rounds = len(runs[0]["rounds"])
            per_round_acc = [statistics.fmean(r["rounds"][i]["test_accuracy"] for r in runs) for i in range(rounds)]
            per_round_precision = [_mean_of(r["rounds"][i].get("pseudo_label_precision") for r in runs) for i in range(rounds)]
            dirty = any(rr.get("junk_share") is not None for r in runs for rr in r["rounds"])
            histogram = None
            last_csv = out / f"labels{labels}" / row / f"seed{args.seeds[-1]}" / f"pseudo_labels_round{rounds - 1:02d}.csv"
            if rounds > 1 and last_csv.is_file():
                with open(last_csv, newline="") as f:
                    labels_col = torch.tensor([int(r["pseudo_label"]) for r in csv.DictReader(f)], dtype=torch.long)
                histogram = torch.bincount(labels_col, minlength=10).tolist()
            results["rows"][f"{labels}/{row}"] = {
                "labels_per_class": labels, "row": row, "description": ROWS[row][0], "seeds": args.seeds,
                "final_accuracy": _mean_std([r["final_accuracy"] for r in runs]),
                "corrupted_accuracy": _mean_std([r["corrupted_accuracy"] for r in runs]),
                "per_seed_final_accuracy": [r["final_accuracy"] for r in runs],
                "min_gain_over_round0_any_round": min(
                    (rr["test_accuracy"] - r["rounds"][0]["test_accuracy"] for r in runs for rr in r["rounds"][1:]), default=None
                ),
                "accuracy_per_round": per_round_acc, "precision_per_round": per_round_precision,
                "min_precision_any_round_any_seed": min(
                    (rr["pseudo_label_precision"] for r in runs for rr in r["rounds"][1:] if rr["pseudo_label_precision"] is not None),
                    default=None,
                ),
                "last_selection_class_histogram_seed_last": histogram,
                "baseline_accuracy": _mean_std([r["baseline_accuracy"] for r in runs]),
                "budget_steps": runs[0]["budget_steps"],
                "wall_time_s": sum(r["wall_time_s"] for r in runs),
                "cpu_time_s": sum(r["sweep_cpu_time_s"] for r in runs),
                "pseudo_labeled_per_round": [_mean_of(r["rounds"][i]["pseudo_labeled"] for r in runs) for i in range(rounds)],
            }
            if dirty:  # the junk share of each round's selection (its worst seed) and precision on real digits
                results["rows"][f"{labels}/{row}"].update({
                    "worst_junk_share_per_round": [
                        max((r["rounds"][i].get("junk_share") or 0.0 for r in runs), default=None) if i else None for i in range(rounds)
                    ],
                    "precision_real_per_round": [_mean_of(r["rounds"][i].get("precision_real") for r in runs) for i in range(rounds)],
                    "mean_junk_share_per_round": [
                        _mean_of(r["rounds"][i].get("junk_share") for r in runs) if i else None for i in range(rounds)
                    ],
                    "junk_kinds_last_round_all_seeds": _sum_counts(
                        junk_kinds_selected(out / f"labels{labels}" / row / f"seed{seed}", rounds - 1) for seed in args.seeds
                    ),
                })
    results["total_wall_time_s"] = round(time.time() - started, 1)
    results["total_cpu_time_s"] = round(sum(r["cpu_time_s"] for r in results["rows"].values()), 1)
    return results


def junk_kinds_selected(run_dir: Path, round_index: int) -> dict[str, int]:
    """How many junk images of each kind a run's round selected (the pseudo-label CSV names pool
    rows by source index; the run's own config rebuilds the dirty source that says which kind
    each junk index is)."""
    from plabel.config import load_config
    from plabel.data.junk import JUNK, JunkedSource
    from plabel.data.splits import make_splits

    cfg = load_config(run_dir / "config.yaml")
    source = make_splits(cfg.data, cfg.seed).train_source
    counts = {kind: 0 for kind in cfg.data.junk_kinds}
    path = run_dir / f"pseudo_labels_round{round_index:02d}.csv"
    if not isinstance(source, JunkedSource) or not path.is_file():
        return counts
    base = len(source.base.labels)
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if int(r["true_label"]) == JUNK:
                counts[source.kind(int(r["source_index"]) - base)] += 1
    return counts


def _sum_counts(parts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total


def write_report(results: dict[str, Any], out: Path) -> None:
    (out / "ablation.json").write_text(json.dumps(results, indent=1))
    lines = [
        "| labels/class | row | steps | round 0 acc | final test acc (mean ± std) | worst round − round 0 | corrupted acc "
        "| precision per round (%) | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"].values():
        precision = " / ".join("-" if p is None else f"{100 * p:.1f}" for p in r["precision_per_round"])
        worst = "-" if r["min_gain_over_round0_any_round"] is None else f"{100 * r['min_gain_over_round0_any_round']:+.2f}"
        lines.append(
            f"| {r['labels_per_class']} | {r['row']} | {r['budget_steps']} | {100 * r['baseline_accuracy'][0]:.2f} "
            f"| {100 * r['final_accuracy'][0]:.2f} ± {100 * r['final_accuracy'][1]:.2f} "
            f"| {worst} "
            f"| {100 * r['corrupted_accuracy'][0]:.2f} ± {100 * r['corrupted_accuracy'][1]:.2f} | {precision} | {len(r['seeds'])} |"
        )
    dirty = [r for r in results["rows"].values() if "worst_junk_share_per_round" in r]
    if dirty:
        lines += ["", "Dirty pool, per round 1 … (junk share of the selection: mean of seeds and worst seed; precision on "
                  "the real digits selected, and pseudo-labels selected: mean of seeds):", "",
                  "| labels/class | row | junk share of selection (%) | worst seed (%) | precision on real digits (%) | selected |",
                  "|---|---|---|---|---|---|"]
        for r in dirty:
            mean = " / ".join(f"{100 * j:.2f}" for j in r["mean_junk_share_per_round"][1:])
            junk = " / ".join(f"{100 * j:.2f}" for j in r["worst_junk_share_per_round"][1:])
            real = " / ".join("-" if p is None else f"{100 * p:.1f}" for p in r["precision_real_per_round"][1:])
            counts = " / ".join(f"{c:.0f}" for c in r["pseudo_labeled_per_round"][1:])
            lines.append(f"| {r['labels_per_class']} | {r['row']} | {mean} | {junk} | {real} | {counts} |")
        kinds = list(dirty[0]["junk_kinds_last_round_all_seeds"])
        lines += ["", "Junk in the last round's selection, by kind (all seeds together; each kind is 1/8 of the junk in every seed's pool):", "",
                  f"| labels/class | row | {' | '.join(kinds)} |", "|---|---|" + "---|" * len(kinds)]
        for r in dirty:
            counts = r["junk_kinds_last_round_all_seeds"]
            lines.append(f"| {r['labels_per_class']} | {r['row']} | {' | '.join(str(counts.get(k, 0)) for k in kinds)} |")
    lines += ["", "Pseudo-labels per class in the last round's selection (last seed):", "",
              "| labels/class | row | class 0 … 9 |", "|---|---|---|"]
    for r in results["rows"].values():
        if r["last_selection_class_histogram_seed_last"] is not None:
            counts = " ".join(str(c) for c in r["last_selection_class_histogram_seed_last"])
            lines.append(f"| {r['labels_per_class']} | {r['row']} | {counts} |")
    lines += ["", "What each row passes to train.py (on top of the common options; see the module docstring):", "",
              "| row | description | train.py options |", "|---|---|---|"]
    for row in dict.fromkeys(r["row"] for r in results["rows"].values()):
        overrides = row_overrides(row, results["args"]["epochs"])
        common = "the shipped config" if row in DEFAULT_ROWS else "ablation base"
        options = f"{common} + `{' '.join(overrides)}`" if overrides else common
        lines.append(f"| {row} | {ROWS[row][0]} | {options} |")
    lines.append(f"\nTotal wall time of this invocation: {results['total_wall_time_s']} s; "
                 f"CPU time of all runs in the table (training + corrupted test): {results['total_cpu_time_s']} s")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label_settings = sorted({r["labels_per_class"] for r in results["rows"].values()})
    fig, axes = plt.subplots(1, len(label_settings), figsize=(6 * len(label_settings) + 3, 4.5), squeeze=False)
    for ax, labels in zip(axes[0], label_settings):
        ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)  # up to 14 rows: no colour used twice
        for r in results["rows"].values():
            if r["labels_per_class"] != labels:
                continue
            accuracy = [100 * a for a in r["accuracy_per_round"]]
            if len(accuracy) == 1:  # supervised: its whole budget is round 0; a level to compare against
                color = "black" if r["row"] == "supervised" else "gray"
                ax.axhline(accuracy[0], linestyle="--", linewidth=1, color=color, label=r["row"])
            else:
                ax.plot(range(len(accuracy)), accuracy, marker="o", markersize=3, label=r["row"])
        ax.set_title(f"{labels} labels per class (mean of seeds)")
        ax.set_xlabel("round")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    fig.savefig(out / "accuracy_per_round.png", dpi=120)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = SpellingsParser(prog="python -m plabel.experiments.ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="results folder (runs are reused when rerun)")
    parser.add_argument("--labels", type=int, nargs="+", default=[10], help="labels per class settings (default: 10)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), help="rows to run (default: all)")
    parser.add_argument("--test-root", default=None, help="folder of MNIST idx test files (default: hold out of the embedded data)")
    parser.add_argument("--test-holdout", type=int, default=1000, help="held-out test size when --test-root is not given")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per round (default: 8)")
    parser.add_argument("--steps-per-epoch", type=int, default=30, help="steps per epoch (default: 30)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, the cores split between them (default: 1)")
    parser.add_argument("--pool-limit", type=int, default=None, help="cap the unlabeled pool (smoke runs)")
    parser.add_argument("--junk-share", type=float, default=0.0,
                        help="a dirty pool: junk images added until they are this share of it (data.junk_share; default 0)")
    args = parser.parse_args(argv)
    results = run_sweep(args)
    write_report(results, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
