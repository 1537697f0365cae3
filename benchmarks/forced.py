"""Teacher forcing on the decode path against the prefill path, on one real vLLM server.

One server (evalpipe's launch flags, the forcing processor included) answers a baseline run
of ``--task`` (``--limit`` items, token traces captured); then ``evalpipe score RUN --against
RUN`` forces the run's own tokens on each path, alternating for ``--rounds`` rounds, each
into a fresh copy of the store. While a path scores, the server's whole process tree is
sampled every 0.2 s: the peak RSS above its idle RSS is what that path costs in memory.
Printed: wall time and peak RSS per path (medians), their ratios forced-decode / prefill, and
the mean |Δ logprob| between the two paths' logprobs of the same tokens (the prefill kernels
against the decode kernels, on one layout).

    python benchmarks/forced.py [--model gemma3-270m] [--task gsm8k] [--limit 120]
    python benchmarks/forced.py --task passkey --param "lengths=[4096, 16384, 32000]" \\
        --max-model-len 32768 --limit 9 --concurrency 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from evalpipe.engine import models, server
from evalpipe.store import open_store
from evalpipe.store.traces import read_traces
from evalpipe.traces import forced_source


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its children."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


class Peak:
    """Samples a process tree's RSS in a thread; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            time.sleep(0.2)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def evalpipe(*args: str, env: dict[str, str]) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "evalpipe", *args, "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return dict(json.loads(proc.stdout))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--limit", type=int, default=120)
    ap.add_argument("--param", action="append", default=[])
    ap.add_argument("--concurrency", type=int, default=8, help="scoring requests in flight")
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--max-num-batched-tokens", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    model_dir = str(models.fetch(args.model)) if args.model in models.MODELS else args.model
    port = server.free_port()
    url = f"http://127.0.0.1:{port}"
    flags = [
        "--enforce-eager",
        "--served-model-name",
        "bench",
        "--max-model-len",
        str(args.max_model_len),
        "--max-num-batched-tokens",
        str(args.max_num_batched_tokens),
        *server.FORCING_FLAGS,
    ]
    env_server = {"VLLM_CPU_KVCACHE_SPACE": "4"}
    with tempfile.TemporaryDirectory() as tmp:
        base_db = Path(tmp) / "base.db"
        env = {"EVALPIPE_RUNS_DIR": str(Path(tmp) / "runs"), "HF_HUB_OFFLINE": "1"}
        cmd = server.serve_command(model_dir, port, [], flags)
        with server.launched(cmd, url, Path(tmp) / "vllm.log", env_server, 900) as handle:
            pid = handle.process.pid
            params = [x for p in args.param for x in ("--param", p)]
            run = evalpipe(
                "run",
                args.task,
                "--endpoint",
                url,
                "--model",
                "bench",
                "--model-path",
                model_dir,
                "--limit",
                str(args.limit),
                "--store",
                str(base_db),
                *params,
                "--quiet",
                env=env,
            )
            rid = str(run["run_id"])
            idle = tree_rss(pid)
            times: dict[str, list[float]] = {"forced-decode": [], "prefill": []}
            peaks: dict[str, list[int]] = {"forced-decode": [], "prefill": []}
            for i in range(args.rounds):
                order = list(times) if i % 2 == 0 else list(reversed(times))
                for path in order:
                    db = Path(tmp) / f"{path}-{i}.db"
                    shutil.copy(base_db, db)
                    start = time.perf_counter()
                    with Peak(pid) as peak:
                        evalpipe(
                            "score",
                            rid,
                            "--against",
                            rid,
                            "--path",
                            path,
                            "--endpoint",
                            url,
                            "--concurrency",
                            str(args.concurrency),
                            "--store",
                            str(db),
                            "--quiet",
                            env=env,
                        )
                    times[path].append(time.perf_counter() - start)
                    peaks[path].append(peak.peak - idle)
                    print(
                        f"round {i + 1} {path:13}: {times[path][-1]:7.1f} s, peak RSS +"
                        f"{peaks[path][-1] / 2**30:5.2f} GiB",
                        flush=True,
                    )
            agreement = _agreement(
                Path(tmp) / "forced-decode-0.db", Path(tmp) / "prefill-0.db", rid
            )
    fd, pf = statistics.median(times["forced-decode"]), statistics.median(times["prefill"])
    mfd, mpf = statistics.median(peaks["forced-decode"]), statistics.median(peaks["prefill"])
    print(f"\n{args.model}, {args.task} ({args.limit} items), {args.rounds} alternating rounds")
    print(f"forced-decode : {fd:8.1f} s, peak RSS above idle {mfd / 2**30:6.2f} GiB")
    print(f"prefill       : {pf:8.1f} s, peak RSS above idle {mpf / 2**30:6.2f} GiB")
    print(f"ratio forced-decode / prefill: time {fd / pf:.3f}, memory {mfd / max(mpf, 1):.3f}")
    print(f"mean |Δ logprob| forced-decode vs prefill, same tokens: {agreement:.3g} nats")


def _agreement(decode_db: Path, prefill_db: Path, rid: str) -> float:
    with open_store(str(decode_db)) as s:
        fd = read_traces(s, rid, forced_source(rid, "forced-decode"))
    with open_store(str(prefill_db)) as s:
        pf = read_traces(s, rid, forced_source(rid, "prefill"))
    diffs = [
        np.abs(fd[i].trace.logprobs - pf[i].trace.logprobs)
        for i in fd.keys() & pf.keys()
        if fd[i].trace.n == pf[i].trace.n
    ]
    return float(np.concatenate(diffs).mean()) if diffs else float("nan")


if __name__ == "__main__":
    main()
