"""plabel sweep: the grid file's checks, the local backend, --status at each stage, the table, W&B
grouping read back from the offline run files, and the W&B sweep file train.py understands."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

from plabel.cli import main as plabel_main
from plabel.config.args import resolve_config
from plabel.sweeps.runs import planned_run

TINY_GRID = ROOT / "configs" / "sweeps" / "tiny.yaml"


def _grid(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(TINY_GRID.read_text())
    data.update(changes)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("change,expected", [
    ({"rows": [{"name": "a", "overrides": {"pseudo.scor": "random"}}]}, "rows[0] 'a': pseudo.scor: unknown train.py option"),
    ({"rows": [{"name": "a", "overrides": {"pseudo.score": "randm"}}]}, "row 'a': pseudo.score"),
    ({"rows": [{"name": "a"}, {"name": "a"}]}, "rows[1]: row name 'a' is used twice"),
    ({"rows": []}, "the grid has no rows"),
    ({"seeds": []}, "seeds must be a non-empty list"),
    ({"rows": [{"name": "a", "overrides": {"seed": 3}}]}, "seed: set by the sweep"),
    ({"bogus": 1}, "unknown key 'bogus'"),
])
def test_a_bad_grid_is_one_line_before_anything_runs(tmp_path, capsys, change, expected):
    grid = _grid(tmp_path, **change)
    out = tmp_path / "sweep"
    assert plabel_main(["sweep", str(grid), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not out.exists()


def _status(out: Path, capsys) -> dict[tuple[str, int], str]:
    capsys.readouterr()
    assert plabel_main(["sweep", str(TINY_GRID), "--out", str(out), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    return {(line.split()[0], int(line.split()[2])): line.split()[3] for line in lines}


def test_local_sweep_runs_what_is_missing_resumes_and_writes_one_table(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert set(_status(out, capsys).values()) == {"missing"}
    assert plabel_main(["sweep", str(TINY_GRID), "--out", str(out), "--jobs", "2"]) == 0
    assert set(_status(out, capsys).values()) == {"done"}
    table = json.loads((out / "sweep.json").read_text())
    assert [r["row"] for r in table["rows"]] == ["entropy", "random"]
    for r in table["rows"]:
        finals = [json.loads((out / r["row"] / f"seed{s}" / "summary.json").read_text())["final_accuracy"] for s in (0, 1)]
        assert r["final_accuracy"][0] == pytest.approx(sum(finals) / 2) and r["complete"]
    assert (out / "sweep.md").read_text().count("|") > 10 and (out / "sweep.csv").is_file() and (out / "sweep.png").is_file()
    before = (out / "sweep.md").read_text()
    # A lost run: only it runs again, and the table is the same (the same command, threads and seed).
    shutil.rmtree(out / "random" / "seed1")
    assert _status(out, capsys)[("random", 1)] == "missing"
    capsys.readouterr()
    assert plabel_main(["sweep", str(TINY_GRID), "--out", str(out), "--jobs", "2"]) == 0
    ran = capsys.readouterr().out
    assert "random seed 1 done" in ran and "entropy seed 0" not in ran
    assert (out / "sweep.md").read_text() == before
    # Nothing left: nothing runs.
    assert plabel_main(["sweep", str(TINY_GRID), "--out", str(out)]) == 0
    assert "every run is done" in capsys.readouterr().out


def test_status_names_a_failed_run_with_its_error_and_the_table_marks_missing_seeds(tmp_path, capsys):
    grid = _grid(tmp_path, rows=[
        {"name": "ok", "description": "runs", "overrides": {}},
        {"name": "broken", "description": "its data is not there", "overrides": {"data.train.source": "hf", "data.train.name": "/nonexistent/data"}},
    ], seeds=[0])
    out = tmp_path / "sweep"
    assert plabel_main(["sweep", str(grid), "--out", str(out)]) == 1
    capsys.readouterr()
    assert plabel_main(["sweep", str(grid), "--out", str(out), "--status"]) == 0
    status = capsys.readouterr().out
    broken = next(line for line in status.splitlines() if line.strip().startswith("broken"))
    assert "failed" in broken and "exit 2" in broken and "data.train.name" in broken
    md = (out / "sweep.md").read_text()
    assert "**0 of 1**" in md and "missing seeds" in md


def test_sweep_runs_join_one_wandb_group_with_row_job_type_and_tags(tmp_path, capsys):
    from wandb_records import of_type

    grid = _grid(tmp_path, seeds=[0], rows=[{"name": "entropy", "description": "", "overrides": {"tracking.mode": "offline"}}])
    out = tmp_path / "sweep"
    assert plabel_main(["sweep", str(grid), "--out", str(out)]) == 0
    (log,) = (out / "entropy" / "seed0" / "wandb").glob("offline-run-*/*.wandb")
    (run,) = of_type(log, "run")
    assert run.run_group == "tiny" and run.job_type == "entropy" and list(run.tags) == ["entropy", "seed0"]


def test_wandb_sweep_file_is_yaml_whose_command_train_py_parses(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert plabel_main(["sweep", str(TINY_GRID), "--out", str(out), "--wandb-sweep"]) == 0
    spec = yaml.safe_load((out / "wandb-sweep.yaml").read_text())
    assert spec["method"] == "grid" and spec["command"] == ["${env}", "python", "${program}", "${args}"]
    assert spec["parameters"]["row"]["values"] == ["entropy", "random"] and spec["parameters"]["seed"]["values"] == [0, 1]
    # What the agent passes for one grid point: --key=value for each parameter.
    params = spec["parameters"]
    argv = [f"--grid={params['grid']['value']}", f"--sweep_out={params['sweep_out']['value']}", "--row=random", "--seed=1"]
    cfg, _ = resolve_config(argv, sweep=planned_run)  # as train.py resolves it
    assert cfg.pseudo.score == "random" and cfg.seed == 1 and cfg.output_dir == str(out / "random" / "seed1")
    assert cfg.tracking.group == "tiny" and cfg.tracking.job_type == "random" and cfg.tracking.tags == ["random", "seed1"]
    assert cfg.train.steps_per_epoch == 3  # the grid's options


@pytest.mark.parametrize("argv,expected", [
    (["bogus=1"], "bogus=1: expected key=value with a train.py option"),
    (["pseudo.score=randm"], "pseudo.score"),
    (["--rows", "nope"], "no row 'nope'"),
    (["--rows", "random", "pseudo.top_k_percent=40"], "'pseudo.top_k_percent=40' is an option, not a row: put key=value options before --rows"),
    (["--seeds", "7"], "--seeds: 7 is not among the grid's seeds"),
])
def test_command_line_options_and_filters_are_checked(tmp_path, capsys, argv, expected):
    out = tmp_path / "sweep"
    assert plabel_main(["sweep", str(TINY_GRID), *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not out.exists()


def test_options_and_filters_run_only_the_runs_asked_for(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert plabel_main(["sweep", str(TINY_GRID), "pseudo.top_k_percent=40", "--rows", "random", "--seeds", "1", "--out", str(out)]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/seed*")) == ["random/seed1"]
    config = yaml.safe_load((out / "random" / "seed1" / "config.yaml").read_text())
    assert config["pseudo"]["top_k_percent"] == 40.0 and config["pseudo"]["score"] == "random"
    assert "**1 of 2**" in (out / "sweep.md").read_text()


def test_a_closed_pipe_ends_a_command_quietly(capfd):
    """`plabel sweep --status | head -1`: the reader closed the pipe; no traceback, exit 0."""
    from plabel.commands.common import run_command

    def body():
        raise BrokenPipeError(32, "Broken pipe")

    saved = os.dup(1)
    try:
        assert run_command("plabel sweep", body) == 0
    finally:
        os.dup2(saved, 1)
    assert "Traceback" not in capfd.readouterr().err


def test_ctrl_c_outside_training_is_one_line_and_exit_130(capsys):
    """Ctrl-C in any command outside training's own stop (plabel score's pass, a pool's listing,
    parsing): `<prog>: interrupted`, exit 130, no traceback."""
    from plabel.commands.common import run_command

    def body():
        raise KeyboardInterrupt

    assert run_command("plabel score", body) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["plabel score: interrupted"]


def test_ctrl_c_stops_a_local_sweep_without_starting_another_run(tmp_path, capsys):
    """Ctrl-C on ``plabel sweep`` (SIGINT to the terminal's whole group): the running run writes a
    checkpoint and stops, no queued run starts, one line says so, exit 130, and --status calls the
    stopped run interrupted. The executor used to start every queued run after it, traceback last."""
    import signal
    import subprocess
    import sys
    import time

    from helpers import communicate_or_dump, subprocess_env

    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "plabel.cli", "sweep", str(TINY_GRID), "train.steps_per_epoch=40", "train.epochs=3",
           "--out", str(out), "--jobs", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    log = out / "logs" / "entropy-seed0.log"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not (log.is_file() and "round 0 done" in log.read_text()):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    said = communicate_or_dump(proc, 120)
    assert proc.returncode == 130, said[-2000:]
    assert "Traceback" not in said and "1 run(s) stopped with a checkpoint, 3 not started" in said, said[-2000:]
    assert "train.py: interrupted (" in log.read_text()
    assert _status(out, capsys) == {("entropy", 0): "interrupted", ("entropy", 1): "missing",
                                    ("random", 0): "missing", ("random", 1): "missing"}
