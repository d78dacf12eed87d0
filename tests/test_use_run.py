"""Using a trained run from Python (plabel.load_run) and as a portable file (plabel export --format
onnx / torchscript): the same predictions as plabel score, the README's three lines, bad input."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import ROOT, run_train, subprocess_env, tiny
from own_data import labeled_folder, unlabeled_folder
from PIL import Image

import plabel
from plabel.config import ConfigError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny own-data run (colour pool, grey labels) with validation: final and best weights."""
    root = tmp_path_factory.mktemp("use")
    labeled_folder(root / "labeled", per_class=6)
    unlabeled_folder(root / "photos", 24)
    out = root / "run"
    args = tiny({"data.train.source": "hf", "data.train.name": str(root / "labeled"), "data.unlabeled.source": "folder",
                 "data.unlabeled.root": str(root / "photos"), "data.test_holdout": 10, "data.val_per_class": 1, "data.pool_limit": "null",
                 "data.val_scope": "rounds"})  # validated every round: a best round's weights
    done = run_train([*args, "--tracking.mode", "disabled", "--output_dir", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    return root, out


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plabel.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=subprocess_env(), timeout=300)


def test_predictions_equal_plabel_scores_and_the_readme_example_runs(trained, tmp_path):
    root, run_dir = trained
    scored = tmp_path / "scores.csv"
    done = _cli("score", "--run", str(run_dir), "--output", str(scored), "--source.source", "folder",
                "--source.root", str(root / "photos"), "--batch_size", "16", "--cpu_threads", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader(scored.open()))
    torch.set_num_threads(1)
    run = plabel.load_run(run_dir, device="cpu")
    result = run.predict(root / "photos", batch_size=16)
    by_path = {str((root / "photos" / r["path"])): r for r in rows}
    readable = [k for k, e in enumerate(result.errors) if e is None]
    assert len(readable) == len(rows) - 1  # the pool's broken.png: an error entry here, a NaN row there
    for k in readable:
        row = by_path[result.inputs[k]]
        assert int(row["prediction"]) == int(result.labels[k]) and row["prediction_name"] == result.names[k]
        assert float(row["entropy"]) == pytest.approx(float(result.entropy[k]), rel=1e-6, abs=1e-7)
        assert float(row["max_probability"]) == pytest.approx(float(result.probabilities[k].max()), rel=1e-6)
    broken = [e for e in result.errors if e]
    assert len(broken) == 1 and "broken.png" in broken[0] and result.labels[result.errors.index(broken[0])] == -1
    # The README's example, as written there (between the markers), on this run and folder.
    text = (ROOT / "README.md").read_text()
    example = text.split("<!-- load_run example -->")[1].split("```python")[1].split("```")[0]
    example = example.replace("runs/mine", str(run_dir)).replace("photos/", str(root / "photos") + "/")
    done = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert done.returncode == 0 and len(done.stdout.splitlines()) >= 1, done.stderr[-2000:]


def test_inputs_of_every_kind_give_the_same_prediction(trained):
    root, run_dir = trained
    run = plabel.load_run(run_dir, device="cpu")
    path = next(p for p in sorted((root / "photos").rglob("img*.png")))
    pil = Image.open(path)
    array = np.asarray(pil)
    kinds = [str(path), path, pil, array, torch.from_numpy(array.copy()) if array.ndim == 2 else torch.from_numpy(array).permute(2, 0, 1)]
    results = [run.predict(k) for k in kinds]
    assert all(r.labels.tolist() == results[0].labels.tolist() for r in results)
    assert all(torch.allclose(r.probabilities, results[0].probabilities) for r in results)
    assert run.preprocess(path).shape == (run.spec.channels, *run.spec.size)
    odd = run.predict([Image.new("RGBA", (50, 13), (9, 200, 30, 120)), np.zeros((7, 9), dtype=np.uint8)])
    assert odd.errors == [None, None] and odd.probabilities.shape == (2, len(run.class_names))  # other modes and sizes: converted


def test_bad_runs_and_bad_inputs_are_one_line(trained, tmp_path):
    root, run_dir = trained
    with pytest.raises(ConfigError, match="is not a plabel run folder"):
        plabel.load_run(root / "labeled")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run_dir, unfinished)
    (unfinished / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"has no model.safetensors, so no final weights .*checkpoint='newest'"):
        plabel.load_run(unfinished)
    assert plabel.load_run(unfinished, checkpoint="newest").weights.parent.name.startswith("ckpt-")
    assert plabel.load_run(run_dir, checkpoint="best").weights.name == "model_best.safetensors"
    (unfinished / "checkpoints").rename(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="checkpoint: .* has no checkpoints"):
        plabel.load_run(unfinished, checkpoint="newest")
    run = plabel.load_run(run_dir)
    with pytest.raises(ConfigError, match="is not an image"):
        run.predict([{"not": "an image"}])
    missing = run.predict([root / "nowhere.png"])
    assert missing.labels.tolist() == [-1] and "no such file" in missing.errors[0]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_files_give_the_models_outputs(trained, tmp_path, fmt):
    root, run_dir = trained
    out = tmp_path / fmt
    done = _cli("export", "--run", str(run_dir), "--format", fmt, "--output", str(out))
    assert done.returncode == 0 and "wrote" in done.stdout, done.stderr[-2000:]
    meta = json.loads((out / "model.json").read_text())
    assert meta["class_names"] == plabel.load_run(run_dir).class_names and meta["input"]["height"] == 28
    run = plabel.load_run(run_dir, device="cpu")
    x = torch.stack([run.preprocess(p) for p in sorted((root / "photos").rglob("img*.png"))[:5]])
    want = run.model(x).detach()
    if fmt == "onnx":
        import onnxruntime

        got = torch.from_numpy(onnxruntime.InferenceSession(str(out / meta["file"])).run(None, {meta["input_name"]: x.numpy()})[0])
    else:
        got = torch.jit.load(str(out / meta["file"]))(x).detach()
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)
    again = _cli("export", "--run", str(run_dir), "--format", fmt, "--output", str(out))
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize("name,channels,size", [("small_cnn", 1, 28), ("timm/test_resnet", 3, 32), ("torchvision/mobilenet_v3_small", 3, 32)])
def test_export_covers_the_builtin_a_timm_and_a_torchvision_network(tmp_path, name, channels, size):
    """The export path on each library's networks (built here, untrained: the file must compute what they compute)."""
    from plabel.config import RunConfig
    from plabel.models.zoo import build_model
    from plabel.use.export import export_model
    from plabel.use.run import Run

    torch.manual_seed(0)
    cfg = RunConfig()
    cfg.model.name = name
    info = {"num_classes": 5, "channels": channels, "data_channels": channels, "image_size": [size, size], "class_names": list("abcde"),
            "input": {"channels": channels, "size": [size, size], "mean": [0.5] * channels, "std": [0.5] * channels}}
    model = build_model(name, channels, 5).eval()
    run = Run(tmp_path, cfg, info, model, tmp_path / "model.safetensors", torch.device("cpu"), torch.float32)
    x = torch.randn(3, channels, size, size)
    want = model(x).detach()
    onnx_file = export_model(run, tmp_path / "onnx", "onnx")
    ts_file = export_model(run, tmp_path / "ts", "torchscript")
    import onnxruntime

    got = torch.from_numpy(onnxruntime.InferenceSession(str(onnx_file)).run(None, {"input": x.numpy()})[0])
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), name
    assert torch.allclose(torch.jit.load(str(ts_file))(x).detach(), want, rtol=1e-5, atol=1e-6), name
