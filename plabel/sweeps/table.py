"""A sweep's table: every row's final and per-round test accuracy and pseudo-label precision, mean
± std over its seeds, as Markdown, JSON and CSV, and a figure. A row with a missing seed says so
in every output (``2 of 3 seeds``); its mean is over the seeds that finished, and never shown
without that mark."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path
from typing import Any, Optional

from plabel.sweeps.grid import Grid
from plabel.sweeps.runs import run_dir


def _mean_std(values: list[float]) -> Optional[list[float]]:
    if not values:
        return None
    return [statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0]


def collect(grid: Grid, out: Path) -> dict[str, Any]:
    """The table's data, from the finished runs' summary.json files."""
    rows = []
    for row in grid.rows:
        summaries = {}
        for seed in grid.seeds:
            path = run_dir(out, row.name, seed) / "summary.json"
            if path.is_file():
                summaries[seed] = json.loads(path.read_text())
        runs = list(summaries.values())
        rounds = max((len(r["rounds"]) for r in runs), default=0)
        rows.append({
            "row": row.name, "description": row.description, "overrides": grid.overrides(row),
            "seeds": grid.seeds, "seeds_done": sorted(summaries), "complete": len(summaries) == len(grid.seeds),
            "final_accuracy": _mean_std([r["final_accuracy"] for r in runs]),
            "baseline_accuracy": _mean_std([r["baseline_accuracy"] for r in runs]),
            "accuracy_per_round": [
                _mean_std([r["rounds"][i]["test_accuracy"] for r in runs if len(r["rounds"]) > i]) for i in range(rounds)
            ],
            "precision_per_round": [
                _mean_std([r["rounds"][i]["pseudo_label_precision"] for r in runs
                           if len(r["rounds"]) > i and r["rounds"][i]["pseudo_label_precision"] is not None])
                for i in range(rounds)
            ],
            "per_seed_final_accuracy": {str(s): summaries[s]["final_accuracy"] for s in sorted(summaries)},
            "selected_per_round": [
                _mean_std([float(r["rounds"][i]["pseudo_labeled"]) for r in runs if len(r["rounds"]) > i]) for i in range(rounds)
            ],
            **_dirty(runs, rounds),
            **_evaluations(grid, out, row.name, sorted(summaries)),
        })
    return {"sweep": grid.name, "grid": str(grid.path), "seeds": grid.seeds, "rows": rows}


def _per_round(runs: list[dict[str, Any]], rounds: int, key: str) -> list[list[float]]:
    return [[float(r["rounds"][i][key]) for r in runs if len(r["rounds"]) > i and r["rounds"][i].get(key) is not None]
            for i in range(rounds)]


def _dirty(runs: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    """A pool with junk (data.junk_share): per round, the junk share of the selection (mean and worst
    seed) and the precision on the real samples selected. Nothing for a clean pool."""
    junk = _per_round(runs, rounds, "junk_share")
    if not any(junk):
        return {}
    return {"junk_share_per_round": [_mean_std(v) for v in junk],
            "junk_share_worst_per_round": [max(v) if v else None for v in junk],
            "precision_real_per_round": [_mean_std(v) for v in _per_round(runs, rounds, "precision_real")]}


def _evaluations(grid: Grid, out: Path, row: str, seeds: list[int]) -> dict[str, Any]:
    """The grid's extra measures of each finished run (grid ``evaluate``), computed once per run."""
    found: dict[str, Any] = {}
    if not seeds:
        return found
    folders = [run_dir(out, row, s) for s in seeds]
    if "corrupted" in grid.evaluate:
        from plabel.sweeps.evaluations import cached_corrupted_accuracy

        found["corrupted_accuracy"] = _mean_std([cached_corrupted_accuracy(f) for f in folders])
    last = max((int(p.stem[-2:]) for p in folders[-1].glob("pseudo_labels_round*.csv")), default=None)
    if "junk_kinds" in grid.evaluate and last is not None:
        from plabel.sweeps.evaluations import junk_kinds_selected

        kinds: dict[str, int] = {}
        for f in folders:
            for kind, n in junk_kinds_selected(f, last).items():
                kinds[kind] = kinds.get(kind, 0) + n
        if any(kinds.values()) or any(True for _ in folders[-1].glob("pseudo_labels_round*.csv")):
            found["junk_kinds_last_round"] = kinds
    if "class_histogram" in grid.evaluate and last is not None:
        with open(folders[-1] / f"pseudo_labels_round{last:02d}.csv", newline="") as f:
            labels = [int(r["pseudo_label"]) for r in csv.DictReader(f)]
        found["class_histogram_last_round"] = [labels.count(c) for c in range(max(labels, default=-1) + 1)]
    return found


def _pct(ms: Optional[list[float]]) -> str:
    return "-" if ms is None else f"{100 * ms[0]:.2f} ± {100 * ms[1]:.2f}"


def _seeds(r: dict[str, Any]) -> str:
    done, total = len(r["seeds_done"]), len(r["seeds"])
    return f"{done}" if done == total else f"**{done} of {total}** (missing: {', '.join(map(str, sorted(set(r['seeds']) - set(r['seeds_done']))))})"


def markdown(table: dict[str, Any]) -> str:
    lines = [
        f"Sweep `{table['sweep']}` ({table['grid']}): test accuracy and pseudo-label precision (%), mean ± std over seeds.",
        "",
        "| row | description | seeds | final accuracy | accuracy per round | precision per round |",
        "|---|---|---|---|---|---|",
    ]
    for r in table["rows"]:
        per_round = " / ".join("-" if ms is None else f"{100 * ms[0]:.2f}" for ms in r["accuracy_per_round"])
        precision = " / ".join("-" if ms is None else f"{100 * ms[0]:.1f}" for ms in r["precision_per_round"])
        lines.append(f"| {r['row']} | {r['description']} | {_seeds(r)} | {_pct(r['final_accuracy'])} | {per_round or '-'} | {precision or '-'} |")
    if any("corrupted_accuracy" in r for r in table["rows"]):
        lines += ["", "Final weights on the corrupted test set (Gaussian pixel noise and small rotations; plabel.sweeps.evaluations):", "",
                  "| row | corrupted accuracy |", "|---|---|"]
        lines += [f"| {r['row']} | {_pct(r.get('corrupted_accuracy'))} |" for r in table["rows"] if "corrupted_accuracy" in r]
    if any("junk_share_per_round" in r for r in table["rows"]):
        lines += ["", "Dirty pool, per round 1 … (junk share of the selection: mean of seeds and worst seed; precision on the "
                  "real samples selected, and pseudo-labels selected: mean of seeds):", "",
                  "| row | junk share of selection (%) | worst seed (%) | precision on real samples (%) | selected |", "|---|---|---|---|---|"]
        for r in table["rows"]:
            if "junk_share_per_round" not in r:
                continue
            later = slice(1, None)  # round 0 selects nothing
            junk = " / ".join("-" if ms is None else f"{100 * ms[0]:.2f}" for ms in r["junk_share_per_round"][later])
            worst = " / ".join("-" if v is None else f"{100 * v:.2f}" for v in r["junk_share_worst_per_round"][later])
            real = " / ".join("-" if ms is None else f"{100 * ms[0]:.1f}" for ms in r["precision_real_per_round"][later])
            selected = " / ".join("-" if ms is None else f"{ms[0]:.0f}" for ms in r["selected_per_round"][later])
            lines.append(f"| {r['row']} | {junk} | {worst} | {real} | {selected} |")
    kinds = next((list(r["junk_kinds_last_round"]) for r in table["rows"] if r.get("junk_kinds_last_round")), None)
    if kinds and any("junk_share_per_round" in r for r in table["rows"]):
        lines += ["", "Junk in the last round's selection, by kind (all seeds together):", "",
                  f"| row | {' | '.join(kinds)} |", "|---|" + "---|" * len(kinds)]
        lines += [f"| {r['row']} | {' | '.join(str(r['junk_kinds_last_round'].get(k, 0)) for k in kinds)} |"
                  for r in table["rows"] if "junk_kinds_last_round" in r]
    if any("class_histogram_last_round" in r for r in table["rows"]):
        lines += ["", "Pseudo-labels per class in the last round's selection (the row's last seed):", "", "| row | class 0 … |", "|---|---|"]
        lines += [f"| {r['row']} | {' '.join(map(str, r['class_histogram_last_round']))} |"
                  for r in table["rows"] if "class_histogram_last_round" in r]
    if not all(r["complete"] for r in table["rows"]):
        lines += ["", "Rows marked **n of m** are missing seeds: their means are over the seeds that finished only."]
    return "\n".join(lines) + "\n"


def csv_text(table: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["row", "seeds_done", "seeds", "complete", "final_accuracy_mean", "final_accuracy_std",
                     "accuracy_per_round_mean", "precision_per_round_mean"])
    for r in table["rows"]:
        final = r["final_accuracy"] or [None, None]
        writer.writerow([
            r["row"], len(r["seeds_done"]), len(r["seeds"]), r["complete"],
            "" if final[0] is None else f"{final[0]:.6f}", "" if final[1] is None else f"{final[1]:.6f}",
            " ".join("" if ms is None else f"{ms[0]:.6f}" for ms in r["accuracy_per_round"]),
            " ".join("" if ms is None else f"{ms[0]:.6f}" for ms in r["precision_per_round"]),
        ])
    return buffer.getvalue()


def figure(table: dict[str, Any], path: Path) -> None:
    """Accuracy per round, one line per row (mean over its seeds, std as a band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in table["rows"]:
        points = [(i, ms) for i, ms in enumerate(r["accuracy_per_round"]) if ms is not None]
        if not points:
            continue
        xs = [i for i, _ in points]
        mean = [100 * ms[0] for _, ms in points]
        std = [100 * ms[1] for _, ms in points]
        label = r["row"] + ("" if r["complete"] else f" ({len(r['seeds_done'])} of {len(r['seeds'])} seeds)")
        ax.plot(xs, mean, marker="o", label=label)
        ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.15)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"sweep {table['sweep']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_table(grid: Grid, out: Path) -> dict[str, Any]:
    """sweep.md, sweep.json, sweep.csv and sweep.png in the sweep folder; returns the table."""
    table = collect(grid, out)
    (out / "sweep.md").write_text(markdown(table))
    (out / "sweep.json").write_text(json.dumps(table, indent=1) + "\n")
    (out / "sweep.csv").write_text(csv_text(table))
    figure(table, out / "sweep.png")
    return table
