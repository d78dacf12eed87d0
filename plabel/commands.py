"""``plabel score`` and ``plabel export``: reuse a finished run's weights and pseudo-labels.

Both read the run's resolved ``config.yaml`` through the same config system as ``train.py``;
the dataset options are the ``SourceConfig`` fields (``--source.name``, ``--source.split``, ...),
listed with their defaults by ``--help``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
import yaml

from plabel.config import ConfigError, RunConfig, SourceConfig, config_from_dict, iter_fields, overlay_dict, parse_value
from plabel.cli import EXIT_USER_ERROR, OneLineParser, accepts_str, is_main_launcher_process


def _load_run(run: str) -> tuple[Path, RunConfig, dict[str, Any]]:
    run_dir = Path(run)
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "run_info.json").is_file():
        raise ConfigError(f"--run: {run_dir} is not a plabel run folder (no config.yaml / run_info.json)")
    cfg = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    info = json.loads((run_dir / "run_info.json").read_text())
    return run_dir, cfg, info


def _source_from_args(args: argparse.Namespace, base: SourceConfig) -> SourceConfig:
    values: dict[str, Any] = {}
    for name, tp, _, _ in iter_fields(SourceConfig, "source."):
        text = getattr(args, name, None)
        if text is not None:
            values[name.removeprefix("source.")] = text if accepts_str(tp) else parse_value(text)
    cfg = overlay_dict(SourceConfig, values, "source", base)
    cfg.validate("source")
    return cfg


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    for name, _, default, help_text in iter_fields(SourceConfig, "source."):
        parser.add_argument(f"--{name}", dest=name, default=None, metavar="VALUE", help=f"{help_text} (default: the run's test source)")


def score_main(argv: Optional[Sequence[str]] = None) -> int:
    """Score a dataset with a run's final weights: per-sample entropy and prediction (CSV)."""
    parser = OneLineParser(prog="plabel score", description=score_main.__doc__, allow_abbrev=False)
    parser.add_argument("--run", required=True, help="a finished run folder (holds model.safetensors)")
    parser.add_argument("--output", required=True, help="CSV to write: index,prediction,entropy,max_probability,margin,label")
    parser.add_argument("--batch-size", type=int, default=None, help="per process (default: the run's train.eval_batch_size)")
    _add_source_options(parser)
    try:
        args = parser.parse_args(argv)
        run_dir, cfg, info = _load_run(args.run)
        if not (run_dir / "model.safetensors").is_file():
            raise ConfigError(f"--run: {run_dir} has no model.safetensors (the run has not finished)")
        output = Path(args.output)
        if output.exists():
            raise ConfigError(f"--output: {output} exists; plabel never overwrites results")
        source_cfg = _source_from_args(args, cfg.data.test if cfg.data.test.source != "holdout" else cfg.data.train)
        from plabel.data.sources import open_source

        source = open_source(source_cfg, "source")
        if source.channels != info["channels"]:
            raise ConfigError(f"source: images have {source.channels} channels, the run's model takes {info['channels']}")
    except ConfigError as err:
        if is_main_launcher_process():
            print(f"plabel score: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR

    from safetensors.torch import load_file

    from plabel.data.splits import IndexedImages, build_transform
    from plabel.loop import score_dataset
    from plabel.models import build_model
    from plabel.run import build_accelerator, loader_options

    cfg.tracking.mode = "disabled"
    accelerator, _ = build_accelerator(cfg)
    model = build_model(cfg.model.name, info["channels"], info["num_classes"])
    model.load_state_dict(load_file(str(run_dir / "model.safetensors")))
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = accelerator.prepare(model)
    dataset = IndexedImages(source, torch.arange(len(source)), build_transform(source.channels, "none", train=False))
    # The same pass the training rounds make over the pool: sharded, gathered by index.
    scores = score_dataset(
        accelerator, model, dataset, args.batch_size or cfg.train.eval_batch_size, cfg.pseudo.eps,
        loader_options(cfg, accelerator),
    )
    if accelerator.is_main_process:
        output.parent.mkdir(parents=True, exist_ok=True)
        table = np.column_stack(
            [np.arange(len(dataset)), scores["prediction"].numpy(), scores["entropy"].double().numpy(),
             scores["max_probability"].double().numpy(), scores["margin"].double().numpy(), scores["label"].numpy()]
        )
        np.savetxt(output, table, delimiter=",", fmt=["%d", "%d", "%.9g", "%.9g", "%.9g", "%d"],
                   header="index,prediction,entropy,max_probability,margin,label", comments="")
        correct = float((scores["prediction"] == scores["label"]).float().mean())
        print(f"scored {len(dataset)} samples of {source.description} -> {output} (accuracy against its labels {100 * correct:.2f}%)")
    accelerator.end_training()
    return 0


def export_main(argv: Optional[Sequence[str]] = None) -> int:
    """Write a round's labeled + pseudo-labeled training set as a Hugging Face dataset."""
    parser = OneLineParser(prog="plabel export", description=export_main.__doc__, allow_abbrev=False)
    parser.add_argument("--run", required=True, help="a run folder")
    parser.add_argument("--round", type=int, default=None, help="pseudo-label round to export (default: the last one written)")
    parser.add_argument("--output", required=True, help="folder for datasets.save_to_disk (must not exist)")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO", help="also push to this hub dataset repo (needs network and login)")
    try:
        args = parser.parse_args(argv)
        run_dir, cfg, _ = _load_run(args.run)
        files = sorted(run_dir.glob("pseudo_labels_round*.csv"))
        if not files:
            raise ConfigError(f"--run: {run_dir} has no pseudo_labels_roundNN.csv yet")
        round_index = args.round if args.round is not None else int(files[-1].stem.removeprefix("pseudo_labels_round"))
        csv_path = run_dir / f"pseudo_labels_round{round_index:02d}.csv"
        if not csv_path.is_file():
            raise ConfigError(f"--round: {csv_path.name} not found; rounds available: {', '.join(f.stem[-2:] for f in files)}")
        output = Path(args.output)
        if output.exists():
            raise ConfigError(f"--output: {output} exists; plabel never overwrites results")
        from plabel.data.splits import make_splits

        splits = make_splits(cfg.data, cfg.seed)  # the run's own seeded split
    except ConfigError as err:
        print(f"plabel export: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR

    import datasets

    with open(csv_path) as f:
        pseudo_rows = [(int(r["source_index"]), int(r["pseudo_label"]), float(r["entropy"])) for r in csv.DictReader(f)]
    source = splits.train_source

    def rows() -> Iterator[dict[str, Any]]:
        for i in splits.labeled_source_indices.tolist():
            yield {"image": _to_pil(source.image(i)), "label": int(source.labels[i]), "is_pseudo": False, "entropy": None, "round": 0}
        for i, label, ent in pseudo_rows:
            yield {"image": _to_pil(source.image(i)), "label": label, "is_pseudo": True, "entropy": ent, "round": round_index}

    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(num_classes=splits.num_classes),
            "is_pseudo": datasets.Value("bool"),
            "entropy": datasets.Value("float32"),
            "round": datasets.Value("int32"),
        }
    )
    # A private cache: from_generator's default cache is keyed on the generator's code and
    # could hand back an earlier export's rows.
    with tempfile.TemporaryDirectory() as cache:
        dataset = datasets.Dataset.from_generator(rows, features=features, cache_dir=cache)
        dataset.save_to_disk(str(output))
    print(f"exported {len(splits.labeled_source_indices)} labeled + {len(pseudo_rows)} pseudo-labeled samples (round {round_index}) -> {output}")
    if args.push_to_hub:
        dataset.push_to_hub(args.push_to_hub)
        print(f"pushed to the hub as {args.push_to_hub}")
    return 0


def _to_pil(image: torch.Tensor) -> Any:
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
