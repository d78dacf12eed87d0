"""plabel export / plabel score on a finished tiny run."""

import csv
import subprocess

import datasets
import pytest
from helpers import ROOT, TINY, launch_command, subprocess_env

from plabel.cli import main as plabel_main
from plabel.commands.train import train_main


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert train_main([*TINY, "--output_dir", str(out)]) == 0
    return out


def test_export_loads_with_datasets_and_trains_a_model(finished_run, tmp_path, capsys):
    export = tmp_path / "export"
    assert plabel_main(["export", "--run", str(finished_run), "--output", str(export)]) == 0
    ds = datasets.load_from_disk(str(export))
    assert ds.column_names == ["image", "label", "is_pseudo", "entropy", "round", "path"]
    with open(finished_run / "pseudo_labels_round01.csv") as f:
        pseudo = list(csv.DictReader(f))
    assert len(ds) == 40 + len(pseudo)  # 4 labels x 10 classes + the round's selection
    assert ds["is_pseudo"].count(True) == len(pseudo)
    first_pseudo = ds[40]
    assert first_pseudo["label"] == int(pseudo[0]["pseudo_label"]) and first_pseudo["round"] == 1
    assert first_pseudo["entropy"] == pytest.approx(float(pseudo[0]["entropy"]), rel=1e-6)
    assert ds[0]["entropy"] is None and ds[0]["image"].size == (28, 28)
    # The export is a training set in its own right: plabel trains on it as an hf source.
    out = tmp_path / "retrain"
    args = [*TINY, "--data.train.source", "hf", "--data.train.name", str(export), "--data.pool_limit", "null",
            "--data.test_holdout", "20", "--data.labeled_per_class", "2", "--output_dir", str(out)]
    assert train_main(args) == 0
    assert (out / "summary.json").is_file()
    assert plabel_main(["export", "--run", str(finished_run), "--output", str(export)]) == 2
    assert "exists; plabel never overwrites" in capsys.readouterr().err


def _score_with(processes, run, output):
    # A --source.* option: the whole source (the embedded digits), not only the run's test set.
    # One thread per process whatever the process count: oneDNN's sums follow the thread count.
    score = ["-m", "plabel.cli", "score", "--run", str(run), "--output", str(output), "--batch-size", "33",
             "--source.source", "embedded", "--cpu-threads", "1"]
    cmd = launch_command(score, processes)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=subprocess_env(), timeout=300)


def test_score_same_result_in_one_and_two_processes(finished_run, tmp_path):
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    p1 = _score_with(1, finished_run, one)
    assert p1.returncode == 0, p1.stderr[-2000:]
    p2 = _score_with(2, finished_run, two)
    assert p2.returncode == 0, p2.stderr[-2000:]
    assert one.read_text() == two.read_text()
    rows = list(csv.DictReader(one.open()))
    assert len(rows) == 5000  # the whole embedded source
    assert [int(r["index"]) for r in rows] == list(range(5000))
    assert "scored 5000 samples" in p1.stdout


def test_score_refuses_bad_input(finished_run, tmp_path, capsys):
    assert plabel_main(["score", "--run", str(tmp_path), "--output", str(tmp_path / "s.csv")]) == 2
    assert "is not a plabel run folder" in capsys.readouterr().err
    assert plabel_main(["score", "--run", str(finished_run), "--output", str(tmp_path / "s.csv"),
                        "--source.source", "idx", "--source.root", str(tmp_path / "none")]) == 2
    assert "source.root" in capsys.readouterr().err
