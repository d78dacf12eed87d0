"""Progress of the training and scoring passes: a tqdm bar on a terminal, plain lines elsewhere.

SLURM logs and CI capture stderr in files, where carriage-return updates pile up into one huge
line and the next message is glued to a half-drawn bar. There, a line is printed every
``every_s`` seconds (and at the end) instead. Only the main process reports.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

from tqdm.auto import tqdm


class Progress:
    """``update()`` once per step or batch; ``close()`` at the end (prints the last plain line)."""

    def __init__(self, total: int, desc: str, enabled: bool, initial: int = 0, unit: str = "steps", every_s: float = 30.0) -> None:
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.done, self.started, self.last_line = initial, time.monotonic(), time.monotonic()
        self.initial = initial
        self.enabled = enabled and total > 0
        self.bar: Optional[Any] = None
        if self.enabled and sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.last_line >= self.every_s:
            self._line()

    def _line(self) -> None:
        elapsed = time.monotonic() - self.started
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        print(f"{self.desc}: {self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%), "
              f"{rate:.1f} {self.unit}/s", file=sys.stderr, flush=True)
        self.last_line = time.monotonic()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and self.done > self.initial:
            self._line()
        self.enabled = False
