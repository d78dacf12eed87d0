"""Multi-process (gloo, CPU) tests of the one distributed seam and of scoring + selection."""

import pytest
import torch
from helpers import run_processes

from plabel.distributed.collectives import gather_pool, shard_range
from plabel.distributed.processes import share_from_main
from plabel.method.selection import select_pseudo_labels


def _pool_scores(pool_size: int, num_classes: int = 10):
    g = torch.Generator().manual_seed(pool_size)
    # Few distinct values: many ties, so the index tie-break matters.
    scores = torch.randint(0, 6, (pool_size,), generator=g).float() / 7
    scores[::97] = float("nan")
    preds = torch.randint(0, num_classes, (pool_size,), generator=g)
    return scores, preds


CASES = [(1001, 33.0, False), (1001, 33.0, True), (7, 50.0, False), (4099, 100.0, True), (5, 10.0, False)]


def _select_on_ranks(accelerator):
    out = []
    for pool_size, percent, class_balanced in CASES:
        scores, preds = _pool_scores(pool_size)
        shard = shard_range(accelerator, pool_size)
        local = torch.arange(shard.start, shard.stop)
        # Each rank contributes only its shard; gather_pool rebuilds the pool-sized arrays.
        arrays = gather_pool(accelerator, local, {"entropy": scores[local], "prediction": preds[local]}, pool_size)
        picked = select_pseudo_labels(arrays["entropy"], arrays["prediction"], percent, 10, class_balanced)
        shared = share_from_main(accelerator, picked)
        out.append((len(local), shared.indices.tolist(), shared.labels.tolist(), picked.indices.tolist()))
    return out


@pytest.mark.parametrize("world", [pytest.param(2, marks=pytest.mark.slow), 3])  # 3: unequal shares; 2 is -m slow
def test_selection_identical_to_single_process_on_odd_pool(world):
    per_rank = run_processes(_select_on_ranks, world)
    for case_index, (pool_size, percent, balanced) in enumerate(CASES):
        scores, preds = _pool_scores(pool_size)
        reference = select_pseudo_labels(scores, preds, percent, 10, balanced)
        expected = (reference.indices.tolist(), reference.labels.tolist())
        results = [rank_results[case_index] for rank_results in per_rank]
        shard_sizes = [r[0] for r in results]
        assert sum(shard_sizes) == pool_size and max(shard_sizes) - min(shard_sizes) <= 1
        for _, indices, labels, local_pick in results:
            assert (indices, labels) == expected  # every rank holds the single-process selection
            assert local_pick == expected[0]


def _gather_values(accelerator, pool_size):
    shard = shard_range(accelerator, pool_size)
    idx = torch.arange(shard.start, shard.stop)
    out = gather_pool(accelerator, idx, {"v": idx.double() * 3 + 1, "p": idx % 5}, pool_size)
    return out["v"].tolist(), out["p"].tolist()


def test_gather_pool_writes_each_value_at_its_index_in_3_processes():
    for v, p in run_processes(_gather_values, 3, 10):
        assert v == [3.0 * i + 1 for i in range(10)]
        assert p == [i % 5 for i in range(10)]


def _gather_overlapping(accelerator):
    # Both ranks claim index 0: the partition check must refuse rather than pick one silently.
    idx = torch.tensor([0, 1]) if accelerator.process_index == 0 else torch.tensor([0, 2])
    try:
        gather_pool(accelerator, idx, {"v": idx.float()}, 3)
    except RuntimeError as err:
        return str(err)
    return "no error"


def test_gather_pool_refuses_shards_that_do_not_partition():
    for message in run_processes(_gather_overlapping, 2):
        assert "scored twice" in message
