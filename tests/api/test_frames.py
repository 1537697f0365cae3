"""The DataFrame readers on both stores (SQLite and a real PostgreSQL): their columns and
dtypes, and figures that match `evalpipe compare`'s own (the 2×2 table, flips, boundary
groups; per path the mean KL, |Δ logprob| and top-1 agreement, the residue bins)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from token_fixtures import add_traced_run, token_trace

from evalpipe import api
from evalpipe.api.frames import PAIR_COLUMNS, RUN_COLUMNS, SAMPLE_COLUMNS, TOKEN_COLUMNS
from evalpipe.compare.tokens.types import PATHS
from evalpipe.errors import EvalpipeError
from evalpipe.records import Run
from evalpipe.store import open_store
from evalpipe.store.traces import put_traces
from evalpipe.traces import StoredTrace

N = 40
LENGTHS = [100 + 6 * i for i in range(N + 1)]  # 100…340: across the boundaries 128 and 256
BASE, REPEAT, RUN = "20261130-000000-base01", "20261130-000100-rep001", "20261130-010000-cp0001"


@pytest.fixture
def store(store_url: str) -> str:
    """Each test on SQLite and on PostgreSQL (``store_url`` in conftest.py)."""
    return store_url


def build(store: str) -> dict[str, Run]:
    """A tp2 run, its tp1 baseline (one item more) and a repeat of it, with decode traces
    (the run's drift, some generations parting) and forced traces of the baseline's tokens;
    the run flips items 2, 3, 7 and 11 (both ways), item 5 errors."""
    base_ok = [i % 4 != 3 for i in range(N + 1)]
    flipped = (2, 3, 7, 11)
    run_ok: list[bool | None] = [not ok if i in flipped else ok for i, ok in enumerate(base_ok)]
    run_ok[5] = None
    run_ok = run_ok[:N]
    with open_store(store) as s:
        made = {
            "base": add_traced_run(
                s, BASE, "tp1", base_ok, prompt_tokens=LENGTHS,
                traces={str(i): token_trace(i, 60) for i in range(N + 1)},
            ),
            "repeat": add_traced_run(
                s, REPEAT, "tp1", base_ok, prompt_tokens=LENGTHS, repeat_index=1,
                started_at="2026-11-30T00:01:00+00:00",
                traces={str(i): token_trace(i, 60, shift=0.01, seed=2) for i in range(N + 1)},
            ),
            "run": add_traced_run(
                s, RUN, "tp2", run_ok, prompt_tokens=LENGTHS, tags=("rc1",),
                started_at="2026-11-30T01:00:00+00:00",
                traces={
                    str(i): token_trace(i, 60, shift=0.2, seed=1,
                                        diverge_at=20 + i if i % 3 == 0 else None)
                    for i in range(N)
                },
            ),
        }  # fmt: skip
        put_traces(
            s,
            [
                StoredTrace(rid, str(i), BASE, LENGTHS[i], token_trace(i, 60, shift=shift, seed=3))
                for rid, shift in ((BASE, 0.0), (RUN, 0.15))
                for i in range(N)
            ],
        )
    return made


def dtypes(df: pd.DataFrame) -> dict[str, str]:
    return {name: str(dtype) for name, dtype in df.dtypes.items()}


def test_every_frame_has_its_documented_columns_and_dtypes(store: str) -> None:
    build(store)
    frames = {
        "runs": (api.runs_frame(store), RUN_COLUMNS, 3),
        "samples": (api.samples_frame(store), SAMPLE_COLUMNS, 3 * N + 2),
        "pairs": (api.pairs_frame(store, RUN, baseline_layout="tp1"), PAIR_COLUMNS, N - 1),
        "tokens": (api.tokens_frame(store, RUN, BASE), TOKEN_COLUMNS, None),
    }
    for name, (df, schema, rows) in frames.items():
        assert dtypes(df) == dict(schema), name
        assert rows is None or len(df) == rows, name
    assert set(dtypes(frames["runs"][0]).values()) == {
        "string", "datetime64[ns, UTC]", "Int64", "int64", "float64"
    }  # fmt: skip
    runs = frames["runs"][0]
    assert list(runs.run_id) == [RUN, REPEAT, BASE]  # newest first
    cp = runs.iloc[0]
    assert cp.layout == "tp2" and json.loads(cp.tags) == ["rc1"] and cp.vllm_version == "0.32.0"
    assert json.loads(cp.engine_args) == {"tensor_parallel_size": 8}
    assert cp.started_at == pd.Timestamp("2026-11-30T01:00:00Z") and pd.isna(cp.finished_at)
    assert cp.n_errors == 1 and pd.isna(cp.shard_period) and pd.isna(cp["limit"])
    assert cp.request_order == "dataset" and pd.isna(cp.fault)


def test_samples_in_dataset_order_with_errors_unscored(store: str) -> None:
    build(store)
    with open_store(store) as opened:  # many frames over one open store, left open
        runs = api.runs_frame(opened)
        samples = api.samples_frame(opened, runs.run_id)
        assert len(api.pairs_frame(opened, RUN, BASE)) == N - 1
        assert len(opened.list_runs()) == 3
    run = samples[samples.run_id == RUN]
    assert list(run.item_id) == [str(i) for i in range(N)]  # 2 before 10
    errored = run[run.item_id == "5"].iloc[0]
    assert not errored.ok and pd.isna(errored.correct) and pd.isna(errored.output)
    assert errored.error == "HTTP 500: boom"
    assert json.loads(run.iloc[0].extracted) == {"strict": "0"} and run.iloc[0].prompt_tokens == 100
    # The runs' accuracies are the samples' verdicts, errors left out.
    accuracy = samples.groupby("run_id").correct.mean()
    for r in runs.itertuples():
        assert accuracy[r.run_id] == pytest.approx(r.accuracy)


def test_the_pairs_frame_is_compares_table_flips_and_boundary_groups(store: str) -> None:
    build(store)
    (c,) = api.compare(store, [RUN], baseline_layout="tp1", shard_period=128)
    pairs = api.pairs_frame(store, RUN, baseline_layout="tp1", shard_period=128)
    assert set(pairs.baseline_id) == {BASE} and set(pairs.shard_period) == {128}
    table = pd.crosstab(pairs.run_correct, pairs.baseline_correct)
    r = c.result
    assert [table.loc[True, True], table.loc[True, False], table.loc[False, True],
            table.loc[False, False]] == [r.both_correct, r.only_run, r.only_baseline,
                                         r.both_wrong]  # fmt: skip
    assert {d: len(items) for d, items in c.flips.items()} == {
        "correct_to_wrong": 1, "wrong_to_correct": 3
    }  # fmt: skip
    for direction, items in c.flips.items():
        assert tuple(pairs[pairs.flip == direction].item_id) == items
    assert pairs.attrs["excluded"] == dict(c.excluded) == {
        "missing_in_run": 1, "missing_in_baseline": 0, "error": 1
    }  # fmt: skip
    assert tuple(pairs.first_difference.dropna()) == c.first_difference_chars
    assert pairs.same_output.mean() == pytest.approx(c.agreement)
    assert c.boundaries, "the lengths straddle the boundaries"
    for g in c.boundaries:
        at = pairs[
            (pairs.boundary == g.boundary)
            & pairs.boundary_offset.between(g.offset_low, g.offset_high)
        ]
        assert (len(at), int((at.run_correct & ~at.baseline_correct).sum())) == (g.n, g.only_run)
    assert set(pairs.near_boundary) == {True, False}
    flips = pairs.set_index("item_id")
    for f in c.flip_examples:
        assert flips.loc[f.item_id, "first_difference"] == f.first_difference
        assert flips.loc[f.item_id, "run_output"].startswith(f.run_output)


def test_the_tokens_frame_is_compares_token_figures_path_by_path(store: str) -> None:
    build(store)
    (c,) = api.compare(store, [RUN], baseline_layout="tp1", shard_period=128)
    tokens = api.tokens_frame(store, RUN, baseline_layout="tp1", shard_period=128)
    # The store has decode and prefill traces; no forced-decode ones were scored.
    assert c.tokens is not None and set(c.tokens.paths) == {"decode", "forced"} == set(tokens.path)
    assert set(PATHS) == {*c.tokens.paths, *c.tokens.unavailable}
    for path, p in c.tokens.paths.items():
        t = tokens[tokens.path == path]
        assert (len(t), t.item_id.nunique()) == (p.n_tokens, p.n_items)
        assert t.kl.mean() == pytest.approx(p.metrics["kl"].mean, rel=1e-9)
        assert t.abs_dlogprob.mean() == pytest.approx(p.metrics["abs_dlogprob"].mean, rel=1e-9)
        assert 1 - t.top1_agree.mean() == pytest.approx(p.metrics["top1_disagree"].mean)
        assert tuple(sorted(t[t.divergent].position)) == p.first_divergence
        bins = t.groupby(t.residue * 8 // 128).kl.mean()
        assert list(bins) == pytest.approx([b.mean for b in p.by_residue], rel=1e-9)
        assert (t.position - t.token_index).isin(LENGTHS).all()
        assert (t.residue == t.position % 128).all()
    decode = tokens[tokens.path == "decode"]
    assert decode.divergent.sum() == 14 and decode.kl.max() > 0
    assert (
        set(tokens.attrs["unavailable"]) == {"forced-decode"}
        and tokens.attrs["skipped_items"]["decode"] == 0
    )


def test_filters_select_runs_and_nothing_matched_is_an_empty_frame(store: str) -> None:
    made = build(store)
    with open_store(store) as s:
        other = add_traced_run(
            s, "20261101-000000-gsm001", "dp2tp8dcp8", [True, False], task="arith",
            model="/models/gemma3-270m", started_at="2026-11-01T00:00:00+00:00", tags=("rc1",),
        )  # fmt: skip
    cases = {
        "tags": ({"tags": "rc1"}, {RUN, other.run_id}),
        "model basename": ({"model": "gemma3-270m"}, {other.run_id}),
        "model path": ({"model": ["/models/m"]}, {RUN, REPEAT, BASE}),
        "layout spelling": ({"layout": ["DCP8TP8DP2", "tp2"]}, {other.run_id, RUN}),
        "task and status": ({"task": "gsm8k", "status": "finished"}, {RUN, REPEAT, BASE}),
        "since": ({"since": "2026-11-30T00:00:30"}, {RUN, REPEAT}),
        "until a date": ({"until": "2026-11-30"}, {other.run_id}),
        "ids and a filter": ({"run_ids": [RUN[:12], BASE], "layout": "tp1"}, {BASE}),
    }
    for name, (kwargs, expected) in cases.items():
        assert set(api.runs_frame(store, **kwargs).run_id) == expected, name  # type: ignore[arg-type]
    shard = api.runs_frame(store, other.run_id).shard_period.iloc[0]
    assert shard == 8  # dcp8 on CUDA, interleave 1
    empty_runs = api.runs_frame(store, task="passkey")
    empty_samples = api.samples_frame(store, layout="tp8", since="2027-01-01")
    assert empty_runs.empty and dtypes(empty_runs) == dict(RUN_COLUMNS)
    assert empty_samples.empty and dtypes(empty_samples) == dict(SAMPLE_COLUMNS)
    assert len(api.samples_frame(store, made["run"].run_id)) == N
    # The ids of an empty frame select no runs, not every run.
    assert api.samples_frame(store, empty_runs.run_id).empty


def test_unknown_ambiguous_and_bad_selections_are_named(store: str) -> None:
    build(store)
    with pytest.raises(EvalpipeError, match=r"no run 'nope', 'zzz' in .*runs list"):
        api.samples_frame(store, ["nope", RUN, "zzz"])
    with pytest.raises(EvalpipeError, match=r"ambiguous run id '20261130-0' starts"):
        api.runs_frame(store, "20261130-0")
    with pytest.raises(EvalpipeError, match="unknown run status 'done'"):
        api.runs_frame(store, status="done")
    with pytest.raises(EvalpipeError, match="since 'last week' is not a date"):
        api.runs_frame(store, since="last week")
    with pytest.raises(EvalpipeError, match="no run 'nope'"):
        api.pairs_frame(store, "nope")
    with pytest.raises(EvalpipeError, match="unknown token path 'prefill'"):
        api.tokens_frame(store, RUN, BASE, paths=["decode", "prefill"])


def test_tokens_frame_paths_and_why_a_pair_has_none(store: str) -> None:
    build(store)
    forced = api.tokens_frame(store, RUN, BASE, paths="forced")
    assert set(forced.path) == {"forced"} and not forced.divergent.any()
    with open_store(store) as s:
        plain = add_traced_run(s, "20261130-020000-plain1", "tp2", [True] * N)
        other = add_traced_run(
            s, "20261130-030000-other1", "tp2", [True] * N, model_fingerprint="sha256:def",
            traces={"0": token_trace(0, 10)},
        )  # fmt: skip
    with pytest.raises(EvalpipeError, match=r"no token logprobs \(run with --logprobs 5\)"):
        api.tokens_frame(store, plain.run_id, BASE, paths="decode")
    with pytest.raises(EvalpipeError, match="never compared"):
        api.tokens_frame(store, other.run_id, BASE, force=True)
    only_decode = api.tokens_frame(store, REPEAT, BASE)
    assert set(only_decode.path) == {"decode"}
    assert "evalpipe score" in only_decode.attrs["unavailable"]["forced"]


def test_pairs_sharing_no_scored_item_give_an_empty_frame(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    with open_store(db) as s:
        add_traced_run(s, BASE, "tp1", [None, None])
        add_traced_run(s, RUN, "tp2", [True, False])
    pairs = api.pairs_frame(db, RUN, BASE)
    assert pairs.empty and dtypes(pairs) == dict(PAIR_COLUMNS)
    assert pairs.attrs["excluded"]["error"] == 2
    assert np.array_equal(pairs.columns, list(PAIR_COLUMNS))
