"""Any timm or torchvision model by name, pretrained weights offline first, user weights with a
head that does not fit, and the input each model takes. No network: weights are made here."""

import json
import os
from pathlib import Path

import pytest
import torch
from helpers import run_train, tiny
from safetensors.torch import save_file

from plabel.config import ConfigError, load_config
from plabel.data.transforms import InputSpec, build_transform
from plabel.models.weights import load_matching, read_weights

TINY = tiny({"train.eval_batch_size": 50})


def _ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize(
    "name, processes, expect",
    [
        pytest.param("timm/test_resnet", 1, "model timm/test_resnet: input 1x28x28", marks=pytest.mark.slow),  # in_chans follows the data; the 2-process case below is the default run's
        ("timm/test_resnet", 2, "model timm/test_resnet: input 1x28x28"),
        ("torchvision/mobilenet_v3_small", 1, "input 3x28x28 (grey images repeated to 3 channels)"),
        pytest.param("torchvision/mobilenet_v3_small", 2, "input 3x28x28 (grey images repeated to 3 channels)", marks=pytest.mark.slow),
        ("timm/test_vit", 1, "model timm/test_vit: input 1x160x160"),  # a fixed-size model gets its size
    ],
)
def test_library_models_train_end_to_end(tmp_path, name, processes, expect):
    out = tmp_path / "run"
    stdout = _ok(run_train([*TINY, "--model.name", name, "--output_dir", str(out)], processes=processes))
    assert expect in stdout
    info = json.loads((out / "run_info.json").read_text())
    assert info["model"] == name and info["num_classes"] == 10 and info["data_channels"] == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_processes"] == processes and [r["round_index"] for r in summary["rounds"]] == [0, 1]


def _fake_hub_cache(home: Path, repo: str, state: dict) -> Path:
    """The layout huggingface_hub writes: models--<org>--<name>/{refs/main, snapshots/<rev>/...}."""
    folder = home / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0123abcd")
    (folder / "snapshots" / "0123abcd").mkdir(parents=True)
    path = folder / "snapshots" / "0123abcd" / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_timm_pretrained_from_the_hub_cache_offline(tmp_path):
    import timm

    pretrained = timm.create_model("test_resnet", num_classes=1000).state_dict()
    path = _fake_hub_cache(tmp_path / "hf", "timm/test_resnet.r160_in1k", pretrained)
    out = tmp_path / "run"
    args = [*TINY, "--model.name", "timm/test_resnet", "--model.pretrained", "true", "--data.image_size", "32",
            "--output_dir", str(out)]
    stdout = _ok(run_train(args, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1"))
    assert f"pretrained weights: {path}" in stdout
    assert "classifier head re-initialised for 10 classes (the pretrained one has 1000)" in stdout
    assert "input 3x32x32 (grey images repeated to 3 channels)" in stdout  # RGB weights kept as trained
    spec = json.loads((out / "run_info.json").read_text())["input"]
    assert spec["mean"] == [0.5, 0.5, 0.5] and spec["interpolation"] == "bilinear"  # test_resnet's pretrained cfg


def test_torchvision_pretrained_from_torch_home_offline(tmp_path):
    import torchvision.models as tv

    weights = tv.get_model_weights("squeezenet1_1").DEFAULT
    target = tmp_path / "th" / "hub" / "checkpoints" / os.path.basename(weights.url)
    target.parent.mkdir(parents=True)
    torch.save(tv.squeezenet1_1(num_classes=1000).state_dict(), target)
    out = tmp_path / "run"
    args = [*TINY, "--model.name", "torchvision/squeezenet1_1", "--model.pretrained", "true", "--data.image_size", "64",
            "--output_dir", str(out)]
    stdout = _ok(run_train(args, TORCH_HOME=str(tmp_path / "th")))
    assert f"starting weights: {target}" in stdout
    assert "classifier head (" in stdout and "re-initialised" in stdout  # squeezenet's head is a conv: shape differs
    spec = json.loads((out / "run_info.json").read_text())["input"]
    assert spec["mean"] == pytest.approx([0.485, 0.456, 0.406]) and spec["size"] == [64, 64]


def test_user_weights_file_with_another_head_and_a_run_folder(tmp_path):
    import timm

    file = tmp_path / "mine.safetensors"
    save_file(timm.create_model("test_resnet", num_classes=7, in_chans=1).state_dict(), str(file))
    first = tmp_path / "first"
    stdout = _ok(run_train([*TINY, "--model.name", "timm/test_resnet", "--model.weights", str(file), "--output_dir", str(first)]))
    assert "starting weights:" in stdout and "classifier head (fc.bias, fc.weight) re-initialised" in stdout
    # Continue from the finished run's folder: same classes, so nothing is re-initialised.
    second = tmp_path / "second"
    stdout = _ok(run_train([*TINY, "--model.name", "timm/test_resnet", "--model.weights", str(first), "--output_dir", str(second)]))
    assert f"starting weights: {first}" in stdout and "re-initialised" not in stdout


def test_pth_checkpoints_are_read_without_pickle_code(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "c.pth")
    assert set(read_weights(str(tmp_path / "c.pth"))) == {"0.weight", "0.bias"}  # wrapper and DDP prefix removed

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth", _use_new_zipfile_serialization=True)
    with pytest.raises(ConfigError, match="model.weights: cannot read"):
        read_weights(str(tmp_path / "evil.pth"))


def test_weights_of_another_architecture_are_refused_with_the_difference():
    small = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4, 10))
    other = {"0.weight": torch.zeros(8, 1, 3, 3), "0.bias": torch.zeros(8), "2.weight": torch.zeros(5, 4), "2.bias": torch.zeros(5)}
    with pytest.raises(ConfigError, match=r"does not match this model \(2 tensors differ: 0.weight: \(8, 1, 3, 3\) there"):
        load_matching(small, other, "w.safetensors", 10)
    head_only = {k: v for k, v in small.state_dict().items()}
    head_only["2.weight"], head_only["2.bias"] = torch.zeros(5, 4), torch.zeros(5)
    notes = load_matching(small, head_only, "w.safetensors", 10)
    assert notes and "2.bias, 2.weight" in notes[0]


def test_bad_model_options_fail_with_one_line(tmp_path):
    with pytest.raises(ConfigError, match="model.pretrained: give model.pretrained or model.weights, not both"):
        load_config(None, {"model.name": "timm/test_resnet", "model.pretrained": True, "model.weights": str(tmp_path)})
    with pytest.raises(ConfigError, match="did you mean small_cnn"):
        load_config(None, {"model.name": "small_cn"})
    with pytest.raises(ConfigError, match=r"data.image_size: give one positive size or \[height, width\]"):
        load_config(None, {"data.image_size": [1, 2, 3]})
    assert load_config(None, {"data.image_size": [48, 64]}).data.image_hw() == (48, 64)


def test_pretrained_offline_without_cache_stops_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    args = [*TINY, "--model.name", "timm/test_resnet", "--model.pretrained", "true", "--output_dir", str(out)]
    proc = run_train(args, HF_HOME=str(tmp_path / "empty"), HF_HUB_OFFLINE="1")
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("train.py: error: model.pretrained: no cached weights for timm/test_resnet in ")
    assert str(tmp_path / "empty" / "hub") in line and "model.weights" in line
    assert not out.exists()


def test_transform_resizes_repeats_grey_and_normalises_with_the_spec():
    spec = InputSpec(3, (20, 30), (0.1, 0.2, 0.3), (0.5, 0.5, 0.5), "bicubic", 0.875)
    image = torch.full((1, 50, 41), 255, dtype=torch.uint8)
    evaluated = build_transform(1, spec, "light", train=False)(image)
    assert evaluated.shape == (3, 20, 30)
    assert torch.allclose(evaluated[:, 10, 15], torch.tensor([1.8, 1.6, 1.4]))  # (1 - mean) / std per channel
    for augment in ("light", "strong"):
        assert build_transform(3, spec, augment, train=True)(torch.zeros(3, 90, 70, dtype=torch.uint8)).shape == (3, 20, 30)
        big = InputSpec(3, (96, 96), (0.5,) * 3, (0.5,) * 3)
        assert build_transform(3, big, augment, train=True)(torch.zeros(3, 120, 200, dtype=torch.uint8)).shape == (3, 96, 96)


def test_weights_of_another_architecture_stop_the_run_before_anything_is_written(tmp_path):
    from plabel.models.zoo import build_model

    file = tmp_path / "small.safetensors"
    save_file(build_model("small_cnn", 1, 10).state_dict(), str(file))
    out = tmp_path / "run"
    proc = run_train([*TINY, "--model.name", "resnet18", "--model.weights", str(file), "--output_dir", str(out)])
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"train.py: error: model.weights: {file} does not match this model (")
    assert not out.exists()
