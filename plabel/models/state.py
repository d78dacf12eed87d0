"""A model's weights as files users load: plain keys, whatever wrapped the model in training."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator

COMPILED = "_orig_mod."  # torch.compile's wrapper puts this before every key


def plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without torch.compile's key prefix (a compiled run's files load into the plain network)."""
    return {(k[len(COMPILED):] if k.startswith(COMPILED) else k): v for k, v in state.items()}


def save_weights(accelerator: Accelerator, model: torch.nn.Module, path: Path) -> None:
    """The model's weights to ``path`` (safetensors, plain keys), written by the main process."""
    from safetensors.torch import save_file

    state = accelerator.get_state_dict(model)  # every process takes part (sharded models gather here)
    if accelerator.is_main_process:
        save_file({k: v.detach().contiguous().cpu() for k, v in plain(state).items()}, str(path))
