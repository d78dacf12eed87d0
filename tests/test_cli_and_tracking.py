"""The command line and W&B as their users expect them: precision, --help, flags and spellings,
`plabel score`'s default, export to the hub offline, progress lines, and what an offline W&B run
holds, read back record by record from its ``.wandb`` file."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, TINY, run_train, subprocess_env, tiny
from wandb_records import config as wandb_config
from wandb_records import history, of_type

from plabel.cli import main as plabel_main
from plabel.config import ConfigError, load_config
from plabel.config.args import resolve_config

# --- precision -------------------------------------------------------------------------------


def test_mixed_precision_no_is_accepted_everywhere(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("train:\n  mixed_precision: no\n")
    assert load_config(file).train.mixed_precision == "no"  # YAML 1.1 read this as False
    assert resolve_config(["--train.mixed_precision", "no"])[0].train.mixed_precision == "no"
    assert resolve_config(["train.mixed_precision=no"])[0].train.mixed_precision == "no"
    with pytest.raises(ConfigError, match="train.mixed_precision: expected"):
        resolve_config(["--train.mixed_precision", "fp8"])


def test_the_effective_precision_is_recorded_and_another_one_is_a_config_difference(tmp_path):
    out = tmp_path / "run"
    proc = run_train([*TINY, "--output_dir", str(out)], ACCELERATE_MIXED_PRECISION="bf16")  # as accelerate launch sets it
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["mixed_precision"] == "bf16"  # not null
    assert json.loads((out / "run_info.json").read_text())["mixed_precision"] == "bf16"
    again = run_train([*TINY, "--output_dir", str(out)], ACCELERATE_MIXED_PRECISION="no")
    assert again.returncode == 2
    assert "train.mixed_precision: 'bf16' there, 'no' now" in again.stderr
    noted = run_train([*TINY, "--train.mixed_precision", "no", "--output_dir", str(tmp_path / "b")], ACCELERATE_MIXED_PRECISION="bf16")
    assert noted.returncode == 0 and "note: train.mixed_precision 'no' overrides the launcher's 'bf16'" in noted.stdout


# --- the command line ------------------------------------------------------------------------


def _help() -> str:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True, timeout=60).stdout


def _option_help(text: str, option: str) -> str:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(option + " "))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if line.strip().startswith("--"):
            break
        block.append(line)
    return " ".join(" ".join(block).split())


def test_help_shows_each_nested_default_once_and_right():
    text = _help()
    assert _option_help(text, "--data.test.source").endswith("(default: 'holdout')")
    assert _option_help(text, "--data.test.split").endswith("(default: 'test')")
    assert _option_help(text, "--data.train.split").endswith("(default: 'train')")
    for option in ("--data.test.source", "--train.epochs", "--pseudo.accumulate"):
        assert _option_help(text, option).count("(default:") == 1, option


def test_help_and_config_errors_do_not_import_torch():
    code = (
        "import sys; from plabel.commands.train import train_main; from plabel.config.args import build_parser; "
        "build_parser().format_help(); rc = train_main(['--train.epochs', 'x']); "
        "assert 'torch' not in sys.modules, 'torch imported'; print(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "2", done.stderr


def test_booleans_are_flags_and_hyphens_work_everywhere():
    cfg, _ = resolve_config(["--pseudo.accumulate", "--no-pseudo.class_balanced", "--train.batch-size", "32", "pseudo.reinit-model=true"])
    assert cfg.pseudo.accumulate is True and cfg.pseudo.class_balanced is False and cfg.train.batch_size == 32
    assert cfg.pseudo.reinit_model is True
    assert resolve_config(["--pseudo.accumulate", "false"])[0].pseudo.accumulate is False  # the value form still works
    assert resolve_config(["--output-dir", "x"])[0].output_dir == "x"


def test_plabel_help_lists_commands_and_version(capsys):
    assert plabel_main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("train", "score", "export", "report"):
        assert f"  {command} " in text
    assert plabel_main(["--version"]) == 0
    from plabel import __version__

    assert capsys.readouterr().out.strip() == f"plabel {__version__}"
    assert plabel_main(["sore"]) == 2 and "unknown command 'sore'" in capsys.readouterr().err


def test_progress_in_a_log_file_is_plain_lines(tmp_path):
    proc = run_train([*TINY, "--output_dir", str(tmp_path / "run")])  # stderr is a pipe, as in SLURM logs
    assert proc.returncode == 0
    assert "\r" not in proc.stderr
    assert "round 1: 6/6 steps (100%)" in proc.stderr and "round 1: scoring the pool" in proc.stderr


# --- score and export ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    proc = run_train([*TINY, "--output_dir", str(out)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_score_without_source_options_scores_the_runs_test_set(finished, tmp_path, capsys):
    assert plabel_main(["score", "--run", str(finished), "--output", str(tmp_path / "s.csv"), "--batch-size", "17"]) == 0
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert len(rows) == 100  # data.test_holdout, not the whole training source
    from plabel.data.splits import make_splits

    cfg = load_config(None, {"data.pool_limit": 200, "data.test_holdout": 100, "data.labeled_per_class": 4})
    held_out = make_splits(cfg.data, cfg.seed).test_source_indices.tolist()
    assert [int(r["index"]) for r in rows] == held_out  # rows of the training source
    assert "scored 100 samples" in capsys.readouterr().out


def test_export_push_to_hub_offline_is_one_line_after_the_local_copy(finished, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "plabel.cli", "export", "--run", str(finished), "--output", str(tmp_path / "e"),
         "--push-to-hub", "someone/nothing"],
        capture_output=True, text=True, cwd=ROOT, env=subprocess_env(HF_HUB_OFFLINE="1"), timeout=120,
    )
    assert done.returncode == 2
    assert [line for line in done.stderr.splitlines() if line.strip()][-1].startswith(
        "plabel export: error: --push_to_hub: could not push to someone/nothing ("
    )
    assert "Traceback" not in done.stderr and (tmp_path / "e" / "dataset_info.json").is_file()


# --- what W&B receives -----------------------------------------------------------------------


def _wandb_file(segment: Path) -> Path:
    return next(segment.glob("*.wandb"))


def test_wandb_gets_round_axes_media_at_their_round_nested_config_and_the_model(tmp_path):
    out = tmp_path / "run"
    args = [*tiny({"pseudo.rounds": 2, "pseudo.top_k_percent": "[30, 60]", "tracking.log_every": 2}),
            "--tracking.mode", "offline", "--output_dir", str(out)]
    proc = run_train(args, HOME=str(tmp_path), WANDB_API_KEY="")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (segment,) = sorted((out / "wandb").glob("offline-run-*"))
    log = _wandb_file(segment)

    config = wandb_config(log)
    assert "pseudo.top_k_percent" not in config and config["pseudo"]["top_k_percent"] == [30, 60]  # sections, no dots
    assert config["train"]["mixed_precision"] == "no" and config["run"]["mixed_precision"] == "no"
    assert config["run"]["num_processes"] == 1 and config["run"]["devices"][0].startswith("cpu")
    assert "git_commit" in config["run"] and config["run"]["plabel_version"]

    axes = {(m.glob_name or m.name): m.step_metric for m in of_type(log, "metric")}
    assert axes["round/*"] == "round/index" and axes["select/*"] == "round/index"

    rows = history(log)
    round_rows = [r for r in rows if "round/test_accuracy" in r]
    media_rows = [r for r in rows if any(k.startswith("select/samples") for k in r)]
    assert [r["round/index"] for r in media_rows] == [1, 2]
    for media in media_rows:  # each round's media at the round's first step, after the previous round's row
        previous = next(r for r in round_rows if r["round/index"] == media["round/index"] - 1)
        assert media["_step"] == previous["_step"] + 1
        assert not any(k.startswith("round/test") for k in media)
    steps = [r["_step"] for r in rows]
    assert steps == sorted(steps)

    assert {a.type for a in of_type(log, "artifact")} >= {"model"}
    assert any(k.startswith("select/pseudo_labels_round01") for r in rows for k in r)
    # Tables' images (and artifact files) are staged under the run folder, not in the user's home:
    # copying the folder to a machine with network keeps everything `wandb sync` uploads.
    staged = list((out / "wandb" / "data").rglob("*"))
    assert any(p.is_file() for p in staged) and not (tmp_path / ".local" / "share" / "wandb").exists()


def test_a_preempted_wandb_segment_is_marked_preempted_not_finished(tmp_path):
    out = tmp_path / "run"
    args = [*tiny({"train.steps_per_epoch": 12}), "--tracking.mode", "offline", "--verbose", "--output_dir", str(out)]
    stopped = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=subprocess_env(HOME=str(tmp_path), WANDB_API_KEY=""),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    for line in stopped.stdout:
        if "checkpoint (epoch end)" in line:
            stopped.send_signal(15)
            break
    stopped.communicate(timeout=120)
    assert stopped.returncode == 75
    (segment,) = sorted((out / "wandb").glob("offline-run-*"))
    log = _wandb_file(segment)
    assert of_type(log, "preempting"), "no preempting record"
    assert [e.exit_code for e in of_type(log, "exit")] == [75]
