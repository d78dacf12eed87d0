"""A run's model as a portable file: ONNX (onnxruntime, any language) or TorchScript (torch.jit.load).

Beside ``model.onnx`` / ``model.pt`` goes ``model.json``: what the file takes and gives (input name,
layout, size, channels, normalisation, interpolation, crop) and the class names, so a service with
neither plabel nor the run folder can prepare images and read the outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from plabel.config import ConfigError
from plabel.use.run import Run

FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}


def export_model(run: Run, output: Path, fmt: str) -> Path:
    """Write ``output/<model file>`` and ``output/model.json``; returns the model file."""
    if fmt not in FILES:
        raise ConfigError(f"--format: {fmt!r} is not onnx or torchscript")
    output.mkdir(parents=True)
    model = run.model.float().cpu().eval()
    h, w = run.spec.size
    example = torch.randn(2, run.spec.channels, h, w)
    target = output / FILES[fmt]
    if fmt == "torchscript":
        import warnings

        with warnings.catch_warnings():  # torch marks TorchScript deprecated; it is what torch.jit.load reads
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(model, example, check_trace=False)
            traced.save(str(target))
    else:
        _onnx(model, example, target)
    (output / "model.json").write_text(json.dumps(describe(run, fmt), indent=1) + "\n")
    return target


def _onnx(model: torch.nn.Module, example: torch.Tensor, target: Path) -> None:
    try:
        import onnx  # noqa: F401  (the exporter needs it; say so in one line if it is missing)
    except ModuleNotFoundError:
        raise ConfigError("--format onnx: the onnx package is not installed; pip install onnx onnxscript "
                          "(or use --format torchscript)") from None
    batch = torch.export.Dim("batch", min=1, max=65536)
    torch.onnx.export(model, (example,), str(target), input_names=["input"], output_names=["logits"],
                      dynamic_shapes={"x": {0: batch}} if _forward_arg(model) == "x" else ({0: batch},),
                      dynamo=True, optimize=True, verbose=False)


def _forward_arg(model: torch.nn.Module) -> str:
    import inspect

    params = list(inspect.signature(model.forward).parameters)
    return params[0] if params else "x"


def describe(run: Run, fmt: str) -> dict[str, Any]:
    """model.json: everything needed to prepare an image and read the output without plabel."""
    from plabel import __version__

    spec = run.spec
    return {
        "format": fmt, "file": FILES[fmt], "input_name": "input", "output_name": "logits",
        "input": {"layout": "NCHW float32", "channels": spec.channels, "height": spec.size[0], "width": spec.size[1],
                  "mean": list(spec.mean), "std": list(spec.std), "interpolation": spec.interpolation, "crop_pct": spec.crop_pct,
                  "decode_as": "grey (L)" if run.data_channels == 1 else "RGB",
                  "grey_repeated_to_3": run.data_channels == 1 and spec.channels == 3},
        "preprocessing": (f"decode as {'grey' if run.data_channels == 1 else 'RGB'}; resize the shorter side to "
                          f"round({min(spec.size)} / crop_pct) with {spec.interpolation} interpolation (antialiased); "
                          f"centre-crop {spec.size[0]}x{spec.size[1]}; scale to [0, 1]; subtract mean, divide by std per channel"),
        "output": "logits (batch, classes); softmax for probabilities; entropy in bits = -sum p log2 p",
        "class_names": run.class_names, "model": run.config.model.name, "weights": run.weights.name,
        "run": str(run.folder), "plabel_version": __version__,
    }
