"""Dashboard data: every finished run paired with its baseline and compared, in bulk.

The pairing rules are :mod:`evalpipe.compare.pairing`'s (``pairing_key``, ``baseline_layout``, the
newest pairing run with repeat 0 preferred), applied to the run list in memory: calling
``find_baseline`` per run re-reads every run each time. The counting is done with pandas: one
query reads the samples of the runs involved, two merges join every run with its baseline item
by item, and group-bys give all 2x2 tables, exclusions, agreements and length buckets at once;
``stats.compare_table`` then turns each table into figures and a verdict, so the numbers are the
ones ``evalpipe compare`` prints (tests check it). Comparisons are not Holm-adjusted: each cell
stands alone, as ``evalpipe compare RUN`` would report it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from evalpipe.compare import breakdown, stats
from evalpipe.compare.core import DEFAULT_LENGTH_EDGES, EXAMPLE_CHARS
from evalpipe.compare.pairing import baseline_layout, pairing_key
from evalpipe.compare.pairing import find_baseline as _find_baseline
from evalpipe.compare.runs import shard_period_of
from evalpipe.errors import EvalpipeError
from evalpipe.layout import MIN_PERIOD, parse
from evalpipe.records import Run, canonical_json
from evalpipe.store import Store
from evalpipe.store.schema import samples as samples_table

# SQLite caps bound parameters per statement; stay well under every version's limit.
_IN_CHUNK = 900
MAX_FLIPS = 200
"""Flip examples kept per comparison: a broken layout can flip hundreds of items, and a
page of a thousand 2 000-character outputs helps nobody; the counts stay exact."""


@dataclass(frozen=True)
class Flip:
    """One item answered correctly by one side only, with both outputs."""

    item_id: str
    direction: str  # "correct_to_wrong" | "wrong_to_correct"
    target: str | None
    run_output: str
    baseline_output: str
    first_difference: int | None


@dataclass(frozen=True)
class Cell:
    """One run that should be compared: its baseline and figures, or why there are none."""

    run: Run
    baseline_layout: str
    baseline: Run | None = None
    reason: str | None = None
    result: stats.PairedResult | None = None
    agreement: float | None = None
    excluded: Mapping[str, int] = field(default_factory=dict)
    buckets: tuple[breakdown.BucketResult, ...] = ()
    flips: tuple[Flip, ...] = ()
    n_flips: Mapping[str, int] = field(default_factory=dict)
    noise_floor: float | None = None
    noise_repeats: int = 0
    shard_period: int | None = None
    boundaries: tuple[breakdown.BoundaryGroup, ...] = ()

    @property
    def verdict(self) -> str:
        """``ok``/``drift``/``inconclusive``, or ``missing`` when nothing could be compared."""
        return "missing" if self.result is None else self.result.verdict


@dataclass(frozen=True)
class DashboardData:
    """All runs (newest first) and a :class:`Cell` per run that has a baseline layout."""

    runs: list[Run]
    cells: dict[str, Cell]

    @property
    def baseline_layouts(self) -> set[str]:
        return {c.baseline_layout for c in self.cells.values()}


def _canonical_pairs(pairs: Mapping[str, str] | None) -> dict[str, str]:
    return {parse(k).canonical: parse(v).canonical for k, v in (pairs or {}).items()}


def _wanted_layout(run: Run, pairs: Mapping[str, str]) -> str | None:
    """The layout ``run`` is compared with, or ``None`` when it is not compared."""
    try:
        layout = parse(run.config.layout)
    except EvalpipeError:
        return None  # an imported run with a layout we cannot parse: shown, not compared
    override = pairs.get(layout.canonical)
    if override is None and not layout.is_cp:
        return None
    return baseline_layout(run, override)


def _repeat_key(run: Run) -> str:
    return canonical_json({**run.config.key(), "repeat_index": None})


def _pair_runs(
    store: Store, finished: list[Run], pairs: Mapping[str, str]
) -> tuple[list[Cell], dict[str, list[Run]]]:
    """Cells with their baseline chosen (or the reason there is none), and repeat groups."""
    by_key: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    keys = {r.run_id: canonical_json(pairing_key(r)) for r in finished}
    for r in finished:  # newest first, like store.list_runs
        by_key[(r.config.task, r.config.layout, keys[r.run_id])].append(r)
    repeats: dict[str, list[Run]] = defaultdict(list)
    for r in finished:
        repeats[_repeat_key(r)].append(r)
    cells: list[Cell] = []
    for run in finished:
        try:
            wanted = _wanted_layout(run, pairs)
        except EvalpipeError as exc:
            cells.append(Cell(run=run, baseline_layout="?", reason=str(exc)))
            continue
        if wanted is None:
            continue
        found = [
            r
            for r in by_key.get((run.config.task, wanted, keys[run.run_id]), [])
            if r.run_id != run.run_id
        ]
        first = [r for r in found if r.config.repeat_index == 0] or found
        if first:
            cells.append(Cell(run=run, baseline_layout=wanted, baseline=first[0]))
            continue
        try:  # compare's own search, for its message (what differs, how to make one)
            _find_baseline(store, run, pairs.get(parse(run.config.layout).canonical))
            reason = "no baseline found"  # unreachable unless the store changed meanwhile
        except EvalpipeError as exc:
            reason = str(exc)
        cells.append(Cell(run=run, baseline_layout=wanted, reason=reason))
    return cells, repeats


def read_samples(store: Store, run_ids: Iterable[str]) -> pd.DataFrame:
    """The columns pairing needs, for these runs, as one frame (one query per 900 runs)."""
    t = samples_table
    ids = sorted(set(run_ids))
    frames = []
    with store.engine.connect() as conn:
        for i in range(0, len(ids), _IN_CHUNK):
            query = sa.select(
                t.c.run_id,
                t.c.item_id,
                t.c.correct,
                t.c.error.is_(None).label("ok"),
                t.c.prompt_tokens,
                t.c.output,
                t.c.target,
            ).where(t.c.run_id.in_(ids[i : i + _IN_CHUNK]))
            frames.append(pd.read_sql(query, conn))
    if not frames:
        frames = [pd.DataFrame(columns=["run_id", "item_id", "correct", "ok", "prompt_tokens"])]
    df = pd.concat(frames, ignore_index=True)
    # SQLite returns booleans as 0/1 and NULL as NaN; compare() scores None as not correct.
    df["correct"] = df["correct"].fillna(0).astype(bool)
    df["ok"] = df["ok"].fillna(0).astype(bool)
    return df


def _joined(df: pd.DataFrame, pairs: list[tuple[int, str, str]]) -> pd.DataFrame:
    """Every pair's items side by side (outer join on item id); ``_merge`` tells which side."""
    frame = pd.DataFrame(pairs, columns=["pid", "left", "right"])
    left = frame[["pid", "left"]].merge(df, left_on="left", right_on="run_id")
    right = frame[["pid", "right"]].merge(df, left_on="right", right_on="run_id")
    cols = ["pid", "item_id", "correct", "ok", "prompt_tokens", "output", "target"]
    return left[cols].merge(
        right[cols], on=["pid", "item_id"], how="outer", suffixes=("_r", "_b"), indicator=True
    )


def _tables(j: pd.DataFrame) -> pd.DataFrame:
    """Per pair: the 2x2 table, exclusions and identical outputs, from a :func:`_joined`."""
    both = j["_merge"] == "both"
    scored = both & j["ok_r"].fillna(False).astype(bool) & j["ok_b"].fillna(False).astype(bool)
    r = j["correct_r"].fillna(False).astype(bool)
    b = j["correct_b"].fillna(False).astype(bool)
    out_r = j["output_r"].fillna("").astype(object)
    out_b = j["output_b"].fillna("").astype(object)
    cols = pd.DataFrame(
        {
            "pid": j["pid"],
            "both_correct": scored & r & b,
            "only_run": scored & r & ~b,
            "only_baseline": scored & ~r & b,
            "both_wrong": scored & ~r & ~b,
            "same_output": scored & (out_r == out_b),
            "missing_in_run": j["_merge"] == "right_only",
            "missing_in_baseline": j["_merge"] == "left_only",
            "error": both & ~scored,
        }
    )
    return cols.groupby("pid").sum()


def _buckets(j: pd.DataFrame, scored: pd.Series) -> dict[int, tuple[breakdown.BucketResult, ...]]:
    """Length buckets per pair, as ``breakdown.length_buckets`` with compare's default edges."""
    s = j[scored]
    tokens = s["prompt_tokens_r"].fillna(s["prompt_tokens_b"]).fillna(0).to_numpy()
    edges = list(DEFAULT_LENGTH_EDGES)
    frame = pd.DataFrame(
        {
            "pid": s["pid"].to_numpy(),
            # Index of the bucket: how many edges the length reaches, as length_buckets counts.
            "bucket": np.searchsorted(edges, tokens, side="right"),
            "n": 1,
            "gain": (s["correct_r"] & ~s["correct_b"]).to_numpy(dtype=bool),
            "loss": (~s["correct_r"] & s["correct_b"]).to_numpy(dtype=bool),
        }
    )
    counts = frame.groupby(["pid", "bucket"]).sum()
    bounds = [0, *edges]
    out: dict[int, tuple[breakdown.BucketResult, ...]] = {}
    for pid in frame["pid"].unique():
        rows = []
        for i, low in enumerate(bounds):
            n = gain = loss = 0
            if (pid, i) in counts.index:
                row = counts.loc[(pid, i)]
                n, gain, loss = int(row["n"]), int(row["gain"]), int(row["loss"])
            high = bounds[i + 1] if i + 1 < len(bounds) else None
            delta = (gain - loss) / n if n else None
            rows.append(breakdown.BucketResult(low, high, n, gain, loss, delta))
        out[int(pid)] = tuple(rows)
    return out


def _length_rows(j: pd.DataFrame, scored: pd.Series) -> dict[int, list[tuple[int, bool, bool]]]:
    """(prompt tokens, run correct, baseline correct) of every scored pair, per pair id."""
    s = j[scored]
    tokens = s["prompt_tokens_r"].fillna(s["prompt_tokens_b"]).fillna(0).astype(int)
    out: dict[int, list[tuple[int, bool, bool]]] = defaultdict(list)
    for pid, t, r, b in zip(s["pid"], tokens, s["correct_r"], s["correct_b"], strict=True):
        out[int(pid)].append((int(t), bool(r), bool(b)))
    return out


def _flips(j: pd.DataFrame, scored: pd.Series) -> dict[int, list[Flip]]:
    s = j[scored & (j["correct_r"] != j["correct_b"])]
    out: dict[int, list[Flip]] = defaultdict(list)
    for row in s.itertuples(index=False):
        pid = int(row.pid)
        a, b = str(row.output_r or ""), str(row.output_b or "")
        out[pid].append(
            Flip(
                item_id=str(row.item_id),
                direction="wrong_to_correct" if row.correct_r else "correct_to_wrong",
                target=None if pd.isna(row.target_r) else str(row.target_r),
                run_output=a[:EXAMPLE_CHARS],
                baseline_output=b[:EXAMPLE_CHARS],
                first_difference=breakdown.first_difference(a, b),
            )
        )
    # Dataset order, as compare lists them; then keep the first MAX_FLIPS.
    return {pid: sorted(f, key=lambda x: _order(x.item_id))[:MAX_FLIPS] for pid, f in out.items()}


def _order(item_id: str) -> tuple[int, int | str]:
    return (0, int(item_id)) if item_id.isdigit() else (1, item_id)


def _is_scored(j: pd.DataFrame) -> pd.Series:
    ok = j["ok_r"].fillna(False).astype(bool) & j["ok_b"].fillna(False).astype(bool)
    return (j["_merge"] == "both") & ok


def _noise_floors(df: pd.DataFrame, groups: list[list[Run]]) -> dict[str, tuple[float | None, int]]:
    """Noise floor per baseline run id: mean discordance between its repeats (compare's)."""
    pairs: list[tuple[int, str, str]] = []
    owner: dict[int, int] = {}
    for g, runs in enumerate(groups):
        for i, a in enumerate(runs):
            for b in runs[i + 1 :]:
                owner[len(pairs)] = g
                pairs.append((len(pairs), a.run_id, b.run_id))
    floors: dict[int, list[stats.PairedTable]] = defaultdict(list)
    if pairs:
        for pid, row in _tables(_joined(df, pairs)).iterrows():
            table = _table(row)
            if table.n:
                floors[owner[int(pid)]].append(table)
    out: dict[str, tuple[float | None, int]] = {}
    for g, runs in enumerate(groups):
        floor = stats.noise_floor(floors[g]) if floors.get(g) else None
        for r in runs:
            out[r.run_id] = (floor if len(runs) >= 2 else None, len(runs))
    return out


def _table(row: Any) -> stats.PairedTable:
    return stats.PairedTable(
        int(row["both_correct"]),
        int(row["only_run"]),
        int(row["only_baseline"]),
        int(row["both_wrong"]),
    )


def load(
    store: Store, pairs: Mapping[str, str] | None = None, shard_period: int | None = None
) -> DashboardData:
    """Every run of ``store`` and every comparison the dashboard shows; ``shard_period``
    (tokens) overrides each run's own (dcp x interleave) for the shard-boundary panel."""
    runs = store.list_runs()
    finished = [r for r in runs if r.status == "finished"]
    cells, repeat_groups = _pair_runs(store, finished, _canonical_pairs(pairs))
    paired = [c for c in cells if c.baseline is not None]
    groups = [g for g in {_repeat_key(c.baseline): None for c in paired if c.baseline}]
    noise_groups = [repeat_groups[k] for k in groups if len(repeat_groups[k]) >= 2]
    needed = {c.run.run_id for c in paired} | {c.baseline.run_id for c in paired if c.baseline}
    needed |= {r.run_id for g in noise_groups for r in g}
    df = read_samples(store, needed)
    noise = _noise_floors(df, noise_groups)
    pair_rows = [(i, c.run.run_id, c.baseline.run_id) for i, c in enumerate(paired) if c.baseline]
    done: dict[str, Cell] = {c.run.run_id: c for c in cells}
    if pair_rows:
        j = _joined(df, pair_rows)
        scored = _is_scored(j)
        tables, buckets, flips = _tables(j), _buckets(j, scored), _flips(j, scored)
        lengths = _length_rows(j, scored)
        for pid, cell in enumerate(paired):
            assert cell.baseline is not None
            cell = _finish(cell, pid, tables, buckets, flips, noise)
            period = shard_period_of(cell.run, shard_period).period
            if period and period >= MIN_PERIOD and cell.result is not None:
                bgroups = tuple(breakdown.boundary_groups(lengths.get(pid, []), period))
                cell = replace(cell, shard_period=period, boundaries=bgroups)
            done[cell.run.run_id] = cell
    return DashboardData(runs=runs, cells=done)


def _finish(
    cell: Cell,
    pid: int,
    tables: pd.DataFrame,
    buckets: dict[int, tuple[breakdown.BucketResult, ...]],
    flips: dict[int, list[Flip]],
    noise: dict[str, tuple[float | None, int]],
) -> Cell:
    from dataclasses import replace

    assert cell.baseline is not None
    row = tables.loc[pid] if pid in tables.index else None
    excluded = {
        k: 0 if row is None else int(row[k])
        for k in ("missing_in_run", "missing_in_baseline", "error")
    }
    table = stats.PairedTable(0, 0, 0, 0) if row is None else _table(row)
    if table.n == 0:
        reason = f"shares no scored item with baseline {cell.baseline.run_id} ({excluded})"
        return replace(cell, reason=reason, excluded=excluded)
    floor, n_repeats = noise.get(cell.baseline.run_id, (None, 1))
    assert row is not None
    return replace(
        cell,
        result=stats.compare_table(table, noise_discordance=floor),
        agreement=int(row["same_output"]) / table.n,
        excluded=excluded,
        buckets=buckets.get(pid, ()),
        flips=tuple(flips.get(pid, [])),
        n_flips={"correct_to_wrong": table.only_baseline, "wrong_to_correct": table.only_run},
        noise_floor=floor,
        noise_repeats=n_repeats,
    )
