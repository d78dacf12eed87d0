"""The README's quick-start output is what a run prints (issue 36).

The README shows the default experiment's screen, copied from a real run. This test runs the same
default experiment in a tiny budget and asserts that every line the README shows (all but its
"..." elisions) is a line the run prints, in the same order, with numbers, times and paths free:
a change to what the run prints that the README does not follow fails here."""

from __future__ import annotations

import re

from helpers import ROOT

from plabel.commands.train import train_main

NUMBER = r"[-+]?\d[\d,]*(?:\.\d+)?"


def readme_quickstart_block() -> list[str]:
    """The lines of the README's first code block after "It prints" (the quick start's screen)."""
    text = (ROOT / "README.md").read_text()
    start = text.index("It prints")
    block = re.search(r"```\n(.*?)```", text[start:], re.S)
    assert block, "README: no code block after 'It prints'"
    return [line for line in block.group(1).splitlines() if line.strip()]


def line_pattern(line: str) -> re.Pattern[str]:
    """A README line as a pattern: numbers, the run folder, the W&B run id and padding may differ."""
    if line.startswith("best round by validation: "):  # its wording depends on which round won
        return re.compile(rf"^best round by validation: {NUMBER} \(.+weights.*$")
    out = re.escape(line)
    out = out.replace(re.escape("runs/default-seed0"), r"\S+")
    out = out.replace(re.escape("offline-run-..."), r"offline-run-\S+")
    out = out.replace(re.escape("config: the defaults"), "config: .+")  # the test's small budget is shown there
    out = out.replace(re.escape("data.augment auto: light "), r"data\.augment\ auto:\ (?:light|none)\ ")  # the tiny budget's choice may differ
    out = re.sub(r"(?<![A-Za-z_])(?:\\[-+])?\d[\d,]*(?:\\\.\d+)?", lambda _m: NUMBER, out)  # signed too
    out = re.sub(r"(?:\\ )+", lambda _m: r"\s+", out)  # table columns pad to the widest number
    return re.compile(rf"^{out}$")


def test_the_readme_quick_start_screen_is_what_a_run_prints(tmp_path, capsys):
    # "..." elides checkpoint lines; the "plabel launch:" line is the launcher's (tests/test_launch_errors.py).
    shown = [line for line in readme_quickstart_block() if line.strip() != "..." and not line.startswith("plabel launch:")]
    assert len(shown) >= 12  # the header, the notes, the round lines and the table
    argv = ["--train.epochs", "1", "--train.steps_per_epoch", "2", "--tracking.mode", "offline",
            "--output_dir", str(tmp_path / "runs" / "default-seed0")]
    assert train_main(argv) == 0
    printed = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    at = 0
    for line in shown:
        pattern = line_pattern(line)
        while at < len(printed) and not pattern.match(printed[at]):
            at += 1
        assert at < len(printed), f"README quick start line not printed (in this order) by the run: {line!r}"
        at += 1
