"""Defaults that changed between releases, so that a run says which of them it uses.

A changed default changes what every existing command line that does not set the option means.
The run prints the changed defaults it takes (beside the resolved config), and a run folder
written under the old defaults, refused because its configuration differs, names the release
that changed them and the config file that restores them.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Optional

from plabel.config.load import flatten

# plabel 0.3 took what fitted the quick start's budget and raised its accuracy (issue 19,
# docs/results.md#the-shipped-default-since-03): the student trains on strongly augmented
# pseudo-labeled images (the teacher still scores clean ones), the pseudo term has its full weight
# from a round's first step (the model is already trained: a ramp from 0 wastes the round's first
# epochs), and rounds keep all but the least certain part of the pool.
CHANGED_IN_0_3: dict[str, tuple[Any, Any]] = {  # dotted name -> (0.2's default, 0.3's)
    "pseudo.augment": ("same", "strong"),
    "pseudo.alpha_schedule": ("linear", "constant"),
    "pseudo.top_k_percent": ([20.0, 40.0, 60.0, 80.0], [60.0, 80.0, 90.0, 95.0]),
}
OLD_DEFAULTS_FILE = "configs/default-0.2.yaml"

# plabel 0.3.1 chose on image sets unlike MNIST (the field set, issue 32; docs/results.md): a fifth
# of each class's labeled images is held out to validate rounds, keep the best round's weights and
# calibrate the precision estimate; those images choose round 0's augmentation (light moves cost
# the letters 10-17 points of round 0, none costs MNIST 7); round 0 trains 3 x train.epochs. Loader workers became automatic too (on a GPU only; results do
# not depend on them), which no note needs.
CHANGED_IN_0_3_1: dict[str, tuple[Any, Any]] = {  # dotted name -> (0.3.0's default, 0.3.1's)
    "data.val_per_class": (0, None),
    "data.augment": ("light", "auto"),
    "train.round0_epochs": (8, None),  # 0.3.0: train.epochs (8 in the default experiment); 0.3.1: 3 x train.epochs
}
OLD_DEFAULTS_FILE_0_3 = "configs/default-0.3.0.yaml"

# plabel 0.3.2 trains on the validation images once round 0 has chosen with them (data.val_scope
# round0): on the field set's fresh seeds the default with nothing held out ended 4.4-45.9 points
# higher by the last round on every set and seed measured (docs/results.md, "What the validation
# fifth costs"); the per-round validation and best-round weights are data.val_scope rounds.
CHANGED_IN_0_3_2: dict[str, tuple[Any, Any]] = {  # dotted name -> (0.3.1's default, 0.3.2's)
    "data.val_scope": ("rounds", "round0"),
}
OLD_DEFAULTS_FILE_0_3_1 = "configs/default-0.3.1.yaml"

# plabel 0.3.3: data.augment auto keeps crop + flip (colour; small affine moves on grey) unless another
# level's validation loss is lower by 0.5 nats. The lowest loss (0.3.1-0.3.2) kept another level on signs at
# four seeds of ten, where crop + flip was best at all ten (docs/results.md, "0.3.3: crop + flip unless the
# loss says clearly otherwise").
CHANGED_IN_0_3_3: dict[str, tuple[Any, Any]] = {  # dotted name -> (0.3.2's default, 0.3.3's)
    "data.augment_margin": (0.0, 0.5),
}
OLD_DEFAULTS_FILE_0_3_2 = "configs/default-0.3.2.yaml"
HISTORY = (("0.3", "0.2", CHANGED_IN_0_3, OLD_DEFAULTS_FILE), ("0.3.1", "0.3.0", CHANGED_IN_0_3_1, OLD_DEFAULTS_FILE_0_3),
           ("0.3.2", "0.3.1", CHANGED_IN_0_3_2, OLD_DEFAULTS_FILE_0_3_1), ("0.3.3", "0.3.2", CHANGED_IN_0_3_3, OLD_DEFAULTS_FILE_0_3_2))

# Options added after a run folder may have been written, and what such a folder did: a config.yaml
# without the key compares as this value (a 0.3.1 folder resumes under configs/default-0.3.1.yaml).
ABSENT_MEANS: dict[str, Any] = {"data.val_scope": "rounds", "data.augment_margin": 0.0}


def with_absent_keys(saved: dict[str, Any]) -> dict[str, Any]:
    """``saved`` (a resolved config, nested) with the options it predates at what its run did."""
    flat = flatten(saved)
    out = {section: dict(values) if isinstance(values, dict) else values for section, values in saved.items()}
    for name, value in ABSENT_MEANS.items():
        section, _, key = name.partition(".")
        if name not in flat and isinstance(out.get(section), dict):
            out[section][key] = value
    return out


def _matters(name: str, flat: dict[str, Any], held_out: Optional[bool]) -> bool:
    """Whether a changed default changes anything in this run: data.val_scope does not when no
    labeled image is held out (data.val_per_class 0, or auto's fifth rounding to none of a class of
    2-4 images), data.augment_margin neither, nor without auto. ``held_out``: whether the split
    holds any image out (None: not known yet, read data.val_per_class)."""
    if name == "data.augment_margin" and flat.get("data.augment") != "auto":
        return False
    none_held = flat.get("data.val_per_class") == 0 if held_out is None else not held_out
    return not (name in ("data.val_scope", "data.augment_margin") and none_held)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and [float(x) for x in a] == [float(x) for x in b]
    return a == b


# How a changed default reads where its plain value would mislead: 0.3.0's round 0 was as long as
# the other rounds (8 epochs in the default experiment), 0.3.1's is three times that.
SPELLED = {("train.round0_epochs", None): "3 x train.epochs", ("train.round0_epochs", 8): "train.epochs"}


def _spell(value: Any, name: str = "") -> str:
    if not isinstance(value, (list, dict)) and (name, value) in SPELLED:
        return SPELLED[(name, value)]
    if isinstance(value, list):
        return "/".join(f"{float(v):g}" for v in value)
    return "auto" if value is None else str(value)


def changed_defaults_note(resolved: dict[str, Any], given: Collection[str] = (), held_out: Optional[bool] = None) -> str:
    """The printed line naming the 0.3 defaults this run takes ('' when it sets all of them otherwise).
    ``given``: the dotted names the config file or command line set; a value chosen there is not
    a default the run relies on, even when it equals 0.3's (configs/mnist100_best.yaml's).
    ``held_out``: whether the split held validation images out (see _matters)."""
    flat = flatten(resolved)
    lines = []
    for release, before, changed, restore in HISTORY:
        taken = [f"{name} {_spell(new, name)} ({before}: {_spell(old, name)})"
                 for name, (old, new) in changed.items() if name not in given and _same(flat.get(name), new) and _matters(name, flat, held_out)]
        if taken:
            lines.append(f"defaults changed in plabel {release} that this run uses: {'; '.join(taken)}; {restore} restores {before}'s")
    return "\n".join(lines)


def changed_defaults_hint(names: list[str], saved: dict[str, Any]) -> str:
    """Appended to "written by a different configuration" when the saved run had a 0.2 default
    that a later release changed: the user most likely typed the same command under a newer plabel."""
    flat = flatten(saved)
    parts = []  # every release whose change the saved run predates, oldest first
    for release, before, changed, restore in HISTORY:
        hit = [n for n in names if n in changed and _same(flat.get(n), changed[n][0])]
        if hit:
            parts.append(f"plabel {release} changed the default of {', '.join(hit)}; {restore} holds {before}'s defaults")
    return f" ({'; '.join(parts)})" if parts else ""


def unaugmented_data_note(resolved: dict[str, Any]) -> str:
    """A warning when the labeled batch is not augmented but the pseudo-labeled one is: users set
    data.augment none when flips or crops change a class (digits in colour pictures), and 0.3's
    default pseudo.augment strong would still flip and crop the pool's images."""
    flat = flatten(resolved)
    if flat.get("data.augment") != "none" or flat.get("pseudo.augment") == "same":
        return ""
    return (f"warning: data.augment is none but pseudo.augment {flat.get('pseudo.augment')} augments the pseudo-labeled "
            "batch (colour images: crops and flips); set pseudo.augment same if that changes what your classes are")

