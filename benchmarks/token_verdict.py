"""Operating characteristics of the token verdict, by simulation on heavy-tailed clustered KL.

    python benchmarks/token_verdict.py [--reps 300] [--seed 0] [--only coverage,verdict,...]

Prints Markdown. The model (calibrated on the canary's GSM8K pairs, Gemma-3-270M: per-position
KL with q99/q50 ≈ 70, per-item means spread by a factor ~2, 20–256 compared positions, a
parting spike on ~40 % of the items): item i has n_i ~ U{20..256} positions and a level
λ_i ~ lognormal(σ_b); its per-position KL is λ_i · m · exp(σ_w·z_t − σ_w²/2) with z an AR(1)
of correlation 0.5 (σ_w = 1.8), plus, with probability 0.4, one spike of 20 × λ_i · m. m is
set so that the true per-token mean (E Σ KL / E n) is the wanted value. The floor is a
bitwise-reproducible engine's (0) unless said.

Sections (``--only``):

* ``coverage``: of the KL interval (95 %) at 5–120 items, the symmetric cluster-robust t
  interval evalpipe used before (CR1) against the jackknife interval it uses now (lower limit
  on the raw scale, upper on the R^-1.5 scale: ``evalpipe.compare.tokens.inference``), with the
  share of misses above and below.
* ``verdict``: the verdict (``evalpipe.compare.tokens.stats.compare_positions``) at τ =
  ``DEFAULT_TOKEN_MARGIN`` for true means of 0.25–4 τ: P(ok), P(drift). At 1 τ an ``ok`` is a
  false ok and a drift a false drift (each bounded by alpha / 2 = 2.5 %); below τ a drift,
  above it an ok, is a false verdict.
* ``tail``: 120 benign items (5e-4 nats/token) with 0–3 of them broken at 0.14 nats/token
  (σ_w = 1 within the item): P(drift) of the verdict, and of the old rule (one-sided paired t
  of per-item means against the floor at 0.05).
* ``boundary``: 120 GSM8K-like items (prompts 700–1000 tokens, 60–250 compared), the KL of the
  position just after each boundary of period 128 multiplied by 1 + f: P(p < 0.05) of the
  boundary test and of the old one (±16 tokens, paired t of per-item near − rest), f = 0 the
  false-alarm rate; and at period 8, where the old test had no test at all.
* ``power``: items the exact power needs where the normal approximation said 2, 3 and 5.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import signal, stats

# Run as a plain script from a checkout: make the repository importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalpipe.compare.tokens.inference import bounds, items_for, power, ratio
from evalpipe.compare.tokens.loc import boundary_offsets, boundary_test
from evalpipe.compare.tokens.positions import Positions
from evalpipe.compare.tokens.stats import compare_positions
from evalpipe.compare.tokens.types import Tolerance
from evalpipe.compare.tokens.verdict import DEFAULT_TOKEN_MARGIN

SIGMA_W, RHO, SPIKE_P, SPIKE_X = 1.8, 0.5, 0.4, 20.0
LENGTHS = (20, 257)
TAU = DEFAULT_TOKEN_MARGIN


def item_kl(
    rng: np.random.Generator, mean: float, n: int, level: float, sigma_w: float = SIGMA_W
) -> np.ndarray:
    """One item's per-position KL (see the module docstring); ``mean`` is the per-position
    mean before the spike."""
    e = rng.standard_normal(n + 50)
    z = signal.lfilter([math.sqrt(1 - RHO**2)], [1.0, -RHO], e)[50:]
    kl = level * mean * np.exp(sigma_w * z - sigma_w**2 / 2)
    if rng.random() < SPIKE_P:
        kl[rng.integers(n)] += SPIKE_X * level * mean
    return np.asarray(kl, dtype=np.float64)


def sample(rng: np.random.Generator, items: int, mean: float, sigma_b: float) -> list[np.ndarray]:
    """``items`` items whose true per-token mean KL is ``mean``."""
    per_position = mean / (1 + SPIKE_P * SPIKE_X / ((LENGTHS[0] + LENGTHS[1] - 1) / 2))
    levels = rng.lognormal(-(sigma_b**2) / 2, sigma_b, items)
    return [item_kl(rng, per_position, int(rng.integers(*LENGTHS)), lv) for lv in levels]


def positions(kls: list[np.ndarray], starts: list[int] | None = None) -> Positions:
    """Compared positions holding ``kls`` (one array per item; other metrics 0)."""
    counts = np.asarray([k.size for k in kls])
    items = np.repeat(np.arange(len(kls)), counts).astype(np.int64)
    first = np.repeat(np.asarray(starts or [800] * len(kls)), counts)
    offsets = np.arange(items.size) - np.repeat(np.cumsum(counts) - counts, counts)
    kl = np.concatenate(kls)
    zeros = np.zeros(kl.size)
    return Positions(
        tuple(f"q{i:04d}" for i in range(len(kls))),
        items,
        (first + offsets).astype(np.int64),
        {"kl": kl, "abs_dlogprob": zeros, "top1_disagree": zeros},
        0,
        0,
        0,
        (),
        5,
        np.zeros(kl.size, dtype=bool),
    )


def cr1(sums: np.ndarray, counts: np.ndarray, level: float) -> tuple[float, float]:
    """The symmetric cluster-robust (CR1) t interval of the per-token mean (the old one)."""
    g, r = sums.size, sums.sum() / counts.sum()
    se = math.sqrt(g / (g - 1) * np.sum((sums - r * counts) ** 2)) / counts.sum()
    t = stats.t.ppf(0.5 + level / 2, g - 1)
    return r - t * se, r + t * se


def coverage(rng: np.random.Generator, reps: int) -> None:
    print("## Coverage of the 95 % KL interval (true mean inside; misses above / below)\n")
    print("| σ_b | items | CR1 t (old) | misses above / below | jackknife, raw / R^-1.5 (now) "
          "| misses above / below | median upper / mean |")  # fmt: skip
    print("|--:|--:|--:|--:|--:|--:|--:|")
    for sigma_b in (0.3, 0.7):
        for g in (5, 10, 20, 60, 120):
            old, new, widths = np.zeros(3), np.zeros(3), []
            for _ in range(reps):
                kls = sample(rng, g, 1.0, sigma_b)
                sums = np.asarray([k.sum() for k in kls])
                counts = np.asarray([float(k.size) for k in kls])
                now = bounds(ratio(sums, counts)).interval(0.95)
                for acc, (lo, hi) in ((old, cr1(sums, counts, 0.95)), (new, now)):
                    acc[0 if lo <= 1.0 <= hi else (1 if hi < 1.0 else 2)] += 1
                widths.append(
                    bounds(ratio(sums, counts)).interval(0.95)[1] / (sums.sum() / counts.sum())
                )
            o, n = old / reps, new / reps
            print(f"| {sigma_b} | {g} | {o[0]:.1%} | {o[1]:.1%} / {o[2]:.1%} | {n[0]:.1%} | "
                  f"{n[1]:.1%} / {n[2]:.1%} | {np.median(widths):.2f} |")  # fmt: skip
    print()


def verdict_rates(
    rng: np.random.Generator, reps: int, make: Callable[[], tuple[Positions, Positions]]
) -> dict[str, float]:
    counts = {"ok": 0, "token-drift": 0, "inconclusive": 0}
    for _ in range(reps):
        pair, floor = make()
        res = compare_positions("forced", pair, floor, tolerance=Tolerance(TAU, "default"))
        counts[res.verdict] += 1
    return {k: v / reps for k, v in counts.items()}


def verdicts(rng: np.random.Generator, reps: int) -> None:
    print(f"## The verdict at τ = {TAU:g} (zero floor; σ_b = 0.7)\n")
    print("| true mean / τ | items | P(ok) | P(drift) | P(inconclusive) | false verdict |")
    print("|--:|--:|--:|--:|--:|--:|")
    for g in (10, 30, 60, 120):
        for r in (0.25, 0.5, 1.0, 2.0, 4.0):

            def make(g: int = g, r: float = r) -> tuple[Positions, Positions]:
                kls = sample(rng, g, r * TAU, 0.7)
                return positions(kls), positions([np.zeros(k.size) for k in kls])

            p = verdict_rates(rng, reps, make)
            false = p["token-drift"] if r <= 1 else p["ok"]
            false += p["ok"] if r == 1 else 0.0
            label = "false ok + false drift" if r == 1 else ("drift" if r < 1 else "ok")
            print(f"| {r:g} | {g} | {p['ok']:.1%} | {p['token-drift']:.1%} | "
                  f"{p['inconclusive']:.1%} | {false:.1%} ({label}) |")  # fmt: skip
    print("\nA benign pair (tp2 vs tp1: 4.7e-4 = 0.235 τ) against a measured, non-zero floor:\n")
    print("| items | floor | P(ok) | P(drift) |\n|--:|--:|--:|--:|")
    for g in (30, 60, 120):

        def noisy(g: int = g) -> tuple[Positions, Positions]:
            floor = sample(rng, g, 1e-4, 0.7)
            extra = sample(rng, g, 3.7e-4, 0.7)
            n = [min(a.size, b.size) for a, b in zip(floor, extra, strict=True)]
            pair = [f[:k] + e[:k] for f, e, k in zip(floor, extra, n, strict=True)]
            again = [item_kl(rng, 1e-4 / 1.05, k, 1.0) for k in n]
            return positions(pair), positions(again)

        p = verdict_rates(rng, reps, noisy)
        print(f"| {g} | 1e-4 | {p['ok']:.1%} | {p['token-drift']:.1%} |")
    print()


def old_floor_test(kls: list[np.ndarray]) -> bool:
    means = np.asarray([k.mean() for k in kls])
    return bool(stats.ttest_1samp(means, 0.0, alternative="greater").pvalue < 0.05)


def tail(rng: np.random.Generator, reps: int) -> None:
    print("## One broken item among 120 (0.14 nats/token; the rest 5e-4)\n")
    print("| broken items | P(drift) now | P(drift), old floor test |\n|--:|--:|--:|")
    for broken in (0, 1, 2, 3):
        now = old = 0
        for _ in range(reps):
            kls = sample(rng, 120, 5e-4, 0.7)
            for i in range(broken):
                n = int(rng.integers(50, 250))
                kls[i] = np.minimum(0.14 * rng.lognormal(-0.5, 1.0, n), 20.0)
            pair, floor = positions(kls), positions([np.zeros(k.size) for k in kls])
            res = compare_positions("forced", pair, floor, tolerance=Tolerance(TAU, "default"))
            now += res.verdict == "token-drift"
            old += old_floor_test(kls)
        print(f"| {broken} | {now / reps:.1%} | {old / reps:.1%} |")
    print()


def gsm8k_like(rng: np.random.Generator, period: int, fault: float) -> tuple[np.ndarray, ...]:
    items, where, kl = [], [], []
    for i in range(120):
        start, n = int(rng.integers(700, 1000)), int(rng.integers(60, 250))
        p = np.arange(start, start + n)
        v = item_kl(rng, 1e-3, n, 1.0)
        v = np.where(p % period == 0, v * (1 + fault), v)
        items.append(np.full(n, i))
        where.append(p)
        kl.append(v)
    return (np.concatenate(items).astype(np.int64), np.concatenate(where).astype(np.int64),
            np.concatenate(kl))  # fmt: skip


def old_boundary(items: np.ndarray, where: np.ndarray, kl: np.ndarray, period: int) -> float:
    """The old test: per item, mean KL within ±16 of a boundary minus elsewhere; paired t."""
    near = np.abs(boundary_offsets(where, period)) <= 16
    diffs = []
    for i in np.unique(items):
        m = items == i
        if near[m].any() and (~near[m]).any():
            diffs.append(kl[m & near].mean() - kl[m & ~near].mean())
    if len(diffs) < 2:
        return math.nan
    return float(stats.ttest_1samp(diffs, 0.0).pvalue)


def boundary(rng: np.random.Generator, reps: int) -> None:
    print("## Boundary test: a one-token fault after each boundary, 120 items\n")
    print("| period | fault (× background) | P(p < 0.05) now | old ±16 paired t |")
    print("|--:|--:|--:|--:|")
    for period in (128, 8):
        for fault in (0.0, 1.0, 2.0, 4.0):
            now = old = 0
            for _ in range(reps):
                items, where, kl = gsm8k_like(rng, period, fault)
                res = boundary_test(items, where, kl, period)
                now += res.p_value is not None and res.p_value < 0.05
                p_old = old_boundary(items, where, kl, period) if period > 32 else math.nan
                old += p_old < 0.05
            shown = f"{old / reps:.1%}" if period > 32 else "no test"
            print(f"| {period} | {fault:g} | {now / reps:.1%} | {shown} |")
    print()


def power_table() -> None:
    print("## Items for 80 % power: the normal approximation against the exact count\n")
    print("| normal approximation said | its exact power | exact items |\n|--:|--:|--:|")
    z = stats.norm.isf(0.025) + stats.norm.ppf(0.8)
    for approx in (2, 3, 5, 10):
        d = z / math.sqrt(approx)
        print(
            f"| {approx} | {power(approx, d, 1.0, 0.05):.2f} | {items_for(d, 1.0, 0.8, 0.05):.0f} |"
        )
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="coverage,verdict,tail,boundary,power")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    sections: dict[str, Callable[[], None]] = {
        "coverage": lambda: coverage(rng, max(args.reps, 1000)),
        "verdict": lambda: verdicts(rng, args.reps),
        "tail": lambda: tail(rng, args.reps),
        "boundary": lambda: boundary(rng, max(args.reps // 2, 50)),
        "power": power_table,
    }
    for name in args.only.split(","):
        began = time.perf_counter()
        sections[name]()
        print(f"_{name}: {time.perf_counter() - began:.0f} s_\n", flush=True)


if __name__ == "__main__":
    main()
