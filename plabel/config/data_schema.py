"""The ``data`` section: where the labeled set, the pool and the test set come from, and how they are read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union

from plabel.config.errors import ConfigError
from plabel.config.fields import SECTION, option, require_non_negative, require_positive, section

TORCHVISION_NAMES = ("mnist", "fashion_mnist", "kmnist", "cifar10", "cifar100", "svhn")
JUNK_KINDS = ("gaussian", "uniform", "blank", "saturated", "shuffled", "letters", "shapes", "fragments")  # plabel/data/junk.py


@dataclass
class SourceConfig:
    """Where images and labels come from."""

    __pydantic_config__ = SECTION

    source: Literal["embedded", "torchvision", "hf", "idx", "holdout", "folder", "list", "tar", "none"] = option(
        "embedded",
        "embedded: 5,000 real MNIST digits shipped inside plabel (offline); torchvision: a "
        "torchvision dataset (name, root, download); hf: a Hugging Face hub name or local path "
        "(parquet file/folder, imagefolder, save_to_disk); idx: a folder of MNIST-format idx "
        "files; holdout (test only): a stratified hold-out of the training source. Unlabeled pools only "
        "(data.unlabeled): folder (images at any depth under root), list (a .txt/.csv of paths, root = the list "
        "file), tar (WebDataset-style shards: root = their folder or a pattern like /data/shards-{000..099}.tar); "
        "none: no separate pool (the benchmark mode, the pool is carved out of data.train)",
    )
    name: str = option("mnist", "torchvision dataset name (%s) or hf hub name / local path" % ", ".join(TORCHVISION_NAMES))
    root: str = option(
        "data",
        "torchvision: the download folder; idx: the folder of idx files; hf: the datasets cache (\"data\" = the "
        "Hugging Face default cache, never the dataset's own folder); folder/list/tar: the pool's folder, list file "
        "or shards",
    )
    download: bool = option(False, "allow torchvision to download the dataset into root")
    split: str = option("train", "split to read (torchvision: train/test; hf: split name)")
    image_column: str = option("image", "hf: column holding the image")
    label_column: str = option("label", "hf: column holding the integer class label")

    def validate(self, prefix: str) -> None:
        if self.source in ("folder", "list", "tar") and prefix in ("data.train", "data.test"):
            raise ConfigError(
                f"{prefix}.source: {self.source!r} holds images without labels, so it can only be data.unlabeled; a labeled "
                "folder of class subfolders is source hf with name = the folder"
            )
        if self.source == "none" and prefix != "data.unlabeled":
            raise ConfigError(f"{prefix}.source: 'none' is only valid for data.unlabeled")
        if self.source in ("folder", "list", "tar") and not self.root:
            raise ConfigError(f"{prefix}.root: give the {self.source} (a path) for source {self.source}")
        if self.source == "torchvision" and self.name not in TORCHVISION_NAMES:
            raise ConfigError(
                f"{prefix}.name: unknown torchvision dataset {self.name!r}; choose one of {', '.join(TORCHVISION_NAMES)}"
            )
        if self.source == "hf" and not self.name:
            raise ConfigError(f"{prefix}.name: give a hub dataset name or a local path for source hf")


@dataclass
class DataConfig:
    __pydantic_config__ = SECTION

    train: SourceConfig = section(SourceConfig, "source of the labeled set and the unlabeled pool")
    test: SourceConfig = section(
        lambda: SourceConfig(source="holdout", split="test"),  # type: ignore[arg-type]
        "source of the test set; source=holdout holds test_holdout samples out of train",
    )
    unlabeled: SourceConfig = section(
        lambda: SourceConfig(source="none", root=""),  # type: ignore[arg-type]
        "the unlabeled pool, a source of its own (source folder, list, tar, hf, or any labeled source whose labels are "
        "then ignored); with it, data.train (alias data.labeled) is the labeled set, all of it. source none: the "
        "benchmark mode, the pool is carved out of data.train",
    )
    audit: Optional[str] = option(
        None,
        "with data.unlabeled: a CSV of hand-checked pool images (columns path, label; path as the pseudo-label CSVs "
        "name them, label a class name or id): pseudo-label precision is measured on them (unknown without it)",
    )
    pool_overlap: Literal["drop", "refuse"] = option(
        "drop",
        "pool images that are also labeled or test images (the same file, or the same bytes): drop = leave them out "
        "of the pool, saying how many; refuse = stop before training. A test image that is also a labeled one is "
        "always refused",
    )
    test_holdout: int = option(1000, "samples held out of the training source (stratified) when test.source=holdout")
    labeled_per_class: int = option(
        10,
        "benchmark mode (no data.unlabeled): labeled samples drawn per class (seeded, stratified); the rest form the "
        "pool. Not used with data.unlabeled, where every sample of data.train is labeled",
    )
    val_per_class: Optional[int] = option(
        None,
        "labeled images per class held out to choose round 0's augmentation and calibrate the pseudo-label precision "
        "estimate (and, with data.val_scope rounds, to validate every round); None = auto: a fifth of each class "
        "(rounded) when every class has at least 5, else none; 0 = none (train on every labeled image)",
    )
    val_scope: Literal["round0", "rounds"] = option(
        "round0",
        "what the held-out validation images are for. round0 (since 0.3.2): round 0 is trained without them, they "
        "choose its augmentation (data.augment auto) and fit the temperature of the precision estimate, then round 0 "
        "is trained again from the same initial weights on every labeled image and no later round is validated "
        "(costs one more round 0; at 10 labels per class the final accuracy was 4-46 points higher, "
        "docs/results.md). rounds (0.3.1): they stay out of training for the whole run and validate every round "
        "(its accuracy, the best round's weights, a temperature fitted per round)",
    )
    pool_limit: Optional[int] = option(None, "cap on the unlabeled pool size (None = all remaining samples)")
    image_size: Optional[Union[int, list[int]]] = option(
        None,
        "size every image is resized to: N (square) or [H, W]; None = what the model wants (a pretrained model's "
        "input size; a fixed-size model's size), else the data's own size (its first image)",
    )
    junk_share: float = option(
        0.0,
        "benchmark a dirty pool: add junk images (no class; a pseudo-label on one is always wrong) until they are "
        "this share of the pool (0.3 = 30%); never in the labeled or test set",
    )
    junk_kinds: list[str] = option(
        ["gaussian", "uniform", "blank", "saturated", "shuffled", "letters", "shapes", "fragments"],
        "kinds of junk, in turn: gaussian/uniform noise, blank/saturated images, shuffled (a digit's pixels "
        "permuted), letters (another domain), shapes (geometric), fragments (a zoomed-in piece of a digit)",
    )
    augment: Literal["auto", "none", "light", "affine", "strong", "elastic", "randaugment", "trivialaugment"] = option(
        "auto",
        "training augmentation: auto (the default since 0.3.1; 0.3.0: light) = round 0 trained once per candidate, "
        "light and none (grey), none, light and affine (colour), light kept unless another level's validation loss is "
        "lower by data.augment_margin (without validation images: light on grey, none on colour; costs one or two more "
        "rounds 0); none; "
        "light = small affine (grey images, e.g. digits) / crop + flip (colour: padded "
        "random crop up to 64 px, random-resized crop above); affine = light's small affine moves for colour images "
        "too (shifts and turns, no crop); strong: larger moves (colour jitter) and cutout; "
        "elastic: strong + an elastic distortion (digits; about 3x strong's CPU time per image); randaugment / "
        "trivialaugment: light's moves + torchvision's policy + cutout",
    )
    augment_margin: float = option(
        0.5,
        "data.augment auto: how much lower (nats of mean validation cross-entropy) another level's loss must be to "
        "replace light (crop + flip on colour, small affine moves on grey), the level that won where the levels are "
        "close (signs); 0 = the lowest loss (0.3.1-0.3.2). Since 0.3.3",
    )
    flip: Optional[bool] = option(
        None,
        "horizontal flips in colour images' augmentation (every data.augment and pseudo.augment level but none); "
        "None = on (the CIFAR recipe); false for data whose mirror image is another class or none (text, digits, "
        "arrows). Grey images are never flipped",
    )
    max_image_pixels: Optional[int] = option(
        None,
        "largest image (width x height) decoded; larger files are unreadable (a decompression bomb, or a huge scan). "
        "None = PIL's limit (about 89 million pixels; PIL refuses twice that). Raise it for legitimate large scans",
    )
    num_workers: Optional[int] = option(
        None, "DataLoader workers per process (0 = load in the training process); None = auto: on a GPU, "
        "min(8, this node's CPUs per process - 1), on the CPU 0 (workers would take the cores the model computes on)")
    persistent_workers: Optional[bool] = option(
        None, "keep DataLoader workers alive between epochs (needs num_workers > 0); None = on when there are workers")
    pin_memory: Optional[bool] = option(None, "pin host memory for faster copies to the GPU; None = on when CUDA is used")

    def validate(self) -> None:
        self.train.validate("data.train")
        if self.train.source == "holdout":
            raise ConfigError("data.train.source: 'holdout' is only valid for data.test")
        if self.test.source != "holdout":
            self.test.validate("data.test")
        if self.unlabeled.source != "none":
            self.unlabeled.validate("data.unlabeled")
        elif self.audit is not None:
            raise ConfigError("data.audit: needs data.unlabeled (in the benchmark mode every pool label is known)")
        require_positive("data.labeled_per_class", self.labeled_per_class)
        require_non_negative("data.test_holdout", self.test_holdout)
        if self.test.source == "holdout" and self.test_holdout < 1:
            raise ConfigError("data.test_holdout: must be >= 1 when data.test.source is holdout")
        if self.pool_limit is not None:
            require_positive("data.pool_limit", self.pool_limit)
        if self.num_workers is not None:
            require_non_negative("data.num_workers", self.num_workers)
        if self.val_per_class is not None:
            require_non_negative("data.val_per_class", self.val_per_class)
        require_non_negative("data.augment_margin", self.augment_margin)
        if self.max_image_pixels is not None:
            require_positive("data.max_image_pixels", self.max_image_pixels)
        if self.persistent_workers and self.num_workers == 0:
            raise ConfigError("data.persistent_workers: needs data.num_workers > 0")
        if not 0 <= self.junk_share < 1:
            raise ConfigError(f"data.junk_share: must be in [0, 1), got {self.junk_share}")
        unknown = [k for k in self.junk_kinds if k not in JUNK_KINDS]
        if unknown or not self.junk_kinds:
            raise ConfigError(f"data.junk_kinds: unknown {unknown or 'empty list'}; choose from {', '.join(JUNK_KINDS)}")
        if self.image_size is not None:
            sizes = self.image_size if isinstance(self.image_size, list) else [self.image_size]
            if len(sizes) not in (1, 2) or min(sizes) < 1:
                raise ConfigError(f"data.image_size: give one positive size or [height, width], got {self.image_size}")

    def image_hw(self) -> Optional[tuple[int, int]]:
        """``image_size`` as (height, width), or None."""
        if self.image_size is None:
            return None
        sizes = self.image_size if isinstance(self.image_size, list) else [self.image_size]
        return (sizes[0], sizes[-1])
