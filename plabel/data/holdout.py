"""Labeled images held out of training: the validation set of ``data.val_per_class``, and the
stratified draw every split uses."""

from __future__ import annotations

import torch

from plabel.config import ConfigError


def stratified_take(labels: torch.Tensor, counts: dict[int, int], generator: torch.Generator) -> torch.Tensor:
    taken = []
    for c, n in counts.items():
        members = torch.nonzero(labels == c).flatten()
        perm = members[torch.randperm(members.numel(), generator=generator)]
        taken.append(perm[:n])
    return torch.sort(torch.cat(taken)).values if taken else torch.empty(0, dtype=torch.long)


AUTO_VAL_SHARE, AUTO_VAL_MIN_PER_CLASS = 0.2, 5


def hold_out_validation(
    labels: torch.Tensor, labeled: torch.Tensor, num_classes: int, per_class: int | None, seed: int, scope: str = "rounds",
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(training indices, validation indices, the line that says so) from the labeled ``labeled``.

    ``per_class`` None is auto: a fifth of each class (rounded, at least one) when every class has
    at least 5 labeled images, else none. Drawn with its own seeded generator, so the labeled/pool
    split is the same with or without validation."""
    counts = torch.bincount(labels[labeled], minlength=num_classes)
    smallest = int(counts.min()) if num_classes else 0
    if per_class is None:
        quota = {c: max(1, round(AUTO_VAL_SHARE * int(counts[c]))) for c in range(num_classes)} if smallest >= AUTO_VAL_MIN_PER_CLASS else {}
    else:
        if per_class and per_class >= smallest:
            raise ConfigError(f"data.val_per_class: {per_class} would leave no labeled image to train on in a class "
                              f"of {smallest}; lower it (0 = no validation)")
        quota = {c: per_class for c in range(num_classes)} if per_class else {}
    if not quota:
        why = (f"the smallest class has {smallest} labeled images, too few to spare" if per_class is None
               else "data.val_per_class 0")
        return labeled, labeled[:0], (f"validation: none ({why}): no validation accuracy, best round or precision estimate; "
                                      "data.val_per_class N holds N per class out")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + 17)
    mask = torch.full_like(labels, -1)
    mask[labeled] = labels[labeled]
    val = torch.sort(stratified_take(mask, quota, generator)).values
    keep = torch.ones(labels.numel(), dtype=torch.bool)
    keep[val] = False
    train = labeled[keep[labeled]]
    auto = " (auto: a fifth of each class; data.val_per_class sets it, 0 trains on all)" if per_class is None else ""
    if scope == "round0":  # data.val_scope: they join training once round 0 has chosen with them
        return train, val, (f"validation: {val.numel()} labeled images held out of round 0's first training ({train.numel()} "
                            f"left) to choose its augmentation and calibrate the precision estimate, then trained on: round 0 "
                            f"is trained again on all {labeled.numel()}{auto}; no later round is validated "
                            "(--data.val_scope rounds keeps them out to validate every round)")
    return train, val, (f"validation: {val.numel()} labeled images held out of training ({train.numel()} left) to validate "
                        f"rounds and calibrate the precision estimate{auto}")
