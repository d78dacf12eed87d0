"""Reports: experiments about the pieces of plabel, as commands. One so far: ``entropy``.

    plabel report entropy                                   # 64 test images vs 64 gaussian noise inputs
    plabel report entropy --noise shuffled --num-samples 256 --output-dir runs/entropy-shuffled
    accelerate launch -m plabel.cli report entropy --config configs/mnist.yaml   # on every device of the launch config
    plabel report entropy --help                            # report options and every config option

The entropy report repeats the seed article's experiment: does low entropy single out real
images? It trains the round-0 model (labeled set only, exactly as round 0 of a run), scores the
first N test images (source 0, "validation") and N noise inputs (source 1) in one
``score_dataset`` pass, and writes to a new output folder:

    entropy_sorted.txt       every sample, lowest entropy first, one ``source : entropy`` line
    report.json              first noise rank, noise share of the lowest 10%, mean entropy per
                             source, accuracy, counts, noise kind, resolved config
    entropy_per_sample.png   entropy of each sample, one bar panel per source
    entropy_histogram.png    both entropy distributions on a log-scale axis

With the default config (embedded MNIST, 10 labels per class, 240 steps) it takes about 80 s on
two CPU cores. When tracking is on, the figures and key numbers also go to W&B.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import yaml

from plabel.commands.common import EXIT_USER_ERROR, run_command
from plabel.config import ConfigError, RunConfig, load_config
from plabel.config.args import build_parser, config_name, parse_overrides
from plabel.data.splits import IndexedImages, make_splits
from plabel.data.transforms import source_transform
from plabel.distributed.processes import decide_on_main, on_main, print_once
from plabel.experiments.entropy_probe import (
    NOISE_KINDS,
    ValidationAndNoise,
    entropy_order,
    format_sorted,
    plot_entropy_histogram,
    plot_entropy_per_sample,
    summarize_entropy,
)
from plabel.method.scores import ranking_scores
from plabel.models.prepare import prepare_model
from plabel.trainer.loop import RoundPosition, TrainPlan, train_round
from plabel.trainer.round_selection import LabeledViews, SelectionRequest, prepare_plan
from plabel.trainer.scoring_pass import ScorePlan, accuracy, score_dataset
from plabel.trainer.setup import build_accelerator, check_num_classes, loader_options, make_optimizer, run_facts
from plabel.trainer.trackers import start_trackers

# ---------------------------------------------------------------------------------------------
# Options


@dataclass
class EntropyReportOptions:
    """What the entropy report scores; the model and data come from the run config."""

    num_samples: int = 64  # validation images scored, and as many noise inputs (the article's batch)
    noise: str = "gaussian"  # one of NOISE_KINDS

    def validate(self, test_size: Optional[int] = None) -> None:
        if self.noise not in NOISE_KINDS:
            raise ConfigError(f"--noise: unknown noise kind {self.noise!r}; choose one of {', '.join(NOISE_KINDS)}")
        if self.num_samples < 1:
            raise ConfigError(f"--num-samples: must be >= 1, got {self.num_samples}")
        if test_size is not None and self.num_samples > test_size:
            raise ConfigError(
                f"--num-samples: {self.num_samples} is more than the {test_size} images of the test split; "
                "lower it or enlarge the test split (data.test_holdout)"
            )


def build_entropy_parser(prog: str) -> argparse.ArgumentParser:
    """The run parser (``--config``, every config field, key=value words) plus the report options."""
    parser = build_parser(prog)
    parser.description = (
        "Train the round-0 model (labeled set only), score N test images and N noise inputs, and "
        "report how well entropy separates them (sorted list, report.json, two figures). "
        "Config precedence: defaults < --config file < options given here."
    )
    group = parser.add_argument_group("entropy report")
    group.add_argument(
        "--num_samples", dest="num_samples", default="64", metavar="N",
        help="validation images scored (the first N of the test split), and as many noise inputs; "
        "the article used one batch of 64",
    )
    group.add_argument(
        "--noise", default="gaussian", metavar="KIND",
        help="{gaussian,uniform,shuffled}: gaussian = torch.randn in the normalised input space (the article); "
        "uniform = uniform pixel values in [0,1], then normalised; shuffled = each validation image with its "
        "pixels randomly permuted (same intensities, no shape)",
    )
    return parser


def resolve_entropy_report(argv: Sequence[str], prog: str) -> tuple[RunConfig, str, EntropyReportOptions]:
    """argv -> (validated run config, config name, report options); raises ConfigError."""
    args = build_entropy_parser(prog).parse_args(list(argv))
    try:
        num_samples = int(args.num_samples)
    except ValueError:
        raise ConfigError(f"--num-samples: expected an integer, got {args.num_samples!r}") from None
    options = EntropyReportOptions(num_samples=num_samples, noise=args.noise)
    options.validate()  # the test-split size is checked once the data is open
    cfg = load_config(args.config, parse_overrides(args))
    return cfg, config_name(args.config), options


# ---------------------------------------------------------------------------------------------
# The report


def new_output_dir(accelerator: Any, output_dir: Optional[str], config_name: str) -> Path:
    """Create the report folder on the main process; refuse one that already holds files.

    Unlike a training run there is nothing to resume: a report never writes into old results.
    """

    def create() -> Path:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        candidate = Path(output_dir) if output_dir else Path("runs") / f"entropy-{config_name}-{stamp}"
        if candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
            raise ConfigError(f"output_dir: {candidate} already holds files; pass a new --output_dir (a report never overwrites)")
        candidate.mkdir(parents=True, exist_ok=True)
        return candidate

    return decide_on_main(accelerator, create)


def entropy_report(cfg: RunConfig, options: EntropyReportOptions, config_name: str = "run") -> dict[str, Any]:
    """Run the entropy report; return what report.json holds (every process returns it)."""
    started = time.time()
    accelerator, wandb_mode = build_accelerator(cfg)
    splits = make_splits(cfg.data, cfg.seed)
    num_classes = check_num_classes(cfg, splits)
    options.validate(test_size=int(splits.test_source_indices.numel()))
    out_dir = new_output_dir(accelerator, cfg.output_dir, config_name)
    resolved = cfg.to_dict()
    resolved["output_dir"] = str(out_dir)
    print_once(
        accelerator,
        f"plabel entropy report -> {out_dir}  ({accelerator.num_processes} process(es) on {accelerator.device.type}); "
        f"{options.num_samples} validation images vs {options.num_samples} {options.noise} noise inputs"
    )
    print_once(accelerator, yaml.safe_dump(resolved, sort_keys=False).rstrip())
    logger = start_trackers(accelerator, cfg.tracking, wandb_mode, out_dir.name, out_dir, {**resolved, "run": run_facts(accelerator)})

    # Round 0 of a run: the same model, datasets, initial weights, optimizer and train_round call.
    prepared = prepare_model(accelerator, cfg, splits.train_source, num_classes)
    train_tf = source_transform(splits.train_source, prepared.spec, cfg.data.augment, train=True)
    eval_tf = source_transform(splits.test_source, prepared.spec, cfg.data.augment, train=False)
    labeled = IndexedImages(splits.train_source, splits.labeled_source_indices, train_tf)
    test = IndexedImages(splits.test_source, splits.test_source_indices, eval_tf)
    model = prepared.model
    optimizer = make_optimizer(cfg, model)
    model, optimizer = accelerator.prepare(model, optimizer)
    loading = loader_options(cfg, accelerator)
    plan = TrainPlan(cfg.train, cfg.pseudo, cfg.seed, cfg.tracking.log_every, loading)
    position = train_round(accelerator, model, optimizer, labeled, None, plan, RoundPosition(round_index=0), logger.log)

    score_plan = ScorePlan.from_config(cfg, loading)
    test_scores = score_dataset(accelerator, model, test, score_plan)
    n = options.num_samples
    validation = IndexedImages(splits.test_source, splits.test_source_indices[:n], eval_tf)
    probe = ValidationAndNoise(validation, options.noise, cfg.seed)
    scores = score_dataset(accelerator, model, probe, score_plan)
    entropy, source = scores["entropy"], scores["label"]
    # The order a run's selection would put them in: its score, temperature and junk guard (a
    # guarded sample is never selected: it goes last). Without either option this is entropy.
    request = SelectionRequest.for_round(cfg, 1, num_classes, None)
    labeled_views = LabeledViews(IndexedImages(splits.train_source, splits.labeled_source_indices, eval_tf), labeled)
    selection_plan, guard, _ = prepare_plan(accelerator, model, labeled_views, request, score_plan)
    selection_scores = score_dataset(accelerator, model, probe, selection_plan) if selection_plan != score_plan else scores
    ranking = ranking_scores(selection_scores, torch.arange(len(probe)), cfg.pseudo.score, cfg.seed, 1)
    passed = guard.passes(selection_scores)
    ranking = torch.where(passed, ranking, torch.full_like(ranking, math.inf))
    order = summarize_entropy(ranking, source)
    del order["mean_entropy_bits"]  # a ranking is not an entropy (and a guarded sample ranks +inf)
    order["rejected_by_guard"] = {"validation": int((~passed[source == 0]).sum()), "noise": int((~passed[source == 1]).sum())}

    report: dict[str, Any] = {
        "noise": options.noise,
        "entropy_units": "bits (log2), as in the article",
        "rank_note": "ranks are positions in entropy_sorted.txt (ascending entropy, ties by sample position); "
        "0based counts from 0, 1based from 1",
        **summarize_entropy(entropy, source),
        "selection_order": {
            "note": "the order the run's selection rule (pseudo.score, pseudo.calibrate, pseudo.guard) puts the samples in; "
            "a sample the junk guard rejects is last",
            "rule": {"score": cfg.pseudo.score, "calibrate": cfg.pseudo.calibrate, "guard": cfg.pseudo.guard},
            **order,
        },
        "validation_accuracy": accuracy(test_scores),
        "validation_accuracy_note": f"accuracy of the round-0 model on the whole test split ({len(test)} images)",
        "validation_accuracy_scored_samples": accuracy({k: v[:n] for k, v in test_scores.items()}),
        "prediction_histogram_noise": torch.bincount(scores["prediction"][n:], minlength=num_classes).tolist(),
        "train_steps": position.global_step,
        "num_processes": accelerator.num_processes,
        "wall_time_s": round(time.time() - started, 1),
        "output_dir": str(out_dir),
        "config": resolved,
    }
    lowest = report["lowest_10_percent"]["count"]
    threshold = float(entropy[entropy_order(entropy)[lowest - 1]])
    paths = {name: out_dir / name for name in ("entropy_sorted.txt", "report.json", "entropy_per_sample.png", "entropy_histogram.png")}

    def write() -> None:
        paths["entropy_sorted.txt"].write_text(format_sorted(entropy, source))
        paths["report.json"].write_text(json.dumps(report, indent=2) + "\n")
        plot_entropy_per_sample(paths["entropy_per_sample.png"], entropy, source, options.noise)
        plot_entropy_histogram(paths["entropy_histogram.png"], entropy, source, options.noise, threshold)

    on_main(accelerator, write)

    logger.log(
        {
            "report/first_noise_rank_0based": report["first_noise_rank_0based"],
            "report/noise_share_lowest_10_percent": report["lowest_10_percent"]["noise_share"],
            "report/mean_entropy_validation": report["mean_entropy_bits"]["validation"],
            "report/mean_entropy_noise": report["mean_entropy_bits"]["noise"],
            "report/validation_accuracy": report["validation_accuracy"],
        },
        position.global_step,
    )
    if wandb_mode != "disabled":
        import wandb

        logger.log_rich(
            {
                "report/entropy_per_sample": wandb.Image(str(paths["entropy_per_sample.png"])),
                "report/entropy_histogram": wandb.Image(str(paths["entropy_histogram.png"])),
            },
            position.global_step,
        )

    share, chosen = report["lowest_10_percent"], report["selection_order"]["lowest_10_percent"]
    if (cfg.pseudo.score, cfg.pseudo.calibrate, cfg.pseudo.guard) != ("entropy", False, "none"):
        print_once(accelerator, f"selection order ({cfg.pseudo.score}, calibrate {cfg.pseudo.calibrate}, guard "
                   f"{cfg.pseudo.guard}): noise in the lowest 10%: {chosen['noise_count']}/{chosen['count']}")
    print_once(
        accelerator,
        f"first noise sample at rank {report['first_noise_rank_1based']} of {2 * n} (1-based); "
        f"noise in the lowest 10%: {share['noise_count']}/{share['count']} ({100 * share['noise_share']:.1f}%); "
        f"mean entropy validation {report['mean_entropy_bits']['validation']:.3g} vs noise "
        f"{report['mean_entropy_bits']['noise']:.3g} bits; validation accuracy {100 * report['validation_accuracy']:.2f}%"
    )
    print_once(accelerator, "outputs: " + ", ".join(str(p) for p in paths.values()))
    offline_dirs = logger.offline_run_dirs()
    logger.close()
    if offline_dirs:
        print_once(accelerator, "W&B ran offline; upload with: wandb sync " + " ".join(str(d) for d in offline_dirs))
    return report


def entropy_report_main(argv: Sequence[str], prog: str = "plabel report entropy") -> int:
    """``plabel report entropy [options]``: exit 0, or 2 with one line on stderr for a user error."""

    def body() -> None:
        cfg, name, options = resolve_entropy_report(argv, prog)
        entropy_report(cfg, options, config_name=name)

    return run_command(prog, body)


REPORTS = {"entropy": entropy_report_main}


def report_main(argv: list[str], prog: str = "plabel report") -> int:
    """``plabel report <name> [options]``: dispatch to one report (``entropy``)."""
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in REPORTS:
        usage = f"usage: {prog} {{{','.join(REPORTS)}}} [options]   ({prog} <name> --help for options)"
        if argv and argv[0] in ("-h", "--help"):
            print(usage)
            return 0
        unknown = f"; unknown report {argv[0]!r}" if argv else ""
        print(f"{usage}{unknown}", file=sys.stderr)
        return EXIT_USER_ERROR
    return REPORTS[argv[0]](argv[1:], prog=f"{prog} {argv[0]}")


if __name__ == "__main__":
    raise SystemExit(report_main(sys.argv[1:], prog="python -m plabel.experiments.entropy_report"))
