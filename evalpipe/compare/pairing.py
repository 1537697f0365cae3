"""Pair a run with its baseline run and compare them question by question.

Pairing is strict on purpose: two runs pair only when everything that can move an answer is
equal except the layout — model bytes, task version and rendered prompts, data, sampling and
seed, engine versions, and the batching settings (batch makeup changes greedy outputs: on the
CPU engine the same 32 GSM8K prompts gave 2 951 output tokens with all requests in flight and
3 636 one at a time). The statistics themselves are in :mod:`evalpipe.compare.stats`.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evalpipe import layout as shards
from evalpipe.compare import stats
from evalpipe.errors import EvalpipeError
from evalpipe.layout import parse
from evalpipe.records import Run, Sample
from evalpipe.store import Store

# Flags that describe the layout itself (or follow from it); every other engine argument —
# dtype, quantization, KV-cache dtype, batching — must match for two runs to pair.
LAYOUT_FLAGS = {
    "--tensor-parallel-size": 1,
    "--data-parallel-size": 1,
    "--pipeline-parallel-size": 1,
    "--decode-context-parallel-size": 1,
    "--prefill-context-parallel-size": 1,
    "--enable-expert-parallel": 0,
    "--distributed-executor-backend": 1,
}
DEFAULT_LENGTH_EDGES = (512, 768, 1024, 2048)
EXAMPLE_CHARS = 2000


def non_layout_args(run: Run) -> list[str]:
    """The run's engine arguments without the layout's own flags (and their values)."""
    args = list(run.config.engine_args)
    out: list[str] = []
    i = 0
    while i < len(args):
        skip = LAYOUT_FLAGS.get(args[i])
        if skip is None:
            out.append(args[i])
            i += 1
        else:
            i += 1 + skip
    return out


def pairing_key(run: Run) -> dict[str, Any]:
    """Everything that must be equal, other than the layout, for two runs to pair."""
    c = run.config
    return {
        "model_fingerprint": c.model_fingerprint,
        "task": c.task,
        "task_version": c.task_version,
        "prompt_hash": c.prompt_hash,
        "data_sha256": c.data_sha256,
        "sampling": dict(c.sampling),
        "seed": c.seed,
        "engine_versions": dict(c.engine_versions),
        "concurrency": c.concurrency,
        "engine_args": non_layout_args(run),
    }


def key_differences(a: Run, b: Run) -> list[str]:
    ka, kb = pairing_key(a), pairing_key(b)
    return [f"{k}: {ka[k]!r} vs {kb[k]!r}" for k in ka if ka[k] != kb[k]]


# Fields whose mismatch makes a comparison meaningless rather than merely noisier.
_HARD_KEYS = ("task", "prompt_hash", "data_sha256", "model_fingerprint")


def _hard_differences(a: Run, b: Run) -> list[str]:
    ka, kb = pairing_key(a), pairing_key(b)
    return [
        _prompts_differ(a, b) if k == "prompt_hash" else f"{k}: {ka[k]!r} vs {kb[k]!r}"
        for k in _HARD_KEYS
        if ka[k] != kb[k]
    ]


def _prompts_differ(a: Run, b: Run) -> str:
    """Why two runs' prompts differ, in words: which harness and task rendered each."""
    return (
        f"prompts differ: {_prompt_source(a)} vs {_prompt_source(b)} "
        f"(prompt_hash {a.config.prompt_hash[:12]} vs {b.config.prompt_hash[:12]})"
    )


def _prompt_source(run: Run) -> str:
    # Importers record provenance["importer"] (and "n_shot" when the harness says).
    importer = run.provenance.get("importer")
    if not importer:
        return f"evalpipe task {run.config.task}"
    name = run.config.task.partition(":")[2] or run.config.task
    shots = run.provenance.get("n_shot")
    return f"{importer} task {name}" + (f" ({shots}-shot)" if isinstance(shots, int) else "")


def baseline_layout(run: Run, override: str | None = None) -> str:
    if override:
        return parse(override).canonical
    layout = parse(run.config.layout)
    if not layout.is_cp:
        raise EvalpipeError(
            f"run {run.run_id} has layout {layout.canonical}, which is not context-parallel, so "
            "it has no automatic baseline; pass --baseline RUN_ID or --baseline-layout L "
            "(e.g. --baseline-layout tp1 to compare tp2 with tp1)"
        )
    return layout.baseline().canonical


def find_baseline(store: Store, run: Run, layout_override: str | None = None) -> Run:
    """The latest finished run that pairs with ``run`` on ``baseline_layout(run)``."""
    wanted = baseline_layout(run, layout_override)
    candidates = [
        r
        for r in store.list_runs(task=run.config.task, status="finished")
        if r.config.layout == wanted and r.run_id != run.run_id
    ]
    key = pairing_key(run)
    for r in candidates:  # newest first
        if pairing_key(r) == key and r.config.repeat_index == 0:
            return r
    for r in candidates:
        if pairing_key(r) == key:
            return r
    c = run.config
    near = ""
    if candidates:
        diffs = key_differences(run, candidates[0])
        near = f"\nThe newest {wanted} run ({candidates[0].run_id}) differs in: " + "; ".join(diffs)
    extra = " ".join(f"--engine-arg {a}" for a in _user_engine_args(run))
    raise EvalpipeError(
        f"no finished {wanted} baseline pairs with run {run.run_id} (model "
        f"{c.model_fingerprint}, task {c.task} v{c.task_version}, prompts {c.prompt_hash}, data "
        f"{c.data_sha256}, sampling {dict(c.sampling)}, engine {dict(c.engine_versions)}, "
        f"concurrency {c.concurrency}).{near}\nMake it with: evalpipe run {c.task} --layout "
        f"{wanted} --model {c.model} --seed {c.seed} --concurrency {c.concurrency}"
        + (f" --limit {c.limit}" if c.limit else "")
        + (f" {extra}" if extra else "")
        + f"\n(or in one step: evalpipe run {c.task} --layout {c.layout} --with-baseline …)"
    )


def _user_engine_args(run: Run) -> list[str]:
    """The non-layout engine flags back in ``KEY=VALUE`` form, for the suggested command."""
    args = non_layout_args(run)
    out: list[str] = []
    for i, a in enumerate(args):
        if not a.startswith("--") or a == "--enforce-eager":  # eager is a platform default
            continue
        nxt = args[i + 1] if i + 1 < len(args) else None
        key = a.removeprefix("--").replace("-", "_")
        out.append(
            f"{key}={nxt}" if nxt is not None and not nxt.startswith("--") else f"{key}=true"
        )
    return out


def repeats(store: Store, run: Run) -> list[Run]:
    """Finished runs with ``run``'s exact configuration apart from the repeat index."""
    key = {**run.config.key(), "repeat_index": None}
    return [
        r
        for r in store.list_runs(task=run.config.task, status="finished")
        if {**r.config.key(), "repeat_index": None} == key
    ]


@dataclass(frozen=True)
class Comparison:
    run: Run
    baseline: Run
    result: stats.PairedResult
    excluded: dict[str, int]
    agreement: float | None
    first_difference_chars: list[int]
    flips: dict[str, list[str]]
    flip_examples: list[dict[str, Any]]
    buckets: list[stats.BucketResult]
    noise_floor: float | None
    noise_repeats: int
    warnings: list[str] = field(default_factory=list)
    shard_period: int | None = None
    shard_period_source: str | None = None
    boundaries: list[stats.BoundaryGroup] = field(default_factory=list)
    per_verdict: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        r, b = self.run, self.baseline
        fd = self.first_difference_chars
        return {
            "run_id": r.run_id,
            "baseline_run_id": b.run_id,
            "model": r.config.model,
            "task": r.config.task,
            "task_version": r.config.task_version,
            "layout": r.config.layout,
            "baseline_layout": b.config.layout,
            "platform": r.config.platform,
            "engine_versions": dict(r.config.engine_versions),
            **self.result.to_dict(),
            "excluded": sum(self.excluded.values()),
            "excluded_by_reason": self.excluded,
            "agreement": self.agreement,
            "first_difference_chars": {
                "n": len(fd),
                "min": min(fd) if fd else None,
                "median": statistics.median(fd) if fd else None,
            },
            "flips": self.flips,
            "flip_examples": self.flip_examples,
            "length_buckets": [
                {
                    "low": x.low,
                    "high": x.high,
                    "n": x.n,
                    "only_run": x.only_run,
                    "only_baseline": x.only_baseline,
                    "delta": x.delta,
                }
                for x in self.buckets
            ],
            "noise_floor": self.noise_floor,
            "noise_repeats": self.noise_repeats,
            "shard_period": self.shard_period,
            "shard_period_source": self.shard_period_source,
            "shard_boundaries": [
                {**dataclasses.asdict(g), "delta": g.delta} for g in self.boundaries
            ],
            "accuracy_by_verdict": {
                k: {"run": a, "baseline": b} for k, (a, b) in self.per_verdict.items()
            },
            "warnings": self.warnings,
        }


def _noise(store: Store, baseline: Run) -> tuple[float | None, int]:
    reps = repeats(store, baseline)
    if len(reps) < 2:
        return None, len(reps)
    by_run = {r.run_id: {s.item_id: s for s in store.samples(r.run_id)} for r in reps}
    tables = []
    ids = [r.run_id for r in reps]
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            pairs = [
                (bool(sa.correct), bool(sb.correct))
                for item, sa in by_run[a].items()
                if sa.ok and (sb := by_run[b].get(item)) is not None and sb.ok
            ]
            if pairs:
                tables.append(stats.paired_table(pairs))
    return (stats.noise_floor(tables) if tables else None), len(reps)


def compare_runs(
    store: Store,
    run: Run,
    baseline: Run,
    *,
    margin: float = 0.01,
    alpha: float = 0.05,
    min_n: int = 100,
    force: bool = False,
    length_edges: Sequence[int] = DEFAULT_LENGTH_EDGES,
    shard_period: int | None = None,
) -> Comparison:
    """The paired comparison of ``run`` against ``baseline`` (see the module docstring).

    Prompts are located relative to the shard boundaries of ``shard_period`` tokens, or by
    default of the run's own layout (``dcp x interleave``; none for a layout without DCP).
    """
    hard = _hard_differences(run, baseline)
    if hard and not force:
        raise EvalpipeError(
            f"runs {run.run_id} and {baseline.run_id} did not answer the same questions the "
            f"same way, so a paired comparison would mislead: {'; '.join(hard)}. Pass --force "
            "to compare anyway."
        )
    warnings = [f"forced despite {d}" for d in hard]
    warnings += [
        f"configs differ in {d}"
        for d in key_differences(run, baseline)
        if d.split(":")[0] not in _HARD_KEYS
    ]
    run_samples = {s.item_id: s for s in store.samples(run.run_id)}
    base_samples = {s.item_id: s for s in store.samples(baseline.run_id)}
    excluded = {"missing_in_run": 0, "missing_in_baseline": 0, "error": 0}
    joined: list[tuple[Sample, Sample]] = []
    for item in sorted(set(run_samples) | set(base_samples), key=_order):
        a, b = run_samples.get(item), base_samples.get(item)
        if a is None:
            excluded["missing_in_run"] += 1
        elif b is None:
            excluded["missing_in_baseline"] += 1
        elif not (a.ok and b.ok):
            excluded["error"] += 1
        else:
            joined.append((a, b))
    if not joined:
        raise EvalpipeError(
            f"runs {run.run_id} and {baseline.run_id} share no scored item (excluded: {excluded})"
        )
    noise, n_repeats = _noise(store, baseline)
    result = stats.compare(
        ((bool(a.correct), bool(b.correct)) for a, b in joined),
        margin=margin,
        alpha=alpha,
        min_n=min_n,
        noise_discordance=noise,
    )
    outputs = [(a.output or "", b.output or "") for a, b in joined]
    first_diffs = [d for x, y in outputs if (d := stats.first_difference(x, y)) is not None]
    flips: dict[str, list[str]] = {"correct_to_wrong": [], "wrong_to_correct": []}
    examples = []
    for a, b in joined:
        if bool(a.correct) == bool(b.correct):
            continue
        direction = "wrong_to_correct" if a.correct else "correct_to_wrong"
        flips[direction].append(a.item_id)
        examples.append(
            {
                "item_id": a.item_id,
                "direction": direction,
                "target": a.target,
                "run_output": (a.output or "")[:EXAMPLE_CHARS],
                "baseline_output": (b.output or "")[:EXAMPLE_CHARS],
                "run_extracted": dict(a.extracted),
                "baseline_extracted": dict(b.extracted),
                "first_difference": stats.first_difference(a.output or "", b.output or ""),
            }
        )
    rows = [
        (
            a.prompt_tokens if a.prompt_tokens is not None else (b.prompt_tokens or 0),
            bool(a.correct),
            bool(b.correct),
        )
        for a, b in joined
    ]
    period, period_source = shard_period_of(run, shard_period)
    return Comparison(
        run=run,
        baseline=baseline,
        shard_period=period,
        shard_period_source=period_source,
        boundaries=(
            stats.boundary_groups(rows, period) if period and period >= shards.MIN_PERIOD else []
        ),
        per_verdict=_per_verdict(joined),
        result=result,
        excluded=excluded,
        agreement=stats.agreement(outputs),
        first_difference_chars=first_diffs,
        flips=flips,
        flip_examples=examples,
        buckets=stats.length_buckets(rows, length_edges),
        noise_floor=noise,
        noise_repeats=n_repeats,
        warnings=warnings,
    )


def shard_period_of(run: Run, explicit: int | None = None) -> tuple[int | None, str | None]:
    """The shard period to locate ``run``'s prompts against, and its source (``given`` or
    ``layout``); (None, None) for a layout without DCP and no explicit period."""
    if explicit is not None:
        if explicit < 1:
            raise EvalpipeError(
                f"--shard-period must be a positive number of tokens, not {explicit}"
            )
        return explicit, "given"
    try:
        period = shards.shard_period(
            parse(run.config.layout), run.config.engine_args, run.config.platform
        )
    except (ValueError, EvalpipeError):
        return None, None
    return period, ("layout" if period else None)


def _per_verdict(joined: Sequence[tuple[Sample, Sample]]) -> dict[str, tuple[float, float]]:
    """Accuracy of run and baseline per stored verdict (each extractor, each needle)."""
    keys = sorted({k for a, b in joined for k in (*a.correct_by, *b.correct_by)})
    out = {}
    for k in keys:
        both = [
            (a.correct_by[k], b.correct_by[k])
            for a, b in joined
            if k in a.correct_by and k in b.correct_by
        ]
        if both:
            out[k] = (sum(x for x, _ in both) / len(both), sum(y for _, y in both) / len(both))
    return out


def _order(item_id: str) -> tuple[int, int | str]:
    return (0, int(item_id)) if item_id.isdigit() else (1, item_id)


def adjust(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """Holm-adjust the verdicts of comparisons reported together."""
    from dataclasses import replace

    adjusted = stats.holm_adjust([c.result for c in comparisons])
    return [replace(c, result=r) for c, r in zip(comparisons, adjusted, strict=True)]
