"""Runs that go wrong: bad input, corrupt checkpoints, preemption signals, a failing process."""

import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from helpers import ROOT, TINY, communicate_or_dump, launch_command, subprocess_env, tiny

from plabel.commands.train import train_main
from plabel.config.schema import RunConfig
from plabel.trainer.checkpointer import list_checkpoints


def _write_idx(folder: Path, labels: list[int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    images = struct.pack(">IIII", 2051, n, 28, 28) + bytes(range(256)) * (n * 784 // 256) + bytes(n * 784 % 256)
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(images)
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, n) + bytes(labels))


def _parquet(path: Path) -> Path:
    import datasets

    ds = datasets.Dataset.from_dict({"img": [[[0] * 28] * 28] * 4, "label": [0, 1, 0, 1]})
    ds.to_parquet(str(path))
    return path


def _error_of(argv, capsys) -> str:
    capsys.readouterr()
    code = train_main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    # Progress bars of dataset loading may come first; the error itself is one line, the last.
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    assert "Traceback" not in err
    return errors[0]


def _run_once(out: Path):
    assert train_main([*TINY, "--output_dir", str(out)]) == 0


BAD_INPUTS = {
    "unknown key": (["--train.epoch", "3"], "--train.epoch: unknown config key; run with --help"),
    "wrong type": (["--train.epochs", "three"], "train.epochs: expected int, got 'three'"),
    "k above 100": (["--pseudo.top_k_percent", "120"], "pseudo.top_k_percent: 120.0 is outside (0, 100]"),
    "k zero": (["--pseudo.top_k_percent", "0"], "pseudo.top_k_percent: 0.0 is outside (0, 100]"),
    "negative epochs": (["--train.epochs", "-1"], "train.epochs: must be >= 1, got -1"),
    "batch size 0": (["--train.batch_size", "0"], "train.batch_size: must be >= 1, got 0"),
    "too many labels": (["--data.labeled_per_class", "600"], "data.labeled_per_class: 600 requested but class 0 has only 490"),
    "unknown dataset": (["--data.train.source", "torchvision", "--data.train.name", "mnistt"], "data.train.name: unknown torchvision dataset 'mnistt'"),
    "unknown model": (["--model.name", "vit"], "model.name: unknown model 'vit'; use small_cnn, small_cnn_nobn, resnet18, timm/<name>"),
    "unknown timm model": (["--model.name", "timm/resnet5O"], "model.name: timm has no model 'resnet5O' (did you mean resnet50"),
    "unknown torchvision model": (["--model.name", "torchvision/mobilenet_v3_smal"], "model.name: torchvision has no classification model 'mobilenet_v3_smal' (did you mean mobilenet_v3_small"),
    "pretrained built-in": (["--model.pretrained", "true"], "model.pretrained: the built-in small_cnn has no library weights"),
    "weights missing": (["--model.weights", "/nonexistent/w.safetensors"], "model.weights: '/nonexistent/w.safetensors' does not exist"),
    "image size too small": (["--model.name", "timm/test_vit", "--data.image_size", "20"], "data.image_size: 20x20 does not fit timm/test_vit"),
    "labels outside classes": (["--model.num_classes", "5"], "model.num_classes: labels go up to 9 but the model has 5 outputs"),
    "empty pool": (["--data.labeled_per_class", "490"], "data.labeled_per_class: no sample is left for the unlabeled pool"),
    "resume path missing": (["--resume", "/nonexistent/ckpt-000001"], "resume: checkpoint folder '/nonexistent/ckpt-000001' does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2(case, tmp_path, capsys):
    argv, expected = BAD_INPUTS[case]
    err = _error_of([*TINY, *argv, "--output_dir", str(tmp_path / "out")], capsys)
    assert expected in err
    assert not (tmp_path / "out").exists()  # nothing created before the error


def test_dataset_folder_missing_and_empty(tmp_path, capsys):
    err = _error_of([*TINY, "--data.train.source", "idx", "--data.train.root", str(tmp_path / "nope")], capsys)
    assert "data.train.root" in err and "does not exist" in err
    (tmp_path / "empty").mkdir()
    err = _error_of([*TINY, "--data.train.source", "idx", "--data.train.root", str(tmp_path / "empty")], capsys)
    assert "data.train.root" in err


def test_class_without_samples(tmp_path, capsys):
    _write_idx(tmp_path / "idx", [0] * 30 + [2] * 30)  # class 1 is absent
    err = _error_of([*TINY, "--data.train.source", "idx", "--data.train.root", str(tmp_path / "idx"),
                     "--data.test_holdout", "10", "--data.pool_limit", "null"], capsys)
    assert "data.train: class 1 has no sample" in err


def test_missing_column(tmp_path, capsys):
    path = _parquet(tmp_path / "d.parquet")
    err = _error_of([*TINY, "--data.train.source", "hf", "--data.train.name", str(path)], capsys)
    assert "data.train.image_column" in err and "img" in err


def test_hub_dataset_unreachable_offline(capsys, monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    err = _error_of([*TINY, "--data.train.source", "hf", "--data.train.name", "someone/no-such-dataset"], capsys)
    assert "data.train.name" in err and "local" in err


def test_a_run_folder_of_0_2_defaults_names_the_changed_defaults(tmp_path, capsys):
    """The same command under plabel 0.3 meets a folder written with 0.2's defaults: the refusal
    says which defaults changed and where 0.2's are; the 0.2 config file continues the run."""
    out = tmp_path / "run"
    old = ["--config", str(ROOT / "configs/default-0.2.yaml"), *TINY, "--output_dir", str(out)]
    assert train_main(old) == 0
    printed = capsys.readouterr().out
    assert "defaults changed in plabel 0.3" not in printed  # it takes none of them
    err = _error_of([*TINY, "--output_dir", str(out)], capsys)
    assert "pseudo.augment: 'same' there, 'strong' now" in err
    assert "plabel 0.3 changed the default of pseudo.alpha_schedule, pseudo.augment; configs/default-0.2.yaml" in err
    assert "plabel 0.3.1 changed the default of data.augment, data.val_per_class; configs/default-0.3.0.yaml" in err  # every release named
    assert train_main(old) == 0 and "holds a complete run" in capsys.readouterr().out
    # A new run under 0.3's defaults says which of them it takes (TINY sets k itself).
    assert train_main([*TINY, "--output_dir", str(tmp_path / "new")]) == 0
    assert ("defaults changed in plabel 0.3 that this run uses: pseudo.augment strong (0.2: same); "
            "pseudo.alpha_schedule constant (0.2: linear); configs/default-0.2.yaml restores 0.2's") in capsys.readouterr().out
    # One it sets on the command line, to 0.3's value, is the user's choice: not named.
    assert train_main([*TINY, "--pseudo.augment", "strong", "--output_dir", str(tmp_path / "chosen")]) == 0
    assert ("defaults changed in plabel 0.3 that this run uses: pseudo.alpha_schedule constant (0.2: linear); "
            "configs/default-0.2.yaml restores 0.2's") in capsys.readouterr().out


def test_a_run_folder_of_0_3_1_resumes_under_its_config_file(tmp_path, capsys):
    """A folder written by 0.3.1 has no data.val_scope in its config.yaml (0.3.2 added it): 0.3.2's
    same command is refused, naming the change and configs/default-0.3.1.yaml, which continues it."""
    import yaml

    out = tmp_path / "run"
    old = ["--config", str(ROOT / "configs/default-0.3.1.yaml"), *TINY, "--data.labeled_per_class", "5", "--output_dir", str(out)]
    assert train_main(old) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"].pop("val_scope") == "rounds"  # as 0.3.1 wrote it
    (out / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    capsys.readouterr()
    err = _error_of([*TINY, "--data.labeled_per_class", "5", "--output_dir", str(out)], capsys)
    assert "data.val_scope: 'rounds' there, 'round0' now" in err
    assert "plabel 0.3.2 changed the default of data.val_scope; configs/default-0.3.1.yaml holds 0.3.1's defaults" in err
    assert train_main(old) == 0 and "holds a complete run" in capsys.readouterr().out


def test_output_dir_of_a_different_run_lists_differences(tmp_path, capsys):
    out = tmp_path / "run"
    _run_once(out)
    capsys.readouterr()
    err = _error_of([*TINY, "--output_dir", str(out), "--train.lr", "0.01", "--seed", "3"], capsys)
    assert "was written by a different configuration" in err
    assert "seed: 0 there, 3 now" in err and "train.lr: 0.001 there, 0.01 now" in err
    err = _error_of([*TINY, "--output_dir", str(out), "--resume", "never"], capsys)
    assert "resume is 'never'" in err
    # Same command again: the run is complete, nothing is retrained or overwritten.
    before = (out / "summary.json").read_text()
    assert train_main([*TINY, "--output_dir", str(out)]) == 0
    assert "holds a complete run" in capsys.readouterr().out
    assert (out / "summary.json").read_text() == before
    # Resuming from one of its checkpoints with another configuration names the fields.
    ckpt = list_checkpoints(out)[0]
    err = _error_of([*TINY, "--output_dir", str(tmp_path / "new"), "--resume", str(ckpt), "--pseudo.top_k_percent", "50"], capsys)
    assert err.startswith("train.py: error: resume:") and "pseudo.top_k_percent: 30.0 there, 50.0 now" in err


def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path, capsys):
    out = tmp_path / "run"
    os.environ["PLABEL_FAULT"] = "step:10@0:raise"  # round 1, after two epoch-end checkpoints
    try:
        with pytest.raises(RuntimeError, match="injected fault"):
            train_main([*TINY, "--output_dir", str(out)])
    finally:
        del os.environ["PLABEL_FAULT"]
    newest, previous = list_checkpoints(out)[:2]
    weights = newest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    assert train_main([*TINY, "--output_dir", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert f"skipping corrupt checkpoint: {weights}: contents do not match the manifest" in stdout
    assert f"resumed from {previous}" in stdout
    assert json.loads((out / "summary.json").read_text())["rounds"][-1]["round_index"] == 1


def test_nonfinite_logits_are_never_selected_and_are_counted():
    from accelerate import Accelerator
    from torch.utils.data import TensorDataset

    from plabel.trainer.round_selection import SelectionRequest, select_for_round
    from plabel.trainer.scoring_pass import ScorePlan

    class NaNForBrightInputs(torch.nn.Module):
        def forward(self, x):
            logits = torch.stack([x.sum(dim=1), -x.sum(dim=1)], dim=1) * 10
            logits[x.mean(dim=1) > 0.5] = float("nan")
            return logits

    x = torch.linspace(0, 1, 40).unsqueeze(1).repeat(1, 3)
    pool = TensorDataset(x, torch.zeros(40, dtype=torch.long), torch.arange(40))
    request = SelectionRequest(round_index=1, percent=100, num_classes=2, class_balanced=False, score="entropy", seed=0)
    picked = select_for_round(
        Accelerator(cpu=True), NaNForBrightInputs(), pool, torch.zeros(40, dtype=torch.long), request, ScorePlan(batch_size=7)
    )
    assert picked.metrics["select/nonfinite_scores"] == 20
    assert picked.selection.indices.tolist() == list(range(20))  # only the 20 finite ones, even at k = 100%
    assert torch.isfinite(picked.selected_entropy).all()
    assert float(picked.histograms["selected"].sum()) == 20


# ---- processes and signals -------------------------------------------------------------------

LONG = tiny({"train.steps_per_epoch": 12})  # time to signal mid-epoch


def _launch(args, fault=None):
    env = subprocess_env(**({"PLABEL_FAULT": fault} if fault else {}))
    cmd = launch_command([str(ROOT / "train.py"), *args], processes=2)
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(proc, marker, timeout=120):
    seen = []
    deadline = time.time() + timeout
    for line in proc.stdout:
        seen.append(line)
        if marker in line or time.time() > deadline:
            return "".join(seen)
    return "".join(seen)


def _workers(proc):
    return [p for p in psutil.Process(proc.pid).children(recursive=True) if "train.py" in " ".join(p.cmdline())]


def test_a_stuck_process_prints_its_stacks_on_sigusr2_and_goes_on():
    """`kill -USR2 <pid>` on a run prints every thread's stack and the run continues; the tests'
    timeout helper uses it to say where a hung run stood."""
    script = (
        "import os, signal, sys, time\n"
        "from plabel.trainer.faults import install_preemption_handlers\n"
        "install_preemption_handlers()\n"
        "def waiting_here():\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
        "waiting_here()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGUSR2)
    time.sleep(1)
    assert proc.poll() is None  # still running after the dump
    with pytest.raises(AssertionError) as failure:
        communicate_or_dump(proc, 2, dump_wait=1)
    assert "in waiting_here" in str(failure.value) and "timed out after 2 s" in str(failure.value)
    assert f"{proc.pid} sleeping" in str(failure.value)  # the listing is read before the kill
    assert proc.poll() is not None  # the helper killed it


@pytest.mark.parametrize(
    "how",
    # CI time: the plain SIGTERM case is the workers' case without workers; it runs with -m slow
    [pytest.param("SIGTERM to the launcher", marks=pytest.mark.slow), "SIGUSR1 to rank 1", "SIGTERM to the launcher, loader workers"],
)
def test_preemption_signal_checkpoints_and_resumes(tmp_path, how):
    out = tmp_path / "run"
    # With loader workers the launcher's SIGTERM reaches them too: they must leave it to training.
    args = [*LONG, "--output_dir", str(out), *(["--data.num_workers", "1"] if "workers" in how else [])]
    proc = _launch(args)
    _wait_for(proc, "round 0 done")
    if how.startswith("SIGTERM"):
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGTERM)  # a second signal during the save changes nothing
    else:
        ranks = sorted(_workers(proc), key=lambda p: p.environ().get("RANK", ""))
        ranks[1].send_signal(signal.SIGUSR1)
    rest = communicate_or_dump(proc, 120)  # a guard against a hang, not a clock: promptness is the step below
    assert proc.returncode != 0
    newest = list_checkpoints(out)[0]
    state = json.loads((newest / "plabel_state.json").read_text())
    # Stopped inside round 1, or exactly at the end of round 0 if the signal beat its last check.
    assert state["next_round"] == 1 and state["position"]["global_step"] >= 24, rest[-2000:]
    if "workers" in how:
        assert "DataLoader worker" not in rest and ("checkpoint (preemption)" in rest or "stopped after round 0" in rest), rest[-2000:]
    if how.startswith("SIGUSR1"):
        # Either a preemption checkpoint inside round 1, or (the signal beat the check after round
        # 0's checkpoint, which is then the one to resume from) a stop right after round 0.
        assert "preempted" in rest and ("checkpoint (preemption)" in rest or "stopped after round 0" in rest), rest[-2000:]
    resumed = _launch(args)
    log = communicate_or_dump(resumed, 300)
    assert resumed.returncode == 0, log[-3000:]
    assert f"resumed from {newest}" in log
    assert (out / "summary.json").is_file()


@pytest.mark.parametrize("launcher, processes, presses, tracking", [
    ("plabel launch", 1, 1, "offline"),  # accelerate's one-process launcher also SIGTERMs the tree, W&B's helper too
    ("plabel launch", 2, 1, "disabled"),  # torch's agent forwards SIGINT to the ranks
    ("python", 1, 2, "disabled"),
    ("plabel launch", 1, 0, "offline"),  # no press: SIGTERM to the launcher alone, passed on to the run
])
def test_ctrl_c_stops_with_one_line_and_resumes(tmp_path, launcher, processes, presses, tracking):
    """Ctrl-C (and a scheduler's SIGTERM to a one-process launcher alone). Ctrl-C in a terminal sends SIGINT to the whole foreground group (launcher, training
    processes, loader workers). The first press is a stop request like a scheduler's (a checkpoint
    at the next step), a second stops at once; either way one line, exit 130, no traceback (W&B's
    atexit hook included), nothing left running, and the same command resumes. It was a
    KeyboardInterrupt traceback from every process and another from W&B's atexit hook."""
    out = tmp_path / "run"
    args = [*tiny({"train.steps_per_epoch": 40, "train.epochs": 3, "tracking.mode": tracking, "data.num_workers": 1}),
            "--output_dir", str(out)]
    env = subprocess_env(WANDB_DIR=str(tmp_path / "wandb"))
    if launcher == "plabel launch":
        cmd = [sys.executable, "-m", "plabel.cli", "launch", str(ROOT / "train.py"), *args]
    else:
        cmd = launch_command([str(ROOT / "train.py"), *args], processes)

    def start() -> subprocess.Popen:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    proc = start()
    _wait_for(proc, "round 0 done")
    tree = [proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))]
    for _ in range(presses):
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.05)
    if not presses:
        proc.send_signal(signal.SIGTERM)
    rest = communicate_or_dump(proc, 120)
    assert proc.returncode == (130 if presses else 75), rest[-3000:]
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest and "death signal" not in rest, rest[-3000:]
    assert "could not close the wandb tracker" not in rest, rest[-3000:]  # W&B's helper outlived the stop
    lines = [line for line in rest.splitlines() if line.startswith(("train.py: interrupted", "train.py: preempted"))]
    assert len(lines) == 1, rest[-3000:]
    if presses != 2:
        assert "checkpoint written" in lines[0] or "stopped after round 0" in lines[0], lines
    time.sleep(1.0)
    assert not [pid for pid in tree if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    newest = list_checkpoints(out)[0]
    resumed = start()
    log = communicate_or_dump(resumed, 300)
    assert resumed.returncode == 0, log[-3000:]
    assert f"resumed from {newest}" in log and (out / "summary.json").is_file()


def test_loader_workers_survive_a_signal_the_moment_they_start():
    """A launcher signals the whole process group, loader workers included, at any moment: also
    in the instant after a round's loader forks them, before their init function runs (a worker
    died of it there, 1 run in 3). Signalled right at the start, every time, they load on."""
    from torch.utils.data import DataLoader

    from plabel.trainer.setup import LoaderOptions

    kwargs = LoaderOptions(num_workers=2).dataloader_kwargs()
    me = psutil.Process()
    for _ in range(5):
        before = {p.pid for p in me.children()}  # the suite may have left children of its own
        batches = iter(DataLoader(list(range(40)), batch_size=4, **kwargs))
        workers = [p for p in me.children() if p.pid not in before]
        assert len(workers) == 2
        for worker in workers:
            os.kill(worker.pid, signal.SIGTERM)
            os.kill(worker.pid, signal.SIGUSR1)
        assert torch.cat(list(batches)).tolist() == list(range(40))


def test_a_process_leaving_with_a_loader_still_iterating_exits():
    """The workers ignore SIGTERM, which is what multiprocessing's exit handler sends them before
    it joins them: leaving with a loader mid-epoch (an exception, a test's failed assertion) hung
    forever. Their terminate is a SIGKILL."""
    script = (
        "import sys\nfrom torch.utils.data import DataLoader\nfrom plabel.trainer.setup import LoaderOptions\n"
        "it = iter(DataLoader(list(range(40)), batch_size=4, **LoaderOptions(num_workers=2).dataloader_kwargs()))\n"
        "next(it)\nsys.exit(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT, env=subprocess_env())
    assert done.returncode == 0, done.stderr[-2000:]


def test_one_failing_process_ends_the_job_quickly(tmp_path):
    proc = _launch([*LONG, "--output_dir", str(tmp_path / "run")], fault="step:5@1:raise")
    # Rank 0 left waiting in a collective for the failed rank would hold the job for the collective
    # timeout: the guard, half of it, fails such a job on any machine however fast or slow.
    assert RunConfig().collective_timeout_s >= 2 * 300
    log = communicate_or_dump(proc, 300)
    assert proc.returncode != 0
    assert "injected fault at step:5 on rank 1" in log
    assert "round 1" not in log  # ended where rank 1 failed, not after rank 0 trained on alone
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
