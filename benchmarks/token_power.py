"""How many items token-level comparison needs, next to what accuracy needs, from real runs.

Reads a store holding a baseline, a repeat of it (the noise floor) and other runs of the same
model and task with token traces (``evalpipe run … --logprobs 5``; teacher-forced traces too
when ``evalpipe score`` was run). For every other run and path it prints:

- the observed per-token mean KL of the pair in excess of the floor, with its interval, and
  the items the verdict's one-sided test needs for 80 % power to see that excess (exact,
  noncentral t, on the per-item values of the excess:
  ``evalpipe.compare.tokens.inference.items_needed``);
- items needed to see a given excess (a grid, with the same per-item spread), the default τ
  among them;
- beside it, items the accuracy test needs to detect a 1-point drop with 80 % power at the
  pair's observed discordance (the MDE rule of ``evalpipe.compare.power``).

    python benchmarks/token_power.py --store evidence.db [--baseline ID --floor ID]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path as FilePath

# Run as a plain script from a checkout: make the repository importable without installing it.
sys.path.insert(0, str(FilePath(__file__).resolve().parents[1]))

from evalpipe.compare.core import Answer, join
from evalpipe.compare.pairing import repeats
from evalpipe.compare.power import items_for_drop
from evalpipe.compare.runs import answers
from evalpipe.compare.tokens.inference import items_needed
from evalpipe.compare.tokens.stats import compare_path
from evalpipe.compare.tokens.types import Path
from evalpipe.compare.tokens.verdict import DEFAULT_TOKEN_MARGIN
from evalpipe.records import Run
from evalpipe.store import Store, open_store
from evalpipe.store.traces import read_traces
from evalpipe.traces import DECODE

INCREASES = (1e-4, 3e-4, 1e-3, DEFAULT_TOKEN_MARGIN, 3e-3)
"""Excesses over the floor (nats/token) the grid asks about."""


def _discordance(a: dict[str, Answer], b: dict[str, Answer]) -> float:
    pairs, _ = join(a, b)
    if not pairs:
        return math.nan
    return sum(x.correct != y.correct for x, y in pairs) / len(pairs)


def _path_rows(store: Store, path: Path, base: Run, floor: Run, run: Run) -> list[str]:
    source = DECODE if path == "decode" else base.run_id
    traces = {r.run_id: read_traces(store, r.run_id, source) for r in (base, floor, run)}
    b = traces[base.run_id]
    pair = {i: (b[i], t) for i, t in traces[run.run_id].items() if i in b}
    noise = {i: (b[i], t) for i, t in traces[floor.run_id].items() if i in b}
    e = compare_path(path, pair, floor=noise).excess
    if e is None or len(e.item_values) < 2:
        return [f"  {path:7s} fewer than 2 items with traces on all three runs"]
    need = items_needed(e.item_values) if e.estimate > 0 else math.inf
    grid = "  ".join(f"{d:.0e}: {items_needed(e.item_values, d):g}" for d in INCREASES)
    return [
        f"  {path:7s} {e.n_items} items; KL over the floor {e.estimate:.3e} "
        f"[{e.ci_low:.3e}, {e.ci_high:.3e}] ({e.level:.0%}); per-item spread {e.spread:.3e}",
        f"          items for 80 % power to see that excess: {need:g}",
        f"          items for 80 % power to see an excess of (nats/token): {grid}",
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
