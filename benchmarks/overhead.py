"""evalpipe's client overhead against a plain asyncio client, on one real vLLM server.

Both send the same rendered prompts with the same sampling and concurrency to the same
server; the plain client does nothing else, evalpipe also plans, scores and commits every
sample to SQLite. Prefix caching is off so neither benefits from going second, and the two
alternate for ``--rounds`` rounds; medians are compared. Target: ratio <= 1.05.

Token capture (``--logprobs 5``, issue #12) is measured the same way: evalpipe with and
without it, alternating in each round, on the same server. Its ratio includes what the
server spends computing and sending the top-k logprobs, which is part of what capture costs.
Target: capture/no-capture <= 1.05.

Also prints the wall time of ``evalpipe --help`` and checks it imported neither vllm nor torch.

``--plugin`` measures evalpipe's vLLM plugin switched off (issue #19): two servers of the same
model, one loading every installed general plugin with ``EVALPIPE_FAULT`` unset, one whose
``VLLM_PLUGINS`` leaves evalpipe's out; the plain client alternates between them for
``--rounds`` rounds. Target: with/without <= 1.01. Their outputs must be identical too (the
engine test checks it bitwise).

    python benchmarks/overhead.py [--model smollm2] [--task arith] [--limit 64] [--concurrency 64]
    python benchmarks/overhead.py --plugin [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from evalpipe.engine import models, server
from evalpipe.tasks.data import load_dataset
from evalpipe.tasks.load import load_task
from evalpipe.tasks.prompts import render


async def plain_client(base: str, model: str, prompts: list[str], task: Any, conc: int) -> float:
    body_base = {"model": model, **dict(task.sampling), "seed": 0, "stop": list(task.stop)}
    sem = asyncio.Semaphore(conc)
    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as session:

        async def one(prompt: str) -> None:
            async with (
                sem,
                session.post(
                    base + "/v1/completions", json={**body_base, "prompt": prompt}
                ) as resp,
            ):
                await resp.json()

        await asyncio.gather(*(one(p) for p in prompts))
    return time.perf_counter() - start


def evalpipe_run(
    base: str, model: str, args: argparse.Namespace, store: str, logprobs: int = 0
) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "evalpipe",
            "run",
            args.task,
            "--endpoint",
            base,
            "--model",
            model,
            "--limit",
            str(args.limit),
            "--concurrency",
            str(args.concurrency),
            "--store",
            store,
            "--logprobs",
            str(logprobs),
            "--quiet",
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def help_time() -> tuple[float, list[str]]:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "evalpipe", "--help"], check=True, capture_output=True
        )
        times.append(time.perf_counter() - start)
    code = (
        "import sys, contextlib, io\nfrom evalpipe.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\nprint(','.join(m for m in ('vllm', 'torch') if m in sys.modules))"
    )
    heavy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return min(times), [m for m in heavy.stdout.strip().split(",") if m]


def _without_evalpipe() -> str:
    from importlib.metadata import entry_points

    others = [e.name for e in entry_points(group="vllm.general_plugins") if e.name != "evalpipe"]
    return ",".join(others) or "none"


def plugin_overhead(
    args: argparse.Namespace, model_dir: str, prompts: list[str], task: Any
) -> None:
    """Wall time of the same requests on a server with the plugin loaded (off) and on one
    without it, alternating; both up at once so that neither is measured cold."""
    flags = ["--enforce-eager", "--served-model-name", "bench", "--no-enable-prefix-caching"]
    envs = {
        "with plugin (off)": {"VLLM_CPU_KVCACHE_SPACE": "2", "EVALPIPE_FAULT": ""},
        "without plugin": {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_PLUGINS": _without_evalpipe()},
    }
    times: dict[str, list[float]] = {k: [] for k in envs}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        bases = {}
        for name, env in envs.items():
            port = server.free_port()
            base = f"http://127.0.0.1:{port}"
            cmd = server.serve_command(model_dir, port, [], flags)
            started = time.perf_counter()
            stack.enter_context(server.launched(cmd, base, Path(tmp) / f"{port}.log", env, 900))
            print(f"{name}: healthy after {time.perf_counter() - started:.1f}s", flush=True)
            asyncio.run(plain_client(base, "bench", prompts[:4], task, 4))  # warm-up
            bases[name] = base
        for i in range(args.rounds):
            for name, base in bases.items() if i % 2 == 0 else reversed(bases.items()):
                times[name].append(
                    asyncio.run(plain_client(base, "bench", prompts, task, args.concurrency))
                )
            print(f"round {i + 1}: " + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
    on, off = (statistics.median(v) for v in times.values())
    print(f"\n{args.limit} prompts of {args.task}, {args.rounds} alternating rounds (median)")
    print(f"with evalpipe's plugin, EVALPIPE_FAULT unset: {on:7.2f} s")
    print(f"without it (VLLM_PLUGINS)                  : {off:7.2f} s")
    print(f"ratio with/without                         : {on / off:7.3f}  (target <= 1.01)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--task", default="arith")
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--plugin", action="store_true", help="the fault plugin's cost when off")
    args = ap.parse_args()

    model_dir = str(models.fetch(args.model)) if args.model in models.MODELS else args.model
    task = load_task(args.task)
    prompts = [p.text or "" for p in render(task, load_dataset(task, limit=args.limit).items)]
    if args.plugin:
        plugin_overhead(args, model_dir, prompts, task)
        return
    port = server.free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = server.serve_command(
        model_dir,
        port,
        [],
        ["--enforce-eager", "--served-model-name", "bench", "--no-enable-prefix-caching"],
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        server.launched(cmd, base, Path(tmp) / "vllm.log", {"VLLM_CPU_KVCACHE_SPACE": "2"}, 900),
    ):
        asyncio.run(plain_client(base, "bench", prompts[:4], task, 4))  # warm-up
        plain, ours, captured = [], [], []
        for i in range(args.rounds):
            plain.append(asyncio.run(plain_client(base, "bench", prompts, task, args.concurrency)))
            ours.append(evalpipe_run(base, "bench", args, str(Path(tmp) / f"s{i}.db")))
            captured.append(evalpipe_run(base, "bench", args, str(Path(tmp) / f"c{i}.db"), 5))
            print(
                f"round {i + 1}: plain {plain[-1]:.2f}s  evalpipe {ours[-1]:.2f}s  "
                f"evalpipe --logprobs 5 {captured[-1]:.2f}s",
                flush=True,
            )
        size = (Path(tmp) / "c0.db").stat().st_size - (Path(tmp) / "s0.db").stat().st_size
    p, e, c = statistics.median(plain), statistics.median(ours), statistics.median(captured)
    print(
        f"\n{args.limit} prompts of {args.task}, concurrency {args.concurrency}, "
        f"{args.rounds} rounds (median)"
    )
    print(f"plain asyncio client : {p:8.2f} s")
    print(
        f"evalpipe run --endpoint: {e:6.2f} s  (whole CLI process: start-up, plan, "
        "scoring, SQLite commits)"
    )
    print(f"ratio evalpipe/plain : {e / p:8.3f}  (target <= 1.05)")
    print(f"evalpipe --logprobs 5: {c:8.2f} s  (token ids + top-5 logprobs stored per token)")
    print(f"ratio capture/none   : {c / e:8.3f}  (target <= 1.05)")
    print(f"store growth         : {size / 1e6:8.2f} MB for {args.limit} items with capture")
    t, heavy = help_time()
    print(f"evalpipe --help      : {t * 1000:8.0f} ms  (imports vllm/torch: {heavy or 'no'})")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
