"""Which runs pair: the pairing key, the baseline of a run, and a configuration's repeats.

Pairing is strict on purpose: two runs pair only when everything that can move an answer is
equal except the layout — model bytes, task version and rendered prompts, data, sampling and
seed, engine versions, and the batching settings (batch makeup changes greedy outputs: on the
CPU engine the same 32 GSM8K prompts gave 2 951 output tokens with all requests in flight and
3 636 one at a time). The comparison itself is :mod:`evalpipe.compare.core`.
"""

from __future__ import annotations

import shlex
from typing import Any

from evalpipe.engine.args import EngineArgs
from evalpipe.errors import EvalpipeError
from evalpipe.layout import parse
from evalpipe.records import Run
from evalpipe.store import Store


def non_layout_args(run: Run) -> dict[str, Any]:
    """The run's engine arguments without the layout's own (and what follows from it): dtype,
    quantization, KV-cache dtype, batching — everything that must match for two runs to pair."""
    return EngineArgs(run.config.engine_args).non_layout()


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
        "request_order": c.request_order,
        "engine_args": non_layout_args(run),
    }


def key_differences(a: Run, b: Run) -> list[str]:
    ka, kb = pairing_key(a), pairing_key(b)
    return [f"{k}: {ka[k]!r} vs {kb[k]!r}" for k in ka if ka[k] != kb[k]]


# Fields whose mismatch makes a comparison meaningless rather than merely noisier.
HARD_KEYS = ("task", "prompt_hash", "data_sha256", "model_fingerprint")


def hard_differences(a: Run, b: Run) -> list[str]:
    ka, kb = pairing_key(a), pairing_key(b)
    return [
        _prompts_differ(a, b) if k == "prompt_hash" else f"{k}: {ka[k]!r} vs {kb[k]!r}"
        for k in HARD_KEYS
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


def baseline_layout(run: Run, override: str | None = None, run_flag: bool = True) -> str:
    """The layout ``run`` is compared with: ``override``, else the non-CP layout of a CP
    run; a run with a canary fault is compared with the clean run of its own layout.
    ``run_flag``: the command has ``--baseline RUN_ID`` for a message to suggest (``compare``
    does, ``comment`` does not)."""
    if override:
        return parse(override).canonical
    layout = parse(run.config.layout)
    if run.config.fault is not None:
        return layout.canonical
    if not layout.is_cp:
        raise EvalpipeError(
            f"run {run.run_id} has layout {layout.canonical}, which is not context-parallel, so "
            "it has no automatic baseline; pass --baseline-layout L (e.g. --baseline-layout "
            "tp1 to compare tp2 with tp1)" + (", or --baseline RUN_ID" if run_flag else "")
        )
    return layout.baseline().canonical


def find_baseline(
    store: Store, run: Run, layout_override: str | None = None, run_flag: bool = True
) -> Run:
    """The latest finished run that pairs with ``run`` on ``baseline_layout(run)``; a run
    with a canary fault is never one (a faulted run's baseline is the clean run)."""
    wanted = baseline_layout(run, layout_override, run_flag)
    candidates = [
        r
        for r in store.list_runs(task=run.config.task, status="finished")
        if r.config.layout == wanted and r.run_id != run.run_id and r.config.fault is None
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
    pairs = EngineArgs(c.engine_args).user_pairs()
    same = (
        f" --model {shlex.quote(c.model)} --seed {c.seed} --concurrency {c.concurrency}"
        + (f" --limit {c.limit}" if c.limit else "")
        + "".join(f" --engine-arg {shlex.quote(a)}" for a in pairs)
        + store.location.flag
    )
    task = shlex.quote(c.task)
    endpoint = c.engine_kind == "endpoint"
    how = f"\nMake it with: evalpipe run {task} --layout {wanted}{same}"
    if endpoint:
        how += f" --endpoint URL\n(URL: the server that serves layout {wanted})"
    elif wanted != c.layout:
        # The one-step command must pair with the same layout the user asked for; it would
        # compare a run with itself on its own layout, and needs one engine per layout.
        how += (
            f"\n(or in one step: evalpipe run {task} --layout {c.layout} --with-baseline"
            + (f" --baseline-layout {wanted}" if layout_override else "")
            + f"{same})"
        )
    raise EvalpipeError(
        f"no finished {wanted} baseline pairs with run {run.run_id} (model "
        f"{c.model_fingerprint}, task {c.task} v{c.task_version}, prompts {c.prompt_hash}, data "
        f"{c.data_sha256}, sampling {dict(c.sampling)}, engine {dict(c.engine_versions)}, "
        f"concurrency {c.concurrency}).{near}{how}"
    )


def repeats(store: Store, run: Run) -> list[Run]:
    """Finished runs with ``run``'s exact configuration apart from the repeat index."""
    key = {**run.config.key(), "repeat_index": None}
    return [
        r
        for r in store.list_runs(task=run.config.task, status="finished")
        if {**r.config.key(), "repeat_index": None} == key
    ]
