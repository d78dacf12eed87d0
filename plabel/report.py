"""Reports: experiments about the pieces of plabel, as commands. One so far: ``entropy``.

    python -m plabel.report entropy                                   # 64 test images vs 64 gaussian noise inputs
    python -m plabel.report entropy --noise shuffled --num-samples 256 --output-dir runs/entropy-shuffled
    accelerate launch -m plabel.report entropy --config configs/mnist.yaml   # on every device of the launch config
    python -m plabel.report entropy --help                            # report options and every config option

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
from torch.utils.data import Dataset

from plabel.cli import EXIT_USER_ERROR, build_parser, is_main_launcher_process, parse_overrides
from plabel.config import ConfigError, RunConfig, flatten, load_config
from plabel.data.splits import IndexedImages, build_transform, make_splits
from plabel.distributed import share_from_main
from plabel.loop import RoundPosition, accuracy, score_dataset, train_round
from plabel.models import build_model
from plabel.run import check_num_classes, build_accelerator, loader_options, make_optimizer
from plabel.tracking import start_trackers

NOISE_KINDS = ("gaussian", "uniform", "shuffled")
VALIDATION, NOISE = 0, 1  # source labels, as in the article: 0 = validation image, 1 = noise
LOWEST_FRACTION = 0.10  # the article's candidate set: the lowest-entropy 10% of all samples


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
        "--num-samples", "--num_samples", dest="num_samples", default="64", metavar="N",
        help="validation images scored (the first N of the test split), and as many noise inputs; "
        "the article used one batch of 64",
    )
    group.add_argument(
        "--noise", default="gaussian", metavar="KIND",
        help="{gaussian,uniform,shuffled}: gaussian = torch.randn in the normalised input space (the article); "
        "uniform = uniform pixel values in [0,1], then normalised; shuffled = each validation image with its "
        "pixels randomly permuted (same intensities, no shape)",
    )
    group.add_argument(
        "--output-dir", dest="output_dir", default=argparse.SUPPRESS, metavar="DIR",
        help="same as --output_dir: a new or empty folder (never overwritten); "
        "default runs/entropy-<config name>-<timestamp>",
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
    name = Path(args.config).stem if args.config else "default"
    return cfg, name, options


# ---------------------------------------------------------------------------------------------
# Inputs: validation images followed by noise, in one dataset so one scoring pass serves both


def _noise_generator(seed: int, position: int) -> torch.Generator:
    # One generator per item: noise item j is a function of (seed, j) alone, so loader order,
    # workers and process count cannot change it.
    return torch.Generator().manual_seed((seed * 1_000_003 + position) % (2**63 - 1))


class ValidationAndNoise(Dataset):
    """Items 0..n-1: the validation images; items n..2n-1: one noise input each.

    Yields ``(x, source, position)`` with source 0 (validation) or 1 (noise), so
    :func:`plabel.loop.score_dataset` returns the source as its ``label`` column. Noise item
    n + j is derived from validation image j only for ``shuffled``.
    """

    def __init__(self, validation: IndexedImages, noise: str, seed: int) -> None:
        if noise not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {noise!r}")
        self.validation = validation
        self.noise = noise
        self.seed = seed
        self.n = len(validation)
        self.shape = (validation.source.channels, *validation.source.image_size)

    def __len__(self) -> int:
        return 2 * self.n

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, int]:
        if position < self.n:
            return self.validation[position][0], VALIDATION, position
        return self.noise_input(position - self.n), NOISE, position

    def noise_input(self, j: int) -> torch.Tensor:
        """Noise input j, (C, H, W) float32 in the model's normalised input space."""
        generator = _noise_generator(self.seed, j)
        if self.noise == "gaussian":
            return torch.randn(self.shape, generator=generator)
        if self.noise == "uniform":
            # uint8 pixels through the eval transform: uniform in [0, 1], normalised like a real image.
            pixels = torch.randint(0, 256, self.shape, generator=generator, dtype=torch.uint8)
        else:
            image = self.validation.source.image(int(self.validation.source_indices[j]))  # uint8 (C, H, W)
            c, h, w = image.shape
            order = torch.randperm(h * w, generator=generator)
            pixels = image.reshape(c, h * w)[:, order].reshape(c, h, w)  # channels of a pixel stay together
        return self.validation.transform(pixels)


# ---------------------------------------------------------------------------------------------
# The numbers: pure functions of (entropy, source)


def entropy_order(entropy: torch.Tensor) -> torch.Tensor:
    """Sample positions by ascending entropy; ties keep position order; NaN (bad logits) last."""
    return torch.sort(entropy, stable=True).indices


def summarize_entropy(entropy: torch.Tensor, source: torch.Tensor) -> dict[str, Any]:
    """Where the noise lands when all samples are sorted by entropy, lowest first.

    ``entropy`` and ``source`` are (n_samples,); source is 0 (validation) or 1 (noise). The
    lowest 10% holds floor(0.1 * n_samples) samples, at least 1 (the article: 12 of 128).
    """
    order = entropy_order(entropy)
    sorted_source = source[order]
    noise_ranks = torch.nonzero(sorted_source == NOISE).flatten()
    first_noise = int(noise_ranks[0]) if noise_ranks.numel() else None
    lowest = max(1, int(LOWEST_FRACTION * entropy.numel()))
    noise_in_lowest = int((sorted_source[:lowest] == NOISE).sum())

    def mean(values: torch.Tensor) -> Optional[float]:
        return float(values.double().mean()) if values.numel() else None

    return {
        "first_noise_rank_0based": first_noise,
        "first_noise_rank_1based": None if first_noise is None else first_noise + 1,
        "lowest_10_percent": {
            "count": lowest,
            "noise_count": noise_in_lowest,
            "noise_share": noise_in_lowest / lowest,
        },
        "mean_entropy_bits": {"validation": mean(entropy[source == VALIDATION]), "noise": mean(entropy[source == NOISE])},
        "n": {"validation": int((source == VALIDATION).sum()), "noise": int((source == NOISE).sum())},
    }


def format_sorted(entropy: torch.Tensor, source: torch.Tensor) -> str:
    """The article's listing: ``source : entropy`` per line, lowest entropy first, full float repr."""
    order = entropy_order(entropy)
    return "".join(f"{int(s)} : {float(e)!r}\n" for s, e in zip(source[order].tolist(), entropy[order].tolist()))


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib's object API renders with Agg and leaves pyplot's global state alone)


def plot_entropy_per_sample(path: Path, entropy: torch.Tensor, source: torch.Tensor, noise: str) -> None:
    """One bar panel per source, sample order on x; y scales differ, as in the article."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, code, title, colour in (
        (axes[0], VALIDATION, "validation (test images)", "tab:blue"),
        (axes[1], NOISE, f"noise: {noise}", "tab:orange"),
    ):
        values = entropy[source == code].numpy()
        ax.bar(range(len(values)), values, color=colour, width=0.9)
        ax.set_title(f"{title}, n={len(values)}")
        ax.set_xlabel("sample")
        ax.set_ylabel("entropy (bits)")
    fig.suptitle("Entropy of the round-0 model's prediction per sample (note the different y scales)")
    fig.savefig(path, dpi=110)


def plot_entropy_histogram(path: Path, entropy: torch.Tensor, source: torch.Tensor, noise: str, threshold: float) -> None:
    """Both distributions on one log-x histogram; ``threshold`` marks the top of the lowest 10%."""
    import numpy as np
    from matplotlib.figure import Figure

    values = entropy.double().numpy()
    finite = np.isfinite(values)
    positive = values[finite & (values > 0)]
    # Entropies span ~1e-15..log2(classes); an exact 0 (all other probabilities underflowed)
    # has no place on a log axis, so it is drawn at the floor and counted in the legend.
    floor = positive.min() / 2 if positive.size else 1e-16
    top = max(float(values[finite].max()) if finite.any() else 1.0, floor * 10)
    bins = np.logspace(np.log10(floor), np.log10(top * 1.05), 40)
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    for code, label, colour in ((VALIDATION, "validation", "tab:blue"), (NOISE, f"noise: {noise}", "tab:orange")):
        v = values[(source.numpy() == code) & finite]
        zeros = int((v <= 0).sum())
        extra = f", {zeros} exactly 0 (drawn at {floor:.0e})" if zeros else ""
        ax.hist(np.clip(v, floor, None), bins=bins, alpha=0.6, color=colour, label=f"{label} (n={len(v)}{extra})")
    if math.isfinite(threshold):
        ax.axvline(max(threshold, floor), color="black", linestyle="--", linewidth=1, label="top of the lowest 10%")
    ax.set_xscale("log")
    ax.set_xlabel("entropy (bits, log scale)")
    ax.set_ylabel("samples")
    ax.set_title("Entropy: validation images vs noise")
    ax.legend()
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------------------------------
# The report


def new_output_dir(accelerator: Any, output_dir: Optional[str], config_name: str) -> Path:
    """Create the report folder on the main process; refuse one that already holds files.

    Unlike a training run there is nothing to resume: a report never writes into old results.
    """
    error: Optional[str] = None
    path: Optional[str] = None
    if accelerator.is_main_process:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        candidate = Path(output_dir) if output_dir else Path("runs") / f"entropy-{config_name}-{stamp}"
        if candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
            error = f"output_dir: {candidate} already holds files; pass a new --output-dir (a report never overwrites)"
        else:
            candidate.mkdir(parents=True, exist_ok=True)
            path = str(candidate)
    error, path = share_from_main(accelerator, (error, path))
    if error:
        raise ConfigError(error)
    assert path is not None
    return Path(path)


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
    accelerator.print(
        f"plabel entropy report -> {out_dir}  ({accelerator.num_processes} process(es) on {accelerator.device.type}); "
        f"{options.num_samples} validation images vs {options.num_samples} {options.noise} noise inputs"
    )
    accelerator.print(yaml.safe_dump(resolved, sort_keys=False).rstrip())
    logger = start_trackers(accelerator, cfg.tracking, wandb_mode, out_dir.name, out_dir, flatten(resolved))

    # Round 0 of a run: the same datasets, initial weights, optimizer and train_round call.
    channels = splits.train_source.channels
    train_tf = build_transform(channels, cfg.data.augment, train=True)
    eval_tf = build_transform(channels, cfg.data.augment, train=False)
    labeled = IndexedImages(splits.train_source, splits.labeled_source_indices, train_tf)
    test = IndexedImages(splits.test_source, splits.test_source_indices, eval_tf)
    torch.manual_seed(cfg.seed)  # identical initial weights on every process
    model = build_model(cfg.model.name, channels, num_classes)
    optimizer = make_optimizer(cfg, model)
    model, optimizer = accelerator.prepare(model, optimizer)
    loading = loader_options(cfg, accelerator)
    position = train_round(
        accelerator, model, optimizer, labeled, None, cfg.train, cfg.pseudo, cfg.seed, RoundPosition(round_index=0),
        logger.log, cfg.tracking.log_every, options=loading,
    )

    test_scores = score_dataset(accelerator, model, test, cfg.train.eval_batch_size, cfg.pseudo.eps, loading)
    n = options.num_samples
    validation = IndexedImages(splits.test_source, splits.test_source_indices[:n], eval_tf)
    probe = ValidationAndNoise(validation, options.noise, cfg.seed)
    scores = score_dataset(accelerator, model, probe, cfg.train.eval_batch_size, cfg.pseudo.eps, loading)
    entropy, source = scores["entropy"], scores["label"]

    report: dict[str, Any] = {
        "noise": options.noise,
        "entropy_units": "bits (log2), as in the article",
        "rank_note": "ranks are positions in entropy_sorted.txt (ascending entropy, ties by sample position); "
        "0based counts from 0, 1based from 1",
        **summarize_entropy(entropy, source),
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
    if accelerator.is_main_process:
        paths["entropy_sorted.txt"].write_text(format_sorted(entropy, source))
        paths["report.json"].write_text(json.dumps(report, indent=2) + "\n")
        plot_entropy_per_sample(paths["entropy_per_sample.png"], entropy, source, options.noise)
        plot_entropy_histogram(paths["entropy_histogram.png"], entropy, source, options.noise, threshold)

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
    if wandb_mode != "disabled" and accelerator.is_main_process:
        import wandb

        logger.log_rich(
            {
                "report/entropy_per_sample": wandb.Image(str(paths["entropy_per_sample.png"])),
                "report/entropy_histogram": wandb.Image(str(paths["entropy_histogram.png"])),
            },
            position.global_step,
        )

    share = report["lowest_10_percent"]
    accelerator.print(
        f"first noise sample at rank {report['first_noise_rank_1based']} of {2 * n} (1-based); "
        f"noise in the lowest 10%: {share['noise_count']}/{share['count']} ({100 * share['noise_share']:.1f}%); "
        f"mean entropy validation {report['mean_entropy_bits']['validation']:.3g} vs noise "
        f"{report['mean_entropy_bits']['noise']:.3g} bits; validation accuracy {100 * report['validation_accuracy']:.2f}%"
    )
    accelerator.print("outputs: " + ", ".join(str(p) for p in paths.values()))
    offline_dir = logger.offline_run_dir()
    logger.close()
    if offline_dir is not None:
        accelerator.print(f"W&B ran offline; upload with: wandb sync {offline_dir}")
    return report


def entropy_report_main(argv: Sequence[str], prog: str = "plabel report entropy") -> int:
    """``plabel report entropy [options]``: exit 0, or 2 with one line on stderr for a user error."""
    try:
        cfg, name, options = resolve_entropy_report(argv, prog)
        entropy_report(cfg, options, config_name=name)
    except ConfigError as err:
        if is_main_launcher_process():
            print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


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
    raise SystemExit(report_main(sys.argv[1:], prog="python -m plabel.report"))
