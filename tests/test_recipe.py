"""The recipe's ingredients (issue 19): student noise levels, dropout, label smoothing, mixup over
the global batch, epochs over the data, multi-view scores. Pure math first, then the same steps
and scores on 1-3 gloo processes compared with one, then whole runs killed and resumed."""

import json
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT, Float64, launch_command, run_processes, run_train, subprocess_env, tiny
from safetensors.torch import load_file

from plabel.config import ConfigError, PseudoConfig, RunConfig, TrainConfig
from plabel.data.files import open_embedded
from plabel.data.splits import IndexedImages, SoftTargets
from plabel.data.transforms import build_transform, plain_spec
from plabel.method.loss import combined_loss, mixed_loss
from plabel.method.scores import ranking_scores
from plabel.method.selection import sharpened
from plabel.models.zoo import build_model
from plabel.trainer.loop import RoundPosition, TrainPlan, steps_per_epoch, train_round
from plabel.trainer.round_selection import SelectionRequest, select_for_round
from plabel.trainer.scoring_pass import ScorePlan, score_dataset, shifted

# ---------------------------------------------------------------------------------------------
# Pure math


def test_mixed_loss_with_lambda_one_is_the_combined_loss():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(12, 10, generator=g), torch.randint(0, 10, (12,), generator=g)
    is_pseudo = torch.arange(12) >= 5
    for smoothing in (0.0, 0.1):
        want = combined_loss(logits[:5], targets[:5], logits[5:], targets[5:], 0.7, label_smoothing=smoothing)
        got = mixed_loss(logits, targets, targets.flip(0), is_pseudo, is_pseudo.flip(0), 1.0, 0.7, 5, 7, smoothing)
        for a, b in zip(got, want):
            assert float(a) == pytest.approx(float(b), rel=1e-6)


def test_mixed_loss_counts_the_partner_share_in_the_partners_term():
    logits = torch.zeros(2, 3)  # uniform: every cross-entropy is log 3
    targets, partners = torch.tensor([0, 1]), torch.tensor([1, 0])
    is_pseudo, partner_pseudo = torch.tensor([False, True]), torch.tensor([True, False])
    total, labeled, pseudo = mixed_loss(logits, targets, partners, is_pseudo, partner_pseudo, 0.25, 2.0, 1, 1)
    log3 = float(np.log(3))
    # labeled term: row 0's own share (0.25) + row 1's partner share (0.75); the same for pseudo.
    assert float(labeled) == pytest.approx(log3) and float(pseudo) == pytest.approx(log3)
    assert float(total) == pytest.approx(3 * log3)


def test_label_smoothing_moves_the_loss_of_a_confident_right_answer_up():
    logits, y = torch.tensor([[10.0, 0.0, 0.0]]), torch.tensor([0])
    plain = combined_loss(logits, y, None, None, 0.0)[0]
    smooth = combined_loss(logits, y, None, None, 0.0, label_smoothing=0.1)[0]
    assert float(smooth) == pytest.approx(float(F.cross_entropy(logits, y, label_smoothing=0.1)))
    assert float(smooth) > float(plain)


def test_sharpening_keeps_the_argmax_and_moves_toward_it():
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(50, 10, generator=g) * 2, dim=1)
    assert torch.allclose(sharpened(p, 1.0), p, atol=1e-6)
    sharp, flat = sharpened(p, 0.5), sharpened(p, 2.0)
    for q in (sharp, flat):
        assert torch.allclose(q.sum(dim=1), torch.ones(50)) and torch.equal(q.argmax(dim=1), p.argmax(dim=1))
    assert bool((sharp.max(dim=1).values > p.max(dim=1).values).all())
    assert bool((flat.max(dim=1).values < p.max(dim=1).values).all())
    # p^(1/T) / sum, and a tiny T is the argmax (no 0/0 where every p^(1/T) underflows)
    assert torch.allclose(sharp, p**2 / (p**2).sum(dim=1, keepdim=True), atol=1e-6)
    assert torch.equal(sharpened(p, 1e-4), F.one_hot(p.argmax(dim=1), 10).float())


def test_soft_targets_that_are_one_hot_give_the_hard_loss():
    g = torch.Generator().manual_seed(2)
    logits, y = torch.randn(9, 10, generator=g), torch.randint(0, 10, (9,), generator=g)
    for smoothing in (0.0, 0.1):
        hard = combined_loss(logits[:4], y[:4], logits[4:], y[4:], 0.5, label_smoothing=smoothing)
        soft = combined_loss(logits[:4], y[:4], logits[4:], F.one_hot(y[4:], 10).float(), 0.5, label_smoothing=smoothing)
        for a, b in zip(hard, soft):
            assert float(a) == pytest.approx(float(b), rel=1e-6)
    # a soft target is the probability-weighted hard losses
    t = torch.softmax(torch.randn(5, 10, generator=g), dim=1)
    want = (t * -torch.log_softmax(logits[4:], dim=1)).sum(dim=1).mean()
    assert float(combined_loss(logits[:4], y[:4], logits[4:], t, 1.0)[2]) == pytest.approx(float(want), rel=1e-6)


def test_data_budget_passes_once_over_the_pseudo_labels():
    cfg = TrainConfig(steps_per_epoch=40, pseudo_batch_size=64, budget="data")
    assert steps_per_epoch(cfg, 0) == 40  # round 0: the step count is the floor
    assert steps_per_epoch(cfg, 980) == 40  # ceil(980 / 64) = 16 < 40
    assert steps_per_epoch(cfg, 4900) == 77  # ceil(4900 / 64)
    assert steps_per_epoch(TrainConfig(steps_per_epoch=40, pseudo_batch_size=64), 4900) == 40  # budget: steps


def test_shifts_move_the_image_and_repeat_the_border():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    down = shifted(x, 1, 0)
    assert torch.equal(down[0, 0, 1:], x[0, 0, :3]) and torch.equal(down[0, 0, 0], x[0, 0, 0])
    left = shifted(x, 0, -1)
    assert torch.equal(left[0, 0, :, :3], x[0, 0, :, 1:]) and torch.equal(left[0, 0, :, 3], x[0, 0, :, 3])
    assert torch.equal(shifted(x, 0, 0), x)


def test_disagreement_ranks_by_count_then_entropy():
    columns = {"disagreement": torch.tensor([1.0, 0.0, 0.0, 2.0]), "entropy": torch.tensor([0.0, 3.2, 0.1, 0.0])}
    order = ranking_scores(columns, torch.arange(4), "disagreement", 0, 1).argsort()
    assert order.tolist() == [2, 1, 0, 3]


@pytest.mark.parametrize("level", ["elastic", "randaugment", "trivialaugment"])
@pytest.mark.parametrize("channels", [1, 3])
def test_new_augment_levels_change_the_image_and_keep_its_shape(level, channels):
    image = torch.randint(0, 256, (channels, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    clean = build_transform(channels, plain_spec(channels, (28, 28)), level, train=False, resize=False)(image)
    views = []
    for seed in range(4):
        torch.manual_seed(seed)
        views.append(build_transform(channels, plain_spec(channels, (28, 28)), level, train=True, resize=False)(image))
    assert all(v.shape == clean.shape and v.dtype == torch.float32 for v in views)
    assert any(not torch.equal(v, clean) for v in views)


def test_model_dropout_option_reaches_each_kind_of_network():
    small = build_model("small_cnn", 1, 10, dropout=0.5)
    assert [m.p for m in small.modules() if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5]
    assert [m.p for m in build_model("small_cnn", 1, 10).modules() if isinstance(m, torch.nn.Dropout)] == [0.3, 0.3]
    timm_net = build_model("timm/test_resnet", 3, 10, dropout=0.4)
    assert timm_net.drop_rate == 0.4
    resnet = build_model("resnet18", 3, 10, dropout=0.9)
    assert set(resnet.state_dict()) == set(build_model("resnet18", 3, 10).state_dict())  # no new weights
    x = torch.randn(4, 3, 32, 32)
    resnet.eval()
    assert torch.equal(resnet(x), resnet(x))
    resnet.train()
    torch.manual_seed(0)
    a = resnet(x)
    torch.manual_seed(1)
    assert not torch.equal(a, resnet(x))  # the dropout before fc is on in training
    with pytest.raises(ConfigError, match="model.dropout: torchvision's resnet18 has no dropout"):
        build_model("torchvision/resnet18", 3, 10, dropout=0.2)


@pytest.mark.parametrize(
    "section,changes,message",
    [
        ("pseudo", {"score": "disagreement"}, "pseudo.score: disagreement needs pseudo.score_views >= 2"),
        ("pseudo", {"score_views": 0}, "pseudo.score_views: must be >= 1"),
        ("pseudo", {"score_views": 14}, "pseudo.score_views: shift has 13 views"),
        ("train", {"mixup_alpha": -1.0}, "train.mixup_alpha: must be >= 0"),
        ("pseudo", {"soft_temperature": 0.0}, "pseudo.soft_temperature: must be > 0"),
        ("pseudo", {"soft_labels": True, "accumulate": True}, "pseudo.soft_labels: not with pseudo.accumulate"),
        ("train", {"label_smoothing": 1.0}, r"train.label_smoothing: must be in \[0, 1\)"),
        ("model", {"dropout": 1.0}, r"model.dropout: must be in \[0, 1\)"),
    ],
)
def test_bad_recipe_options_are_one_line_naming_the_field(section, changes, message):
    cfg = RunConfig()
    for key, value in changes.items():
        setattr(getattr(cfg, section), key, value)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


# ---------------------------------------------------------------------------------------------
# 1-3 processes against one


def _digits(n: int, train: bool, level: str = "light") -> IndexedImages:
    source = open_embedded()
    return IndexedImages(source, torch.arange(n), build_transform(1, plain_spec(1, (28, 28)), level, train, resize=False))


def _mixup_steps(accelerator):
    """Two SGD steps with mixup, label smoothing and the data budget: losses and weights, per variant."""
    from plabel.trainer.setup import make_optimizer

    out = {}
    variants = (("mixed", "data", 7, 5), ("soft, mixed", "data", 7, 5), ("soft", "data", 6, 4), ("labeled only", "steps", 9, 5))
    for name, budget, labeled_batch, pseudo_batch in variants:
        torch.manual_seed(0)
        model = Float64(build_model("small_cnn", 1, 10, dropout=0.2))  # see helpers.Float64
        cfg = RunConfig()
        cfg.train.optimizer = "sgd"
        train = TrainConfig(
            epochs=1, steps_per_epoch=2, batch_size=labeled_batch, pseudo_batch_size=pseudo_batch, optimizer="sgd",
            lr=0.05, mixup_alpha=0.0 if name == "soft" else 1.0, label_smoothing=0.1, budget=budget,
        )
        plan = TrainPlan(train, PseudoConfig(alpha_schedule="constant"), seed=5, log_every=1)
        model, optimizer = accelerator.prepare(model, make_optimizer(cfg, model))
        labeled = _digits(40, train=True)
        pool = _digits(11, train=True, level="randaugment")  # 11 pseudo-labels / 5 per step: 3 steps
        pseudo = IndexedImages(pool.source, pool.source_indices, pool.transform, labels=torch.arange(11) % 10)
        if name.startswith("soft"):  # soft pseudo-labels: a distribution per pick
            pseudo = SoftTargets(pseudo, sharpened(torch.softmax(torch.randn(11, 10, generator=torch.Generator().manual_seed(4)), 1), 0.5))
        logs = []
        final = train_round(
            accelerator, model, optimizer, labeled, None if name == "labeled only" else pseudo, plan, RoundPosition(1),
            lambda m, step: logs.append(m),
        )
        weights = {k: v.detach().numpy().copy() for k, v in accelerator.unwrap_model(model).state_dict().items()}
        out[name] = (logs, weights, final.global_step)
    return out


@pytest.fixture(scope="module")
def one_process_mixup():
    (reference,) = run_processes(_mixup_steps, 1)
    return reference


@pytest.mark.parametrize("world", [pytest.param(2, marks=pytest.mark.slow), 3])  # CI time: 3 by default
def test_mixup_steps_have_the_loss_and_update_of_one_process(world, one_process_mixup):
    got = run_processes(_mixup_steps, world)[0]
    assert one_process_mixup["mixed"][2] == 3  # the data budget: ceil(11 / 5) steps, not 2
    soft, hard = one_process_mixup["soft, mixed"][0], one_process_mixup["mixed"][0]
    assert soft[0]["train/loss_pseudo"] != hard[0]["train/loss_pseudo"]  # the soft targets reach the loss
    for name, (reference_logs, reference_weights, steps) in one_process_mixup.items():
        logs, weights, got_steps = got[name]
        assert got_steps == steps
        for a, b in zip(logs, reference_logs):
            for key in ("train/loss", "train/loss_labeled", "train/loss_pseudo"):
                assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-14), (name, key)
        for key, tensor in reference_weights.items():
            # float64: summation order (N partial sums against one) is all that differs, ~1e-13 here;
            # in float32 it was ~1e-3 on the first convolutions and CPU-dependent (helpers.Float64).
            assert tensor.dtype == np.float64 or not np.issubdtype(tensor.dtype, np.floating), key
            assert np.allclose(weights[key], tensor, rtol=1e-9, atol=1e-12), (name, key)


VIEWS = [("shift", 5, "entropy"), ("dropout", 4, "disagreement"), ("shift", 3, "disagreement")]


def _view_scores(accelerator):
    torch.manual_seed(0)
    model = accelerator.prepare(build_model("small_cnn", 1, 10))
    pool = _digits(211, train=False)
    out = {}
    for noise, views, score in VIEWS:
        for batch in (7, 64):
            plan = ScorePlan(batch_size=batch, views=views, noise=noise, view_seed=3)
            scores = score_dataset(accelerator, model, pool, plan)
            request = SelectionRequest(round_index=1, percent=30, num_classes=10, class_balanced=True, score=score, seed=0)
            picked = select_for_round(accelerator, model, pool, pool.labels, request, plan)
            out[(noise, views, batch)] = ({k: v.numpy() for k, v in scores.items()}, picked.selection.indices.numpy())
    plain = score_dataset(accelerator, model, pool, ScorePlan(batch_size=7))
    out["plain"] = ({k: v.numpy() for k, v in plain.items()}, None)
    for batch in (7, 64):  # soft pseudo-labels: the picks' (sharpened) mean probabilities, in pool order
        plan = ScorePlan(batch_size=batch, views=3, noise="shift", probabilities=10)
        request = SelectionRequest(round_index=1, percent=30, num_classes=10, class_balanced=True, score="entropy", seed=0,
                                   soft_temperature=0.5)
        picked = select_for_round(accelerator, model, pool, pool.labels, request, plan).selection
        out[("soft", batch)] = ({"targets": picked.targets.numpy(), "labels": picked.labels.numpy()}, picked.indices.numpy())
    return out


@pytest.fixture(scope="module")
def one_process_views():
    (reference,) = run_processes(_view_scores, 1)
    return reference


def test_views_average_the_teacher_and_count_disagreement(one_process_views):
    plain = one_process_views["plain"][0]
    for (noise, views, batch), (scores, _) in [(k, v) for k, v in one_process_views.items() if len(k) == 3]:
        assert scores["disagreement"].min() >= 0 and scores["disagreement"].max() <= views
        assert not np.array_equal(scores["entropy"], plain["entropy"])  # the views change the teacher
    dropout_scores = one_process_views[("dropout", 4, 7)][0]
    assert dropout_scores["disagreement"].max() > 0  # MC dropout's passes differ (small_cnn has dropout)


@pytest.mark.parametrize("world", [pytest.param(2, marks=pytest.mark.slow), 3])  # CI time: 3 by default
def test_view_scores_and_selection_are_byte_identical_on_any_process_count(world, one_process_views):
    for rank in run_processes(_view_scores, world, timeout=300):
        for key, (reference, ref_idx) in one_process_views.items():
            scores, idx = rank[key]
            for name, column in reference.items():
                assert scores[name].tobytes() == column.tobytes(), (key, name)
            if ref_idx is not None:
                assert idx.tobytes() == ref_idx.tobytes(), key


def test_soft_pseudo_labels_are_the_sharpened_mean_probabilities_of_the_picks(one_process_views):
    soft, indices = one_process_views[("soft", 7)]
    hard_indices = one_process_views[("shift", 3, 7)][1]
    mean = one_process_views[("shift", 3, 7)][0]
    assert np.array_equal(indices, hard_indices)  # the same picks as hard labels
    assert np.array_equal(soft["targets"].argmax(axis=1), soft["labels"])
    assert np.allclose(soft["targets"].sum(axis=1), 1.0, atol=1e-5)
    # sharpened at T = 0.5: more confident than the averaged views' top probability
    assert bool((soft["targets"].max(axis=1) >= mean["max_probability"][indices] - 1e-6).all())


def test_view_scores_do_not_depend_on_the_eval_batch_for_shifts(one_process_views):
    a, b = one_process_views[("shift", 5, 7)][0], one_process_views[("shift", 5, 64)][0]
    assert np.array_equal(a["prediction"], b["prediction"]) and np.array_equal(a["disagreement"], b["disagreement"])


# ---------------------------------------------------------------------------------------------
# Whole runs: every ingredient on, 2 processes, killed and resumed

RECIPE = tiny({
    "train.steps_per_epoch": 3, "pseudo.rounds": 2, "pseudo.top_k_percent": "[30, 100]", "tracking.log_every": 1,
    "train.mixup_alpha": 1.0, "train.label_smoothing": 0.1, "train.budget": "data", "model.dropout": 0.4,
    "data.augment": "strong", "pseudo.augment": "randaugment", "pseudo.reinit_model": "true",
    "pseudo.score_views": 3, "pseudo.score_noise": "dropout", "pseudo.score": "disagreement",
    "pseudo.soft_labels": "true", "pseudo.soft_temperature": 0.5,
    "checkpoint.every_steps": 5, "checkpoint.score_flush_batches": 1,  # a flush per scoring batch: a kill point
})


def _launch(out, fault=None, processes=2):
    env = subprocess_env(**({"PLABEL_FAULT": fault} if fault else {}))
    cmd = launch_command([str(ROOT / "train.py"), *RECIPE, "--output_dir", str(out)], processes)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def _outcome(out):
    summary = json.loads((out / "summary.json").read_text())
    return (
        load_file(str(out / "model.safetensors")), summary["rounds"],
        [(out / f"pseudo_labels_round{r:02d}.csv").read_text() for r in (1, 2)],
    )


@pytest.mark.slow
def test_recipe_run_killed_mid_round_resumes_to_the_same_result(tmp_path):
    reference = _launch(tmp_path / "whole")
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert "pool scoring: 3 views per image (the clean one and 2 MC dropout passes), 3x the cost" in reference.stdout
    want = _outcome(tmp_path / "whole")
    # The 100% round passes once over 200 pseudo-labels: ceil(200 / 8) = 25 steps per epoch.
    assert want[1][2]["pseudo_labeled"] == 200
    for fault in ("step:20@1:kill", "flush:1@0:kill"):
        out = tmp_path / fault.split(":")[0]
        killed = _launch(out, fault)
        assert killed.returncode != 0 and not (out / "summary.json").exists()
        resumed = _launch(out)
        assert resumed.returncode == 0 and "resumed from" in resumed.stdout, resumed.stderr[-3000:]
        weights, rounds, selections = _outcome(out)
        assert rounds == want[1] and selections == want[2]
        assert all(torch.equal(weights[k], want[0][k]) for k in want[0])


def test_recipe_config_runs_end_to_end_in_one_process(tmp_path):
    proc = run_train([*RECIPE, "--output_dir", str(tmp_path / "run")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    selected = [r["pseudo_labeled"] for r in summary["rounds"]]
    assert selected[0] == 0 and 0 < selected[1] < 200 and selected[2] == 200
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last_step = max(m["step"] for m in metrics if "round/index" in m and m["round/index"] == 2)
    # The data budget: round 0 = 2 epochs x 3 steps; round r = 2 epochs x max(3, ceil(selected / 8)).
    assert last_step == 6 + 2 * max(3, -(-selected[1] // 8)) + 2 * 25
    # Soft pseudo-labels: the checkpoint keeps the distributions the last round trained on.
    from plabel.trainer.checkpointer import SELECTION_FILE, list_checkpoints

    kept = load_file(str(list_checkpoints(tmp_path / "run")[0] / SELECTION_FILE))
    assert kept["targets"].shape == (200, 10) and torch.equal(kept["targets"].argmax(dim=1), kept["labels"])
    assert torch.allclose(kept["targets"].sum(dim=1), torch.ones(200), atol=1e-5)


def test_shipped_best_recipe_config_loads_and_names_the_test_folder():
    from plabel.config import load_config
    from plabel.config.load import diff_configs
    from plabel.sweeps.grid import load_grid

    cfg = load_config(ROOT / "configs" / "mnist100_best.yaml", {})
    assert cfg.pseudo.top_k_percent == [60, 80, 90, 95, 100, 100] and cfg.pseudo.score_views == 1 and cfg.train.budget == "data"
    assert cfg.pseudo.augment == "strong" and cfg.train.batch_size + cfg.train.pseudo_batch_size == 128
    assert cfg.data.test.source == "idx" and cfg.data.labeled_per_class == 10
    # The best recipe is the recipe grid's `six_rounds` row (its measured 5 seeds), whose base is the
    # four-round recipe: the same resolved config.
    grid = load_grid(ROOT / "configs" / "sweeps" / "recipe.yaml")
    row = load_config(ROOT / "configs" / "mnist100_4rounds.yaml", grid.overrides(grid.row("six_rounds"))).to_dict()
    assert diff_configs(cfg.to_dict(), row, ignore=("tracking.mode",)) == []


def test_the_guard_sees_the_clean_views_features_whatever_the_views():
    """With several views, the knn guard's similarity and distance come from the clean image (its
    forward runs last), so the guard keeps its meaning; the scores change, the guard's columns do not."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = build_model("small_cnn", 1, 10).eval()
    pool = _digits(50, train=False)
    reference = torch.randn(7, 128)
    plain = score_dataset(accelerator, model, pool, ScorePlan(batch_size=16, reference=reference, num_classes=10))
    for noise in ("shift", "dropout"):
        views = score_dataset(
            accelerator, model, pool, ScorePlan(batch_size=16, reference=reference, num_classes=10, views=4, noise=noise)
        )
        assert torch.equal(views["similarity"], plain["similarity"]) and torch.equal(views["distance"], plain["distance"])
        assert not torch.equal(views["entropy"], plain["entropy"])
