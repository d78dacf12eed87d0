"""``plabel score``: score any dataset with a finished run's final weights (the same pass the
training rounds make over the pool), one CSV row per sample, with 1 or N processes.

The dataset options are the ``SourceConfig`` fields (``--source.name``, ``--source.split``, ...),
listed with their defaults by ``--help``; the run's own config is read from its folder.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
from pathlib import Path
from typing import Any, Optional, Sequence

from plabel.commands.common import load_run, run_command, run_splits
from plabel.config import ConfigError, SourceConfig, iter_fields
from plabel.config.args import OneLineParser, typed_value
from plabel.config.load import check_types


def _source_from_args(args: argparse.Namespace, base: SourceConfig) -> SourceConfig:
    """The run's source with the ``--source.*`` options given on top, checked like a run config."""
    values: dict[str, Any] = {}
    for name, tp, _, _ in iter_fields(SourceConfig(), "source."):
        text = getattr(args, name, None)
        if text is not None:
            values[name.removeprefix("source.")] = typed_value(tp, text)
    cfg = check_types(SourceConfig, {**dataclasses.asdict(base), **values}, "source.")
    cfg.validate("source")
    return cfg


def _open_scored(src: SourceConfig) -> Any:
    """The source to score: a listed pool (folder, list, tar), an hf dataset with or without a
    label column, or any labeled source."""
    from plabel.data.unlabeled import LISTED_SOURCES, open_unlabeled

    if src.source in LISTED_SOURCES:
        return open_unlabeled(src, "source")
    if src.source == "hf":
        from plabel.data.hf_source import open_hf

        return open_hf(src, "source", labeled=None)
    if src.source in ("holdout", "none"):
        raise ConfigError(f"--source.source: {src.source!r} names no dataset to score; give embedded, idx, torchvision, hf, folder, list or tar")
    from plabel.data.sources import open_source

    return open_source(src, "source")


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    for name, _, default, help_text in iter_fields(SourceConfig(), "source."):
        parser.add_argument(f"--{name}", dest=name, default=None, metavar="VALUE", help=f"{help_text.replace('%', '%%')} (any --source.* option scores that source, whole; none: the run's test set)")


def build_parser() -> argparse.ArgumentParser:
    """``plabel score``'s options (also read by the docs tests)."""
    parser = OneLineParser(prog="plabel score", description=score_main.__doc__, allow_abbrev=False)
    parser.add_argument("--run", required=True, help="a finished run folder (holds model.safetensors)")
    parser.add_argument(
        "--output", required=True,
        help="CSV to write: index,prediction,entropy,max_probability,margin,label,prediction_name,path (label empty for "
        "an unlabeled source; path: the file under the source's root, tar member or row)"
    )
    parser.add_argument(
        "--batch_size", type=int, default=None, help="scoring batch (default: the run's train.eval_batch_size); --batch-size also works"
    )
    parser.add_argument(
        "--cpu_threads", "--cpu-threads", "--train.cpu_threads", dest="cpu_threads", type=int, default=None,
        help="torch threads per process on CPU, as train.py's --train.cpu_threads (default: the run's own setting, else "
        "the cores this process may use divided by the processes on this machine). Scores are identical across "
        "process counts only at the same threads per process: oneDNN's sums follow the thread count",
    )
    _add_source_options(parser)
    return parser


def score_main(argv: Optional[Sequence[str]] = None) -> int:
    """Score a dataset with a run's final weights: per-sample entropy and prediction (CSV)."""
    parser = build_parser()
    return run_command("plabel score", lambda: _score(parser.parse_args(argv)))


def _score(args: argparse.Namespace) -> int:
    run_dir, cfg, info = load_run(args.run)
    if not (run_dir / "model.safetensors").is_file():
        raise ConfigError(f"--run: {run_dir} has no model.safetensors (the run has not finished)")
    output = Path(args.output)
    if output.exists():
        raise ConfigError(f"--output: {output} exists; plabel never overwrites results")
    import torch

    if any(getattr(args, name, None) is not None for name, *_ in iter_fields(SourceConfig(), "source.")):
        source = _open_scored(_source_from_args(args, cfg.data.test if cfg.data.test.source != "holdout" else cfg.data.train))
        indices = torch.arange(len(source))
    else:  # the run's own test set: its held-out samples, or its separate test source
        splits = run_splits(run_dir, cfg)
        source, indices = splits.test_source, splits.test_source_indices
    data_channels = info.get("data_channels", info["channels"])
    if source.channels != data_channels and hasattr(source, "convert_to") and not source.class_names:
        source.convert_to(data_channels)  # an unlabeled pool of mixed files: decoded as the run's images were
    if source.channels != data_channels:
        kinds = {1: "grey", 3: "colour"}
        raise ConfigError(f"source: images are {kinds[source.channels]}, the run trained on {kinds[data_channels]} images")

    from plabel.data.splits import UNREADABLE, IndexedImages
    from plabel.data.transforms import source_transform
    from plabel.data.unlabeled import UNLABELED
    from plabel.distributed.processes import on_main
    from plabel.models.prepare import load_run_model
    from plabel.trainer.scoring_pass import ScorePlan, score_dataset
    from plabel.trainer.setup import build_accelerator, loader_options

    cfg.tracking.mode = "disabled"
    if args.cpu_threads is not None:
        if args.cpu_threads < 1:
            raise ConfigError(f"--cpu_threads: must be at least 1, got {args.cpu_threads}")
        cfg.train.cpu_threads = args.cpu_threads
    accelerator, _ = build_accelerator(cfg)
    model, spec = load_run_model(run_dir, cfg, info)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = accelerator.prepare(model)
    transform = source_transform(source, spec, "none", train=False)
    dataset = IndexedImages(source, indices, transform, skip_unreadable=True)
    # The same pass the training rounds make over the pool: sharded, gathered by index.
    plan = ScorePlan(args.batch_size or cfg.train.eval_batch_size, cfg.pseudo.eps, loader_options(cfg, accelerator))
    scores = score_dataset(accelerator, model, dataset, plan)

    def write() -> None:
        output.parent.mkdir(parents=True, exist_ok=True)
        names = info.get("class_names") or [str(c) for c in range(info["num_classes"])]
        columns = ("prediction", "entropy", "max_probability", "margin", "label")
        values = {c: scores[c].tolist() for c in columns}
        tmp = output.with_name(f".tmp-{output.name}")
        with open(tmp, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["index", *columns, "prediction_name", "path"])
            for i, row in enumerate(indices.tolist()):  # the row of the scored source
                p, label = values["prediction"][i], values["label"][i]
                floats = [f"{values[c][i]:.9g}" for c in ("entropy", "max_probability", "margin")]
                out.writerow([row, p, *floats, "" if label == UNLABELED else label, names[p] if label != UNREADABLE else "",
                              source.sample_name(row)])
        tmp.replace(output)
        scored = scores["label"] != UNREADABLE
        labeled = scored & (scores["label"] != UNLABELED)
        skipped = int((~scored).sum())
        if bool(labeled.any()):
            correct = float((scores["prediction"][labeled] == scores["label"][labeled]).float().mean())
            measured = f"accuracy against its labels {100 * correct:.2f}%"
        else:
            measured = "no labels, no accuracy"
        print(
            f"scored {len(dataset)} samples of {source.description} -> {output} ({measured}"
            + (f"; {skipped} unreadable, written with label {UNREADABLE} and NaN scores)" if skipped else ")")
        )

    on_main(accelerator, write)
    accelerator.end_training()
    return 0
