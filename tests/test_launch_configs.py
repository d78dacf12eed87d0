"""Dry check of every accelerate config in launch/: Accelerate parses it, and its header says how
to use it. (The CPU ones also run for real in the multi-process tests.)"""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

LAUNCH = Path(__file__).resolve().parents[1] / "launch"
EXPECTED = {
    "cpu_2proc.yaml": (DistributedType.MULTI_GPU, 2, "no"),
    "multi_gpu.yaml": (DistributedType.MULTI_GPU, 8, "no"),
    "multi_gpu_bf16.yaml": (DistributedType.MULTI_GPU, 8, "bf16"),
    "multi_node.yaml": (DistributedType.MULTI_GPU, 16, "no"),
    "single_gpu.yaml": (DistributedType.NO, 1, "no"),
}


def test_every_launch_config_is_checked():
    assert sorted(p.name for p in LAUNCH.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_launch_config_parses_and_documents_its_command(name):
    config = load_config_from_file(str(LAUNCH / name))
    assert (config.distributed_type, config.num_processes, str(config.mixed_precision)) == EXPECTED[name]
    header = []
    for line in (LAUNCH / name).read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert f"--config_file launch/{name}" in text and "train.py" in text, "the header must show the command"
