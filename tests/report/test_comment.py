"""The PR comment: numbers as points, verdicts as words, and hostile model output made inert.

Structure is checked with markdown-it-py (CommonMark + GFM tables), so a broken table or an
injected tag shows up as a parser token, not as a string that merely looks right.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import pytest
from builders import run_config
from markdown_it import MarkdownIt
from markdown_it.token import Token

from evalpipe.compare import stats
from evalpipe.compare.core import Answer, Comparison, Direction, Flip, Noise, compare_answers
from evalpipe.errors import EvalpipeError
from evalpipe.github import marker
from evalpipe.records import Run
from evalpipe.report.comment import MAX_BODY_CHARS, GateOutcome, render_comment
from evalpipe.report.markdown import delta_ci, md_escape, p_value, percent, pts, signed_pts
from evalpipe.report.templates import template_dirs

ZWSP = "\u200b"
HOSTILE = [
    "@octocat please look",
    "cc @org/team",
    "</details><script>alert(1)</script>",
    "| col | another |",
    "```python\nimport os\n```",
    "[link](javascript:alert(1)) ![img](http://x/y.png)",
    "<!-- evalpipe:sticky -->",
    "fixes #123 and GH-45 and octo/repo#6",
    "see https://evil.example/x and www.evil.example",
    "*bold* _it_ ~~gone~~ $x^2$ costs $5",
    "line one\n\n# heading\n> quote\n- item",
    "back\\slash \\| and &amp; entities &lt;b&gt;",
    "bidi \u202eevil\u202c and nul \x00 here",
]


def md() -> MarkdownIt:
    return MarkdownIt("commonmark").enable(["table", "strikethrough"])


def flat(tokens: list[Token]) -> list[Token]:
    out: list[Token] = []
    for t in tokens:
        out.append(t)
        out.extend(flat(t.children or []))
    return out


def flip(item_id: str, direction: Direction = "correct_to_wrong", **changes: Any) -> Flip:
    """A flip example; unspecified fields are empty, as a sample without them stores."""
    fields: dict[str, Any] = {
        "target": None,
        "run_output": "",
        "baseline_output": "",
        "run_extracted": {},
        "baseline_extracted": {},
        "first_difference": None,
        **changes,
    }
    return Flip(item_id=item_id, direction=direction, **fields)


def comparison(**changes: Any) -> Comparison:
    """A typed comparison with literal figures; keyword names as ``compare --json`` spells
    them (``layout``, ``n``, ``delta``, ``noise_floor`` ...), each overriding one field."""
    c: dict[str, Any] = {
        "run_id": "20261128-031642-ab12cd",
        "baseline_run_id": "20261128-021642-ff00aa",
        "model": "Qwen/Qwen3-8B",
        "task": "gsm8k",
        "layout": "dp2tp8dcp8",
        "baseline_layout": "dp2tp8",
        "engine_versions": {"vllm": "0.32.0", "vllm-ascend": "0.11.0"},
        "agreement": 0.812,
        "excluded": 2,
        "flips": {
            "correct_to_wrong": tuple(f"gsm8k-{i}" for i in range(26)),
            "wrong_to_correct": tuple(f"gsm8k-{i}" for i in range(100, 110)),
        },
        "flip_examples": [
            flip(
                f"gsm8k-{i}",
                target="42",
                run_output=f"Step {i}. The answer is 41",
                baseline_output=f"Step {i}. The answer is 42",
                run_extracted={"strict": "41"},
                baseline_extracted={"strict": "42"},
                first_difference=23,
            )
            for i in range(8)
        ],
        "noise_floor": 0.004,
    }
    figures: dict[str, Any] = {"run_accuracy": 0.9174, "baseline_accuracy": 0.9295,
                               "delta": -0.0121, "ci_low": -0.0203, "ci_high": -0.0041,
                               "p_value": 0.0161, "mde": 0.0082, "verdict": "drift"}  # fmt: skip
    for key, value in changes.items():
        (figures if key in PAIRED_FIELDS else c)[key] = value
    config = run_config(c["layout"], model=c["model"], task=c["task"],
                        engine_versions=c["engine_versions"])  # fmt: skip
    base_config = dataclasses.replace(config, layout=c["baseline_layout"])
    return Comparison(
        run=Run(run_id=c["run_id"], config=config, status="finished", started_at=""),
        baseline=Run(
            run_id=c["baseline_run_id"], config=base_config, status="finished", started_at=""
        ),
        result=dataclasses.replace(TABLE_RESULT, **figures),
        excluded={"error": c["excluded"]},
        agreement=c["agreement"],
        first_difference_chars=(),
        flips=c["flips"],
        flip_examples=tuple(c["flip_examples"]),
        buckets=(),
        noise=Noise(c["noise_floor"], 2),
    )


# The statistics module's own result for the literal table, so a renamed field there fails here.
TABLE_RESULT = stats.compare_table(stats.PairedTable(1200, 10, 26, 83))
PAIRED_FIELDS = {f.name for f in dataclasses.fields(stats.PairedResult)}


# --- numbers ------------------------------------------------------------------------------


def test_points_use_a_real_minus_and_never_show_minus_zero() -> None:
    assert signed_pts(-0.0121) == "\u22121.2"
    assert signed_pts(0.004) == "+0.4"
    assert signed_pts(-0.0004) == "0.0"
    assert delta_ci(-0.0121, -0.0203, -0.0041) == "−1.2 pts [−2.0, −0.4]"
    assert pts(0.0082) == "0.8 pts" and pts(None) == "—"
    assert percent(0.95349) == "95.3%"
    assert p_value(0.0004) == "<0.001" and p_value(0.25) == "0.250" and p_value(None) == "—"


def test_table_row_shows_verdict_delta_ci_mde_and_flips() -> None:
    body = render_comment([comparison(), comparison(layout="dp2tp8pcp2", verdict="ok")])
    assert (
        "| ❌ drift | dp2tp8dcp8 vs dp2tp8 | Qwen/Qwen3-8B | gsm8k | 1319 | 91.7% | 93.0% | "
        "−1.2 pts [−2.0, −0.4] | 0.8 pts | 26 / 10 |"
    ) in body
    assert "| ✅ ok | dp2tp8pcp2 vs dp2tp8 |" in body
    assert "Δ [95% CI]" in body
    assert "Engine: vllm 0.32.0 · vllm-ascend 0.11.0" in body
    assert "❌ drift: 1" in body and "✅ ok: 1" in body


def test_inconclusive_and_gate_are_symbol_and_word() -> None:
    body = render_comment(
        [comparison(verdict="inconclusive")],
        gate=GateOutcome("incomplete", ("gsm8k has no dp2tp8dcp8 run",)),
    )
    assert "| ⚠️ inconclusive |" in body
    assert "**Gate: ⚠️ incomplete**\n- gsm8k has no dp2tp8dcp8 run" in body
    assert body.index("Gate") < body.index("| Verdict |")


# --- escaping -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", HOSTILE)
def test_md_escape_makes_hostile_text_inert(text: str) -> None:
    out = md_escape(text)
    assert "\n" not in out
    assert "<" not in out and ">" not in out  # no tag, no comment, no autolink
    assert not re.search(r"@[A-Za-z0-9]", out)  # no mention
    assert not re.search(r"#\d|GH-\d|https?://|www\.", out)  # no issue ref, no autolink
    assert "\u202e" not in out and "\x00" not in out
    tokens = flat(md().parse(f"| a |\n|---|\n| {out} |\n"))
    kinds = {t.type for t in tokens}
    assert not kinds & {"html_inline", "html_block", "link_open", "image", "code_inline",
                        "em_open", "strong_open", "s_open", "heading_open"}  # fmt: skip
    assert sum(t.type == "td_open" for t in tokens) == 1  # pipes stayed inside the cell


def test_md_escape_keeps_the_words_readable() -> None:
    out = md_escape("@octocat costs $5 | see #12")
    rendered = md().renderInline(out)
    assert rendered.replace(ZWSP, "") == "@octocat costs $5 | see #12"


def test_excerpts_are_one_line_and_cut_to_length() -> None:
    out = md_escape("word " * 100 + "\n\nend", limit=40)
    visible = md().renderInline(out)
    assert len(visible) <= 40 and visible.endswith("…") and "\n" not in visible
    assert md().renderInline(md_escape("0123456789abcdef", limit=None, start=10)) == "…abcdef"


def test_every_untrusted_field_is_escaped_and_the_markdown_keeps_its_shape() -> None:
    evil = " ".join(HOSTILE)
    directions: list[Direction] = ["correct_to_wrong", "wrong_to_correct"]
    examples = [
        flip(f"id-{i} {evil}", d, target=evil, run_output=evil, baseline_output=evil,
             run_extracted={"s": evil}, baseline_extracted={"s": evil})
        for i, d in enumerate(directions)
    ]  # fmt: skip
    rows = [
        comparison(model=evil, task=evil, layout=evil, baseline_layout=evil, reason=evil,
                   flip_examples=examples, engine_versions={"vllm": evil}),
        comparison(engine_versions={"vllm": "0.31.0"}, flips={"correct_to_wrong": (evil,),
                   "wrong_to_correct": ()}, flip_examples=[]),
    ]  # fmt: skip
    body = render_comment(
        rows, dashboard_url="https://ci.example/dash/1/index.html",
        gate=GateOutcome("fail", (evil,)),
    )  # fmt: skip

    mark = marker()
    assert body.startswith(mark + "\n") and body.endswith(mark + "\n")
    assert body.count(mark) == 2  # the copies inside outputs were escaped
    assert not re.search(r"@[A-Za-z0-9]", body)
    tokens = flat(md().parse(body))
    html = [t.content.strip() for t in tokens if t.type in ("html_block", "html_inline")]
    ours = re.compile(r"^(<!-- evalpipe:sticky -->|</details>|<details><summary>[^<>]*</summary>)$")
    assert html and all(ours.match(h) for h in html), html
    assert [t.attrs["href"] for t in tokens if t.type == "link_open"] == [
        "https://ci.example/dash/1/index.html"
    ]
    assert not {t.type for t in tokens} & {"code_inline", "fence", "em_open", "s_open", "image"}
    # Every table row keeps its column count.
    rows_cells: list[int] = []
    for t in tokens:
        if t.type == "tr_open":
            rows_cells.append(0)
        elif t.type in ("td_open", "th_open"):
            rows_cells[-1] += 1
    assert rows_cells[:3] == [10, 10, 10]
    assert rows_cells[3:] == [6, 6, 6]
    assert "Engines:" in body  # the two comparisons ran different engine versions


def test_flip_excerpts_start_where_the_outputs_diverge() -> None:
    common = "The same long reasoning. " * 20
    example = flip(
        "q1",
        "correct_to_wrong",
        target="7",
        run_output=common + "So it is 8",
        baseline_output=common + "So it is 7",
        first_difference=len(common) + 9,
    )
    body = render_comment([comparison(flip_examples=[example])], excerpt_chars=60)
    row = next(line for line in body.splitlines() if line.startswith("| q1 |"))
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
    assert cells[4].startswith("…") and cells[4].endswith("So it is 8")
    assert cells[5].endswith("So it is 7")


def test_max_flips_limits_examples_and_lists_the_rest_by_id() -> None:
    body = render_comment([comparison()], max_flips=3)
    assert sum(line.startswith("| gsm8k-") for line in body.splitlines()) == 3
    assert "Other flipped items: ✓→✗ gsm8k-0, gsm8k-1" in body
    none = render_comment([comparison()], max_flips=0)
    assert "| Item |" not in none and "Flipped items: ✓→✗ gsm8k-0" in none


def test_body_is_shrunk_under_githubs_limit() -> None:
    long = "x" * 5000
    example = flip("i", "wrong_to_correct", target=long, run_output=long, baseline_output=long)
    rows = [comparison(flip_examples=[example] * 5, run_id=f"r{i}") for i in range(60)]
    body = render_comment(rows, max_flips=5, excerpt_chars=400)
    assert len(body) <= MAX_BODY_CHARS
    assert body.count("| i |") < 300


# --- inputs -------------------------------------------------------------------------------


def test_unknown_verdicts_gate_statuses_and_no_comparisons_are_clear_errors() -> None:
    # A missing figure cannot reach the renderer any more: a Comparison has every field.
    with pytest.raises(EvalpipeError, match="verdict 'great'"):
        render_comment([comparison(verdict="great")])
    with pytest.raises(EvalpipeError, match="gate status 'maybe'"):
        render_comment([comparison()], gate=GateOutcome("maybe"))
    with pytest.raises(EvalpipeError, match="no comparisons"):
        render_comment([])


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "https://x.example/a b", "https://x.example/a)(b", "ftp://x"]
)
def test_dashboard_url_must_be_a_plain_http_url(url: str) -> None:
    with pytest.raises(EvalpipeError, match="dashboard-url"):
        render_comment([comparison()], dashboard_url=url)


def test_marker_keys() -> None:
    assert marker() == "<!-- evalpipe:sticky -->"
    assert marker("ascend-910b") == "<!-- evalpipe:sticky:ascend-910b -->"
    body = render_comment([comparison()], marker_key="nightly")
    assert body.startswith("<!-- evalpipe:sticky:nightly -->")
    for bad in ("", "a b", "x-->", "-lead"):
        with pytest.raises(EvalpipeError, match="marker key"):
            marker(bad)


def test_optional_fields() -> None:
    # Nothing detectable (an infinite MDE), no agreement measured, no noise floor, no examples,
    # no engine versions; and comparisons at different alphas share no CI level.
    bare = {"mde": math.inf, "agreement": None, "noise_floor": None, "flip_examples": [],
            "engine_versions": {}}  # fmt: skip
    body = render_comment([comparison(**bare), comparison(**bare, alpha=0.1)])
    assert "| — | 26 / 10 |" in body and "Δ [CI]" in body and "Engine" not in body
    assert "Identical outputs — · margin 1.0 pts" in body and "noise floor" not in body
    assert "| Item |" not in body and "Flipped items: ✓→✗ gsm8k-0" in body


def test_template_is_found_in_the_checkout() -> None:
    assert any(d.name == "dashboards" for d in template_dirs("comment.md.jinja"))


def test_renders_the_statistics_modules_own_result() -> None:
    # The real PairedResult, not literal figures, so a renamed field there fails here.
    result = TABLE_RESULT
    c = dataclasses.replace(comparison(), result=result)
    body = render_comment([c])
    assert "| ❌ drift | dp2tp8dcp8 vs dp2tp8 |" in body
    assert "−1.2 pts [" in body and md_escape(result.reason) in body


def test_renders_the_comparison_cores_own_record() -> None:
    # Straight from compare.core: its flips, extracted answers and exclusions.
    runs = [comparison().run, comparison().baseline]
    run, base = ({str(i): Answer(str(i), ok=i != 3, correct=i % 2 == j, output=f"out {i}{j}",
                                 target="7", extracted={"strict": f"{i}{j}"})
                  for i in range(4)} for j in (0, 1))  # fmt: skip
    c = compare_answers(*runs, run, base)
    body = render_comment([c], max_flips=1)
    assert c.n_excluded == 1 and ", 1 excluded (engine errors" in body
    assert "| 0 | ✗→✓ | 7 | 00 / 01 | out 00 | out 01 |" in body
    assert "Other flipped items: ✓→✗ 1; ✗→✓ 0, 2" in body
