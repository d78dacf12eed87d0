"""Tables and the map figure from the field set's sweeps (rows named ``<set>-<budget>-<variant>``).

    python -m plabel.experiments.field.report results/field/screen results/field/map \\
        --reference cand --out docs/figures/field-map.png

For every (set, budget) cell: each variant's final test accuracy (mean ± std over its seeds), its
round 0, the gain, the pseudo-label precision and the precision estimate per round (and their mean
absolute difference), and each variant's paired difference from ``--reference`` (same seeds).
The figure is the map of issue 37: the reference minus its random twin, and minus the supervised
baseline (its own round 0), against round-0 accuracy, one point per cell with the seed spread.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from plabel.config.args import SpellingsParser


@dataclass
class Cell:
    """One (set, budget, variant): per seed, the run's summary."""

    name: str
    budget: int
    variant: str
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)

    def values(self, key: str) -> dict[int, float]:
        return {s: 100 * float(r[key]) for s, r in self.runs.items()}

    def estimate_error(self) -> Optional[float]:
        """Mean |estimate - measured precision| in points, over every round of every seed with both."""
        gaps = [abs(r["precision_estimate"] - r["pseudo_label_precision"]) for run in self.runs.values() for r in run["rounds"]
                if r.get("precision_estimate") is not None and r.get("pseudo_label_precision") is not None]
        return 100 * statistics.fmean(gaps) if gaps else None


def load(folders: Sequence[Path]) -> dict[tuple[str, int, str], Cell]:
    cells: dict[tuple[str, int, str], Cell] = {}
    for folder in folders:
        for summary in sorted(Path(folder).glob("*/seed*/summary.json")):
            row, seed = summary.parent.parent.name, int(summary.parent.name.removeprefix("seed"))
            name, budget, variant = row.split("-", 2)
            cell = cells.setdefault((name, int(budget), variant), Cell(name, int(budget), variant))
            cell.runs[seed] = json.loads(summary.read_text())
    return cells


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: Sequence[float]) -> str:
    if not values:
        return "-"
    m, s = mean_std(values)
    return f"{m:.2f} ± {s:.2f}" if len(values) > 1 else f"{m:.2f}"


def paired(a: Cell, b: Cell, key: str = "final_accuracy") -> list[float]:
    va, vb = a.values(key), b.values(key)
    return [va[s] - vb[s] for s in sorted(va) if s in vb]


def table(cells: dict[tuple[str, int, str], Cell], reference: str) -> str:
    lines = [f"| set | labels/class | variant | seeds | round 0 | final | gain | − {reference} (paired) | precision, last round | estimate error |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (name, budget, variant), cell in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] != reference, kv[0][2])):
        ref = cells.get((name, budget, reference))
        diff = paired(cell, ref) if ref is not None and variant != reference else []
        last = [100 * r["rounds"][-1]["pseudo_label_precision"] for r in cell.runs.values()
                if r["rounds"][-1].get("pseudo_label_precision") is not None]
        error = cell.estimate_error()
        gain = [f - b for f, b in zip(cell.values("final_accuracy").values(), cell.values("baseline_accuracy").values())]
        lines.append(f"| {name} | {budget} | {variant} | {','.join(map(str, sorted(cell.runs)))} | {fmt(list(cell.values('baseline_accuracy').values()))} | "
                     f"{fmt(list(cell.values('final_accuracy').values()))} | {fmt(gain)} | {fmt(diff) if diff else '-'} | {fmt(last)} | "
                     f"{'-' if error is None else f'{error:.1f}'} |")
    return "\n".join(lines)


def map_points(cells: dict[tuple[str, int, str], Cell], reference: str, twin: str) -> list[dict[str, Any]]:
    """One map point per (set, budget): one reference against its own twin."""
    return pooled_points(cells, [reference], [twin], reference)


def pooled_points(cells: dict[tuple[str, int, str], Cell], references: Sequence[str], twins: Sequence[str], label: str) -> list[dict[str, Any]]:
    """One map point per (set, budget) from several defaults at once: each reference's paired
    differences from its own twin, pooled. The shipped default changed between the seeds' runs
    (0.3.1 at seeds 3-4, 0.3.2 at 5-7), but default − twin is measured within each release, so the
    pooled pairs still ask one question: do entropy's picks beat random ones of the same counts?"""
    by_cell: dict[tuple[str, int], dict[str, list[float]]] = {}
    for reference, twin in zip(references, twins):
        for (name, budget, variant), cell in cells.items():
            if variant != reference:
                continue
            acc = by_cell.setdefault((name, budget), {"round0": [], "vs_random": [], "vs_baseline": []})
            acc["round0"] += list(cell.values("baseline_accuracy").values())
            acc["vs_baseline"] += [f - b for f, b in zip(cell.values("final_accuracy").values(), cell.values("baseline_accuracy").values())]
            rnd = cells.get((name, budget, twin))
            acc["vs_random"] += paired(cell, rnd) if rnd is not None else []
    return [{"set": name, "budget": budget, "variant": label, "round0": mean_std(acc["round0"]),
             "vs_random": mean_std(acc["vs_random"]) if acc["vs_random"] else None, "vs_baseline": mean_std(acc["vs_baseline"]),
             "seeds": len(acc["round0"]), "random_seeds": len(acc["vs_random"]),
             "ahead": sum(d > 0 for d in acc["vs_random"]), "behind": sum(d < 0 for d in acc["vs_random"])}
            for (name, budget), acc in sorted(by_cell.items())]


def map_table(points: list[dict[str, Any]]) -> str:
    """The map as a table (issue 37): one row per arm x (set, budget), weakest teacher first."""
    lines = ["| arm | set | labels/class | round 0 | − random picks (paired) | ahead / behind / level | − round 0 |",
             "|---|---|---|---|---|---|---|"]
    for p in sorted(points, key=lambda p: (p["variant"], p["round0"][0])):
        vs = p["vs_random"]
        rnd = "-" if vs is None else (f"{vs[0]:+.2f} ± {vs[1]:.2f} ({p['random_seeds']} seeds)" if p["random_seeds"] > 1 else f"{vs[0]:+.2f} (1 seed)")
        count = "-" if vs is None else f"{p['ahead']} / {p['behind']} / {p['random_seeds'] - p['ahead'] - p['behind']}"
        (r0, r0s), (g, gs) = p["round0"], p["vs_baseline"]
        lines.append(f"| {p['variant']} | {p['set']} | {p['budget']} | {r0:.1f} ± {r0s:.1f} | {rnd} | {count} | {g:+.2f} ± {gs:.2f} |")
    return "\n".join(lines)


def round_precisions(cell: Cell, seeds: Sequence[int]) -> list[Optional[float]]:
    """Mean pseudo-label precision (points) of each round after 0 over ``seeds``; None where a round has none."""
    by_round: dict[int, list[float]] = {}
    for s in seeds:
        for r in cell.runs[s]["rounds"][1:]:
            if r.get("pseudo_label_precision") is not None:
                by_round.setdefault(r["round_index"], []).append(100 * r["pseudo_label_precision"])
    last = max(by_round, default=0)
    return [statistics.fmean(by_round[i]) if i in by_round else None for i in range(1, last + 1)]


def precision_table(cells: dict[tuple[str, int, str], Cell], reference: str, twin: str) -> str:
    """Issue 37's 'precision of each arm per round': the reference's and its random twin's measured
    pseudo-label precision, round by round, over the seeds both have (so the arms see the same seeds)."""
    rows = []
    for (name, budget, variant), cell in sorted(cells.items()):
        rnd = cells.get((name, budget, twin))
        seeds = sorted(set(cell.runs) & set(rnd.runs)) if variant == reference and rnd is not None else []
        if seeds:
            rows.append((name, budget, seeds, round_precisions(cell, seeds), round_precisions(rnd, seeds)))
    width = max((len(a) for *_, a, _ in rows), default=0)
    lines = ["| set | labels/class | seeds | " + " | ".join(f"round {i}: {reference} / random" for i in range(1, width + 1)) + " |",
             "|---|---|---|" + "---|" * width]
    for name, budget, seeds, ours, theirs in rows:
        pairs = [f"{a:.2f} / {b:.2f} ({a - b:+.1f})" if a is not None and b is not None else "-"
                 for a, b in zip(ours + [None] * (width - len(ours)), theirs + [None] * (width - len(theirs)))]
        lines.append(f"| {name} | {budget} | {','.join(map(str, seeds))} | " + " | ".join(pairs) + " |")
    return "\n".join(lines)


def temperature_rows(folders: Sequence[Path]) -> list[dict[str, Any]]:
    """Per run of ``data.val_scope round0`` (its metrics.jsonl has round 0's temperature): the
    temperature and the estimate's signed error (points) per round, for the round line's "likely
    low" cut (plabel.trainer.outputs.OVERCONFIDENT_TEMPERATURE)."""
    found = []
    for folder in folders:
        for metrics in sorted(Path(folder).glob("*/seed*/metrics.jsonl")):
            t, errors = None, []
            for line in metrics.read_text().splitlines():
                m = json.loads(line)
                t = m.get("select/confidence_temperature_round0", t)
                if m.get("select/precision_estimate") is not None and m.get("select/pseudo_label_precision") is not None:
                    errors.append(100 * (m["select/precision_estimate"] - m["select/pseudo_label_precision"]))
            if t is not None and errors:
                found.append({"row": metrics.parent.parent.name, "seed": int(metrics.parent.name.removeprefix("seed")),
                              "temperature": t, "errors": errors})
    return sorted(found, key=lambda r: r["temperature"])


def temperature_table(rows: list[dict[str, Any]]) -> str:
    from plabel.trainer.outputs import OVERCONFIDENT_TEMPERATURE

    lines = ["| row | seed | round 0's T | round 1 | rounds 2+ | the round line |", "|---|---|---|---|---|---|"]
    for r in rows:
        later = r["errors"][1:]
        span = f"{min(later):+.1f} to {max(later):+.1f}" if later else "-"
        flag = "likely low" if r["temperature"] >= OVERCONFIDENT_TEMPERATURE else "–"
        lines.append(f"| {r['row']} | {r['seed']} | {r['temperature']:.2f} | {r['errors'][0]:+.1f} | {span} | {flag} |")
    return "\n".join(lines)


def figure(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(p["variant"] for p in points))
    styles = dict(zip(variants, ("o", "s", "^", "D")))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for ax, key, title in ((axes[0], "vs_random", f"{' / '.join(variants)} − random picks of the same counts"),
                           (axes[1], "vs_baseline", f"{' / '.join(variants)} − its round 0 (supervised baseline)")):
        for variant in variants:
            colour = None
            for p in points:
                if p[key] is None or p["variant"] != variant:
                    continue
                (x, xs), (y, ys) = p["round0"], p[key]
                bars = ax.errorbar(x, y, xerr=xs, yerr=ys, fmt=styles.get(variant, "o"), capsize=3, color=colour,
                                   label=variant if colour is None else None)
                colour = bars[0].get_color()  # one colour per variant
                ax.annotate(f"{p['set']} {p['budget']}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("round-0 test accuracy (%): the teacher's strength")
        ax.set_ylabel("points of final test accuracy")
        if len(variants) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = SpellingsParser(prog="python -m plabel.experiments.field.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="sweep folders (their <row>/seed<k>/summary.json)")
    parser.add_argument("--reference", nargs="+", default=["cand"],
                        help="the variant others are compared with (default: cand); several put several arms on the map")
    parser.add_argument("--twin", nargs="+", default=None, help="each reference's random twin (default: <reference>_random)")
    parser.add_argument("--pooled", nargs="+", default=None, metavar="REFERENCE",
                        help="put these references on the map as one arm ('default'), their pairs with their twins pooled per cell")
    parser.add_argument("--out", default=None, help="the map figure (PNG); its points go beside it as JSON")
    parser.add_argument("--temperatures", default=None,
                        help="write each val_scope round0 run's round-0 temperature and estimate errors (JSON, from "
                             "metrics.jsonl) here, print their table and stop")
    args = parser.parse_args(argv)
    if args.temperatures:
        found = temperature_rows([Path(f) for f in args.folders])
        Path(args.temperatures).write_text(json.dumps(found, indent=1) + "\n")
        print(temperature_table(found))
        return 0 if found else 1
    twins = args.twin or [f"{r}_random" for r in args.reference]
    if len(twins) != len(args.reference):
        parser.error(f"--twin: {len(twins)} given for {len(args.reference)} --reference; give one twin per reference")
    cells = load([Path(f) for f in args.folders])
    print(table(cells, args.reference[0]))
    points = []
    for reference, twin in zip(args.reference, twins):
        print("\n" + precision_table(cells, reference, twin))
        if reference not in (args.pooled or ()):
            points += map_points(cells, reference, twin)
    if args.pooled:
        unknown = [r for r in args.pooled if r not in args.reference]
        if unknown:
            parser.error(f"--pooled: {', '.join(unknown)} not among --reference; name each pooled arm there too")
        points += pooled_points(cells, args.pooled, [twins[args.reference.index(r)] for r in args.pooled], "default")
    if args.out:
        figure(points, Path(args.out))
        Path(args.out).with_suffix(".json").write_text(json.dumps(points, indent=1) + "\n")
    print("\n" + map_table(points) + "\n")
    for p in points:
        if p["vs_random"] is not None:
            print(f"{p['variant']:6s} {p['set']:14s} {p['budget']:3d}: round 0 {p['round0'][0]:6.2f}  − random {p['vs_random'][0]:+6.2f} ± {p['vs_random'][1]:.2f} "
                  f"({p['random_seeds']} seeds)  − baseline {p['vs_baseline'][0]:+6.2f} ± {p['vs_baseline'][1]:.2f}")
    return 0 if not any(math.isnan(p["round0"][0]) for p in points) else 1


if __name__ == "__main__":
    raise SystemExit(main())
