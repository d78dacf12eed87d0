"""How ``data.augment auto`` would choose under several rules, replayed on the round-0 screens.

    python -m plabel.experiments.field.augment_rules results/field/r0 results/field/r0c

Every screened (set, seed) trained round 0 once per level from the same initial weights and
measured the validation images (the held-out fifth) and the test set: exactly what auto's trials
see. So each rule can be replayed without training: which level it keeps, that level's test
accuracy, and the regret (the best screened level's test accuracy minus the kept one's, in points;
of light, affine and none, whether or not the rule tries them).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from plabel.config.args import SpellingsParser
from plabel.method.scores import fit_temperature
from plabel.trainer.augment_choice import Trial as ChoiceTrial
from plabel.trainer.augment_choice import candidates, pick

# Row variants of the round-0 grids -> the level they trained with (24-epoch rows only, the default's length).
LEVELS = {"light-24": "light", "none-24": "none", "affine-24": "affine", "light": "light", "none": "none", "affine": "affine"}
# (level, validation accuracy, test accuracy, validation loss, (validation log-probabilities, labels) or None)
Trial = tuple[str, float, float, float, Optional[tuple[torch.Tensor, torch.Tensor]]]
LOSSES = "validation-losses.json"  # beside a sweep's runs: each run's round-0 validation loss, from its weights


def sequential(order: Sequence[str], margin: Callable[[int], float]) -> Callable[[list[Trial], int], str]:
    """The first level of ``order``; a later one replaces the best so far when it leads by the margin."""
    def rule(trials: list[Trial], n_val: int) -> str:
        by_level = {t[0]: t for t in trials}
        winner = by_level[order[0]]
        for level in order[1:]:
            if by_level[level][1] >= winner[1] + margin(n_val):
                winner = by_level[level]
        return winner[0]
    return rule


def standard_error(n_val: int) -> float:
    return 0.5 / math.sqrt(max(1, n_val))


def margin_needed(n_val: int) -> float:
    """0.3.1's first rule: a later level had to lead by two validation images or 1.5 standard errors."""
    return max(2.0 / max(1, n_val), 1.5 * standard_error(n_val))


def best(n_val: int) -> float:
    return 1e-9  # any lead wins; a tie stays with the earlier level


def calibrated_loss(trial: Trial) -> float:
    """The validation loss after the temperature that fits this level's own validation images (one
    parameter per level): compares how right the levels are with each one's confidence scale set aside."""
    if trial[4] is None:
        return math.nan
    logp, labels = trial[4]
    t = fit_temperature(logp.float(), labels)
    return float(torch.nn.functional.cross_entropy(logp / t, labels))


def brier(trial: Trial) -> float:
    """Mean squared error of the probabilities against the one-hot label (bounded, unlike the loss)."""
    if trial[4] is None:
        return math.nan
    logp, labels = trial[4]
    return float(((logp.exp() - torch.nn.functional.one_hot(labels, logp.shape[1])) ** 2).sum(1).mean())


def loss_margin(nats: float) -> "Rule":
    """The product's rule (:func:`plabel.trainer.augment_choice.pick`): light stays unless a later
    level's validation loss is lower by ``nats`` than the level kept so far."""
    def rule(trials: list[Trial], n_val: int) -> str:
        return pick([ChoiceTrial(t[0], t[1], t[3], {}, {}) for t in trials], nats).level
    return rule


GREY = ("light", "none")
LevelsOf = Callable[[int], tuple[str, ...]]
Rule = Callable[[list[Trial], int], str]


def _rule(colour: tuple[str, ...], margin: Callable[[int], float]) -> tuple[LevelsOf, Rule]:
    return (lambda ch: GREY if ch == 1 else colour), (lambda t, n: sequential([x[0] for x in t], margin)(t, n))


RULES: dict[str, tuple[LevelsOf, Rule]] = {
    "0.3.1's first: affine or none, margin": _rule(("affine", "none"), margin_needed),
    "affine, light, none; margin": _rule(("affine", "light", "none"), margin_needed),
    "affine, light, none; 1 s.e.": _rule(("affine", "light", "none"), standard_error),
    "affine, light, none; best": _rule(("affine", "light", "none"), best),
    "none, light, affine; 1 s.e.": _rule(("none", "light", "affine"), standard_error),
    "none, light, affine; best": (candidates, lambda t, n: sequential([x[0] for x in t], best)(t, n)),
    "none on colour": _rule(("none",), best),
    "none, light, affine; accuracy, a tie to the lower loss": (candidates, lambda t, n: max(t, key=lambda x: (x[1], -x[3]))[0]),
    "none, light, affine; the lowest validation loss (0.3.1-0.3.2)": (candidates, lambda t, n: min(t, key=lambda x: x[3])[0]),
    "none, light, affine; the lowest loss after each level's own temperature": (candidates, lambda t, n: min(t, key=calibrated_loss)[0]),
    "none, light, affine; the lowest Brier score": (candidates, lambda t, n: min(t, key=brier)[0]),
    # Written after seeds 0-7 (signs: crop + flip best at all eight, the loss kept none at three of the
    # five fresh ones), before seeds 8-9 ran (field-r0-check): the margin is the middle of the 0.4-0.7
    # nats over which it lost least on seeds 0-7. Shipped in 0.3.3 (plabel.trainer.augment_choice.pick).
    "light, none, affine; a later level needs a validation loss 0.5 nats lower (0.3.3)": (
        lambda ch: GREY if ch == 1 else ("light", "none", "affine"), loss_margin(0.5)),
}


Runs = dict[tuple[str, int], dict[str, tuple[float, float, int, float, Optional[tuple[torch.Tensor, torch.Tensor]]]]]


def load(folders: Sequence[Path]) -> Runs:
    """(set, seed) -> level -> (validation accuracy, test accuracy, validation images, validation loss)."""
    out: Runs = {}
    for folder in folders:
        losses = json.loads((Path(folder) / LOSSES).read_text()) if (Path(folder) / LOSSES).is_file() else {}
        for summary in sorted(Path(folder).glob("*/seed*/summary.json")):
            name, budget, variant = summary.parent.parent.name.split("-", 2)
            if variant not in LEVELS:
                continue
            run = json.loads(summary.read_text())
            row = run["rounds"][0]
            if row.get("val_accuracy") is None:
                continue
            seed = int(summary.parent.name.removeprefix("seed"))
            n_val = row.get("validation_images") or _validation_images(row, int(budget))
            measured = losses.get(f"{summary.parent.parent.name}/{summary.parent.name}", {})
            scores = (torch.tensor(measured["log_probs"], dtype=torch.float64), torch.tensor(measured["labels"])) if "log_probs" in measured else None
            out.setdefault((name, seed), {})[LEVELS[variant]] = (row["val_accuracy"], row["test_accuracy"], n_val,
                                                                 measured.get("loss", math.nan), scores)
    return out


def _validation_images(row: dict, budget: int) -> int:
    """Runs older than the ``validation_images`` column held out auto's fifth of each class:
    ``per`` of every ``budget`` labels, so ``labeled`` training images leave labeled / (budget - per) classes."""
    per = max(1, round(0.2 * budget))
    return row["labeled"] // (budget - per) * per


def table(runs: Runs, channels: dict[str, int]) -> list[str]:
    lines = ["| rule | " + " | ".join(f"{n} s{s}" for n, s in sorted(runs)) + " | mean regret | worst |",
             "|---|" + "---|" * (len(runs) + 2)]
    for rule_name, (levels_of, rule) in RULES.items():
        cells, regrets = [], []
        for key in sorted(runs):
            levels = levels_of(channels.get(key[0], 3))
            got = runs[key]
            if not all(level in got for level in levels):
                cells.append("-")
                continue
            trials = [(level, got[level][0], got[level][1], got[level][3], got[level][4]) for level in levels]
            kept = rule(trials, got[levels[0]][2])
            regret = 100 * (max(got[level][1] for level in ("light", "affine", "none") if level in got) - got[kept][1])
            regrets.append(regret)
            cells.append(f"{kept} {100 * got[kept][1]:.1f} (-{regret:.1f})")
        mean = f"{statistics.fmean(regrets):.1f}" if regrets else "-"
        worst = f"{max(regrets):.1f}" if regrets else "-"
        lines.append(f"| {rule_name} | " + " | ".join(cells) + f" | {mean} | {worst} |")
    return lines


def levels_table(runs: Runs) -> list[str]:
    """Per set: each level's round-0 test accuracy (mean ± std over seeds) and validation accuracies."""
    lines = ["| set | seeds | none | light | affine | validation (none / light / affine, per seed) |", "|---|---|---|---|---|---|"]
    for name in sorted({n for n, _ in runs}):
        seeds = sorted(s for n, s in runs if n == name)
        cells = []
        for level in ("none", "light", "affine"):
            values = [100 * runs[(name, s)][level][1] for s in seeds if level in runs[(name, s)]]
            std = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
            cells.append(f"{statistics.fmean(values):.2f}{std}" if values else "-")
        val = "; ".join("/".join(f"{100 * runs[(name, s)][lv][0]:.0f}" if lv in runs[(name, s)] else "-"
                                 for lv in ("none", "light", "affine")) for s in seeds)
        lines.append(f"| {name} | {','.join(map(str, seeds))} | " + " | ".join(cells) + f" | {val} |")
    return lines


def measure(folder: Path) -> dict[str, dict[str, float]]:
    """Each run's round-0 validation loss and accuracy, recomputed from its weights (model.safetensors,
    kept in the run folder, not committed) on the validation images its config and seed hold out."""
    from plabel.data.splits import IndexedImages, make_splits
    from plabel.data.transforms import source_transform
    from plabel.use.run import load_run

    out = {}
    for run_dir in sorted(folder.glob("*/seed*")):
        if run_dir.parent.name.split("-", 2)[-1] not in LEVELS or not (run_dir / "model.safetensors").is_file():
            continue
        run = load_run(run_dir)
        splits = make_splits(run.config.data, run.config.seed)
        data = IndexedImages(splits.train_source, splits.val_source_indices, source_transform(splits.train_source, run.spec, "none", train=False))
        if not len(data):
            continue
        x, y = torch.stack([data[i][0] for i in range(len(data))]), torch.tensor([data[i][1] for i in range(len(data))])
        with torch.no_grad():
            logp = torch.log_softmax(run.model(x.to(run.device)).float().cpu().double(), dim=1)
        out[f"{run_dir.parent.name}/{run_dir.name}"] = {"loss": float(-logp[torch.arange(len(y)), y].mean()),
                                                          "accuracy": float((logp.argmax(1) == y).double().mean()), "images": len(y),
                                                          "log_probs": [[round(float(v), 6) for v in r] for r in logp], "labels": y.tolist()}
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = SpellingsParser(prog="python -m plabel.experiments.field.augment_rules", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="round-0 sweep folders (results/field/r0, results/field/r0c)")
    parser.add_argument("--measure", action="store_true", help=f"first recompute each folder's {LOSSES} from its runs' weights (runs without weights keep their entries)")
    args = parser.parse_args(argv)
    if args.measure:
        for folder in args.folders:
            # Runs whose weights are gone (a fresh checkout keeps summaries only) keep what was measured before.
            before = json.loads((folder / LOSSES).read_text()) if (folder / LOSSES).is_file() else {}
            runs = {**before, **measure(folder)}  # one run a line: the log-probabilities make long ones
            (folder / LOSSES).write_text("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(runs[k], sort_keys=True)}" for k in sorted(runs)) + "\n}\n")
    runs = load(args.folders)
    print("\n".join(levels_table(runs)) + "\n")
    print("\n".join(table(runs, {"mnist": 1})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
