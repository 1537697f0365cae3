"""Progress of a long run on stderr: a live line on a terminal, periodic lines in CI logs."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO | None = None,
        enabled: bool = True,
        accuracy: bool = True,
    ) -> None:
        """``accuracy`` False leaves the accuracy out: work without verdicts (scoring,
        capture)."""
        self.total = total
        self.accuracy = accuracy
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.done = 0
        self.errors = 0
        self.correct = 0
        self._start = time.monotonic()
        self._resumed = 0
        self._last = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def restart(self) -> None:
        """Start the clock now (after the engine is up), keeping counts of resumed work."""
        self._start = time.monotonic()
        self._resumed = self.done
        self._last = 0.0

    def update(self, correct: bool | None, error: bool) -> None:
        self.done += 1
        self.errors += int(error)
        self.correct += int(bool(correct))
        now = time.monotonic()
        # On a terminal redraw often; in a log, one line every 15 s keeps CI output readable.
        interval = 0.2 if self._tty else 15.0
        if self.done == self.total or now - self._last >= interval:
            self._last = now
            self._emit(now)

    def _emit(self, now: float) -> None:
        if not self.enabled:
            return
        elapsed = now - self._start
        rate = (self.done - self._resumed) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta_s = f"{eta:.0f}s" if eta != float("inf") else "?"
        scored = self.done - self.errors
        acc = f"{self.correct / scored:.1%}" if scored else "-"
        shown = f"acc {acc}  " if self.accuracy else ""
        line = (
            f"{self.label} [{self.done}/{self.total}] {rate:.2f} req/s  {shown}"
            f"errors {self.errors}  eta {eta_s}"
        )
        if self._tty:
            end = "\n" if self.done == self.total else ""
            self.stream.write("\r" + line + end)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if self.enabled:
            self.stream.write(text + "\n")
            self.stream.flush()
