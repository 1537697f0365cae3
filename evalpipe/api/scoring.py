"""Teacher-forced scoring: a run's engine scores a baseline's generated tokens (the prefill
path), and the summary ``evalpipe score`` prints. What scoring does is
:mod:`evalpipe.run.score`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evalpipe.run.score import ScoreReport


def score(
    run: str,
    against: str,
    *,
    store: str | None = None,
    engine: str | None = None,
    endpoint: str | None = None,
    baseline_endpoint: str | None = None,
    served_model: str | None = None,
    logprobs: int | None = None,
    floor: bool | None = None,
    max_error_rate: float = 0.0,
    concurrency: int | None = None,
    engine_args: tuple[str, ...] = (),
    limit: int | None = None,
    runs_dir: Path | None = None,
    progress: bool = True,
    path: str = "forced-decode",
) -> ScoreReport:
    """Score BASELINE's (``against``) generated tokens on RUN's engine, and on BASELINE's own
    engine for BASELINE and (``floor``; default: when it has any) its repeats; store the
    traces with ``source = against``. See :class:`evalpipe.run.score.ScoreOptions` for the
    options and :func:`evalpipe.run.score.execute` for what is refused."""
    from evalpipe.run.score import ScoreOptions, execute

    return execute(
        ScoreOptions(
            run=run,
            against=against,
            store=store,
            engine=engine,
            endpoint=endpoint,
            baseline_endpoint=baseline_endpoint,
            served_model=served_model,
            logprobs=logprobs,
            floor=floor,
            max_error_rate=max_error_rate,
            concurrency=concurrency,
            engine_args=engine_args,
            limit=limit,
            runs_dir=runs_dir,
            progress=progress,
            path=path,
        )
    )


def format_score(report: ScoreReport, errors_shown: int = 3) -> str:
    """The terminal summary: per scored run what was done, the first errors, the notices and
    the next command."""
    lines = [
        f"teacher-forced scoring of the tokens of {report.baseline_id} on the {report.path} "
        f"path (k = {report.k}), stored in {report.store} as source {report.source}:"
    ]
    for t in report.targets:
        what = {
            "run": f"run {t.run_id} ({t.layout})",
            "baseline": f"baseline {t.run_id} ({t.layout}), its own tokens",
            "repeat": f"repeat {t.run_id} ({t.layout}), noise floor",
        }[t.role]
        lines.append(
            f"  {what}: {t.scored} of {t.items} items scored now, {t.already} already "
            f"stored, {len(t.errors)} errors"
        )
    failed = [(t.run_id, i, e) for t in report.targets for i, e in t.errors.items()]
    if failed:
        lines.append(
            f"errors (infrastructure, never scores; first {min(errors_shown, len(failed))}):"
        )
        lines += [f"  {rid} item {item}: {reason}" for rid, item, reason in failed[:errors_shown]]
    lines += [f"note: {text}" for text in report.notices]
    following = next_command(report)
    if following is None:
        lines.append(
            f"note: {report.run_id} scored its own tokens (its engine's reference for the "
            "noise floor); to compare, score a run of another layout against it"
        )
    else:
        lines.append(f"next: {following}")
    return "\n".join(lines)


def next_command(report: ScoreReport) -> str | None:
    """The comparison the scores were made for, as a command that finds the same store; none
    when a run scored its own tokens (a run is not compared with itself)."""
    if report.run_id == report.baseline_id:
        return None
    return f"evalpipe compare {report.run_id} --baseline {report.baseline_id}{report.store_flag}"


def score_json(report: ScoreReport) -> dict[str, Any]:
    """The report as JSON values (``evalpipe score --json``)."""
    return {
        "run_id": report.run_id,
        "baseline_id": report.baseline_id,
        "source": report.source,
        "path": report.path,
        "k": report.k,
        "store": report.store,
        "notices": list(report.notices),
        "targets": [
            {
                "run_id": t.run_id,
                "role": t.role,
                "layout": t.layout,
                "items": t.items,
                "already": t.already,
                "scored": t.scored,
                "errors": dict(t.errors),
            }
            for t in report.targets
        ],
        "next": next_command(report),
    }
