"""Wall time of real DCP on the CPU engine against its baseline tp2, measured in one run (#24).

One sweep: ``--task`` on ``--model`` with layout tp2dcp2 and its derived baseline tp2, both
without the sliding window (as a DCP pair runs a sliding-window model), ``--repeat`` repeats each;
one server per layout serves its repeats, so each side is timed on a warm engine. A cell's
generation time is its requests in flight (the run's ``duration_s``); the ratio is the median
tp2dcp2 generation time over the median tp2 one, beside output tokens per second and each
server's start. Run it when no other engine uses the machine's cores (a shared CPU times the
two sides unfairly).

    python benchmarks/dcp_cpu.py [--model gemma3-270m] [--task arith] [--limit 32] [--repeat 2]
        [--interleave 1] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from evalpipe import api
from evalpipe.options import RunOptions
from evalpipe.store import open_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--task", default="arith")
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--interleave", type=int, default=1)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "bench.db")
        template = RunOptions(
            task="", model="", store=store, runs_dir=Path(tmp) / "runs", progress=False
        )
        overrides = {
            "models": [args.model],
            "tasks": [args.task],
            "layouts": ["tp2dcp2"],
            "repeat": args.repeat,
            "limit": args.limit,
            "engine_args": {"cp_kv_cache_interleave_size": args.interleave, "dtype": args.dtype},
        }
        outcome = api.sweep(api.SweepSettings(overrides=overrides, template=template))
        if outcome.unfinished:
            raise SystemExit(f"cells did not finish: {outcome.unfinished[:2]}")
        rows = {}
        with open_store(store) as s:
            for group in outcome.results:
                layout = group.key.split("@")[1].split(" ")[0]
                gen = [c.generation_s or 0.0 for c in group.cells]
                tokens = [s.get_run(c.run_id or "").output_tokens or 0 for c in group.cells]
                rate = statistics.median(t / g for t, g in zip(tokens, gen, strict=True) if g)
                rows[layout] = (group.server_start_s or 0.0, statistics.median(gen), rate)
    print(
        f"{args.model} {args.task}, {args.limit} items x {args.repeat} repeats, {args.dtype}, "
        f"interleave {args.interleave}, no sliding window on both sides"
    )
    print(f"{'layout':8} {'server start':>12} {'generation (median)':>20} {'output tok/s':>13}")
    for layout, (start, gen, rate) in rows.items():
        print(f"{layout:8} {start:11.1f}s {gen:19.1f}s {rate:13.1f}")
    dcp, tp = rows["tp2dcp2"], rows["tp2"]
    print(
        f"ratio tp2dcp2/tp2: generation {dcp[1] / tp[1]:.2f}x, output tok/s {dcp[2] / tp[2]:.2f}x, "
        f"server start {dcp[0] / tp[0]:.2f}x"
    )


if __name__ == "__main__":
    main()
