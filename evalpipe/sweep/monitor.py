"""Progress per cell while a sweep runs, read from the store the cells write to.

The executors' workers may be on other machines, but their samples all land in one store, so
the driver follows a sweep by polling it: each cell's run (found by its configuration hash)
and how many of its items have a stored sample. A line is printed when a cell's count
changes, at most every ``interval_s`` seconds, so a long sweep shows where it is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from types import TracebackType

from evalpipe.store import open_store
from evalpipe.sweep.state import CellState

Say = Callable[[str], None]


class Monitor:
    """A background thread that reports the cells' stored samples; use it as a context."""

    def __init__(
        self, store: str | None, states: Sequence[CellState], say: Say, interval_s: float = 10.0
    ) -> None:
        self.store, self.states, self.say, self.interval_s = store, states, say, interval_s
        self.seen: dict[str, int] = {s.cell.key: s.stored for s in states}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sweep-monitor", daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception as exc:  # progress is a courtesy: a store hiccup must not end a sweep
                self.say(f"sweep progress: cannot read the store ({exc})")

    def poll(self) -> list[str]:
        """Read every unfinished cell's count once; say and return the lines that changed."""
        lines = []
        with open_store(self.store) as store:
            for s in self.states:
                if s.state == "reuse":
                    continue
                run = store.find_unfinished(s.config_hash) or store.find_finished(s.config_hash)
                if run is None:
                    continue
                count = len(store.done_item_ids(run.run_id))
                if count != self.seen.get(s.cell.key):
                    self.seen[s.cell.key] = count
                    lines.append(f"sweep progress: {s.cell.key}: {count}/{s.n_items} samples")
        for line in lines:
            self.say(line)
        return lines
