"""Runs: evaluate a task on a layout, with its baseline and repeats."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from evalpipe.errors import EvalpipeError
from evalpipe.options import RunOptions
from evalpipe.records import Run


def resolve_model(model: str) -> str:
    """A built-in model name (``smollm2``, ``gemma3-270m``) → its local folder, built on
    first use; anything else is returned unchanged (a path or a served/hub name)."""
    from evalpipe.engine import models

    if model in models.MODELS and not Path(model).exists():
        return str(models.fetch(model, log=lambda m: print(m, file=sys.stderr)))
    return model


def _resolved(options: RunOptions) -> RunOptions:
    if options.engine == "endpoint":
        return options  # a served name, not ours to build
    return dataclasses.replace(options, model=resolve_model(options.model))


def run(options: RunOptions) -> Run:
    """Evaluate ``options.task`` on ``options.model`` with ``options.layout``; see
    :func:`evalpipe.run.native.execute` for what happens on failure and resume. A task named
    ``lm-eval:NAME`` runs lm-eval's task NAME instead (:mod:`evalpipe.run.lmeval`).

    The model and vLLM's verdict on the configuration are checked first
    (:func:`evalpipe.run.plan.precheck`): a bad input raises before any run is stored."""
    from evalpipe.run import native as runner
    from evalpipe.run.plan import precheck

    options = _resolved(options)
    lmeval = options.task.startswith("lm-eval:")
    if not lmeval or options.engine == "serve":  # lm-eval checks its other engines itself
        precheck(options)
    if lmeval:
        from evalpipe.run import lmeval as lmeval_run

        return lmeval_run.execute(options)
    return runner.execute(options)


def run_with_baseline(
    options: RunOptions, baseline_layout: str | None = None, repeat: int = 1
) -> tuple[list[Run], list[Run]]:
    """Run the baseline layout first (reusing a finished run of the same config), then the
    layout itself; each ``repeat`` times. Returns (baseline runs, runs).

    ``baseline_layout`` defaults to the layout's non-CP baseline; pass it for layouts that
    are not context-parallel (e.g. tp1 for tp2).
    """
    from evalpipe.engine.args import interleave_given, pairs_for
    from evalpipe.layout import parse
    from evalpipe.limits import MAX_REPEAT, check_int
    from evalpipe.run.cpu_dcp import pair_engine_args
    from evalpipe.run.plan import precheck

    check_int("--repeat", repeat, 1, MAX_REPEAT)
    layout = parse(options.layout)
    base = parse(baseline_layout).canonical if baseline_layout else None
    base = base or (layout.baseline().canonical if layout.is_cp else None)
    if base is None:
        raise EvalpipeError(
            f"{layout.canonical} is not context-parallel, so it has no automatic baseline; "
            "pass --baseline-layout L (e.g. tp1)"
        )
    if base == layout.canonical:
        # Both would be the same run (the baseline's is reused): a comparison with itself.
        raise EvalpipeError(
            f"--baseline-layout {baseline_layout} is the run's own layout: a baseline runs on "
            "another layout (e.g. --baseline-layout tp1); repeats of one layout are "
            "--repeat K, without --with-baseline"
        )
    # The baseline's generated long-context items straddle the CP run's shard boundaries:
    # its layout and its interleave, which the baseline's engine arguments leave out.
    shard_layout = options.shard_layout or options.layout
    shard_interleave = options.shard_interleave or interleave_given(options.engine_args)
    options = _resolved(options)
    # Both sides compute the same model: on CPU a DCP run's sliding-window override (no
    # window) goes to its baseline too.
    options = dataclasses.replace(options, engine_args=pair_engine_args(options, options.layout))
    # A canary fault is the run's alone: its baseline is the clean run.
    base_options = dataclasses.replace(
        options,
        layout=base,
        shard_layout=shard_layout,
        shard_interleave=shard_interleave,
        fault=None,
        engine_args=pairs_for(parse(base), options.engine_args),
    )
    # Both before either runs: a refused layout must not wait for its baseline's run.
    precheck(base_options, options)
    base_runs = run_repeated(base_options, repeat, reuse=True)
    return base_runs, run_repeated(options, repeat, reuse=True)


def run_repeated(options: RunOptions, repeat: int = 1, reuse: bool | None = None) -> list[Run]:
    """``repeat`` runs of one config (repeat_index 0..K-1).

    With ``reuse`` (default: when repeating), a finished run of the same config and repeat
    index is returned instead of run again, so ``--repeat 3`` after ``--repeat 2`` adds one.
    A single plain run always runs.
    """
    from evalpipe.limits import MAX_REPEAT, check_int

    check_int("--repeat", repeat, 1, MAX_REPEAT)
    reuse = repeat > 1 if reuse is None else reuse
    return [
        run(dataclasses.replace(options, repeat_index=i, reuse_finished=reuse))
        for i in range(repeat)
    ]
