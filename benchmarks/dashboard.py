"""Time ``render_dashboard`` on a generated store of 1 000 runs × 1 319 samples.

    python benchmarks/dashboard.py [--runs 1000] [--samples 1319] [--keep DIR]

Builds the store in a temporary directory (5 models × 2 tasks × dp2tp8/dp2tp8dcp8, one pair per
night with that night's engine version; one CP layout in ten drifts), then prints the render
time next to a baseline measured in the same process: reading every run's samples with
``store.samples`` (what any report must at least do). Prints Markdown.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

# Run as a plain script from a checkout: make the repository importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalpipe.records import Run, RunConfig, Sample
from evalpipe.report.dashboard import render_dashboard
from evalpipe.store import Store, open_store

MODELS = [f"/models/model-{i}" for i in range(5)]
TASKS = ["gsm8k", "arith"]


def build(store: Store, n_runs: int, n_samples: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    truth = [rng.random() < 0.8 for _ in range(n_samples)]
    outputs = [
        f"Step 1: add the numbers. Step 2: multiply. The answer is {i}." for i in range(n_samples)
    ]
    nights = n_runs // (len(MODELS) * len(TASKS) * 2)
    k = 0
    for night in range(nights):
        for model in MODELS:
            for task in TASKS:
                drift = rng.random() < 0.1
                for layout in ("dp2tp8", "dp2tp8dcp8"):
                    cfg = RunConfig(
                        model=model, model_fingerprint=f"sha256:{model}", task=task,
                        task_version="1", prompt_hash=f"p-{task}", data_source="file:/d",
                        data_sha256="d", layout=layout, platform="cuda", engine_kind="serve",
                        engine_args=(), sampling={"temperature": 0.0}, seed=0, limit=None,
                        concurrency=256, engine_versions={"vllm": f"0.{night}.0"},
                    )  # fmt: skip
                    run_id = f"2026{night:04d}-{k:06d}"
                    k += 1
                    cp = layout != "dp2tp8"
                    samples = []
                    for i in range(n_samples):
                        right = truth[i]
                        flip = cp and rng.random() < (0.08 if drift else 0.004)
                        right = (not right) if flip else right
                        out = outputs[i] + (" (reordered)" if flip else "")
                        samples.append(
                            Sample(
                                run_id=run_id, item_id=str(i), prompt_hash=f"h{i}", output=out,
                                target=str(i), correct=right, extracted={"strict": str(i)},
                                correct_by={"strict": right}, prompt_tokens=300 + i % 900,
                                output_tokens=40, latency_s=0.5,
                            )
                        )  # fmt: skip
                    day, hour = 1 + night % 28, night // 28
                    run = Run(
                        run_id=run_id, config=cfg, status="finished",
                        started_at=f"2026-01-{day:02d}T{hour:02d}:00:{k % 60:02d}",
                        n_items=n_samples,
                    )  # fmt: skip
                    store.create_run(run, samples)
                    store.update_run(run.with_(**store.summarize(run_id)))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=1319)
    ap.add_argument("--keep", type=Path, help="render here and keep it (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "site"
        with open_store(str(Path(tmp) / "bench.db")) as store:
            t0 = time.perf_counter()
            build(store, args.runs, args.samples)
            built = time.perf_counter() - t0
            runs = store.list_runs()
            t0 = time.perf_counter()
            n = sum(len(store.samples(r.run_id)) for r in runs)
            read = time.perf_counter() - t0
            summary = render_dashboard(store, out)
        print(
            f"| store | {len(runs)} runs × {args.samples} samples = {n:,} samples "
            f"(built in {built:.0f} s) |"
        )
        print("|:--|--:|")
        print(f"| read all samples (store.samples per run) | {read:.1f} s |")
        print(f"| render_dashboard | {summary.seconds:.1f} s |")
        print(f"| ratio render / read | {summary.seconds / read:.2f} |")
        print(f"| pages written | {summary.pages} ({summary.comparisons} comparisons) |")


if __name__ == "__main__":
    main()
