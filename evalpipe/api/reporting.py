"""Reports: the static dashboard and the pull-request comment."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalpipe.api.comparing import tagged_comparisons
from evalpipe.errors import EvalpipeError


def comment(
    store: str | None,
    repo: str,
    pr: int,
    *,
    tag: str | None = None,
    run_ids: Sequence[str] = (),
    baseline_layout: str | None = None,
    dashboard_url: str | None = None,
    token_env: str = "GITHUB_TOKEN",
    github_url: str | None = None,
    dry_run: bool = False,
    marker_key: str | None = None,
) -> str:
    """Render the PR summary of the selected comparisons and upsert the sticky comment
    (runs tagged ``pr-N`` by default)."""
    from evalpipe.github import post_comment
    from evalpipe.report.comment import render_comment

    comparisons = tagged_comparisons(store, tag or f"pr-{pr}", run_ids, baseline_layout)
    body = render_comment(comparisons, dashboard_url=dashboard_url, marker_key=marker_key)
    return post_comment(
        repo,
        pr,
        body,
        token_env=token_env,
        github_url=github_url,
        dry_run=dry_run,
        marker_key=marker_key,
    )


def dashboard(
    store: str | None,
    out: str | Path,
    pairs: Sequence[str] = (),
    title: str | None = None,
    shard_period: int | None = None,
) -> Any:
    """Render the store into a static site under ``out``; ``pairs`` are ``LAYOUT=BASELINE``
    reference pairs for layouts that are not context-parallel (e.g. ``tp2=tp1``)."""
    from evalpipe.report.dashboard import render_dashboard
    from evalpipe.store import open_store

    mapping: dict[str, str] = {}
    for item in pairs:
        run_layout, sep, base_layout = item.partition("=")
        if not sep or not run_layout or not base_layout:
            raise EvalpipeError(f"--pair takes LAYOUT=BASELINE_LAYOUT (e.g. tp2=tp1), got {item!r}")
        mapping[run_layout] = base_layout
    with open_store(store, create=False) as s:
        return render_dashboard(s, Path(out), pairs=mapping, title=title, shard_period=shard_period)
