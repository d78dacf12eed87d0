"""``data.augment auto``'s candidates, its rule, and the pipelines each candidate trains with (pure)."""

import types

import pytest
import torch
from torchvision.transforms import v2

from plabel.config import load_config
from plabel.data.transforms import InputSpec, source_transform
from plabel.trainer.augment_choice import Trial, candidates, choice_line, pick, pipelines


def trials(**loss: float) -> list[Trial]:
    return [Trial(level, 0.5, value, {}, {}) for level, value in loss.items()]


def test_candidates_grey_two_colour_three_preferred_first():
    assert candidates(1) == ("light", "none")
    assert candidates(3) == ("none", "light", "affine")


def test_margin_0_is_the_lowest_validation_loss_and_an_exact_tie_stays_with_light():
    assert pick(trials(none=1.0, light=1.0, affine=1.0)).level == "light"
    assert pick(trials(none=1.129, light=0.838, affine=0.934)).level == "light"  # signs, seed 1: accuracy tied
    assert pick(trials(none=3.5, light=5.3, affine=3.4)).level == "affine"
    assert pick(trials(light=0.005, none=0.466)).level == "light"


@pytest.mark.parametrize("losses, kept", [
    # the fresh seeds' trials (results/field/v032/logs): where the margin keeps another level than the lowest loss
    ({"none": 1.607, "light": 1.829, "affine": 2.058}, "light"),  # signs, seed 6: none led by 0.22 nats
    ({"none": 1.636, "light": 3.442, "affine": 1.423}, "none"),  # colour digits, seed 6: affine led none by 0.21
    # ... and where it keeps the same
    ({"none": 1.596, "light": 2.681, "affine": 2.645}, "none"),  # signs, seed 5: none by 1.09
    ({"none": 3.720, "light": 4.428, "affine": 5.073}, "none"),  # textures, seed 7: none by 0.71
    ({"none": 4.165, "light": 4.073, "affine": 5.173}, "light"),  # shapes, seed 6
    ({"light": 0.3, "none": 0.2}, "light"),  # grey: none must lead light by the margin too
])
def test_light_stays_unless_another_loss_is_lower_by_the_margin(losses, kept):
    assert pick(trials(**losses), 0.5).level == kept
    assert pick(trials(**losses), 0.0).level == min(losses, key=losses.get)  # 0.3.2's rule


def test_the_margin_is_measured_against_the_level_kept_so_far():
    # none replaces light (lower by 2); affine must then beat none, not light, by the margin
    assert pick(trials(none=1.0, light=3.0, affine=0.6), 0.5).level == "none"
    assert pick(trials(none=1.0, light=3.0, affine=0.4), 0.5).level == "affine"
    assert pick(trials(none=2.6, light=3.0, affine=2.4), 0.5).level == "affine"  # none fails, affine clears light


def test_choice_line_names_every_level_its_loss_and_accuracy_and_the_rule():
    t = [Trial("none", 0.75, 1.129, {}, {}), Trial("light", 0.75, 0.838, {}, {}), Trial("affine", 0.7, 0.934, {}, {})]
    line = choice_line(pick(t), t, 20)
    assert line == ("data.augment auto: light (round 0 trained with each; validation loss (accuracy) none 1.129 (75.0%), "
                    "light 0.838 (75.0%), affine 0.934 (70.0%) on 20 images; the lowest loss kept)")
    assert choice_line(pick(t, 0.5), t, 20, 0.5).endswith(
        "on 20 images; light kept unless another loss is lower by 0.5 (data.augment_margin))")


def _kinds(transform: v2.Compose) -> list[type]:
    return [type(step) for step in transform.transforms]


@pytest.mark.parametrize("pseudo_augment", ["strong", "same"])
def test_colour_pipelines_move_the_pseudo_batch_as_their_level_does(pseudo_augment):
    cfg = load_config(None, {"data.augment": "auto", "pseudo.augment": pseudo_augment})
    source = types.SimpleNamespace(channels=3, uniform_size=True, image_size=(32, 32), labels=torch.zeros(4, dtype=torch.long))
    spec = InputSpec(3, (32, 32), (0.5,) * 3, (0.5,) * 3)
    eval_tf = source_transform(source, spec, "none", train=False)
    pipes = pipelines(cfg, source, spec, torch.arange(4), eval_tf)
    assert list(pipes.labeled) == ["none", "light", "affine"] and pipes.preferred == "none"
    assert pipes.labeled["none"].transform is eval_tf  # "none" trains on the clean view
    affine, light, none = (_kinds(pipes.pseudo_tf[level]) for level in ("affine", "light", "none"))
    assert v2.RandomAffine in affine and v2.RandomHorizontalFlip not in affine  # glyphs are not mirrored
    assert v2.RandomCrop in light and v2.RandomHorizontalFlip in light  # the CIFAR recipe
    if pseudo_augment == "same":
        assert pipes.pseudo_tf["none"] is eval_tf
    else:  # after "none" the stronger pseudo batch moves as affine does, never mirrored
        assert none == affine


def test_a_fixed_level_has_one_pipeline():
    cfg = load_config(None, {"data.augment": "light"})
    source = types.SimpleNamespace(channels=1, uniform_size=True, image_size=(28, 28), labels=torch.zeros(4, dtype=torch.long))
    spec = InputSpec(1, (28, 28), (0.5,), (0.5,))
    pipes = pipelines(cfg, source, spec, torch.arange(4), source_transform(source, spec, "none", train=False))
    assert list(pipes.labeled) == ["light"] and pipes.preferred == "light"
