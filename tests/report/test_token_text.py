"""The token-level comparison at the edges of ``evalpipe compare``: the ``tokens`` JSON key and
the text report's "token level" section, on hand-made typed records (pure)."""

from __future__ import annotations

import dataclasses
import json
import math

from token_fixtures import EXCESS, KL, comparison, decode_path, tokens

from evalpipe.compare.jsonout import to_json
from evalpipe.compare.tokens.types import (
    Bin,
    BoundaryTest,
    Decision,
    Excess,
    MetricSummary,
    PathComparison,
    TailTest,
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
    assert list(data) == [
        "run_id", "baseline_id", "period", "verdict", "reason", "paths", "unavailable",
    ]  # fmt: skip
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
    assert set(decode["excess"]) == fields(Excess) and set(decode["tail"]) == fields(TailTest)
    assert set(decode["decision"]) == fields(Decision)
    assert decode["decision"]["tolerance"] == {"tau": 2e-5, "source": "given"}
    assert decode["excess"]["ci_high"] is None  # +inf: an unbounded upper limit
    assert decode["excess"]["level"] == 0.95 and decode["metrics"]["kl"]["level"] == 0.95
    assert decode["first_divergence"] == [130, 250, 300, 410, 700]
    assert decode["first_divergence_summary"] == {
        "n": 5,
        "median": 300,
        "min": 130,
        "near_boundary": 0.4,  # 2 of 5 near, as the DivergenceShare says
        "width": 16,
        "chance": 1.3 / 5,  # its expected count from the actual positions, not 33 / 128
        "p_value": 0.37,
    }
    json.dumps(data, allow_nan=False)  # strict JSON: no NaN or Infinity anywhere


def test_json_maps_every_non_finite_number_to_null() -> None:
    nan = float("nan")
    kl = dataclasses.replace(KL, mean=nan, ci_low=-math.inf, p99=math.inf)
    metrics = {"kl": kl}
    path = decode_path(metrics=metrics, greedy_agreement=nan, excess=None, boundary=None)
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
        "    first divergence (5 items): position median 300, min 130; 40% within ±16 tokens "
        "of a shard boundary, 26% expected from the actual positions (p=0.37)"
    )
    assert section[3].split() == [
        "metric",
        "mean",
        "[95%",
        "CI]",
        "p99",
        "p99.9",
        "worst",
        "item@position",
    ]
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
        "    decode KL apart: common prefix 1.10e-04 [1.00e-04, 1.30e-04] (95%) over 9871 "
        "tokens; the 5 parting positions 2.50e-02"
    ) in section
    assert (
        "    noise floor: mean KL 1.23e-04 for the pair vs 4.50e-05 between baseline repeats on "
        "the same 100 items: excess +7.84e-05 [+5.00e-05, +∞] (95%)"
    ) in section
    assert (
        "    tail test (each item's typical KL): worst item 12: typical KL 3.00e-03 (mean "
        "7.00e-03) over 80 tokens, above τ from position 340, against τ = 2.00e-05 per item; "
        "p = 0.0004 (Bonferroni over 98 items)"
    ) in section
    assert "    KL by residue mod 128:" in section and "    KL by position band:" in section
    assert "      group        residues      items   tokens  mean KL [95% CI]" in section
    assert any(x.split()[:3] == ["near", "0-15", "110"] for x in section)
    assert (
        "    boundary test: positions within ±1 tokens of a multiple of 128 (3.0% of the "
        "positions of 110 items) carry 9.0% of the KL (×3.00); p = 0.003, one-sided, "
        "Bonferroni over windows 0, 1, 2, 4, 8, 16, each against 999 random boundary "
        "placements"
    ) in section
    assert "3 positions imputed a baseline top-5 token" in text
    assert "    verdict: ✗ TOKEN-DRIFT — KL over the floor 7.84e-05 [5.00e-05, +∞] (95%)" in text
    assert section[-1] == (
        "  forced: no teacher-forced traces: run `evalpipe score RUN --against BASELINE`"
    )


def test_without_period_floor_or_offsets_the_section_says_so() -> None:
    path = decode_path(
        divergence_offsets=(),
        by_residue=(),
        by_band=(),
        boundary=None,
        divergence_share=None,
        excess=dataclasses.replace(EXCESS, floor_mean=None, estimate=EXCESS.pair_mean),
        tail=None,
        floor_metrics=None,
        verdict="inconclusive",
        reason="no baseline repeat with token traces: run the baseline with --repeat 2",
        missing_tokens=0,
    )
    t = tokens(period=None, paths={"decode": path}, unavailable={})
    text = format_comparison(dataclasses.replace(comparison(), tokens=t))
    section = text[text.index("token level") :]
    assert "? INCONCLUSIVE" in section and "no shard period" in section
    assert "first divergence (5 items): position median 300, min 130\n" in section
    assert "shard boundary" not in section and "by residue" not in section
    assert (
        "noise floor: not measured (no baseline repeat with token traces): the pair's " in section
    )
    assert "imputed" not in section and "tail test" not in section
    assert section.endswith("verdict: ? INCONCLUSIVE — " + path.reason)


def test_missing_percentiles_ties_and_an_untestable_boundary_are_said() -> None:
    kl = dataclasses.replace(KL, p99=None, p999=None, worst_ties=4)
    boundary = BoundaryTest(
        1, (), None, 0, 0, 0.0, 0.0, 0.0, None, 0, "a period of 1 tokens is too short"
    )
    t = tokens(paths={"decode": decode_path(metrics={"kl": kl}, boundary=boundary)})
    text = format_comparison(dataclasses.replace(comparison(), tokens=t))
    line = next(x for x in text.splitlines() if x.lstrip().startswith("KL (nats)"))
    assert line.split()[5:] == ["—", "—", "12@345", "(4", "tied)"]
    assert "(p99 and p99.9 are shown from 500 and 5 000 tokens on)" in text
    assert "boundary test: no boundary test at period 1: a period of 1 tokens is too short" in text


def test_item_ids_and_reasons_are_shown_escaped() -> None:
    evil = "\x1b[31mevil\nitem"
    kl = dataclasses.replace(KL, worst_item=evil)
    path = decode_path(metrics={"kl": kl}, reason="bad \x07 reason")
    t = tokens(paths={"decode": path}, unavailable={"forced": "why \x1b[2J"})
    text = format_comparison(dataclasses.replace(comparison(), tokens=t))
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[31mevil⏎item@345" in text and "why \\x1b[2J" in text


def test_long_localisation_tables_are_cut_and_say_how_many_are_left() -> None:
    bins = tuple(Bin(str(r), r, r, 10, 100, 1e-4, 5e-5, 2e-4, 0.9) for r in range(40))
    t = tokens(paths={"decode": decode_path(by_residue=bins)})
    text = format_comparison(dataclasses.replace(comparison(), tokens=t))
    assert f"… {40 - MAX_BIN_ROWS} more groups (--json has them all)" in text
    assert "mean KL [90% CI]" in text  # each table says its own level
    assert "\n      15 " in text and "\n      16 " not in text


def test_a_degenerate_figure_prints_n_a_not_nan() -> None:
    excess = Excess(3, 1e-4, 1e-4, 0.0, math.nan, math.nan, 0.95, 0.0)
    t = tokens(paths={"decode": decode_path(excess=excess)})
    text = format_comparison(dataclasses.replace(comparison(), tokens=t))
    assert "excess +0.00e+00 [n/a, n/a] (95%)" in text
    assert "nan" not in text
