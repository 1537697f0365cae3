"""Localisation (evalpipe.compare.tokens.loc): the phase-randomised boundary test (power for a
one-token fault, validity with 1–3 near positions, a reason when there is no test, the window
rule pinned) and where first divergences fall against a null from the actual positions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from token_fixtures import kl_pair

from evalpipe.compare.tokens import loc
from evalpipe.compare.tokens.loc import boundary_test, divergence_share, windows_for
from evalpipe.compare.tokens.stats import compare_path
from evalpipe.traces import trace_of

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]


def positions(
    rng: np.random.Generator, n_items: int, period: int, fault: float, background: float = 1e-3
) -> Arrays:
    """GSM8K-like items (prompts of 700–1000 tokens, 60–250 generated) with heavy-tailed KL,
    the position right after each boundary (residue 0) multiplied by ``1 + fault``."""
    items, where, kl = [], [], []
    for i in range(n_items):
        start, n = int(rng.integers(700, 1000)), int(rng.integers(60, 250))
        p = np.arange(start, start + n)
        v = background * rng.lognormal(-1.62, 1.8, n)
        v = np.where(p % period == 0, v * (1 + fault), v)
        items.append(np.full(n, i))
        where.append(p)
        kl.append(v)
    return (
        np.concatenate(items).astype(np.int64),
        np.concatenate(where).astype(np.int64),
        np.concatenate(kl),
    )


def test_windows_hold_at_most_half_the_period() -> None:
    # 2w + 1 <= period // 2, with <=: a window of 1 fits a period of 6 exactly.
    assert windows_for(6) == (0, 1)
    assert windows_for(5) == (0,)
    assert windows_for(8) == (0, 1)
    assert windows_for(128) == (0, 1, 2, 4, 8, 16)
    assert windows_for(1) == ()


def test_a_one_token_fault_at_twice_the_background_is_seen_and_no_fault_is_not() -> None:
    rng = np.random.default_rng(0)
    fault = boundary_test(*positions(rng, 120, 128, fault=2.0), 128)
    assert fault.p_value is not None and fault.p_value < 0.01
    assert fault.window in (0, 1) and fault.ratio > 1.5
    assert fault.near_share == pytest.approx(fault.near_tokens / 20_000, rel=0.5)
    null = boundary_test(*positions(rng, 120, 128, fault=0.0), 128)
    assert null.p_value is not None and null.p_value > 0.05
    assert null.draws == loc.DRAWS and null.windows == windows_for(128)


def test_the_test_is_valid_with_one_to_three_near_positions() -> None:
    # Items of 40 positions straddling one boundary: 1 to 3 positions within w of it. Under
    # no boundary effect the test rejects at 5 % no more than 5 % of the time.
    rng = np.random.default_rng(1)
    rejected, runs = 0, 150
    for _ in range(runs):
        n_items = int(rng.integers(1, 4))
        items = np.repeat(np.arange(n_items), 40)
        starts = rng.integers(90, 128, n_items)
        where = np.concatenate([np.arange(s, s + 40) for s in starts]).astype(np.int64)
        kl = rng.lognormal(-7, 1.8, where.size)
        near = np.abs(loc.boundary_offsets(where, 128)) <= 1
        assert 1 <= near.sum() <= 3 * n_items
        res = boundary_test(items.astype(np.int64), where, kl, 128)
        assert res.p_value is not None
        rejected += res.p_value < 0.05
    assert rejected / runs <= 0.09  # 5 % with its Monte Carlo error over 150 runs


def test_no_test_says_why() -> None:
    items = np.zeros(30, dtype=np.int64)
    where = np.arange(200, 230, dtype=np.int64)
    short = boundary_test(items, where, np.ones(30), 1)
    assert short.p_value is None and "a period of 1 tokens is too short" in short.reason
    never = boundary_test(items, where, np.ones(30), 4096)  # the first boundary is at 4096
    assert never.p_value is None and never.reason == (
        "no compared position is within 16 tokens of a boundary (positions 200–229, "
        "boundaries every 4096)"
    )
    zero = boundary_test(items, np.arange(120, 150, dtype=np.int64), np.zeros(30), 128)
    assert zero.p_value is None and "every compared KL is 0" in zero.reason
    empty = boundary_test(items[:0], where[:0], np.ones(0), 128)
    assert empty.reason == "no compared positions"


def test_items_shorter_and_longer_than_the_period_are_tabulated_alike() -> None:
    rng = np.random.default_rng(2)
    where = np.arange(1000, 1060, dtype=np.int64)  # one boundary in reach: 1024
    v = rng.lognormal(-7, 1.8, where.size)
    windows = windows_for(64)
    dense = loc._candidates(where, v, 64, windows)  # 60 + 16 >= 64: every phase
    sparse = loc._candidates(where, v, 512, windows)  # only phases near the item
    assert dense[0].tolist() == list(range(64)) and sparse[0].size == 60 + 2 * windows[-1]
    # a boundary at 1024 (phase 0 mod 512 and mod 64): the same near masses and counts
    at = int(np.flatnonzero(sparse[0] == 0)[0])
    assert dense[1][:, 0] == pytest.approx(sparse[1][:, at])
    assert dense[2][:, 0].tolist() == sparse[2][:, at].tolist() == [1, 3, 5, 9, 17]


def test_the_parting_positions_are_left_out() -> None:
    # Identical prefixes; every item parts right at a boundary (position 32). The parting
    # position carries all the KL but is selected, not located: no boundary effect is seen.
    d, e = {1: 0.7, 2: 0.3}, {2: 0.7, 1: 0.3}

    def tr(ids: list[int], dists: list[dict[int, float]]):  # type: ignore[no-untyped-def]
        lps = [math.log(x[t]) for t, x in zip(ids, dists, strict=True)]
        return trace_of(ids, lps, [list(x.items()) for x in dists], 2)

    from evalpipe.traces import StoredTrace

    pairs = {}
    for i in range(6):
        n = 28 + i % 3  # parts at index n: positions 4 + n = 32, 33, 34
        base = tr([1] * (n + 2), [d] * (n + 2))
        run = tr([1] * n + [2, 2], [d] * n + [e, e])
        pairs[f"q{i}"] = (
            StoredTrace("b", f"q{i}", "", 4, base),
            StoredTrace("r", f"q{i}", "", 4, run),
        )
    res = compare_path("decode", pairs, period=32)
    assert res.metrics["kl"].max > 0.2 and res.first_divergence == (32, 32, 33, 33, 34, 34)
    assert res.boundary is not None and "every compared KL is 0" in res.boundary.reason


def test_the_boundary_test_runs_on_compared_traces() -> None:
    rng = np.random.default_rng(3)
    pairs = {}
    for i in range(30):
        start, n = int(rng.integers(700, 900)), 120
        kl = 1e-3 * rng.lognormal(-1.62, 1.8, n)
        kl[(np.arange(start, start + n) % 64) == 0] = 0.2
        pairs[f"q{i}"] = kl_pair(kl, f"q{i}", start)
    res = compare_path("forced", pairs, period=64)
    assert res.boundary is not None and res.boundary.p_value is not None
    assert res.boundary.p_value < 0.01 and res.boundary.window == 0


# --- where first divergences fall ---------------------------------------------------------------


def test_a_fixed_prompt_offset_is_no_boundary_effect() -> None:
    # Every prompt is 900 tokens (4 past a boundary at 896): generations part 0–30 tokens in,
    # so many divergences sit near a boundary whatever the engine. (2w + 1) / period = 26 %
    # would call that localised; the null from the actual positions does not.
    rng = np.random.default_rng(4)
    offsets = rng.integers(0, 30, 60).tolist()
    share = divergence_share([900] * 60, offsets, [200] * 60, 128)
    near = sum(abs(900 + o - 896) <= 16 for o in offsets)
    assert share.near == near and near / 60 > 33 / 128
    assert share.expected == pytest.approx(near)  # every item could have parted anywhere seen
    assert share.p_value is not None and share.p_value > 0.3


def test_divergences_pulled_to_boundaries_are_seen() -> None:
    rng = np.random.default_rng(5)
    starts = rng.integers(700, 1000, 60)
    free = rng.integers(0, 200, 60)
    # a fault: the generations part right after the first boundary they cross
    pulled = [int(-(-s // 128) * 128 - s + rng.integers(0, 3)) for s in starts]
    fault = divergence_share(starts.tolist(), pulled, [250] * 60, 128)
    benign = divergence_share(starts.tolist(), free.tolist(), [250] * 60, 128)
    assert fault.p_value is not None and fault.p_value < 1e-6 and fault.near == 60
    assert benign.p_value is not None and benign.p_value > 0.01


def test_the_exact_null_matches_brute_force_and_offsets_must_fit() -> None:
    starts, offsets, lengths = [100, 130, 250], [28, 1, 6], [40, 5, 10]
    share = divergence_share(starts, offsets, lengths, 64)
    near = [[abs(s + d - round((s + d) / 64) * 64) <= 16 and d < n for d in offsets]
            for s, n in zip(starts, lengths, strict=True)]  # fmt: skip
    fits = [[d < n for d in offsets] for n in lengths]
    chance = [sum(a) / sum(f) for a, f in zip(near, fits, strict=True)]
    assert share.expected == pytest.approx(sum(chance))
    observed = share.near
    total = 0.0
    for bits in range(8):  # every outcome of the three items
        picks = [(bits >> i) & 1 for i in range(3)]
        prob = math.prod(c if b else 1 - c for c, b in zip(chance, picks, strict=True))
        total += prob if sum(picks) >= observed else 0.0
    assert share.p_value == pytest.approx(total)
    assert divergence_share([100], [3], [10], 64).reason == "fewer than 2 divergent items"
    assert divergence_share([100, 9], [3, 4], [10, 10], 1).p_value is None
