"""Progress of a long run on stderr: a live line on a terminal, periodic lines in CI logs.

The rate and the time left come from the recent completions, not from the start: the first
answers wait for the engine to prefill every prompt in flight, so a run that took 40 s
showed ``eta 3901s`` when the rate was counted from its start. Lines come on the clock
(every 15 s in a log, 5 a second on a terminal), whatever the answers' rhythm.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

# The rate is measured over this many seconds of completions (all of them, if fewer).
WINDOW_S = 60.0
# Completion times kept at most this often: a bounded window at any rate.
_RESOLUTION_S = 0.1


class Progress:
    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO | None = None,
        enabled: bool = True,
        accuracy: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``accuracy`` False leaves the accuracy out: work without verdicts (scoring,
        capture). ``clock`` is for tests."""
        self.total = total
        self.accuracy = accuracy
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.done = 0
        self.errors = 0
        self.correct = 0
        self._clock = clock
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        # On a terminal redraw often; in a log, one line every 15 s keeps CI output readable.
        self._interval = 0.2 if self._tty else 15.0
        # (time, done) at completions in the last WINDOW_S, plus the one just before it.
        self._recent: deque[tuple[float, int]] = deque()
        self._next = 0.0
        self.restart()

    def restart(self) -> None:
        """Start the clock now (after the engine is up), keeping counts of resumed work."""
        now = self._clock()
        self._recent.clear()
        self._next = now + self._interval

    def update(self, correct: bool | None, error: bool) -> None:
        self.done += 1
        self.errors += int(error)
        self.correct += int(bool(correct))
        now = self._clock()
        if not self._recent or now - self._recent[-1][0] >= _RESOLUTION_S:
            self._recent.append((now, self.done))
        while len(self._recent) > 2 and self._recent[1][0] <= now - WINDOW_S:
            self._recent.popleft()
        if self.done == self.total or now >= self._next:
            while self._next <= now:
                self._next += self._interval
            self._emit(now)

    def rate(self, now: float) -> float | None:
        """Completions per second since the oldest one in the window; None before there are
        two (the first answer's wait says nothing about the pace that follows)."""
        if len(self._recent) < 2:
            return None
        since, done = self._recent[0]
        return (self.done - done) / (now - since) if now > since else None

    def _emit(self, now: float) -> None:
        if not self.enabled:
            return
        rate = self.rate(now)
        left = self.total - self.done
        if left == 0:
            eta = "0s"
        elif rate:
            eta = f"{left / rate:.0f}s"
        else:
            eta = "?"
        speed = "?" if rate is None else f"{rate:.2f}"
        scored = self.done - self.errors
        acc = f"{self.correct / scored:.1%}" if scored else "-"
        shown = f"acc {acc}  " if self.accuracy else ""
        line = (
            f"{self.label} [{self.done}/{self.total}] {speed} req/s  {shown}"
            f"errors {self.errors}  eta {eta}"
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
