"""What a sweep can measure on each finished run beside its summary (grid key ``evaluate``).

The corrupted test set of the ablations: each test image with Gaussian pixel noise and a small
rotation, seeded per sample, so every model compared sees the same corruption; and a finished
run's accuracy on it (cached as ``corrupted.json`` in the run folder)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import Dataset
from torchvision.transforms import v2


class CorruptedImages(Dataset):
    """A test set with Gaussian pixel noise and a small rotation, seeded per sample (the same
    corruption for every model compared)."""

    def __init__(self, base: Dataset, noise_std: float = 0.2, degrees: float = 15.0) -> None:
        self.base = base
        self.noise_std = noise_std
        self.rotate = v2.RandomRotation(degrees)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        x, y, index = self.base[i]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1_000_003 + i)
            # x is normalised to [-1, 1] (mean 0.5, std 0.5), so pixel noise of std s is 2s here.
            x = self.rotate(x) + torch.randn_like(x) * 2 * self.noise_std
        return x, y, index


def corrupted_accuracy(run_dir: Path) -> float:
    """Accuracy of a finished run's final weights on the corrupted test set."""
    from accelerate import Accelerator

    from plabel.config import config_from_dict
    from plabel.data.splits import IndexedImages, make_splits
    from plabel.data.transforms import source_transform
    from plabel.models.prepare import load_run_model
    from plabel.trainer.scoring_pass import ScorePlan, accuracy, score_dataset

    cfg = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    info = json.loads((run_dir / "run_info.json").read_text())
    splits = make_splits(cfg.data, cfg.seed)
    model, spec = load_run_model(run_dir, cfg, info)
    test_tf = source_transform(splits.test_source, spec, "none", train=False)
    test = IndexedImages(splits.test_source, splits.test_source_indices, test_tf)
    plan = ScorePlan(512, cfg.pseudo.eps, label="corrupted test set")
    scores = score_dataset(Accelerator(cpu=not torch.cuda.is_available()), model, CorruptedImages(test), plan)
    return accuracy(scores)


def cached_corrupted_accuracy(run_dir: Path) -> float:
    """``corrupted_accuracy`` of a finished run, computed once and kept in its folder."""
    cached = run_dir / "corrupted.json"
    if not cached.is_file():
        cpu = time.process_time()
        cached.write_text(json.dumps({"accuracy": corrupted_accuracy(run_dir), "cpu_time_s": time.process_time() - cpu}))
    return float(json.loads(cached.read_text())["accuracy"])


def junk_kinds_selected(run_dir: Path, round_index: int) -> dict[str, int]:
    """How many junk images of each kind a run's round selected (the pseudo-label CSV names pool
    rows by source index; the run's own config rebuilds the dirty source that says which kind
    each junk index is)."""
    from plabel.config import load_config
    from plabel.data.junk import JUNK, JunkedSource
    from plabel.data.splits import make_splits

    cfg = load_config(run_dir / "config.yaml")
    source = make_splits(cfg.data, cfg.seed).train_source
    counts = {kind: 0 for kind in cfg.data.junk_kinds}
    path = run_dir / f"pseudo_labels_round{round_index:02d}.csv"
    if not isinstance(source, JunkedSource) or not path.is_file():
        return counts
    base = len(source.base.labels)
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if int(r["true_label"]) == JUNK:
                counts[source.kind(int(r["source_index"]) - base)] += 1
    return counts
