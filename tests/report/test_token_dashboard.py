"""The token-level comparison on the dashboard: the pair page's "Token level" section and the
token-drift flag in the lists, figures and escaping; the cache that keeps a
:class:`TokenComparison` exactly and is keyed on the runs' trace stamps; and the computation
that asks for a token comparison only where there are traces.

Token comparisons are built by hand (the statistics are tested where they live) and attached
to the dashboard's real comparisons, computed from a real SQLite store."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import token_fixtures
from test_report import add_run, build_store, config, text_of

from evalpipe.compare.core import Answer, Comparison, ShardPeriod, compare_answers
from evalpipe.compare.runs import compare_runs
from evalpipe.compare.tokens.types import (
    MetricSummary,
    PathComparison,
    TokenComparison,
)
from evalpipe.errors import EvalpipeError
from evalpipe.records import Run
from evalpipe.report import cache, compute, data
from evalpipe.report.compute import SETTINGS, Job
from evalpipe.report.dashboard import page_name, render_dashboard
from evalpipe.store import Store, open_store
from evalpipe.store.traces import put_traces
from evalpipe.traces import DECODE, StoredTrace, trace_of

HOSTILE_ITEM = "<script>window.__pwned=1</script>"
INF = float("inf")
# The shared hand-made comparison (tests/token_fixtures.py), with a hostile worst item and an
# infinite maximum: what the page must escape and print.
KL = dataclasses.replace(token_fixtures.KL, max=INF, worst_item=HOSTILE_ITEM)
FORCED_REASON = "no teacher-forced traces: run `evalpipe score RUN --against BASELINE`"


def decode_path(**changes: Any) -> PathComparison:
    """A decode path that drifts: every figure filled, against a shard period of 128."""
    metrics = {**token_fixtures.decode_path().metrics, "kl": KL}
    floor_kl = dataclasses.replace(KL, mean=4.5e-5, ci_low=3.9e-5, ci_high=5.1e-5)
    base = token_fixtures.decode_path(
        metrics=metrics,
        floor_metrics={"kl": floor_kl},
        reason="KL over the floor exceeds τ",
    )
    return dataclasses.replace(base, **changes)


def tokens(run: str = "r", baseline: str = "b", verdict: str = "token-drift") -> TokenComparison:
    return token_fixtures.tokens(
        verdict,
        run_id=run,
        baseline_id=baseline,
        paths={"decode": decode_path(verdict=verdict)},
        unavailable={"forced": FORCED_REASON},
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(str(tmp_path / "store.db")) as s:
        yield s


def _attach(monkeypatch: pytest.MonkeyPatch, by_run: dict[str, TokenComparison]) -> None:
    """The dashboard's comparisons as computed, with these token comparisons attached."""
    real = compute.compute

    def with_tokens(store: Store, jobs: Sequence[Job], *a: Any, **k: Any) -> dict[str, Any]:
        out = real(store, jobs, *a, **k)
        return {
            run_id: dataclasses.replace(c, tokens=by_run[run_id])
            if isinstance(c, Comparison) and run_id in by_run
            else c
            for run_id, c in out.items()
        }

    monkeypatch.setattr(data, "compute", with_tokens)


def _section(page: str) -> str:
    start = page.index('<section class="tokens"')
    return page[start : page.index("<h2>Flips", start)]


def test_the_pair_page_shows_the_token_section_with_its_figures(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = build_store(store)
    ok, drift = runs["ok"], runs["drift"]
    _attach(monkeypatch, {ok.run_id: tokens(ok.run_id, runs["ok_base"].run_id),
                          drift.run_id: tokens(verdict="ok")})  # fmt: skip
    out = tmp_path / "site"
    render_dashboard(store, out)
    page = (out / "compare" / page_name(ok.run_id)).read_text()
    # Beside the accuracy verdict: the token verdict, in words as well as colour.
    h1 = page.split("<h1>")[1].split("</h1>")[0]
    assert re.match(r'<span class="badge v-ok">.*?</span> <span class="badge t-token-drift', h1)
    assert "token drift" in h1
    section = _section(page)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", section))
    for shown in (
        "items 120",
        "tokens compared 9876",
        "top-k 5",
        "greedy agreement 72.50% of items with identical token ids",
        "5 items diverge; first differing token at position 130 at the earliest, median 300; "
        "40% within ±16 tokens of a shard boundary, 26% expected from the actual positions "
        "(p = 0.370)",
        "imputed 3 positions",
        "Decode KL apart: common prefix 1.10e-04 [1.00e-04, 1.30e-04] (95%) over 9871 tokens; "
        "the 5 parting positions 2.50e-02",
        "mean KL 1.23e-04 for the pair vs 4.50e-05 between baseline repeats on the same 100 "
        "items: excess +7.84e-05 [+5.00e-05, +∞] (95%)",
        "Tail test: worst item 12: typical KL 3.00e-03 (mean 7.00e-03) over 80 tokens, above "
        "τ from position 340, against τ = 2.00e-05 per item; p = 0.0004 (Bonferroni over 98 "
        "items)",
        "positions within ±1 tokens of a multiple of 128 (3.0% of the positions of 110 items) "
        "carry 9.0% of the KL (×3.00); p = 0.003, one-sided, Bonferroni over windows 0, 1, 2, "
        "4, 8, 16, each against 999 random boundary placements",
        f"forced path not compared: {FORCED_REASON}",
        "KL over the floor exceeds τ",
        "mean [95% CI]",
    ):
        assert shown in text, shown
    rows = dict(re.findall(r'<tr data-metric="(\w+)">(.*?)</tr>', section))
    cells = {k: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", v)).strip() for k, v in rows.items()}
    kl = cells["kl"]
    # mean [CI], p99, p99.9, max (infinite), worst item @ position, the floor's mean [CI].
    assert kl == (
        "KL (nats, top-k estimate) 1.23e-04 [1.01e-04, 1.46e-04] 2.30e-03 5.60e-03 ∞ "
        "&lt;script&gt;window.__pwned=1&lt;/script&gt; @ 345 4.50e-05 [3.90e-05, 5.10e-05]"
    )
    assert cells["top1_disagree"].startswith("top-1 disagreement 0.52% [0.31%, 0.73%] 100.00%")
    # Histograms: 5 positions in 5 bars with the 4 boundaries in range (256 … 640), and 5
    # offsets in 5 bars with the boundary at 0; 2 residue groups and 1 band as whiskers.
    assert section.count('<rect class="bar"') == 10
    assert section.count('<line class="mark"') == 5
    assert section.count('<g class="whisker">') == 3
    # The page of a run whose tokens are ok says so, beside its accuracy drift.
    other = (out / "compare" / page_name(drift.run_id)).read_text()
    assert '<span class="badge t-ok"' in other.split("</h1>")[0]


def test_the_lists_flag_token_drift(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = build_store(store)
    ok, drift = runs["ok"], runs["drift"]
    _attach(monkeypatch, {ok.run_id: tokens(), drift.run_id: tokens(verdict="ok")})
    out = tmp_path / "site"
    render_dashboard(store, out)
    index = (out / "index.html").read_text()
    # Accuracy ok, tokens drift: the overview lists it under "needs attention" with the flag.
    problems = index.split('<section class="problems"')[1].split("</section>")[0]
    item = next(li for li in problems.split("<li ")[1:] if f"compare/{page_name(ok.run_id)}" in li)
    assert "badge v-ok" in item and "t-token-drift" in item
    assert index.count("t-token-drift") == 2  # the problem list and the matrix cell
    runs_page = (out / "runs.html").read_text()
    row = next(r for r in runs_page.split("<tr ") if f"compare/{page_name(ok.run_id)}" in r)
    assert "t-token-drift" in row and runs_page.count("t-token-drift") == 1


def test_a_hostile_item_id_is_text_everywhere(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = build_store(store)
    _attach(monkeypatch, {runs["ok"].run_id: tokens()})
    out = tmp_path / "site"
    render_dashboard(store, out)
    for page in out.rglob("*.html"):
        body = page.read_text()
        assert "<script>window" not in body, page
        assert len(re.findall(r"<script\b", body)) == 1 and "<script nonce=" in body
    text = text_of(out / "compare" / page_name(runs["ok"].run_id))
    assert f"{HOSTILE_ITEM} @ 345" in text


def test_without_token_data_no_page_has_a_token_section(store: Store, tmp_path: Path) -> None:
    build_store(store)
    out = tmp_path / "site"
    render_dashboard(store, out, pairs={"tp2": "tp1"})
    for page in out.rglob("*.html"):
        body = page.read_text()
        assert "Token level" not in body and "t-token" not in body, page
        assert body.count("<style>") == 1, page  # the token styles come with the section only
    entries = json.loads((out / ".evalpipe" / cache.CACHE_NAME).read_text())["entries"]
    assert entries and all(e.get("tokens", None) is None for e in entries.values())


# --- the cache ----------------------------------------------------------------------------


EDGE_KL = dataclasses.replace(KL, ci_low=-INF, worst_item=None, worst_position=None)
F = np.float64
NUMPY_KL = MetricSummary(
    F(1e-4), F(0), F(2e-4), F(1), None, F(3), "7", np.int64(9), F(0.9), np.int64(2)
)  # type: ignore[arg-type]


def _variants() -> dict[str, TokenComparison]:
    nan_free_edges = decode_path(
        by_residue=(),
        by_band=(),
        boundary=None,
        excess=None,
        tail=None,
        decision=None,
        parting=None,
        divergence_share=None,
        floor_metrics=None,
        first_divergence=(),
        divergence_offsets=(),
        greedy_agreement=None,
        metrics={"kl": EDGE_KL},
        verdict="inconclusive",
    )
    forced = decode_path(path="forced", greedy_agreement=None, skipped_items=4)
    numpy = decode_path(
        n_items=np.int64(120),
        greedy_agreement=np.float64(0.5),
        first_divergence=tuple(np.arange(3, dtype=np.int32)),
        metrics={"kl": NUMPY_KL},
    )
    return {
        "full": tokens(),
        "empty bins, no floor, infinite figures": dataclasses.replace(
            tokens(), period=None, paths={"decode": nan_free_edges}
        ),
        "both paths": dataclasses.replace(
            tokens(), paths={"decode": decode_path(), "forced": forced}, unavailable={}
        ),
        "nothing compared": TokenComparison("r", "b", None, {}, {"decode": "a", "forced": "b"}),
        "numpy scalars": dataclasses.replace(tokens(), paths={"decode": numpy}),
    }


def _accuracy() -> Comparison:
    run, base = (Run(run_id=i, config=config(lay), status="finished", started_at="")
                 for i, lay in (("r", "dp2tp8dcp8"), ("b", "dp2tp8")))  # fmt: skip
    answers = {str(i): Answer(str(i), ok=True, correct=i % 3 > 0, output="") for i in range(9)}
    return compare_answers(run, base, answers, answers)


@pytest.mark.parametrize("name", list(_variants()))
def test_the_cache_keeps_a_token_comparison_exactly(name: str, tmp_path: Path) -> None:
    c = dataclasses.replace(_accuracy(), tokens=_variants()[name])
    cache.save(tmp_path, {"k": cache.to_entry(c)})
    back = cache.from_entry(cache.load(tmp_path)["k"], c.run, c.baseline)
    assert back.tokens == c.tokens
    assert back.tokens is not None and back.tokens.verdict == c.tokens.verdict  # type: ignore[union-attr]
    # Plain JSON types throughout: no numpy scalar survives into the record read back.
    for p in back.tokens.paths.values():
        assert type(p.n_items) is int and all(type(v) is int for v in p.first_divergence)
        assert all(type(m.mean) is float for m in p.metrics.values())
    again = cache.to_entry(back)
    assert json.dumps(again, sort_keys=True) == json.dumps(cache.to_entry(c), sort_keys=True)
    infinite = [p.metrics["kl"].max for p in back.tokens.paths.values()]
    assert name != "full" or math.isinf(infinite[0])


def test_a_cached_token_comparison_of_another_shape_is_a_miss(tmp_path: Path) -> None:
    c = dataclasses.replace(_accuracy(), tokens=tokens())
    entry = json.loads(json.dumps(cache.to_entry(c)))
    entry["tokens"]["paths"]["decode"]["renamed_field"] = 1
    with pytest.raises(TypeError):
        cache.from_entry(entry, c.run, c.baseline)
    entry = json.loads(json.dumps(cache.to_entry(c)))
    entry["tokens"]["paths"]["decode"]["verdict"] = "fine"
    with pytest.raises(ValueError):
        cache.from_entry(entry, c.run, c.baseline)
    del entry["tokens"]  # an entry written before token comparisons existed
    with pytest.raises(KeyError):
        cache.from_entry(entry, c.run, c.baseline)


def test_the_cache_key_changes_with_any_trace_stamp() -> None:
    cfg = config("dp2tp8")
    run, base, rep = (Run(run_id=i, config=cfg, status="finished", started_at="")
                      for i in ("r", "b", "b2"))  # fmt: skip
    job = Job(run, base, (base, rep), ShardPeriod(1024, "layout"))

    def key(stamps: dict[str, Any]) -> str:
        j = job.with_traces(stamps)
        return cache.comparison_key(j.run, j.baseline, j.repeats, j.shard, SETTINGS, j.traces)

    decode = {"r": [["", 100, "t1"]], "b": [["", 100, "t1"]]}
    assert key({}) == cache.comparison_key(run, base, (base, rep), job.shard, SETTINGS)
    assert key(decode) != key({})
    assert key(decode) == key({**decode, "someone-else": [["", 5, "t9"]]})  # not this job's
    forced = {**decode, "r": [["", 100, "t1"], ["b", 100, "t2"]]}  # a teacher-forced score
    floor = {**decode, "b2": [["", 100, "t3"]]}  # a baseline repeat gets traces
    rewritten = {**decode, "b": [["", 100, "t4"]]}
    assert len({key(decode), key(forced), key(floor), key(rewritten)}) == 4


# --- the computation ----------------------------------------------------------------------


def test_compute_asks_for_token_comparisons_only_where_there_are_traces(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = build_store(store)
    base_cfg = runs["ok_base"].config
    repeat = add_run(store, dataclasses.replace(base_cfg, repeat_index=1), [True] * 1319)
    calls: list[tuple[str, str, tuple[str, ...], int | None, float]] = []

    def fake(store: Store, run: Run, baseline: Run, *, floor_runs: Sequence[Run] = (),
             period: int | None = None, alpha: float = 0.05) -> TokenComparison:  # fmt: skip
        calls.append((run.run_id, baseline.run_id, tuple(r.run_id for r in floor_runs),
                      period, alpha))  # fmt: skip
        if run.run_id == runs["drift"].run_id:
            raise EvalpipeError("model fingerprints differ: tokenizers may differ")
        return tokens(run.run_id, baseline.run_id)

    monkeypatch.setattr(compute, "token_comparison", fake)
    ok = Job(runs["ok"], runs["ok_base"], (runs["ok_base"], repeat), ShardPeriod(1024, "layout"))
    drift = Job(runs["drift"], runs["drift_base"], (runs["drift_base"],), ShardPeriod())
    plain = Job(runs["inc"], runs["inc_base"], (runs["inc_base"],), ShardPeriod())
    stamps = {r.run_id: [["", 1, "t"]] for r in (runs["ok"], runs["drift_base"])}
    jobs = [j.with_traces(stamps) for j in (ok, drift, plain)]
    out = compute.compute(store, jobs, workers=1)
    assert sorted(calls) == sorted([
        (runs["ok"].run_id, runs["ok_base"].run_id, (repeat.run_id,), 1024, SETTINGS.alpha),
        (runs["drift"].run_id, runs["drift_base"].run_id, (), None, SETTINGS.alpha),
    ])  # fmt: skip
    got = {k: v.tokens for k, v in out.items() if isinstance(v, Comparison)}
    assert got[runs["ok"].run_id] == tokens(runs["ok"].run_id, runs["ok_base"].run_id)
    assert got[runs["inc"].run_id] is None
    # A pair that cannot be compared token by token says why, on both paths.
    failed = got[runs["drift"].run_id]
    assert failed is not None and failed.paths == {} and failed.verdict == "inconclusive"
    assert set(failed.unavailable.values()) == {"model fingerprints differ: tokenizers may differ"}
    assert set(failed.unavailable) == {"decode", "forced-decode", "forced"}


def _traces(
    run: Run, source: str = DECODE, items: int = 3, shift: float = 0.0
) -> list[StoredTrace]:
    """Two tokens per item; ``shift`` moves the logprobs, more on later items."""

    def one(i: int) -> Any:
        d = shift * (i + 1)
        tops = [[(1, -0.1 - d), (3, -2.0 + d)], [(2, -0.2 - d), (4, -1.9 + d)]]
        return trace_of([1, 2], [-0.1 - d, -0.2 - d], tops, 2)

    return [StoredTrace(run.run_id, str(i), source, 400 + 3 * i, one(i)) for i in range(items)]


def test_traces_stored_later_recompute_and_rerender_the_pair_page(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Needs :func:`evalpipe.report.data.load` to read the trace stamps into the jobs."""
    runs = build_store(store)
    ok, base = runs["ok"], runs["ok_base"]

    def fake(store: Store, run: Run, baseline: Run, **_: Any) -> TokenComparison:
        # Which traces exist is read from the store, as the real one does.
        from evalpipe.store.traces import trace_sources

        forced = baseline.run_id in trace_sources(store, run.run_id)
        t = tokens(run.run_id, baseline.run_id)
        if forced:
            t = dataclasses.replace(t, paths={**t.paths, "forced": decode_path(path="forced")},
                                    unavailable={})  # fmt: skip
        return t

    monkeypatch.setattr(compute, "token_comparison", fake)
    out = tmp_path / "site"
    page = out / "compare" / page_name(ok.run_id)
    render_dashboard(store, out)
    assert "Token level" not in page.read_text()
    put_traces(store, _traces(ok) + _traces(base))
    second = render_dashboard(store, out)
    assert second.computed == 1 and "Token level" in page.read_text()
    assert 'data-path="forced"' not in page.read_text()
    put_traces(store, _traces(ok, source=base.run_id))  # the teacher-forced score, later
    third = render_dashboard(store, out)
    assert third.computed == 1 and 'data-path="forced"' in page.read_text()
    assert render_dashboard(store, out).computed == 0  # and then nothing changes


def test_the_dashboards_token_figures_are_compares_own(store: Store) -> None:
    """Needs :func:`evalpipe.report.data.load` to read the trace stamps into the jobs."""
    runs = build_store(store)
    ok, base = runs["ok"], runs["ok_base"]
    repeat = add_run(store, dataclasses.replace(base.config, repeat_index=1), [True] * 1319)
    put_traces(store, _traces(ok, items=5, shift=0.05) + _traces(base, items=5))
    put_traces(store, _traces(repeat, items=5, shift=0.01))
    cell = data.load(store).cells[ok.run_id]
    assert cell.comparison is not None and cell.comparison.tokens is not None
    want = compare_runs(store, ok, base, tokens=True).tokens
    assert cell.comparison.tokens == want
    decode = want.paths["decode"]  # type: ignore[union-attr]
    assert decode.excess is not None and decode.excess.floor_mean is not None
    assert decode.decision is not None and decode.decision.comparisons == 1  # one path compared
