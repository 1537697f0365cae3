"""The token-level comparison at the edges of ``evalpipe compare``: the ``tokens`` JSON key and
the text report's "token level" section, on hand-made typed records (pure)."""

from __future__ import annotations

import dataclasses
import json
import math

from token_fixtures import KL, comparison, decode_path, tokens

from evalpipe.compare.jsonout import to_json
from evalpipe.compare.tokens.types import (
    Bin,
    BoundaryTest,
    FloorTest,
    MetricSummary,
    PathComparison,
)
from evalpipe.report.text import format_comparison
from evalpipe.report.tokens.text import MAX_BIN_ROWS

OLD_KEYS = [
    "run_id", "baseline_run_id", "model", "task", "task_version", "layout", "baseline_layout",
    "platform", "engine_versions", "n", "both_correct", "only_run", "only_baseline",
    "both_wrong", "run_accuracy", "baseline_accuracy", "delta", "ci_low", "ci_high", "p_value",
    "p_adjusted", "noninferiority_p", "noninferiority_p_adjusted", "mde", "margin", "alpha",
    "min_n", "verdict", "reason", "unpaired_ci_low", "unpaired_ci_high", "unpaired_p",
    "excluded", "excluded_by_reason", "agreement", "first_difference_chars", "flips",
    "flip_examples", "length_buckets", "noise_floor", "noise_repeats", "shard_period",
    "shard_period_source", "shard_boundaries", "accuracy_by_verdict", "warnings",
]  # fmt: skip


def fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


# --- JSON ---------------------------------------------------------------------------------


def test_json_tokens_is_null_without_token_data_and_the_other_keys_do_not_move() -> None:
    c = comparison()
    plain = to_json(c)
    assert plain["tokens"] is None
    # Every key scripts read keeps its place; "tokens" only comes after them.
    assert [k for k in plain if k in OLD_KEYS] == [k for k in OLD_KEYS if k in plain]
    assert list(plain)[-1] == "tokens"
    with_tokens = to_json(dataclasses.replace(c, tokens=tokens()))
    assert {k: v for k, v in with_tokens.items() if k != "tokens"} == {
        k: v for k, v in plain.items() if k != "tokens"
    }


def test_json_tokens_carries_every_field_as_strict_json() -> None:
    t = tokens(period=128)
    data = to_json(dataclasses.replace(comparison(), tokens=t))["tokens"]
    assert list(data) == ["run_id", "baseline_id", "period", "verdict", "paths", "unavailable"]
    assert (data["run_id"], data["baseline_id"], data["period"]) == ("r", "b", 128)
    assert data["verdict"] == "token-drift"
    assert data["paths"]["forced"] is None  # both paths are keys, null when not compared
    assert data["unavailable"] == {"forced": t.unavailable["forced"]}
    decode = data["paths"]["decode"]
    assert set(decode) == fields(PathComparison) | {"first_divergence_summary"}
    assert set(decode["metrics"]) == {"kl", "abs_dlogprob", "top1_disagree"}
    assert set(decode["metrics"]["kl"]) == fields(MetricSummary)
    assert decode["metrics"]["kl"]["worst_item"] == "12"
    assert set(decode["by_residue"][0]) == fields(Bin)
    assert set(decode["boundary"]) == fields(BoundaryTest)
    assert set(decode["floor"]) == fields(FloorTest)
    assert decode["floor"]["ci_high"] is None  # +inf: a one-sided interval's open end
    assert decode["first_divergence"] == [130, 250, 300, 410, 700]
    assert decode["first_divergence_summary"] == {
        "n": 5,
        "median": 300,
        "min": 130,
        "near_boundary": 0.4,  # |2|, |-6| of (2, -6, 44, 26, -60) are within 16 tokens
        "width": 16,
        "chance": 33 / 128,
    }
    json.dumps(data, allow_nan=False)  # strict JSON: no NaN or Infinity anywhere


def test_json_maps_every_non_finite_number_to_null() -> None:
    nan = float("nan")
    kl = dataclasses.replace(KL, mean=nan, ci_low=-math.inf, p99=math.inf)
    metrics = {"kl": kl}
    path = decode_path(metrics=metrics, greedy_agreement=nan, floor=None, boundary=None)
    t = dataclasses.replace(tokens(), paths={"decode": path})
    data = to_json(dataclasses.replace(comparison(), tokens=t))["tokens"]["paths"]["decode"]
    assert data["metrics"]["kl"]["mean"] is None and data["metrics"]["kl"]["ci_low"] is None
    assert data["metrics"]["kl"]["p99"] is None and data["greedy_agreement"] is None
    assert data["metrics"]["kl"]["p999"] == KL.p999
    json.dumps(data, allow_nan=False)


# --- text ---------------------------------------------------------------------------------


def test_no_token_section_at_all_without_token_data() -> None:
    c = comparison()
    text = format_comparison(c)
    assert "token level" not in text and "nats" not in text
    # With token data the accuracy report is the same, the section comes after it.
    both = format_comparison(dataclasses.replace(c, tokens=tokens()))
    assert both.startswith(text + "\ntoken level: ")


def test_token_section_shows_verdicts_figures_localisation_and_unavailable_paths() -> None:
    lines = format_comparison(dataclasses.replace(comparison(), tokens=tokens())).splitlines()
    section = lines[next(i for i, x in enumerate(lines) if x.startswith("token level")) :]
    assert section[0] == (
        "token level: ✗ TOKEN-DRIFT (accuracy ? INCONCLUSIVE); run r vs baseline b, "
        "shard period 128 tokens"
    )
    assert section[1] == "  decode: 120 items, 9876 tokens, top-5; identical generations 72.5%"
    assert section[2] == (
        "    first divergence (5 items): position median 300, min 130; 40% within 16 tokens "
        "of a shard boundary (chance 26%)"
    )
    text = "\n".join(section)
    kl = next(x for x in section if x.lstrip().startswith("KL (nats)"))
    assert kl.split()[2:] == [
        "1.23e-04", "[1.01e-04,", "1.46e-04]", "2.30e-03", "5.60e-03", "12@345",
    ]  # fmt: skip
    dlogprob = next(x for x in section if x.lstrip().startswith("|Δlogprob|"))
    assert "3.21e-03 [2.50e-03, 3.90e-03]" in dlogprob and "7@200" in dlogprob
    top1 = next(x for x in section if x.lstrip().startswith("top-1 differs"))
    assert "0.52% [0.31%, 0.73%]" in top1 and "100.00%" in top1
    assert (
        "    noise floor (baseline vs its repeat, 100 items): mean KL 4.50e-05 vs pair "
        "1.23e-04; difference +7.84e-05 [+5.00e-05, +∞], p=0.0012 (one-sided)"
    ) in section
    assert "    KL by residue mod 128:" in section and "    KL by position band:" in section
    assert any(x.split()[:3] == ["near", "0-15", "110"] for x in section)
    assert (
        "    boundary test (±16 tokens of a multiple of 128, 110 items): mean KL near 2.10e-04 "
        "vs rest 1.10e-04; difference +1.00e-04 [+4.00e-05, +1.60e-04], p=0.003"
    ) in section
    assert "3 positions imputed a baseline top-5 token" in text
    assert "    verdict: ✗ TOKEN-DRIFT — mean KL exceeds the baseline-repeat floor" in text
    assert section[-1] == (
        "  forced: no teacher-forced traces: run `evalpipe score RUN --against BASELINE`"
    )


def test_without_period_floor_or_offsets_the_section_says_so() -> None:
    path = decode_path(
        divergence_offsets=(),
        by_residue=(),
        by_band=(),
        boundary=None,
        floor=None,
        floor_metrics=None,
        verdict="unknown",
        reason="no baseline repeat with token traces: run the baseline with --repeat 2",
        missing_tokens=0,
    )
    t = tokens(period=None, paths={"decode": path}, unavailable={})
    text = format_comparison(dataclasses.replace(comparison(), tokens=t))
    section = text[text.index("token level") :]
    assert "? UNKNOWN" in section and "no shard period" in section
    assert "first divergence (5 items): position median 300, min 130\n" in section
    assert "shard boundary" not in section and "by residue" not in section
    assert "noise floor: not measured" in section and "imputed" not in section
    assert section.endswith("verdict: ? UNKNOWN — " + path.reason)


def test_item_ids_and_reasons_are_shown_escaped() -> None:
    evil = "\x1b[31mevil\nitem"
    kl = dataclasses.replace(KL, worst_item=evil)
    path = decode_path(metrics={"kl": kl}, reason="bad \x07 reason")
    t = tokens(paths={"decode": path}, unavailable={"forced": "why \x1b[2J"})
    text = format_comparison(dataclasses.replace(comparison(), tokens=t))
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[31mevil⏎item@345" in text and "why \\x1b[2J" in text


def test_long_localisation_tables_are_cut_and_say_how_many_are_left() -> None:
    bins = tuple(Bin(str(r), r, r, 10, 100, 1e-4, 5e-5, 2e-4) for r in range(40))
    t = tokens(paths={"decode": decode_path(by_residue=bins)})
    text = format_comparison(dataclasses.replace(comparison(), tokens=t))
    assert f"… {40 - MAX_BIN_ROWS} more groups (--json has them all)" in text
    assert "\n      15 " in text and "\n      16 " not in text


def test_a_degenerate_test_prints_n_a_not_nan() -> None:
    floor = FloorTest(3, 1e-4, 1e-4, 0.0, math.nan, math.nan, math.nan)
    t = tokens(paths={"decode": decode_path(floor=floor)})
    text = format_comparison(dataclasses.replace(comparison(), tokens=t))
    assert "difference +0.00e+00 [n/a, n/a], p=n/a (one-sided)" in text
    assert "nan" not in text
