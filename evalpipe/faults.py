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
}

TARGETS = ("k", "v", "kv")

PARAMS = ("size", "period", "offset", "width", "threshold", "target")
"""Every parameter a spec may set; ``size`` is required, the rest default as in
:func:`parse_fault`."""

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
    ``1 + size``) or a number of positions (kv-position, a nonzero integer)."""

    kind: str
    size: float
    period: int = 128
    offset: int = 127
    width: int = 1
    threshold: int = 0
    target: str = "k"

    @property
    def canonical(self) -> str:
        """Every parameter, in a fixed order: what a run's configuration stores and the
        engine's environment carries (``parse_fault(spec.canonical) == spec``)."""
        parts = [f"size={_number(self.size)}", f"period={self.period}"]
        parts += [f"offset={self.offset}", f"width={self.width}", f"threshold={self.threshold}"]
        if self.kind == "key-scale":
            parts.append(f"target={self.target}")
        return f"{self.kind}:{','.join(parts)}"

    @property
    def label(self) -> str:
        """A short name for tables and badges: the kind, its size and where it acts when that
        is not the default (``key-scale 0.2``, ``out-mix 0.1 p%8=7``, ``kv-position 4
        p>=1024``, ``key-scale 0.5 on v p%16=0-3``)."""
        text = f"{self.kind} {_number(self.size)}"
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
    """``KIND:size=S[,period=P][,offset=O][,width=W][,threshold=T][,target=k|v|kv]`` → a spec.

    Defaults: period 128, offset period − 1 (the last slot before a boundary), width 1,
    threshold 0, target k. Every problem is refused at once with what is allowed, before
    any engine starts.
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
        elif key not in PARAMS or (key == "target" and kind != "key-scale"):
            allowed = [p for p in PARAMS if p != "target" or kind == "key-scale"]
            takes = ", ".join(allowed)
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
    period = _int(raw, "period", 128, problems)
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
    if size is not None:
        _check_size(kind, size, problems)
    if problems or size is None:
        return None
    return FaultSpec(kind, size, period, offset, width, threshold, target)


def _check_size(kind: str, size: float, problems: list[str]) -> None:
    if kind == "kv-position":
        if not size.is_integer() or size == 0 or abs(size) > 1 << 20:
            problems.append(
                f"a kv-position size is a nonzero whole number of positions, not {_number(size)}"
            )
    elif kind == "out-mix":
        if not 0 < size <= 1:
            problems.append(
                f"the out-mix size is a share above 0 and at most 1, not {_number(size)}"
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
    """Refuse a fault the plugin cannot inject into ``model`` (its config's architectures)."""
    if any(a in ARCHITECTURES for a in architectures):
        return
    names = ", ".join(architectures) or "unknown"
    raise EvalpipeError(
        f"fault {spec.label!r} cannot apply to model {model}: its architecture ({names}) is "
        "not one whose attention evalpipe's plugin injects into. Supported: "
        + ", ".join(f"{k} ({v})" for k, v in ARCHITECTURES.items())
    )
