"""How long `evalpipe compare` takes on two stored runs of 1 319 samples each.

Builds a generated SQLite store (two GSM8K-sized runs with realistic output lengths), then
times, in the same process: reading both runs' samples (the floor: I/O only) and the whole
comparison (pairing key checks, join, statistics, flips, buckets). Prints both and the ratio.

    python benchmarks/compare_speed.py [--n 1319] [--repeats 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_compare import add_run, config

from evalpipe.compare.runs import compare_runs
from evalpipe.store import open_store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1319)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(0)
    base_ok = [rng.random() < 0.8 for _ in range(args.n)]
    run_ok = [ok if rng.random() > 0.01 else not ok for ok in base_ok]
    text = "Janet sells 16 - 3 - 4 = 9 duck eggs a day. " * 12  # ~550 chars, like CoT output
    outs = [text + f"The answer is {i}." for i in range(args.n)]
    with tempfile.TemporaryDirectory() as tmp, open_store(str(Path(tmp) / "s.db")) as store:
        base = add_run(store, config("dp2tp8"), list(base_ok), outs)
        run = add_run(store, config("dp2tp8dcp8"), list(run_ok), outs)
        read, full = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            store.samples(run.run_id)
            store.samples(base.run_id)
            read.append(time.perf_counter() - t)
            t = time.perf_counter()
            result = compare_runs(store, run, base)
            full.append(time.perf_counter() - t)
    r, f = statistics.median(read), statistics.median(full)
    print(f"two runs x {args.n} samples, median of {args.repeats}")
    print(f"read samples only : {r * 1000:7.1f} ms")
    print(f"evalpipe compare  : {f * 1000:7.1f} ms  (verdict {result.result.verdict})")
    print(f"ratio compare/read: {f / r:7.2f}")


if __name__ == "__main__":
    main()
