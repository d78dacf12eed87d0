"""The ``model`` and ``train`` sections: the network, and how each round trains it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from plabel.config.errors import ConfigError
from plabel.config.fields import SECTION, option, require_non_negative, require_positive
from plabel.config.model_names import check_model_name


@dataclass
class ModelConfig:
    __pydantic_config__ = SECTION

    name: str = option(
        "small_cnn",
        "built-in: small_cnn (small grey images such as 28x28 digits), small_cnn_nobn (the same without BatchNorm), "
        "resnet18 (CIFAR stem, 32x32 colour); any timm model as timm/<name> (timm/resnet50, "
        "timm/convnext_tiny.fb_in22k); any torchvision classification builder as torchvision/<name> "
        "(torchvision/efficientnet_b0)",
    )
    pretrained: bool = option(
        False,
        "start from the library's pretrained weights (timm: the Hugging Face cache under HF_HOME; torchvision: "
        "TORCH_HOME), downloading them only when they are not cached; the classifier head is re-initialised for the "
        "data's classes. Grey images are repeated to 3 channels for these RGB weights",
    )
    weights: Optional[str] = option(
        None,
        "start from these weights instead: a .safetensors or .pth file, or a plabel run folder (its "
        "model.safetensors); tensors whose shape does not fit the classifier head are re-initialised",
    )
    num_classes: Optional[int] = option(None, "output classes; None = from the data (labels must lie in 0..num_classes-1)")
    dropout: Optional[float] = option(
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

    epochs: int = option(8, "epochs per round (round 0 included, unless train.round0_epochs sets its own)")
    round0_epochs: Optional[int] = option(
        None, "epochs of round 0, the supervised baseline; None = 3 x train.epochs (since 0.3.1: the teacher's accuracy "
        "decides what every later round can select; 0.3.0 trained round 0 for train.epochs)")
    steps_per_epoch: int = option(30, "optimizer steps per epoch; one step trains the whole job on one labeled and one pseudo batch")
    batch_size: int = option(
        64,
        "labeled samples per step for the whole job (GLOBAL, since plabel 0.2: split across processes, so "
        "the result does not depend on their number)",
    )
    pseudo_batch_size: int = option(64, "pseudo-labeled samples per step for the whole job (GLOBAL, split across processes)")
    eval_batch_size: int = option(
        512,
        "scoring batch: the pool and test set are cut into batches of this many consecutive samples, and "
        "each process scores whole batches (so a sample's scores do not depend on the process count)",
    )
    compile: bool = option(
        False,
        "torch.compile the model for training and scoring: the first step (and the first scoring batch) compile, "
        "which the run reports; worth it for long runs on GPUs",
    )
    compile_backend: str = option(
        "inductor",
        "torch.compile's backend with train.compile: inductor (generates kernels; on CPU it needs a C compiler), "
        "aot_eager (traces without generating code: a check that the model compiles), or any torch._dynamo backend",
    )
    sync_batchnorm: bool = option(
        True,
        "with several processes, BatchNorm normalises with the global batch's statistics (one all-reduce per "
        "BatchNorm layer and step), as one process would; false: each process's own batch (classic DDP)",
    )
    budget: Literal["steps", "data"] = option(
        "steps",
        "steps: every epoch is train.steps_per_epoch steps; data: an epoch of a round with pseudo-labels also passes "
        "once over them (max(steps_per_epoch, ceil(pseudo-labeled / pseudo_batch_size)) steps), so a round's budget "
        "grows with its selection (rounds that converge)",
    )
    label_smoothing: float = option(0.0, "label smoothing of both cross-entropies (0 = none; 0.1 is usual)")
    mixup_alpha: float = option(
        0.0,
        "mixup over the step's whole batch (labeled and pseudo-labeled together, Arazo et al. 2020): inputs and "
        "targets mixed with a partner with weight lambda ~ Beta(a, a); 0 = off, 1 = the usual",
    )
    optimizer: Literal["adam", "sgd"] = option("adam", "adam or sgd (momentum 0.9, nesterov)")
    lr: float = option(1e-3, "peak learning rate")
    weight_decay: float = option(5e-4, "weight decay")
    lr_schedule: Literal["cosine", "constant"] = option("cosine", "per-round learning-rate schedule over the round's steps")
    cpu_threads: Optional[int] = option(
        None,
        "torch threads per process when running on CPU; None = the cores this process may use divided by the "
        "processes on this machine (accelerate launch alone would leave 1)",
    )
    channels_last: bool = option(False, "channels_last memory format for the model and its inputs (training and scoring)")
    mixed_precision: Optional[Literal["no", "bf16", "fp16"]] = option(
        None, "autocast precision for training and scoring; None = what the launcher says (launch/*.yaml)"
    )

    def epochs_of_round0(self) -> int:
        """Round 0's epochs: its own setting, else ROUND0_EPOCHS_FACTOR x train.epochs."""
        return self.round0_epochs if self.round0_epochs is not None else ROUND0_EPOCHS_FACTOR * self.epochs

    def validate(self) -> None:
        require_positive("train.epochs", self.epochs)
        if self.round0_epochs is not None:
            require_positive("train.round0_epochs", self.round0_epochs)
        require_positive("train.steps_per_epoch", self.steps_per_epoch)
        require_positive("train.batch_size", self.batch_size)
        require_positive("train.pseudo_batch_size", self.pseudo_batch_size)
        require_positive("train.eval_batch_size", self.eval_batch_size)
        if self.cpu_threads is not None:
            require_positive("train.cpu_threads", self.cpu_threads)
        if not self.lr > 0:
            raise ConfigError(f"train.lr: must be > 0, got {self.lr}")
        require_non_negative("train.weight_decay", self.weight_decay)
        require_non_negative("train.mixup_alpha", self.mixup_alpha)
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"train.label_smoothing: must be in [0, 1), got {self.label_smoothing}")
