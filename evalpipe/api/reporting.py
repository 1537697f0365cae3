"""Reports: the pull-request comment."""

from __future__ import annotations

from collections.abc import Sequence

from evalpipe.api.comparing import tagged_comparisons


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
