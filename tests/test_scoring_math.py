"""Pure math: entropy, selection, alpha schedules, the combined loss."""

import math

import pytest
import torch

from plabel.method.loss import combined_loss
from plabel.method.schedule import alpha_at, alpha_lee, alpha_linear, lr_at
from plabel.method.scores import entropy, margin, max_probability
from plabel.method.selection import Selection, num_to_select, select_lowest, select_pseudo_labels


def test_entropy_matches_formula_on_known_values():
    # Uniform over 4 classes: exactly 2 bits. One-hot-ish: close to 0.
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, -1e9, -1e9]])
    h = entropy(logits)
    assert h[0].item() == pytest.approx(2.0, abs=1e-6)
    assert 0.0 <= h[1].item() < 1e-6
    # p = (3/4, 1/4, 0, 0): H = -(0.75 log2 0.75 + 0.25 log2 0.25)
    expected = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert h[2].item() == pytest.approx(expected, abs=1e-6)


def test_entropy_is_the_articles_formula():
    torch.manual_seed(0)
    logits = torch.randn(64, 10) * 5
    p = logits.softmax(dim=1)
    article = -torch.sum(p * torch.log2(p + 1e-10), dim=1)  # calculate_entropy() in the seed article
    assert torch.allclose(entropy(logits, 1e-10), article, atol=1e-6)


def test_entropy_finite_on_extreme_logits_and_half_precision():
    logits = torch.tensor([[1e30, -1e30, 0.0], [-3e38, 3e38, 3e38]])
    assert torch.isfinite(entropy(logits)).all()
    assert entropy(logits)[1].item() == pytest.approx(1.0, abs=1e-5)  # two equal maxima -> 1 bit
    small = torch.tensor([[12.0, 0.0, 0.0]], dtype=torch.bfloat16)
    assert entropy(small).dtype == torch.float32
    assert entropy(small).item() > 0  # bf16 arithmetic would have rounded it to 0


def test_entropy_nan_logits_give_nan():
    assert torch.isnan(entropy(torch.tensor([[float("nan"), 0.0]]))).all()


def test_max_probability_and_margin():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    assert max_probability(logits).item() == pytest.approx(0.7, abs=1e-6)
    assert margin(logits).item() == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("n,k,expected", [(3900, 20, 780), (10, 33, 3), (7, 100, 7), (7, 10, 0), (1, 100, 1)])
def test_num_to_select(n, k, expected):
    assert num_to_select(n, k) == expected


def test_select_lowest_exact_k_and_ties_by_index():
    scores = torch.tensor([0.5, 0.1, 0.1, 0.3, 0.1, 0.0])
    assert select_lowest(scores, 3).tolist() == [1, 2, 5]  # 0.0 then the first two 0.1s
    assert select_lowest(scores, 4).tolist() == [1, 2, 4, 5]
    assert select_lowest(scores, 0).tolist() == []
    assert select_lowest(scores, 100).tolist() == [0, 1, 2, 3, 4, 5]


def test_select_lowest_never_picks_nonfinite():
    scores = torch.tensor([float("nan"), 0.2, float("inf"), -float("inf"), 0.1])
    assert select_lowest(scores, 5).tolist() == [1, 4]


def test_select_lowest_matches_full_sort_on_random_ties():
    g = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 5, (1001,), generator=g).float()
    k = 333
    # Reference: sort by (score, index) with Python's tuple order.
    ref = sorted(range(1001), key=lambda i: (scores[i].item(), i))[:k]
    assert select_lowest(scores, k).tolist() == sorted(ref)


def test_global_selection_labels_are_argmax():
    scores = torch.tensor([0.9, 0.1, 0.5, 0.2])
    preds = torch.tensor([3, 1, 2, 0])
    sel = select_pseudo_labels(scores, preds, 50, num_classes=4)
    assert sel.indices.tolist() == [1, 3]
    assert sel.labels.tolist() == [1, 0]


def test_class_balanced_takes_the_same_fraction_per_predicted_class():
    # Class 0 has 8 very confident samples, class 1 has 4 less confident ones.
    scores = torch.tensor([0.01] * 8 + [0.5, 0.6, 0.7, 0.8])
    preds = torch.tensor([0] * 8 + [1] * 4)
    global_sel = select_pseudo_labels(scores, preds, 50, num_classes=2)
    assert global_sel.labels.tolist() == [0] * 6  # globally, class 1 is crowded out
    balanced = select_pseudo_labels(scores, preds, 50, num_classes=2, class_balanced=True)
    assert balanced.indices.tolist() == [0, 1, 2, 3, 8, 9]
    assert balanced.labels.tolist() == [0, 0, 0, 0, 1, 1]


def test_accumulate_keeps_earlier_labels_and_fills_the_shortfall():
    scores = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    preds = torch.tensor([0] * 10)
    previous = Selection(torch.tensor([9]), torch.tensor([5]))  # picked earlier, label 5 kept
    sel = select_pseudo_labels(scores, preds, 30, num_classes=10, previous=previous)
    assert sel.indices.tolist() == [0, 1, 9]
    assert sel.labels.tolist() == [0, 0, 5]
    # Target already met: nothing new.
    sel2 = select_pseudo_labels(scores, preds, 10, num_classes=10, previous=previous)
    assert sel2.indices.tolist() == [9]


def test_alpha_linear_ramp():
    values = [alpha_linear(e, 1.0, 4) for e in range(6)]
    assert values == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert alpha_at(0, "linear", 3.0, 5) == 0.0  # the article: alpha = 0 in the first epoch


def test_alpha_lee():
    assert [alpha_lee(e, 3.0, 2, 6) for e in (0, 1, 2, 4, 6, 9)] == [0.0, 0.0, 0.0, 1.5, 3.0, 3.0]
    assert alpha_at(4, "lee", 3.0, t1=2, t2=6) == 1.5
    assert alpha_at(0, "constant", 0.7) == 0.7
    with pytest.raises(ValueError):
        alpha_at(0, "bogus", 1.0)


def test_lr_cosine_and_constant():
    assert lr_at(0, 100, 0.1, "cosine") == pytest.approx(0.1)
    assert lr_at(50, 100, 0.1, "cosine") == pytest.approx(0.05)
    assert lr_at(99, 100, 0.1, "cosine") < 0.001
    assert lr_at(77, 100, 0.1, "constant") == 0.1


def test_combined_loss_terms_are_separate_means():
    torch.manual_seed(0)
    ll, yl = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    lp, yp = torch.randn(10, 3), torch.randint(0, 3, (10,))
    total, a, b = combined_loss(ll, yl, lp, yp, alpha=0.3)
    ce = torch.nn.functional.cross_entropy
    assert a.item() == pytest.approx(ce(ll, yl).item(), abs=1e-6)
    assert b.item() == pytest.approx(ce(lp, yp).item(), abs=1e-6)
    assert total.item() == pytest.approx(a.item() + 0.3 * b.item(), abs=1e-6)
    total0, _, b0 = combined_loss(ll, yl, None, None, alpha=1.0)
    assert b0.item() == 0.0 and total0.item() == pytest.approx(a.item(), abs=1e-6)


def test_random_scores_depend_only_on_index_seed_and_salt():
    from plabel.method.scores import random_scores

    full = random_scores(torch.arange(10_000), seed=3, salt=1)
    assert full.min() >= 0 and full.max() < 1
    assert abs(full.mean().item() - 0.5) < 0.02  # roughly uniform
    assert torch.equal(random_scores(torch.arange(5_000, 10_000), 3, 1), full[5_000:])  # shard-independent
    assert not torch.equal(random_scores(torch.arange(10_000), 3, 2), full)  # another round, other picks
    assert not torch.equal(random_scores(torch.arange(10_000), 4, 1), full)


def test_ranking_scores_order_and_nonfinite():
    from plabel.method.scores import ranking_scores

    cols = {
        "entropy": torch.tensor([0.5, 0.1, float("nan")]),
        "max_probability": torch.tensor([0.6, 0.9, 0.99]),
        "margin": torch.tensor([0.2, 0.8, 0.9]),
    }
    idx = torch.arange(3)
    assert select_lowest(ranking_scores(cols, idx, "entropy", 0, 1), 1).tolist() == [1]
    assert select_lowest(ranking_scores(cols, idx, "max_probability", 0, 1), 3).tolist() == [0, 1]
    assert select_lowest(ranking_scores(cols, idx, "margin", 0, 1), 1).tolist() == [1]
    assert select_lowest(ranking_scores(cols, idx, "random", 0, 1), 3).tolist() == [0, 1]


def test_repeated_draws_from_the_whole_base_every_epoch():
    from torch.utils.data import TensorDataset

    from plabel.data.splits import Repeated

    base = TensorDataset(torch.arange(100))  # like index-sorted data: the first items are one class
    small = Repeated(base, 30, seed=0)
    drawn = [int(small[i][0]) for i in range(30)]
    assert len(set(drawn)) == 30 and max(drawn) > 50  # a random subset, not items 0..29
    small.set_epoch(1)
    assert sorted(int(small[i][0]) for i in range(30)) != sorted(drawn)  # a fresh subset next epoch
    large = Repeated(base, 250, seed=0)
    counts = torch.bincount(torch.tensor([int(large[i][0]) for i in range(250)]), minlength=100)
    assert int(counts.min()) == 2 and int(counts.max()) == 3  # cycled evenly
