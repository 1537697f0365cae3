"""Canary faults: a known context-parallel bug of a chosen kind, size and place, as a spec.

A fault is what evalpipe's vLLM plugin (:mod:`evalpipe.engine.plugin`) injects into every
attention layer of an engine started with ``EVALPIPE_FAULT=SPEC``. This module is the pure
half: it parses and checks a spec (before any engine starts), renders its canonical text (what
a run's configuration stores, so a faulted run never pairs or passes as a clean one) and says
which token positions a fault touches. No torch, no vLLM: the CLI, the store and the plugin
all read specs through here.

A spec is ``KIND:key=value,...``, e.g. ``key-scale:size=0.2,period=128``. Every kind touches
the positions ``p >= threshold`` with ``(p - offset) mod period < width`` (the tokens at a
shard boundary when ``period`` is the shard period and ``offset`` its last slot), modelled on
bugs users hit:

- ``key-scale``: the keys (``target=v``: values, ``kv``: both) of those positions multiplied
  by ``1 + size`` before they enter the KV cache, in every layer — KV near shard boundaries
  scaled, as when one rank's shard is stored or read with a wrong scale;
- ``kv-position``: the keys of those positions rotated as if they sat ``size`` positions
  later — KV read at the wrong position past a length threshold (vLLM #39303, #41623, #46514);
- ``out-scale``: the attention output of queries at those positions multiplied by
  ``1 + size`` — the normalisation error of a wrong LSE merge. A model that normalises the
  attention output before the residual (Gemma's post-attention norm) undoes most of it;
- ``out-mix``: the attention output of queries at those positions pulled towards the query
  token's own value, ``(1 - size) * out + size * v`` — a merge that over-weights the shard
  holding the newest tokens, as a wrong LSE correction does (vllm-ascend #11508, vLLM #54300).

One kind is not placed by position but by DCP rank, and acts inside the merge itself:

- ``dcp-merge``: DCP rank ``rank`` drops the share ``size`` of its LSE correction when the
  shards' partial outputs are merged (``size=1``: its output enters the sum unscaled) — the
  wrong LSE merge itself, at every query that attends to cached context. evalpipe's CPU DCP
  backend (:mod:`evalpipe.engine.plugin.cpu_dcp`) applies it, so it needs a DCP layout on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from evalpipe.errors import EvalpipeError

ENV_VAR = "EVALPIPE_FAULT"
"""The environment variable the plugin reads in every engine process; unset, it does nothing."""

PLUGIN_NAME = "evalpipe"
"""The plugin's entry-point name in ``vllm.general_plugins`` (what ``VLLM_PLUGINS`` lists)."""

KINDS = {
    "key-scale": "keys (target=v: values, kv: both) at the chosen positions x (1 + size)",
    "kv-position": "keys at the chosen positions rotated as if `size` positions later",
    "out-scale": "attention output of queries at the chosen positions x (1 + size)",
    "out-mix": "attention output of queries at the chosen positions pulled towards their own "
    "value: (1 - size) * out + size * v",
    "dcp-merge": "DCP rank `rank` drops the share `size` of its LSE correction in the merge "
    "(size=1: its partial output enters the sum unscaled); DCP layouts on CPU only",
}

MERGE_KIND = "dcp-merge"
"""The kind applied in the DCP merge (by evalpipe's CPU DCP backend) rather than by position."""

TARGETS = ("k", "v", "kv")

PARAMS = ("size", "period", "offset", "width", "threshold", "target", "rank")
"""Every parameter a spec may set; ``size`` is required, the rest default as in
:func:`parse_fault`."""

_PLACED = ("size", "period", "offset", "width", "threshold")


def kind_params(kind: str) -> tuple[str, ...]:
    """The parameters a fault of ``kind`` takes: where it acts (period, offset, width,
    threshold; key-scale also its target), or for dcp-merge the rank whose merge it breaks."""
    if kind == MERGE_KIND:
        return ("size", "rank")
    return (*_PLACED, "target") if kind == "key-scale" else _PLACED


ARCHITECTURES = {
    "LlamaForCausalLM": "Llama (SmolLM2, Llama 2/3)",
    "MistralForCausalLM": "Mistral (vLLM runs it with the Llama modules)",
    "Gemma3ForCausalLM": "Gemma 3",
    "Gemma2ForCausalLM": "Gemma 2",
    "Qwen2ForCausalLM": "Qwen 2 / 2.5",
    "Qwen3ForCausalLM": "Qwen 3",
}
"""Architectures whose attention module calls vLLM's rotary embedding and then its
``Attention`` layer on the same tokens, which is where the plugin injects. Llama (SmolLM2)
and Gemma 3 are checked on the real engine here; the others share that call sequence in
vLLM 0.32's model code. Multi-head latent attention (DeepSeek's MLA/SFA) uses another layer
and is not covered."""


@dataclass(frozen=True)
class FaultSpec:
    """One fault, parsed and checked. ``size`` is a relative scale (key-scale, out-scale:
    ``1 + size``), a number of positions (kv-position, a nonzero integer) or a share (out-mix,
    dcp-merge). A dcp-merge fault acts at every position (period 1), on DCP rank ``rank``."""

    kind: str
    size: float
    period: int = 128
    offset: int = 127
    width: int = 1
    threshold: int = 0
    target: str = "k"
    rank: int = 0

    @property
    def placed(self) -> bool:
        """Whether the fault acts at chosen positions, so that its period locates it; a
        dcp-merge fault acts at every query, and the layout's shard period locates it."""
        return self.kind != MERGE_KIND

    @property
    def locating_period(self) -> int | None:
        """The period a comparison locates the fault by: its own, or None when the layout's
        shard period does (dcp-merge)."""
        return self.period if self.placed else None

    @property
    def canonical(self) -> str:
        """Every parameter, in a fixed order: what a run's configuration stores and the
        engine's environment carries (``parse_fault(spec.canonical) == spec``)."""
        if not self.placed:
            return f"{self.kind}:size={_number(self.size)},rank={self.rank}"
        parts = [f"size={_number(self.size)}", f"period={self.period}"]
        parts += [f"offset={self.offset}", f"width={self.width}", f"threshold={self.threshold}"]
        if self.kind == "key-scale":
            parts.append(f"target={self.target}")
        return f"{self.kind}:{','.join(parts)}"

    @property
    def label(self) -> str:
        """A short name for tables and badges: the kind, its size and where it acts when that
        is not the default (``key-scale 0.2``, ``out-mix 0.1 p%8=7``, ``kv-position 4
        p>=1024``, ``key-scale 0.5 on v p%16=0-3``, ``dcp-merge 1 on rank 0``)."""
        text = f"{self.kind} {_number(self.size)}"
        if not self.placed:
            return f"{text} on rank {self.rank}"
        if self.kind == "key-scale" and self.target != "k":
            text += f" on {self.target}"
        if self.period > 1 and (self.period, self.offset, self.width) != (128, 127, 1):
            last = self.offset + self.width - 1
            where = f"{self.offset}" if self.width == 1 else f"{self.offset}-{last}"
            text += f" p%{self.period}={where}"
        if self.threshold:
            text += f" p>={self.threshold}"
        return text

    def touches(self, position: int) -> bool:
        """Whether the fault acts at whole-sequence ``position`` (0 = the first prompt token):
        the reference for the plugin's tensor version and for localisation."""
        return position >= self.threshold and (position - self.offset) % self.period < self.width


def _number(value: float) -> str:
    """``0.2`` → ``0.2``, ``4.0`` → ``4``: the shortest text that reads back as ``value``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def kinds_text() -> str:
    return "; ".join(f"{k} ({v})" for k, v in KINDS.items())


def parse_fault(text: str) -> FaultSpec:
    """``KIND:size=S[,period=P][,offset=O][,width=W][,threshold=T][,target=k|v|kv]`` (or
    ``dcp-merge:size=S[,rank=R]``) → a spec.

    Defaults: period 128, offset period − 1 (the last slot before a boundary), width 1,
    threshold 0, target k; rank 0. Every problem is refused at once with what is allowed,
    before any engine starts.
    """
    kind, sep, rest = text.strip().partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise EvalpipeError(
            f"unknown fault kind {kind!r} in {text!r}; kinds: {kinds_text()}. "
            "Example: --fault key-scale:size=0.2,period=128"
        )
    raw: dict[str, str] = {}
    problems: list[str] = []
    for item in rest.split(",") if sep and rest.strip() else []:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            problems.append(f"{item.strip()!r} is not KEY=VALUE")
        elif key not in kind_params(kind):
            takes = ", ".join(kind_params(kind))
            problems.append(f"unknown parameter {key!r} (a {kind} fault takes {takes})")
        elif key in raw:
            problems.append(f"{key} is given twice")
        else:
            raw[key] = value.strip()
    spec = None if problems else _build(kind, raw, problems)
    if spec is None:
        raise EvalpipeError(f"fault {text!r}: " + "; ".join(problems))
    return spec


def _build(kind: str, raw: dict[str, str], problems: list[str]) -> FaultSpec | None:
    size = _float(raw, "size", problems) if "size" in raw else None
    if size is None and "size" not in raw:
        problems.append("size is required (e.g. size=0.2)")
    period = _int(raw, "period", 128 if kind != MERGE_KIND else 1, problems)
    offset = _int(raw, "offset", period - 1 if period else 0, problems)
    width = _int(raw, "width", 1, problems)
    threshold = _int(raw, "threshold", 0, problems)
    target = raw.get("target", "k")
    if target not in TARGETS:
        problems.append(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    if period < 1 or period > 1 << 30:
        problems.append(f"period must be 1 to 2**30 tokens, not {period}")
    elif not 0 <= offset < period:
        problems.append(f"offset must be 0 to period - 1 ({period - 1}), not {offset}")
    elif not 1 <= width <= period:
        problems.append(f"width must be 1 to period ({period}), not {width}")
    if not 0 <= threshold <= 1 << 40:
        problems.append(f"threshold must be 0 to 2**40 positions, not {threshold}")
    rank = _int(raw, "rank", 0, problems)
    if not 0 <= rank < 1 << 20:
        problems.append(f"rank is a DCP rank, 0 or more, not {rank}")
    if size is not None:
        _check_size(kind, size, problems)
    if problems or size is None:
        return None
    return FaultSpec(kind, size, period, offset, width, threshold, target, rank)


def _check_size(kind: str, size: float, problems: list[str]) -> None:
    if kind == "kv-position":
        if not size.is_integer() or size == 0 or abs(size) > 1 << 20:
            problems.append(
                f"a kv-position size is a nonzero whole number of positions, not {_number(size)}"
            )
    elif kind in ("out-mix", MERGE_KIND):
        if not 0 < size <= 1:
            problems.append(
                f"the {kind} size is a share above 0 and at most 1, not {_number(size)}"
            )
    elif size == 0 or size <= -1 or abs(size) > 1e6:
        problems.append(
            f"the {kind} size is a nonzero relative scale above -1 (x (1 + size)), not "
            f"{_number(size)}"
        )


def _float(raw: dict[str, str], key: str, problems: list[str]) -> float | None:
    try:
        value = float(raw[key])
    except ValueError:
        problems.append(f"{key} must be a number, not {raw[key]!r}")
        return None
    if not math.isfinite(value):
        problems.append(f"{key} must be finite, not {raw[key]!r}")
        return None
    return value


def _int(raw: dict[str, str], key: str, default: int, problems: list[str]) -> int:
    if key not in raw:
        return default
    try:
        return int(raw[key])
    except ValueError:
        problems.append(f"{key} must be a whole number, not {raw[key]!r}")
        return default


def fault_label(canonical: str) -> str:
    """The short label of a stored spec (its text as it is, should it no longer parse)."""
    try:
        return parse_fault(canonical).label
    except EvalpipeError:
        return canonical


def check_architecture(spec: FaultSpec, architectures: list[str], model: str) -> None:
    """Refuse a fault the plugin cannot inject into ``model`` (its config's architectures);
    a dcp-merge fault acts in the DCP backend, whatever the model."""
    if not spec.placed or any(a in ARCHITECTURES for a in architectures):
        return
    names = ", ".join(architectures) or "unknown"
    raise EvalpipeError(
        f"fault {spec.label!r} cannot apply to model {model}: its architecture ({names}) is "
        "not one whose attention evalpipe's plugin injects into. Supported: "
        + ", ".join(f"{k} ({v})" for k, v in ARCHITECTURES.items())
    )


def check_layout(spec: FaultSpec, dcp: int, platform: str | None) -> None:
    """Refuse a fault the run's layout cannot carry: a dcp-merge fault needs a DCP group
    holding its rank and, for an engine evalpipe starts (``platform`` given), the CPU, where
    evalpipe's own merge runs (elsewhere vLLM merges with its kernel, which has no fault)."""
    if spec.placed:
        return
    if dcp == 1:
        raise EvalpipeError(
            f"fault {spec.label!r} breaks the merge of DCP shards, and this layout has no DCP "
            "(no shards, no merge); run it on a DCP layout, e.g. --layout tp2dcp2"
        )
    if spec.rank >= dcp:
        raise EvalpipeError(
            f"fault {spec.label!r}: rank {spec.rank} is not in the DCP group of {dcp} ranks "
            f"(rank=0 to {dcp - 1})"
        )
    if platform is not None and platform != "cpu":
        raise EvalpipeError(
            f"fault {spec.label!r} is injected by evalpipe's CPU DCP backend, which runs only "
            f"on the CPU platform; on {platform} vLLM merges DCP shards with its own kernel"
        )
