"""Small things a reader of the dashboard notices: how a model path wraps, singular counts,
spacing, a run that is not compared, one trend line per configuration, a lone Δ's interval.
Rendered from a real SQLite store of generated runs."""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import run_config

from evalpipe.records import Run, RunConfig, Sample
from evalpipe.report.charts import delta_chart
from evalpipe.report.dashboard import render_dashboard
from evalpipe.report.data import load
from evalpipe.report.pages import overview_context, trends_context
from evalpipe.store import Store, open_store

_counter = iter(range(10**6))


def add_run(store: Store, cfg: RunConfig, correct: list[bool | None], day: int = 1) -> Run:
    """A finished run; ids and start times increase so "latest" is well defined."""
    k = next(_counter)
    run = Run(
        run_id=f"202611{day:02d}-0000{k:02d}-{k:06x}",
        config=cfg,
        status="finished",
        started_at=f"2026-11-{day:02d}T00:{k // 60:02d}:{k % 60:02d}+00:00",
        n_items=len(correct),
    )
    samples = [
        Sample(
            run_id=run.run_id,
            item_id=str(i),
            prompt_hash=f"h{i}",
            output=None if ok is None else f"The answer is {i}.",
            target=str(i),
            correct=ok,
            extracted={} if ok is None else {"strict": str(i) if ok else "0"},
            correct_by={} if ok is None else {"strict": ok},
            error="HTTP 500: boom" if ok is None else None,
        )
        for i, ok in enumerate(correct)
    ]
    store.create_run(run, samples)
    finished = run.with_(**store.summarize(run.run_id))
    store.update_run(finished)
    return finished


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(str(tmp_path / "store.db"))
    yield s
    s.close()


def text_content(page: Path) -> str:
    """What a browser's textContent reads: tags removed without adding any space."""
    body = re.sub(r"<script\b.*?</script>|<style\b.*?</style>", "", page.read_text(), flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", body))


def words(page: Path) -> str:
    return re.sub(r"\s+", " ", text_content(page))


LONG = "/mnt/shared/models/deepseek-ai/DeepSeek-V3.2-Exp-Base"
CPU = run_config("tp1", platform="cpu", engine_args={}, model=LONG)
RIGHT = [i % 5 != 0 for i in range(200)]


def test_model_path_wraps_at_its_separators(store: Store, tmp_path: Path) -> None:
    add_run(store, CPU, RIGHT)
    render_dashboard(store, tmp_path / "site")
    page = (tmp_path / "site" / "index.html").read_text()
    # A break opportunity after each "/", and no rule that breaks inside a word.
    assert "deepseek-ai/<wbr>DeepSeek-V3.2-Exp-Base" in page
    rule = re.search(r"\.matrix \.model \{([^}]*)\}", page)
    assert rule is not None and "break-all" not in rule.group(1)
    assert "anywhere" not in rule.group(1)
    # Everywhere the model is named: the problem list, trends and the run list too.
    for name in ("trends.html", "runs.html"):
        assert "deepseek-ai/<wbr>DeepSeek" in (tmp_path / "site" / name).read_text()


def test_counts_of_one_are_singular(store: Store, tmp_path: Path) -> None:
    add_run(store, CPU, [*RIGHT[:9], None])  # one run, one error
    render_dashboard(store, tmp_path / "site")
    index = words(tmp_path / "site" / "index.html")
    assert "1 run stored" in index and "1 runs" not in index
    assert "1 error" in index and "1 errors" not in index
    assert "1 run" in words(tmp_path / "site" / "trends.html")
    assert "1 runs" not in words(tmp_path / "site" / "trends.html")
    assert "of 1 run." in words(tmp_path / "site" / "runs.html")
    run_page = next((tmp_path / "site" / "runs").glob("*.html"))
    assert "1 runs" not in words(run_page)
    add_run(store, CPU, RIGHT)
    render_dashboard(store, tmp_path / "site")
    assert "2 runs stored" in words(tmp_path / "site" / "index.html")


def test_counts_line_has_a_space_before_the_dash(store: Store, tmp_path: Path) -> None:
    add_run(store, CPU, RIGHT)
    render_dashboard(store, tmp_path / "site")
    counts = text_content(tmp_path / "site" / "index.html").split("latest run per cell")[0]
    assert not re.search(r"\d—", counts), counts[-80:]
    assert re.search(r"\d —", counts)


def test_a_run_without_a_pair_is_counted(store: Store, tmp_path: Path) -> None:
    add_run(store, CPU, RIGHT)
    add_run(store, dataclasses.replace(CPU, layout="tp2"), RIGHT)
    add_run(store, dataclasses.replace(CPU, layout="tp4"), RIGHT)
    # tp2 is compared with tp1; tp4 has no pair: it is counted as not compared, tp1 is the
    # baseline (in no count: it is what the others are measured against).
    context = overview_context(load(store, {"tp2": "tp1"}))
    assert context["counts"]["ok"] + context["counts"]["inconclusive"] == 1
    assert context["not_compared"] == 1
    render_dashboard(store, tmp_path / "site", pairs={"tp2": "tp1"})
    text = words(tmp_path / "site" / "index.html")
    assert re.search(r"not compared 1\b", text)
    # Without any pair, neither run is compared.
    assert overview_context(load(store))["not_compared"] == 3


def test_trend_lines_do_not_mix_engine_arguments(store: Store, tmp_path: Path) -> None:
    # A float32 and two bfloat16 tp1 runs of one model and task: two lines, not one.
    f32 = dataclasses.replace(CPU, engine_args={"dtype": "float32"})
    bf16 = dataclasses.replace(CPU, engine_args={"dtype": "bfloat16"})
    add_run(store, f32, RIGHT, day=1)
    add_run(store, bf16, RIGHT, day=2)
    add_run(store, bf16, RIGHT, day=3)
    series = trends_context(load(store))["series"]
    assert sorted(len(s.runs) for s in series) == [1, 2]
    assert {s.variant for s in series} == {"dtype=float32", "dtype=bfloat16"}
    render_dashboard(store, tmp_path / "site")
    text = words(tmp_path / "site" / "trends.html")
    assert "dtype=float32" in text and "dtype=bfloat16" in text
    assert "2 series" in text


def test_trend_line_spans_engine_versions(store: Store) -> None:
    # The x labels name the engine version: an upgrade is a point on the same line.
    add_run(store, CPU, RIGHT, day=1)
    add_run(store, dataclasses.replace(CPU, engine_versions={"vllm": "0.33.0"}), RIGHT, day=2)
    (series,) = trends_context(load(store))["series"]
    assert len(series.runs) == 2 and series.variant == ""


def test_single_delta_point_has_an_error_bar() -> None:
    chart = delta_chart(["a"], [-0.01], [-0.03], [0.01], 0.02, [None])
    (bar,) = chart.whiskers
    assert bar.low > bar.y > bar.high  # SVG y grows downwards: low is below the point
    # With two points the band shows the interval and no bar is needed.
    two = delta_chart(["a", "b"], [-0.01, 0.0], [-0.03, -0.02], [0.01, 0.02], 0.02, [None, None])
    assert two.whiskers == ()
    # A point whose neighbours have no interval is as alone as a single one.
    gap = delta_chart(
        ["a", "b", "c"], [0.0, None, 0.0], [-0.1, None, -0.1], [0.1, None, 0.1], 0.02, [None] * 3
    )
    assert len(gap.whiskers) == 2


def test_single_compared_run_draws_its_interval(store: Store, tmp_path: Path) -> None:
    add_run(store, CPU, RIGHT)
    add_run(store, dataclasses.replace(CPU, layout="tp2"), RIGHT)
    render_dashboard(store, tmp_path / "site", pairs={"tp2": "tp1"})
    page = (tmp_path / "site" / "trends.html").read_text()
    assert page.count('class="errbar"') == 1
