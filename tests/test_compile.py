"""train.compile: a compiled run trains, checkpoints and resumes to identical results, on 1 and 2
processes. The default run uses torch.compile's aot_eager backend (the whole compile path, no
kernel generation: inductor's C++ build takes about a minute a run on a 2-core CPU); the slow
marker runs the same checks with inductor where a C compiler is present."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from helpers import ROOT, launch_command, subprocess_env, tiny
from safetensors.torch import load_file

ARGS = tiny({"train.steps_per_epoch": 4, "pseudo.rounds": 1, "checkpoint.every_steps": 3, "train.compile": "true"})
BACKENDS = ["aot_eager", pytest.param("inductor", marks=[pytest.mark.slow, pytest.mark.skipif(
    not (shutil.which("cc") or shutil.which("gcc")), reason="inductor on CPU needs a C compiler")])]


def _run(out, processes: int, backend: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = subprocess_env(**({"PLABEL_FAULT": fault} if fault else {}))
    cmd = launch_command([str(ROOT / "train.py"), *ARGS, "--train.compile_backend", backend, "--output_dir", str(out)], processes)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)


@pytest.mark.parametrize("backend", BACKENDS)
# Two processes: -m slow (CI time, 40 s); one process compiles, trains, and resumes the same way.
@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_a_compiled_run_trains_and_resumes_identically(tmp_path, processes, backend):
    whole = _run(tmp_path / "whole", processes, backend)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "torch.compile: round 0's first step took" in whole.stdout
    killed = _run(tmp_path / "resumed", processes, backend, fault="step:11@0:kill")  # round 1, after its step-9 checkpoint
    assert killed.returncode != 0 and not (tmp_path / "resumed" / "summary.json").exists()
    resumed = _run(tmp_path / "resumed", processes, backend)
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout, resumed.stderr[-3000:]
    a, b = (json.loads((tmp_path / name / "summary.json").read_text())["rounds"] for name in ("whole", "resumed"))
    assert a == b
    assert (tmp_path / "whole" / "pseudo_labels_round01.csv").read_text() == (tmp_path / "resumed" / "pseudo_labels_round01.csv").read_text()
    wa, wb = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("whole", "resumed"))
    assert wa.keys() == wb.keys() and all(wa[k].equal(wb[k]) for k in wa)
    assert not any(k.startswith("_orig_mod.") for k in wa)  # plain keys: plabel score and load_run read them
    import plabel

    assert plabel.load_run(tmp_path / "whole", device="cpu").predict(ROOT / "README.md").errors[0]  # loads; a non-image is an error entry
