"""The run configuration: the schema (``schema.py``, its sections in ``*_schema.py``), loading and checking it (``load.py``), and
the command line built from it (``args.py``)."""

from plabel.config.load import config_from_dict, diff_configs, flatten, iter_fields, load_config, parse_value
from plabel.config.schema import (
    CheckpointConfig,
    ConfigError,
    DataConfig,
    ModelConfig,
    PseudoConfig,
    RunConfig,
    SourceConfig,
    TrackingConfig,
    TrainConfig,
)

__all__ = [
    "CheckpointConfig", "ConfigError", "DataConfig", "ModelConfig", "PseudoConfig", "RunConfig", "SourceConfig",
    "TrackingConfig", "TrainConfig", "config_from_dict", "diff_configs", "flatten", "iter_fields", "load_config",
    "parse_value",
]
