"""The selection a run makes: exact global pseudo-label selection without gathering the pool.

:func:`select_pseudo_labels_sharded` returns, on each process, its part of the selection that the
reference :func:`plabel.method.selection.select_pseudo_labels` makes on the whole pool, bit for
bit and for any world size. Each process holds only its shard plus its selected samples (memory O(local shard)), and
the traffic per process is a few fixed-size histograms: it does not grow with the pool.

How it works:

1. A float32 score maps to an int32 key with the same order (:func:`order_keys`); samples that can
   never be picked (non-finite score, or already selected in an earlier round) get a key above
   every finite key and are counted apart.
2. Radix select: four passes over the 4 bytes of the key, most significant first. Each all-reduces
   a 256-bin histogram of the next byte among samples whose key starts with the bytes fixed so far,
   then fixes the byte whose bucket holds the k-th lowest key. That yields the threshold key T and
   m, how many samples with key == T are still needed.
3. Every process takes its keys < T. Ties at T go to the lowest pool indices: shards are contiguous
   and in rank order, so rank r takes what is left of m after ranks < r (one all-gather of the
   per-rank tie counts), in index order.

Class-balanced selection runs the same passes for every class at once (histograms of shape
(num_classes, 256), one collective per pass). Sweeps over the shard go in chunks so temporaries
stay small whatever the shard size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from accelerate import Accelerator

from plabel.distributed.collectives import Comm, Traffic
from plabel.method.selection import Selection, num_to_select

# Above every finite key (float32 max maps to 0x7F7FFFFF), so it sorts after all candidates.
INELIGIBLE_KEY = torch.iinfo(torch.int32).max
NO_THRESHOLD = torch.iinfo(torch.int32).min  # a class with nothing to pick: no eligible key is below it
BUCKETS = 256  # one key byte per pass
SHIFTS = (24, 16, 8, 0)  # byte positions, most significant first
CHUNK = 1 << 18  # samples per sweep step on the CPU: bounds the temporaries (a few MiB) whatever the shard size
GPU_CHUNK = 1 << 27  # on a GPU, fewer and larger steps: 10^8 scores on an H200 took 0.021 s at 2^27, 0.026 s at 2^24, 0.040 s at 2^22


def order_keys(scores: torch.Tensor) -> torch.Tensor:
    """int32 keys whose signed order is the order of the float32 ``scores``.

    A float's bits read as a signed int already order the non-negative floats; flipping the 31
    non-sign bits of a negative float reverses the order among negatives (larger magnitude, smaller
    key), and negatives stay below zero. -0.0 is mapped onto +0.0 because the reference sort holds
    them equal (their tie is broken by index). Non-finite scores get ``INELIGIBLE_KEY``.
    """
    bits = scores.float().view(torch.int32)
    keys = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    keys.masked_fill_(keys == -1, 0)  # -0.0
    keys.masked_fill_(~torch.isfinite(scores), INELIGIBLE_KEY)
    return keys


@dataclass
class _Shard:
    """This process's contiguous pool slice, with earlier picks frozen (ineligible, labels kept)."""

    scores: torch.Tensor  # (n,) float32
    predictions: torch.Tensor  # (n,) class ids
    start: int  # pool index of local position 0
    frozen_pos: torch.Tensor  # (p,) ascending local positions of earlier picks
    frozen_labels: torch.Tensor  # (p,) their labels, same dtype as predictions

    def chunks(self, with_labels: bool) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
        """(offset, keys, labels now) per CHUNK of the shard; labels only when ``with_labels``."""
        n = self.scores.numel()
        step = CHUNK if self.scores.device.type == "cpu" else GPU_CHUNK
        for lo in range(0, max(n, 1), step):  # an empty shard still yields one (empty) chunk
            hi = min(lo + step, n)
            keys = order_keys(self.scores[lo:hi])
            labels = self.predictions[lo:hi] if with_labels else None
            a, b = torch.searchsorted(self.frozen_pos, torch.tensor([lo, hi], device=self.frozen_pos.device)).tolist()
            if b > a:
                at = self.frozen_pos[a:b] - lo
                keys[at] = INELIGIBLE_KEY
                if labels is not None:
                    labels = labels.clone()
                    labels[at] = self.frozen_labels[a:b]
            yield lo, keys, labels


def _local_problem(
    local_indices: torch.Tensor,
    local_scores: torch.Tensor,
    local_predictions: torch.Tensor,
    previous_local: tuple[torch.Tensor, torch.Tensor] | None,
    num_classes: int,
    class_balanced: bool,
) -> str | None:
    """What is wrong with this process's inputs, if anything (checked before any collective)."""
    n = local_indices.numel()
    if local_scores.shape != (n,) or local_predictions.shape != (n,):
        shapes = [tuple(t.shape) for t in (local_indices, local_scores, local_predictions)]
        return f"indices, scores and predictions must be 1-D of one length, got shapes {shapes}"
    if local_scores.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"scores must be float32 (or half, upcast exactly), got {local_scores.dtype}"
    if n:
        start = int(local_indices[0])
        step = CHUNK if local_indices.device.type == "cpu" else GPU_CHUNK
        for lo in range(0, n, step):  # chunked so the check allocates no shard-sized arange
            hi = min(lo + step, n)
            if not torch.equal(local_indices[lo:hi].long(), torch.arange(start + lo, start + hi, device=local_indices.device)):
                return "local_indices is not a contiguous ascending range (use plabel.distributed.collectives.shard_range)"
    labels = [local_predictions]
    if previous_local is not None:
        prev_idx, prev_labels = previous_local
        if prev_idx.shape != prev_labels.shape or prev_idx.dim() != 1:
            return "previous_local indices and labels must be 1-D and of equal length"
        if prev_idx.numel():
            lo = int(local_indices[0]) if n else 0
            pos = torch.sort(prev_idx.long() - lo).values
            if int(pos[0]) < 0 or int(pos[-1]) >= n:
                return "previous_local holds indices outside this process's shard"
            if bool((pos[1:] == pos[:-1]).any()):
                return "previous_local holds repeated indices"
        labels.append(prev_labels)
    if class_balanced:
        for t in labels:
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
                return f"labels must lie in [0, {num_classes})"
    return None


def _check_shards(comm: Comm, local_indices: torch.Tensor, pool_size: int, problem: str | None) -> int:
    """Check on every process that the shards tile [0, pool_size) in rank order; return this start.

    One all-gather of (start, length, problem flag) per rank, so every process raises together
    instead of one raising while the others wait in the next collective.
    """
    n = local_indices.numel()
    start = int(local_indices[0]) if n and problem is None else -1
    table = comm.gather(torch.tensor([start, n, problem is not None], dtype=torch.long)).tolist()
    bad = [r for r, (_, _, flagged) in enumerate(table) if flagged]
    if bad:
        detail = f": {problem}" if problem else ""
        raise ValueError(f"select_pseudo_labels_sharded: bad inputs on rank(s) {bad}{detail}")
    expected = 0
    for r, (s, length, _) in enumerate(table):
        if length and s != expected:
            raise ValueError(
                f"select_pseudo_labels_sharded: rank {r} starts at {s}, expected {expected}; "
                "shards must be contiguous and in rank order"
            )
        expected += length
    if expected != pool_size:
        raise ValueError(f"select_pseudo_labels_sharded: shards cover {expected} samples, not pool_size={pool_size}")
    return max(start, 0)


def _descend(hist: torch.Tensor, want: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class (row of ``hist``), the bucket holding the ``want``-th lowest key, and its rank there.

    ``hist`` (classes, buckets) global counts, ``want`` (classes,) >= 1 where active. Returns the
    bucket (classes,) and ``want`` minus the count in lower buckets (1 <= it <= bucket count).
    Rows with want == 0 come back as bucket 0, want 0.
    """
    cum = hist.cumsum(1)
    bucket = (cum < want[:, None]).sum(1)
    below = cum.gather(1, (bucket - 1).clamp(min=0)[:, None]).squeeze(1)
    return bucket, want - torch.where(bucket > 0, below, 0)


def _first_ties(
    tie_pos: torch.Tensor, tie_classes: torch.Tensor | None, quota: torch.Tensor, taken: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Of this chunk's ties (ascending positions), the next ``quota - taken`` of each class.

    Returns the chosen positions and ``taken`` updated with every tie seen, chosen or not.
    """
    if tie_classes is None:
        n = max(0, min(int(quota[0] - taken[0]), tie_pos.numel()))
        return tie_pos[:n], taken + tie_pos.numel()
    order = torch.argsort(tie_classes, stable=True)  # group by class, index order kept within one
    cls = tie_classes[order]
    per_class = torch.bincount(cls, minlength=quota.numel())
    run_start = torch.cumsum(per_class, 0) - per_class
    seat = torch.arange(order.numel(), device=order.device) - run_start[cls] + taken[cls]  # 0-based rank among this rank's ties
    return tie_pos[order[seat < quota[cls]]], taken + per_class


def _radix_select(
    comm: Comm, shard: _Shard, top_hist: torch.Tensor, want: torch.Tensor, class_balanced: bool
) -> torch.Tensor:
    """Local positions (ascending) of each class's ``want`` lowest eligible keys, ties by pool index.

    ``top_hist`` (classes, 256) is the global histogram of the top key byte of eligible samples;
    ``want`` (classes,) is at most each class's eligible count. Every process must call this with
    the same ``top_hist`` and ``want`` (they come from an all-reduce), so all take the same path.
    """
    classes, device = want.numel(), want.device
    active = want > 0
    if not bool(active.any()):
        return torch.empty(0, dtype=torch.long, device=device)
    bucket, want = _descend(top_hist, want)
    # prefix[c] = the key bytes fixed so far for class c, i.e. what keys >> shift must equal.
    # 128 is out of range for an arithmetic-shifted top byte, so inactive classes match nothing.
    prefix = torch.where(active, bucket - 128, 128)

    # Sweep: keep the (usually few) eligible samples whose top byte is their class's bucket.
    cand_keys: list[torch.Tensor] = []
    cand_classes: list[torch.Tensor] = []
    top32 = prefix.to(torch.int32)
    for _, keys, labels in shard.chunks(with_labels=class_balanced):
        top = top32[labels] if labels is not None else top32[0]
        match = ((keys >> 24) == top) & (keys != INELIGIBLE_KEY)
        cand_keys.append(keys[match])
        if labels is not None:
            cand_classes.append(labels[match].long())
        else:
            cand_classes.append(torch.zeros(int(match.sum()), dtype=torch.long, device=device))
    keys = torch.cat(cand_keys)
    key_classes = torch.cat(cand_classes)

    for shift in SHIFTS[1:]:
        digit = ((keys >> shift) & 0xFF).long()
        local_hist = torch.bincount(key_classes * BUCKETS + digit, minlength=classes * BUCKETS)
        bucket, want = _descend(comm.sum(local_hist).view(classes, BUCKETS), want)
        prefix = prefix * BUCKETS + bucket
        keep = (keys >> shift) == prefix[key_classes]
        keys, key_classes = keys[keep], key_classes[keep]

    # Now prefix is the threshold key T per class, want the number of ties at T still needed, and
    # the surviving candidates are exactly this process's ties.
    threshold = torch.where(active, prefix, NO_THRESHOLD).to(torch.int32)
    local_ties = torch.bincount(key_classes, minlength=classes)
    ties_per_rank = comm.gather(local_ties)  # (world, classes)
    ties_before = ties_per_rank[: comm.rank].sum(0)
    quota = (want - ties_before).clamp(min=0).minimum(local_ties)

    picked: list[torch.Tensor] = []
    taken = torch.zeros(classes, dtype=torch.long, device=device)
    scalar_threshold = int(threshold[0])
    for lo, keys, labels in shard.chunks(with_labels=class_balanced):
        t = threshold[labels] if labels is not None else scalar_threshold
        take = keys < t
        tie_pos = torch.nonzero(keys == t).flatten()
        if tie_pos.numel():
            tie_classes = labels[tie_pos].long() if labels is not None else None
            chosen, taken = _first_ties(tie_pos, tie_classes, quota, taken)
            take[chosen] = True
        picked.append(torch.nonzero(take).flatten() + lo)
    return torch.cat(picked)


def select_pseudo_labels_sharded(
    accelerator: Accelerator,
    local_indices: torch.Tensor,
    local_scores: torch.Tensor,
    local_predictions: torch.Tensor,
    *,
    pool_size: int,
    percent: float,
    num_classes: int,
    class_balanced: bool = False,
    previous_local: tuple[torch.Tensor, torch.Tensor] | None = None,
    of_eligible: bool = False,
    traffic: Traffic | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's part of the global pseudo-label selection: (pool indices ascending, labels).

    Same result as :func:`plabel.method.selection.select_pseudo_labels` on the gathered pool, restricted to
    this shard, for any world size; concatenating over ranks in rank order gives the whole
    selection (see :func:`all_gather_selected`). ``local_indices`` must be this process's
    contiguous range (:func:`plabel.distributed.collectives.shard_range`), with scores (float32) and
    predictions (n_local,) in that order, all on one device (CPU in a run; a GPU works too, and the
    collective payloads move to ``accelerator.device`` either way). ``previous_local`` is this process's part of the earlier
    selection (indices, labels): those keep their labels, count toward the targets, and only the
    shortfall is picked from the rest. ``of_eligible``: k% of the pickable samples (see the
    reference). ``traffic``, if given, accumulates the collective bytes.

    Every process must call this (it runs collectives); bad inputs on any rank raise on all.
    """
    comm = Comm(accelerator, traffic)
    device = local_scores.device
    problem = _local_problem(
        local_indices, local_scores, local_predictions, previous_local, num_classes, class_balanced
    )
    start = _check_shards(comm, local_indices, pool_size, problem)

    if previous_local is not None and previous_local[0].numel():
        pos, order = torch.sort(previous_local[0].long() - start)
        frozen_labels = previous_local[1][order].to(local_predictions.dtype)
    else:
        pos = torch.empty(0, dtype=torch.long, device=device)
        frozen_labels = local_predictions[:0]
    shard = _Shard(local_scores.contiguous(), local_predictions, start, pos, frozen_labels)
    classes = num_classes if class_balanced else 1

    # Sweep: per class, a histogram of the top key byte plus bin 256 for ineligible samples (so a
    # row sums to the class size), then the frozen count; one all-reduce for all of it.
    bins = BUCKETS + 1
    hist = torch.zeros(classes * bins, dtype=torch.long, device=device)
    for _, keys, labels in shard.chunks(with_labels=class_balanced):
        digit = ((keys >> 24) + 128).masked_fill_(keys == INELIGIBLE_KEY, BUCKETS).long()
        if labels is not None:
            digit += labels.long() * bins
        hist += torch.bincount(digit, minlength=classes * bins)
    if class_balanced:
        frozen_local = torch.bincount(frozen_labels.long(), minlength=classes)
    else:
        frozen_local = torch.tensor([pos.numel()], device=device)
    totals = comm.sum(torch.cat([hist, frozen_local]))
    hist = totals[: classes * bins].view(classes, bins)
    frozen = totals[classes * bins :]

    eligible = hist[:, :BUCKETS].sum(1)
    if of_eligible:  # k% of what can be picked, plus earlier picks (see the reference)
        sizes = (eligible + frozen).tolist()
    else:
        sizes = hist.sum(1).tolist() if class_balanced else [pool_size]
    targets = torch.tensor([num_to_select(int(s), percent) for s in sizes], dtype=torch.long, device=device)
    # Capped by the eligible count: the reference picks fewer when fewer are eligible.
    want = (targets - frozen).clamp(min=0).minimum(eligible)
    new_pos = _radix_select(comm, shard, hist[:, :BUCKETS], want, class_balanced)

    labels = local_predictions[new_pos]
    indices = new_pos.add_(start)
    if pos.numel():  # merge the earlier picks in (both parts are ascending already)
        indices = torch.cat([pos + start, indices])
        order = torch.argsort(indices)
        indices, labels = indices[order], torch.cat([frozen_labels, labels])[order]
    return indices, labels


def all_gather_selected(
    accelerator: Accelerator,
    local_idx: torch.Tensor,
    local_labels: torch.Tensor,
    *,
    traffic: Traffic | None = None,
) -> Selection:
    """The whole selection on every process, from each process's part (for training).

    Parts are concatenated in rank order, which is ascending pool order because shards are
    contiguous and in rank order. Costs O(selection size), not O(pool size).
    """
    local = torch.stack([local_idx.long(), local_labels.long()], dim=1)  # (n_local, 2): one gather
    parts = Comm(accelerator, traffic).gather_uneven(local)
    return Selection(parts[:, 0], parts[:, 1].to(local_labels.dtype))
