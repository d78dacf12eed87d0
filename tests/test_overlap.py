"""A pool that holds labeled or test images (the same file, or a copy of its bytes) is cleaned with
one line, or refused; a test set that holds labeled images is refused. On every pool kind."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest
from own_data import labeled_folder, path_list, unlabeled_folder, word_named

from plabel.config import ConfigError, RunConfig
from plabel.data.splits import make_splits


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """data/{labeled,unlabeled,test}: 10 x 3 labeled, 60 pool files (59 readable), 10 x 2 test."""
    data = tmp_path_factory.mktemp("overlap") / "data"
    labeled_folder(data / "labeled", per_class=3)
    unlabeled_folder(data / "unlabeled", 60)
    word = word_named(data / "words", per_class=2)  # other digits than the labeled ones, as a test set
    test = data / "test"
    for folder in word.iterdir():
        shutil.copytree(folder, test / str(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"].index(folder.name)))
    shutil.rmtree(word)
    return data


def _cfg(layout: Path, kind: str, root: str, overlap: str = "drop", test: Path | None = None) -> RunConfig:
    cfg = RunConfig()
    cfg.data.train.source, cfg.data.train.name = "hf", str(layout / "labeled")
    cfg.data.unlabeled.source, cfg.data.unlabeled.root = kind, root
    cfg.data.test.source, cfg.data.test.name = "hf", str(test or layout / "test")
    cfg.data.pool_overlap = overlap  # type: ignore[assignment]
    return cfg


def _pool_names(splits) -> set[str]:
    return {splits.pool_name(i) for i in range(splits.pool_size)}


def test_a_pool_pointed_at_the_parent_folder_leaves_labeled_and_test_files_out(layout):
    splits = make_splits(_cfg(layout, "folder", str(layout)).data, seed=0)
    names = _pool_names(splits)
    assert not any(n.startswith(("labeled/", "test/")) for n in names)
    assert len(names) == 61 and all(n.startswith("unlabeled/") for n in names)  # its 60 images and the broken one
    (note,) = [n for n in splits.notes if "data.unlabeled" in n]
    assert "50 of the pool's 111 images are 30 labeled and 20 test images (50 the same file, 0 the same bytes" in note
    with pytest.raises(ConfigError, match=r"^data.unlabeled: 50 of the pool's 111 images .*data.pool_overlap drop"):
        make_splits(_cfg(layout, "folder", str(layout), "refuse").data, seed=0)


def test_copies_are_found_by_their_bytes_in_folders_lists_tars_and_parquet(layout, tmp_path):
    import datasets

    copies = [next((layout / "labeled" / "3").iterdir()), next((layout / "test" / "7").iterdir())]
    folder = tmp_path / "pool"
    shutil.copytree(layout / "unlabeled", folder)
    for k, src in enumerate(copies):
        shutil.copy(src, folder / f"copy{k}.png")
    list_file = tmp_path / "pool.txt"
    path_list(folder, list_file)
    list_file.write_text(list_file.read_text() + "pool/copy0.png\npool/copy1.png\n")
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "pool-000.tar", "w") as archive:
        for k, src in enumerate([*copies, *sorted((layout / "unlabeled").rglob("img000*.png"))]):
            data = src.read_bytes()
            info = tarfile.TarInfo(f"s{k:04d}.png")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    parquet = tmp_path / "pool.parquet"
    rows = [{"image": {"bytes": p.read_bytes(), "path": None}} for p in [*copies, *sorted((layout / "unlabeled").rglob("img001*.png"))]]
    datasets.Dataset.from_list(rows, features=datasets.Features({"image": datasets.Image()})).to_parquet(str(parquet))
    for kind, root in (("folder", str(folder)), ("list", str(list_file)), ("tar", str(shards / "pool-000.tar")), ("hf", str(parquet))):
        cfg = _cfg(layout, kind, root)
        if kind == "hf":  # a Hugging Face pool is named by name (root is the datasets cache)
            cfg.data.unlabeled.name, cfg.data.unlabeled.root = root, "data"
        splits = make_splits(cfg.data, seed=0)
        (note,) = [n for n in splits.notes if "data.unlabeled" in n]
        assert "are 1 labeled and 1 test images (0 the same file, 2 the same bytes elsewhere" in note, (kind, note)
        assert not {n for n in _pool_names(splits) if "copy" in n or n in ("s0000.png", "s0001.png", "0", "1")}, kind


def test_a_test_set_holding_labeled_images_is_refused(layout, tmp_path):
    test = tmp_path / "test"
    shutil.copytree(layout / "test", test)
    shutil.copy(next((layout / "labeled" / "5").iterdir()), test / "5" / "again.png")
    with pytest.raises(ConfigError, match=r"^data.test: 1 of its 21 images are also labeled training images \(0 the same file, 1 the same bytes"):
        make_splits(_cfg(layout, "folder", str(layout / "unlabeled"), test=test).data, seed=0)
    clean = make_splits(_cfg(layout, "folder", str(layout / "unlabeled")).data, seed=0)
    assert not [n for n in clean.notes if "data.unlabeled" in n] and clean.pool_size == 61
