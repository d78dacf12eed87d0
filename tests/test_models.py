"""The model zoo: shapes, and what tells the two small CNNs apart."""

import pytest
import torch
from torch import nn

from plabel.config import ConfigError, config_from_dict
from plabel.models import build_model


@pytest.mark.parametrize("name, channels, size", [("small_cnn", 1, 28), ("small_cnn_nobn", 1, 28), ("small_cnn", 3, 32)])
def test_small_cnns_map_images_to_class_logits(name, channels, size):
    model = build_model(name, channels, 10).eval()
    assert model(torch.zeros(3, channels, size, size)).shape == (3, 10)


def test_nobn_variant_has_no_batch_norm_and_otherwise_the_same_layers():
    with_bn, without = build_model("small_cnn", 1, 10), build_model("small_cnn_nobn", 1, 10)
    assert any(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in without.modules())
    convs = lambda m: [tuple(c.weight.shape) for c in m.modules() if isinstance(c, (nn.Conv2d, nn.Linear))]  # noqa: E731
    assert convs(with_bn) == convs(without)
    # Without running statistics, eval output does not depend on what the model saw in training
    # mode; with BatchNorm it does (the running mean/var move).
    x = torch.randn(8, 1, 28, 28) * 3
    for model, moves in ((with_bn, True), (without, False)):
        model.eval()
        before = model(x)
        model.train()
        model(torch.randn(16, 1, 28, 28) + 2)
        model.eval()
        assert (not torch.equal(before, model(x))) == moves


def test_model_name_is_validated():
    assert config_from_dict({"model": {"name": "small_cnn_nobn"}}).model.name == "small_cnn_nobn"
    with pytest.raises(ConfigError, match="model.name"):
        config_from_dict({"model": {"name": "small_cnn_bn"}})
