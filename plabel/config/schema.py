"""The experiment configuration: typed dataclasses, one documented field each, and the range
checks that types cannot express (``validate``).

Types are checked by pydantic when a config is loaded (:mod:`plabel.config.load`); every
section forbids unknown keys. The process count never appears here: it belongs to ``launch/``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import ConfigDict

from plabel.config.errors import ConfigError
from plabel.config.model_names import check_model_name


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


def _sub(cls: Any, help: str) -> Any:
    return field(default_factory=cls, metadata={"help": help})


# Read by pydantic when it validates a loaded config: a key that is not a field is an error.
SECTION = ConfigDict(extra="forbid")


TORCHVISION_NAMES = ("mnist", "fashion_mnist", "kmnist", "cifar10", "cifar100", "svhn")
JUNK_KINDS = ("gaussian", "uniform", "blank", "saturated", "shuffled", "letters", "shapes", "fragments")  # plabel/data/junk.py


@dataclass
class SourceConfig:
    """Where images and labels come from."""

    __pydantic_config__ = SECTION

    source: Literal["embedded", "torchvision", "hf", "idx", "holdout", "folder", "list", "tar", "none"] = _f(
        "embedded",
        "embedded: 5,000 real MNIST digits shipped inside plabel (offline); torchvision: a "
        "torchvision dataset (name, root, download); hf: a Hugging Face hub name or local path "
        "(parquet file/folder, imagefolder, save_to_disk); idx: a folder of MNIST-format idx "
        "files; holdout (test only): a stratified hold-out of the training source. Unlabeled pools only "
        "(data.unlabeled): folder (images at any depth under root), list (a .txt/.csv of paths, root = the list "
        "file), tar (WebDataset-style shards: root = their folder or a pattern like /data/shards-{000..099}.tar); "
        "none: no separate pool (the benchmark mode, the pool is carved out of data.train)",
    )
    name: str = _f("mnist", "torchvision dataset name (%s) or hf hub name / local path" % ", ".join(TORCHVISION_NAMES))
    root: str = _f(
        "data",
        "torchvision: the download folder; idx: the folder of idx files; hf: the datasets cache (\"data\" = the "
        "Hugging Face default cache, never the dataset's own folder); folder/list/tar: the pool's folder, list file "
        "or shards",
    )
    download: bool = _f(False, "allow torchvision to download the dataset into root")
    split: str = _f("train", "split to read (torchvision: train/test; hf: split name)")
    image_column: str = _f("image", "hf: column holding the image")
    label_column: str = _f("label", "hf: column holding the integer class label")

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

    train: SourceConfig = _sub(SourceConfig, "source of the labeled set and the unlabeled pool")
    test: SourceConfig = _sub(
        lambda: SourceConfig(source="holdout", split="test"),  # type: ignore[arg-type]
        "source of the test set; source=holdout holds test_holdout samples out of train",
    )
    unlabeled: SourceConfig = _sub(
        lambda: SourceConfig(source="none", root=""),  # type: ignore[arg-type]
        "the unlabeled pool, a source of its own (source folder, list, tar, hf, or any labeled source whose labels are "
        "then ignored); with it, data.train (alias data.labeled) is the labeled set, all of it. source none: the "
        "benchmark mode, the pool is carved out of data.train",
    )
    audit: Optional[str] = _f(
        None,
        "with data.unlabeled: a CSV of hand-checked pool images (columns path, label; path as the pseudo-label CSVs "
        "name them, label a class name or id): pseudo-label precision is measured on them (unknown without it)",
    )
    pool_overlap: Literal["drop", "refuse"] = _f(
        "drop",
        "pool images that are also labeled or test images (the same file, or the same bytes): drop = leave them out "
        "of the pool, saying how many; refuse = stop before training. A test image that is also a labeled one is "
        "always refused",
    )
    test_holdout: int = _f(1000, "samples held out of the training source (stratified) when test.source=holdout")
    labeled_per_class: int = _f(
        10,
        "benchmark mode (no data.unlabeled): labeled samples drawn per class (seeded, stratified); the rest form the "
        "pool. Not used with data.unlabeled, where every sample of data.train is labeled",
    )
    val_per_class: Optional[int] = _f(
        None,
        "labeled images per class held out to choose round 0's augmentation and calibrate the pseudo-label precision "
        "estimate (and, with data.val_scope rounds, to validate every round); None = auto: a fifth of each class "
        "(rounded) when every class has at least 5, else none; 0 = none (train on every labeled image)",
    )
    val_scope: Literal["round0", "rounds"] = _f(
        "round0",
        "what the held-out validation images are for. round0 (since 0.3.2): round 0 is trained without them, they "
        "choose its augmentation (data.augment auto) and fit the temperature of the precision estimate, then round 0 "
        "is trained again from the same initial weights on every labeled image and no later round is validated "
        "(costs one more round 0; at 10 labels per class the final accuracy was 4-46 points higher, "
        "docs/results.md). rounds (0.3.1): they stay out of training for the whole run and validate every round "
        "(its accuracy, the best round's weights, a temperature fitted per round)",
    )
    pool_limit: Optional[int] = _f(None, "cap on the unlabeled pool size (None = all remaining samples)")
    image_size: Optional[Union[int, list[int]]] = _f(
        None,
        "size every image is resized to: N (square) or [H, W]; None = what the model wants (a pretrained model's "
        "input size; a fixed-size model's size), else the data's own size (its first image)",
    )
    junk_share: float = _f(
        0.0,
        "benchmark a dirty pool: add junk images (no class; a pseudo-label on one is always wrong) until they are "
        "this share of the pool (0.3 = 30%); never in the labeled or test set",
    )
    junk_kinds: list[str] = _f(
        ["gaussian", "uniform", "blank", "saturated", "shuffled", "letters", "shapes", "fragments"],
        "kinds of junk, in turn: gaussian/uniform noise, blank/saturated images, shuffled (a digit's pixels "
        "permuted), letters (another domain), shapes (geometric), fragments (a zoomed-in piece of a digit)",
    )
    augment: Literal["auto", "none", "light", "affine", "strong", "elastic", "randaugment", "trivialaugment"] = _f(
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
    augment_margin: float = _f(
        0.5,
        "data.augment auto: how much lower (nats of mean validation cross-entropy) another level's loss must be to "
        "replace light (crop + flip on colour, small affine moves on grey), the level that won where the levels are "
        "close (signs); 0 = the lowest loss (0.3.1-0.3.2). Since 0.3.3",
    )
    flip: Optional[bool] = _f(
        None,
        "horizontal flips in colour images' augmentation (every data.augment and pseudo.augment level but none); "
        "None = on (the CIFAR recipe); false for data whose mirror image is another class or none (text, digits, "
        "arrows). Grey images are never flipped",
    )
    max_image_pixels: Optional[int] = _f(
        None,
        "largest image (width x height) decoded; larger files are unreadable (a decompression bomb, or a huge scan). "
        "None = PIL's limit (about 89 million pixels; PIL refuses twice that). Raise it for legitimate large scans",
    )
    num_workers: Optional[int] = _f(
        None, "DataLoader workers per process (0 = load in the training process); None = auto: on a GPU, "
        "min(8, this node's CPUs per process - 1), on the CPU 0 (workers would take the cores the model computes on)")
    persistent_workers: Optional[bool] = _f(
        None, "keep DataLoader workers alive between epochs (needs num_workers > 0); None = on when there are workers")
    pin_memory: Optional[bool] = _f(None, "pin host memory for faster copies to the GPU; None = on when CUDA is used")

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
        _positive("data.labeled_per_class", self.labeled_per_class)
        _non_negative("data.test_holdout", self.test_holdout)
        if self.test.source == "holdout" and self.test_holdout < 1:
            raise ConfigError("data.test_holdout: must be >= 1 when data.test.source is holdout")
        if self.pool_limit is not None:
            _positive("data.pool_limit", self.pool_limit)
        if self.num_workers is not None:
            _non_negative("data.num_workers", self.num_workers)
        if self.val_per_class is not None:
            _non_negative("data.val_per_class", self.val_per_class)
        _non_negative("data.augment_margin", self.augment_margin)
        if self.max_image_pixels is not None:
            _positive("data.max_image_pixels", self.max_image_pixels)
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


@dataclass
class ModelConfig:
    __pydantic_config__ = SECTION

    name: str = _f(
        "small_cnn",
        "built-in: small_cnn (small grey images such as 28x28 digits), small_cnn_nobn (the same without BatchNorm), "
        "resnet18 (CIFAR stem, 32x32 colour); any timm model as timm/<name> (timm/resnet50, "
        "timm/convnext_tiny.fb_in22k); any torchvision classification builder as torchvision/<name> "
        "(torchvision/efficientnet_b0)",
    )
    pretrained: bool = _f(
        False,
        "start from the library's pretrained weights (timm: the Hugging Face cache under HF_HOME; torchvision: "
        "TORCH_HOME), downloading them only when they are not cached; the classifier head is re-initialised for the "
        "data's classes. Grey images are repeated to 3 channels for these RGB weights",
    )
    weights: Optional[str] = _f(
        None,
        "start from these weights instead: a .safetensors or .pth file, or a plabel run folder (its "
        "model.safetensors); tensors whose shape does not fit the classifier head are re-initialised",
    )
    num_classes: Optional[int] = _f(None, "output classes; None = from the data (labels must lie in 0..num_classes-1)")
    dropout: Optional[float] = _f(
        None,
        "dropout before the classifier (built-ins: small_cnn's two head dropouts, resnet18 before its fc; timm: "
        "drop_rate; torchvision: the builder's dropout, where it has one); None = the network's own (small_cnn 0.3)",
    )

    def validate(self) -> None:
        check_model_name(self.name)  # the form only: no library is imported
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {self.dropout}")
        if self.num_classes is not None and self.num_classes < 2:
            raise ConfigError(f"model.num_classes: must be >= 2, got {self.num_classes}")
        if self.pretrained and self.weights:
            raise ConfigError("model.pretrained: give model.pretrained or model.weights, not both")
        if self.pretrained and "/" not in self.name:
            raise ConfigError(
                f"model.pretrained: the built-in {self.name} has no library weights; use model.weights, or a timm/ or "
                "torchvision/ model"
            )
        if self.weights is not None and not Path(self.weights).exists():
            raise ConfigError(
                f"model.weights: {self.weights!r} does not exist; give a .safetensors/.pth file or a plabel run folder"
            )


# Round 0 trains three rounds' worth by default (0.3.1): on the field set a round 0 of 24 epochs
# beat one of 8 by 1 point on MNIST and 11 on the letters (docs/results.md#data-nobody-tuned-for).
ROUND0_EPOCHS_FACTOR = 3


@dataclass
class TrainConfig:
    __pydantic_config__ = SECTION

    epochs: int = _f(8, "epochs per round (round 0 included, unless train.round0_epochs sets its own)")
    round0_epochs: Optional[int] = _f(
        None, "epochs of round 0, the supervised baseline; None = 3 x train.epochs (since 0.3.1: the teacher's accuracy "
        "decides what every later round can select; 0.3.0 trained round 0 for train.epochs)")
    steps_per_epoch: int = _f(30, "optimizer steps per epoch; one step trains the whole job on one labeled and one pseudo batch")
    batch_size: int = _f(
        64,
        "labeled samples per step for the whole job (GLOBAL, since plabel 0.2: split across processes, so "
        "the result does not depend on their number)",
    )
    pseudo_batch_size: int = _f(64, "pseudo-labeled samples per step for the whole job (GLOBAL, split across processes)")
    eval_batch_size: int = _f(
        512,
        "scoring batch: the pool and test set are cut into batches of this many consecutive samples, and "
        "each process scores whole batches (so a sample's scores do not depend on the process count)",
    )
    compile: bool = _f(
        False,
        "torch.compile the model for training and scoring: the first step (and the first scoring batch) compile, "
        "which the run reports; worth it for long runs on GPUs",
    )
    compile_backend: str = _f(
        "inductor",
        "torch.compile's backend with train.compile: inductor (generates kernels; on CPU it needs a C compiler), "
        "aot_eager (traces without generating code: a check that the model compiles), or any torch._dynamo backend",
    )
    sync_batchnorm: bool = _f(
        True,
        "with several processes, BatchNorm normalises with the global batch's statistics (one all-reduce per "
        "BatchNorm layer and step), as one process would; false: each process's own batch (classic DDP)",
    )
    budget: Literal["steps", "data"] = _f(
        "steps",
        "steps: every epoch is train.steps_per_epoch steps; data: an epoch of a round with pseudo-labels also passes "
        "once over them (max(steps_per_epoch, ceil(pseudo-labeled / pseudo_batch_size)) steps), so a round's budget "
        "grows with its selection (rounds that converge)",
    )
    label_smoothing: float = _f(0.0, "label smoothing of both cross-entropies (0 = none; 0.1 is usual)")
    mixup_alpha: float = _f(
        0.0,
        "mixup over the step's whole batch (labeled and pseudo-labeled together, Arazo et al. 2020): inputs and "
        "targets mixed with a partner with weight lambda ~ Beta(a, a); 0 = off, 1 = the usual",
    )
    optimizer: Literal["adam", "sgd"] = _f("adam", "adam or sgd (momentum 0.9, nesterov)")
    lr: float = _f(1e-3, "peak learning rate")
    weight_decay: float = _f(5e-4, "weight decay")
    lr_schedule: Literal["cosine", "constant"] = _f("cosine", "per-round learning-rate schedule over the round's steps")
    cpu_threads: Optional[int] = _f(
        None,
        "torch threads per process when running on CPU; None = the cores this process may use divided by the "
        "processes on this machine (accelerate launch alone would leave 1)",
    )
    channels_last: bool = _f(False, "channels_last memory format for the model and its inputs (training and scoring)")
    mixed_precision: Optional[Literal["no", "bf16", "fp16"]] = _f(
        None, "autocast precision for training and scoring; None = what the launcher says (launch/*.yaml)"
    )

    def epochs_of_round0(self) -> int:
        """Round 0's epochs: its own setting, else ROUND0_EPOCHS_FACTOR x train.epochs."""
        return self.round0_epochs if self.round0_epochs is not None else ROUND0_EPOCHS_FACTOR * self.epochs

    def validate(self) -> None:
        _positive("train.epochs", self.epochs)
        if self.round0_epochs is not None:
            _positive("train.round0_epochs", self.round0_epochs)
        _positive("train.steps_per_epoch", self.steps_per_epoch)
        _positive("train.batch_size", self.batch_size)
        _positive("train.pseudo_batch_size", self.pseudo_batch_size)
        _positive("train.eval_batch_size", self.eval_batch_size)
        if self.cpu_threads is not None:
            _positive("train.cpu_threads", self.cpu_threads)
        if not self.lr > 0:
            raise ConfigError(f"train.lr: must be > 0, got {self.lr}")
        _non_negative("train.weight_decay", self.weight_decay)
        _non_negative("train.mixup_alpha", self.mixup_alpha)
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"train.label_smoothing: must be in [0, 1), got {self.label_smoothing}")


@dataclass
class PseudoConfig:
    __pydantic_config__ = SECTION

    rounds: int = _f(4, "pseudo-labeling rounds after round 0 (the supervised baseline)")
    top_k_percent: Union[float, list[float]] = _f(
        [60.0, 80.0, 90.0, 95.0],
        "percent of the whole pool selected per round (lowest entropy): one number, or one per round "
        "(since plabel 0.3: 60/80/90/95, all but the least certain; 0.2: 20/40/60/80)",
    )
    score: Literal["entropy", "max_probability", "margin", "energy", "disagreement", "random"] = _f(
        "entropy",
        "what ranks the pool: entropy (lowest first), max_probability or margin (highest first), energy "
        "(-logsumexp of the logits, lowest first), disagreement (with score_views > 1: the number of views whose "
        "argmax differs from the averaged prediction, lowest first, ties by entropy; UPS-like), or random (the "
        "baseline: same counts, random samples). Entropy beat random picks only on weak teachers (MNIST at 1 and 2 "
        "labels a class, 26-class letters at 10) and was level elsewhere: docs/results.md, 'When the selection pays'",
    )
    score_views: int = _f(
        1,
        "views of each pool image the teacher averages (softmax probabilities) before scoring and labelling: 1 = "
        "the clean image; K > 1 = K passes (K times the scoring cost, which the run prints)",
    )
    score_noise: Literal["shift", "dropout"] = _f(
        "shift",
        "what differs between the views: shift = the clean image and fixed one-pixel shifts (test-time "
        "augmentation, no randomness); dropout = MC dropout, K passes with dropout on, seeded by the pool position "
        "(so the same on any number of processes)",
    )
    calibrate: bool = _f(
        False,
        "before ranking, fit a temperature on the labeled set (its augmented views: the model has memorised the "
        "clean ones) and score softmax(logits / T); it changes entropy's order, not max_probability's",
    )
    teacher: Literal["model", "ema"] = _f(
        "model", "what scores the pool: the model, or an exponential moving average of its weights (Mean Teacher)"
    )
    ema_decay: float = _f(0.99, "teacher ema: weight of the average at each optimizer step (0.99: about the last 100 steps)")
    guard: Literal["none", "knn"] = _f(
        "none",
        "a junk guard that does not trust the softmax: knn = a pool sample is never selected when its features "
        "(the classifier's input) are less similar in direction (cosine), or farther (Euclidean), from the nearest "
        "labeled sample than all but guard_quantile of the labeled samples are from their own nearest one "
        "(KNN out-of-distribution score); k% is then taken of what it lets through",
    )
    guard_quantile: float = _f(0.05, "knn guard: the share of the labeled samples' own nearest-neighbour similarities and distances beyond the thresholds")
    augment: Literal["same", "light", "affine", "strong", "elastic", "randaugment", "trivialaugment"] = _f(
        "strong",
        "augmentation of the pseudo-labeled batch: same as the labeled batch, or a data.augment level (FixMatch / "
        "Noisy Student: the pseudo-label comes from the clean view, the loss from a strongly augmented one; "
        "since plabel 0.3 strong, 0.2: same)",
    )
    accumulate: bool = _f(
        False,
        "keep earlier selections (with their first pseudo-labels) and fill up to k% from the rest; "
        "false re-selects from the whole pool each round",
    )
    reinit_model: bool = _f(False, "re-initialise the model at the start of each round instead of continuing")
    soft_labels: bool = _f(
        False,
        "train the pseudo term on the teacher's probabilities (its averaged views, sharpened by soft_temperature) "
        "instead of their argmax; the selection and the written pseudo-labels stay the argmax",
    )
    soft_temperature: float = _f(
        1.0, "soft_labels: targets p^(1/T), renormalised; T < 1 sharpens (T -> 0 is the argmax), 1 keeps the teacher's"
    )
    class_balanced: bool = _f(True, "select the same fraction of each predicted class instead of one global k%")
    min_precision: Optional[float] = _f(
        None,
        "adaptive k: take fewer than the round's k% when the selection's estimated precision (calibrated on the "
        "validation images) would fall below this, down to the largest k whose estimate reaches it; None = always "
        "the round's k%. Needs validation images (data.val_per_class)",
    )
    eps: float = _f(1e-10, "added inside log2 so a zero probability gives a finite entropy")
    alpha_schedule: Literal["linear", "lee", "constant"] = _f(
        "constant",
        "weight of the pseudo-label loss over a round's epochs: constant = alpha_max from the first step (since plabel "
        "0.3: a round starts from a trained model); linear (0.2's default) = 0 in the first epoch up to alpha_max by "
        "alpha_ramp_epochs; lee = Lee (2013) T1/T2/alpha_f",
    )
    alpha_max: float = _f(1.0, "final weight of the pseudo-label loss (alpha_f in Lee 2013)")
    alpha_ramp_epochs: int = _f(5, "linear: epoch at which alpha reaches alpha_max")
    lee_t1: int = _f(1, "lee: alpha is 0 before this epoch")
    lee_t2: int = _f(6, "lee: alpha reaches alpha_max at this epoch")

    def percent_for_round(self, round_index: int) -> float:
        """k for pseudo-label round ``round_index`` (1-based)."""
        if isinstance(self.top_k_percent, list):
            return float(self.top_k_percent[round_index - 1])
        return float(self.top_k_percent)

    def validate(self) -> None:
        _non_negative("pseudo.rounds", self.rounds)
        _positive("pseudo.score_views", self.score_views)
        if not self.soft_temperature > 0:
            raise ConfigError(f"pseudo.soft_temperature: must be > 0, got {self.soft_temperature}")
        if self.soft_labels and self.accumulate:
            raise ConfigError(
                "pseudo.soft_labels: not with pseudo.accumulate (earlier picks keep their first hard labels); turn one off"
            )
        if self.score_noise == "shift" and self.score_views > 13:
            raise ConfigError(f"pseudo.score_views: shift has 13 views (the clean image and 12 shifts), got {self.score_views}")
        if self.score == "disagreement" and self.score_views < 2:
            raise ConfigError("pseudo.score: disagreement needs pseudo.score_views >= 2 (views to disagree)")
        ks = self.top_k_percent if isinstance(self.top_k_percent, list) else [self.top_k_percent]
        # rounds 0 is the supervised baseline alone: no k is used, so the default list is no error.
        if isinstance(self.top_k_percent, list) and len(ks) != self.rounds and self.rounds > 0:
            raise ConfigError(
                f"pseudo.top_k_percent: has {len(ks)} values but pseudo.rounds is {self.rounds}; give one per round or a single number"
            )
        if self.min_precision is not None and not 0 < self.min_precision < 1:
            raise ConfigError(f"pseudo.min_precision: must be in (0, 1), got {self.min_precision}")
        for k in ks:
            if not 0 < float(k) <= 100:
                raise ConfigError(f"pseudo.top_k_percent: {k} is outside (0, 100]")
        if not 0 < self.eps < 1e-3:
            raise ConfigError(f"pseudo.eps: must be in (0, 1e-3), got {self.eps}")
        _non_negative("pseudo.alpha_max", self.alpha_max)
        if not 0 < self.ema_decay < 1:
            raise ConfigError(f"pseudo.ema_decay: must be in (0, 1), got {self.ema_decay}")
        if not 0 <= self.guard_quantile < 1:
            raise ConfigError(f"pseudo.guard_quantile: must be in [0, 1), got {self.guard_quantile}")
        _non_negative("pseudo.alpha_ramp_epochs", self.alpha_ramp_epochs)
        _non_negative("pseudo.lee_t1", self.lee_t1)
        if self.alpha_schedule == "lee" and self.lee_t2 <= self.lee_t1:
            raise ConfigError(f"pseudo.lee_t2: must be greater than pseudo.lee_t1 ({self.lee_t1}), got {self.lee_t2}")


@dataclass
class TrackingConfig:
    __pydantic_config__ = SECTION

    mode: Literal["auto", "online", "offline", "disabled"] = _f(
        "auto", "W&B mode; auto = online when W&B credentials exist, else offline (sync later)"
    )
    project: str = _f("plabel", "W&B project")
    entity: Optional[str] = _f(None, "W&B entity (team or user); None = your default")
    group: Optional[str] = _f(None, "W&B group (plabel sweep: the sweep's name)")
    job_type: Optional[str] = _f(None, "W&B job type (plabel sweep: the row's name), so W&B groups a sweep's runs by row")
    run_name: Optional[str] = _f(None, "W&B run name (default: the output folder's name)")
    tags: list[str] = _f([], "W&B tags")
    notes: Optional[str] = _f(None, "W&B notes")
    wandb_dir: Optional[str] = _f(None, "folder for W&B files (default: the run's output folder)")
    log_every: int = _f(10, "log step metrics every this many steps")
    table_rows: int = _f(
        200_000, "rows of each round's pseudo-label CSV sent to W&B as a table (0: none; the CSV itself is always written)"
    )
    log_model: bool = _f(True, "send the final weights (with config.yaml and run_info.json) to W&B as a model artifact")
    log_checkpoint: bool = _f(False, "also send the last checkpoint to W&B in that artifact")

    def validate(self) -> None:
        _positive("tracking.log_every", self.log_every)
        _non_negative("tracking.table_rows", self.table_rows)


@dataclass
class CheckpointConfig:
    __pydantic_config__ = SECTION

    every_steps: int = _f(0, "also checkpoint every this many optimizer steps (0 = only at epoch and round ends)")
    keep: int = _f(2, "newest checkpoints kept; older ones are deleted once a newer one is complete")
    stop_check_every: int = _f(
        10,
        "with several processes, look for a preemption signal every this many steps and at every epoch end (each look "
        "is an all-reduce the host waits for); one process looks at every step, for free",
    )

    score_flush_batches: int = _f(
        32,
        "the pool's scoring pass copies results to the host and to the run folder every this many eval batches, and "
        "looks for a preemption signal then: a job stopped mid-pass stops within one flush, and its resumption scores "
        "only the rest",
    )

    def validate(self) -> None:
        _positive("checkpoint.score_flush_batches", self.score_flush_batches)
        _non_negative("checkpoint.every_steps", self.every_steps)
        _positive("checkpoint.keep", self.keep)
        _positive("checkpoint.stop_check_every", self.stop_check_every)


@dataclass
class RunConfig:
    __pydantic_config__ = SECTION

    seed: int = _f(0, "seed for the split, model init, sampling and augmentation")
    output_dir: Optional[str] = _f(
        None, "run folder; default runs/<config name>-seed<seed>. Rerunning the same command resumes there"
    )
    resume: str = _f(
        "auto",
        "auto: continue the run in output_dir from its newest complete checkpoint; never: refuse an existing "
        "output_dir; or a checkpoint folder to start from",
    )
    data: DataConfig = _sub(DataConfig, "data")
    model: ModelConfig = _sub(ModelConfig, "model")
    train: TrainConfig = _sub(TrainConfig, "training")
    pseudo: PseudoConfig = _sub(PseudoConfig, "pseudo-labeling")
    tracking: TrackingConfig = _sub(TrackingConfig, "tracking")
    checkpoint: CheckpointConfig = _sub(CheckpointConfig, "checkpointing")
    collective_timeout_s: int = _f(600, "seconds a process waits in a collective before the job fails (InitProcessGroupKwargs)")
    verbose: bool = _f(False, "print the whole resolved config at the start (config.yaml in the run folder always has it) and a line for every checkpoint, not only each round's and a preemption's")
    # The dotted names the config file and the command line set (load_config fills it); not a
    # field, so never saved or compared: it only tells notes which values the user chose.
    given: ClassVar[frozenset[str]] = frozenset()

    def validate(self) -> None:
        self.data.validate()
        self.model.validate()
        self.train.validate()
        self.pseudo.validate()
        self.tracking.validate()
        self.checkpoint.validate()
        if self.resume not in ("auto", "never") and not Path(self.resume).is_dir():
            raise ConfigError(f"resume: checkpoint folder {self.resume!r} does not exist; use auto, never, or a <run>/checkpoints/ckpt-NNNNNN folder")
        _positive("collective_timeout_s", self.collective_timeout_s)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name}: must be >= 1, got {value}")


def _non_negative(name: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"{name}: must be >= 0, got {value}")
