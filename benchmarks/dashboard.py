"""Time ``render_dashboard`` on a generated store of 1 000 runs × 1 319 samples, cold and
after one more run is added.

    python benchmarks/dashboard.py [--runs 1000] [--samples 1319] [--store PATH] [--keep DIR]

Builds the store (5 models × 2 tasks × dp2tp8/dp2tp8dcp8, one pair per night with that
night's engine version; one CP layout in ten drifts) in a temporary directory, or copies the
one given with ``--store`` (a store this script built before: building takes minutes). Then it
measures, in one process:

- the baseline: reading every run's samples with ``store.samples`` (what any report must at
  least do without bulk reads);
- a cold render into an empty folder;
- a render into the same folder after one more run is added (a re-run of the newest CP
  layout of one model and task): only the comparisons and pages it affects are redone.

Prints Markdown, with the machine's load average (other work on it skews every figure).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Run as a plain script from a checkout: make the repository importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalpipe.records import Run, RunConfig, Sample
from evalpipe.report.dashboard import DashboardSummary, render_dashboard
from evalpipe.store import Store, open_store

MODELS = [f"/models/model-{i}" for i in range(5)]
TASKS = ["gsm8k", "arith"]


def _samples(run_id: str, truth: list[bool], rng: random.Random, flip_rate: float) -> list[Sample]:
    out = []
    for i, right in enumerate(truth):
        flip = rng.random() < flip_rate
        right = (not right) if flip else right
        text = f"Step 1: add the numbers. Step 2: multiply. The answer is {i}."
        out.append(
            Sample(
                run_id=run_id, item_id=str(i), prompt_hash=f"h{i}",
                output=text + (" (reordered)" if flip else ""), target=str(i), correct=right,
                extracted={"strict": str(i)}, correct_by={"strict": right},
                prompt_tokens=300 + i % 900, output_tokens=40, latency_s=0.5,
            )
        )  # fmt: skip
    return out


def add_run(
    store: Store, cfg: RunConfig, run_id: str, started_at: str, samples: list[Sample]
) -> None:
    run = Run(
        run_id=run_id, config=cfg, status="finished", started_at=started_at, n_items=len(samples)
    )
    store.create_run(run, samples)
    store.update_run(run.with_(**store.summarize(run_id)))


def build(store: Store, n_runs: int, n_samples: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    truth = [rng.random() < 0.8 for _ in range(n_samples)]
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
                        engine_args={}, sampling={"temperature": 0.0}, seed=0, limit=None,
                        concurrency=256, engine_versions={"vllm": f"0.{night}.0"},
                    )  # fmt: skip
                    run_id = f"2026{night:04d}-{k:06d}"
                    k += 1
                    rate = 0.0 if layout == "dp2tp8" else (0.08 if drift else 0.004)
                    day, hour = 1 + night % 28, night // 28
                    started = f"2026-01-{day:02d}T{hour:02d}:00:{k % 60:02d}"
                    add_run(store, cfg, run_id, started, _samples(run_id, truth, rng, rate))


def add_one_more(store: Store, n_samples: int) -> str:
    """A re-run of the newest CP run (same config, a later start): pairs with its baseline."""
    newest = next(r for r in store.list_runs() if r.config.layout == "dp2tp8dcp8")
    run_id = f"{newest.run_id}-again"
    rng = random.Random(1)
    truth = [s.correct is True for s in store.samples(newest.run_id)]
    cfg = dataclasses.replace(newest.config, repeat_index=1)
    add_run(store, cfg, run_id, "2099-01-01T00:00:00", _samples(run_id, truth, rng, 0.004))
    return run_id


def _row(label: str, seconds: float, extra: str = "") -> str:
    return f"| {label} | {seconds:.2f} s{extra} |"


def measure(store: Store, out: Path, n_samples: int, built: str) -> list[str]:
    load = os.getloadavg()[0]
    runs = store.list_runs()
    t0 = time.perf_counter()
    n = sum(len(store.samples(r.run_id)) for r in runs)
    read = time.perf_counter() - t0
    cold: DashboardSummary = render_dashboard(store, out)
    add_one_more(store, n_samples)
    warm = render_dashboard(store, out)
    return [
        f"| store | {len(runs)} runs × {n_samples} samples = {n:,} samples{built} |",
        "|:--|--:|",
        _row("read all samples (store.samples per run)", read),
        _row("cold render", cold.seconds, f" ({cold.pages} pages, {cold.comparisons} comparisons)"),
        _row(
            "render after one more run",
            warm.seconds,
            f" ({warm.written} pages written, {warm.computed} comparisons computed)",
        ),
        f"| ratio cold render / read | {cold.seconds / read:.2f} |",
        f"| ratio render after one more run / read | {warm.seconds / read:.3f} |",
        f"| ratio render after one more run / cold render | {warm.seconds / cold.seconds:.3f} |",
        f"| load average (1 min) before / after, cores | {load:.1f} / {os.getloadavg()[0]:.1f}, "
        f"{os.cpu_count()} |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=1319)
    ap.add_argument("--store", type=Path, help="copy this store instead of building one")
    ap.add_argument("--keep", type=Path, help="render here and keep it (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "site"
        shutil.rmtree(out, ignore_errors=True)
        db = Path(tmp) / "bench.db"
        built = ""
        if args.store:
            shutil.copyfile(args.store, db)
        with open_store(str(db)) as store:
            if not args.store:
                t0 = time.perf_counter()
                build(store, args.runs, args.samples)
                built = f" (built in {time.perf_counter() - t0:.0f} s)"
            lines = measure(store, out, args.samples, built)
        print("\n".join(lines))


if __name__ == "__main__":
    main()
