"""train.py end to end on tiny data: 1 and 2 processes, outputs, tracker keys, W&B offline."""

import csv
import json
import os
from pathlib import Path

import pytest
from accelerate.tracking import GeneralTracker
from helpers import run_processes, run_train, tiny
from safetensors.torch import load_file

# Two rounds, a 300-image pool; tracking is chosen per test (the last --tracking.mode wins).
TINY = tiny({
    "data.pool_limit": 300, "data.test_holdout": 200, "data.labeled_per_class": 5, "train.batch_size": 16,
    "train.pseudo_batch_size": 16, "train.eval_batch_size": 512, "pseudo.rounds": 2, "pseudo.top_k_percent": "[30, 60]",
    "tracking.log_every": 2,
})
ROUND_KEYS = {
    "round/test_accuracy", "round/pseudo_labeled", "select/pseudo_label_precision", "select/num_selected",
    "select/entropy_selected_mean", "select/entropy_rest_mean", "select/class_0", "select/nonfinite_scores",
}
STEP_KEYS = {"train/loss", "train/loss_labeled", "train/loss_pseudo", "train/alpha", "train/lr"}


def _check_outputs(out: Path, processes: int):
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_processes"] == processes
    assert [r["round_index"] for r in summary["rounds"]] == [0, 1, 2]
    assert summary["baseline_accuracy"] == summary["rounds"][0]["test_accuracy"]
    assert 0 < summary["cpu_time_s"] < 3600  # this session's CPU seconds, summed over processes
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*records)
    assert ROUND_KEYS <= keys and STEP_KEYS <= keys
    steps = [r["step"] for r in records]
    assert steps == sorted(steps), "steps must increase across rounds"
    for round_index, expected_rows in ((1, None), (2, None)):
        with open(out / f"pseudo_labels_round{round_index:02d}.csv") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == [  # the first five as before; class names, then the sample's path, appended
            "pool_index", "source_index", "pseudo_label", "entropy", "true_label", "pseudo_label_name", "true_label_name", "path",
        ]
        assert all(r["path"] == r["source_index"] for r in rows)  # in-memory digits are named by their row
        assert all(r["pseudo_label_name"] == r["pseudo_label"] for r in rows)  # digits are named by their id
        assert len(rows) == summary["rounds"][round_index]["pseudo_labeled"]
        pool_indices = [int(r["pool_index"]) for r in rows]
        assert pool_indices == sorted(set(pool_indices)) and 0 <= pool_indices[0] and pool_indices[-1] < 300
        precision = sum(r["pseudo_label"] == r["true_label"] for r in rows) / len(rows)
        assert precision == pytest.approx(summary["rounds"][round_index]["pseudo_label_precision"])
    # Class-balanced 30% of a 300 pool: floor(n_c * 0.3) per predicted class, so at most 90.
    assert 0 < summary["rounds"][1]["pseudo_labeled"] <= 90
    weights = load_file(str(out / "model.safetensors"))
    assert weights["head.5.weight"].shape == (10, 128)
    config = (out / "config.yaml").read_text()
    assert "pool_limit: 300" in config and f"output_dir: {out}" in config
    return summary


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    """The tiny run on one process, loading in the training process (read, never written, by the tests)."""
    out = tmp_path_factory.mktemp("one") / "run"
    proc = run_train([*TINY, "--tracking.mode", "disabled", "--output_dir", str(out)])
    return out, proc


def test_train_one_process_writes_outputs(one_process_run):
    out, proc = one_process_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_outputs(out, 1)
    assert "round | k%" in proc.stdout and "baseline" in proc.stdout


def test_train_two_processes_writes_outputs(tmp_path):
    out = tmp_path / "run2"
    proc = run_train([*TINY, "--tracking.mode", "disabled", "--output_dir", str(out)], processes=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_outputs(out, 2)
    assert proc.stdout.count("plabel run ->") == 1  # printed by the main process only


def test_refuses_a_folder_that_is_not_a_plabel_run(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("someone else's files")
    proc = run_train([*TINY, "--tracking.mode", "disabled", "--output_dir", str(out)])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"train.py: error: output_dir: {out} already holds files that are not a plabel run; choose a new --output_dir"
    ]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_wandb_offline_run_sync_hint_media_and_same_run_after_resume(tmp_path):
    out = tmp_path / "wb"
    args = [*TINY, "--tracking.mode", "auto", "--output_dir", str(out)]
    env = dict(WANDB_API_KEY="", HOME=str(tmp_path))  # no credentials: auto goes offline
    crashed = run_train(args, PLABEL_FAULT="step:9@0:raise", **env)  # round 1, after round 0's checkpoint
    assert crashed.returncode != 0 and "injected fault" in crashed.stderr
    proc = run_train(args, **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = json.loads((out / "run_info.json").read_text())["wandb_run_id"]
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith("-" + run_id) for r in runs)  # one W&B run, resumed
    assert all(any(r.glob("*.wandb")) for r in runs)  # the event logs `wandb sync` uploads
    assert "wandb sync " + " ".join(str(r) for r in runs) in proc.stdout  # every segment of the run
    # Round 1's media went to W&B before the crash (at its first step, 7): the replay does not send
    # them again at a step W&B has passed; round 2's are in the resumed segment.
    first = list(runs[0].glob("files/media/table/select/samples_*.table.json"))
    second = list(runs[1].glob("files/media/table/select/samples_*.table.json"))
    assert len(first) == 1 and len(second) == 1
    table = json.loads(second[0].read_text())
    assert table["columns"] == ["image", "pseudo_label", "entropy", "true_label", "pseudo_class", "true_class"] and table["data"]


class RecordingTracker(GeneralTracker):
    """Keeps what Accelerate's tracker API hands it."""

    name = "recording"
    requires_logging_directory = False

    def __init__(self):
        super().__init__()
        self.config = None
        self.logs = []

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values):
        self.config = dict(values)

    def log(self, values, step=None, **kwargs):
        self.logs.append((step, dict(values)))


def _run_with_recorder(accelerator, out_dir):
    from plabel.config.args import resolve_config
    from plabel.trainer.run import run

    cfg, _ = resolve_config([*TINY, "--tracking.mode", "disabled", "--output_dir", out_dir])
    recorder = RecordingTracker()
    run(cfg, extra_trackers=[recorder])
    return recorder.config, recorder.logs


def test_tracker_gets_config_and_per_round_keys_from_main_process_only(tmp_path):
    results = run_processes(_run_with_recorder, 2, str(tmp_path / "rec"), timeout=300)
    (config, logs), (config_other, logs_other) = results
    assert logs_other == [] and config_other is None  # rank 1 never logs
    assert config["pseudo"]["top_k_percent"] == [30.0, 60.0] and config["output_dir"] == str(tmp_path / "rec")
    assert config["run"]["num_processes"] == 2 and config["run"]["mixed_precision"] == "no"
    round_logs = [values for _, values in logs if "round/test_accuracy" in values]
    assert [v["round/index"] for v in round_logs] == [0, 1, 2]
    assert ROUND_KEYS <= set(round_logs[1])
    assert STEP_KEYS <= set().union(*(values for _, values in logs))
    alphas = [values["train/alpha"] for _, values in logs if "train/alpha" in values and values["train/round"] == 1]
    assert alphas and set(alphas) == {1.0}  # since 0.3 alpha is constant: full weight from a round's first step


def test_loader_workers_do_not_change_results(tmp_path, one_process_run):
    """Augmentation is seeded per draw, not by the process RNG: worker processes (persistent or
    not) see the same randomness as loading in the training process (the one-process run)."""
    inline, inline_proc = one_process_run
    assert inline_proc.returncode == 0, inline_proc.stderr[-3000:]
    out = tmp_path / "workers"
    proc = run_train([*TINY, "--tracking.mode", "disabled", "--output_dir", str(out), "--data.num_workers", "2",
                      "--data.persistent_workers", "true"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "num_workers: 2" in (out / "config.yaml").read_text()
    assert json.loads((out / "summary.json").read_text())["rounds"] == json.loads((inline / "summary.json").read_text())["rounds"]
    assert (out / "pseudo_labels_round02.csv").read_text() == (inline / "pseudo_labels_round02.csv").read_text()


def _crash_then_resume_with_recorders(accelerator, out_dir):
    from plabel.config.args import resolve_config
    from plabel.trainer.run import run

    cfg, _ = resolve_config([*TINY, "--tracking.mode", "disabled", "--output_dir", out_dir])
    first, second = RecordingTracker(), RecordingTracker()
    os.environ["PLABEL_FAULT"] = "step:10@0:raise"  # round 1, epoch 1: after its epoch-end checkpoint
    try:
        run(cfg, extra_trackers=[first])
    except RuntimeError:
        pass
    finally:
        del os.environ["PLABEL_FAULT"]
    run(cfg, extra_trackers=[second])
    return first.logs, second.logs


def test_resumed_run_sends_the_tracker_only_new_steps(tmp_path):
    ((first, second),) = run_processes(_crash_then_resume_with_recorders, 1, str(tmp_path / "r"), timeout=300)
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    # Together the two tracker sessions received exactly what metrics.jsonl holds, each entry once,
    # and the resumed session's steps continue where the first one stopped.
    assert [(step, values) for step, values in first + second] == [
        (r["step"], {k: v for k, v in r.items() if k != "step"}) for r in records
    ]
    assert first and second and second[0][0] >= first[-1][0]
