"""Render the store into a static, self-contained HTML dashboard (no network, no CDN).

Pages: ``index.html`` (the overview matrix, drift first), ``trends.html`` (inline SVG charts),
``runs.html`` (every run), ``runs/RUN.html`` (provenance, and the sample table for the runs
the overview shows) and ``compare/RUN.html`` (one per compared run). Links are relative, so the
directory can be zipped, attached to CI, or served from any path.

Model outputs are untrusted. jinja2 autoescaping is on for every template and no filter here
returns markup built from model text; each page also carries a Content-Security-Policy that
allows only its own nonce-tagged script and no network at all, so even an escaping mistake
could neither run an injected script nor fetch anything.

Which run pages get a sample table: the latest run of each overview cell and the baseline it
was compared with. All runs × all samples (1 000 × 1 319 in the benchmark) would be 1.3 M rows
of HTML nobody reads; older runs' pages keep their provenance and link to the comparison, and
``evalpipe runs export RUN`` gives their samples.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from evalpipe import __version__
from evalpipe.canary.rows import stored_canaries
from evalpipe.errors import EvalpipeError
from evalpipe.records import Run, sha256_text, utcnow
from evalpipe.report import cache
from evalpipe.report import data as report_data
from evalpipe.report.canarypage import canary_context, canary_groups
from evalpipe.report.compute import SETTINGS
from evalpipe.report.fork import cores, forget_connections, fork_map
from evalpipe.report.markdown import p_value, percent, pts, signed_pts
from evalpipe.report.pages import (
    VERDICTS,
    comparison_context,
    filters_of,
    overview_context,
    run_context,
    trends_context,
)
from evalpipe.report.site import Entry, Site
from evalpipe.report.templates import template_dirs
from evalpipe.store import Store

CSS_NAME = "style.css"
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class DashboardSummary:
    """What :func:`render_dashboard` wrote: ``pages`` in the site, ``written`` of them this
    time (the others were unchanged), ``computed`` comparisons (the others came from the
    cache)."""

    out_dir: Path
    index: Path
    pages: int
    runs: int
    comparisons: int
    seconds: float
    written: int = 0
    computed: int = 0
    kept: tuple[str, ...] = ()
    """Pages an earlier render wrote and a user edited since, which this render no longer
    makes: kept in the folder (relative paths), no longer the dashboard's."""


def page_name(run_id: str) -> str:
    """The file name of a run's pages: the id itself when it is a safe file name."""
    if _SAFE_ID.fullmatch(run_id) and run_id not in (".", ".."):
        return f"{run_id}.html"
    # Imported runs may carry any id; a hash keeps the file name portable and unambiguous.
    return f"run-{sha256_text(run_id)[:16]}.html"


# --- formatting filters: markdown's number formats (plain strings; autoescape applies) -------


def signed(value: float | None) -> str:
    return "—" if value is None else signed_pts(value)


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def _environment() -> jinja2.Environment:
    dirs = template_dirs("index.html.jinja")
    if not dirs:
        raise EvalpipeError("dashboards/index.html.jinja not found; reinstall evalpipe")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(dirs[0]),
        # On for every template name, and for strings: model text is escaped wherever it goes.
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "jinja"), default_for_string=True, default=True
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=percent, pts=pts, signed=signed, p_value=p_value, seconds=seconds)
    env.globals.update(verdicts=VERDICTS, page_name=page_name)
    return env


def render_dashboard(
    store: Store,
    out_dir: Path,
    *,
    pairs: Mapping[str, str] | None = None,
    title: str | None = None,
    shard_period: int | None = None,
    force: bool = False,
) -> DashboardSummary:
    """Write the dashboard of ``store`` into ``out_dir`` and return what was written.

    ``pairs`` adds reference comparisons for layouts that are not context-parallel, e.g.
    ``{"tp2": "tp1"}``; context-parallel layouts are always compared with their non-CP twin.
    Each comparison of a DCP run gets a shard-boundary panel (``shard_period`` tokens, or the
    run's dcp x interleave).

    Incremental: a render into the folder of an earlier one reuses its comparisons whose
    inputs did not change, rewrites only the pages whose content changed and removes the
    pages it wrote that no longer exist (a run deleted); files it did not write stay
    (:mod:`evalpipe.report.site`). A non-empty ``out_dir`` that no render wrote into is
    refused unless ``force``.

    Example::

        with open_store("evalpipe.db") as store:
            print(render_dashboard(store, Path("site")).index)
    """
    start = time.perf_counter()
    site = Site(out_dir, force)
    data = report_data.load(store, pairs, shard_period, cache.load(site.state_dir))
    env = _environment()
    css = Markup((Path(env.loader.searchpath[0]) / CSS_NAME).read_text())  # type: ignore[union-attr]
    title = title or "evalpipe dashboard"
    base = {"title": title, "css": css, "generated_at": utcnow()}
    writer = _Writer(env, site, base, _site_inputs(env, title))
    overview = overview_context(data)
    runs_ctx = {"runs": data.runs, "cells": data.cells, "filters": filters_of(data.runs)}
    pages = [
        _Page("index.html.jinja", "index.html", "", "", lambda: overview),
        _Page("trends.html.jinja", "trends.html", "", "", lambda: trends_context(data)),
        _Page("runs.html.jinja", "runs.html", "", "", lambda: runs_ctx),
        _canary_page(writer, store, data),
    ]
    featured = _featured(overview["featured"], data)
    for run in data.runs:
        pages.append(_run_page(writer, store, run, data.cells.get(run.run_id), featured))
    pages += _comparison_pages(writer, store, data)
    writer.render([p for p in pages if not site.keep(p.path, p.inputs)], store)
    cache.save(site.state_dir, data.entries)
    site.finish()
    return DashboardSummary(
        out_dir=out_dir,
        index=out_dir / "index.html",
        pages=len(pages),
        runs=len(data.runs),
        comparisons=sum(c.comparison is not None for c in data.cells.values()),
        seconds=time.perf_counter() - start,
        written=len(site.written),
        computed=data.computed,
        kept=tuple(site.kept),
    )


@dataclass(frozen=True)
class _Page:
    """One page to render: ``context`` builds what its template needs, only if it must be
    rendered (its ``inputs`` digest changed, or it has none)."""

    template: str
    path: str
    root: str
    inputs: str
    context: Callable[[], Mapping[str, Any]]


def _canary_page(writer: _Writer, store: Store, data: report_data.DashboardData) -> _Page:
    """The canary page: computed and rendered again only when a run it shows changed."""
    found = stored_canaries(store, data.runs)
    shown = [writer.digest(c.clean) for c in found] + [
        writer.digest(a.run) for c in found for a in c.arms
    ]
    inputs = writer.inputs("canary", shown)
    return _Page(
        "canary.html.jinja",
        "canary.html",
        "",
        inputs,
        lambda: canary_context(canary_groups(store, found, SETTINGS)),
    )


def _run_page(
    writer: _Writer, store: Store, run: Run, cell: report_data.Cell | None, featured: set[str]
) -> _Page:
    shown = None if cell is None else (cell.key, cell.reason, cell.baseline_layout)
    baseline = None if cell is None or cell.baseline is None else cell.baseline.run_id
    with_samples = run.run_id in featured
    inputs = writer.inputs("run", writer.digest(run), with_samples, shown, baseline)
    return _Page(
        "run.html.jinja",
        f"runs/{page_name(run.run_id)}",
        "../",
        inputs,
        partial(_run_context, store, run, cell, with_samples),
    )


def _run_context(
    store: Store, run: Run, cell: report_data.Cell | None, with_samples: bool
) -> Mapping[str, Any]:
    try:
        return run_context(store, run, cell, with_samples)
    except json.JSONDecodeError as exc:
        # A sample row whose JSON maps do not parse: a hand edit or a disk fault, never
        # something evalpipe wrote. Which run, and how to get past it, is all a user needs.
        raise EvalpipeError(
            f"run {run.run_id} is damaged in the store: a stored sample does not parse as "
            f"JSON ({exc.msg}), so the store was changed outside evalpipe; restore it from a "
            "backup, or copy its intact runs to a new store (`evalpipe store copy STORE NEW "
            "--run ID`) and render that"
        ) from exc


def _comparison_pages(
    writer: _Writer, store: Store, data: report_data.DashboardData
) -> list[_Page]:
    """A page per comparison; those to render again get their flip examples back first."""
    pages: dict[str, _Page] = {}
    redo: list[report_data.Cell] = []
    for cell in data.cells.values():
        c = cell.comparison
        if c is None:
            continue
        inputs = writer.inputs(
            "compare",
            cell.key,
            writer.digest(c.run),
            writer.digest(c.baseline),
            cell.baseline_layout,
        )
        page = _Page(
            "comparison.html.jinja",
            f"compare/{page_name(c.run.run_id)}",
            "../",
            inputs,
            partial(comparison_context, cell),
        )
        pages[c.run.run_id] = page
        if not writer.site.unchanged(page.path, page.inputs):
            redo.append(cell)
    for run_id, cell in report_data.complete(store, redo).items():
        if cell.comparison is None:  # no longer comparable: unreachable for a stored run
            del pages[run_id]
        else:
            pages[run_id] = replace(pages[run_id], context=partial(comparison_context, cell))
    return list(pages.values())


def _site_inputs(env: jinja2.Environment, title: str) -> str:
    """What every page depends on: evalpipe, the templates, the stylesheet, the code that
    builds the pages (a checkout's edits count too) and the title."""
    folder = Path(env.loader.searchpath[0])  # type: ignore[union-attr]
    parts = [__version__, title]
    for path in [*sorted(folder.glob("*.html.jinja")), folder / CSS_NAME]:
        parts.append(path.read_text(encoding="utf-8"))
    here = Path(__file__).resolve().parent
    for name in ("dashboard.py", "pages.py", "charts.py", "tokens/page.py", "canarypage.py"):
        parts.append((here / name).read_text(encoding="utf-8"))
    return sha256_text("\0".join(parts))


def _featured(latest: set[str], data: report_data.DashboardData) -> set[str]:
    """The latest runs of the overview's cells and the baselines they were compared with."""
    out = set(latest)
    for run_id in latest:
        cell = data.cells.get(run_id)
        if cell is not None and cell.baseline is not None:
            out.add(cell.baseline.run_id)
    return out


MIN_PAGES_PER_WORKER = 200
"""Fewer pages than this per worker are rendered in this process: forking costs more."""


class _Writer:
    """Renders pages into a :class:`Site`, in forked workers when there are many."""

    def __init__(
        self, env: jinja2.Environment, site: Site, base: dict[str, Any], site_inputs: str
    ) -> None:
        self.env, self.site, self.base, self.site_inputs = env, site, base, site_inputs
        self.templates: dict[str, jinja2.Template] = {}
        self.digests: dict[str, str] = {}

    def inputs(self, *parts: object) -> str:
        """Digest of a page's inputs, the site-wide ones included."""
        return sha256_text(json.dumps([self.site_inputs, *parts], default=str))

    def digest(self, run: Run) -> str:
        """Digest of a run's record: its repr, every field, maps in their stored order."""
        if run.run_id not in self.digests:
            self.digests[run.run_id] = sha256_text(repr(run))
        return self.digests[run.run_id]

    def render(self, pages: Sequence[_Page], store: Store) -> None:
        """Render and write ``pages``; the workers' writes are recorded here."""
        n = max(1, min(cores(), len(pages) // MIN_PAGES_PER_WORKER))
        # Interleaved shares: the few heavy pages (sample tables) spread over the workers.
        shares = [pages[i::n] for i in range(n)]
        for done in fork_map(self._render_share, shares, n, partial(forget_connections, store)):
            for path, entry, written in done:
                self.site.record(path, entry, written)

    def _render_share(self, pages: Sequence[_Page]) -> list[tuple[str, Entry, bool]]:
        out = []
        for p in pages:
            written = self._page(p)
            out.append((p.path, self.site.now[p.path], written))
        return out

    def _page(self, p: _Page) -> bool:
        if p.template not in self.templates:
            self.templates[p.template] = self.env.get_template(p.template)
        # A fresh nonce per page: the CSP admits only the script this page was rendered with.
        nonce = secrets.token_urlsafe(16)
        html = self.templates[p.template].render(
            **self.base, **p.context(), root=p.root, nonce=nonce
        )
        # The nonce and the time change on every render; the page changed only if the rest did.
        return self.site.write(p.path, html, p.inputs, volatile=(nonce, self.base["generated_at"]))
