"""Power and false-alarm rate of evalpipe's verdict next to the fixed-tolerance gates in use today.

    python benchmarks/power.py [--sims 10000] [--seed 0] [--n 1319] [--margin 0.01]

Prints Markdown. Model, per question (n = 1319 as GSM8K): the baseline is right with
probability p; engine noise makes the run disagree with rate d, half each way (noise alone moves
no accuracy); a true drop delta turns a further delta of right answers wrong. So the paired table
is Multinomial(n; both right p - d/2 - delta, only run d/2, only baseline d/2 + delta, both wrong
1 - p - d/2), with discordance d + delta. The drops are 0, 0.5, 1, 2 and 3 margins, so the grid
always holds a margin-sized loss: there ``ok`` is a false pass, which the rule bounds by
alpha / 2 = 2.5 % (non-inferiority at alpha / 2), up to the normal approximation of its test.

* evalpipe: ``compare_table`` with its defaults (margin 1 point, alpha 0.05, min_n 100, no noise
  floor passed). The verdict depends on the table only through n and the discordant counts, so it
  is the same for every p; it is computed once per distinct (only run, only baseline).
* Fixed gates compare one temperature-0.6 score with a constant, so their noise is sampling
  noise: score ~ Binomial(n, p - delta) / n against the reference p (generously, the true
  accuracy). vllm-ascend's gate fires when |score - p| > 5 points, vLLM's GSM8K test when
  score - p < -8 points. Engine noise d does not enter; p does (binomial variance).

Numpy draws the tables; the verdict code under test is evalpipe's own (scipy.stats for the
binomial).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

# Run as a plain script from a checkout: make the repository importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalpipe.compare.power import mde
from evalpipe.compare.stats import PairedTable, compare_table, mcnemar_exact_p

NOISE = (0.0025, 0.005, 0.01, 0.02)
DROPS = (0.0, 0.5, 1.0, 2.0, 3.0)  # in margins
ACCURACIES = (0.8, 0.5)


def simulate_tables(
    rng: np.random.Generator, n: int, p: float, d: float, drop: float, sims: int
) -> np.ndarray:
    """``sims`` paired tables as rows (both_correct, only_run, only_baseline, both_wrong)."""
    probs = [p - d / 2 - drop, d / 2, d / 2 + drop, 1 - p - d / 2]
    return rng.multinomial(n, probs, size=sims)


class Verdicts:
    """evalpipe's verdict per table, cached on (only_run, only_baseline)."""

    def __init__(self, margin: float) -> None:
        self.margin = margin
        self.cache: dict[tuple[int, int], str] = {}

    def __call__(self, row: np.ndarray) -> str:
        key = (int(row[1]), int(row[2]))
        if key not in self.cache:
            table = PairedTable(*(int(x) for x in row))
            self.cache[key] = compare_table(table, margin=self.margin).verdict
        return self.cache[key]


def rates(verdicts: list[str]) -> tuple[float, float, float]:
    """Shares of drift, inconclusive and ok."""
    total = len(verdicts)
    return (
        verdicts.count("drift") / total,
        verdicts.count("inconclusive") / total,
        verdicts.count("ok") / total,
    )


def gate_rates(
    rng: np.random.Generator, n: int, p: float, drop: float, sims: int
) -> tuple[float, float]:
    """How often the +-5-point and the -8-point gates fire on one sampled score."""
    score = rng.binomial(n, p - drop, size=sims) / n
    return float(np.mean(np.abs(score - p) > 0.05)), float(np.mean(score - p < -0.08))


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


Cell = tuple[float, float, float]  # shares of drift, inconclusive, ok


def verdict_grid(
    rng: np.random.Generator, args: argparse.Namespace, verdict_of: Verdicts
) -> dict[tuple[float, float], Cell]:
    """Print the verdict-vs-gates table; return the verdict shares per (noise, drop in margins)."""
    header = ["d (noise)", "delta (drop)", "drift", "inconclusive", "ok"]
    header += [f"{g} p={p}" for p in ACCURACIES for g in ("gate abs>5", "gate <-8")]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    grid: dict[tuple[float, float], Cell] = {}
    for d in NOISE:
        for margins in DROPS:
            drop = margins * args.margin
            tables = simulate_tables(rng, args.n, ACCURACIES[0], d, drop, args.sims)
            grid[d, margins] = rates([verdict_of(row) for row in tables])
            cells = [f"{100 * d:g} %", f"{100 * drop:g} pt", *map(pct, grid[d, margins])]
            for p in ACCURACIES:
                cells += [pct(x) for x in gate_rates(rng, args.n, p, drop, args.sims)]
            print("| " + " | ".join(cells) + " |")
    return grid


def decisiveness(grid: dict[tuple[float, float], Cell], n: int) -> None:
    """The grid's two questions side by side: is no drift passed, is a margin-sized loss not?"""
    print("\n### Decisiveness: no drift vs a margin-sized loss (from the table above)\n")
    print(
        "| d (noise) | MDE (points) | no drift: ok | inconclusive | drift "
        "| loss = margin: ok (false pass, nominal <= 2.5) | inconclusive | drift |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for d in NOISE:
        (drift0, inc0, ok0), (drift1, inc1, ok1) = grid[d, 0.0], grid[d, 1.0]
        cells = [f"{100 * d:g} %", f"{100 * mde(n, max(d, 1 / n)):.2f}"]
        cells += [pct(x) for x in (ok0, inc0, drift0, ok1, inc1, drift1)]
        print("| " + " | ".join(cells) + " |")


def mde_check(rng: np.random.Generator, args: argparse.Namespace, verdict_of: Verdicts) -> None:
    """Simulated power of the drift verdict and of the bare test at the claimed MDE."""
    print(
        "\n### MDE check: simulated power at the drop the verdict claims to detect (80 % target)\n"
    )
    print("| d (noise) | MDE (points) | drift verdict | exact McNemar loss, p < 0.05 |")
    print("|---|---|---|---|")
    for d in NOISE:
        detectable = mde(args.n, max(d, 1 / args.n))
        tables = simulate_tables(rng, args.n, ACCURACIES[0], d, detectable, args.sims)
        drift = rates([verdict_of(row) for row in tables])[0]
        mcnemar = np.mean(
            [
                row[2] > row[1] and mcnemar_exact_p(PairedTable(*(int(x) for x in row))) < 0.05
                for row in tables
            ]
        )
        print(f"| {100 * d:g} % | {100 * detectable:.2f} | {pct(drift)} | {pct(float(mcnemar))} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=10000, help="simulations per cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=1319, help="questions (GSM8K test: 1319)")
    parser.add_argument("--margin", type=float, default=0.01, help="fraction; 0.01 = 1 point")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    verdict_of = Verdicts(args.margin)
    started = time.perf_counter()

    print(
        f"### Verdict rule vs fixed gates (n = {args.n}, {args.sims} simulations per cell, "
        f"seed {args.seed}, margin {100 * args.margin:g} pt)\n"
    )
    print(
        "Rates in %. delta = 0 rows are false alarms (drift / gate fires); the others are "
        "power. Monte Carlo SE <= "
        f"{100 * 0.5 / args.sims**0.5:.1f} points.\n"
    )
    grid = verdict_grid(rng, args, verdict_of)
    decisiveness(grid, args.n)
    mde_check(rng, args, verdict_of)
    print(f"\n_{time.perf_counter() - started:.1f} s, {len(verdict_of.cache)} distinct tables._")
    return 0


if __name__ == "__main__":
    sys.exit(main())
