"""The Python API: the one place that wires layouts, tasks, engines and the store together.

Every CLI command is a call into this module, so everything the CLI does is scriptable.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from evalpipe.errors import EvalpipeError
from evalpipe.options import RunOptions
from evalpipe.records import Run

__all__ = [
    "RunOptions",
    "comment",
    "compare",
    "dashboard",
    "explain_layout",
    "export_run",
    "format_layout",
    "format_run_summary",
    "format_runs_table",
    "get_run",
    "import_lmeval",
    "import_run",
    "list_runs",
    "resolve_model",
    "run",
    "run_to_dict",
    "run_with_baseline",
]


# --- layouts ----------------------------------------------------------------------------


def explain_layout(
    text: str,
    platform: str | None = None,
    attention: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """``evalpipe layout explain``: the layout's sizes, rule violations, baseline and flags.

    With ``model``, vLLM's own config validation also runs (when vllm is importable) and its
    message, if any, is added to ``errors``.
    """
    from evalpipe.layout import explain, parse

    info = explain(text, platform=platform, attention=attention)
    if model and info["valid"]:
        from evalpipe.engine.vllm_check import check_with_vllm

        check = check_with_vllm(parse(text), resolve_model(model), {})
        if check.available and not check.ok:
            info["errors"].append(f"vLLM: {check.message}")
            info["valid"] = False
    return info


def format_layout(info: dict[str, Any]) -> str:
    lines = [f"layout   {info['layout']}  ({'valid' if info['valid'] else 'INVALID'})"]
    if info.get("devices") is not None:
        sizes = " ".join(f"{k}={info[k]}" for k in ("dp", "tp", "pp", "pcp", "dcp"))
        lines.append(f"sizes    {sizes} ep={'on' if info['ep'] else 'off'}")
        lines.append(f"devices  {info['devices']}")
        lines.append(f"baseline {info['baseline'] or '(not a context-parallel layout)'}")
        lines.append(f"vllm     {' '.join(info['vllm_args'])}")
    lines += [f"error    {e}" for e in info["errors"]]
    return "\n".join(lines)


# --- runs -------------------------------------------------------------------------------


def resolve_model(model: str) -> str:
    """A built-in model name (``smollm2``, ``gemma3-270m``) → its local folder, built on
    first use; anything else is returned unchanged (a path or a served/hub name)."""
    from evalpipe.engine import models

    if model in models.MODELS and not Path(model).exists():
        return str(models.fetch(model, log=lambda m: print(m, file=sys.stderr)))
    return model


def run(options: RunOptions) -> Run:
    """Evaluate ``options.task`` on ``options.model`` with ``options.layout``; see
    :func:`evalpipe.run.native.execute` for what happens on failure and resume. A task named
    ``lm-eval:NAME`` runs lm-eval's task NAME instead (:mod:`evalpipe.run.lmeval`)."""
    from evalpipe.run import native as runner

    if options.engine != "endpoint":
        options = dataclasses.replace(options, model=resolve_model(options.model))
    if options.task.startswith("lm-eval:"):
        from evalpipe.run import lmeval as lmeval_run

        return lmeval_run.execute(options)
    return runner.execute(options)


def run_with_baseline(
    options: RunOptions, baseline_layout: str | None = None, repeat: int = 1
) -> tuple[list[Run], list[Run]]:
    """Run the baseline layout first (reusing a finished run of the same config), then the
    layout itself; each ``repeat`` times. Returns (baseline runs, runs).

    ``baseline_layout`` defaults to the layout's non-CP baseline; pass it for layouts that
    are not context-parallel (e.g. tp1 for tp2).
    """
    from evalpipe.layout import parse

    layout = parse(options.layout)
    base = baseline_layout or (layout.baseline().canonical if layout.is_cp else None)
    if base is None:
        raise EvalpipeError(
            f"{layout.canonical} is not context-parallel, so it has no automatic baseline; "
            "pass --baseline-layout L (e.g. tp1)"
        )
    # The baseline's generated long-context items straddle the CP run's shard boundaries.
    shard_layout = options.shard_layout or options.layout
    base_options = dataclasses.replace(options, layout=base, shard_layout=shard_layout)
    base_runs = run_repeated(base_options, repeat, reuse=True)
    return base_runs, run_repeated(options, repeat, reuse=True)


def run_repeated(options: RunOptions, repeat: int = 1, reuse: bool | None = None) -> list[Run]:
    """``repeat`` runs of one config (repeat_index 0..K-1).

    With ``reuse`` (default: when repeating), a finished run of the same config and repeat
    index is returned instead of run again, so ``--repeat 3`` after ``--repeat 2`` adds one.
    A single plain run always runs.
    """
    if repeat < 1:
        raise EvalpipeError("--repeat must be at least 1")
    reuse = repeat > 1 if reuse is None else reuse
    return [
        run(dataclasses.replace(options, repeat_index=i, reuse_finished=reuse))
        for i in range(repeat)
    ]


def compare(
    store: str | None,
    run_ids: Sequence[str],
    baseline: str | None = None,
    baseline_layout: str | None = None,
    margin: float = 0.01,
    alpha: float = 0.05,
    min_n: int = 100,
    force: bool = False,
    shard_period: int | None = None,
) -> list[dict[str, Any]]:
    """Compare each run with its baseline (``baseline`` run id, or the automatic one on
    ``baseline_layout`` / the non-CP layout); Holm-adjusted when several runs are given.
    ``shard_period`` overrides the layout's shard period for the boundary breakdown."""
    from evalpipe.compare.core import adjust
    from evalpipe.compare.jsonout import to_json
    from evalpipe.compare.pairing import find_baseline
    from evalpipe.compare.runs import compare_runs
    from evalpipe.store import open_store

    with open_store(store) as s:
        results = []
        for rid in run_ids:
            r = s.get_run(rid)
            if baseline and baseline != "auto":
                b = s.get_run(baseline)
            else:
                b = find_baseline(s, r, baseline_layout)
            results.append(
                compare_runs(
                    s,
                    r,
                    b,
                    margin=margin,
                    alpha=alpha,
                    min_n=min_n,
                    force=force,
                    shard_period=shard_period,
                )
            )
        return [to_json(c) for c in adjust(results)]


def tagged_comparisons(
    store: str | None,
    tag: str | None = None,
    run_ids: Sequence[str] = (),
    baseline_layout: str | None = None,
    margin: float = 0.01,
) -> list[dict[str, Any]]:
    """Comparisons of the given runs, or of the finished context-parallel runs carrying
    ``tag`` (each with its automatic baseline; with ``baseline_layout`` every tagged run not
    on that layout is compared with it)."""
    from evalpipe.layout import parse
    from evalpipe.store import open_store

    if not run_ids:
        if not tag:
            raise EvalpipeError("select runs with --run RUN_ID or --tag TAG")
        with open_store(store) as s:
            tagged = [r for r in s.list_runs(status="finished") if tag in r.tags]
        run_ids = [
            r.run_id
            for r in tagged
            if (r.config.layout != baseline_layout)
            and (baseline_layout is not None or parse(r.config.layout).is_cp)
        ]
        if not run_ids:
            raise EvalpipeError(
                f"no finished run tagged {tag!r} to compare (tag runs with "
                "`evalpipe run … --tag TAG`; non-CP runs count only with --baseline-layout)"
            )
    return compare(store, run_ids, baseline_layout=baseline_layout, margin=margin)


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


def run_to_dict(run: Run) -> dict[str, Any]:
    from evalpipe.importers.jsonl import run_to_dict as _to_dict

    return _to_dict(run)


def format_run_summary(run: Run, store: str | None) -> str:
    from evalpipe.store import describe_store

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.1%}"

    c = run.config
    return (
        f"run {run.run_id}: {c.task} v{c.task_version} on {c.layout} ({c.platform}), "
        f"model {c.model}\n"
        f"  accuracy {pct(run.accuracy)} strict ({run.n_correct}/{run.n_samples - run.n_errors})"
        f", {pct(run.accuracy_flexible)} flexible; infrastructure errors {run.n_errors}\n"
        f"  {run.duration_s or 0:.1f}s, {run.throughput_tok_s or 0:.1f} output tok/s\n"
        f"  stored in {describe_store(store)} (evalpipe runs show {run.run_id})"
    )


def list_runs(
    store: str | None,
    task: str | None = None,
    layout: str | None = None,
    limit: int | None = 50,
) -> list[Run]:
    from evalpipe.store import open_store

    with open_store(store) as s:
        return s.list_runs(task=task, layout=layout, limit=limit)


def get_run(store: str | None, run_id: str) -> Run:
    from evalpipe.store import open_store

    with open_store(store) as s:
        return s.get_run(run_id)


def format_runs_table(runs: Sequence[Run]) -> str:
    if not runs:
        return "no runs stored yet; start one with `evalpipe run gsm8k --layout tp1 --limit 20`"
    header = (
        f"{'run':24} {'task':10} {'layout':12} {'status':9} {'n':>5} {'acc':>7} {'err':>4}  model"
    )
    rows = [header]
    for r in runs:
        acc = "-" if r.accuracy is None else f"{r.accuracy:.1%}"
        rows.append(
            f"{r.run_id:24} {r.config.task:10} {r.config.layout:12} {r.status:9} "
            f"{r.n_samples:>5} {acc:>7} {r.n_errors:>4}  {Path(r.config.model).name}"
        )
    return "\n".join(rows)


def export_run(store: str | None, run_id: str, out: TextIO) -> None:
    from evalpipe.importers.jsonl import export_run as _export
    from evalpipe.store import open_store

    with open_store(store) as s:
        _export(s, s.get_run(run_id).run_id, out)


def import_lmeval(
    store: str | None,
    path: str,
    layout: str | None = None,
    model_path: str | None = None,
    primary: str | None = None,
) -> list[tuple[Any, bool]]:
    """``evalpipe import lm-eval DIR``: one run per task; (ImportedRun, written now) each."""
    from evalpipe.importers.lmeval.build import import_lmeval as _import
    from evalpipe.store import open_store

    with open_store(store) as s:
        return _import(s, path, layout=layout, model_path=model_path, primary=primary)


def import_aisbench(
    store: str | None,
    path: str,
    layout: str | None = None,
    model_path: str | None = None,
    datasets: Sequence[str] | None = None,
) -> list[Run]:
    """``evalpipe import aisbench DIR``: one run per (model, dataset); notes go to stderr."""
    from evalpipe.importers.aisbench.build import import_aisbench as _import
    from evalpipe.store import open_store

    with open_store(store) as s:
        return _import(
            s,
            path,
            layout=layout,
            model_path=model_path,
            datasets=datasets,
            log=lambda m: print(m, file=sys.stderr),
        )


def import_run(store: str | None, path: str) -> str:
    from evalpipe.importers.jsonl import import_run as _import
    from evalpipe.store import open_store

    try:
        source = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise EvalpipeError(f"cannot read {path}: {exc.strerror}") from exc
    with source, open_store(store) as s:
        return _import(s, source)
