"""How long the DataFrame readers take, against the plain store read in the same run.

Builds a store (SQLite by default, ``--store URL`` for PostgreSQL) with

- a GSM8K-sized pair: two runs of 1 319 samples with realistic output lengths;
- a token pair: two runs of 120 items with decode traces (``--tokens`` positions each, top-5)
  and teacher-forced traces of the baseline's tokens (tests/token_fixtures.py);

then times, median of ``--repeats``:

- the plain read: ``store.samples`` of both runs (records, no DataFrame), and the pair's
  traces with ``read_traces`` (both runs, both paths);
- the pair into DataFrames: ``runs_frame`` + ``samples_frame`` of the two runs +
  ``pairs_frame``, each opening the store itself (a path), and all three over one open store;
  target < 0.2 s;
- the token frame of the 120-item pair (``tokens_frame``, both paths), target < 1 s; and, for
  reference, compare's own token comparison of the same pair (``token_comparison``);

and prints each with its ratio to the plain read. Also prints the machine's load average.

    python benchmarks/frames.py [--repeats 5] [--tokens 256] [--store postgresql://…]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # builders

from builders import run_config
from token_fixtures import add_traced_run, token_trace

from evalpipe import api
from evalpipe.compare.tokens.runs import token_comparison
from evalpipe.records import Run, Sample
from evalpipe.store import Store, open_store
from evalpipe.store.traces import put_traces, read_traces
from evalpipe.traces import DECODE, StoredTrace

GSM8K = 1319
TOKEN_ITEMS = 120


def median(f: Callable[[], object], repeats: int) -> float:
    f()  # warm: imports and the first connection are not what is measured
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def gsm8k_pair(store: Store) -> tuple[str, str]:
    rng = random.Random(0)
    text = "Janet sells 16 - 3 - 4 = 9 duck eggs a day. " * 12  # ~550 chars, like CoT output
    ids = []
    for layout, flip in (("dp2tp8", 0.0), ("dp2tp8dcp8", 0.01)):
        run = Run(f"bench-{layout}", run_config(layout), "finished", "2026-11-30T00:00:00+00:00")
        samples = []
        for i in range(GSM8K):
            ok = (i % 5 != 0) != (rng.random() < flip)
            samples.append(
                Sample(run.run_id, str(i), f"h{i}", text + f"The answer is {i}.", str(i), ok,
                       extracted={"strict": str(i)}, correct_by={"strict": ok},
                       prompt_tokens=700 + i % 400, output_tokens=150)
            )  # fmt: skip
        store.create_run(run, samples)
        ids.append(run.run_id)
    return ids[1], ids[0]


def token_pair(store: Store, n_tokens: int) -> tuple[str, str]:
    ok = [True] * TOKEN_ITEMS
    base = add_traced_run(
        store, "bench-tok-tp1", "tp1", ok, task="passkey",
        traces={str(i): token_trace(i, n_tokens) for i in range(TOKEN_ITEMS)},
    )  # fmt: skip
    run = add_traced_run(
        store, "bench-tok-tp2", "tp2", ok, task="passkey", started_at="2026-11-30T01:00:00+00:00",
        traces={str(i): token_trace(i, n_tokens, shift=0.1, seed=1,
                                    diverge_at=n_tokens // 2 if i % 4 == 0 else None)
                for i in range(TOKEN_ITEMS)},
    )  # fmt: skip
    put_traces(
        store,
        [
            StoredTrace(r.run_id, str(i), base.run_id, 100 + 10 * i,
                        token_trace(i, n_tokens, shift=shift, seed=2))
            for r, shift in ((base, 0.0), (run, 0.1))
            for i in range(TOKEN_ITEMS)
        ],
    )  # fmt: skip
    return run.run_id, base.run_id


def all_frames(store: Store, pair: list[str]) -> None:
    """The pair into DataFrames as a notebook holding the store open reads it."""
    api.runs_frame(store, pair)
    api.samples_frame(store, pair)
    api.pairs_frame(store, pair[0], pair[1])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=256, help="positions of each item's trace")
    ap.add_argument("--store", help="an empty store URL (default: a new SQLite file)")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        db = args.store or str(Path(tmp) / "frames.db")
        with open_store(db) as store:
            run, base = gsm8k_pair(store)
            trun, tbase = token_pair(store, args.tokens)
            pair = [run, base]
            read = median(lambda: [store.samples(r) for r in pair], args.repeats)
            sources = (DECODE, tbase)
            traces = median(
                lambda: [read_traces(store, r, s) for r in (trun, tbase) for s in sources],
                args.repeats,
            )
            r, b = store.get_run(trun), store.get_run(tbase)
            compare = median(lambda: token_comparison(store, r, b), args.repeats)
            opened = median(lambda: all_frames(store, pair), args.repeats)
        runs = median(lambda: api.runs_frame(db, pair), args.repeats)
        samples = median(lambda: api.samples_frame(db, pair), args.repeats)
        pairs = median(lambda: api.pairs_frame(db, run, base), args.repeats)
        tokens = median(lambda: api.tokens_frame(db, trun, tbase), args.repeats)
        rows = len(api.tokens_frame(db, trun, tbase))
    frames = runs + samples + pairs
    print(f"median of {args.repeats}; store {'given' if args.store else 'SQLite (temporary)'}")
    print(f"2 runs x {GSM8K} samples")
    print(f"  plain read (store.samples x 2)   : {read * 1000:7.1f} ms   1.00")
    print(f"  runs_frame                       : {runs * 1000:7.1f} ms  {runs / read:5.2f}")
    print(f"  samples_frame (both runs)        : {samples * 1000:7.1f} ms  {samples / read:5.2f}")
    print(f"  pairs_frame                      : {pairs * 1000:7.1f} ms  {pairs / read:5.2f}")
    ok = "ok" if frames < 0.2 else "OVER"
    print(f"  the pair into DataFrames (sum)   : {frames * 1000:7.1f} ms  {frames / read:5.2f}"
          f"   target < 200 ms: {ok}")  # fmt: skip
    ok = "ok" if opened < 0.2 else "OVER"
    print(f"  the same, over one open store    : {opened * 1000:7.1f} ms  {opened / read:5.2f}"
          f"   target < 200 ms: {ok}")  # fmt: skip
    print(
        f"{TOKEN_ITEMS}-item pair, {args.tokens} positions an item, decode + forced ({rows} rows)"
    )
    print(f"  plain read (read_traces x 4)     : {traces * 1000:7.1f} ms   1.00")
    print(f"  compare's token_comparison       : {compare * 1000:7.1f} ms  {compare / traces:5.2f}")
    ok = "ok" if tokens < 1.0 else "OVER"
    print(f"  tokens_frame                     : {tokens * 1000:7.1f} ms  {tokens / traces:5.2f}"
          f"   target < 1000 ms: {ok}")  # fmt: skip
    after = os.getloadavg()[0]
    print(f"load average (1 min) before / after: {load:.1f} / {after:.1f}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
