"""The static dashboard of a store."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalpipe.errors import EvalpipeError


def dashboard(
    store: str | None,
    out: str | Path,
    pairs: Sequence[str] = (),
    title: str | None = None,
    shard_period: int | None = None,
    force: bool = False,
) -> Any:
    """Render the store into a static site under ``out``; ``pairs`` are ``LAYOUT=BASELINE``
    reference pairs for layouts that are not context-parallel (e.g. ``tp2=tp1``).

    Rendering into the folder of an earlier render redoes only what changed (comparisons
    whose runs changed, pages whose content changed); the summary says how much. It removes
    only files an earlier render wrote (listed in ``out/.evalpipe/manifest.json``) and
    refuses a non-empty folder without that manifest unless ``force``: then it renders into
    it, keeping its files (those at the dashboard's page paths are overwritten).

    Example::

        summary = dashboard("evalpipe.db", "site", pairs=["tp2=tp1"])
        print(summary.index)
    """
    from evalpipe.api.stored import store_inputs
    from evalpipe.layout import parse
    from evalpipe.limits import check_shard_period
    from evalpipe.paths import check_folder_output
    from evalpipe.report.dashboard import render_dashboard
    from evalpipe.report.site import writes
    from evalpipe.store import open_store

    mapping: dict[str, str] = {}
    for item in pairs:
        run_layout, sep, base_layout = item.partition("=")
        if not sep or not run_layout or not base_layout:
            raise EvalpipeError(f"--pair takes LAYOUT=BASELINE_LAYOUT (e.g. tp2=tp1), got {item!r}")
        if parse(run_layout) == parse(base_layout):
            # Every run would be its own baseline: no comparison, silently.
            raise EvalpipeError(
                f"--pair {item}: a layout is not its own baseline; name another layout after "
                "the = (e.g. tp2=tp1)"
            )
        mapping[run_layout] = base_layout
    check_shard_period(shard_period)
    check_folder_output("--out", out, store_inputs(store), writes)
    with open_store(store, create=False, empty_ok=False) as s:
        return render_dashboard(
            s, Path(out), pairs=mapping, title=title, shard_period=shard_period, force=force
        )
