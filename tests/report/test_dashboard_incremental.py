"""Incremental rendering of the dashboard: a render into the folder of an earlier one
recomputes only the comparisons whose inputs changed, rewrites only the pages whose content
changed, removes only what it wrote, and falls back to a cold render when its state is
damaged. Asserted on files (inode, mtime, content), never on timings."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_report import add_run, build_store, config, text_of

from evalpipe.report import dashboard
from evalpipe.report.dashboard import page_name, render_dashboard
from evalpipe.store import Store, open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(str(tmp_path / "store.db")) as s:
        yield s


def _files(out: Path) -> dict[str, tuple[int, int]]:
    """Every file evalpipe's pages live in, with (inode, mtime): an atomic rewrite changes both."""
    return {
        str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in out.rglob("*")
        if p.is_file() and ".evalpipe" not in p.parts
    }


def _stable_text(page: Path) -> str:
    """A page without what changes on every render (CSP nonce, generation time)."""
    body = re.sub(r"nonce-?=?\"?'?[A-Za-z0-9_-]{16,}", "NONCE", page.read_text())
    return re.sub(r"generated [0-9T:+.-]+", "generated TIME", body)


def test_a_render_after_one_more_run_rewrites_only_the_pages_it_changes(
    store: Store, tmp_path: Path
) -> None:
    runs = build_store(store)
    out = tmp_path / "site"
    first = render_dashboard(store, out, pairs={"tp2": "tp1"})
    assert first.written == first.pages and first.computed == first.comparisons
    before = _files(out)
    # Nothing changed: nothing is computed or written.
    same = render_dashboard(store, out, pairs={"tp2": "tp1"})
    assert (same.written, same.computed) == (0, 0) and _files(out) == before
    # One more run: the drift layout again. It is the overview's latest arith run now.
    arith = config("dp2tp8dcp8", task="arith", prompt_hash="p2")
    new = add_run(store, arith, [i % 5 != 0 for i in range(600)], day=3)
    again = render_dashboard(store, out, pairs={"tp2": "tp1"})
    after = _files(out)
    changed = {p for p in after if before.get(p) != after[p]}
    assert changed == {
        "index.html",
        "runs.html",
        "trends.html",
        f"runs/{page_name(new.run_id)}",  # new
        f"compare/{page_name(new.run_id)}",  # new
        f"runs/{page_name(runs['drift'].run_id)}",  # no longer the latest: no sample table
    }
    assert again.computed == 1 and again.written == len(changed)
    assert again.pages == first.pages + 2
    assert "s-ok" not in text_of(out / "runs" / page_name(runs["drift"].run_id))


def test_pages_from_the_cache_equal_a_cold_render(store: Store, tmp_path: Path) -> None:
    build_store(store)
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    render_dashboard(store, warm, pairs={"tp2": "tp1"}, title="before")
    # A new title changes every page: the comparison pages are rendered from cached figures
    # plus flip examples computed again, and must be what a cold render writes.
    summary = render_dashboard(store, warm, pairs={"tp2": "tp1"}, title="after")
    assert summary.written == summary.pages
    render_dashboard(store, cold, pairs={"tp2": "tp1"}, title="after")
    assert set(_files(warm)) == set(_files(cold))
    for name in _files(cold):
        assert _stable_text(warm / name) == _stable_text(cold / name), name


def test_a_render_removes_only_the_files_it_wrote(store: Store, tmp_path: Path) -> None:
    runs = build_store(store)
    out = tmp_path / "site"
    render_dashboard(store, out)
    foreign = [out / "runs" / "notes.html", out / "compare" / "README.txt", out / "mine.css"]
    for f in foreign:
        f.write_text("kept")
    gone = runs["inc"]
    store.delete_run(gone.run_id)
    render_dashboard(store, out)
    assert not (out / "runs" / page_name(gone.run_id)).exists()
    assert not (out / "compare" / page_name(gone.run_id)).exists()
    assert (out / "runs" / page_name(runs["inc_base"].run_id)).is_file()
    assert all(f.read_text() == "kept" for f in foreign)
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporary file


def test_a_page_the_user_edited_is_kept_and_named_not_deleted(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from evalpipe.cli import main

    runs = build_store(store)
    out = tmp_path / "site"
    render_dashboard(store, out)
    edited = out / "runs" / page_name(runs["inc"].run_id)
    edited.write_text(edited.read_text() + "<!-- my notes on this run -->")
    untouched = out / "compare" / page_name(runs["inc"].run_id)
    assert untouched.is_file()
    store.delete_run(runs["inc"].run_id)
    code = main(["dashboard", "--out", str(out), "--store", str(store.path)])
    assert code == 0
    assert "my notes on this run" in edited.read_text()  # kept: its bytes are not ours
    assert not untouched.exists()  # ours, unchanged since written: removed
    err = capsys.readouterr().err
    assert "kept 1 edited page" in err and f"runs/{edited.name}" in err
    # No longer listed as the dashboard's: a later render leaves it alone, quietly.
    again = render_dashboard(store, out)
    assert again.kept == () and edited.is_file()


@pytest.mark.parametrize("damage", ["garbage", "empty", "wrong shapes"])
def test_a_damaged_cache_or_manifest_means_a_cold_render(
    store: Store, tmp_path: Path, damage: str
) -> None:
    build_store(store)
    out = tmp_path / "site"
    first = render_dashboard(store, out)
    state = out / ".evalpipe"
    for name in ("comparisons.json", "manifest.json"):
        text = {
            "garbage": '{"format": 1, "entr',
            "empty": "",
            "wrong shapes": (state / name)
            .read_text()
            .replace('"n":', '"m":')
            .replace('"size":', '"bytes":'),
        }[damage]
        (state / name).write_text(text)
    before = {p: _stable_text(out / p) for p in _files(out)}
    again = render_dashboard(store, out)
    assert again.computed == first.computed and again.written == again.pages
    assert {p: _stable_text(out / p) for p in _files(out)} == before


def test_pages_rendered_by_forked_workers_equal_those_of_one_process(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_store(store)
    one = render_dashboard(store, tmp_path / "one", pairs={"tp2": "tp1"})
    monkeypatch.setattr(dashboard, "MIN_PAGES_PER_WORKER", 1)
    monkeypatch.setattr(dashboard, "cores", lambda: 2)
    two = render_dashboard(store, tmp_path / "two", pairs={"tp2": "tp1"})
    assert two.written == two.pages == one.pages
    for name in _files(tmp_path / "one"):
        assert _stable_text(tmp_path / "two" / name) == _stable_text(tmp_path / "one" / name)
    # The workers' writes are in the manifest: the next render keeps every page.
    assert render_dashboard(store, tmp_path / "two", pairs={"tp2": "tp1"}).written == 0
