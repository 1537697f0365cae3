"""The PR comment's token-level column, note and per-path lines: figures as the other
renderers write them, and item ids (model-side data) made inert. Structure is checked with
markdown-it-py, as in test_comment.py."""

from __future__ import annotations

import dataclasses
import re

from test_comment import HOSTILE, comparison, flat, md
from test_token_dashboard import FORCED_REASON, decode_path, tokens

from evalpipe.compare.core import Comparison
from evalpipe.github import marker
from evalpipe.report.comment import render_comment

OLD_HEADER = (
    "| Verdict | Layout vs baseline | Model | Task | n | Layout acc. | Baseline acc. | "
    "Δ [95% CI] | MDE | Flips ✓→✗ / ✗→✓ |\n|:--|:--|:--|:--|--:|--:|--:|:--|--:|--:|\n"
)


def _with_tokens(c: Comparison, verdict: str = "token-drift", **path: object) -> Comparison:
    t = tokens(c.run.run_id, c.baseline.run_id, verdict)
    t = dataclasses.replace(t, paths={"decode": decode_path(verdict=verdict, **path)})
    return dataclasses.replace(c, tokens=t)


def _cells_per_row(body: str) -> list[int]:
    counts: list[int] = []
    for t in flat(md().parse(body)):
        if t.type == "tr_open":
            counts.append(0)
        elif t.type in ("td_open", "th_open"):
            counts[-1] += 1
    return counts


def test_without_token_comparisons_the_comment_is_as_before() -> None:
    body = render_comment([comparison(), comparison(layout="dp2tp8pcp2", verdict="ok")])
    assert OLD_HEADER in body
    assert "Tokens" not in body and "token" not in body.lower()
    assert _cells_per_row(body)[:3] == [10, 10, 10]


def test_a_token_column_with_the_verdict_and_the_decode_kl_against_the_floor() -> None:
    drifting = _with_tokens(comparison(verdict="ok"))
    fine = _with_tokens(comparison(layout="dp2tp8pcp2", run_id="r2"), verdict="ok")
    none = comparison(layout="dp4tp4", run_id="r3")
    body = render_comment([drifting, fine, none])
    lines = body.splitlines()
    assert lines[lines.index(next(x for x in lines if x.startswith("| Verdict |")))].endswith(
        "| Flips ✓→✗ / ✗→✓ | Tokens | Decode KL [CI] vs floor |"
    )
    assert _cells_per_row(body)[:4] == [12, 12, 12, 12]
    row = {x.split(" | ")[1]: x for x in lines if x.startswith("| ✅ ok |") or "| ❌" in x}
    assert row["dp2tp8dcp8 vs dp2tp8"].endswith(
        "| ❌ token-drift | 1.23e-04 [1.01e-04, 1.46e-04] (95%) vs 4.50e-05 |"
    )
    assert row["dp2tp8pcp2 vs dp2tp8"].endswith(
        "| ✅ ok | 1.23e-04 [1.01e-04, 1.46e-04] (95%) vs 4.50e-05 |"
    )
    assert row["dp4tp4 vs dp2tp8"].endswith("| — | — |")
    # The note names only the pair whose tokens drifted, though its accuracy is ok.
    assert "**Token-level drift:** dp2tp8dcp8 vs dp2tp8 (gsm8k)." in body
    # Per comparison: each path's figures, and why a path was not compared.
    assert (
        "- Tokens, decode path: ❌ token-drift · KL 1.23e-04 [1.01e-04, 1.46e-04] (95%) vs "
        "floor 4.50e-05 · p99 2.30e-03 · worst item" in body
    )
    assert "· identical tokens 72.5%" in body


def test_a_path_without_a_floor_or_kl_shows_a_dash() -> None:
    no_floor = _with_tokens(comparison(), verdict="inconclusive", excess=None, floor_metrics=None)
    body = render_comment([no_floor])
    assert "| ⚠️ inconclusive | 1.23e-04 [1.01e-04, 1.46e-04] (95%) vs — |" in body
    no_kl = _with_tokens(comparison(), verdict="inconclusive", metrics={})
    assert "| ⚠️ inconclusive | — |" in render_comment([no_kl])
    few = dataclasses.replace(decode_path().metrics["kl"], p99=None)
    assert "· p99" not in render_comment([_with_tokens(comparison(), metrics={"kl": few})])


def test_unavailable_paths_are_listed_with_their_reason() -> None:
    c = dataclasses.replace(comparison(), tokens=tokens())
    body = render_comment([c])
    assert "- Tokens, forced path not compared: no teacher-forced traces: run " in body
    assert FORCED_REASON.split("`")[0] in body
    assert "`" not in body.split("forced path not compared:")[1].splitlines()[0].replace(
        "\\`", ""
    )  # the reason's backticks are escaped: no code span from data


def test_hostile_item_ids_and_reasons_are_inert() -> None:
    evil = " ".join(HOSTILE)
    worst = dataclasses.replace(decode_path().metrics["kl"], worst_item=evil)
    c = _with_tokens(comparison(), reason=evil, metrics={"kl": worst})
    assert c.tokens is not None
    c = dataclasses.replace(c, tokens=dataclasses.replace(c.tokens, unavailable={"forced": evil}))
    body = render_comment([c])
    mark = marker()
    assert body.count(mark) == 2
    assert not re.search(r"@[A-Za-z0-9]", body)
    found = flat(md().parse(body))
    html = [t.content.strip() for t in found if t.type in ("html_block", "html_inline")]
    ours = re.compile(r"^(<!-- evalpipe:sticky -->|</details>|<details><summary>[^<>]*</summary>)$")
    assert html and all(ours.match(h) for h in html), html
    assert not [t for t in found if t.type == "link_open"]
    assert not {t.type for t in found} & {"code_inline", "fence", "em_open", "s_open", "image"}
    # The worst item is cut and shown as text, on its own line of the details.
    line = next(x for x in body.splitlines() if x.startswith("- Tokens, decode path:"))
    cut = "@\u200boctocat please look cc @\u200borg/team &lt;/det…"  # md_escape(40)
    assert f"worst item {cut} at position 345" in line
