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

import re
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from evalpipe.errors import EvalpipeError
from evalpipe.records import utcnow
from evalpipe.report import data as report_data
from evalpipe.report.markdown import signed_pts
from evalpipe.report.pages import (
    VERDICTS,
    comparison_context,
    filters_of,
    overview_context,
    run_context,
    trends_context,
)
from evalpipe.report.templates import template_dirs
from evalpipe.store import Store

CSS_NAME = "style.css"
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class DashboardSummary:
    """What :func:`render_dashboard` wrote."""

    out_dir: Path
    index: Path
    pages: int
    runs: int
    comparisons: int
    seconds: float


def page_name(run_id: str) -> str:
    """The file name of a run's pages: the id itself when it is a safe file name."""
    if _SAFE_ID.fullmatch(run_id) and run_id not in (".", ".."):
        return f"{run_id}.html"
    # Imported runs may carry any id; a hash keeps the file name portable and unambiguous.
    from evalpipe.records import sha256_text

    return f"run-{sha256_text(run_id)[:16]}.html"


# --- formatting filters (plain strings: autoescape still applies to them) ----------------


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def pts(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} pts"


def signed(value: float | None) -> str:
    return "—" if value is None else signed_pts(value)


def p_value(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


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
    env.filters.update(pct=pct, pts=pts, signed=signed, p_value=p_value, seconds=seconds)
    env.globals.update(verdicts=VERDICTS, page_name=page_name)
    return env


def render_dashboard(
    store: Store,
    out_dir: Path,
    *,
    pairs: Mapping[str, str] | None = None,
    title: str | None = None,
    shard_period: int | None = None,
) -> DashboardSummary:
    """Write the dashboard of ``store`` into ``out_dir`` and return what was written.

    ``pairs`` adds reference comparisons for layouts that are not context-parallel, e.g.
    ``{"tp2": "tp1"}``; context-parallel layouts are always compared with their non-CP twin.
    Each comparison of a DCP run gets a shard-boundary panel (``shard_period`` tokens, or the
    run's dcp x interleave).
    Files written before under ``runs/`` and ``compare/`` are replaced, so a page never
    survives its run.

    Example::

        with open_store("evalpipe.db") as store:
            print(render_dashboard(store, Path("site")).index)
    """
    start = time.perf_counter()
    data = report_data.load(store, pairs, shard_period)
    env = _environment()
    css = Markup((Path(env.loader.searchpath[0]) / CSS_NAME).read_text())  # type: ignore[union-attr]
    base = {"title": title or "evalpipe dashboard", "css": css, "generated_at": utcnow()}
    out_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("runs", "compare"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
        (out_dir / sub).mkdir()
    writer = _Writer(env, out_dir, base)
    overview = overview_context(data)
    writer.page("index.html.jinja", "index.html", "", overview)
    writer.page("trends.html.jinja", "trends.html", "", trends_context(data))
    writer.page(
        "runs.html.jinja",
        "runs.html",
        "",
        {"runs": data.runs, "cells": data.cells, "filters": filters_of(data.runs)},
    )
    featured = _featured(overview["featured"], data)
    for run in data.runs:
        ctx = run_context(store, run, data.cells.get(run.run_id), run.run_id in featured)
        writer.page("run.html.jinja", f"runs/{page_name(run.run_id)}", "../", ctx)
    for cell in data.cells.values():
        if cell.result is not None:
            ctx = comparison_context(cell)
            writer.page(
                "comparison.html.jinja", f"compare/{page_name(cell.run.run_id)}", "../", ctx
            )
    return DashboardSummary(
        out_dir=out_dir,
        index=out_dir / "index.html",
        pages=writer.count,
        runs=len(data.runs),
        comparisons=sum(c.result is not None for c in data.cells.values()),
        seconds=time.perf_counter() - start,
    )


def _featured(latest: set[str], data: report_data.DashboardData) -> set[str]:
    """The latest runs of the overview's cells and the baselines they were compared with."""
    out = set(latest)
    for run_id in latest:
        cell = data.cells.get(run_id)
        if cell is not None and cell.baseline is not None:
            out.add(cell.baseline.run_id)
    return out


class _Writer:
    def __init__(self, env: jinja2.Environment, out_dir: Path, base: dict[str, Any]) -> None:
        self.env, self.out_dir, self.base = env, out_dir, base
        self.templates: dict[str, jinja2.Template] = {}
        self.count = 0

    def page(self, template: str, path: str, root: str, context: Mapping[str, Any]) -> None:
        if template not in self.templates:
            self.templates[template] = self.env.get_template(template)
        # A fresh nonce per page: the CSP admits only the script this page was rendered with.
        html = self.templates[template].render(
            **self.base, **context, root=root, nonce=secrets.token_urlsafe(16)
        )
        (self.out_dir / path).write_text(html, encoding="utf-8")
        self.count += 1
