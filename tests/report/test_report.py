"""The static dashboard, rendered from a real SQLite store of generated runs: what each page
shows, that model text is escaped, that links resolve on disk and nothing comes from a network.
(The headless-Chromium check of the same pages is test_dashboard_browser.py.)"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import run_config

from evalpipe.compare.core import ShardPeriod
from evalpipe.compare.runs import compare_runs
from evalpipe.records import Run, RunConfig, Sample
from evalpipe.report.compute import compute
from evalpipe.report.dashboard import page_name, render_dashboard
from evalpipe.report.data import load
from evalpipe.store import Store, open_store

HOSTILE = ("<script>window.__pwned=1</script>", '<img src=x onerror="window.__pwned=1">')


config = run_config


_counter = iter(range(10**6))


def add_run(
    store: Store,
    cfg: RunConfig,
    correct: list[bool | None],
    outputs: dict[int, str] | None = None,
    day: int = 1,
) -> Run:
    """A finished run; ids and start times increase so "latest" is well defined."""
    k = next(_counter)
    run = Run(
        run_id=f"202611{day:02d}-0000{k:02d}-{k:06x}",
        config=cfg,
        status="finished",
        started_at=f"2026-11-{day:02d}T00:{k // 60:02d}:{k % 60:02d}+00:00",
        n_items=len(correct),
        duration_s=12.5,
        throughput_tok_s=321.0,
        provenance={"host": "node-1", "vllm_commit": "abc123"},
    )
    samples = [
        Sample(
            run_id=run.run_id,
            item_id=str(i),
            prompt_hash=f"h{i}",
            output=None if ok is None else (outputs or {}).get(i, f"The answer is {i}."),
            target=str(i),
            correct=ok,
            extracted={} if ok is None else {"strict": str(i) if ok else "0"},
            correct_by={} if ok is None else {"strict": ok},
            prompt_tokens=400 + 3 * i,
            output_tokens=20,
            error="HTTP 500: boom" if ok is None else None,
        )
        for i, ok in enumerate(correct)
    ]
    store.create_run(run, samples)
    finished = run.with_(**store.summarize(run.run_id))
    store.update_run(finished)
    return finished


def build_store(store: Store) -> dict[str, Run]:
    """One of each: ok, drift (with hostile outputs), inconclusive, no baseline, tp2 vs tp1."""
    n = 600
    right = [i % 5 != 0 for i in range(n)]  # 80 % right
    runs: dict[str, Run] = {}
    # ok: one flip each way in GSM8K's 1 319 items.
    full = [i % 5 != 0 for i in range(1319)]
    runs["ok_base"] = add_run(store, config("dp2tp8"), full)
    ok = list(full)
    ok[1], ok[5] = False, True
    runs["ok"] = add_run(store, config("dp2tp8dcp8"), ok, {1: "The answer is 17.", 5: "So 5."})
    # drift: 60 of the right answers turn wrong; two of them with hostile text.
    arith = config("dp2tp8", task="arith", prompt_hash="p2")
    runs["old_drift"] = add_run(
        store, dataclasses.replace(arith, layout="dp2tp8dcp8"), right, day=1
    )
    runs["drift_base"] = add_run(store, arith, right, day=2)
    bad = [ok_ and i % 10 != 1 for i, ok_ in enumerate(right)]
    hostile = {1: "The answer is " + HOSTILE[0], 11: HOSTILE[1]}
    runs["drift"] = add_run(store, dataclasses.replace(arith, layout="dp2tp8dcp8"), bad, hostile, 2)
    # inconclusive: too few items to decide (n < min_n).
    small = config("dp2tp8", task="mmlu", prompt_hash="p3")
    runs["inc_base"] = add_run(store, small, right[:40])
    runs["inc"] = add_run(store, dataclasses.replace(small, layout="dp2tp8dcp8"), right[:40])
    # no baseline: the dp2tp8 twin ran with another concurrency.
    other = config("dp2tp8", model="/models/other", model_fingerprint="sha256:def")
    add_run(store, dataclasses.replace(other, concurrency=1), right[:50])
    runs["nobase"] = add_run(store, dataclasses.replace(other, layout="dp2tp8dcp8"), right[:50])
    # a reference pair on CPU: tp2 against tp1 (only with pairs={"tp2": "tp1"}).
    cpu = config("tp1", platform="cpu", engine_args={})
    runs["tp1"] = add_run(store, cpu, right[:200])
    runs["tp2"] = add_run(store, dataclasses.replace(cpu, layout="tp2"), right[:200])
    return runs


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(str(tmp_path / "store.db"))
    yield s
    s.close()


@pytest.fixture
def site(store: Store, tmp_path: Path) -> tuple[Path, dict[str, Run]]:
    runs = build_store(store)
    render_dashboard(store, tmp_path / "site", pairs={"tp2": "tp1"}, title="CP nightly")
    return tmp_path / "site", runs


def text_of(page: Path) -> str:
    """Visible text, whitespace collapsed (tags dropped, entities decoded)."""
    body = page.read_text()
    body = re.sub(r"<script\b.*?</script>|<style\b.*?</style>", " ", body, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def test_bulk_figures_equal_compare_runs(store: Store) -> None:
    runs = build_store(store)
    data = load(store, {"tp2": "tp1"})
    for name in ("ok", "drift", "inc", "tp2"):
        cell = data.cells[runs[name].run_id]
        assert cell.baseline is not None and cell.comparison is not None
        got = cell.comparison
        want = compare_runs(store, runs[name], cell.baseline)
        assert cell.baseline.run_id == runs[f"{name}_base" if name != "tp2" else "tp1"].run_id
        assert got.result == want.result
        assert got.agreement == pytest.approx(want.agreement)
        assert got.buckets == want.buckets
        assert got.excluded == want.excluded
        assert got.flips == want.flips
        assert got.noise == want.noise and got.shard == want.shard
        assert got.boundaries == want.boundaries
        assert got.first_difference_chars == want.first_difference_chars
        # The flip examples too, target and extracted answers included (read afterwards).
        assert got.flip_examples == want.flip_examples
    assert {data.cells[runs[k].run_id].verdict for k in ("ok", "drift", "inc", "nobase")} == {
        "ok",
        "drift",
        "inconclusive",
        "missing",
    }


@pytest.mark.parametrize("db", ["sqlite", "pg"])
def test_bulk_figures_from_forked_workers_equal_in_process(
    request: pytest.FixtureRequest, tmp_path: Path, db: str
) -> None:
    # The comparisons spread over forked workers (each with its own connections to the
    # same database) are the ones computed in this process.
    url = request.getfixturevalue("pg_database") if db == "pg" else str(tmp_path / "s.db")
    with open_store(url) as store:
        build_store(store)
        cells = load(store, {"tp2": "tp1"}).cells
        jobs = [c.job for c in cells.values() if c.job is not None]
        assert len(jobs) == 5
        forked = compute(store, jobs, workers=2, runs_per_batch=2)
        # The parent's own connections still work after the workers are gone.
        assert len(store.list_runs()) == 11
    assert forked == {c.run.run_id: c.comparison for c in cells.values() if c.job is not None}


def test_overview_matrix(site: tuple[Path, dict[str, Run]]) -> None:
    out, runs = site
    page = (out / "index.html").read_text()
    text = text_of(out / "index.html")
    assert "✗ drift" in text and "✓ ok" in text and "? inconclusive" in text
    assert "! no baseline" in text and "no finished dp2tp8 baseline pairs" in text
    assert "Δ −10.0 pts" in text  # the drift: 60 of 600 items lost
    assert "baseline-col" in page and "dp2tp8 baseline" in text and "tp1 baseline" in text
    # Drift is listed first in "Needs attention" and its row is the first of the matrix.
    attention = text.split("Needs attention")[1]
    assert attention.index("drift") < attention.index("no baseline")
    first_row = page.split("<tbody>")[1].split("</tr>")[0]
    assert 'data-task="arith"' in first_row and "v-drift" in first_row
    # The latest run fills the cell; the older drift run is not the one linked.
    assert f"compare/{page_name(runs['drift'].run_id)}" in page
    assert f"compare/{page_name(runs['old_drift'].run_id)}" not in page


def test_comparison_page(site: tuple[Path, dict[str, Run]]) -> None:
    out, runs = site
    page = (out / "compare" / page_name(runs["drift"].run_id)).read_text()
    text = text_of(out / "compare" / page_name(runs["drift"].run_id))
    # 2x2: 480 right in both, 0 gained, 60 lost, 60 wrong in both.
    cells = re.findall(r'<td class="(both-correct|only-run|only-baseline|both-wrong)">(\d+)', page)
    assert dict(cells) == {
        "both-correct": "420",
        "only-run": "0",
        "only-baseline": "60",
        "both-wrong": "120",
    }
    assert "agreement 99.7% identical outputs" in text  # 598 of 600: the two hostile ones
    # The hostile outputs are shown as text, next to the baseline's, highlighted where they differ.
    assert "script&gt;window.__pwned=1&lt;/script&gt;" in page
    assert "img src=x onerror=&#34;window.__pwned=1&#34;&gt;" in page
    assert 'The answer is <mark class="first-diff">&lt;</mark>' in page
    assert '<mark class="first-diff">1</mark>' in page  # baseline "The answer is 1."
    assert "✓→✗ 60" in text and "By prompt length" in text


def test_run_page_provenance_and_samples(site: tuple[Path, dict[str, Run]]) -> None:
    out, runs = site
    text = text_of(out / "runs" / page_name(runs["drift"].run_id))
    for field in ("model fingerprint sha256:abc", "prompt hash p2", "data sha256 d1", "seed 0"):
        assert field in text
    assert '"vllm": "0.32.0"' in text and '"temperature": 0.0' in text
    assert "throughput 321.0 tok/s" in text and "duration 12.5 s" in text and "errors 0" in text
    assert "vllm_commit" in text
    page = (out / "runs" / page_name(runs["drift"].run_id)).read_text()
    assert page.count('<tr data-row class="s-') == 600
    # An older run's page is light: provenance and a pointer, no sample table.
    old = text_of(out / "runs" / page_name(runs["old_drift"].run_id))
    assert "evalpipe runs export" in old and "s-ok" not in old


def test_no_raw_model_html_anywhere(site: tuple[Path, dict[str, Run]]) -> None:
    out, _ = site
    for page in out.rglob("*.html"):
        body = page.read_text()
        assert "<script>window" not in body and "<img src=x" not in body, page
        # Only our own, nonce-tagged script element exists.
        assert len(re.findall(r"<script\b", body)) == 1 and "<script nonce=" in body


def test_links_relative_and_resolvable_no_network(site: tuple[Path, dict[str, Run]]) -> None:
    out, _ = site
    pages = list(out.rglob("*.html"))
    assert len(pages) >= 15
    for page in pages:
        body = page.read_text()
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", body), page
        assert not re.search(r"url\(\s*[\"']?(https?:)?//", body), page
        for ref in re.findall(r'(?:href|src)="([^"]+)"', body):
            if ref.startswith("data:"):
                continue
            assert not ref.startswith("/") and "://" not in ref, (page, ref)
            assert (page.parent / ref.split("#")[0]).resolve().is_file(), (page, ref)


def test_trends_page_draws_inline_svg(site: tuple[Path, dict[str, Run]]) -> None:
    out, _ = site
    page = (out / "trends.html").read_text()
    assert page.count("<svg") >= 8 and '<polygon class="band ci"' in page
    first = page.split('<section class="series"')[1]
    assert 'data-task="arith"' in first.split(">")[0] and "drift" in first.split("</h2>")[0]


def test_without_pairs_the_reference_pair_is_not_compared(store: Store, tmp_path: Path) -> None:
    runs = build_store(store)
    summary = render_dashboard(store, tmp_path / "s")
    assert runs["tp2"].run_id not in load(store).cells
    assert summary.comparisons == 4 and summary.runs == len(store.list_runs())
    assert summary.index.is_file() and summary.pages == 4 + summary.runs + summary.comparisons


def test_a_dcp_run_gets_a_shard_boundary_panel(store: Store, tmp_path: Path) -> None:
    # dp2tp8dcp8 on Ascend: period 8 x 128 = 1024. 300 items at lengths 400..1297.
    asc = config("dp2tp8", task="passkey", prompt_hash="p9", platform="ascend", engine_args={})
    right = [True] * 300
    add_run(store, asc, right)
    lost = [not (1024 <= 400 + 3 * i <= 1040) for i in range(300)]  # lost just past 1024
    cp = add_run(store, dataclasses.replace(asc, layout="dp2tp8dcp8"), lost)
    render_dashboard(store, tmp_path / "site")
    page = out = tmp_path / "site" / "compare" / page_name(cp.run_id)
    text = text_of(out)
    assert "By position relative to the shard boundaries" in text
    assert "period 1024 tokens" in text
    html_ = page.read_text()
    rows = re.findall(r'<tr class="loss"><td>([^<]+)</td>', html_)
    assert rows == ["at 1×1024"]  # only the group at the boundary lost items
    data = load(store)
    cell = data.cells[cp.run_id].comparison
    assert cell is not None
    at = next(g for g in cell.boundaries if g.label == "at 1×1024")
    assert (at.only_baseline, at.offset_low, at.offset_high) == (6, -15, 15)
    # A non-CP pair has no panel unless a period is given.
    others = [c.comparison for c in data.cells.values() if c.run.run_id != cp.run_id]
    assert not any(c.boundaries for c in others if c is not None)
    forced = load(store, shard_period=256).cells[cp.run_id].comparison
    assert forced is not None and forced.shard == ShardPeriod(256, "given")
