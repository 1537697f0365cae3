"""One process per run: the ``run_holders`` row that says which process is running a run.

Two processes on one run (the same command started twice: both resume the one unfinished
run of their configuration) would send every remaining item twice and race to store each
answer. So a run is *held*: the first process claims it, the second is refused with a
message that names the holder (process id, host, since when, last seen), before it sends
anything. The holder refreshes its row every :data:`HEARTBEAT_S` seconds from a background
thread and deletes it when it stops.

A holder that died without deleting its row (``kill -9``, a lost node) is taken over:
at once when it ran on this host and its process is gone, otherwise once it has not been
seen for :data:`STALE_S` seconds. A holder that finds its row taken over (it stalled past
that) stops before its next write (:meth:`Claim.check`). Times are each writer's clock:
hosts sharing a store should keep their clocks within a few seconds (NTP).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from evalpipe.errors import EvalpipeError, StoreError
from evalpipe.records import utcnow
from evalpipe.store import Store
from evalpipe.store.schema import run_holders

HEARTBEAT_S = 10.0
"""How often a holder says it is alive."""

STALE_S = 60.0
"""A holder on another host not seen for this long is taken to be gone (six heartbeats)."""


@dataclass(frozen=True)
class Holder:
    """Who runs a run: the process ``pid`` on ``host``, since ``started_at``, last seen at
    ``seen_at`` (seconds since the epoch, the holder's clock); ``token`` tells claims apart."""

    run_id: str
    token: str
    host: str
    pid: int
    started_at: str
    seen_at: float


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def _gone(h: Holder, now: float) -> bool:
    """Whether holder ``h`` may be taken over: its process is gone (on this host), or it
    has not been seen for :data:`STALE_S` seconds."""
    if h.host == socket.gethostname() and not _alive(h.pid):
        return True
    return now - h.seen_at > STALE_S


def refusal(h: Holder, now: float) -> str:
    """Why a second process may not run ``h.run_id``, and what to do."""
    return (
        f"run {h.run_id} is being run by process {h.pid} on {h.host} (since {h.started_at}, "
        f"last seen {max(0.0, now - h.seen_at):.0f} s ago): two processes on one run would "
        "generate its items twice. Wait for it to finish, or stop it (its samples are kept) "
        "and run the same command again; a holder not seen for "
        f"{STALE_S:.0f} s is taken over."
    )


def _read(conn: Connection, run_id: str) -> Holder | None:
    query = sa.select(run_holders).where(run_holders.c.run_id == run_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()  # SQLite's BEGIN IMMEDIATE already holds the lock
    row = conn.execute(query).mappings().first()
    return None if row is None else Holder(**{k: row[k] for k in Holder.__dataclass_fields__})


class Claim:
    """This process's hold on a run; see the module docstring. Use :func:`hold`."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self.me = Holder(
            run_id, secrets.token_hex(8), socket.gethostname(), os.getpid(), utcnow(), time.time()
        )
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="evalpipe-holder", daemon=True)

    def take(self) -> None:
        """Claim the run, or raise :class:`EvalpipeError` naming its live holder."""
        now = time.time()
        with self.store.transaction(write=True) as conn:
            other = _read(conn, self.run_id)
            if other is not None and not _gone(other, now):
                raise EvalpipeError(refusal(other, now))
            conn.execute(run_holders.delete().where(run_holders.c.run_id == self.run_id))
            conn.execute(run_holders.insert(), [{**asdict(self.me), "seen_at": now}])
        self._thread.start()

    def check(self) -> None:
        """Raise if another process took the run over (this one stalled past the limit)."""
        if self.lost is not None:
            raise EvalpipeError(self.lost)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                with self.store.transaction(write=True) as conn:
                    mine = run_holders.c.token == self.me.token
                    done = conn.execute(
                        run_holders.update().where(mine).values(seen_at=time.time())
                    )
                    other = None if done.rowcount else _read(conn, self.run_id)
            except (StoreError, sa.exc.SQLAlchemyError):
                continue  # the store is away for a moment: the next beat tries again
            if not done.rowcount:
                who = f"process {other.pid} on {other.host}" if other else "another process"
                self.lost = (
                    f"run {self.run_id} was taken over by {who} after this process was not "
                    f"seen for {STALE_S:.0f} s; stopping (the stored samples are kept)"
                )
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            with self.store.transaction(write=True) as conn:
                conn.execute(run_holders.delete().where(run_holders.c.token == self.me.token))
        except (StoreError, sa.exc.SQLAlchemyError):
            pass  # the row goes stale and is taken over: nothing is lost


@contextmanager
def hold(store: Store, run_id: str) -> Iterator[Claim]:
    """Hold run ``run_id`` for the ``with`` block (refused while another process holds it).

    Example::

        with hold(store, run.run_id) as claim:
            ...  # generate; claim.check() before each write
    """
    claim = Claim(store, run_id)
    claim.take()
    try:
        yield claim
    finally:
        claim.release()
