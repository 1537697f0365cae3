"""How long `evalpipe compare` takes on two stored runs of 1 319 samples each.

Builds a generated SQLite store (two GSM8K-sized runs with realistic output lengths), then
times three things, median of ``--repeats``:

- reading both runs' samples with ``store.samples`` (the floor: I/O only), and their
  answers with the bulk read (``store.answers.read_answers``, every field an Answer has);
- the comparison in process (``compare_runs``: pairing checks, answers, join, statistics,
  flips, buckets);
- the CLI, ``python -m evalpipe compare RUN --baseline BASE --store DB`` in a subprocess (wall
  time: interpreter start and imports included);

and prints each with its ratio to the read. Also prints the machine's load average.

    python benchmarks/compare_speed.py [--n 1319] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # builders
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "compare"))

from test_compare import add_run, config

from evalpipe.compare.core import Answer
from evalpipe.compare.runs import compare_runs
from evalpipe.store import open_store
from evalpipe.store.answers import read_answers

ROOT = Path(__file__).resolve().parents[1]


def _median(f: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=1319)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(0)
    base_ok = [rng.random() < 0.8 for _ in range(args.n)]
    run_ok = [ok if rng.random() > 0.01 else not ok for ok in base_ok]
    text = "Janet sells 16 - 3 - 4 = 9 duck eggs a day. " * 12  # ~550 chars, like CoT output
    outs = [text + f"The answer is {i}." for i in range(args.n)]
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "s.db")
        with open_store(db) as store:
            base = add_run(store, config("dp2tp8"), list(base_ok), outs)
            run = add_run(store, config("dp2tp8dcp8"), list(run_ok), outs)
            read = _median(
                lambda: (store.samples(run.run_id), store.samples(base.run_id)), args.repeats
            )
            ids = [run.run_id, base.run_id]
            bulk = _median(lambda: read_answers(store, ids, Answer), args.repeats)
            full = _median(lambda: compare_runs(store, run, base), args.repeats)
            verdict = compare_runs(store, run, base).result.verdict
        cli = [sys.executable, "-m", "evalpipe", "compare", run.run_id, "--baseline", base.run_id]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        wall = _median(
            lambda: subprocess.run([*cli, "--store", db], check=True, capture_output=True, env=env),
            args.repeats,
        )
    print(f"two runs x {args.n} samples, median of {args.repeats}")
    print(f"read samples only       : {read * 1000:7.1f} ms")
    print(f"read answers (bulk)     : {bulk * 1000:7.1f} ms  (store.answers.read_answers)")
    print(f"compare in process      : {full * 1000:7.1f} ms  (verdict {verdict})")
    print(f"evalpipe compare (wall) : {wall * 1000:7.1f} ms")
    print(f"ratio bulk read / read  : {bulk / read:7.2f}")
    print(f"ratio in process / read : {full / read:7.2f}")
    print(f"ratio CLI wall / read   : {wall / read:7.2f}")
    after = os.getloadavg()[0]
    print(f"load average (1 min) before / after: {load:.1f} / {after:.1f}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
