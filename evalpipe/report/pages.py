"""What each dashboard page shows: template contexts built from :mod:`evalpipe.report.data`.

Plain Python values only (runs, cells, strings, numbers); the templates do the HTML and
jinja2 escapes every value, so nothing here builds markup. Ordering decisions live here:
drift first, then missing baselines, inconclusive, ok, so the eye lands on a problem first.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evalpipe.compare.core import Flip
from evalpipe.compare.pairing import pairing_key
from evalpipe.compare.power import DEFAULT_MARGIN
from evalpipe.engine.args import EngineArgs
from evalpipe.layout import parse
from evalpipe.records import Run, canonical_json
from evalpipe.report.charts import Chart, accuracy_chart, delta_chart
from evalpipe.report.data import Cell, DashboardData
from evalpipe.report.tokens.page import token_view
from evalpipe.store import Store

VERDICTS: Mapping[str, tuple[str, str]] = {
    "drift": ("✗", "drift"),
    "missing": ("!", "no baseline"),
    "inconclusive": ("?", "inconclusive"),
    "ok": ("✓", "ok"),
}
"""Verdict → (symbol, words): never colour alone. Keys in the order problems are listed."""
_RANK = {v: i for i, v in enumerate(VERDICTS)}


def run_label(run: Run) -> str:
    """``2026-11-28 · vllm 0.32.0``: when a run started and with which engine."""
    versions = run.config.engine_versions
    engine = f"vllm {versions['vllm']}" if "vllm" in versions else ""
    return " · ".join(x for x in (run.started_at[:10], engine) if x)


@dataclass(frozen=True)
class CellView:
    """One overview cell: the latest finished run of a (model, task, platform, layout)."""

    run: Run
    cell: Cell | None  # set when this layout is compared with a baseline
    is_baseline: bool
    older: int  # earlier finished runs of the same cell (they are on the trends page)

    @property
    def verdict(self) -> str | None:
        return None if self.cell is None else self.cell.verdict

    @property
    def token_drift(self) -> bool:
        """The token-level comparison found drift (whatever the accuracy verdict)."""
        c = None if self.cell is None else self.cell.comparison
        return c is not None and c.tokens is not None and c.tokens.verdict == "token-drift"


@dataclass(frozen=True)
class MatrixRow:
    """One overview row; ``cells`` line up with the columns (``None``: never run)."""

    model: str
    task: str
    platform: str
    cells: list[CellView | None]

    @property
    def rank(self) -> int:
        """The worst verdict's rank (drift 0 … ok 3; 4 when nothing is compared)."""
        ranks = [_RANK[v.verdict] for v in self.cells if v is not None and v.verdict]
        return min(ranks, default=len(_RANK))


def _row_key(run: Run) -> tuple[str, str, str]:
    return (run.config.model, run.config.task, run.config.platform)


def _column_order(layouts: set[str], baselines: set[str]) -> list[str]:
    """Each baseline just left of the layouts compared with it; by device count within."""

    def key(name: str) -> tuple[str, int, int, str]:
        try:
            layout = parse(name)
            group = layout.baseline().canonical if layout.is_cp else name
            devices = layout.devices
        except Exception:  # an unparsable imported layout: shown last, never an error
            return ("~", 1, 0, name)
        return (group, 0 if name in baselines else 1, devices, name)

    return sorted(layouts, key=key)


def overview_context(data: DashboardData) -> dict[str, Any]:
    """The matrix (rows model × task × platform, columns layouts) and the problem list."""
    latest: dict[tuple[str, str, str], dict[str, Run]] = defaultdict(dict)
    older: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for run in data.runs:  # newest first: the first seen is the latest
        if run.status != "finished" or run.config.fault is not None:
            continue  # canary runs are on the canary page, never a release cell
        row, layout = _row_key(run), run.config.layout
        if layout in latest[row]:
            older[(*row, layout)] += 1
        else:
            latest[row][layout] = run
    baselines = data.baseline_layouts
    columns = _column_order({lay for cells in latest.values() for lay in cells}, baselines)
    rows: list[MatrixRow] = []
    for row, by_layout in latest.items():
        views: list[CellView | None] = []
        for layout in columns:
            found = by_layout.get(layout)
            views.append(
                None
                if found is None
                else CellView(
                    run=found,
                    cell=data.cells.get(found.run_id),
                    is_baseline=layout in baselines,
                    older=older[(*row, layout)],
                )
            )
        rows.append(MatrixRow(*row, cells=views))
    rows.sort(key=lambda r: (r.rank, r.model, r.task))
    shown = [v for r in rows for v in r.cells if v is not None]
    problems = sorted(
        (v for v in shown if v.verdict in ("drift", "missing") or v.token_drift),
        key=lambda v: (_RANK[v.verdict or "ok"], v.run.config.model, v.run.config.layout),
    )
    counts = {k: 0 for k in VERDICTS}
    for v in shown:
        if v.verdict is not None:
            counts[v.verdict] += 1
    return {
        # Shown, not a baseline, compared with nothing: in no verdict's count otherwise.
        "not_compared": sum(1 for v in shown if v.cell is None and not v.is_baseline),
        "columns": [{"layout": c, "is_baseline": c in baselines} for c in columns],
        "rows": rows,
        "problems": problems,
        "counts": counts,
        "filters": filters_of(data.runs),
        "featured": {v.run.run_id for v in shown},
        "n_runs": len(data.runs),
    }


def filters_of(runs: list[Run]) -> dict[str, list[str]]:
    return {
        "model": sorted({r.config.model for r in runs}),
        "task": sorted({r.config.task for r in runs}),
        "platform": sorted({r.config.platform for r in runs}),
    }


@dataclass(frozen=True)
class Series:
    """One trend: every finished run of a (model, task, platform, layout) and configuration
    (:func:`series_key`), oldest first; ``variant`` names what sets it apart from the other
    series of its model, task, platform and layout ("" when there are none)."""

    model: str
    task: str
    platform: str
    layout: str
    variant: str
    runs: list[Run]
    accuracy: Chart
    delta: Chart | None
    verdict: str | None  # of the latest run


def series_key(run: Run) -> dict[str, Any]:
    """What one trend line holds equal: the pairing key (everything but the layout) without
    the engine versions, which the x axis names: an upgrade is a point on the line, a float32
    run beside bfloat16 ones is another line."""
    return {k: v for k, v in pairing_key(run).items() if k != "engine_versions"}


# How a differing pairing-key field is named in a series' variant (the rest: "FIELD VALUE").
_KEY_TEXT = {
    "model_fingerprint": "model {:.19}",
    "task_version": "task v{}",
    "prompt_hash": "prompts {:.8}",
    "data_sha256": "data {:.8}",
}


def _arg_text(args: Mapping[str, Any], name: str) -> str:
    if name not in args:
        return f"{name} unset"
    value = args[name]
    return f"{name}={value if isinstance(value, str) else json.dumps(value)}"


def variants(keys: list[dict[str, Any]]) -> list[str]:
    """For the series keys of one model, task, platform and layout: what tells each apart
    (the fields that differ, engine arguments by name), "" for a series alone."""
    if len(keys) < 2:
        return [""] * len(keys)
    fields = [f for f in keys[0] if any(k[f] != keys[0][f] for k in keys)]
    names = sorted({a for k in keys for a in k["engine_args"]})
    differ = [a for a in names if len({canonical_json(k["engine_args"].get(a)) for k in keys}) > 1]
    out = []
    for key in keys:
        parts = []
        for f in fields:
            if f == "engine_args":
                parts += [_arg_text(key["engine_args"], a) for a in differ]
            else:
                text = key[f] if isinstance(key[f], str) else canonical_json(key[f])
                parts.append(_KEY_TEXT.get(f, f + " {:.24}").format(text))
        out.append(" · ".join(parts))
    return out


SeriesId = tuple[str, str, str, str, str]  # model, task, platform, layout, series key


def _variant_names(groups: Mapping[SeriesId, list[Run]]) -> dict[SeriesId, str]:
    siblings: dict[tuple[str, ...], list[SeriesId]] = defaultdict(list)
    for g in groups:
        siblings[g[:4]].append(g)
    names: dict[SeriesId, str] = {}
    for members in siblings.values():
        labels = variants([series_key(groups[g][0]) for g in members])
        names.update(zip(members, labels, strict=True))
    return names


def trends_context(data: DashboardData) -> dict[str, Any]:
    """Accuracy and Δ charts per series; series whose latest run drifted come first."""
    groups: dict[SeriesId, list[Run]] = defaultdict(list)
    for run in reversed(data.runs):  # oldest first along the x axis
        if run.status == "finished" and run.accuracy is not None and run.config.fault is None:
            key = canonical_json(series_key(run))
            groups[(*_row_key(run), run.config.layout, key)].append(run)
    names = _variant_names(groups)
    series = []
    for (model, task, platform, layout, key), runs in groups.items():
        labels = [run_label(r) for r in runs]
        cells = [data.cells.get(r.run_id) for r in runs]
        results = [c.result if c is not None else None for c in cells]
        base_acc = [r.baseline_accuracy if r is not None else None for r in results]
        acc = accuracy_chart(labels, [r.accuracy for r in runs], base_acc)
        delta = None
        if any(r is not None for r in results):
            delta = delta_chart(
                labels,
                [r.delta if r else None for r in results],
                [r.ci_low if r else None for r in results],
                [r.ci_high if r else None for r in results],
                next((r.margin for r in results if r), DEFAULT_MARGIN),
                [c.comparison.noise_floor if c and c.comparison else None for c in cells],
            )
        last = cells[-1]
        verdict = None if last is None else last.verdict
        variant = names[(model, task, platform, layout, key)]
        series.append(Series(model, task, platform, layout, variant, runs, acc, delta, verdict))
    series.sort(
        key=lambda s: (_RANK.get(s.verdict or "", len(_RANK)), s.model, s.task, s.layout, s.variant)
    )
    return {"series": series, "filters": filters_of(data.runs)}


def provenance(run: Run) -> list[tuple[str, str]]:
    """Everything that can move a number, as (label, text) rows."""
    c = run.config

    def js(value: Any) -> str:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)

    thr = run.throughput_tok_s
    return [
        ("model", c.model),
        ("model fingerprint", c.model_fingerprint),
        ("task", f"{c.task} v{c.task_version}"),
        ("prompt hash", c.prompt_hash),
        ("data", c.data_source),
        ("data sha256", c.data_sha256 or "—"),
        ("layout", c.layout),
        ("canary fault", c.fault or "— (a clean run)"),
        ("request order", c.request_order),
        ("platform", c.platform),
        ("engine", c.engine_kind),
        ("engine args", " ".join(EngineArgs(c.engine_args).as_pairs()) or "—"),
        ("engine versions", js(dict(c.engine_versions))),
        ("sampling", js(dict(c.sampling))),
        ("seed", str(c.seed)),
        ("limit", "—" if c.limit is None else str(c.limit)),
        ("concurrency", str(c.concurrency)),
        ("repeat", str(c.repeat_index)),
        ("status", run.status + (f": {run.message}" if run.message else "")),
        ("started", run.started_at),
        ("finished", run.finished_at or "—"),
        ("duration", "—" if run.duration_s is None else f"{run.duration_s:.1f} s"),
        ("output tokens", str(run.output_tokens)),
        ("throughput", "—" if thr is None else f"{thr:.1f} tok/s"),
        ("samples", f"{run.n_samples} of {run.n_items} items"),
        ("errors", str(run.n_errors)),
        ("tags", ", ".join(run.tags) or "—"),
        ("config hash", c.config_hash()),
    ]


def run_context(store: Store, run: Run, cell: Cell | None, with_samples: bool) -> dict[str, Any]:
    """A run page: provenance, observed environment, and (featured runs) every sample."""
    rows = None
    if with_samples:
        rows = [
            {
                "s": s,
                "extracted": "; ".join(f"{k}: {v}" for k, v in s.extracted.items()),
                "state": "error" if s.error else ("ok" if s.correct else "wrong"),
            }
            for s in store.samples(run.run_id)
        ]
    observed = json.dumps(dict(run.provenance), indent=2, sort_keys=True, ensure_ascii=False)
    return {
        "run": run,
        "cell": cell,
        "provenance": provenance(run),
        "observed": observed,
        "samples": rows,
        "label": run_label(run),
    }


def split_at(text: str, index: int | None) -> tuple[str, str, str]:
    """``text`` as (same as the other output, first differing character, the rest).

    Split here, escaped by the template piece by piece: the highlight never needs markup
    built from model text.
    """
    if index is None:
        return text, "", ""
    return text[:index], text[index : index + 1], text[index + 1 :]


def comparison_context(cell: Cell) -> dict[str, Any]:
    """A comparison page: 2x2 table, figures, length buckets and the flips side by side."""
    c = cell.comparison
    assert c is not None, "a comparison page needs a comparison"

    def view(f: Flip) -> dict[str, Any]:
        return {
            "f": f,
            "run": split_at(f.run_output, f.first_difference),
            "base": split_at(f.baseline_output, f.first_difference),
            "extracted": (_answer(f.run_extracted), _answer(f.baseline_extracted)),
        }

    order = {"correct_to_wrong": 0, "wrong_to_correct": 1}
    flips = sorted(c.flip_examples, key=lambda f: order.get(f.direction, 2))
    return {
        "cell": cell,
        "c": c,
        "r": c.result,
        "flips": [view(f) for f in flips],
        "shown": len(flips),
        "n_flips": {d: len(ids) for d, ids in c.flips.items()},
        "total_flips": sum(len(ids) for ids in c.flips.values()),
        "label": run_label(cell.run),
        "tokens": None if c.tokens is None else token_view(c.tokens),
    }


def _answer(extracted: Mapping[str, str | None]) -> str:
    """The extracted answers as ``strict: 17; flexible: 17`` ("" when none were stored)."""
    return "; ".join(f"{k}: {'—' if v is None else v}" for k, v in extracted.items())
