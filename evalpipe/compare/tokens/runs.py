"""The token-level comparison of two stored runs: their traces read from the store, paired by
item, handed to :mod:`evalpipe.compare.tokens.stats` for each path both runs have.

- ``decode``: each run's own generation (``--logprobs``), floor = the baseline against a
  repeat of itself;
- ``forced``: both engines scoring the baseline's tokens (``evalpipe score RUN --against
  BASELINE``), floor = a baseline repeat scoring the same tokens.

A path one side lacks is not compared; ``unavailable`` says which side and the command that
fills it. Runs of different models (model fingerprints: weights and tokenizer) are never
compared token by token: their token ids do not mean the same thing.

τ comes from a :class:`~evalpipe.compare.tokens.verdict.TokenMargin`: per path, or a factor
of a reference pair's upper bounds (:func:`reference_comparison`: a known-benign change of
the same model and task, compared the same way). Both paths are decided together, Holm over
the two (:func:`evalpipe.compare.tokens.verdict.holm_paths`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from evalpipe.compare.tokens.stats import compare_path
from evalpipe.compare.tokens.types import (
    PATHS,
    Path,
    PathComparison,
    TokenComparison,
    Tolerance,
)
from evalpipe.compare.tokens.verdict import TokenMargin, holm_paths, tolerances
from evalpipe.errors import EvalpipeError
from evalpipe.records import Run
from evalpipe.store import Store
from evalpipe.store.traces import read_traces, trace_sources
from evalpipe.traces import DECODE, StoredTrace, forced_source

Pairs = dict[str, tuple[StoredTrace, StoredTrace]]


def token_comparison(
    store: Store,
    run: Run,
    baseline: Run,
    *,
    floor_runs: Sequence[Run] = (),
    period: int | None = None,
    alpha: float = 0.05,
    margin: TokenMargin | None = None,
    reference: tuple[TokenComparison | str, str] | None = None,
) -> TokenComparison | None:
    """``run`` against ``baseline`` token by token; None when neither has any trace.

    ``floor_runs`` are the baseline's repeats (the baseline itself among them or not): the
    first other one with traces on a path sets that path's noise floor. ``margin`` gives τ
    (default: :data:`~evalpipe.compare.tokens.verdict.DEFAULT_TOKEN_MARGIN`); a relative one
    reads ``reference``: the reference pair's comparison (a text: why there is none) and its
    label.
    """
    sources = {r.run_id: trace_sources(store, r.run_id) for r in (run, baseline)}
    if not any(sources.values()):
        return None
    if run.config.model_fingerprint != baseline.config.model_fingerprint:
        why = (
            f"the runs' models differ ({run.config.model_fingerprint} vs "
            f"{baseline.config.model_fingerprint}): token ids of different tokenizers are "
            "never compared"
        )
        return TokenComparison(
            run.run_id, baseline.run_id, period, unavailable=dict.fromkeys(PATHS, why)
        )
    repeats = [r for r in floor_runs if r.run_id not in (run.run_id, baseline.run_id)]
    ref, label = reference if reference is not None else (None, "")
    taus = tolerances(margin or TokenMargin(), ref, label)
    paths: dict[Path, PathComparison] = {}
    unavailable: dict[Path, str] = {}
    for path, source in ((p, path_source(p, baseline.run_id)) for p in PATHS):
        missing = _missing(path, source, run, baseline, sources, store.location.flag)
        if missing:
            unavailable[path] = missing
        else:
            paths[path] = _compare(
                store, path, source, (baseline, run), repeats, period, alpha, taus[path]
            )
    (decided,) = holm_paths(
        [TokenComparison(run.run_id, baseline.run_id, period, paths, unavailable)]
    )
    assert decided is not None
    return decided


def reference_comparison(
    store: Store,
    run: Run,
    reference: Run,
    reference_baseline: Run,
    *,
    floor_runs: Sequence[Run] = (),
    period: int | None = None,
    alpha: float = 0.05,
) -> tuple[TokenComparison | str, str]:
    """The reference pair's token comparison (at the default τ: only its bounds are used; a
    text when it has no traces) and its label; refused, by name, when it is not of ``run``'s
    model and task."""
    label = (
        f"{reference.config.layout} run {reference.run_id} vs {reference_baseline.config.layout}"
        f" run {reference_baseline.run_id}"
    )
    for other in (reference, reference_baseline):
        same_model = other.config.model_fingerprint == run.config.model_fingerprint
        if other.config.task != run.config.task or not same_model:
            raise EvalpipeError(
                f"the reference pair {label} is of model {other.config.model!r}, task "
                f"{other.config.task!r}; run {run.run_id} is of model {run.config.model!r}, "
                f"task {run.config.task!r}: a relative token margin needs a known-benign "
                "change of the same model and task (e.g. a tp2 run against its tp1 baseline)",
                exit_code=2,
            )
    found = token_comparison(
        store, reference, reference_baseline, floor_runs=floor_runs, period=period, alpha=alpha
    )
    if found is None:
        return f"the reference pair {label} has no token traces: rerun it with --logprobs 5", label
    return found, label


def path_source(path: Path, baseline_id: str) -> str:
    """The trace ``source`` both sides of ``path`` are read from: each run's own generation,
    or the baseline's tokens forced on the decode path or through prefill."""
    if path == "decode":
        return DECODE
    return forced_source(baseline_id, "forced-decode" if path == "forced-decode" else "prefill")


def _missing(
    path: Path,
    source: str,
    run: Run,
    baseline: Run,
    sources: Mapping[str, Mapping[str, int]],
    store_flag: str = "",
) -> str | None:
    """Why ``path`` cannot be compared, naming the side(s) that lack traces, or None; a
    command it suggests finds the store again with ``store_flag``."""
    lacking = [r for r in (run, baseline) if not sources[r.run_id].get(source)]
    if not lacking:
        return None
    names = " and ".join(f"{r.config.layout} run {r.run_id}" for r in lacking)
    has, it = ("have", "them") if len(lacking) > 1 else ("has", "it")
    if path == "decode":
        return f"{names} {has} no token logprobs: rerun {it} with --logprobs 5"
    if not sources[baseline.run_id].get(DECODE):
        # Scoring needs the baseline's own tokens: `score` refuses a baseline without them.
        return (
            f"{names} {has} no teacher-forced traces, and baseline {baseline.run_id} has no "
            "token logprobs of its own to force: rerun the baseline with --logprobs 5 first"
        )
    servers = "".join(
        f" {flag} {shlex.quote(url)}"
        for flag, r in (("--endpoint", run), ("--baseline-endpoint", baseline))
        if (url := _served_at(r)) is not None
    )
    how = "forced-decode" if path == "forced-decode" else "prefill"
    return (
        f"{names} {has} no {how} traces of the baseline's tokens: run `evalpipe "
        f"score {run.run_id} --against {baseline.run_id} --path {how}{servers}{store_flag}`"
    )


def _served_at(run: Run) -> str | None:
    """The server a run made on an endpoint was served by (``score`` cannot re-create an
    engine it never started), or None."""
    engine = run.provenance.get("engine")
    url = engine.get("base_url") if isinstance(engine, Mapping) else None
    return url if run.config.engine_kind == "endpoint" and isinstance(url, str) else None


def _compare(
    store: Store,
    path: Path,
    source: str,
    sides: tuple[Run, Run],
    repeats: Sequence[Run],
    period: int | None,
    alpha: float,
    tolerance: Tolerance | str,
) -> PathComparison:
    baseline, run = sides
    base = read_traces(store, baseline.run_id, source)
    pairs = _pairs(base, read_traces(store, run.run_id, source))
    floor = None
    for repeat in repeats:
        found = read_traces(store, repeat.run_id, source)
        if found:
            floor = _pairs(base, found)
            break
    return compare_path(path, pairs, period=period, floor=floor, alpha=alpha, tolerance=tolerance)


def _pairs(base: Mapping[str, StoredTrace], other: Mapping[str, StoredTrace]) -> Pairs:
    return {item: (base[item], other[item]) for item in sorted(base.keys() & other.keys())}
