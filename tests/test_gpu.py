"""The GPU code paths against the CPU reference (marker ``gpu``: on CUDA when there is one), the
same checks on the CPU, and the GPU check's smoke mode (every stage on the CPU, toy sizes)."""

import json
import subprocess

import pytest
import torch
from accelerate import Accelerator
from helpers import ROOT, subprocess_env

from plabel.bench.gpu_checks import run_all


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_gpu_paths_match_the_cpu_reference():
    rows = run_all(torch.device("cuda"), Accelerator())
    assert all(ok for _, ok, _ in rows), [r for r in rows if not r[1]]


def test_the_checks_pass_on_the_cpu():
    rows = run_all(torch.device("cpu"), Accelerator(cpu=True))
    assert len(rows) >= 15 and all(ok for _, ok, _ in rows), [r for r in rows if not r[1]]


# CI time: the whole device script on CPU runs with -m slow (before every device session); the
# checks it runs are the previous test's, which runs by default.
@pytest.mark.slow
def test_gpu_check_smoke_runs_every_stage_and_writes_results(tmp_path):
    done = subprocess.run(
        ["bash", str(ROOT / "scripts/gpu_check.sh"), "--smoke", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=ROOT, env=subprocess_env(), timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["stages"]) == {"checks", "select", "quickstart", "speed", "pool", "launch", "compile", "data"}
    assert all(stage["ok"] for stage in results["stages"].values())
    assert results["stages"]["select"]["identical"] is True
    text = (tmp_path / "out" / "results.md").read_text()
    assert "### Quick start on one GPU" in text and "Stages not ok: none" in text
