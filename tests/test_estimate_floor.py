"""The estimate study's calibrators (plabel.experiments.field.estimate_floor): pure math."""

import torch

from plabel.experiments.field.estimate_floor import _quantile, fit_platt


def test_quantiles_are_ranks_within_the_set_whatever_its_scale():
    entropy = torch.tensor([0.5, 0.001, 2.0, 0.01])
    assert torch.allclose(_quantile(entropy), torch.tensor([0.625, 0.125, 0.875, 0.375]))
    assert torch.equal(_quantile(entropy), _quantile(entropy / 1000))  # a surer model, the same ranks


def test_platt_follows_a_known_logistic_and_keeps_the_share_right():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20_000, generator=g)
    truth = torch.sigmoid(2.0 - 4.0 * x)
    right = torch.rand(20_000, generator=g) < truth
    a, b = fit_platt(x, right)
    fitted = torch.sigmoid(a + b * x)
    # The small ridge term (there for 20-image fits that separate perfectly) flattens it a little.
    assert b < 0 and float((fitted - truth).abs().mean()) < 0.04
    assert abs(float(fitted.mean() - right.float().mean())) < 0.01
