"""A user's own data: a labeled imagefolder and a pool nobody labeled (a nested folder, a path list,
an image-only parquet file, tar shards). Listing, reading, errors; whole runs on 1-3 processes
select identically, resume identically after a kill or a stop (also in the pool's scoring pass),
and export paths that load back with their pseudo-labels."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT, launch_command, run_processes, subprocess_env, tiny
from own_data import image_only_parquet, labeled_folder, path_list, pool_images, tar_shards, unlabeled_folder
from safetensors.torch import load_file

from plabel.cli import main as plabel_main
from plabel.config import ConfigError, SourceConfig
from plabel.data.base import UnreadableImage
from plabel.data.pool_index import INDEX_FILE, PathIndex, expand_braces, read_list, scan_folder, scan_tars
from plabel.data.unlabeled import UNLABELED, ListedSource, open_unlabeled


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    truth = unlabeled_folder(root / "pool")
    path_list(root / "pool", root / "pool.txt")
    image_only_parquet(root / "parquet" / "pool.parquet")
    tar_shards(root / "shards")
    labeled_folder(root / "labeled")
    return {"root": root, "truth": truth}


# --- listing and reading -----------------------------------------------------------------------


def test_folder_listing_is_sorted_nested_and_skips_what_is_not_an_image(trees):
    index = scan_folder(trees["root"] / "pool", "data.unlabeled")
    names = [index.name(i) for i in range(len(index))]
    assert names == sorted(names, key=lambda n: n.split("/"))  # each folder's entries by name, depth first
    assert set(names) == set(trees["truth"]) | {"batch0/broken.png"}  # corrupt by content, an image by name
    assert any(n.count("/") == 3 for n in names)  # three folders deep
    assert index.skipped == 1  # README.txt; the hidden file is not even counted
    assert index.offsets.dtype == np.int64 and index.names.nbytes < 40 * len(index)  # a few dozen bytes a file


def test_symlinked_folders_are_followed_once(tmp_path):
    (tmp_path / "real").mkdir()
    for k, (picture, _) in enumerate(pool_images(3)):
        picture.save(tmp_path / "real" / f"{k}.png")
    (tmp_path / "real" / "loop").symlink_to(tmp_path / "real")  # a loop
    (tmp_path / "alias").symlink_to(tmp_path / "real")  # the same folder twice
    index = scan_folder(tmp_path, "data.unlabeled")
    assert len(index) == 3


def test_listing_round_trips_and_detects_damage(trees, tmp_path):
    index = scan_tars(str(trees["root"] / "shards"), "data.unlabeled")
    index.save(tmp_path / INDEX_FILE)
    back = PathIndex.load(tmp_path / INDEX_FILE)
    assert back.digest() == index.digest() and [back.name(i) for i in range(3)] == [index.name(i) for i in range(3)]
    assert not list(tmp_path.glob(".tmp-*"))
    with np.load(tmp_path / INDEX_FILE) as z:
        arrays = dict(z)
    arrays["starts"] = arrays["starts"] + 1
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ConfigError, match="damaged"):
        PathIndex.load(tmp_path / "bad.npz")


def test_every_kind_reads_the_same_pixels(trees):
    root = trees["root"]
    folder = ListedSource(scan_folder(root / "pool", "f"), "f")
    tars = ListedSource(scan_tars(str(root / "shards"), "f"), "f")
    listed = ListedSource(read_list(root / "pool.txt", "f"), "f")
    parquet = open_unlabeled(SourceConfig(source="hf", name=str(root / "parquet" / "pool.parquet")))
    assert (len(tars), len(listed), len(parquet)) == (60, 60, 60)
    assert bool((parquet.labels == UNLABELED).all()) and bool((folder.labels == UNLABELED).all())
    assert tars.channels == 3 and folder.channels == 3  # colour files mixed in: colour wins
    for source in (folder, tars, listed, parquet):
        source.convert_to(1)
    # sample00004 is pool image 4 (grey, 28x28) in the tars and the parquet; img0004 in the folder.
    member = [tars.sample_name(i) for i in range(len(tars))].index("pool-001.tar/sample00004.png")
    file = [folder.sample_name(i) for i in range(len(folder))].index("batch1/img0004.png")
    assert torch.equal(tars.image(member), folder.image(file))
    assert torch.equal(parquet.image(4), folder.image(file))
    assert tars.image(member).shape == (1, 28, 28)
    broken = [folder.sample_name(i) for i in range(len(folder))].index("batch0/broken.png")
    with pytest.raises(UnreadableImage, match="broken.png"):
        folder.image(broken)


def test_brace_patterns():
    assert expand_braces("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert expand_braces("{a,b}-{1..2}.tar") == ["a-1.tar", "a-2.tar", "b-1.tar", "b-2.tar"]


def test_a_pattern_of_shards_is_the_same_pool_as_their_folder(trees):
    folder = scan_tars(str(trees["root"] / "shards"), "f")
    pattern = scan_tars(str(trees["root"] / "shards" / "pool-{000..002}.tar"), "f")
    assert pattern.digest() == folder.digest()


# --- what a user sees when the pool is not there -------------------------------------------------


def _train(args, processes=1, fault=None, timeout=600):
    env = subprocess_env(**({"PLABEL_FAULT": fault} if fault else {}))
    cmd = launch_command([str(ROOT / "train.py"), *args], processes)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def _own(trees, kind: str, out: Path, extra: dict | None = None) -> list[str]:
    root = trees["root"]
    pool = {"folder": root / "pool", "list": root / "pool.txt", "tar": root / "shards", "hf": root / "parquet" / "pool.parquet"}[kind]
    changes = {
        "data.labeled.source": "hf", "data.labeled.name": str(root / "labeled"), "data.test_holdout": 20,
        "data.unlabeled.source": kind, "data.pool_limit": "null", "pseudo.rounds": 2, "pseudo.top_k_percent": "[30, 60]",
        "train.eval_batch_size": 8, "checkpoint.score_flush_batches": 2, "train.steps_per_epoch": 3,
        **({"data.unlabeled.name": str(pool)} if kind == "hf" else {"data.unlabeled.root": str(pool)}),
        **(extra or {}),
    }
    return [*tiny(changes), "--output_dir", str(out)]


@pytest.mark.parametrize("kind,root,message", [
    ("folder", "missing", "does not exist"),
    ("folder", "empty", "no image files under"),
    ("folder", "only_text", "no image files under"),
    ("list", "missing_entry.txt", "1 of the 2 files"),
    ("list", "twice.txt", "twice"),
    ("tar", "missing-{0..1}.tar", "2 of the 2 shards"),
    ("tar", "not_a_tar", "cannot be read as a tar file"),
])
def test_a_pool_that_is_not_there_is_one_line_before_training(trees, tmp_path, kind, root, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "only_text").mkdir()
    (tmp_path / "only_text" / "notes.txt").write_text("x")
    good = next(iter(trees["truth"]))
    (tmp_path / "missing_entry.txt").write_text(f"{trees['root'] / 'pool' / good}\nnope.png\n")
    (tmp_path / "twice.txt").write_text(f"{trees['root'] / 'pool' / good}\n{trees['root'] / 'pool' / good}\n")
    (tmp_path / "not_a_tar").mkdir()
    (tmp_path / "not_a_tar" / "bad.tar").write_bytes(b"\x00garbage" * 100)
    out = tmp_path / "run"
    proc = _train(_own(trees, kind, out, {"data.unlabeled.root": str(tmp_path / root)}))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "data.unlabeled.root" in lines[0] and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_config_refuses_pool_kinds_for_labeled_data(trees, tmp_path):
    proc = _train([*tiny({"data.train.source": "folder", "data.train.root": str(trees["root"] / "pool")}), "--output_dir", str(tmp_path / "r")])
    assert proc.returncode == 2 and "only be data.unlabeled" in proc.stderr


# --- whole runs ------------------------------------------------------------------------------


def _outcome(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    return {
        "rounds": summary["rounds"],
        "selections": [(out / f"pseudo_labels_round{r:02d}.csv").read_text() for r in (1, 2)],
        "weights": load_file(str(out / "model.safetensors")),
    }


def _same(a: dict, b: dict) -> None:
    assert a["selections"] == b["selections"]
    assert a["rounds"] == b["rounds"]
    for name, tensor in a["weights"].items():
        assert b["weights"][name].equal(tensor), name


@pytest.fixture(scope="module")
def folder_reference(trees, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = _train(_own(trees, "folder", out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def folder_reference_2(trees, tmp_path_factory):
    """The uninterrupted run on 2 processes (weights drift from 1 process's in float summation order)."""
    out = tmp_path_factory.mktemp("ref2") / "run"
    proc = _train(_own(trees, "folder", out), processes=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_own_folder_run_names_its_samples_and_knows_no_precision(trees, folder_reference):
    out = folder_reference
    with open(out / "pseudo_labels_round02.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["path"] in trees["truth"] for r in rows)  # never the corrupt file
    assert all(r["true_label"] == "" for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert [r["pseudo_label_precision"] for r in summary["rounds"]] == [None, None, None]
    assert summary["unreadable_pool_images"] == [str(trees["root"] / "pool" / "batch0" / "broken.png")]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    selected = [m for m in metrics if "select/num_selected" in m]
    assert "select/agreement_with_previous" in selected[1] and "select/entropy_selected_max" in selected[0]
    assert all(m.get("select/pseudo_label_precision", "x") in (None, "NaN", "nan") or m["select/pseudo_label_precision"] != m["select/pseudo_label_precision"]
               for m in selected)
    assert (out / INDEX_FILE).is_file()


def _pool_of(kind: str, root: Path):
    if kind == "hf":
        return open_unlabeled(SourceConfig(source="hf", name=str(root / "parquet" / "pool.parquet")))
    spec = {"folder": root / "pool", "list": root / "pool.txt", "tar": root / "shards"}[kind]
    return open_unlabeled(SourceConfig(source=kind, root=str(spec)))  # type: ignore[arg-type]


def _select_own_pool(accelerator, root: str, kinds: list[str], cache_root: str, flush_at: int) -> list:
    """Every kind's pool scored by one fixed model (seeded alike everywhere) and selected; with a
    score cache filled by an earlier world whose parts this world must take as they are."""
    from plabel.data.splits import IndexedImages
    from plabel.data.transforms import build_transform, plain_spec
    from plabel.models.builtin import SmallCNN
    from plabel.trainer.round_selection import SelectionRequest, select_for_round
    from plabel.trainer.scoring_cache import ScoreCache
    from plabel.trainer.scoring_pass import ScorePlan

    torch.manual_seed(0)
    model = accelerator.prepare(SmallCNN(in_channels=1, num_classes=10))
    out = []
    for kind in kinds:
        pool = _pool_of(kind, Path(root))
        pool.convert_to(1)
        data = IndexedImages(pool, torch.arange(len(pool)), build_transform(1, plain_spec(1, (28, 28)), "none", train=False), skip_unreadable=True)
        cache = ScoreCache(Path(cache_root) / kind) if cache_root else None
        plan = ScorePlan(batch_size=7, cache=cache, flush_batches=flush_at)
        request = SelectionRequest(1, 30.0, 10, True, "entropy", 0)
        picked = select_for_round(accelerator, model, data, pool.labels, request, plan)
        out.append((picked.selection.indices.tolist(), picked.selection.labels.tolist(), picked.selected_entropy.tolist()))
    return out


KINDS = ["folder", "list", "tar", "hf"]


def test_own_pools_select_identically_on_1_2_3_processes_with_the_same_weights(trees, tmp_path):
    """Selection is exact whatever the process count (odd batch 7, pools of 60 and 61), and a
    scoring pass cut short on 2 processes is finished bit for bit by 3 (and by 1)."""
    root = str(trees["root"])
    (reference,) = run_processes(_select_own_pool, 1, root, KINDS, "", 2, timeout=300)
    assert all(len(indices) > 5 for indices, _, _ in reference)
    # 2 processes from nothing, writing parts; then 3 and 1 finishing a pass of which half the parts
    # are gone (so 3 processes score the missing half themselves): the same selection each time.
    cache = tmp_path / "cache"
    results = run_processes(_select_own_pool, 2, root, KINDS, str(cache), 2, timeout=300)
    assert all(r == reference for r in results), 2
    partial = sorted(p.name for p in (cache / "folder").iterdir())
    assert partial, "parts were written"
    for path in list((cache / "folder").iterdir())[::2]:  # as if the pass had been stopped half way
        path.unlink()
    for world in (3, 1):
        results = run_processes(_select_own_pool, world, root, KINDS, str(cache), 2, timeout=300)
        assert all(r == reference for r in results), world


# CI time: the folder kind on 3 processes runs by default, the others with -m slow.
@pytest.mark.parametrize("kind,processes", [("folder", 3), pytest.param("tar", 2, marks=pytest.mark.slow),
                                            pytest.param("list", 2, marks=pytest.mark.slow),
                                            pytest.param("hf", 3, marks=pytest.mark.slow)])
def test_own_data_runs_on_several_processes(trees, tmp_path, kind, processes):
    out = tmp_path / "run"
    proc = _train(_own(trees, kind, out), processes=processes)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((out / "pseudo_labels_round02.csv").open()))
    assert rows and all(r["path"] for r in rows)
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("fault,processes,expect", [
    # killed in round 1's pool pass, after 2 of 4 flushes: -m slow (CI time; the signal below resumes the same pass)
    pytest.param("flush:2@0:kill", 1, "scored before the restart", marks=pytest.mark.slow),
    ("flush:1@1:term", 2, "scored before the restart"),  # a preemption signal in the pool pass: exit 75 within a flush
    pytest.param("step:8@0:kill", 2, "resumed from", marks=pytest.mark.slow),  # killed while training round 1 (CI time)
])
def test_own_data_resumes_identically(trees, tmp_path, folder_reference, folder_reference_2, fault, processes, expect):
    reference = folder_reference if processes == 1 else folder_reference_2
    out = tmp_path / "run"
    stopped = _train(_own(trees, "folder", out), processes=processes, fault=fault)
    assert stopped.returncode != 0  # 75 from one process; the launcher says 1 for several
    if fault.endswith("term"):
        assert "stopped while scoring the pool" in stopped.stdout + stopped.stderr, stopped.stdout[-2000:]
    assert not (out / "summary.json").exists()
    if "flush" in fault:
        assert list((out / "scoring").rglob("*.safetensors")), "the finished part of the pass is on disk"
    resumed = _train(_own(trees, "folder", out), processes=processes)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert expect in resumed.stdout, resumed.stdout[-3000:]
    _same(_outcome(reference), _outcome(out))
    assert not (out / "scoring").exists()


def test_changed_pool_is_reported_on_resume_and_the_run_keeps_its_listing(trees, tmp_path):
    pool = tmp_path / "pool"
    unlabeled_folder(pool, count=24)
    out = tmp_path / "run"
    args = _own(trees, "folder", out, {"data.unlabeled.root": str(pool)})
    stopped = _train(args, fault="step:8@0:kill")
    assert stopped.returncode != 0
    pool_images(1)[0][0].save(pool / "batch1" / "late_arrival.png")
    (pool / "batch0" / "img0000.jpg").unlink()
    resumed = _train(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "the pool changed on disk since this run listed it (1 added, 1 removed)" in resumed.stdout
    with open(out / "pseudo_labels_round02.csv") as f:
        assert "batch1/late_arrival.png" not in f.read()
    summary = json.loads((out / "summary.json").read_text())
    assert any("img0000.jpg" in u for u in summary["unreadable_pool_images"])


def test_audit_file_gives_precision_on_the_audited_part(trees, tmp_path, folder_reference):
    audit = tmp_path / "audit.csv"
    with open(audit, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(sorted(trees["truth"].items()))
    out = tmp_path / "run"
    proc = _train(_own(trees, "folder", out, {"data.audit": str(audit)}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "pseudo_labels_round02.csv") as f:
        rows = list(csv.DictReader(f))
    right = sum(int(r["pseudo_label"]) == trees["truth"][r["path"]] for r in rows)
    assert summary["rounds"][2]["pseudo_label_precision"] == pytest.approx(right / len(rows))
    (tmp_path / "bad.csv").write_text("path,label\nnot/in/pool.png,3\n")
    bad = _train(_own(trees, "folder", tmp_path / "r2", {"data.audit": str(tmp_path / "bad.csv")}))
    assert bad.returncode == 2 and "data.audit" in bad.stderr and "not in the pool" in bad.stderr


def test_export_paths_load_back_with_their_pseudo_labels(trees, folder_reference, tmp_path):
    import datasets

    with open(folder_reference / "pseudo_labels_round02.csv") as f:
        pseudo = {r["path"]: int(r["pseudo_label"]) for r in csv.DictReader(f)}
    folder = tmp_path / "imagefolder"
    assert plabel_main(["export", "--run", str(folder_reference), "--output", str(folder), "--format", "imagefolder"]) == 0
    loaded = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train")
    rows = [r for r in loaded if r["is_pseudo"]]
    assert {r["path"]: r["label"] for r in rows} == pseudo
    hf = tmp_path / "hf"
    assert plabel_main(["export", "--run", str(folder_reference), "--output", str(hf)]) == 0
    ds = datasets.load_from_disk(str(hf))
    assert {p: label for p, label, is_pseudo in zip(ds["path"], ds["label"], ds["is_pseudo"]) if is_pseudo} == pseudo
    # The exported pixels are the pool file's own.
    from PIL import Image

    first = rows[0]
    original = Image.open(trees["root"] / "pool" / first["path"]).convert("L")
    assert np.array_equal(np.asarray(first["image"].convert("L").resize(original.size)), np.asarray(original)) or first["image"].size != original.size


def test_score_an_unlabeled_folder_writes_paths(trees, folder_reference, tmp_path, capsys):
    output = tmp_path / "scores.csv"
    assert plabel_main(["score", "--run", str(folder_reference), "--output", str(output), "--source.source", "folder",
                        "--source.root", str(trees["root"] / "pool"), "--cpu-threads", "1"]) == 0
    rows = list(csv.DictReader(output.open()))
    assert len(rows) == 61 and {r["path"] for r in rows} == set(trees["truth"]) | {"batch0/broken.png"}
    assert all(r["label"] == "" for r in rows if r["path"] != "batch0/broken.png")
    assert "no labels, no accuracy; 1 unreadable" in capsys.readouterr().out


def test_benchmark_mode_is_unchanged_by_the_new_column(tmp_path):
    """The embedded benchmark keeps its columns (path added last) and its precision."""
    out = tmp_path / "run"
    proc = _train([*tiny(), "--output_dir", str(out)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out / "pseudo_labels_round01.csv") as f:
        header = next(csv.reader(f))
    assert header[:7] == ["pool_index", "source_index", "pseudo_label", "entropy", "true_label", "pseudo_label_name", "true_label_name"]
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["rounds"][1]["pseudo_label_precision"] <= 1
    assert not (out / INDEX_FILE).exists()
    assert os.path.isfile(out / "config.yaml")


def test_wandb_table_of_pseudo_labels_names_pool_images_by_path(trees, tmp_path):
    """What W&B receives: the offline run's pseudo-label table has the path column, filled."""
    out = tmp_path / "run"
    proc = _train(_own(trees, "folder", out, {"tracking.mode": "offline"}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = sorted(out.rglob("pseudo_labels_round02*.table.json"))
    assert tables, list(out.rglob("*.table.json"))
    table = json.loads(tables[0].read_text())
    column = table["columns"].index("path")
    assert table["data"] and all(row[column] in trees["truth"] for row in table["data"])
