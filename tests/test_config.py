"""Config loading: precedence, types, ranges, --help, one-line errors."""

import subprocess
import sys
from pathlib import Path

import pytest

from plabel.config import ConfigError, RunConfig, diff_configs, flatten, load_config
from plabel.config.args import build_parser, parse_overrides, resolve_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_validate():
    cfg = load_config(None)
    assert isinstance(cfg, RunConfig)
    assert cfg.data.train.source == "embedded" and cfg.data.test.source == "holdout"
    assert cfg.data.test.split == "test"


def test_precedence_defaults_file_cli(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 3\n  lr: 0.01\ndata:\n  test:\n    source: idx\n    root: somewhere\n")
    cfg, name = resolve_config(["--config", str(f), "--train.epochs", "7", "pseudo.rounds=2", "--pseudo.top_k_percent", "[10, 20]"])
    assert name == "c"
    assert cfg.train.epochs == 7  # CLI beats file
    assert cfg.train.lr == 0.01  # file beats default
    assert cfg.train.batch_size == RunConfig().train.batch_size  # default kept
    assert cfg.data.test.source == "idx" and cfg.data.test.split == "test"  # nested default kept
    assert cfg.pseudo.top_k_percent == [10.0, 20.0]


def test_string_fields_keep_text():
    args = build_parser().parse_args(["--tracking.run_name", "007", "--tracking.entity", "null"])
    out = parse_overrides(args)
    assert out["tracking.run_name"] == "007"
    assert out["tracking.entity"] is None


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"bogus": 1}, "bogus"),
        ({"train.bogus": 1}, "train.bogus"),
        ({"train.epochs": "ten"}, "train.epochs"),
        ({"train.epochs": 1.5}, "train.epochs"),
        ({"train.epochs": -1}, "train.epochs"),
        ({"train.batch_size": 0}, "train.batch_size"),
        ({"pseudo.top_k_percent": 0}, "pseudo.top_k_percent"),
        ({"pseudo.top_k_percent": 100.5}, "pseudo.top_k_percent"),
        ({"pseudo.top_k_percent": [10, 20]}, "pseudo.top_k_percent"),  # 4 rounds by default
        ({"model.name": "vit"}, "model.name"),
        ({"data.train.source": "ftp"}, "data.train.source"),
        ({"data.train.source": "torchvision", "data.train.name": "imagenet"}, "data.train.name"),
        ({"data.labeled_per_class": 0}, "data.labeled_per_class"),
        ({"pseudo.alpha_schedule": "lee", "pseudo.lee_t1": 5, "pseudo.lee_t2": 5}, "pseudo.lee_t2"),
        ({"train.lr": 0}, "train.lr"),
        ({"data.augment": True}, "data.augment"),
    ],
)
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    message = str(err.value)
    assert message.startswith(field + ":"), message
    assert "\n" not in message


def test_fewer_rounds_than_the_default_schedule_shows_the_list_to_give():
    """`--pseudo.rounds 2` alone meets the default 4-value k schedule: the line names the values and
    spells a list the way a shell passes it."""
    with pytest.raises(ConfigError) as raised:
        load_config(None, {"pseudo.rounds": 2})
    assert str(raised.value) == (
        "pseudo.top_k_percent: has 4 values (60, 80, 90, 95) but pseudo.rounds is 2; give one per round "
        "(--pseudo.top_k_percent '[60, 80]') or a single number"
    )
    cfg, _ = resolve_config(["--pseudo.rounds", "2", "--pseudo.top_k_percent", "[60, 80]"])  # the spelled form works
    assert cfg.pseudo.top_k_percent == [60.0, 80.0]


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="--config: file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_diff_configs_lists_changed_fields():
    a = load_config(None).to_dict()
    b = load_config(None, {"train.epochs": 3, "seed": 5}).to_dict()
    assert diff_configs(a, b) == ["seed", "train.epochs"]


def test_shipped_configs_load():
    names = sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))
    assert {"default.yaml", "mnist.yaml", "fashion_mnist.yaml", "cifar10.yaml"} <= set(names)
    for p in (ROOT / "configs").glob("*.yaml"):
        first = p.read_text().splitlines()[0]
        assert first.startswith(("# plabel launch", "# accelerate launch")) and "train.py --config configs/" + p.name in first, (
            f"{p.name} must start with the command that runs it"
        )
        load_config(p)
    # configs/default.yaml spells out the built-in defaults.
    assert load_config(ROOT / "configs/default.yaml").to_dict() == load_config(None).to_dict()


def test_default_0_2_config_is_0_2s_defaults(tmp_path):
    """configs/default-0.2.yaml differs from the built-in defaults in exactly the defaults 0.3
    changed, and holds 0.2's values for them."""
    from plabel.config.defaults_history import (
        CHANGED_IN_0_3,
        CHANGED_IN_0_3_1,
        CHANGED_IN_0_3_2,
        CHANGED_IN_0_3_3,
        changed_defaults_hint,
        changed_defaults_note,
        unaugmented_data_note,
    )

    old, new = load_config(ROOT / "configs/default-0.2.yaml").to_dict(), load_config(None).to_dict()
    assert diff_configs(old, new) == sorted({**CHANGED_IN_0_3, **CHANGED_IN_0_3_1, **CHANGED_IN_0_3_2, **CHANGED_IN_0_3_3})
    flat_old, flat_new = flatten(old), flatten(new)
    for name, (was, now) in CHANGED_IN_0_3.items():
        assert flat_old[name] == was and flat_new[name] == now
    # configs/default-0.3.0.yaml: the defaults 0.3.1 changed, at 0.3.0's values, and nothing else.
    v030 = load_config(ROOT / "configs/default-0.3.0.yaml").to_dict()
    assert diff_configs(v030, new) == sorted({**CHANGED_IN_0_3_1, **CHANGED_IN_0_3_2, **CHANGED_IN_0_3_3})
    for name, (was, now) in CHANGED_IN_0_3_1.items():
        assert flatten(v030)[name] == was and flat_new[name] == now
    # configs/default-0.3.1.yaml: the default 0.3.2 changed, at 0.3.1's value, and nothing else.
    v031 = load_config(ROOT / "configs/default-0.3.1.yaml").to_dict()
    assert diff_configs(v031, new) == sorted({**CHANGED_IN_0_3_2, **CHANGED_IN_0_3_3})
    for name, (was, now) in CHANGED_IN_0_3_2.items():
        assert flatten(v031)[name] == was and flat_new[name] == now
    # configs/default-0.3.2.yaml: the default 0.3.3 changed, at 0.3.2's value, and nothing else.
    v032 = load_config(ROOT / "configs/default-0.3.2.yaml").to_dict()
    assert diff_configs(v032, new) == sorted(CHANGED_IN_0_3_3)
    for name, (was, now) in CHANGED_IN_0_3_3.items():
        assert flatten(v032)[name] == was and flat_new[name] == now
    assert changed_defaults_note(old) == ""
    # auto's fifth of a class of 2 labeled images is none: margin and scope then change nothing,
    # so a run told the split held nothing out names neither (the 0.3.1 line still names auto).
    held, none_held = changed_defaults_note(new, held_out=True), changed_defaults_note(new, held_out=False)
    assert "data.augment_margin" in held and "data.val_scope" in held
    assert "data.augment_margin" not in none_held and "data.val_scope" not in none_held
    assert "plabel 0.3.3" not in none_held and "data.val_per_class auto" in none_held
    assert changed_defaults_note(new).startswith(
        "defaults changed in plabel 0.3 that this run uses: pseudo.augment strong (0.2: same); "
        "pseudo.alpha_schedule constant (0.2: linear); pseudo.top_k_percent 60/80/90/95 (0.2: 20/40/60/80)"
    )
    # A value the config file or command line chose is not a default the run relies on, even at 0.3's value.
    best = load_config(ROOT / "configs/mnist100_best.yaml")
    assert {"pseudo.augment", "pseudo.alpha_schedule", "pseudo.top_k_percent", "data.train.source"} <= best.given
    assert changed_defaults_note(best.to_dict(), best.given) == ""
    chosen = load_config(None, {"pseudo.augment": "strong", "data.labeled.source": "embedded"})
    assert chosen.given == {"pseudo.augment", "data.train.source"} and load_config(None).given == frozenset()
    assert changed_defaults_note(chosen.to_dict(), chosen.given).startswith(
        "defaults changed in plabel 0.3 that this run uses: pseudo.alpha_schedule constant (0.2: linear); pseudo.top_k_percent"
    )
    assert "given" not in chosen.to_dict() and "given" not in flatten(chosen.to_dict())  # never saved nor compared
    # configs/default.yaml spells out the defaults: naming it still relies on them (the note prints).
    assert load_config(ROOT / "configs/default.yaml").given == frozenset()
    assert load_config(ROOT / "configs/default.yaml", {"seed": 1}).given == {"seed"}
    # A file that is invalid alone, mended on the command line, still counts as chosen.
    mended = tmp_path / "mended.yaml"
    mended.write_text("pseudo: {rounds: 1, augment: strong}\n")
    assert load_config(mended, {"pseudo.top_k_percent": 50}).given == {"pseudo.rounds", "pseudo.augment", "pseudo.top_k_percent"}
    # The hint names only changed defaults the saved run had at 0.2's value.
    assert changed_defaults_hint(["pseudo.augment", "seed"], old) != "" and "seed" not in changed_defaults_hint(["pseudo.augment", "seed"], old)
    assert changed_defaults_hint(["pseudo.augment"], new) == "" and changed_defaults_hint(["seed"], old) == ""
    # data.augment none (flips change the class) with 0.3's strong pseudo batch: a warning, not silence.
    plain = load_config(None, {"data.augment": "none"}).to_dict()
    assert unaugmented_data_note(plain).startswith("warning: data.augment is none but pseudo.augment strong")
    assert unaugmented_data_note(load_config(None, {"data.augment": "none", "pseudo.augment": "same"}).to_dict()) == ""
    assert unaugmented_data_note(new) == ""


def test_cli_error_is_one_line_and_exit_2():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--pseudo.top_k_percent", "150"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "train.py: error: pseudo.top_k_percent: 150.0 is outside (0, 100]"


def test_help_lists_every_option_with_default():
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert "--pseudo.top_k_percent" in proc.stdout and "--data.train.source" in proc.stdout
    assert "(default: 10)" in proc.stdout  # epochs
