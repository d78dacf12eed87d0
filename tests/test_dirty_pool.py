"""A dirty pool and what keeps junk out: junk images, energy, temperature, the kNN guard (k% of
what it lets through, exact across processes: tests/test_distributed_select.py), the EMA teacher
(resumes exactly), strong augmentation of pseudo-labeled samples."""

import csv
import json
import math
import re
from collections import Counter

import pytest
import torch
from helpers import run_train, tiny

from plabel.config import ConfigError, load_config
from plabel.data.junk import JUNK, JUNK_KINDS, JunkedSource, junk_count
from plabel.data.splits import make_splits
from plabel.data.transforms import build_transform, plain_spec
from plabel.sweeps.evaluations import junk_kinds_selected
from plabel.method.scores import energy, fit_temperature, nearest_neighbours, ranking_scores
from plabel.method.selection import select_pseudo_labels
from plabel.trainer.round_selection import Guard


def test_energy_similarity_and_temperature():
    logits = torch.tensor([[10.0, 0.0], [1.0, 1.0], [0.0, -30.0]])
    assert torch.allclose(energy(logits), -torch.logsumexp(logits, 1))
    reference = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    similarity, distance = nearest_neighbours(torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 9.0]]), reference)
    assert torch.allclose(similarity, torch.tensor([1.0, 2**-0.5, 1.0]))
    assert torch.allclose(distance, torch.tensor([1.0, 1.0, 8.0]))  # the direction of a reference, 9x as long
    # Logits made too sharp by a factor of 3: the fitted temperature undoes it.
    g = torch.Generator().manual_seed(0)
    true = torch.randn(4000, 5, generator=g)
    labels = torch.multinomial(true.softmax(1), 1, generator=g).squeeze(1)  # drawn from the true probabilities
    assert fit_temperature(true * 3, labels) == pytest.approx(3.0, rel=0.1)
    # A teacher near chance (log-probabilities of small random logits): LBFGS without a line search
    # stepped to NaN here, and the run printed "confidence temperature nan". The fit is finite,
    # in bounds, and at the loss's minimum over a fine grid of T.
    torch.manual_seed(13)
    flat = torch.softmax(torch.randn(20, 10) * 0.3, 1).log()
    flat_labels = torch.arange(20) % 10
    t = fit_temperature(flat, flat_labels)
    grid = torch.exp(torch.linspace(math.log(0.05), math.log(20.0), 2001))
    losses = torch.stack([torch.nn.functional.cross_entropy(flat / g, flat_labels) for g in grid])
    assert math.isfinite(t) and 0.05 <= t <= 20.0
    assert torch.nn.functional.cross_entropy(flat / t, flat_labels) <= losses.min() + 1e-6
    columns = {"entropy": torch.tensor([0.1, float("nan"), 0.3]), "energy": torch.tensor([-5.0, -9.0, -1.0])}
    ranking = ranking_scores(columns, torch.arange(3), "energy", 0, 1)
    assert ranking[0] == -5.0 and torch.isnan(ranking[1]) and ranking[2] == -1.0  # non-finite entropy: never picked


def test_the_knn_guard_rejects_what_is_unlike_the_labeled_set_in_direction_or_length():
    g = torch.Generator().manual_seed(0)
    labeled = torch.cat([torch.randn(50, 8, generator=g) * 0.1 + 3 * torch.eye(8)[c] for c in range(4)])  # 4 tight clusters
    guard = Guard.fit(labeled, 0.05)
    like = torch.cat([torch.randn(20, 8, generator=g) * 0.1 + 3 * torch.eye(8)[c] for c in range(4)])
    long = 5 * like[:20]  # the direction of a class, five times its length (noise through BatchNorm)
    off = torch.randn(20, 8, generator=g) * 0.1 + 3 * torch.eye(8)[6]  # a direction no labeled sample has
    similarity, distance = nearest_neighbours(torch.cat([like, long, off]), labeled)
    passes = guard.passes({"entropy": torch.zeros(120), "similarity": similarity, "distance": distance})
    assert passes[:80].float().mean() >= 0.85 and not passes[80:].any()
    assert not guard.passes({"entropy": torch.zeros(1), "similarity": torch.tensor([float("nan")]), "distance": torch.zeros(1)}).any()
    assert Guard().passes({"entropy": torch.zeros(3)}).all()  # no guard: everything passes


def test_k_percent_of_the_eligible():
    scores = torch.tensor([0.1, float("nan"), 0.3, float("nan"), 0.2, 0.4])
    predictions = torch.zeros(6, dtype=torch.long)
    assert len(select_pseudo_labels(scores, predictions, 50, 1)) == 3  # 50% of 6
    assert select_pseudo_labels(scores, predictions, 50, 1, of_eligible=True).indices.tolist() == [0, 4]  # 50% of 4


def test_junk_is_in_the_pool_only_deterministic_and_of_every_kind():
    cfg = load_config(None, {"data.junk_share": 0.3, "data.pool_limit": 700})
    splits = make_splits(cfg.data, seed=0)
    assert isinstance(splits.train_source, JunkedSource)
    junk = splits.pool_labels == JUNK
    assert int(junk.sum()) == junk_count(700, 0.3) == 300 and splits.pool_size == 1000
    assert not bool((splits.train_source.labels[splits.labeled_source_indices] == JUNK).any())
    assert not bool((splits.train_source.labels[splits.test_source_indices] == JUNK).any())
    first = int(splits.pool_source_indices[junk][0])
    kinds = {splits.train_source.describe(int(i)).split("(")[1][:-1] for i in splits.pool_source_indices[junk][:8]}
    assert kinds == set(JUNK_KINDS)
    image = splits.train_source.image(first)
    assert image.dtype == torch.uint8 and image.shape == (1, 28, 28)
    assert torch.equal(image, make_splits(cfg.data, seed=0).train_source.image(first))  # a function of (seed, number)
    with pytest.raises(ConfigError, match="data.junk_kinds: unknown"):
        load_config(None, {"data.junk_kinds": ["static"]})
    with pytest.raises(ConfigError, match="data.junk_share: must be in"):
        load_config(None, {"data.junk_share": 1.0})


def test_strong_augmentation_adds_cutout():
    spec = plain_spec(1, (28, 28))
    names = [type(t).__name__ for t in build_transform(1, spec, "strong", train=True, resize=False).transforms]
    assert "RandomErasing" in names and "RandomErasing" not in [
        type(t).__name__ for t in build_transform(1, spec, "light", train=True, resize=False).transforms
    ]


def test_a_dirty_run_reports_junk_and_every_option_runs(tmp_path):
    out = tmp_path / "run"
    args = tiny({"data.junk_share": 0.3, "pseudo.guard": "knn", "pseudo.calibrate": "true", "pseudo.teacher": "ema",
                 "pseudo.augment": "strong", "pseudo.score": "energy", "tracking.log_every": 1})
    proc = run_train([*args, "--output_dir", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The table's junk column: in the header printed at round 0 (no selection yet) and in every row.
    header, rows = proc.stdout.split("round | k%")[1].split("\n", 1)
    assert "| junk   |" in header
    table_rows = [line for line in rows.splitlines() if re.match(r" +\d+ \|", line)]
    assert table_rows and all(line.count("|") == 6 for line in table_rows)
    record = next(json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "select/junk_share" in line)
    assert {"select/guarded", "select/guard_threshold", "select/guard_distance", "select/temperature", "select/junk_in_pool", "select/precision_real"} <= set(record)
    with open(out / "pseudo_labels_round01.csv") as f:
        rows = list(csv.DictReader(f))
    junk_rows = [r for r in rows if int(r["true_label"]) == JUNK]
    assert record["select/junk_selected"] == len(junk_rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"][1]["junk_share"] == pytest.approx(record["select/junk_share"])
    # The ablation's count by kind agrees with what the dirty source says each selected row is.
    kinds = junk_kinds_selected(out, 1)
    cfg = load_config(out / "config.yaml")
    source = make_splits(cfg.data, cfg.seed).train_source
    described = Counter(source.describe(int(r["source_index"])).split("(")[-1].rstrip(")") for r in junk_rows)
    assert set(kinds) == set(JUNK_KINDS) and kinds == {k: described.get(k, 0) for k in JUNK_KINDS}


def test_the_ema_teacher_is_checkpointed_so_a_resumed_run_replays_exactly(tmp_path):
    args = tiny({"pseudo.teacher": "ema", "pseudo.rounds": 2, "pseudo.top_k_percent": "[30, 60]"})
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert run_train([*args, "--output_dir", str(whole)]).returncode == 0
    crashed = run_train([*args, "--output_dir", str(cut)], PLABEL_FAULT="step:9@0:raise")  # round 1, after an epoch-end checkpoint
    assert crashed.returncode != 0
    resumed = run_train([*args, "--output_dir", str(cut)])
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout, resumed.stderr[-2000:]
    for name in ("pseudo_labels_round01.csv", "pseudo_labels_round02.csv", "metrics.jsonl"):
        assert (cut / name).read_text() == (whole / name).read_text(), name
