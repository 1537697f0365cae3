"""The canary grid (every refusal with its line), its plan (one engine start per arm, the
--max-starts refusal) and its rows (pure, from literal comparisons)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from token_fixtures import comparison, tokens

from evalpipe.api.canary import CanaryReport, canary_json, format_canary
from evalpipe.canary.grid import DEFAULT_GRID, default_grid, parse_grid
from evalpipe.canary.plan import plan_canary
from evalpipe.canary.table import first_position, row, smallest_detectable
from evalpipe.errors import EvalpipeError
from evalpipe.faults import parse_fault
from evalpipe.options import RunOptions

GRID = """\
faults:
  - {kind: key-scale, sizes: [0.05, 0.2], period: 64}
  - out-scale:size=0.1,period=8
benign:
  - layout: TP2
  - engine_args: {dtype: float32}
  - request_order: reversed
"""


def test_a_grid_expands_sizes_and_keeps_the_other_parameters() -> None:
    grid = parse_grid(GRID, "g.yaml")
    assert [f.canonical for f in grid.faults] == [
        "key-scale:size=0.05,period=64,offset=63,width=1,threshold=0,target=k",
        "key-scale:size=0.2,period=64,offset=63,width=1,threshold=0,target=k",
        "out-scale:size=0.1,period=8,offset=7,width=1,threshold=0",
    ]
    assert [v.label for v in grid.benign] == ["tp2", "dtype=float32", "reversed order"]


def test_the_default_grid_is_three_kinds_at_three_sizes() -> None:
    grid = default_grid()
    assert len(grid.faults) == 9
    assert {f.kind for f in grid.faults} == {"key-scale", "out-mix", "kv-position"}
    assert grid.source == "<default grid>" and "faults:" in DEFAULT_GRID


def test_every_problem_of_a_grid_is_refused_at_once_with_its_line() -> None:
    text = """\
faults:
  - {kind: key-scale, sizes: [0.1], colour: red}
  - nope:size=1
  - {kind: out-scale, sizes: [0]}
  - key-scale:size=0.1
  - key-scale:size=0.1
benign:
  - layout: tp0
  - {request_order: sideways}
  - {flavour: x}
extra: 1
"""
    with pytest.raises(EvalpipeError) as exc:
        parse_grid(text, "g.yaml")
    msg = str(exc.value)
    assert msg.startswith("the canary grid is refused:")
    for needle in (
        "g.yaml:2: unknown key 'colour'",
        "g.yaml:3: unknown fault kind 'nope'",
        "g.yaml:4: fault 'out-scale:size=0': the out-scale size is a nonzero relative scale",
        "g.yaml:6: fault 'key-scale 0.1' is listed twice",
        "g.yaml:8: invalid layout 'tp0'",
        "g.yaml:9: request_order is one of dataset, reversed",
        "g.yaml:10: unknown key 'flavour'",
        "g.yaml:11: unknown key 'extra'",
    ):
        assert needle in msg, needle


def test_a_grid_without_faults_is_refused() -> None:
    with pytest.raises(EvalpipeError, match="faults must be a non-empty list"):
        parse_grid("benign: []\n", "g.yaml")


def _options(**changes: object) -> RunOptions:
    return dataclasses.replace(RunOptions(task="gsm8k", model="/m", limit=120), **changes)


def test_the_plan_is_one_engine_start_per_arm_the_clean_one_with_its_repeat() -> None:
    planned = plan_canary(_options(), parse_grid(GRID, "g.yaml"))
    assert planned.starts == 1 + 3 + 3
    groups = planned.groups()
    assert [len(g.cells) for g in groups] == [2, 1, 1, 1, 1, 1, 1]
    assert [c.repeat_index for c in groups[0].cells] == [0, 1]
    assert len({g.key for g in groups}) == len(groups)  # every engine named apart
    faults = [g.cells[0].options.fault for g in groups[1:4]]
    assert faults[0] == parse_fault("key-scale:size=0.05,period=64").canonical
    tp2, fp32, order = (g.cells[0].options for g in groups[4:])
    assert tp2.layout == "tp2" and tp2.fault is None
    assert fp32.engine_args == ("dtype=float32",)
    assert order.request_order == "reversed"
    # Every arm reuses finished runs: the same command picks up where it stopped.
    assert all(c.options.reuse_finished for g in groups for c in g.cells)


def test_a_grid_needing_more_starts_than_allowed_is_refused_with_the_count() -> None:
    with pytest.raises(EvalpipeError) as exc:
        plan_canary(_options(), parse_grid(GRID, "g.yaml"), max_starts=6)
    assert "needs 7 engine starts (1 clean + 3 faults + 3 benign variants)" in str(exc.value)
    assert "--max-starts 6" in str(exc.value)
    plan_canary(_options(), parse_grid(GRID, "g.yaml"), max_starts=7)


def test_a_canary_of_a_faulted_template_is_refused() -> None:
    with pytest.raises(EvalpipeError, match="clean run has no fault"):
        plan_canary(_options(fault="key-scale:size=0.1"), default_grid())


def test_first_position_is_where_the_fault_first_acts() -> None:
    for text in (
        "key-scale:size=0.2",
        "kv-position:size=1,period=1,offset=0,threshold=1024",
        "out-scale:size=0.1,period=8,threshold=5",
        "out-scale:size=0.1,period=8,offset=6,width=3,threshold=16",
    ):
        spec = parse_fault(text)
        assert first_position(spec) == next(p for p in range(5000) if spec.touches(p))


def _row(fault: str | None, wrong: int, token_items: float, max_position: int = 2000):  # type: ignore[no-untyped-def]
    c = dataclasses.replace(comparison(n=120, wrong=wrong), tokens=tokens())
    spec = None if fault is None else parse_fault(fault)
    return row(
        "x" if spec is None else spec.label,
        "benign" if spec is None else "fault",
        c,
        spec,
        token_items,
        max_position,
    )


def test_a_row_carries_every_signal_of_the_comparison() -> None:
    r = _row("key-scale:size=0.2", wrong=12, token_items=3)
    assert (r.kind, r.size, r.n) == ("key-scale", 0.2, 120)
    assert math.isclose(r.acc_delta, -0.1)
    assert r.acc_verdict in ("drift", "inconclusive")
    assert r.acc_items < 120  # a 10-point drop with no other flips is seen on 120 items
    assert (r.kl_mean, r.kl_low, r.kl_high) == (1.234e-4, 1.01e-4, 1.456e-4)
    assert r.token_verdict == "token-drift" and r.token_items == 3
    assert r.period == 128 and r.divergent == 5
    # 2 of the 5 first divergences within ±16 of a boundary, against 1.3 by chance
    assert (r.near, r.near_width, r.near_expected, r.near_p) == (2, 16, 1.3, 0.37)
    assert r.boundary_p == 0.003 and r.boundary_reason == "" and r.reached
    from evalpipe.report.canarytext import where

    assert where(r) == "2/5 within ±16 (chance 1.3, p=0.37); KL test p=0.003"


def test_no_drop_needs_infinitely_many_items_and_json_says_null() -> None:
    r = _row("key-scale:size=0.05", wrong=0, token_items=math.inf)
    assert math.isinf(r.acc_items)
    data = r.to_json()
    assert data["acc_items"] is None and data["token_items"] is None
    json.dumps(data)


def test_a_fault_past_every_sequence_is_marked_never_reached() -> None:
    r = _row("kv-position:size=1,period=1,offset=0,threshold=1024", 0, 5.0, max_position=900)
    assert not r.reached


def test_smallest_detectable_takes_the_smallest_size_within_the_items() -> None:
    rows = [
        _row("key-scale:size=0.05", 0, token_items=400),
        _row("key-scale:size=0.2", 0, token_items=50),
        _row("key-scale:size=0.5", 0, token_items=2),
        _row("out-scale:size=0.1,period=8", 0, token_items=math.inf),
        _row(None, 0, token_items=1),  # a benign variant is never a "fault"
    ]
    assert smallest_detectable(rows, "token", 60) == {"key-scale": 0.2, "out-scale": None}
    assert smallest_detectable(rows, "token", 1319) == {"key-scale": 0.05, "out-scale": None}
    assert smallest_detectable(rows, "accuracy", 1319) == {"key-scale": None, "out-scale": None}


def test_the_text_and_json_reports_escape_labels_and_keep_every_row() -> None:
    rows = (_row("key-scale:size=0.2", 12, 3.0), _row(None, 0, math.inf))
    rows = (rows[0], dataclasses.replace(rows[1], label="tp2 \x1b[31mred"))
    report = CanaryReport("m", "gsm8k", "tp1", "g.yaml", "clean", "rep", rows, ("x: failed",), 3)
    text = format_canary(report)
    assert "\x1b" not in text and "\\x1b" in text
    assert "key-scale 0.2" in text and "benign: tp2" in text
    assert "did not finish" in text
    data = json.loads(json.dumps(canary_json(report)))
    assert [r["label"] for r in data["rows"]] == ["key-scale 0.2", "tp2 \x1b[31mred"]
    assert data["smallest_detectable"]["token"]["120"] == {"key-scale": 0.2}


def test_the_example_grid_parses() -> None:
    from pathlib import Path

    path = Path(__file__).parents[2] / "examples" / "canary.yaml"
    grid = parse_grid(path.read_text(), str(path))
    assert len(grid.faults) == 12 and len(grid.benign) == 3


def test_token_items_are_what_the_verdict_needs_to_show_the_excess_above_tau() -> None:
    """The items to drift: an excess above τ is seen with fewer items the further above it
    is; an excess within τ never drifts (by design, not a miss)."""
    from token_fixtures import DECISION, EXCESS, decode_path

    from evalpipe.canary.rows import token_items
    from evalpipe.compare.tokens.types import Tolerance

    def items(estimate: float, tau: float) -> float:
        values = tuple(estimate + d for d in (-1e-3, 0.0, 1e-3) * 6)
        excess = dataclasses.replace(EXCESS, estimate=estimate, item_values=values)
        decision = dataclasses.replace(DECISION, tolerance=Tolerance(tau, "given"))
        path = decode_path(excess=excess, decision=decision)
        return token_items(
            dataclasses.replace(comparison(), tokens=tokens(paths={"decode": path})), 0.05
        )

    assert math.isinf(items(1e-3, 2e-3))  # within τ
    near, far = items(2.5e-3, 2e-3), items(6e-3, 2e-3)
    assert 2 <= far < near < math.inf
