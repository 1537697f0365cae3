"""The paired comparison of two runs, from their answers: one typed :class:`Comparison`. Pure.

Every renderer (``evalpipe compare``, the dashboard, the gate, the PR comment) gets this one
record; it becomes JSON only at the JSON edge (:func:`evalpipe.compare.jsonout.to_json`).
Items pair on their id; an item missing on one side or with an infrastructure error on
either side is excluded (counted by reason), never scored. The statistics are
:mod:`evalpipe.compare.stats`, the verdict rule :mod:`evalpipe.compare.power`.

Inputs are :class:`Answer` s: the few columns of a stored sample a comparison reads, so a
store can read exactly those for many runs at once
(:func:`evalpipe.store.answers.read_answers`, whose ``ANSWER_FIELDS`` are its fields in order).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from evalpipe.compare import breakdown, stats
from evalpipe.compare.power import DEFAULT_ALPHA, DEFAULT_MARGIN, DEFAULT_MIN_N
from evalpipe.compare.tokens.types import TokenComparison
from evalpipe.errors import EvalpipeError
from evalpipe.layout import MIN_PERIOD
from evalpipe.records import Run, Sample

DEFAULT_LENGTH_EDGES = (512, 768, 1024, 2048)
EXAMPLE_CHARS = 2000
"""Characters of each output kept in a flip example."""

Direction = Literal["correct_to_wrong", "wrong_to_correct"]
DIRECTIONS: tuple[Direction, Direction] = ("correct_to_wrong", "wrong_to_correct")


@dataclass(frozen=True, slots=True)
class Answer:
    """What a comparison reads of one stored sample."""

    item_id: str
    ok: bool  # the engine answered: no infrastructure error
    correct: bool
    output: str
    prompt_tokens: int | None = None
    target: str | None = None
    extracted: Mapping[str, str | None] = field(default_factory=dict)
    correct_by: Mapping[str, bool] = field(default_factory=dict)

    @classmethod
    def of(cls, s: Sample) -> Answer:
        return cls(
            s.item_id,
            s.ok,
            bool(s.correct),
            s.output or "",
            s.prompt_tokens,
            s.target,
            s.extracted,
            s.correct_by,
        )


@dataclass(frozen=True)
class Settings:
    """How a comparison decides (margin and alpha as fractions) and what it reports."""

    margin: float = DEFAULT_MARGIN
    alpha: float = DEFAULT_ALPHA
    min_n: int = DEFAULT_MIN_N
    length_edges: tuple[int, ...] = DEFAULT_LENGTH_EDGES
    max_flips: int | None = None
    """Flip examples kept (all when None); the flip counts and ids stay exact."""


@dataclass(frozen=True)
class Noise:
    """The engine's own discordance between repeats of the baseline (None: unknown)."""

    floor: float | None = None
    repeats: int = 1


@dataclass(frozen=True)
class ShardPeriod:
    """Shard period (tokens) to locate prompts against, and where it came from."""

    period: int | None = None
    source: str | None = None  # "given" | "layout" | "fault"


@dataclass(frozen=True)
class Flip:
    """One item answered correctly by one side only, with both outputs (cut)."""

    item_id: str
    direction: Direction
    target: str | None
    run_output: str
    baseline_output: str
    run_extracted: Mapping[str, str | None]
    baseline_extracted: Mapping[str, str | None]
    first_difference: int | None


@dataclass(frozen=True)
class Comparison:
    """A run against its baseline, item by item: figures, verdict, flips, breakdowns."""

    run: Run
    baseline: Run
    result: stats.PairedResult
    excluded: Mapping[str, int]
    agreement: float | None
    first_difference_chars: tuple[int, ...]
    flips: Mapping[Direction, tuple[str, ...]]
    flip_examples: tuple[Flip, ...]
    buckets: tuple[breakdown.BucketResult, ...]
    noise: Noise = Noise()
    warnings: tuple[str, ...] = ()
    shard: ShardPeriod = ShardPeriod()
    boundaries: tuple[breakdown.BoundaryGroup, ...] = ()
    per_verdict: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    tokens: TokenComparison | None = None
    """The token-level comparison, when token traces were asked for (``compare_runs``)."""

    @property
    def verdict(self) -> str:
        return self.result.verdict

    @property
    def noise_floor(self) -> float | None:
        return self.noise.floor

    @property
    def n_excluded(self) -> int:
        return sum(self.excluded.values())


def item_order(item_id: str) -> tuple[int, int | str]:
    """Dataset order: numeric ids by value, then the others as text."""
    return (0, int(item_id)) if item_id.isdigit() else (1, item_id)


def join(
    run: Mapping[str, Answer], baseline: Mapping[str, Answer]
) -> tuple[list[tuple[Answer, Answer]], dict[str, int]]:
    """Scored pairs in dataset order, and the excluded items by reason."""
    excluded = {"missing_in_run": 0, "missing_in_baseline": 0, "error": 0}
    joined: list[tuple[Answer, Answer]] = []
    if run.keys() == baseline.keys():
        items: Iterable[str] = run.keys()
    else:
        items = run.keys() | baseline.keys()
        excluded["missing_in_run"] = len(baseline.keys() - run.keys())
        excluded["missing_in_baseline"] = len(run.keys() - baseline.keys())
    for item in sorted(items, key=item_order):
        a, b = run.get(item), baseline.get(item)
        if a is None or b is None:
            continue
        if a.ok and b.ok:
            joined.append((a, b))
        else:
            excluded["error"] += 1
    return joined, excluded


def compare_answers(
    run: Run,
    baseline: Run,
    run_answers: Mapping[str, Answer],
    baseline_answers: Mapping[str, Answer],
    *,
    settings: Settings = Settings(),
    noise: Noise = Noise(),
    shard: ShardPeriod = ShardPeriod(),
    warnings: Sequence[str] = (),
) -> Comparison:
    """The comparison of ``run`` against ``baseline`` from their answers by item id.

    Raises :class:`EvalpipeError` when the runs share no scored item.
    """
    joined, excluded = join(run_answers, baseline_answers)
    if not joined:
        raise EvalpipeError(
            f"runs {run.run_id} and {baseline.run_id} share no scored item (excluded: {excluded})"
        )
    result = stats.compare(
        ((a.correct, b.correct) for a, b in joined),
        margin=settings.margin,
        alpha=settings.alpha,
        min_n=settings.min_n,
        noise_discordance=noise.floor,
    )
    diffs = [breakdown.first_difference(a.output, b.output) for a, b in joined]
    rows = [(_tokens(a, b), a.correct, b.correct) for a, b in joined]
    flips = [(a, b, d) for (a, b), d in zip(joined, diffs, strict=True) if a.correct != b.correct]
    period = shard.period
    return Comparison(
        run=run,
        baseline=baseline,
        result=result,
        excluded=excluded,
        agreement=sum(d is None for d in diffs) / len(diffs),
        first_difference_chars=tuple(d for d in diffs if d is not None),
        flips={
            direction: tuple(a.item_id for a, _, _ in flips if flip_direction(a) == direction)
            for direction in DIRECTIONS
        },
        flip_examples=tuple(_flip(a, b, d) for a, b, d in flips[: settings.max_flips]),
        buckets=tuple(breakdown.length_buckets(rows, settings.length_edges)),
        noise=noise,
        warnings=tuple(warnings),
        shard=shard,
        boundaries=(
            tuple(breakdown.boundary_groups(rows, period))
            if period is not None and period >= MIN_PERIOD
            else ()
        ),
        per_verdict=per_verdict(joined),
    )


def prompt_length(a: Answer, b: Answer) -> int | None:
    """The prompt's length in tokens of a pair: the run's count, else the baseline's."""
    return a.prompt_tokens if a.prompt_tokens is not None else b.prompt_tokens


def _tokens(a: Answer, b: Answer) -> int:
    return prompt_length(a, b) or 0


def flip_direction(a: Answer) -> Direction:
    """Which way an item flipped, from the run's answer ``a`` (the baseline's is the other)."""
    return "wrong_to_correct" if a.correct else "correct_to_wrong"


def _flip(a: Answer, b: Answer, first_difference: int | None) -> Flip:
    return Flip(
        item_id=a.item_id,
        direction=flip_direction(a),
        target=a.target,
        run_output=a.output[:EXAMPLE_CHARS],
        baseline_output=b.output[:EXAMPLE_CHARS],
        run_extracted=dict(a.extracted),
        baseline_extracted=dict(b.extracted),
        first_difference=first_difference,
    )


def per_verdict(joined: Sequence[tuple[Answer, Answer]]) -> dict[str, tuple[float, float]]:
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


def noise_floor(repeats: Sequence[Mapping[str, Answer]]) -> Noise:
    """Mean discordance between every two repeats of one configuration (needs two)."""
    tables = []
    for i, a in enumerate(repeats):
        for b in repeats[i + 1 :]:
            pairs, _ = join(a, b)
            if pairs:
                tables.append(stats.paired_table((x.correct, y.correct) for x, y in pairs))
    if len(repeats) < 2 or not tables:
        return Noise(None, len(repeats))
    return Noise(stats.noise_floor(tables), len(repeats))


def adjust(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """Holm-adjust the verdicts of comparisons reported together: the accuracy verdicts, and
    the token verdicts over every path of every comparison."""
    # Imported here: the token verdict needs scipy, which the records this module defines
    # (loaded by every CLI command) must not pull in.
    from evalpipe.compare.tokens.verdict import holm_paths

    adjusted = stats.holm_adjust([c.result for c in comparisons])
    tokens = holm_paths([c.tokens for c in comparisons])
    return [
        replace(c, result=r, tokens=t)
        for c, r, t in zip(comparisons, adjusted, tokens, strict=True)
    ]
