"""Host work a training step must not do (found with cProfile after the GPU check measured a small
model's step at 0.73x a bare loop): formatting stack traces to queue seeds for backends that never
start, and searching sys.path for a package on every optimizer step."""

from __future__ import annotations

import traceback

import pytest
import torch

from plabel.trainer.loop import RoundPosition, seed_step, step_seed


def test_seed_step_draws_what_torch_manual_seed_draws_and_formats_no_stack(monkeypatch):
    position = RoundPosition(round_index=2, epoch=3, step_in_epoch=5, global_step=0)
    seed_step(7, position)
    ours = torch.rand(16)
    torch.manual_seed(step_seed(7, position))
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


def test_step_seeds_have_no_field_limits_and_replay():
    at = lambda epoch, step, round_index=1: step_seed(3, RoundPosition(round_index=round_index, epoch=epoch, step_in_epoch=step))  # noqa: E731
    # Fixed decimal fields gave step 100,005 of epoch 0 the seed of step 5 of epoch 1.
    seeds = {at(0, 5), at(0, 100_005), at(1, 5), at(0, 5, round_index=2), at(10_000, 5)}
    assert len(seeds) == 5 and all(0 <= s < 2**63 for s in seeds)
    far = RoundPosition(round_index=1, epoch=0, step_in_epoch=148_123)  # a 10M-image pool's epoch at batch 64
    seed_step(3, far)
    first = torch.rand(8)
    seed_step(3, far)  # a run killed there and resumed draws the same
    assert torch.equal(first, torch.rand(8))


def test_batchnorm_is_patched_only_when_processes_share_statistics():
    from types import SimpleNamespace

    import torch.nn.functional as F

    from plabel.distributed import global_batch as gb

    rows = torch.arange(4)
    for device, world, sync, patched_norm, patched_dropout in (
        ("cpu", 1, True, False, False),  # one CPU process: nothing to do at all
        ("cuda", 1, True, False, True),  # one GPU: dropout only (the global-batch draw)
        ("cpu", 2, True, True, True),
        ("cpu", 2, False, False, True),  # train.sync_batchnorm false: per-process statistics
    ):
        accelerator = SimpleNamespace(num_processes=world, device=torch.device(device))
        original = rows.to  # no tensor moves to a device that is not there
        with torch.no_grad():
            rows.to = lambda *a, **k: rows  # type: ignore[method-assign]
            try:
                with gb.global_batch(accelerator, rows, 4, sync):
                    assert (F.batch_norm is not gb._original_batch_norm) == patched_norm, (device, world, sync)
                    assert (F.dropout is not gb._original_dropout) == patched_dropout, (device, world, sync)
            finally:
                rows.to = original  # type: ignore[method-assign]
        assert F.batch_norm is gb._original_batch_norm and F.dropout is gb._original_dropout


def test_adaptive_k_is_the_largest_whose_estimate_reaches_the_target():
    """pseudo.min_precision: bisection on k over the (surest-first) selection's mean calibrated confidence."""
    from types import SimpleNamespace

    from plabel.trainer.round_selection import adaptive_percent

    n = 1000
    confidence = torch.linspace(1.0, 0.0, n)  # position i is the i-th surest: ranking order
    one = SimpleNamespace(num_processes=1, device=torch.device("cpu"))

    def select(percent: float):
        k = int(n * percent / 100 + 1e-9)
        return torch.arange(k), torch.zeros(k, dtype=torch.long)

    # The top k of this ramp average 1 - (k - 1) / (2 (n - 1)): 0.8 or more up to k = 400 samples.
    assert int(n * adaptive_percent(one, select, confidence, 0, 60.0, 0.8) / 100 + 1e-9) == 400
    assert adaptive_percent(one, select, confidence, 0, 30.0, 0.8) == 30.0  # already above: the round's k
    assert adaptive_percent(one, select, torch.zeros(n), 0, 60.0, 0.8) == pytest.approx(0.0, abs=0.02)
