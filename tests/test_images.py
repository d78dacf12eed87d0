"""Real-world image folders: mixed sizes, grey and colour, PNG and JPEG, a corrupt file, class
names as text; and a parquet file with string labels. Made here, offline."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_train, tiny
from PIL import Image

from plabel.cli import main as plabel_main
from plabel.config import load_config
from plabel.data.splits import make_splits

CLASSES = ("cat", "dog", "fox")
PER_CLASS = 24


def _picture(rng: np.random.Generator, c: int) -> Image.Image:
    """A class-coloured blob on noise, of a random size; every third one grey."""
    h, w = rng.integers(20, 60, size=2)
    pixels = rng.integers(0, 80, size=(h, w, 3)).astype(np.uint8)
    pixels[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4, c] = 230
    image = Image.fromarray(pixels)
    return image.convert("L") if rng.random() < 0.33 else image


def make_folder(root: Path, corrupt: bool = True) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            _picture(rng, c).save(root / name / f"{i:02d}.{'png' if i % 2 else 'jpg'}")
    if corrupt:
        (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    return root


def _args(folder: Path, seed: int, out: Path) -> list[str]:
    return [
        *tiny({"data.pool_limit": "null", "data.test_holdout": 15, "data.labeled_per_class": 3, "train.batch_size": 6,
               "train.pseudo_batch_size": 6, "pseudo.top_k_percent": 50}),
        "--data.train.source", "hf", "--data.train.name", str(folder), "--data.image_size", "32", "--seed", str(seed),
        "--output_dir", str(out),
    ]


def _where_is_broken(folder: Path, seed: int) -> str:
    """Which part of the split the corrupt file lands in, for this seed."""
    cfg = load_config(None, {"data.train.source": "hf", "data.train.name": str(folder), "data.test_holdout": 15,
                             "data.labeled_per_class": 3, "seed": seed})
    splits = make_splits(cfg.data, cfg.seed)
    names = {int(i): splits.train_source.describe(int(i)) for i in range(len(splits.train_source))}
    broken = next(i for i, n in names.items() if "broken.jpg" in n)
    for part, indices in (("labeled", splits.labeled_source_indices), ("pool", splits.pool_source_indices),
                          ("test", splits.test_source_indices)):
        if broken in indices.tolist():
            return part
    raise AssertionError("the corrupt file is in no part of the split")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("photos") / "photos")


def test_a_folder_of_mixed_images_trains_skips_the_corrupt_one_and_keeps_class_names(folder, tmp_path):
    seed = next(s for s in range(20) if _where_is_broken(folder, s) == "pool")
    out = tmp_path / "run"
    proc = run_train(_args(folder, seed, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped 1 unreadable pool image(s):" in proc.stdout and "broken.jpg" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    # 73 files: 15 held out for test, 3 labeled per class, the other 49 (the corrupt one among them) the pool.
    assert summary["rounds"][0]["labeled"] == 9 and summary["rounds"][1]["pseudo_labeled"] <= 24
    assert len(summary["unreadable_pool_images"]) == 1 and "broken.jpg" in summary["unreadable_pool_images"][0]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["select/unreadable"] for r in records if "select/unreadable" in r] == [1.0]
    info = json.loads((out / "run_info.json").read_text())
    assert info["class_names"] == list(CLASSES) and info["data_channels"] == 3 and info["image_size"] == [32, 32]
    with open(out / "pseudo_labels_round01.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["pseudo_label_name"] == CLASSES[int(r["pseudo_label"])] for r in rows)
    assert all(r["true_label_name"] == CLASSES[int(r["true_label"])] for r in rows)
    # The export keeps the names as a ClassLabel.
    import datasets

    assert plabel_main(["export", "--run", str(out), "--output", str(tmp_path / "export")]) == 0
    exported = datasets.load_from_disk(str(tmp_path / "export"))
    assert exported.features["label"].names == list(CLASSES)


def test_a_corrupt_labeled_image_stops_the_run_before_training_naming_the_file(folder, tmp_path):
    seed = next(s for s in range(200) if _where_is_broken(folder, s) in ("labeled", "test"))
    out = tmp_path / "run"
    proc = run_train(_args(folder, seed, out))
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("train.py: error: data.train: unreadable ") and "broken.jpg" in line
    assert not out.exists()


def test_parquet_with_string_labels(tmp_path):
    rng = np.random.default_rng(1)
    rows = {"img": [], "kind": []}
    for i in range(60):
        c = i % 3
        buffer = io.BytesIO()
        _picture(rng, c).save(buffer, format="PNG")
        rows["img"].append({"bytes": buffer.getvalue(), "path": None})
        rows["kind"].append(["zebra", "apple", "moth"][c])
    import datasets

    table = datasets.Dataset.from_dict(rows, features=datasets.Features({"img": datasets.Image(), "kind": datasets.Value("string")}))
    table.to_parquet(str(tmp_path / "train.parquet"))
    out = tmp_path / "run"
    args = [*tiny({"data.pool_limit": "null", "data.test_holdout": 12, "data.labeled_per_class": 3, "train.batch_size": 6,
                   "train.pseudo_batch_size": 6}),
            "--data.train.source", "hf", "--data.train.name", str(tmp_path / "train.parquet"),
            "--data.train.image_column", "img", "--data.train.label_column", "kind", "--output_dir", str(out)]
    proc = run_train(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "run_info.json").read_text())["class_names"] == ["apple", "moth", "zebra"]  # sorted
    with open(out / "pseudo_labels_round01.csv") as f:
        names = {r["pseudo_label_name"] for r in csv.DictReader(f)}
    assert names <= {"apple", "moth", "zebra"} and names


def test_colour_digits_folder_has_mixed_sizes_formats_and_named_classes(tmp_path):
    from plabel.experiments.colour_digits import NAMES, main

    assert main(["--out", str(tmp_path / "cd"), "--limit", "60", "--corrupt", "2", "--min-size", "30", "--max-size", "70"]) == 0
    files = sorted(p for p in (tmp_path / "cd").rglob("*") if p.is_file())
    assert {p.parent.name for p in files} <= set(NAMES) and len(files) == 62
    pictures = [p for p in files if "corrupt" not in p.name]
    sizes = {Image.open(p).size for p in pictures}
    assert len(sizes) > 10 and all(30 <= min(s) and max(s) <= 70 for s in sizes)
    assert {p.suffix for p in pictures} == {".jpg", ".png"}
    assert {Image.open(p).mode for p in pictures} >= {"RGB"}
    with pytest.raises(SystemExit, match="already holds files"):
        main(["--out", str(tmp_path / "cd")])
