"""Trees a user brings, built from the embedded digits: a labeled imagefolder, an unlabeled folder
nested three deep (PNG and JPEG, grey and colour, odd sizes, a corrupt file, a non-image file), a
list of paths, a parquet file with only an image column, and WebDataset-style tar shards."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from plabel.data.files import open_embedded

CLASSES = [str(d) for d in range(10)]


def _digits() -> tuple[np.ndarray, np.ndarray]:
    source = open_embedded()
    return source.images[:, 0].numpy(), source.labels.numpy()


def labeled_folder(root: Path, per_class: int = 6) -> Path:
    """root/<digit>/<n>.png: ``per_class`` digits of each class (the embedded set's first ones)."""
    images, labels = _digits()
    for c in range(10):
        (root / CLASSES[c]).mkdir(parents=True, exist_ok=True)
        for n, i in enumerate(np.nonzero(labels == c)[0][:per_class]):
            Image.fromarray(images[i]).save(root / CLASSES[c] / f"{n}.png")
    return root


def pool_images(count: int, start: int = 2000) -> list[tuple[Image.Image, int]]:
    """``count`` digits from the embedded set (after the labeled ones), varied as files in the field are:
    every third is colour, every fifth a 30x26 size, every seventh JPEG-bound."""
    images, labels = _digits()
    out = []
    for k in range(count):
        i = start + k
        picture = Image.fromarray(images[i])
        if k % 3 == 1:
            picture = picture.convert("RGB")
        if k % 5 == 2:
            picture = picture.resize((30, 26))
        out.append((picture, int(labels[i])))
    return out


def unlabeled_folder(root: Path, count: int = 60) -> dict[str, int]:
    """Images nested up to three deep (PNG, and JPEG for every seventh), a corrupt .png, a
    README.txt and a hidden file; returns relative path -> true label of the readable images."""
    truth = {}
    for k, (picture, label) in enumerate(pool_images(count)):
        sub = Path(f"batch{k % 3}") / (f"day{k % 2}" if k % 2 else "") / (f"cam{k % 4}" if k % 4 == 3 else "")
        name = f"img{k:04d}." + ("jpg" if k % 7 == 0 else "png")
        (root / sub).mkdir(parents=True, exist_ok=True)
        picture.save(root / sub / name)
        truth[str(sub / name)] = label
    (root / "batch0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "README.txt").write_text("pictures from the field\n")
    (root / ".hidden.png").write_bytes(b"")
    return truth


def path_list(folder: Path, list_file: Path, missing: bool = False) -> list[str]:
    """A .txt list of the folder's images, relative to the list's own folder (and one missing entry)."""
    names = sorted(str(p.relative_to(list_file.parent)) for p in folder.rglob("img*.*"))
    lines = names + (["gone/never_there.png"] if missing else [])
    list_file.write_text("# my pool\n" + "\n".join(lines) + "\n")
    return names


def image_only_parquet(path: Path, count: int = 60) -> Path:
    """A parquet file whose only column is ``image`` (PNG bytes), as a scraped dataset might be."""
    import datasets

    rows = [{"image": picture} for picture, _ in pool_images(count)]
    ds = datasets.Dataset.from_list(rows, features=datasets.Features({"image": datasets.Image()}))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))
    return path


def tar_shards(folder: Path, count: int = 60, shards: int = 3) -> list[str]:
    """``shards`` WebDataset-style shards (key.png + key.json per sample); returns member names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for s in range(shards):
        with tarfile.open(folder / f"pool-{s:03d}.tar", "w") as archive:
            for k, (picture, label) in enumerate(pool_images(count)):
                if k % shards != s:
                    continue
                for suffix, data in ((".png", _png(picture)), (".json", f'{{"source": "cam{k % 4}"}}'.encode())):
                    info = tarfile.TarInfo(f"sample{k:05d}{suffix}")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
                names.append(f"pool-{s:03d}.tar/sample{k:05d}.png")
    return names


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def word_named(root: Path, per_class: int = 4) -> Path:
    """The labeled_folder digits in folders named by words ("zero".."nine")."""
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    images, labels = _digits()
    for c in range(10):
        (root / words[c]).mkdir(parents=True, exist_ok=True)
        for n, i in enumerate(np.nonzero(labels == c)[0][100 : 100 + per_class]):
            Image.fromarray(images[i]).save(root / words[c] / f"{n}.png")
    return root
