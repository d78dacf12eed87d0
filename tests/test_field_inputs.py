"""Inputs as they come from the field: folders, run folders, weights, environments and commands.
Each case asserts what the user sees: the exit status, one line naming the file or field and the
fix (no traceback, no library log line around it), and nothing written where it must not be."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, TINY, launch_command, subprocess_env, tiny
from own_data import labeled_folder, unlabeled_folder, word_named
from PIL import Image

from plabel.cli import main as plabel_main
from plabel.commands.train import train_main

SMALL = {"train.steps_per_epoch": 2, "train.epochs": 1, "train.eval_batch_size": 16}


def own(labeled: Path, out: Path, extra: dict | None = None) -> list[str]:
    """A tiny run on a labeled imagefolder (10 classes), the benchmark pool off."""
    changes = {"data.labeled.source": "hf", "data.labeled.name": str(labeled), "data.test_holdout": 10,
               "data.pool_limit": "null", **SMALL, **(extra or {})}
    return [*tiny(changes), "--output_dir", str(out)]


def one_line(code: int, capsys, expected_code: int = 2) -> str:
    """The command's whole stderr, which must be a single line (and no traceback)."""
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == expected_code, captured.err[-3000:] + captured.out[-2000:]
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def run_subprocess(args: list[str], cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    cmd = launch_command([str(ROOT / "train.py"), *args], 1)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=subprocess_env(**env), timeout=600)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return labeled_folder(tmp_path_factory.mktemp("digits") / "labeled", per_class=6)


# --- the cases of the issue: silently wrong runs ---------------------------------------------------


def test_test_classes_named_by_words_against_digit_folders_is_one_line(digits, tmp_path, capsys):
    words = word_named(tmp_path / "words")
    args = own(digits, tmp_path / "run", {"data.test.source": "hf", "data.test.name": str(words)})
    line = one_line(train_main(args), capsys)
    assert "data.test: class 'eight' is not a training class" in line and "0, 1, 2" in line and "zero" in line
    assert not (tmp_path / "run").exists()


def test_test_classes_matched_by_name_whatever_their_order(digits, tmp_path, capsys):
    """A test set with only some classes keeps the training ids (folder '3' is class 3, not 0)."""
    test = tmp_path / "test"
    for c in ("3", "7"):  # flipped copies: the labeled images' own bytes are refused as test images
        (test / c).mkdir(parents=True)
        for png in sorted((digits / c).iterdir()):
            Image.open(png).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(test / c / png.name)
    out = tmp_path / "run"
    assert train_main(own(digits, out, {"data.test.source": "hf", "data.test.name": str(test)})) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"][0]["test_accuracy"] >= 0  # ran; labels checked below through plabel score
    scores = tmp_path / "s.csv"
    assert plabel_main(["score", "--run", str(out), "--output", str(scores)]) == 0
    import csv

    labels = {int(r["label"]) for r in csv.DictReader(scores.open())}
    assert labels == {3, 7}


def test_class_folders_with_sub_folders_are_classed_by_the_top_folder(digits, tmp_path, capsys):
    nested = tmp_path / "nested"
    for c in range(10):
        for k, png in enumerate(sorted((digits / str(c)).iterdir())):
            target = nested / f"class{c}" / f"session_{'ab'[k % 2]}" / png.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(png, target)
    out = tmp_path / "run"
    assert train_main(own(nested, out)) == 0
    info = json.loads((out / "run_info.json").read_text())
    assert info["class_names"] == [f"class{c}" for c in range(10)]


def test_labeled_folder_without_class_folders_is_one_line(tmp_path, capsys):
    loose = tmp_path / "loose"
    unlabeled_folder(loose, count=12)
    for p in list(loose.rglob("*")):
        if p.is_file() and p.suffix in (".png", ".jpg") and p.parent != loose:
            shutil.move(str(p), loose / p.name)
    line = one_line(train_main(own(loose, tmp_path / "run")), capsys)
    assert "data.train.name" in line and "beside the class folders" in line or "no class folders" in line


def test_images_kept_in_data_run_twice_and_no_cache_goes_there(digits, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(digits, work / "data")
    before = sorted(str(p.relative_to(work)) for p in (work / "data").rglob("*"))
    args = [*tiny({"data.labeled.source": "hf", "data.labeled.name": "data", "data.test_holdout": 10, "data.pool_limit": "null", **SMALL})]
    for attempt in ("first", "second"):
        proc = run_subprocess([*args, "--output_dir", str(work / attempt)], cwd=work, HF_HOME=str(tmp_path / "hf"))
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(str(p.relative_to(work)) for p in (work / "data").rglob("*")) == before


def test_a_data_folder_holding_an_old_cache_still_reads_as_images(digits, tmp_path):
    import datasets

    work = tmp_path / "work"
    shutil.copytree(digits, work / "data")
    datasets.load_dataset("imagefolder", data_dir=str(work / "data"), split="train", cache_dir=str(work / "data"))  # plabel < 0.3
    proc = run_subprocess([*tiny({"data.labeled.source": "hf", "data.labeled.name": "data", "data.test_holdout": 10,
                                  "data.pool_limit": "null", **SMALL}), "--output_dir", str(work / "run")], cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "labeled: " not in proc.stdout and "hf data (imagefolder, 60 images in 10 class folders)" in proc.stdout


def test_wandb_online_without_a_server_falls_back_offline_and_finishes(tmp_path):
    out = tmp_path / "run"
    proc = run_subprocess([*tiny({"tracking.mode": "online", **SMALL}), "--output_dir", str(out)],
                          WANDB_API_KEY="0" * 40, WANDB_BASE_URL="http://127.0.0.1:9", WANDB_INIT_TIMEOUT="5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning: W&B online start failed" in proc.stdout and "continuing offline" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert (out / "summary.json").is_file()
    assert list((out / "wandb").glob("offline-run-*"))


# --- images that cannot be decoded ------------------------------------------------------------------


def _bomb(path: Path) -> None:
    Image.fromarray(np.zeros((120, 120), np.uint8)).save(path)


def test_decompression_bomb_in_the_labeled_set_is_one_line_with_the_way_out(digits, tmp_path, capsys):
    labeled = tmp_path / "labeled"
    shutil.copytree(digits, labeled)
    _bomb(labeled / "3" / "huge.png")
    pool = tmp_path / "pool"
    unlabeled_folder(pool, count=6)
    own_pool = {"data.unlabeled.source": "folder", "data.unlabeled.root": str(pool)}  # every labeled image is used
    args = own(labeled, tmp_path / "run", {**own_pool, "data.max_image_pixels": 3000})
    line = one_line(train_main(args), capsys)
    assert "huge.png" in line and "DecompressionBombError" in line and "data.max_image_pixels" in line
    # Raised past the file's size, the same folder trains.
    assert train_main(own(labeled, tmp_path / "run2", {**own_pool, "data.max_image_pixels": 20000, "data.image_size": 28})) == 0


def test_decompression_bomb_in_the_pool_is_skipped_and_named(digits, tmp_path):
    pool = tmp_path / "pool"
    unlabeled_folder(pool, count=12)
    _bomb(pool / "batch1" / "scan.png")
    out = tmp_path / "run"
    assert train_main(own(digits, out, {"data.unlabeled.source": "folder", "data.unlabeled.root": str(pool),
                                        "data.max_image_pixels": 3000, "pseudo.top_k_percent": 50})) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert any(u.endswith("scan.png") for u in summary["unreadable_pool_images"])


# --- writing: the run folder's place and its disk ----------------------------------------------------


def test_output_dir_under_a_regular_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    line = one_line(train_main([*TINY, "--output_dir", str(tmp_path / "file" / "run")]), capsys)
    assert "output_dir" in line and str(tmp_path / "file") in line and "not a directory" in line.lower()


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (root only): a disk that fills during the run."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


def test_read_only_output_dir_is_one_line(small_disk, tmp_path):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    proc = run_subprocess([*TINY, "--output_dir", str(small_disk / "run")])
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "output_dir" in lines[0] and "read-only" in lines[0].lower(), proc.stderr


def test_full_disk_is_one_line_leaves_no_temporary_files_and_resumes_elsewhere(small_disk, tmp_path):
    out = small_disk / "run"
    proc = run_subprocess([*tiny({"pseudo.rounds": 2, "pseudo.top_k_percent": "[30, 60]"}), "--output_dir", str(out)])
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and "free some space" in lines[0], proc.stderr
    assert not [p for p in out.rglob(".tmp*")], list(out.rglob(".tmp*"))
    for name in ("config.yaml", "run_info.json"):
        assert (out / name).stat().st_size > 0


def test_empty_summary_of_a_finished_run_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main([*TINY, "--output_dir", str(out)]) == 0
    (out / "summary.json").write_text("")
    capsys.readouterr()
    line = one_line(train_main([*TINY, "--output_dir", str(out)]), capsys)
    assert "summary.json: empty" in line and "remove it and rerun" in line
    (out / "summary.json").unlink()  # what the line says to do
    assert train_main([*TINY, "--output_dir", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["final_accuracy"] >= 0


@pytest.mark.parametrize("name,content", [("config.yaml", ""), ("config.yaml", "- a\n- list\n"), ("config.yaml", "a: [\n"),
                                          ("run_info.json", ""), ("run_info.json", "{not json")])
def test_damaged_files_of_an_interrupted_run_are_one_line(tmp_path, capsys, name, content):
    out = tmp_path / "run"
    assert train_main([*TINY, "--output_dir", str(out)]) == 0
    (out / "summary.json").unlink()  # interrupted before its end
    (out / name).write_text(content)
    capsys.readouterr()
    line = one_line(train_main([*TINY, "--output_dir", str(out)]), capsys)
    assert name in line and ("remove" in line and "--resume" in line)


def test_half_downloaded_parquet_is_exactly_one_line(tmp_path):
    import datasets

    full = tmp_path / "full.parquet"
    datasets.Dataset.from_dict({"image": [np.zeros((8, 8), np.uint8)] * 4, "label": [0, 1, 0, 1]}).to_parquet(str(full))
    half = tmp_path / "half.parquet"
    half.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    proc = run_subprocess([*tiny({"data.train.source": "hf", "data.train.name": str(half)}), "--output_dir", str(tmp_path / "run")])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "data.train.name" in proc.stderr
    assert not (tmp_path / "run").exists()


# --- beyond the cases: data -----------------------------------------------------------------


@pytest.mark.parametrize("what", ["file_as_folder", "only_corrupt", "audit_missing", "audit_bad_label", "csv_list_missing",
                                  "parquet_without_image", "holdout_too_big", "pixels_zero", "both_spellings"])
def test_own_data_mistakes_are_one_line_before_anything_is_written(digits, tmp_path, capsys, what):
    pool = tmp_path / "pool"
    unlabeled_folder(pool, count=6)
    extra = {"data.unlabeled.source": "folder", "data.unlabeled.root": str(pool)}
    expected = {
        "file_as_folder": "is a file, not a folder", "only_corrupt": "is a readable image", "audit_missing": "data.audit",
        "audit_bad_label": "is not a class", "csv_list_missing": "do not exist", "parquet_without_image": "data.unlabeled.image_column",
        "holdout_too_big": "data.test_holdout", "pixels_zero": "data.max_image_pixels", "both_spellings": "data.labeled",
    }[what]
    args_extra: dict = {}
    if what == "file_as_folder":
        extra["data.unlabeled.root"] = str(pool / "README.txt")
    elif what == "only_corrupt":
        bad = tmp_path / "bad"
        bad.mkdir()
        for k in range(3):
            (bad / f"{k}.png").write_bytes(b"not a png")
        extra["data.unlabeled.root"] = str(bad)
    elif what == "audit_missing":
        args_extra["data.audit"] = str(tmp_path / "nope.csv")
    elif what == "audit_bad_label":
        audit = tmp_path / "audit.csv"
        first = sorted(p for p in pool.rglob("img*"))[0].relative_to(pool)
        audit.write_text(f"path,label\n{first},eleven\n")
        args_extra["data.audit"] = str(audit)
    elif what == "csv_list_missing":
        listing = tmp_path / "pool.csv"
        listing.write_text("file_name,comment\npool/batch0/img0000.jpg,ok\npool/gone.png,missing\n")
        extra = {"data.unlabeled.source": "list", "data.unlabeled.root": str(listing)}
    elif what == "parquet_without_image":
        import datasets

        datasets.Dataset.from_dict({"pixels": [[0] * 64] * 3}).to_parquet(str(tmp_path / "p.parquet"))
        extra = {"data.unlabeled.source": "hf", "data.unlabeled.name": str(tmp_path / "p.parquet")}
    elif what == "holdout_too_big":
        args_extra["data.test_holdout"] = 40
    elif what == "pixels_zero":
        args_extra["data.max_image_pixels"] = 0
    out = tmp_path / "run"
    args = own(digits, out, {**extra, **args_extra})
    if what == "both_spellings":
        args += ["--data.train.name", str(digits)]
    line = one_line(train_main(args), capsys)
    assert expected in line, line
    assert not out.exists()


def test_imagefolder_split_into_train_and_test_folders(digits, tmp_path):
    root = tmp_path / "split"
    for c in range(10):
        files = sorted((digits / str(c)).iterdir())
        for k, png in enumerate(files):
            target = root / ("test" if k < 2 else "train") / str(c) / png.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(png, target)
    out = tmp_path / "run"
    args = own(root, out, {"data.test.source": "hf", "data.test.name": str(root), "data.test.split": "test",
                           "data.labeled_per_class": 2})
    assert train_main(args) == 0
    info = json.loads((out / "run_info.json").read_text())
    assert info["class_names"] == [str(c) for c in range(10)]  # the class folders under train/, not "train" and "test"


# --- run folders --------------------------------------------------------------------------------------


def test_output_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "run").write_text("x")
    assert "is a file" in one_line(train_main([*TINY, "--output_dir", str(tmp_path / "run")]), capsys)


def test_a_run_folder_over_another_pool_is_one_line(digits, tmp_path, capsys):
    pools = [tmp_path / "a", tmp_path / "b"]
    for p in pools:
        unlabeled_folder(p, count=6)
    out = tmp_path / "run"
    assert train_main(own(digits, out, {"data.unlabeled.source": "folder", "data.unlabeled.root": str(pools[0])})) == 0
    capsys.readouterr()
    line = one_line(train_main(own(digits, out, {"data.unlabeled.source": "folder", "data.unlabeled.root": str(pools[1])})), capsys)
    assert "another pool" in line and "--output_dir" in line


def test_a_damaged_pool_listing_is_one_line(digits, tmp_path, capsys):
    pool = tmp_path / "pool"
    unlabeled_folder(pool, count=6)
    out = tmp_path / "run"
    args = own(digits, out, {"data.unlabeled.source": "folder", "data.unlabeled.root": str(pool)})
    assert train_main(args) == 0
    (out / "summary.json").unlink()
    (out / "pool_index.npz").write_bytes(b"PK\x03\x04 damaged")
    capsys.readouterr()
    line = one_line(train_main(args), capsys)
    assert "pool_index.npz" in line and "remove it" in line


def test_score_and_export_on_a_damaged_run_folder_are_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main([*TINY, "--output_dir", str(out)]) == 0
    (out / "config.yaml").write_text("")
    capsys.readouterr()
    line = one_line(plabel_main(["score", "--run", str(out), "--output", str(tmp_path / "s.csv")]), capsys)
    assert "config.yaml: empty" in line
    line = one_line(plabel_main(["export", "--run", str(out), "--output", str(tmp_path / "e")]), capsys)
    assert "config.yaml: empty" in line and not (tmp_path / "e").exists()


def test_export_never_overwrites_in_either_format(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main([*TINY, "--output_dir", str(out)]) == 0
    (tmp_path / "e").mkdir()
    capsys.readouterr()
    for fmt in ("hf", "imagefolder"):
        line = one_line(plabel_main(["export", "--run", str(out), "--output", str(tmp_path / "e"), "--format", fmt]), capsys)
        assert "exists; plabel never overwrites" in line


# --- weights ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content,expected", [(b"", "model.weights"), (b"hello", "model.weights"), (None, "model.weights")])
def test_weights_that_are_not_weights_are_one_line(tmp_path, capsys, content, expected):
    path = tmp_path / "w.safetensors"
    if content is not None:
        path.write_bytes(content)
    else:
        import pickle

        path = tmp_path / "w.pth"
        path.write_bytes(pickle.dumps({"a": object()}))
    line = one_line(train_main([*TINY, "--model.weights", str(path), "--output_dir", str(tmp_path / "run")]), capsys)
    assert expected in line


# --- environment -----------------------------------------------------------------------------------


def test_unwritable_wandb_dir_turns_tracking_off_not_the_run(tmp_path):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "run"
    proc = run_subprocess([*tiny({"tracking.mode": "offline", "tracking.wandb_dir": str(tmp_path / "file" / "wandb"), **SMALL}),
                           "--output_dir", str(out)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "warning: W&B" in proc.stdout and (out / "summary.json").is_file()
    assert not (out / "scoring").exists()  # one epoch a round: the round-end checkpoint clears the pool pass's parts
    assert not (ROOT / "wandb").exists()  # W&B really off, not started in the working folder


# --- commands -------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv,expected", [
    (["--cpu-threads", "0"], "--cpu_threads"),
    (["--source.source", "folder", "--source.root", "/nonexistent/pool"], "source.root"),
    (["--source.source", "none"], "source.source"),
    (["--source.source", "list", "--source.root", "/nonexistent.txt"], "source.root"),
])
def test_score_mistakes_are_one_line(tmp_path, capsys, argv, expected):
    out = tmp_path / "run"
    assert train_main([*TINY, "--output_dir", str(out)]) == 0
    capsys.readouterr()
    line = one_line(plabel_main(["score", "--run", str(out), "--output", str(tmp_path / "s.csv"), *argv]), capsys)
    assert expected in line and not (tmp_path / "s.csv").exists()


def test_export_of_an_unknown_round_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main([*TINY, "--output_dir", str(out)]) == 0
    capsys.readouterr()
    line = one_line(plabel_main(["export", "--run", str(out), "--round", "7", "--output", str(tmp_path / "e")]), capsys)
    assert "--round" in line and "rounds available" in line
