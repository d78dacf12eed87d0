"""Host work a training step must not do (found with cProfile after the GPU check measured a small
model's step at 0.73x a bare loop): formatting stack traces to queue seeds for backends that never
start, and searching sys.path for a package on every optimizer step."""

from __future__ import annotations

import traceback

import torch

from plabel.trainer.loop import RoundPosition, seed_step


def test_seed_step_draws_what_torch_manual_seed_draws_and_formats_no_stack(monkeypatch):
    position = RoundPosition(round_index=2, epoch=3, step_in_epoch=5, global_step=0)
    seed_step(7, position)
    ours = torch.rand(16)
    key = (((7 * 1_000 + 2) * 10_000 + 3) * 100_000 + 5) * 1_024
    torch.manual_seed(key % (2**63 - 1))
    assert torch.equal(ours, torch.rand(16))  # exact replay after a restart depends on this

    stacks = []
    monkeypatch.setattr(traceback, "format_stack", lambda *a, **k: stacks.append(1) or [])
    for step in range(20):
        seed_step(7, RoundPosition(round_index=0, step_in_epoch=step))
    assert stacks == []


def test_accelerate_asks_for_lomo_once_per_process():
    import accelerate.optimizer

    import plabel.trainer.setup  # noqa: F401  (remembers the answer on import)

    lookup = accelerate.optimizer.is_lomo_available
    assert hasattr(lookup, "cache_info")
    before = lookup.cache_info().misses
    for _ in range(5):
        lookup()
    assert lookup.cache_info().misses <= max(before, 1)
