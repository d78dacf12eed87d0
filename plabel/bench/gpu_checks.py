"""Checks of the code paths a GPU takes, against the CPU reference. Each returns ``(name, ok, detail)``
rows; they run on any device (``tests/test_gpu.py`` runs them on CUDA when there is one and on the
CPU otherwise, and ``python -m plabel.bench.gpu_check`` runs them as its first stage)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from plabel.distributed.sharded_selection import select_pseudo_labels_sharded
from plabel.method.scores import energy, entropy, margin, max_probability
from plabel.method.selection import select_pseudo_labels
from plabel.models.zoo import build_model

Row = tuple[str, bool, str]


def _logits(n: int = 4096, classes: int = 10) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, classes, generator=g) * 4
    logits[::97] *= 200  # extreme logits: a probability underflows to 0
    logits[5::101] = 0.0  # ties: a uniform row
    return logits


def check_scores(device: torch.device) -> list[Row]:
    """Entropy, max-probability, margin and energy of the same logits on ``device`` and the CPU."""
    cpu = _logits()
    on = cpu.to(device)
    rows = []
    for name, fn in (("entropy", entropy), ("max_probability", max_probability), ("margin", margin), ("energy", energy)):
        diff = float((fn(on).cpu() - fn(cpu)).abs().max())
        rows.append((f"scores: {name} on {device.type} vs cpu", diff < 1e-4, f"max |difference| {diff:.2e}"))
    same = bool(torch.equal(on.argmax(1).cpu(), cpu.argmax(1)))
    rows.append((f"scores: argmax on {device.type} vs cpu", same, "identical" if same else "differs"))
    return rows


def check_selection(device: torch.device, accelerator: Accelerator) -> list[Row]:
    """The reference and the sharded selection on ``device`` tensors against the CPU reference:
    ties, NaN, global and class-balanced, with and without counting only the eligible."""
    g = torch.Generator().manual_seed(1)
    n = 20011
    scores = torch.randint(0, 300, (n,), generator=g).float() / 7
    scores[::53] = float("nan")
    predictions = torch.randint(0, 10, (n,), generator=g)
    rows = []
    for balanced in (False, True):
        for of_eligible in (False, True):
            reference = select_pseudo_labels(scores, predictions, 37.0, 10, balanced, None, of_eligible)
            on_device = select_pseudo_labels(scores.to(device), predictions.to(device), 37.0, 10, balanced, None, of_eligible)
            idx, labels = select_pseudo_labels_sharded(
                accelerator, torch.arange(n, device=device), scores.to(device), predictions.to(device), pool_size=n,
                percent=37.0, num_classes=10, class_balanced=balanced, of_eligible=of_eligible,
            )
            same_ref = torch.equal(on_device.indices.cpu(), reference.indices) and torch.equal(on_device.labels.cpu(), reference.labels)
            same_sharded = torch.equal(idx.cpu(), reference.indices) and torch.equal(labels.cpu(), reference.labels)
            what = f"{'class-balanced' if balanced else 'global'}{', of eligible' if of_eligible else ''}"
            rows.append((f"selection: reference on {device.type}, {what}", same_ref, f"{len(reference)} selected"))
            rows.append((f"selection: sharded on {device.type}, {what}", same_sharded, "bit-identical" if same_sharded else "differs"))
    return rows


def _images(n: int, size: int, channels: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.rand(n, channels, size, size, generator=g) * 2 - 1


def check_autocast(device: torch.device) -> list[Row]:
    """Scoring a CNN under bf16 (and fp16 on CUDA) autocast against fp32: entropies stay finite and close."""
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 10).to(device).eval()
    x = _images(256, 32, 3).to(device)
    with torch.no_grad():
        reference = model(x).float()
        rows = []
        kinds = [torch.bfloat16] + ([torch.float16] if device.type == "cuda" else [])
        for dtype in kinds:
            with torch.autocast(device_type=device.type, dtype=dtype):
                logits = model(x).float()
            finite = bool(torch.isfinite(entropy(logits)).all())
            gap = float((entropy(logits) - entropy(reference)).abs().mean())
            agree = float((logits.argmax(1) == reference.argmax(1)).float().mean())
            rows.append((f"autocast {str(dtype).removeprefix('torch.')} scoring on {device.type}",
                         finite and gap < 0.05 and agree >= 0.95,
                         f"entropy finite: {finite}; mean |entropy - fp32| {gap:.4f} bits; argmax agrees on {100 * agree:.1f}%"))
    return rows


def check_channels_last(device: torch.device) -> list[Row]:
    """channels_last against contiguous: the same logits (to float tolerance) and training step."""
    rows = []
    for name, size, channels in (("small_cnn", 28, 1), ("resnet18", 32, 3)):
        torch.manual_seed(0)
        plain = build_model(name, channels, 10).to(device)
        last = build_model(name, channels, 10).to(device)
        last.load_state_dict(plain.state_dict())
        last = last.to(memory_format=torch.channels_last)
        x = _images(64, size, channels).to(device)
        y = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(3)).to(device)
        plain.eval(), last.eval()
        with torch.no_grad():
            a, b = plain(x), last(x.contiguous(memory_format=torch.channels_last))
        diff = float((a - b).abs().max() / a.abs().max().clamp(min=1e-6))
        plain.train(), last.train()
        torch.manual_seed(5)
        loss_a = F.cross_entropy(plain(x), y).item()
        torch.manual_seed(5)
        loss_b = F.cross_entropy(last(x.contiguous(memory_format=torch.channels_last)), y).item()
        same_loss = abs(loss_a - loss_b) < 1e-3 * max(1.0, abs(loss_a))
        rows.append((f"channels_last {name} on {device.type}", diff < 1e-3 and same_loss,
                     f"max relative logit difference {diff:.2e}; training loss {loss_a:.5f} vs {loss_b:.5f}"))
    return rows


def run_all(device: torch.device, accelerator: Accelerator) -> list[Row]:
    rows: list[Row] = []
    for check in (check_scores, check_autocast, check_channels_last):
        rows += check(device)
    rows += check_selection(device, accelerator)
    return rows


def as_markdown(rows: list[Row]) -> str:
    lines = ["| check | result | detail |", "|---|---|---|"]
    lines += [f"| {name} | {'ok' if ok else '**FAILED**'} | {detail} |" for name, ok, detail in rows]
    return "\n".join(lines)


__all__: list[Any] = ["as_markdown", "check_autocast", "check_channels_last", "check_scores", "check_selection", "run_all"]
