"""How many held-out labeled images the precision estimate needs: an offline study on finished runs.

    python -m plabel.experiments.field.estimate_floor results/field/v032/*/seed5 --out results/field/estimate-floor/seed5.json
    python -m plabel.experiments.field.estimate_floor --summarize results/field/estimate-floor/*.json

The run's estimate is the mean top probability of the selected pool images under softmax(logits / T),
T fitted on held-out labeled images (``plabel.method.scores.fit_temperature``). Its error has two
parts: T fitted on a model other than the teacher (0.3.2's round-0 temperature, fitted before the
rounds improve the teacher), and T fitted on few images. This study removes the first: it takes
each run's final model as the teacher of a next round, selects the lowest-entropy k% of its pool
(class-balanced, as the default), measures their precision through the set's ``truth.csv``, and
fits T on n labeled test images per class (test images: labeled, never trained on, the pool's
distribution), ``draws`` times per n. The result is the error a per-round refit
(``data.val_scope rounds``) would have at ``data.val_per_class`` n, on this teacher: the floor a
calibration on n images per class can reach, and the n the issue's 3-point target needs.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path
from typing import Any, Sequence

import torch

from plabel.method.scores import fit_temperature
from plabel.method.selection import select_pseudo_labels


def _set_folder(run: Any) -> Path:
    """data/field/<set>: the run's unlabeled folder's parent."""
    return Path(run.config.data.unlabeled.root).parent


def _predict(run: Any, paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities (temperature 1) and entropy in bits of ``paths``."""
    result = run.predict([str(p) for p in paths], batch_size=500)
    return result.probabilities.clamp_min(1e-12).log(), result.entropy


def fit_platt(feature: torch.Tensor, correct: torch.Tensor, steps: int = 100) -> tuple[float, float]:
    """P(right) = sigmoid(a + b * feature), fitted by cross-entropy (Platt scaling on one score), with
    a small ridge term so that a 20-image fit that separates perfectly stays finite."""
    ab = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.LBFGS([ab], lr=0.5, max_iter=steps)
    x, y = feature.float(), correct.float()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(ab[0] + ab[1] * x, y) + 1e-3 * (ab ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(ab[0].detach()), float(ab[1].detach())


def _feature(entropy: torch.Tensor) -> torch.Tensor:
    return (entropy + 1e-4).log()


def _quantile(entropy: torch.Tensor) -> torch.Tensor:
    """Each value's rank within its own set, in (0, 1): where it stands, whatever the set's entropy scale."""
    ranks = entropy.argsort().argsort().double()
    return ((ranks + 0.5) / len(entropy)).float()


def study(folder: Path, percents: Sequence[float], per_class: Sequence[int], draws: int, seed: int) -> dict[str, Any]:
    from plabel.use.run import load_run

    run = load_run(folder, device="cpu")
    root = _set_folder(run)
    index = {name: i for i, name in enumerate(run.class_names)}
    with open(root / "truth.csv", newline="") as f:
        truth = [(root / "unlabeled" / row["path"], index[row["label"]]) for row in csv.DictReader(f)]
    pool_logp, pool_entropy = _predict(run, [p for p, _ in truth])
    pool_true = torch.tensor([y for _, y in truth])
    pool_pred = pool_logp.argmax(1)
    tests = sorted((p, index[p.parent.name]) for p in (root / "test").glob("*/*") if p.is_file())
    test_logp, test_entropy = _predict(run, [p for p, _ in tests])
    test_true = torch.tensor([y for _, y in tests])
    by_class = [(test_true == c).nonzero().flatten() for c in range(len(index))]
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {"run": str(folder), "pool": len(truth), "test": len(tests), "draws": draws, "seed": seed,
                           "pool_accuracy": float((pool_pred == pool_true).double().mean()), "percents": {}}
    full_t = fit_temperature(test_logp, test_true)
    for percent in percents:
        # The product's own class-balanced selection (floor(n_c * k / 100) a predicted class), so the
        # study measures exactly the picks a next round would make.
        chosen = select_pseudo_labels(pool_entropy, pool_pred, percent, len(index), class_balanced=True).indices
        precision = float((pool_pred[chosen] == pool_true[chosen]).double().mean())

        def estimate(t: float) -> float:
            return float(torch.softmax(pool_logp[chosen] / t, 1).max(1).values.double().mean())

        def platt(picks: torch.Tensor) -> float:
            a, b = fit_platt(_feature(test_entropy[picks]), test_logp[picks].argmax(1) == test_true[picks])
            return float(torch.sigmoid(a + b * _feature(pool_entropy[chosen])).double().mean())

        every = torch.arange(len(tests))
        pool_q = _quantile(pool_entropy)

        def rank_platt(picks: torch.Tensor) -> float:
            a, b = fit_platt(_quantile(test_entropy[picks]), test_logp[picks].argmax(1) == test_true[picks])
            return float(torch.sigmoid(a + b * pool_q[chosen]).double().mean())

        row: dict[str, Any] = {"selected": len(chosen), "precision": precision, "uncalibrated_error": abs(estimate(1.0) - precision),
                               "all_test_temperature": full_t, "all_test_error": estimate(full_t) - precision,
                               "all_test_platt_error": platt(every) - precision,
                               "all_test_rank_error": rank_platt(every) - precision, "by_n": {}}
        for n in per_class:
            if n > min(len(m) for m in by_class):
                continue
            errors, platts, ranks = [], [], []
            for _ in range(draws):
                picks = torch.cat([m[torch.randperm(len(m), generator=g)[:n]] for m in by_class])
                errors.append(abs(estimate(fit_temperature(test_logp[picks], test_true[picks])) - precision))
                platts.append(abs(platt(picks) - precision))
                ranks.append(abs(rank_platt(picks) - precision))
            errors.sort()
            platts.sort()
            ranks.sort()
            row["by_n"][n] = {"mean_abs_error": statistics.fmean(errors), "p90_abs_error": errors[int(0.9 * len(errors))],
                              "platt_mean_abs_error": statistics.fmean(platts), "platt_p90_abs_error": platts[int(0.9 * len(platts))],
                              "rank_mean_abs_error": statistics.fmean(ranks), "rank_p90_abs_error": ranks[int(0.9 * len(ranks))]}
        out["percents"][str(percent)] = row
    return out


def summary_table(results: list[dict[str, Any]]) -> str:
    """docs/results.md's table: per calibrator and n, the mean absolute error over every (teacher, k)
    cell, the largest, and how many cells are within 3 points; the first row fitted on all test images."""
    cells = [row for r in results for row in r["percents"].values()]
    keys = (("temperature", "all_test_error", "mean_abs_error"), ("Platt on log entropy", "all_test_platt_error", "platt_mean_abs_error"),
            ("entropy rank", "all_test_rank_error", "rank_mean_abs_error"))
    lines = [f"| calibrated on ({len(results)} teachers, {len(cells)} cells) | " + " | ".join(k[0] for k in keys) + " |",
             "|---" * (len(keys) + 1) + "|"]
    signed = [[100 * c[k[1]] for c in cells] for k in keys]
    lines.append("| all test images (signed) | " + " | ".join(
        f"{min(v):+.1f} to {max(v):+.1f}, mean abs {statistics.fmean(map(abs, v)):.1f} ({sum(abs(x) <= 3 for x in v)})" for v in signed) + " |")
    for n in sorted({int(n) for c in cells for n in c["by_n"]}):
        values = [[100 * c["by_n"][str(n)][k[2]] for c in cells if str(n) in c["by_n"]] for k in keys]
        lines.append(f"| {n} a class | " + " | ".join(
            f"{statistics.fmean(v):.1f} ({max(v):.1f}; {sum(x <= 3 for x in v)} of {len(v)})" for v in values) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plabel.experiments.field.estimate_floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="finished run folders (a field set's runs: truth.csv and test folder)")
    parser.add_argument("--percents", nargs="+", type=float, default=[30.0, 60.0, 95.0])
    parser.add_argument("--per_class", nargs="+", type=int, default=[2, 5, 10, 20, 50])
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="where to write the study (JSON)")
    parser.add_argument("--summarize", nargs="+", type=Path, default=None, help="print the table of these studies (JSON) and stop")
    args = parser.parse_args(argv)
    if args.summarize:
        print(summary_table([r for path in args.summarize for r in json.loads(path.read_text())]))
        return 0
    if args.out is None:
        parser.error("--out is required to run a study")
    torch.set_num_threads(1)
    results = [study(folder, args.percents, args.per_class, args.draws, args.seed) for folder in args.runs]
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    for r in results:
        for percent, row in r["percents"].items():
            cells = "  ".join(f"n={n}: {100 * v['mean_abs_error']:.1f}/{100 * v['platt_mean_abs_error']:.1f}/{100 * v['rank_mean_abs_error']:.1f}" for n, v in row["by_n"].items())
            print(f"{r['run']}  k={percent}%  precision {100 * row['precision']:.2f}  T=1 error {100 * row['uncalibrated_error']:.1f}  "
                  f"all-test T {row['all_test_temperature']:.2f} error {100 * row['all_test_error']:+.1f}, Platt "
                  f"{100 * row['all_test_platt_error']:+.1f}, rank {100 * row['all_test_rank_error']:+.1f}  mean |error| T/Platt/rank: {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
