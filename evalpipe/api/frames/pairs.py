"""A comparison's paired items, and a pair's compared token positions, as DataFrames.

Both are computed by the comparison core, not beside it: the pair is found as ``evalpipe
compare`` finds it (:func:`evalpipe.api.comparing.pair_of`, the same pairing checks), items
are joined by :func:`evalpipe.compare.core.join` and token positions come from
:func:`evalpipe.compare.tokens.positions.collect`, so the 2×2 table of the pairs frame and the mean
KL of the tokens frame are compare's own. This module is the frames' only user of the
token-level modules (``compare/tokens/``: three names, imported where used).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalpipe.api.frames.columns import PAIR_COLUMNS, TOKEN_COLUMNS, frame, pandas
from evalpipe.api.frames.select import Location, reading
from evalpipe.errors import EvalpipeError
from evalpipe.records import Run

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from evalpipe.api.frames.columns import DataFrame
    from evalpipe.compare.core import Answer
    from evalpipe.compare.tokens.positions import Positions
    from evalpipe.store import Store

    IntArray = npt.NDArray[np.int64]

PATH_NAMES = ("decode", "forced-decode", "forced")
"""The token-level paths, as :data:`evalpipe.compare.tokens.types.PATHS` names them."""


@dataclass(frozen=True)
class Pair:
    """A run and its baseline, read from an open store, with compare's shard period."""

    store: Store
    run: Run
    baseline: Run
    period: int | None
    warnings: tuple[str, ...]

    def attrs(self) -> dict[str, Any]:
        """What a frame of this pair carries in ``df.attrs``."""
        return {
            "run_id": self.run.run_id,
            "baseline_id": self.baseline.run_id,
            "shard_period": self.period,
            "warnings": list(self.warnings),
        }


@contextmanager
def open_pair(
    store: Location,
    run: str,
    baseline: str | None,
    baseline_layout: str | None,
    shard_period: int | None,
    force: bool,
) -> Iterator[Pair]:
    """The pair ``evalpipe compare RUN [--baseline B] [--baseline-layout L]`` would compare,
    refused as it refuses a pair that answered different questions (unless ``force``)."""
    from evalpipe.api.comparing import pair_of
    from evalpipe.compare.runs import pairing_warnings, shard_period_of

    with reading(store) as s:
        r, b = pair_of(s, run, baseline, baseline_layout)
        warnings = pairing_warnings(r, b, force)
        yield Pair(s, r, b, shard_period_of(r, shard_period).period, tuple(warnings))


def boundaries(lengths: IntArray, period: int | None) -> dict[str, npt.NDArray[Any]]:
    """The nearest shard boundary ``k·period`` (k ≥ 1) of each length, the signed distance to
    it and whether that is within :data:`~evalpipe.compare.breakdown.NEAR_BOUNDARY` tokens;
    all missing without a period."""
    import numpy as np

    from evalpipe.compare.breakdown import NEAR_BOUNDARY
    from evalpipe.compare.tokens.loc import boundary_offsets

    if period is None:
        none = np.full(len(lengths), None, dtype=object)
        return {"boundary": none, "boundary_offset": none, "near_boundary": none}
    offsets = boundary_offsets(lengths, period)
    return {
        "boundary": lengths - offsets,
        "boundary_offset": offsets,
        "near_boundary": np.abs(offsets) <= NEAR_BOUNDARY,
    }


def pairs_frame(
    store: Location,
    run: str,
    baseline: str | None = None,
    *,
    baseline_layout: str | None = None,
    shard_period: int | None = None,
    force: bool = False,
) -> DataFrame:
    """One row per item that ``evalpipe compare RUN`` scores (both sides answered), in dataset
    order: both answers, both verdicts, the flip, the first difference, the prompt's length
    and where it falls against the shard boundaries (columns and dtypes:
    :data:`~evalpipe.api.frames.columns.PAIR_COLUMNS`). The baseline is found as compare
    finds it; ``shard_period`` overrides the layout's. ``df.attrs`` holds the run ids, the
    shard period, the items left out by reason (``excluded``) and pairing ``warnings``.

    Example::

        pairs = pairs_frame("evalpipe.db", "20261128-065414-3f2a9c")
        pd.crosstab(pairs.run_correct, pairs.baseline_correct)   # compare's 2×2 table
        pairs[pairs.flip.notna()]
    """
    from evalpipe.compare.core import Answer, join
    from evalpipe.store.answers import ANSWER_FIELDS, read_answers

    fields = ANSWER_FIELDS[: ANSWER_FIELDS.index("extracted") + 1]

    def answer(*values: Any) -> tuple[Answer, str]:
        # The extracted answers stay their stored JSON text, as a frame shows them.
        return Answer(*values[:-1]), values[-1]

    pandas()
    with open_pair(store, run, baseline, baseline_layout, shard_period, force) as pair:
        r, b = pair.run.run_id, pair.baseline.run_id
        found = read_answers(pair.store, [r, b], answer, fields, parse_json=False)
    extracted = {(rid, i): a[1] for rid in (r, b) for i, a in found[rid].items()}
    joined, excluded = join(*({i: a[0] for i, a in found[rid].items()} for rid in (r, b)))
    df = frame(PAIR_COLUMNS, _pair_columns(pair, joined, extracted))
    df.attrs.update(pair.attrs(), excluded=dict(excluded))
    return df


def _pair_columns(
    pair: Pair,
    joined: Sequence[tuple[Answer, Answer]],
    extracted: Mapping[tuple[str, str], str],
) -> dict[str, Any]:
    import numpy as np

    from evalpipe.compare.breakdown import first_difference
    from evalpipe.compare.core import flip_direction, prompt_length

    runs, bases = [a for a, _ in joined], [b for _, b in joined]
    diffs = [first_difference(a.output, b.output) for a, b in joined]
    lengths = [prompt_length(a, b) for a, b in joined]
    known = np.asarray([t if t is not None else 0 for t in lengths], dtype=np.int64)
    where = boundaries(known, pair.period)
    missing = np.asarray([t is None for t in lengths], dtype=bool)
    return {
        "run_id": [pair.run.run_id] * len(joined),
        "baseline_id": [pair.baseline.run_id] * len(joined),
        "item_id": [a.item_id for a in runs],
        "target": [a.target if a.target is not None else b.target for a, b in joined],
        "run_correct": [a.correct for a in runs],
        "baseline_correct": [b.correct for b in bases],
        "flip": [flip_direction(a) if a.correct != b.correct else None for a, b in joined],
        "run_extracted": [extracted[(pair.run.run_id, a.item_id)] for a in runs],
        "baseline_extracted": [extracted[(pair.baseline.run_id, b.item_id)] for b in bases],
        "run_output": [a.output for a in runs],
        "baseline_output": [b.output for b in bases],
        "same_output": [d is None for d in diffs],
        "first_difference": diffs,
        "prompt_tokens": lengths,
        "shard_period": [pair.period] * len(joined),
        **{name: _unless(missing, values) for name, values in where.items()},
    }


def _unless(missing: npt.NDArray[np.bool_], values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    out = values.astype(object)
    out[missing] = None
    return out


def tokens_frame(
    store: Location,
    run: str,
    baseline: str | None = None,
    *,
    baseline_layout: str | None = None,
    shard_period: int | None = None,
    paths: str | Sequence[str] = PATH_NAMES,
    force: bool = False,
) -> DataFrame:
    """One row per token position that ``evalpipe compare RUN`` compares token by token, per
    path (``decode``: each side's own generation over their common prefix and the position
    where they part; ``forced``: every teacher-forced position): KL(baseline ‖ run),
    |Δ logprob|, top-1 agreement, the position in the whole sequence and against the shard
    period (columns and dtypes: :data:`~evalpipe.api.frames.columns.TOKEN_COLUMNS`).
    ``df.attrs`` also says why a path is absent (``unavailable``) and how many items each
    path left out (``skipped_items``). The per-path mean of ``kl`` is compare's mean KL.

    Example::

        tokens = tokens_frame("evalpipe.db", "20261128-065414-3f2a9c", shard_period=128)
        tokens[tokens.path == "decode"].groupby("residue").kl.mean()
    """
    wanted = (paths,) if isinstance(paths, str) else tuple(paths)
    unknown = [p for p in wanted if p not in PATH_NAMES]
    if unknown or not wanted:
        raise EvalpipeError(
            f"unknown token path {', '.join(map(repr, unknown)) or '(none given)'}: "
            f"give one or both of {', '.join(PATH_NAMES)}"
        )
    import numpy as np

    pandas()
    with open_pair(store, run, baseline, baseline_layout, shard_period, force) as pair:
        found, unavailable = _read_positions(pair, wanted)
    parts = [_token_columns(pair, path, pos, starts) for path, (pos, starts) in found.items()]
    df = frame(
        TOKEN_COLUMNS, {name: np.concatenate([p[name] for p in parts]) for name in TOKEN_COLUMNS}
    )
    df.attrs.update(
        pair.attrs(),
        unavailable=unavailable,
        skipped_items={path: pos.skipped for path, (pos, _) in found.items()},
    )
    return df


def _read_positions(
    pair: Pair, wanted: Sequence[str]
) -> tuple[dict[str, tuple[Positions, IntArray]], dict[str, str]]:
    """Per path asked for and stored on both sides: the compared positions (and each item's
    start); per path asked for but not stored, why. Refuses when no path is left."""
    import numpy as np

    from evalpipe.compare.tokens.positions import collect
    from evalpipe.compare.tokens.runs import path_source
    from evalpipe.compare.tokens.types import PATHS
    from evalpipe.store.traces import read_traces, trace_sources

    r, b = pair.run, pair.baseline
    if r.config.model_fingerprint != b.config.model_fingerprint:
        raise EvalpipeError(
            f"runs {r.run_id} and {b.run_id} ran different models ({r.config.model_fingerprint}"
            f" vs {b.config.model_fingerprint}): token ids of different tokenizers are never "
            "compared"
        )
    sources = {x.run_id: trace_sources(pair.store, x.run_id) for x in (r, b)}
    found: dict[str, tuple[Positions, IntArray]] = {}
    unavailable: dict[str, str] = {}
    for path in (p for p in PATHS if p in wanted):
        source = path_source(path, b.run_id)
        lacking = [f"{x.config.layout} run {x.run_id}" for x in (r, b)
                   if not sources[x.run_id].get(source)]  # fmt: skip
        if lacking:
            unavailable[path] = f"{' and '.join(lacking)}: " + (
                "no token logprobs (run with --logprobs 5)"
                if path == "decode"
                else f"no {path} traces (`evalpipe score {r.run_id} --against {b.run_id} --path "
                f"{'forced-decode' if path == 'forced-decode' else 'prefill'}`)"
            )
            continue
        base = read_traces(pair.store, b.run_id, source)
        other = read_traces(pair.store, r.run_id, source)
        pairs = {i: (base[i], other[i]) for i in sorted(base.keys() & other.keys())}
        pos = collect(path, pairs)
        found[path] = (pos, np.asarray([pairs[i][0].start for i in pos.item_ids], np.int64))
    if not found:
        raise EvalpipeError(
            f"run {r.run_id} and baseline {b.run_id} have no token positions to compare: "
            + "; ".join(unavailable.values())
        )
    return found, unavailable


def _token_columns(
    pair: Pair, path: str, pos: Positions, starts: IntArray
) -> dict[str, npt.NDArray[Any]]:
    import numpy as np

    n, period = int(pos.items.size), pair.period
    where = boundaries(pos.positions, period)

    def same(value: object) -> npt.NDArray[Any]:
        return np.full(n, value, dtype=object)

    return {
        "run_id": same(pair.run.run_id),
        "baseline_id": same(pair.baseline.run_id),
        "path": same(path),
        "item_id": np.asarray(pos.item_ids, dtype=object)[pos.items],
        "position": pos.positions,
        "token_index": pos.positions - starts[pos.items],
        "residue": same(None) if period is None else pos.positions % period,
        "boundary_offset": where["boundary_offset"],
        "near_boundary": where["near_boundary"],
        "kl": pos.values["kl"],
        "abs_dlogprob": pos.values["abs_dlogprob"],
        "top1_agree": pos.values["top1_disagree"] == 0,
        "divergent": pos.divergent,
    }
