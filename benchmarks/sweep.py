"""What a sweep costs beyond its engine time (issue #14), against a loop of runs in the same run.

Part 1, scheduling overhead (always; no engine, about two minutes). K cells (``--models``
models × 3 layouts: tp1, tp2 with tp1 as its baseline, tp2dcp2 with its baseline tp2 × tasks
arith and gsm8k × ``--repeat``) are served by loopback fake OpenAI servers
(tests/fake_openai.py), one per (model, layout), declared as the plan's endpoints; every cell
stores its samples in a fresh temporary SQLite store. A cell's engine time is its run's
generation time (the requests in flight, each sample scored and committed as it ends: with a
server that answers at once, that is mostly the commits); everything else is overhead:

    overhead per cell = (wall time - sum of the cells' generation time) / K

It is printed for the sweep (``api.sweep``: plan, store states, groups, every pair compared at
the end), for the same cells as a loop of ``api.run`` calls (what a shell loop of ``evalpipe
run`` does, without the process start-up), and for a few cells as separate ``evalpipe run``
processes (``--cli-cells``; process start-up and imports included); then the ratio sweep/loop.
The loop and the sweep alternate for ``--rounds`` rounds (fresh stores each); the round with
the median overhead is printed. Target: sweep overhead < 1 s per cell. Last, the same sweep
again: every cell is reused, so its whole wall time is the cost of rerunning a finished sweep.

Part 2, the real engine (``--engine``; minutes: it starts vLLM on CPU). K cells of one built-in
model on tp1 (tasks arith and gsm8k, ``--engine-limit`` items, ``--engine-repeat`` repeats):
one group, so the sweep starts one server. Measured: the sweep's wall time, the sum of its
cells' generation time and its server start (``GroupResult.server_start_s``); baseline in the
same run, the same cells as separate ``evalpipe run`` processes, each starting its own server.
Target: sweep wall / (sum of generation + one server start) close to 1 (the rest is the
per-cell overhead of part 1 and the engine's shutdown), and well below the loop. Each side has
its own fresh store, so nothing is reused. It waits until no other vLLM server runs on the
machine (a shared CPU would time both sides unfairly).

    python benchmarks/sweep.py [--models 2] [--repeat 2] [--limit 16] [--rounds 3] [--cli-cells 4]
    python benchmarks/sweep.py --engine [--model smollm2] [--engine-limit 8] [--engine-repeat 2]

gsm8k reads its data from ``--data-dir`` (default ``$EVALPIPE_DATA_DIR``, else
``$EVALPIPE_SHARED_DATA``, else ``../shared/data``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

# Run as a plain script from a checkout: the repository and its test fakes importable.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fake_openai import FakeOpenAI  # noqa: E402

from evalpipe import api  # noqa: E402
from evalpipe.options import RunOptions  # noqa: E402

LAYOUTS = ("tp2=tp1", "tp2dcp2")  # tp1, tp2 (baseline tp1), tp2dcp2 (baseline tp2)
SERVED = ("tp1", "tp2", "tp2dcp2")
TASKS = ("arith", "gsm8k")
LOOP = "loop of api.run (in process)"


@dataclasses.dataclass(frozen=True)
class Timing:
    """One way of running the cells: its wall time, the engine time of its cells, and K."""

    label: str
    wall_s: float
    generation_s: float
    cells: int

    @property
    def overhead_s(self) -> float:
        """Per cell: what was not generation."""
        return (self.wall_s - self.generation_s) / self.cells if self.cells else 0.0


def median(timings: Sequence[Timing]) -> Timing:
    """The round whose overhead is the median (the upper one of an even count)."""
    return sorted(timings, key=lambda t: t.overhead_s)[len(timings) // 2]


def quiet(_: str) -> None:
    pass


def run_sweep(settings: Any) -> tuple[float, list[Any]]:
    """Wall time and group results of one sweep."""
    began = time.perf_counter()
    results = list(api.sweep(settings, quiet).results)
    wall = time.perf_counter() - began
    bad = [c for g in results for c in g.cells if c.state not in ("finished", "reused")]
    if bad:
        raise SystemExit(f"sweep cells did not finish: {bad[:3]}")
    return wall, results


def sweep_timing(label: str, settings: Any) -> tuple[Timing, list[Any]]:
    wall, results = run_sweep(settings)
    cells = [c for g in results for c in g.cells]
    gen = sum(c.generation_s or 0.0 for c in cells)
    return Timing(label, wall, gen, len(cells)), results


def loop_timing(label: str, cells: Sequence[Any], store: str) -> Timing:
    """The cells as a loop of ``api.run`` in this process, into ``store``."""
    began = time.perf_counter()
    gen = 0.0
    for cell in cells:
        run = api.run(dataclasses.replace(cell.options, store=store))
        gen += run.duration_s or 0.0
    return Timing(label, time.perf_counter() - began, gen, len(cells))


def run_command(o: RunOptions, store: str) -> list[str]:
    """``evalpipe run`` with the cell's options (those a plan sets), printing its run as JSON."""
    cmd = [sys.executable, "-m", "evalpipe", "run", o.task, "--model", o.model]
    cmd += ["--layout", o.layout, "--store", store, "--json", "--quiet"]
    cmd += ["--concurrency", str(o.concurrency), "--logprobs", str(o.logprobs)]
    cmd += ["--seed", str(o.seed)]
    for flag, value in (
        ("--endpoint", o.endpoint),
        ("--served-model", o.served_model),
        ("--limit", o.limit),
        ("--data-dir", o.data_dir),
        ("--runs-dir", o.runs_dir),
        ("--platform", o.platform),
    ):
        if value is not None:
            cmd += [flag, str(value)]
    for arg in o.engine_args:
        cmd += ["--engine-arg", arg]
    return cmd


def cli_timing(label: str, cells: Sequence[Any], store: str) -> Timing:
    """The cells as separate ``evalpipe run`` processes, into ``store``."""
    began = time.perf_counter()
    gen = 0.0
    for cell in cells:
        done = subprocess.run(
            run_command(cell.options, store), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"evalpipe run failed ({done.returncode}):\n{done.stderr[-2000:]}")
        gen += json.loads(done.stdout).get("duration_s") or 0.0
    return Timing(label, time.perf_counter() - began, gen, len(cells))


def print_table(rows: Sequence[Timing]) -> None:
    print(f"{'':42} {'cells':>5} {'wall s':>8} {'engine s':>9} {'overhead/cell s':>16}")
    for t in rows:
        print(
            f"{t.label:42} {t.cells:5d} {t.wall_s:8.2f} {t.generation_s:9.2f} {t.overhead_s:16.3f}"
        )


@contextmanager
def fake_servers(models: Sequence[str]) -> Iterator[dict[str, dict[str, str]]]:
    """One fake OpenAI server per (model, layout): model → layout → URL."""
    with ExitStack() as stack:
        yield {m: {x: stack.enter_context(FakeOpenAI(model=m)).url for x in SERVED} for m in models}


def sweep_settings(
    models: list[Any],
    layouts: list[str],
    repeat: int,
    limit: int,
    args: argparse.Namespace,
    tmp: Path,
) -> api.SweepSettings:
    """A sweep of every task on ``models`` x ``layouts``, its store and runs under ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    overrides = {
        "models": models,
        "tasks": list(TASKS),
        "layouts": layouts,
        "repeat": repeat,
        "limit": limit,
    }
    template = RunOptions(
        task="",
        model="",
        store=str(tmp / "plan.db"),
        runs_dir=tmp / "runs",
        progress=False,
        data_dir=args.data_dir,
    )
    return api.SweepSettings(overrides=overrides, template=template)  # fmt: skip


def scheduling(args: argparse.Namespace, tmp: Path) -> None:
    models = [f"m{i + 1}" for i in range(args.models)]
    with fake_servers(models) as urls:
        endpoints = [{"name": m, "endpoints": urls[m]} for m in models]
        settings = sweep_settings(endpoints, list(LAYOUTS), args.repeat, args.limit, args, tmp)
        plan = api.sweeping.plan_sweep(settings)
        cells, swept = plan.cells, f"evalpipe sweep ({len(plan.pairs)} pairs compared)"
        # Imports, task files and templates loaded once, before either side is timed.
        loop_timing("warm-up", cells[:2], str(tmp / "warm.db"))
        loops, sweeps, agains = [], [], []
        for i in range(args.rounds):  # fresh stores each round; the two sides alternate
            store = dataclasses.replace(settings.template, store=str(tmp / f"sweep{i}.db"))
            fresh = dataclasses.replace(settings, template=store)
            for side in ("loop", "sweep") if i % 2 == 0 else ("sweep", "loop"):
                if side == "loop":
                    loops.append(loop_timing(LOOP, cells, str(tmp / f"loop{i}.db")))
                else:
                    sweeps.append(sweep_timing(swept, fresh)[0])
                    agains.append(sweep_timing("the same sweep again (all reused)", fresh)[0])
        n_cli = min(args.cli_cells, len(cells))
        cli = cli_timing("loop of `evalpipe run` processes", cells[:n_cli], str(tmp / "cli.db"))
    loop, first, again = median(loops), median(sweeps), median(agains)
    print(
        f"\nScheduling: {len(cells)} cells = {args.models} models x {len(SERVED)} layouts x "
        f"{len(TASKS)} tasks x {args.repeat} repeats, limit {args.limit}, "
        f"fake OpenAI servers (no engine); median of {args.rounds} round(s)"
    )
    print_table([loop, first, again, cli])
    ratio = first.overhead_s / loop.overhead_s if loop.overhead_s > 0 else float("inf")
    verdict = "ok" if first.overhead_s < 1.0 else "NOT MET"
    print(f"sweep overhead / loop overhead : {ratio:8.2f}")
    print(f"sweep overhead per cell        : {first.overhead_s:8.3f} s  (target < 1 s: {verdict})")
    per = again.wall_s / again.cells
    print(f"rerun of a finished sweep      : {again.wall_s:8.2f} s  ({per:.3f} s per cell)")


def wait_for_quiet_machine(limit_s: float) -> None:
    """Block until no vLLM server runs here (another engineer's engine tests, say)."""
    deadline = time.monotonic() + limit_s
    while True:
        found = subprocess.run(
            ["pgrep", "-f", "vllm.entrypoints"], capture_output=True, text=True, check=False
        ).stdout.split()
        if not found:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"vLLM still running (pids {' '.join(found)}); try again later")
        print(f"waiting: another vLLM server runs (pids {' '.join(found)})", flush=True)
        time.sleep(30)


def engine(args: argparse.Namespace, tmp: Path) -> None:
    settings = sweep_settings(
        [args.model], ["tp1"], args.engine_repeat, args.engine_limit, args, tmp / "engine"
    )
    cells = api.sweeping.plan_sweep(settings).cells  # builds the model on first use
    wait_for_quiet_machine(args.wait)
    sweep, results = sweep_timing("evalpipe sweep (one server)", settings)
    starts = [g.server_start_s for g in results if g.server_start_s is not None]
    wait_for_quiet_machine(args.wait)
    loop = cli_timing("loop of `evalpipe run` (a server each)", cells, str(tmp / "engine-loop.db"))
    bound = sweep.generation_s + sum(starts)
    print(
        f"\nEngine: {len(cells)} cells of {args.model} on tp1 ({', '.join(TASKS)}, "
        f"limit {args.engine_limit}, {args.engine_repeat} repeats), {len(results)} group(s)"
    )
    print_table([sweep, loop])
    print(f"server starts in the sweep          : {len(starts)} ({sum(starts):.2f} s)")
    print(f"sum of generation + server starts   : {bound:8.2f} s")
    print(f"sweep wall / (generation + starts)  : {sweep.wall_s / bound:8.3f}  (target ~1)")
    rest = sweep.wall_s - bound
    print(
        f"sweep wall - (generation + starts)  : {rest:8.2f} s  ({rest / sweep.cells:.2f} s per "
        "cell: planning, storing, the engine's shutdown)"
    )
    print(f"sweep wall / loop wall              : {sweep.wall_s / loop.wall_s:8.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", type=int, default=2, help="fake models (x 3 layouts)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--limit", type=int, default=16, help="items per cell (fake servers)")
    ap.add_argument("--rounds", type=int, default=3, help="part 1: alternating rounds")
    ap.add_argument("--cli-cells", type=int, default=4, help="cells run as `evalpipe run`")
    ap.add_argument("--engine", action="store_true", help="also part 2: real vLLM (minutes)")
    ap.add_argument("--model", default="smollm2", help="engine part: built-in model")
    ap.add_argument("--engine-limit", type=int, default=8)
    ap.add_argument("--engine-repeat", type=int, default=2)
    ap.add_argument("--wait", type=float, default=1800, help="seconds to wait for a quiet box")
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"  # where CI keeps it
    ap.add_argument(
        "--data-dir",
        default=os.environ.get("EVALPIPE_DATA_DIR")
        or os.environ.get("EVALPIPE_SHARED_DATA")
        or str(shared),
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scheduling(args, Path(tmp))
        if args.engine:
            engine(args, Path(tmp))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
