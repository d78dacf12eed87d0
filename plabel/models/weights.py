"""Weights a model starts from: the library's pretrained ones (offline first), or a user's file.

Offline first: the library's weights are looked for in its own cache (timm: the Hugging Face hub
cache under ``HF_HOME``; torchvision: ``TORCH_HOME``/hub/checkpoints) and downloaded only when
they are missing and the host answers; otherwise the run stops before training with one line
saying where they were looked for and what to set instead. User files are untrusted:
safetensors, or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

import torch
from torch import nn

from plabel.config import ConfigError
from plabel.config.model_names import check_model_name
from plabel.models.features import classifier_module

TIMM_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub loader tries, in order


def pretrained_file(name: str) -> str:
    """A local file holding the library's pretrained weights for ``name`` (downloaded if needed)."""
    ref = check_model_name(name)
    if ref.library == "timm":
        import timm

        cfg = timm.models.get_pretrained_cfg(ref.name)
        if cfg is None:
            raise ConfigError(f"model.pretrained: timm has no pretrained weights for {ref.name!r}")
        if cfg.hf_hub_id:
            return _hub_file(name, cfg.hf_hub_id, [cfg.hf_hub_filename] if cfg.hf_hub_filename else list(TIMM_FILES))
        if cfg.url:
            return _url_file(name, cfg.url)
        raise ConfigError(f"model.pretrained: timm lists no download for {ref.name!r}; set model.weights to a local file")
    if ref.library == "torchvision":
        import torchvision.models as tv

        return _url_file(name, tv.get_model_weights(ref.name).DEFAULT.url)
    raise ConfigError(f"model.pretrained: the built-in {name} has no library weights; use model.weights")


def _hub_file(name: str, repo_id: str, filenames: list[str]) -> str:
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    for filename in filenames:
        hit = try_to_load_from_cache(repo_id, filename)
        if isinstance(hit, str):
            return hit
    where = f"{constants.HF_HUB_CACHE} (models--{repo_id.replace('/', '--')})"
    _require_network(name, urlparse(constants.ENDPOINT).hostname or "huggingface.co", where, constants.HF_HUB_OFFLINE)
    last: Optional[Exception] = None
    for filename in filenames:
        try:
            return hf_hub_download(repo_id, filename)
        except Exception as e:  # not found under this name, or the download failed
            last = e
    raise ConfigError(f"model.pretrained: downloading {repo_id} failed ({type(last).__name__}); set model.weights to a local file")


def _url_file(name: str, url: str) -> str:
    target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    if target.is_file():
        return str(target)
    _require_network(name, urlparse(url).hostname or "", str(target), False)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=False)
    except Exception as e:
        raise ConfigError(f"model.pretrained: downloading {url} failed ({type(e).__name__}); set model.weights to a local file") from None
    return str(target)


def _require_network(name: str, host: str, where: str, offline: bool) -> None:
    """Stop at once, with where the weights were looked for, when they cannot be downloaded."""
    hint = (
        f"model.pretrained: no cached weights for {name} in {where} and {{why}}; fetch them on a machine with network "
        "into the same cache (or copy the cache here), or set model.weights to a local .safetensors/.pth file"
    )
    if offline:
        raise ConfigError(hint.format(why="HF_HUB_OFFLINE is set"))
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return  # a proxy decides; the download itself will tell
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError:
        raise ConfigError(hint.format(why=f"{host} cannot be reached")) from None


def read_weights(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors/.pth file or a plabel run folder (its model.safetensors)."""
    p = Path(path)
    if p.is_dir():
        if not (p / "model.safetensors").is_file():
            raise ConfigError(f"model.weights: {path} is a folder without model.safetensors (not a finished plabel run)")
        p = p / "model.safetensors"
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        loaded: Any = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code in it, a truncated file, not a checkpoint at all
        raise ConfigError(f"model.weights: cannot read {path} as weights ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ConfigError(f"model.weights: {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def classifier_names(model: nn.Module, num_classes: int) -> set[str]:
    """State-dict names of the classifier head's parameters (see :func:`classifier_module`)."""
    try:
        name, module = classifier_module(model, num_classes)
    except ValueError:
        return set()
    prefix = f"{name}." if name else ""
    return {f"{prefix}{p}" for p, _ in module.named_parameters(recurse=False)}


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], where: str, num_classes: int) -> list[str]:
    """Load ``state`` into ``model``; a head that does not fit keeps its fresh weights.

    Anything else that is missing, unexpected or shaped differently means the weights belong to
    another architecture: a ConfigError that shows the first differences. Returns notes to print.
    """
    own = model.state_dict()
    head = classifier_names(model, num_classes)
    misshaped = [k for k in state if k in own and state[k].shape != own[k].shape]
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    problems = [k for k in misshaped + missing if k not in head] + unexpected
    if problems:
        shown = "; ".join(
            f"{k}: {tuple(state[k].shape)} there, {tuple(own[k].shape)} here" if k in misshaped
            else f"{k}: {'not in the model' if k in unexpected else 'missing from the file'}"
            for k in problems[:3]
        )
        raise ConfigError(
            f"model.weights: {where} does not match this model ({len(problems)} tensors differ: {shown}); "
            "give weights of the same architecture (model.name)"
        )
    fitting = {k: v for k, v in state.items() if k not in misshaped}
    model.load_state_dict(fitting, strict=False)
    reset = sorted(set(misshaped) | (head & set(missing)))
    if reset:
        return [f"classifier head ({', '.join(reset)}) re-initialised: its shape in {where} does not fit the data's classes"]
    return []
