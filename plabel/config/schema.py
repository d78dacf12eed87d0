"""The experiment configuration: typed dataclasses, one documented field each, and the range
checks that types cannot express (``validate``). ``RunConfig`` is here; its sections live in
``data_schema.py``, ``train_schema.py`` (model, train), ``pseudo_schema.py`` and
``tracking_schema.py`` (tracking, checkpoint), and are importable from here as before.

Types are checked by pydantic when a config is loaded (:mod:`plabel.config.load`); every
section forbids unknown keys. The process count never appears here: it belongs to ``launch/``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

from plabel.config.data_schema import JUNK_KINDS, TORCHVISION_NAMES, DataConfig, SourceConfig
from plabel.config.errors import ConfigError
from plabel.config.fields import SECTION, option, require_positive, section
from plabel.config.pseudo_schema import PseudoConfig
from plabel.config.tracking_schema import CheckpointConfig, TrackingConfig
from plabel.config.train_schema import ROUND0_EPOCHS_FACTOR, ModelConfig, TrainConfig

__all__ = [
    "JUNK_KINDS", "ROUND0_EPOCHS_FACTOR", "TORCHVISION_NAMES", "CheckpointConfig", "ConfigError", "DataConfig",
    "ModelConfig", "PseudoConfig", "RunConfig", "SourceConfig", "TrackingConfig", "TrainConfig",
]



@dataclass
class RunConfig:
    __pydantic_config__ = SECTION

    seed: int = option(0, "seed for the split, model init, sampling and augmentation")
    output_dir: Optional[str] = option(
        None, "run folder; default runs/<config name>-seed<seed>. Rerunning the same command resumes there"
    )
    resume: str = option(
        "auto",
        "auto: continue the run in output_dir from its newest complete checkpoint; never: refuse an existing "
        "output_dir; or a checkpoint folder to start from",
    )
    data: DataConfig = section(DataConfig, "data")
    model: ModelConfig = section(ModelConfig, "model")
    train: TrainConfig = section(TrainConfig, "training")
    pseudo: PseudoConfig = section(PseudoConfig, "pseudo-labeling")
    tracking: TrackingConfig = section(TrackingConfig, "tracking")
    checkpoint: CheckpointConfig = section(CheckpointConfig, "checkpointing")
    collective_timeout_s: int = option(600, "seconds a process waits in a collective before the job fails (InitProcessGroupKwargs)")
    verbose: bool = option(False, "print the whole resolved config at the start (config.yaml in the run folder always has it) and a line for every checkpoint, not only each round's and a preemption's")
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
        require_positive("collective_timeout_s", self.collective_timeout_s)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
