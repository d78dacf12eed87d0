"""Seeded stratified split into labeled / unlabeled pool / test, and the torch Datasets over it.

Two modes. The benchmark mode (no ``data.unlabeled``): one labeled source is split into a few
labeled samples per class, the pool (whose true labels are kept for pseudo-label precision) and
a held-out test set. A user's own data (``data.unlabeled``): ``data.train`` is the labeled set,
all of it (less a held-out test set if ``data.test`` is holdout), and the pool is the other
source, labels ``UNLABELED``; both live in one :class:`~plabel.data.unlabeled.LabeledAndPool`
source, labeled samples first.

The unlabeled pool is addressed by *pool index* 0..N-1 everywhere (scores, selections, files);
``Splits.pool_source_indices`` maps a pool index to the sample in the training source. Training
reads the pseudo-labels given to :class:`IndexedImages`, never the pool's labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from PIL import Image
from torch.utils.data import Dataset

from plabel.config import ConfigError, DataConfig
from plabel.data.base import UnreadableImage
from plabel.data.holdout import hold_out_validation, stratified_take
from plabel.data.overlap import refuse_test_in_labeled, without_known_images
from plabel.data.pool_index import PathIndex
from plabel.data.sources import ImageSource, open_source

UNREADABLE = -1  # the label IndexedImages gives an image it could not decode (pool only)


@dataclass
class Splits:
    train_source: ImageSource
    test_source: ImageSource
    labeled_source_indices: torch.Tensor  # (n_labeled,) indices into train_source
    pool_source_indices: torch.Tensor  # (pool_size,) indices into train_source, ascending
    test_source_indices: torch.Tensor  # (n_test,) indices into test_source
    num_classes: int
    notes: list[str] = field(default_factory=list)  # what the split found and did (printed once, at the start)
    # Labeled images held out of training to validate rounds (indices into train_source; see data.val_per_class)
    val_source_indices: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    @property
    def class_names(self) -> list[str]:
        return self.train_source.class_names

    @property
    def pool_size(self) -> int:
        return int(self.pool_source_indices.numel())

    @property
    def pool_labels(self) -> torch.Tensor:
        """True labels of the pool, for diagnostics only (``UNLABELED`` where nobody knows them)."""
        return self.train_source.labels[self.pool_source_indices]

    def pool_name(self, pool_index: int) -> str:
        """What outputs call pool sample ``pool_index``: its path (or row) in the pool's source."""
        source_index = int(self.pool_source_indices[pool_index])
        return self.train_source.sample_name(source_index)


def make_splits(cfg: DataConfig, seed: int, pool_index: PathIndex | None = None) -> Splits:
    """Open the sources and split them; every process computes the same split from ``seed``.

    ``pool_index``: the run's saved listing of a folder/list/tar pool (listed afresh without it)."""
    set_pixel_limit(cfg.max_image_pixels)
    if cfg.unlabeled.source != "none":
        return _own_data_splits(cfg, seed, pool_index)
    train = open_source(cfg.train, "data.train")
    labels = train.labels
    num_classes = train.num_classes
    generator = torch.Generator().manual_seed(seed)
    available = torch.ones(len(train), dtype=torch.bool)

    if cfg.test.source == "holdout":
        test = train
        n = len(train)
        if cfg.test_holdout >= n:
            raise ConfigError(f"data.test_holdout: {cfg.test_holdout} is not below the {n} samples of {train.description}")
        class_counts = torch.bincount(labels, minlength=num_classes)
        # Proportional to class size, so the test set mirrors the training distribution.
        quota = {c: int(round(cfg.test_holdout * int(class_counts[c]) / n)) for c in range(num_classes)}
        test_indices = stratified_take(labels, quota, generator)
        available[test_indices] = False
    else:
        test = open_source(cfg.test, "data.test")
        test_indices = torch.arange(len(test))
        _align_test_classes(test, train)
        refuse_test_in_labeled(train, test)
        if test.channels != train.channels:
            kinds = {1: "grey", 3: "colour"}
            raise ConfigError(
                f"data.test: images are {kinds[test.channels]} but training images are {kinds[train.channels]}; "
                "use a test set of the same kind"
            )

    remaining = labels.clone()
    remaining[~available] = -1
    per_class = torch.bincount(remaining[available], minlength=num_classes)
    for c in range(num_classes):
        have = int(per_class[c])
        if have == 0:
            named = f" ({train.class_names[c]!r})" if train.class_names[c] != str(c) else ""
            raise ConfigError(
                f"data.train: class {c}{named} has no sample left to label (of {num_classes} classes); "
                "check the label column or lower data.test_holdout"
            )
        if have < cfg.labeled_per_class:
            raise ConfigError(
                f"data.labeled_per_class: {cfg.labeled_per_class} requested but class {c} has only {have} samples available; lower it"
            )
    labeled_indices = stratified_take(remaining, {c: cfg.labeled_per_class for c in range(num_classes)}, generator)
    available[labeled_indices] = False

    pool_indices = torch.nonzero(available).flatten()
    if cfg.pool_limit is not None and pool_indices.numel() > cfg.pool_limit:
        keep = torch.randperm(pool_indices.numel(), generator=generator)[: cfg.pool_limit]
        pool_indices = torch.sort(pool_indices[keep]).values
    if pool_indices.numel() == 0:
        raise ConfigError(
            "data.labeled_per_class: no sample is left for the unlabeled pool; lower labeled_per_class or data.test_holdout"
        )
    if cfg.junk_share > 0:  # a dirty pool: junk joins the pool only (labels JUNK), after the split
        from plabel.data.junk import JunkedSource, junk_count

        count = junk_count(int(pool_indices.numel()), cfg.junk_share)
        base_size = len(train)
        train = JunkedSource(train, count, cfg.junk_kinds, seed)
        pool_indices = torch.cat([pool_indices, torch.arange(base_size, base_size + count)])
        if cfg.test.source == "holdout":
            test = train  # the same images; the held-out indices are all below base_size
    labeled_indices, val_indices, note = hold_out_validation(train.labels, labeled_indices, num_classes, cfg.val_per_class, seed, cfg.val_scope)
    return Splits(train, test, labeled_indices, pool_indices, test_indices, num_classes, [note], val_indices)


def set_pixel_limit(limit: int | None) -> None:
    """PIL's decompression-bomb limit for this process (and the loader workers it forks)."""
    Image.MAX_IMAGE_PIXELS = limit if limit is not None else _PIL_DEFAULT_LIMIT


_PIL_DEFAULT_LIMIT = Image.MAX_IMAGE_PIXELS


def _own_data_splits(cfg: DataConfig, seed: int, pool_index: PathIndex | None) -> Splits:
    """A labeled source (all of it labeled, less a held-out test set) and a separate pool."""
    from plabel.data.unlabeled import LabeledAndPool, open_unlabeled, read_audit

    labeled_source = open_source(cfg.train, "data.train")
    pool_source = open_unlabeled(cfg.unlabeled, "data.unlabeled", pool_index)
    train = LabeledAndPool(labeled_source, pool_source)
    n, num_classes = len(labeled_source), labeled_source.num_classes
    generator = torch.Generator().manual_seed(seed)
    available = torch.ones(n, dtype=torch.bool)
    if cfg.test.source == "holdout":
        if cfg.test_holdout * 2 > n:
            raise ConfigError(
                f"data.test_holdout: {cfg.test_holdout} would hold out more than half of the {n} labeled samples; "
                "lower it, or give a separate labeled test set with data.test.source/name"
            )
        counts = torch.bincount(labeled_source.labels, minlength=num_classes)
        quota = {c: int(round(cfg.test_holdout * int(counts[c]) / n)) for c in range(num_classes)}
        test_indices = stratified_take(labeled_source.labels, quota, generator)
        available[test_indices] = False
        test: ImageSource = train
    else:
        test = open_source(cfg.test, "data.test")
        test_indices = torch.arange(len(test))
        _align_test_classes(test, labeled_source)
    per_class = torch.bincount(labeled_source.labels[available], minlength=num_classes)
    empty = [labeled_source.class_names[c] for c in range(num_classes) if int(per_class[c]) == 0]
    if empty:
        raise ConfigError(f"data.train: class {empty[0]!r} has no labeled sample left for training; add samples or lower data.test_holdout")
    labeled_indices = torch.nonzero(available).flatten()
    labeled_indices, val_indices, val_note = hold_out_validation(labeled_source.labels, labeled_indices, num_classes, cfg.val_per_class, seed, cfg.val_scope)
    pool_indices = torch.arange(n, n + len(pool_source))
    notes = refuse_test_in_labeled(labeled_source, test) if test is not train else []
    notes.append(val_note)
    pool_indices, note = without_known_images(cfg, pool_source, labeled_source, None if test is train else test, pool_indices, n)
    notes += [note] if note else []
    if cfg.pool_limit is not None and pool_indices.numel() > cfg.pool_limit:
        keep = torch.randperm(pool_indices.numel(), generator=generator)[: cfg.pool_limit]
        pool_indices = torch.sort(pool_indices[keep]).values
    if cfg.audit is not None:
        train.labels[n:] = read_audit(cfg.audit, pool_source, labeled_source.class_names)
    if cfg.junk_share > 0:
        from plabel.data.junk import JunkedSource, junk_count

        count = junk_count(int(pool_indices.numel()), cfg.junk_share)
        base_size = len(train)
        junked = JunkedSource(train, count, cfg.junk_kinds, seed)
        pool_indices = torch.cat([pool_indices, torch.arange(base_size, base_size + count)])
        return Splits(junked, junked if test is train else test, labeled_indices, pool_indices, test_indices, num_classes, notes,
                      val_indices)
    return Splits(train, test, labeled_indices, pool_indices, test_indices, num_classes, notes, val_indices)


def _align_test_classes(test: ImageSource, train: ImageSource) -> None:
    """Give the test source the training source's class ids, always matched by name.

    String labels and folder names are numbered in sorted order, so the same class can carry
    another id on each side (a test set missing a class, words against digits); a name that is
    not among the training classes is an error naming both lists, never a positional mapping."""
    if test.class_names != train.class_names:
        ids = {name: i for i, name in enumerate(train.class_names)}
        unknown = [name for name in test.class_names if name not in ids]
        if unknown:
            raise ConfigError(
                f"data.test: class {unknown[0]!r} is not a training class; the test classes ({_names(test.class_names)}) must "
                f"be named as the training classes ({_names(train.class_names)})"
            )
        remap = torch.tensor([ids[name] for name in test.class_names])
        test.labels = remap[test.labels]
        test.class_names, test.num_classes = list(train.class_names), train.num_classes
    if test.labels.numel() and int(test.labels.max()) >= train.num_classes:
        raise ConfigError(
            f"data.test: test labels go up to {int(test.labels.max())} but the training data has {train.num_classes} classes"
        )


def _names(names: list[str]) -> str:
    return ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")


class IndexedImages(Dataset):
    """(image, label, position) triples over a subset of a source.

    ``position`` is the item's index in this dataset (for the pool: the pool index), carried
    through loaders so per-sample results land at the right place whatever the sharding. With
    ``skip_unreadable`` (the pool), an image that cannot be decoded comes back blank with label
    ``UNREADABLE`` instead of raising: one bad file must not end a long run.
    """

    def __init__(
        self,
        source: ImageSource,
        source_indices: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor],
        labels: torch.Tensor | None = None,
        skip_unreadable: bool = False,
    ) -> None:
        self.source = source
        self.source_indices = source_indices
        self.transform = transform
        self.labels = source.labels[source_indices] if labels is None else labels
        self.skip_unreadable = skip_unreadable
        assert self.labels.numel() == source_indices.numel()

    def __len__(self) -> int:
        return int(self.source_indices.numel())

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, int]:
        try:
            image = self.source.image(int(self.source_indices[position]))
        except UnreadableImage:
            if not self.skip_unreadable:
                raise
            # A black image keeps the batch's shape; the label marks it, and scoring never selects it.
            blank = torch.zeros((self.source.channels, *self.source.image_size), dtype=torch.uint8)
            return self.transform(blank), UNREADABLE, position
        return self.transform(image), int(self.labels[position]), position


class SoftTargets(Dataset):
    """``base``'s (image, label, position) with the label replaced by row ``position`` of
    ``targets`` (num_classes probabilities): soft pseudo-labels. The loaders collate them into a
    (batch, classes) float tensor, which is how the training step tells them from hard labels."""

    def __init__(self, base: Dataset, targets: torch.Tensor) -> None:
        assert targets.dim() == 2 and targets.shape[0] == len(base)  # type: ignore[arg-type]
        self.base = base
        self.targets = targets

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, _, at = self.base[position]
        return image, self.targets[at], at


class Repeated(Dataset):
    """``base`` drawn ``length`` times per epoch, so an epoch is a fixed number of steps whatever
    the size of the labeled or pseudo-labeled set.

    Draw i of an epoch reads ``base[order[i % len(base)]]``, with ``order`` a permutation of the
    base seeded by (seed, epoch): a base larger than ``length`` contributes a fresh random subset
    each epoch (never just its first ``length`` items, which for index-sorted data would be a few
    classes), and a smaller one is cycled evenly. Each draw's augmentation is seeded by
    (seed, epoch, draw index), not by the process's global RNG, so prefetching, workers and a
    mid-epoch restart cannot change what a step sees.
    """

    def __init__(self, base: Dataset, length: int, seed: int) -> None:
        self.base = base
        self.length = length
        self.base_len = len(base)  # type: ignore[arg-type]
        self.seed = seed
        # Shared memory, so DataLoader workers (persistent ones too) see set_epoch's value.
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()
        self._order_epoch = -1
        self._order = torch.empty(0, dtype=torch.long)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = epoch

    def __len__(self) -> int:
        return self.length

    def order(self) -> torch.Tensor:
        """This epoch's permutation of the base (computed once per epoch in each process)."""
        epoch = self.epoch
        if self._order_epoch != epoch:
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63 - 1))
            self._order = torch.randperm(self.base_len, generator=generator)
            self._order_epoch = epoch
        return self._order

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        key = ((self.seed * 1_000_003 + self.epoch) * 100_000_007 + i) % (2**63 - 1)
        base_index = int(self.order()[i % self.base_len])
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: torch.manual_seed would also queue a reseed of every CUDA
            # device, which costs ~300 us per sample in a loader (the augmentation runs on CPU).
            torch.default_generator.manual_seed(key)
            return self.base[base_index]
