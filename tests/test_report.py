"""The entropy report: pure numbers, the noise inputs, one tiny end-to-end run, user errors."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plabel.data.sources import TensorImageSource
from plabel.data.splits import IndexedImages
from plabel.data.transforms import build_transform, plain_spec
from plabel.experiments.entropy_probe import NOISE_KINDS, ValidationAndNoise, format_sorted, summarize_entropy
from plabel.experiments.entropy_report import entropy_report_main, report_main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--train.epochs", "1", "--train.steps_per_epoch", "5", "--tracking.mode", "disabled", "--data.test_holdout", "200"]
LINE = re.compile(r"^([01]) : (\S+)$")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_sorted(path: Path) -> list[tuple[int, float]]:
    rows = []
    for line in path.read_text().splitlines():
        m = LINE.match(line)
        assert m, f"bad line {line!r}"
        rows.append((int(m.group(1)), float(m.group(2))))
    return rows


# --- pure numbers ----------------------------------------------------------------------------


def test_summary_ranks_share_and_means():
    entropy = torch.tensor([0.5, 0.1, 2.0, 0.3, 0.05, 1.0, 0.2, 3.0, 0.4, 0.6, 0.7, 0.8])
    source = torch.tensor([0, 0, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0])
    s = summarize_entropy(entropy, source)
    # sorted: 0.05(0) 0.1(0) 0.2(0) 0.3(1) ...
    assert s["first_noise_rank_0based"] == 3 and s["first_noise_rank_1based"] == 4
    assert s["lowest_10_percent"] == {"count": 1, "noise_count": 0, "noise_share": 0.0}
    assert s["n"] == {"validation": 8, "noise": 4}
    assert s["mean_entropy_bits"]["noise"] == pytest.approx((2.0 + 0.3 + 1.0 + 3.0) / 4)


def test_lowest_ten_percent_is_floor_like_the_article():
    entropy = torch.arange(128, dtype=torch.float32).flip(0)  # noise (the last 64 positions) lowest
    source = torch.tensor([0] * 64 + [1] * 64)
    s = summarize_entropy(entropy, source)
    assert s["lowest_10_percent"] == {"count": 12, "noise_count": 12, "noise_share": 1.0}
    assert s["first_noise_rank_0based"] == 0


def test_sorted_listing_breaks_ties_by_position_and_keeps_full_repr():
    entropy = torch.tensor([0.25, 1.4397987798414765e-15, 0.25, 3.0])
    source = torch.tensor([1, 0, 0, 1])
    text = format_sorted(entropy, source)
    lines = text.splitlines()
    assert lines[0] == f"0 : {float(torch.tensor(1.4397987798414765e-15))!r}"
    assert lines[1:] == ["1 : 0.25", "0 : 0.25", "1 : 3.0"]  # equal entropies: position 0 before 2


# --- noise inputs ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_validation() -> IndexedImages:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 1, 8, 8), generator=g, dtype=torch.uint8)
    source = TensorImageSource(images, torch.arange(6) % 3, 3, "fake")
    return IndexedImages(source, torch.tensor([1, 3, 4]), build_transform(1, plain_spec(1, (8, 8)), "light", train=False, resize=False))


@pytest.mark.parametrize("noise", NOISE_KINDS)
def test_noise_items_are_a_function_of_seed_and_position(tiny_validation, noise):
    probe = ValidationAndNoise(tiny_validation, noise, seed=5)
    assert len(probe) == 6
    x, source, pos = probe[1]
    assert source == 0 and pos == 1 and torch.equal(x, tiny_validation[1][0])
    x4, source4, pos4 = probe[4]
    assert source4 == 1 and pos4 == 4 and x4.shape == (1, 8, 8) and x4.dtype == torch.float32
    assert torch.equal(x4, ValidationAndNoise(tiny_validation, noise, seed=5)[4][0])  # order-free
    assert not torch.equal(x4, ValidationAndNoise(tiny_validation, noise, seed=6)[4][0])
    assert not torch.equal(probe[3][0], probe[4][0])


def test_uniform_noise_is_in_the_normalised_pixel_range(tiny_validation):
    x = ValidationAndNoise(tiny_validation, "uniform", seed=0)[3][0]
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0 and float(x.std()) > 0.3


def test_shuffled_noise_keeps_the_pixel_values_of_its_image(tiny_validation):
    probe = ValidationAndNoise(tiny_validation, "shuffled", seed=0)
    for j in range(3):
        real, shuffled = probe[j][0], probe[3 + j][0]
        assert torch.equal(real.flatten().sort().values, shuffled.flatten().sort().values)
        assert not torch.equal(real, shuffled)


# --- end to end (tiny budget) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "entropy"
    assert entropy_report_main([*TINY, "--num-samples", "10", "--pseudo.guard", "knn", "--output-dir", str(out)]) == 0
    return out


def test_report_json_is_strict_json_with_the_guards_verdicts(tiny_report):
    def refuse(constant: str) -> None:
        raise AssertionError(f"report.json holds {constant}, which is not JSON")

    report = json.loads((tiny_report / "report.json").read_text(), parse_constant=refuse)
    order = report["selection_order"]
    assert order["rule"]["guard"] == "knn"
    rejected = order["rejected_by_guard"]
    assert 0 <= rejected["validation"] <= 10 and 0 <= rejected["noise"] <= 10
    assert order["n"] == {"validation": 10, "noise": 10} and "mean_entropy_bits" not in order


def test_report_writes_every_file(tiny_report):
    for name in ("entropy_sorted.txt", "report.json", "entropy_per_sample.png", "entropy_histogram.png"):
        assert (tiny_report / name).is_file(), name


def test_sorted_file_lists_all_samples_ascending(tiny_report):
    rows = read_sorted(tiny_report / "entropy_sorted.txt")
    assert len(rows) == 20
    assert sum(s for s, _ in rows) == 10
    values = [e for _, e in rows]
    assert values == sorted(values)


def test_report_json_agrees_with_the_sorted_file(tiny_report):
    report = json.loads((tiny_report / "report.json").read_text())
    rows = read_sorted(tiny_report / "entropy_sorted.txt")
    first = next(i for i, (s, _) in enumerate(rows) if s == 1)
    assert report["first_noise_rank_0based"] == first
    assert report["first_noise_rank_1based"] == first + 1
    lowest = report["lowest_10_percent"]
    assert lowest["count"] == 2
    assert lowest["noise_count"] == sum(s for s, _ in rows[:2])
    assert lowest["noise_share"] == lowest["noise_count"] / 2
    for name, code in (("validation", 0), ("noise", 1)):
        mean = sum(e for s, e in rows if s == code) / 10
        assert report["mean_entropy_bits"][name] == pytest.approx(mean, rel=1e-6)
    assert report["n"] == {"validation": 10, "noise": 10}
    assert report["noise"] == "gaussian"
    assert 0.0 <= report["validation_accuracy"] <= 1.0
    assert report["train_steps"] == 5
    assert report["config"]["train"]["steps_per_epoch"] == 5
    assert report["config"]["output_dir"] == str(tiny_report)


def test_figures_are_real_pngs(tiny_report):
    for name in ("entropy_per_sample.png", "entropy_histogram.png"):
        data = (tiny_report / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 10_000, name  # axes, bars and text, not an empty canvas


# --- user errors: one line on stderr, exit 2, nothing written --------------------------------


def test_refuses_an_output_dir_that_holds_files(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert entropy_report_main([*TINY, "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "output_dir" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize(
    "args,field",
    [
        (["--num-samples", "0"], "--num-samples"),
        (["--num-samples", "lots"], "--num-samples"),
        (["--num-samples", "201"], "--num-samples"),  # the test split holds 200
        (["--train.epochs", "0"], "train.epochs"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path, capsys, args, field):
    out = tmp_path / "never"
    assert entropy_report_main([*TINY, "--output-dir", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0], err
    assert not out.exists()


def test_unknown_report_name(capsys):
    assert report_main(["bogus"]) == 2
    assert "entropy" in capsys.readouterr().err


def test_module_entry_point_rejects_unknown_noise(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "plabel.cli", "report", "entropy", "--noise", "pink", "--output-dir", str(tmp_path / "x")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--noise" in lines[0] and "gaussian" in lines[0], proc.stderr


# --- the article's claim (an issue target) ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.xfail(
    reason="missed target (issue 5), kept visible: with BatchNorm the default small CNN maps gaussian noise "
    "to '8' with near-zero entropy; measured noise among the 12 lowest: seed 0 8, seed 1 12, seed 2 0",
    strict=False,
)
def test_default_budget_keeps_noise_out_of_the_lowest_ten_percent(tmp_path):
    """Embedded MNIST, default config, 64 test images vs 64 gaussian inputs: none of the 12
    lowest-entropy samples is noise (the article saw its first noise sample at rank 34)."""
    _assert_noise_kept_out(tmp_path, [])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_without_batch_norm_noise_stays_out_of_the_lowest_ten_percent(tmp_path, seed):
    """The article's observation holds for the same network without BatchNorm (measured seeds
    0/1/2: first noise sample at ranks 56/46/41, none in the lowest 12)."""
    _assert_noise_kept_out(tmp_path, ["--model.name", "small_cnn_nobn", "--seed", str(seed)])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_knn_guard_keeps_noise_out_of_the_lowest_ten_percent_of_the_selection_order(tmp_path, seed):
    """The default network (BatchNorm) with pseudo.guard knn: the order the run's selection uses
    holds no noise among its 12 first (measured 0/12 for seeds 0, 1, 2; entropy alone 8/12, 12/12, 0/12)."""
    out = tmp_path / "entropy"
    assert entropy_report_main(["--tracking.mode", "disabled", "--pseudo.guard", "knn", "--seed", str(seed), "--output-dir", str(out)]) == 0
    order = json.loads((out / "report.json").read_text())["selection_order"]
    assert order["lowest_10_percent"] == {"count": 12, "noise_count": 0, "noise_share": 0.0}, order


def _assert_noise_kept_out(tmp_path, extra):
    out = tmp_path / "entropy"
    assert entropy_report_main(["--tracking.mode", "disabled", "--output-dir", str(out), *extra]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["lowest_10_percent"]["count"] == 12
    assert report["lowest_10_percent"]["noise_count"] == 0, report
