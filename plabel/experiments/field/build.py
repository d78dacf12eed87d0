"""The field set: image sets unlike the MNIST digits every default was first chosen on, laid out
as a user's own data is (a labeled folder, a folder of unlabeled images, a labeled test folder).

    python -m plabel.experiments.field.build --out data/field            # every set, ~1 min on 2 cores
    python -m plabel.experiments.field.build --out /tmp/f --sets letters --pool 300 --test 100   # a tiny one

Sets (``plabel/experiments/field/render.py`` draws them): ``letters`` (26 classes, fonts),
``shapes`` (10, varied scale and position), ``textures`` (10), ``house`` (10 printed digits among
neighbours), ``signs`` (10 shape-and-colour pairs: colour carries the class), and ``colour_digits`` (the embedded MNIST digits as colour pictures of mixed sizes,
JPEG and PNG, ``plabel.experiments.colour_digits``). Each set's folder holds:

    labeled-<n>/<class>/*.png   n labeled images per class, for each label budget (nested: the
                                3 of labeled-3 are among the 10 of labeled-10)
    unlabeled/<NN>/p*.png       the pool; names and folders say nothing about the class
    test/<class>/*.png          the labeled test set
    truth.csv                   path,label of every pool image (for ``--data.audit``)
    manifest.json               counts, classes, seed, and the fonts drawn with

A picture is a function of (set, split, index, seed) alone, so a set is the same however many
processes build it. Fonts come from the machine (Debian's font packages; ``manifest.json`` lists
them); with other fonts installed the letters and house numbers differ. Every result in
docs/results.md was drawn with these 131 (``fonts_sha256`` 142356cb...08318; fonts-liberation2 and
fonts-noto-mono add 14 more and change both sets):

    apt-get install fonts-dejavu fonts-liberation fonts-freefont-ttf fonts-crosextra-carlito \
        fonts-crosextra-caladea fonts-lato fonts-open-sans fonts-linuxlibertine fonts-cantarell \
        fonts-roboto fonts-noto-core
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import multiprocessing
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from plabel.config.args import SpellingsParser

SETS = ("letters", "shapes", "textures", "house", "colour_digits", "signs")
SPLITS = {"reserve": 1, "pool": 2, "test": 3}  # seeds the pictures of each split apart
BUDGETS = (3, 10, 30)
_fonts: list[Path] = []


def _class_names(kind: str) -> tuple[str, ...]:
    if kind == "colour_digits":
        from plabel.experiments.colour_digits import NAMES

        return NAMES
    from plabel.experiments.field.render import KINDS

    return KINDS[kind][0]


def _labels(kind: str, split: str, n: int, seed: int) -> np.ndarray:
    """Balanced labels in a seeded order (the reserve: ``n`` per class, class by class)."""
    classes = len(_class_names(kind))
    if split == "reserve":
        return np.repeat(np.arange(classes), n)
    rng = np.random.default_rng([seed, SETS.index(kind), SPLITS[split], 0])
    return rng.permutation(np.arange(n) % classes)


def _draw(kind: str, split: str, index: int, label: int, seed: int) -> Any:
    rng = np.random.default_rng([seed, SETS.index(kind), SPLITS[split], index + 1])
    if kind == "colour_digits":
        from plabel.experiments.colour_digits import colour_digit

        return colour_digit(_digit(label, split, index, seed), rng, 32, 96)
    from plabel.experiments.field.render import KINDS

    return KINDS[kind][1](label, rng, _fonts)


def _digit(label: int, split: str, index: int, seed: int) -> np.ndarray:
    """An embedded MNIST digit of class ``label``; each split draws from its own part of the 5,000."""
    images, labels = _embedded()
    of_class = np.flatnonzero(labels == label)
    part = np.array_split(of_class, 3)[SPLITS[split] - 1]  # reserve, pool and test never share a digit
    return images[int(part[(index * 7919 + seed) % len(part)]), 0]


@functools.lru_cache(maxsize=1)
def _embedded() -> tuple[np.ndarray, np.ndarray]:
    from plabel.data.files import open_embedded

    source = open_embedded()
    return source.images.numpy(), source.labels.numpy()


def _write(job: tuple[str, str, int, int, int, str]) -> None:
    kind, split, index, label, seed, path = job
    picture = _draw(kind, split, index, label, seed)
    if kind == "colour_digits" and index % 3 == 0:
        picture.save(Path(path).with_suffix(".jpg"), quality=90)  # a third JPEG, as users' folders mix them
    else:
        picture.save(path)


def _start(fonts: list[Path]) -> None:
    _fonts[:] = fonts


def build_set(out: Path, kind: str, pool: int, test: int, budgets: Sequence[int], seed: int, processes: int) -> dict[str, Any]:
    """Write one set under ``out/kind``; returns its manifest."""
    from plabel.experiments.field.render import find_fonts

    root = out / kind
    if root.exists():
        shutil.rmtree(root)
    names = _class_names(kind)
    fonts = find_fonts() if kind in ("letters", "house") else []
    reserve = max(budgets)
    jobs, truth = [], []
    labels = _labels(kind, "reserve", reserve, seed)
    for i, label in enumerate(labels.tolist()):
        folder = root / f"labeled-{reserve}" / names[label]
        jobs.append((kind, "reserve", i, label, seed, str(folder / f"l{i:05d}.png")))
    for i, label in enumerate(_labels(kind, "pool", pool, seed).tolist()):
        name = f"{i // 1000:02d}/p{i:06d}.png"
        jobs.append((kind, "pool", i, label, seed, str(root / "unlabeled" / name)))
        truth.append((name if kind != "colour_digits" or i % 3 else name[:-4] + ".jpg", names[label]))
    for i, label in enumerate(_labels(kind, "test", test, seed).tolist()):
        jobs.append((kind, "test", i, label, seed, str(root / "test" / names[label] / f"t{i:05d}.png")))
    for job in jobs:
        Path(job[-1]).parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if processes <= 1:
        _start(fonts)
        for job in jobs:
            _write(job)
    else:
        # fork only from a single-threaded process: a fork while another thread holds a lock (torch's,
        # a logging handler's) leaves the child waiting on it forever; spawn is safe anywhere
        context = "fork" if threading.active_count() == 1 else "spawn"
        with multiprocessing.get_context(context).Pool(processes, initializer=_start, initargs=(fonts,)) as workers:
            workers.map(_write, jobs, chunksize=64)
    # Smaller budgets: the first n of each class of the reserve (nested), copied.
    for n in sorted(budgets)[:-1]:
        for c, name in enumerate(names):
            (root / f"labeled-{n}" / name).mkdir(parents=True)
            for j in range(n):
                i = c * reserve + j
                for src in (root / f"labeled-{reserve}" / name).glob(f"l{i:05d}.*"):
                    shutil.copy2(src, root / f"labeled-{n}" / name / src.name)
    with open(root / "truth.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(truth)
    manifest = {
        "set": kind, "classes": list(names), "pool": pool, "test": test, "labeled_per_class": sorted(budgets), "seed": seed,
        "size": "32x32 RGB" if kind != "colour_digits" else "32-96 px a side, RGB (a tenth grey in the colour_digits tool; not here)",
        "fonts": [p.name for p in fonts], "fonts_sha256": _fonts_digest(fonts), "seconds": round(time.perf_counter() - started, 1),
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _fonts_digest(fonts: Sequence[Path]) -> Optional[str]:
    if not fonts:
        return None
    digest = hashlib.sha256()
    for path in fonts:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = SpellingsParser(prog="python -m plabel.experiments.field.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/field", help="folder of the sets (default: data/field)")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS, help="sets to build (default: all)")
    parser.add_argument("--pool", type=int, default=4000, help="unlabeled images per set (default: 4000)")
    parser.add_argument("--test", type=int, default=1000, help="test images per set (default: 1000)")
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS), help="labeled images per class, one folder each")
    parser.add_argument("--seed", type=int, default=0, help="every picture (default: 0)")
    parser.add_argument("--processes", type=int, default=max(1, multiprocessing.cpu_count()), help="drawing processes")
    args = parser.parse_args(argv)
    if min(args.budgets) < 1 or args.pool < 1 or args.test < 1:
        parser.error("--budgets, --pool and --test must be positive")
    for kind in args.sets:
        m = build_set(Path(args.out), kind, args.pool, args.test, args.budgets, args.seed, args.processes)
        fonts = f", {len(m['fonts'])} fonts" if m["fonts"] else ""
        print(f"{kind}: {len(m['classes'])} classes, labeled {'/'.join(map(str, m['labeled_per_class']))} per class, "
              f"pool {m['pool']}, test {m['test']}{fonts} ({m['seconds']} s) -> {Path(args.out) / kind}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
