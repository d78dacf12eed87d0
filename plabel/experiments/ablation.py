"""The ablations: which selections, schedules and settings make pseudo-labels pay, as grids that
``plabel sweep`` runs (one runner for every table).

    python -m plabel.experiments.ablation --test-root /path/to/mnist-test --labels 10 --seeds 0 1 2 \
        --rows default default_random --junk-share 0.3 --out results/dirty-30 --jobs 2

writes ``<out>/grid.yaml`` (the runs, one row per (labels, row): ``<row>`` or ``<row>-labels<N>``)
and runs ``plabel sweep`` on it: finished runs are reused, an interrupted one resumes, and the table
(``sweep.md/json/csv/png``) has what only the ablations measured before: accuracy on a corrupted
copy of the test set, the junk share per round and the junk by kind of a dirty pool, the last
selection's class histogram. Every row keeps the budget it always had ((rounds + 1) x epochs x
steps_per_epoch optimizer steps; the supervised row spends it all in round 0; the "default" rows
keep the shipped configuration's own budget). "The shipped configuration" is plabel 0.2's default
(``configs/default-0.2.yaml``), which every committed ablation result was made with.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

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


def row_overrides(row: str, epochs: int) -> list[str]:
    """The train.py options a row adds to its base; the supervised row gets the whole budget."""
    overrides = list(ROWS[row][1])
    if row == "supervised":  # the same number of optimizer steps, all in round 0
        overrides += ["--train.epochs", str(epochs * (ROUNDS + 1))]
    return overrides


def grid_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The grid of an ablation invocation: the runs it always made, in plabel sweep's terms."""
    options: dict[str, Any] = {"tracking.mode": "disabled", "data.test_holdout": args.test_holdout, "data.val_per_class": 0}
    if args.test_root:
        options.update({"data.test.source": "idx", "data.test.root": args.test_root, "data.test.split": "test"})
    if args.pool_limit:
        options["data.pool_limit"] = args.pool_limit
    if args.junk_share:
        options["data.junk_share"] = args.junk_share
    base = {"train.epochs": args.epochs, "train.steps_per_epoch": args.steps_per_epoch, "pseudo.rounds": ROUNDS,
            "pseudo.top_k_percent": [20, 40, 60, 80, 100], "pseudo.class_balanced": False, "pseudo.score": "entropy"}
    rows = []
    for labels in args.labels:
        for row in args.rows:
            overrides = dict(zip(row_overrides(row, args.epochs)[0::2], row_overrides(row, args.epochs)[1::2]))
            overrides = {k.removeprefix("--"): yaml.safe_load(v) for k, v in overrides.items()}
            name = row if len(args.labels) == 1 else f"{row}-labels{labels}"
            merged = {**({} if row in DEFAULT_ROWS else base), **overrides, "data.labeled_per_class": labels}
            if "train.epochs" in merged:  # round 0 as long as the others, as every ablation ran (0.3.1's default: 3x)
                merged["train.round0_epochs"] = merged["train.epochs"]
            rows.append({"name": name, "description": ROWS[row][0], "overrides": merged})
    base_file = os.path.relpath(CONFIG_0_2, Path(args.out).resolve())  # relative: the grid file travels with the results
    return {"name": Path(args.out).name, "base": base_file, "options": options, "seeds": list(args.seeds),
            "evaluate": ["corrupted", "junk_kinds", "class_histogram"], "rows": rows}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = SpellingsParser(prog="python -m plabel.experiments.ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="results folder: its grid.yaml and the sweep (runs are reused when rerun)")
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.yaml").write_text("# written by python -m plabel.experiments.ablation (its arguments, as plabel sweep's grid)\n"
                                   + yaml.safe_dump(grid_spec(args), sort_keys=False, width=200))
    from plabel.commands.sweep import sweep_main

    return sweep_main([str(out / "grid.yaml"), "--jobs", str(args.jobs), "--out", str(out)])


if __name__ == "__main__":
    raise SystemExit(main())
