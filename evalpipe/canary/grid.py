"""A canary grid: the faults to inject and the benign variants to set them against.

::

    faults:                        # one row per fault and size
      - kind: key-scale            # any fault kind (evalpipe.faults.KINDS)
        sizes: [0.05, 0.2, 0.5]
        period: 128                # optional: offset, width, threshold, target
      - out-scale:size=0.1,period=8    # or one spec
    benign:                        # clean variants, compared with the clean run too: the band
      - layout: tp2                #   a fault must stand out from
      - engine_args: {dtype: float32}
      - request_order: reversed

Every problem is refused at once with its line, before any engine starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evalpipe.errors import EvalpipeError
from evalpipe.faults import KINDS, PARAMS, FaultSpec, kinds_text, parse_fault
from evalpipe.layout import LayoutError, parse
from evalpipe.options import REQUEST_ORDERS
from evalpipe.sweep.entries import Problems, engine_args, read_plan_text, yaml_value

TOP_KEYS = ("faults", "benign")
BENIGN_KEYS = ("layout", "engine_args", "request_order")

DEFAULT_GRID = """\
faults:
  - {kind: key-scale, sizes: [0.05, 0.2, 0.5], period: 128}
  - {kind: out-mix, sizes: [0.02, 0.1, 0.5], period: 8}
  - {kind: kv-position, sizes: [1, 4, 16], period: 1, offset: 0, threshold: 1024}
benign:
  - request_order: reversed
  - engine_args: {dtype: float32}
"""
"""The built-in grid: three kinds at three sizes, modelled on GSM8K-length sequences (prompts
of 700-1 000 tokens, so kv-position's threshold of 1 024 hits the late tokens of long items
only), and two benign variants every model can run. out-scale is left out: a model that
normalises its attention output (Gemma-3) undoes it, so it measures the model, not the gate."""


@dataclass(frozen=True)
class Variant:
    """A benign variant of the clean run: another layout, more engine arguments, or another
    request order. ``label`` names it in the table."""

    layout: str | None = None
    engine_args: tuple[str, ...] = ()
    request_order: str = "dataset"

    @property
    def label(self) -> str:
        parts = [self.layout] if self.layout else []
        parts += list(self.engine_args)
        if self.request_order != "dataset":
            parts.append(f"{self.request_order} order")
        return ", ".join(parts)


@dataclass(frozen=True)
class Grid:
    faults: tuple[FaultSpec, ...]
    benign: tuple[Variant, ...]
    source: str = "<default grid>"


def parse_grid(text: str, source: str) -> Grid:
    """The grid in ``text`` (a YAML file's content; ``source`` names it in messages)."""
    data, lines = read_plan_text(text, source)
    problems = Problems(source, lines, what="the canary grid")
    for key in data:
        if key not in TOP_KEYS:
            problems.add(f"unknown key {key!r} (a grid has {', '.join(TOP_KEYS)})", key)
    faults = _faults(data.get("faults"), problems)
    benign = _benign(data.get("benign", []), problems)
    seen: set[str] = set()
    for i, spec in faults:
        if spec.canonical in seen:
            problems.add(f"fault {spec.label!r} is listed twice", "faults", i)
        seen.add(spec.canonical)
    problems.raise_any()
    return Grid(tuple(spec for _, spec in faults), tuple(benign), source)


def default_grid() -> Grid:
    return parse_grid(DEFAULT_GRID, "<default grid>")


def _faults(value: Any, problems: Problems) -> list[tuple[int, FaultSpec]]:
    """The grid's faults, each with the index of the entry it comes from (for its line)."""
    if not isinstance(value, list) or not value:
        problems.add("faults must be a non-empty list of fault specs or {kind, sizes, ...}")
        return []
    out: list[tuple[int, FaultSpec]] = []
    for i, entry in enumerate(value):
        texts = _spec_texts(entry, problems, i)
        for text in texts:
            try:
                out.append((i, parse_fault(text)))
            except EvalpipeError as exc:
                problems.add(exc.message, "faults", i)
    return out


def _spec_texts(entry: Any, problems: Problems, i: int) -> list[str]:
    """A list entry as spec texts: a spec string as it is, a mapping once per size."""
    if isinstance(entry, str):
        return [entry]
    if not isinstance(entry, dict) or "kind" not in entry:
        problems.add(
            f"a fault is a spec like key-scale:size=0.2 or {{kind, sizes, ...}}; kinds: "
            f"{kinds_text()}",
            "faults",
            i,
        )
        return []
    kind = entry["kind"]
    if kind not in KINDS:
        problems.add(f"unknown fault kind {kind!r}; kinds: {kinds_text()}", "faults", i, "kind")
        return []
    unknown = [k for k in entry if k not in ("kind", "sizes", *PARAMS)]
    for k in unknown:
        problems.add(
            f"unknown key {k!r} (a fault takes kind, sizes, {', '.join(PARAMS)})", "faults", i, k
        )
    sizes = entry.get("sizes", [entry["size"]] if "size" in entry else None)
    if not isinstance(sizes, list) or not sizes or ("size" in entry and "sizes" in entry):
        problems.add("give sizes: [..] (or one size:)", "faults", i)
        return []
    if unknown:
        return []
    params = ",".join(
        f"{k}={yaml_value(v)}" for k, v in entry.items() if k not in ("kind", "sizes", "size")
    )
    return [f"{kind}:size={yaml_value(s)}" + (f",{params}" if params else "") for s in sizes]


def _benign(value: Any, problems: Problems) -> list[Variant]:
    if not isinstance(value, list):
        problems.add("benign must be a list of {layout, engine_args, request_order}", "benign")
        return []
    out: list[Variant] = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict) or not entry:
            problems.add("a benign variant is {layout, engine_args, request_order}", "benign", i)
            continue
        for k in entry:
            if k not in BENIGN_KEYS:
                problems.add(
                    f"unknown key {k!r} (a benign variant has {', '.join(BENIGN_KEYS)})",
                    "benign",
                    i,
                    k,
                )
        layout = entry.get("layout")
        if layout is not None:
            try:
                layout = parse(str(layout)).canonical
            except LayoutError as exc:
                problems.add(str(exc), "benign", i, "layout")
        order = entry.get("request_order", "dataset")
        if order not in REQUEST_ORDERS:
            problems.add(
                f"request_order is one of {', '.join(REQUEST_ORDERS)}", "benign", i, "request_order"
            )
        args = (
            engine_args(entry["engine_args"], problems, "benign", i, "engine_args")
            if ("engine_args" in entry)
            else ()
        )
        out.append(Variant(layout, args, str(order)))
    return out
