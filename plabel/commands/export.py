"""``plabel export``: a round's labeled + pseudo-labeled training set as a Hugging Face dataset
(``datasets.load_from_disk``), which plabel itself can train on."""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch

from plabel.commands.common import load_run, run_command, run_splits
from plabel.config import ConfigError
from plabel.config.args import OneLineParser


def build_parser() -> argparse.ArgumentParser:
    """``plabel export``'s options (also read by the docs tests)."""
    parser = OneLineParser(prog="plabel export", description=export_main.__doc__, allow_abbrev=False)
    parser.add_argument("--run", required=True, help="a run folder")
    parser.add_argument("--round", type=int, default=None, help="pseudo-label round to export (default: the last one written)")
    parser.add_argument("--output", required=True, help="folder to write (must not exist)")
    parser.add_argument(
        "--format", choices=("hf", "imagefolder", "onnx", "torchscript"), default="hf",
        help="a round's training set: hf = a datasets.save_to_disk folder; imagefolder = the images under images/ plus "
        "metadata.csv (file_name, label, is_pseudo, entropy, round, path), which datasets.load_dataset('imagefolder', "
        "data_dir=...) reads. The trained model: onnx = model.onnx (onnxruntime), torchscript = model.pt "
        "(torch.jit.load), each with model.json (preprocessing, class names) (default: hf)",
    )
    parser.add_argument(
        "--weights", default="final", metavar="WHICH",
        help="with --format onnx/torchscript: final (model.safetensors), best (the best round by validation), newest "
        "(the newest checkpoint of a run that did not finish) or a checkpoint folder (default: final)",
    )
    parser.add_argument(
        "--push_to_hub", default=None, metavar="REPO",
        help="also push to this hub dataset repo (needs network and login); --push-to-hub also works",
    )
    return parser


def export_main(argv: Optional[Sequence[str]] = None) -> int:
    """Write a round's labeled + pseudo-labeled training set as a Hugging Face dataset."""
    parser = build_parser()
    return run_command("plabel export", lambda: _export(parser.parse_args(argv)))


def _export(args: argparse.Namespace) -> int:
    if args.format in ("onnx", "torchscript"):
        return _export_model(args)
    run_dir, cfg, _ = load_run(args.run)
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
    splits = run_splits(run_dir, cfg)  # the run's own seeded split, over the pool it listed

    import datasets

    with open(csv_path) as f:
        pseudo_rows = [(int(r["source_index"]), int(r["pseudo_label"]), float(r["entropy"])) for r in csv.DictReader(f)]
    source = splits.train_source

    def rows() -> Iterator[dict[str, Any]]:
        for i in splits.labeled_source_indices.tolist():
            yield {"image": _to_pil(source.image(i)), "label": int(source.labels[i]), "is_pseudo": False, "entropy": None,
                   "round": 0, "path": source.sample_name(i)}
        for i, label, ent in pseudo_rows:
            yield {"image": _to_pil(source.image(i)), "label": label, "is_pseudo": True, "entropy": ent, "round": round_index,
                   "path": source.sample_name(i)}

    if args.format == "imagefolder":
        _write_imagefolder(output, rows(), list(splits.class_names))
        print(f"exported {len(splits.labeled_source_indices)} labeled + {len(pseudo_rows)} pseudo-labeled samples "
              f"(round {round_index}) -> {output}/metadata.csv and {output}/images/")
        return 0

    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=list(splits.class_names)),
            "is_pseudo": datasets.Value("bool"),
            "entropy": datasets.Value("float32"),
            "round": datasets.Value("int32"),
            "path": datasets.Value("string"),  # the sample's file under its source's root, tar member, or row
        }
    )
    # A private cache: from_generator's default cache is keyed on the generator's code and
    # could hand back an earlier export's rows.
    with tempfile.TemporaryDirectory() as cache:
        dataset = datasets.Dataset.from_generator(rows, features=features, cache_dir=cache)
        dataset.save_to_disk(str(output))
    print(f"exported {len(splits.labeled_source_indices)} labeled + {len(pseudo_rows)} pseudo-labeled samples (round {round_index}) -> {output}")
    if args.push_to_hub:
        try:
            dataset.push_to_hub(args.push_to_hub)
        except Exception as e:  # offline, no login, no rights: the local copy is written and stays
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise ConfigError(
                f"--push_to_hub: could not push to {args.push_to_hub} ({type(e).__name__}: {first}); the local copy "
                f"is complete in {output}: push it later with datasets.load_from_disk(...).push_to_hub(...)"
            ) from None
        print(f"pushed to the hub as {args.push_to_hub}")
    return 0


def _write_imagefolder(output: Path, rows: Iterator[dict[str, Any]], class_names: list[str]) -> None:
    """images/NNNNNNN.png and metadata.csv, written into a temporary folder renamed into place."""
    tmp = output.with_name(f".tmp-{output.name}")
    (tmp / "images").mkdir(parents=True)
    try:
        with open(tmp / "metadata.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name", "label", "label_name", "is_pseudo", "entropy", "round", "path"])
            for n, row in enumerate(rows):
                name = f"images/{n:07d}.png"
                row["image"].save(tmp / name)
                entropy = "" if row["entropy"] is None else f"{row['entropy']:.9g}"
                writer.writerow([name, row["label"], class_names[row["label"]], row["is_pseudo"], entropy, row["round"], row["path"]])
        tmp.rename(output)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _to_pil(image: torch.Tensor) -> Any:
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def _export_model(args: argparse.Namespace) -> int:
    """The run's model as model.onnx / model.pt plus model.json."""
    output = Path(args.output)
    if output.exists():
        raise ConfigError(f"--output: {output} exists; plabel never overwrites results")
    from plabel.use.export import export_model
    from plabel.use.run import load_run as load_trained

    run = load_trained(args.run, checkpoint=args.weights, device="cpu")
    target = export_model(run, output, args.format)
    print(f"wrote {target} and {output / 'model.json'} ({run.config.model.name}, {len(run.class_names)} classes, "
          f"input {run.spec.channels}x{run.spec.size[0]}x{run.spec.size[1]}, weights {run.weights.name})")
    return 0
