"""What teacher-forced scoring will do, decided from the store before any engine starts:
whether two runs can be scored token by token, the baseline's tokens to force, and which
engine session scores which run (see :mod:`evalpipe.run.score`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from evalpipe.compare.pairing import repeats
from evalpipe.errors import EvalpipeError
from evalpipe.records import Run
from evalpipe.store import Store
from evalpipe.store.traces import read_traces
from evalpipe.traces import StoredTrace

Say = Callable[[str], None]


@dataclass(frozen=True)
class Baseline:
    """The baseline's tokens to force (its decode traces, by item) and each item's prompt."""

    run: Run
    traces: Mapping[str, StoredTrace]
    prompt_hashes: Mapping[str, str]


@dataclass(frozen=True)
class Side:
    """One engine session: ``owner``'s configuration (or the server at ``endpoint``, which
    ``endpoint_flag`` names), scoring the baseline's tokens for each (run, role) target."""

    owner: Run
    endpoint: str | None
    endpoint_flag: str
    targets: tuple[tuple[Run, str], ...]


def check_pair(run: Run, base: Run) -> tuple[str, ...]:
    """Refuse a pair that cannot be scored token by token; the notices for one that can."""
    for r in (run, base):
        if r.status != "finished":
            raise EvalpipeError(
                f"run {r.run_id} is {r.status}, not finished: complete it first (rerun the "
                f"command that made it, or `evalpipe run … --resume {r.run_id}`)"
            )
    a, b = run.config, base.config
    if a.model_fingerprint != b.model_fingerprint:
        raise EvalpipeError(
            f"runs {run.run_id} and {base.run_id} used different models ({a.model_fingerprint} "
            f"vs {b.model_fingerprint}): token ids mean nothing across tokenizers, so one run "
            "cannot score the other's tokens"
        )
    if (a.task, a.prompt_hash) != (b.task, b.prompt_hash):
        raise EvalpipeError(
            f"runs {run.run_id} and {base.run_id} did not answer the same prompts (task "
            f"{a.task}, prompts {a.prompt_hash[:12]} vs task {b.task}, prompts "
            f"{b.prompt_hash[:12]}): score runs of the same task and prompts"
        )
    if a.model_fingerprint.startswith("name:"):
        return (
            f"the model is known only by its name ({a.model_fingerprint}), so evalpipe cannot "
            "check that both runs used the same tokenizer (`run --model-path DIR` "
            "fingerprints an endpoint's weights)",
        )
    return ()


def baseline_of(store: Store, base: Run) -> Baseline:
    """The baseline's decode traces (the tokens to force), items it errored on left out."""
    traces = read_traces(store, base.run_id)
    if not traces:
        raise EvalpipeError(
            f"baseline {base.run_id} has no token traces: rerun it with --logprobs 5"
        )
    samples = {s.item_id: s for s in store.samples(base.run_id)}
    good = {i: t for i, t in traces.items() if i in samples and samples[i].ok}
    return Baseline(base, good, {i: samples[i].prompt_hash for i in good})


def same_engine(a: Run, b: Run) -> bool:
    """Whether two runs' engines are configured alike (repeats of one configuration)."""
    return {**a.config.key(), "repeat_index": None} == {**b.config.key(), "repeat_index": None}


def plan_sides(
    store: Store,
    run: Run,
    base: Run,
    say: Say,
    *,
    endpoint: str | None = None,
    baseline_endpoint: str | None = None,
    floor: bool | None = None,
) -> list[Side]:
    """The sessions to open, RUN's first: RUN's engine for RUN; BASELINE's for BASELINE and,
    with the floor (``None``: when it has repeats), its repeats; one session when RUN and
    BASELINE are configured alike. ``endpoint`` / ``baseline_endpoint``: the servers that
    score each side, if given."""
    reps = [r for r in repeats(store, base) if r.run_id not in (run.run_id, base.run_id)]
    floor = bool(reps) if floor is None else floor
    if floor and not reps:
        say(f"no repeats of baseline {base.run_id} are stored: no noise floor to score")
    base_targets = [] if base.run_id == run.run_id else [(base, "baseline")]
    if floor:
        base_targets += [(r, "repeat") for r in reps]
    if same_engine(run, base):
        return [Side(run, endpoint, "--endpoint", ((run, "run"), *base_targets))]
    sides = [Side(run, endpoint, "--endpoint", ((run, "run"),))]
    if base_targets:
        sides.append(Side(base, baseline_endpoint, "--baseline-endpoint", tuple(base_targets)))
    return sides
