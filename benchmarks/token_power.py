"""How many items token-level comparison needs, next to what accuracy needs, from real runs.

Reads a store holding a baseline, a repeat of it (the noise floor) and other runs of the same
model and task with token traces (``evalpipe run … --logprobs 5``; teacher-forced traces too
when ``evalpipe score`` was run). For every other run and path it prints:

- the observed per-token mean KL of the pair and of the floor, and the one-sided paired test's
  items needed for 80 % power to separate the pair from the floor (normal approximation on
  the per-item differences, ``evalpipe.compare.tokens.stats.items_needed``);
- items needed to detect a given increase of the mean per-item KL over the floor (a grid of
  increases, with the spread of the observed per-item differences);
- beside it, items the accuracy test needs to detect a 1-point drop with 80 % power at the
  pair's observed discordance (the MDE rule of ``evalpipe.compare.power``).

    python benchmarks/token_power.py --store evidence.db [--baseline ID --floor ID]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from evalpipe.compare.core import Answer, join
from evalpipe.compare.pairing import repeats
from evalpipe.compare.power import items_for_drop
from evalpipe.compare.runs import answers
from evalpipe.compare.tokens.stats import item_kl, items_needed
from evalpipe.compare.tokens.types import Path
from evalpipe.records import Run
from evalpipe.store import Store, open_store
from evalpipe.store.traces import read_traces
from evalpipe.traces import DECODE

INCREASES = (1e-4, 3e-4, 1e-3, 3e-3)
"""Increases of the per-item mean KL over the floor (nats/token) the grid asks about."""


def _discordance(a: dict[str, Answer], b: dict[str, Answer]) -> float:
    pairs, _ = join(a, b)
    if not pairs:
        return math.nan
    return sum(x.correct != y.correct for x, y in pairs) / len(pairs)


def _path_rows(store: Store, path: Path, base: Run, floor: Run, run: Run) -> list[str]:
    source = DECODE if path == "decode" else base.run_id
    traces = {r.run_id: read_traces(store, r.run_id, source) for r in (base, floor, run)}
    b = traces[base.run_id]
    pair = item_kl(path, {i: (b[i], t) for i, t in traces[run.run_id].items() if i in b})
    noise = item_kl(path, {i: (b[i], t) for i, t in traces[floor.run_id].items() if i in b})
    common = sorted(pair.keys() & noise.keys())
    if len(common) < 2:
        return [f"  {path:7s} fewer than 2 items with traces on all three runs"]
    p = np.array([pair[i] for i in common])
    f = np.array([noise[i] for i in common])
    need = items_needed(p, f)
    sd = float((p - f).std(ddof=1))
    z = NormalDist().inv_cdf(0.95) + NormalDist().inv_cdf(0.8)
    grid = "  ".join(f"+{d:.0e}: {max(2, math.ceil((z * sd / d) ** 2))}" for d in INCREASES)
    return [
        f"  {path:7s} {len(common)} items; mean KL pair {p.mean():.3e}, floor {f.mean():.3e} "
        f"(per-item difference {float((p - f).mean()):+.3e} ± sd {sd:.3e})",
        f"          items for 80 % power vs the floor: {need:g} (observed increase)",
        f"          items for a given increase (nats/token): {grid}",
    ]


def report(store: Store, base: Run, floor: Run, runs: Sequence[Run]) -> None:
    base_answers = answers(store, base.run_id)
    print(f"baseline {base.run_id} ({base.config.layout}), floor {floor.run_id}")
    for run in runs:
        args = {k: v for k, v in run.config.engine_args.items() if k != "tensor_parallel_size"}
        print(f"\n{run.run_id} {run.config.layout} {args or ''}")
        disc = _discordance(answers(store, run.run_id), base_answers)
        print(
            f"  accuracy: discordance {disc:.1%}; items for 80 % power to detect a 1-point "
            f"drop: {items_for_drop(0.01, disc):.0f}"
        )
        for path in ("decode", "forced"):
            for line in _path_rows(store, path, base, floor, run):
                print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--baseline", help="baseline run id (default: the first tp1 run)")
    ap.add_argument("--floor", help="a repeat of the baseline (default: found by config)")
    args = ap.parse_args()
    with open_store(args.store, create=False) as store:
        finished = [r for r in store.list_runs() if r.status == "finished"]
        finished.sort(key=lambda r: r.started_at)
        base = (
            store.get_run(args.baseline)
            if args.baseline
            else next(r for r in finished if r.config.layout == "tp1")
        )
        if args.floor:
            floor = store.get_run(args.floor)
        else:
            floor = next(r for r in repeats(store, base) if r.run_id != base.run_id)
        others = [
            r
            for r in finished
            if r.run_id not in (base.run_id, floor.run_id) and r.config.task == base.config.task
        ]
        report(store, base, floor, others)


if __name__ == "__main__":
    main()
