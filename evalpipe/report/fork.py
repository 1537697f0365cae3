"""Spread independent pieces of a render over forked worker processes.

The dashboard's cold render is CPU-bound Python (reading answers, comparing, rendering
pages), so on a machine with two cores two processes do it in about half the time. Workers
are forked: they inherit the function, its inputs and the open store instead of receiving
them pickled, and only the results travel back. Where ``fork`` does not exist, or one
process is all the machine has, everything runs in this process.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from evalpipe.store import Store

T = TypeVar("T")
R = TypeVar("R")

_INHERITED: list[tuple[Callable[[Any], Any], Sequence[Any]]] = []


def cores() -> int:
    """Cores this process may run on; 1 where workers cannot be forked safely."""
    # A thread of this process may hold a lock (logging, a connection pool) at the moment
    # of the fork, which its copy in the worker would then wait on forever.
    if "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        return 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _start(fn: Callable[[Any], Any], items: Sequence[Any], init: Callable[[], None]) -> None:
    init()
    _INHERITED.append((fn, items))


def _call(index: int) -> Any:
    fn, items = _INHERITED[-1]
    with paused_gc():
        return fn(items[index])


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside: a piece of a render allocates millions of small
    objects that live until it ends (answers, page fragments), and each collection walks
    them all again for nothing (a fifth of the comparisons' time). Reference counting
    still frees them; cycles wait for the collection after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def forget_connections(store: Store) -> None:
    """For ``init`` in a worker that reads ``store``: the connections in the pool it inherited
    are its parent's, so it opens its own (SQLAlchemy's advice for forked processes)."""
    store.engine.dispose(close=False)


def fork_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    init: Callable[[], None] = lambda: None,
) -> list[R]:
    """``[fn(x) for x in items]``, in ``workers`` forked processes when more than one (each
    runs ``init`` first, e.g. to drop the database connections it inherited); each call
    with the garbage collector paused (:func:`paused_gc`)."""
    if workers <= 1 or len(items) <= 1:
        out = []
        for x in items:
            with paused_gc():
                out.append(fn(x))
        return out
    context = multiprocessing.get_context("fork")
    # With fork, initargs reach the workers by inheritance: fn and items are never pickled.
    with ProcessPoolExecutor(
        min(workers, len(items)), context, initializer=_start, initargs=(fn, items, init)
    ) as pool:
        return list(pool.map(_call, range(len(items))))
