"""Moving runs between stores (a laptop's SQLite file into the team PostgreSQL).

:func:`copy_runs` goes through :mod:`evalpipe.importers.jsonl` (export → import in memory, run ids
kept), so a copy checks and stores exactly what a JSONL export/import would, and copying
twice creates nothing new. For each run, by what the destination already holds:

* nothing → the run, its samples, prompts and token traces are created (``copied``),
  whatever its status: an unfinished run arrives as ``running``/``failed``/``aborted`` and
  can be copied again later;
* the same run and samples and no token-trace row the destination lacks → nothing is written
  (``skipped_identical``);
* the same run and samples, and trace rows the destination lacks (a baseline scored since the
  last copy) → those rows are added (``merged``), by the rule of
  :mod:`evalpipe.importers.tracelines`; a stored trace that differs is a conflict;
* an *unfinished* run with the same config (an earlier copy of a run still in progress) →
  ``merged``: the source's samples and trace rows are upserted with the store's usual rules
  (an errored sample or trace row never replaces a good one), and the run record becomes the
  source's, with counts recomputed from the merged samples;
* anything else (a finished run that differs, another config under the same id, a source run
  whose file would not import) → left untouched and listed in ``conflicts`` with the reason.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

from evalpipe.errors import EvalpipeError
from evalpipe.importers.jsonl import export_run, import_run, parse_jsonl
from evalpipe.importers.tracelines import plan_trace_lines, put_trace_lines
from evalpipe.records import Sample
from evalpipe.store import Store


@dataclass(frozen=True)
class Conflict:
    """A run :func:`copy_runs` did not write, and why."""

    run_id: str
    reason: str


@dataclass(frozen=True)
class CopyReport:
    """Run ids by what :func:`copy_runs` did with them, in the order they were copied."""

    copied: tuple[str, ...] = ()
    merged: tuple[str, ...] = ()
    skipped_identical: tuple[str, ...] = ()
    conflicts: tuple[Conflict, ...] = field(default=())

    def summary(self) -> str:
        """One line for people, e.g. ``copied 3, merged 0, already there 2, conflicts 0``."""
        return (
            f"copied {len(self.copied)}, merged {len(self.merged)}, "
            f"already there {len(self.skipped_identical)}, conflicts {len(self.conflicts)}"
        )


def copy_runs(src: Store, dst: Store, run_ids: Sequence[str] | None = None) -> CopyReport:
    """Copy runs (ids or unique prefixes; all runs when ``None``) from ``src`` to ``dst``.

    Idempotent: a second copy of unchanged runs reports them all in ``skipped_identical``.
    Conflicts do not stop the copy of the other runs; the caller decides whether they fail.
    """
    if run_ids is None:
        # Oldest first, so a copy interrupted midway has the older history complete.
        ids = [r.run_id for r in reversed(src.list_runs())]
    else:
        ids = list(dict.fromkeys(src.get_run(r).run_id for r in run_ids))
    copied: list[str] = []
    merged: list[str] = []
    skipped: list[str] = []
    conflicts: list[Conflict] = []
    outcomes = {"copied": copied, "merged": merged, "skipped": skipped}
    for run_id in ids:
        try:
            outcomes[_copy_one(src, dst, run_id)].append(run_id)
        except EvalpipeError as exc:
            conflicts.append(Conflict(run_id, exc.message))
    return CopyReport(tuple(copied), tuple(merged), tuple(skipped), tuple(conflicts))


def _copy_one(src: Store, dst: Store, run_id: str) -> str:
    buffer = io.StringIO()
    export_run(src, run_id, buffer)
    # Lines end at "\n" only: str.splitlines() also breaks at U+2028, U+0085, … which JSON
    # leaves unescaped inside strings (a model output holding one would break its line).
    lines = buffer.getvalue().split("\n")
    source = f"{src.name} run {run_id}"
    parsed = parse_jsonl(lines, source=source)
    existing = dst.find_run(run_id)
    if existing is None:
        # import_run, not create_run: it also accepts a concurrent copy of the same run.
        import_run(dst, lines, source=source)
        return "copied"
    why = ""
    if existing == parsed.run and _by_item(dst.samples(run_id)) == _by_item(parsed.samples):
        plan = plan_trace_lines(dst, run_id, parsed.traces)
        if not plan.conflicts:
            put_trace_lines(dst, run_id, plan.new)
            return "merged" if plan.new else "skipped"
        why = f" ({plan.conflicts[0]})"
    if existing.status == "finished":
        raise EvalpipeError(
            f"run {run_id} is finished in {dst.name} with different content{why}; left as it "
            "is (delete it there to copy the source's version)"
        )
    if existing.config != parsed.run.config:
        raise EvalpipeError(
            f"run {run_id} in {dst.name} has another config under the same id; left as it is"
        )
    # An earlier copy of a run that was still in progress: bring in what is new. A few
    # transactions; if interrupted in between, copying again completes the merge.
    dst.put_prompts(parsed.prompts)
    dst.put_samples(parsed.samples)
    put_trace_lines(dst, run_id, parsed.traces)
    dst.update_run(parsed.run.with_(**dst.summarize(run_id)))
    return "merged"


def _by_item(samples: Sequence[Sample]) -> dict[str, Sample]:
    return {s.item_id: s for s in samples}
