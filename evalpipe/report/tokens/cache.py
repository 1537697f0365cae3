"""A :class:`~evalpipe.compare.tokens.types.TokenComparison` as JSON values and back, exactly.

Not ``compare --json``'s form (:mod:`evalpipe.compare.tokens.json`, which writes non-finite
figures as ``null`` for strict parsers and adds derived figures): this one is lossless, for
the dashboard's cache (:mod:`evalpipe.report.cache`): what :func:`to_dict` writes,
:func:`from_dict` reads back into an equal record, empty bins, absent floors and non-finite
figures included (``json`` writes ``Infinity``/``NaN`` and reads them back). Numbers are made
plain Python ``int``/``float`` on the way out, so numpy scalars from the statistics never reach
``json``. A dict of another shape raises ``KeyError``/``TypeError``/``ValueError``, which the
cache treats as a miss. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, cast

from evalpipe.compare.tokens.types import (
    METRICS,
    PATHS,
    TOKEN_VERDICTS,
    Bin,
    BoundaryTest,
    Decision,
    DivergenceShare,
    Excess,
    Metric,
    MetricSummary,
    PartingSplit,
    Path,
    PathComparison,
    TailTest,
    TokenComparison,
    Tolerance,
)


def _plain(value: Any) -> Any:
    """JSON values only: numpy scalars become int/float, tuples lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu":
        return int(value)
    return float(value)


def to_dict(tokens: TokenComparison) -> dict[str, Any]:
    """``tokens`` as JSON values (see the module docstring)."""
    return cast(dict[str, Any], _plain(asdict(tokens)))


def _path(name: object) -> Path:
    if name not in PATHS:
        raise ValueError(f"not a token path: {name!r}")
    return name


def _metrics(d: Mapping[str, Any]) -> dict[Metric, MetricSummary]:
    out: dict[Metric, MetricSummary] = {}
    for name, summary in d.items():
        if name not in METRICS:
            raise ValueError(f"not a token metric: {name!r}")
        out[name] = MetricSummary(**summary)
    return out


def _ints(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _path_comparison(d: Mapping[str, Any]) -> PathComparison:
    """The fields that are records or tuples rebuilt; the others (numbers, text, and any
    field added later) passed through, so an unknown key raises ``TypeError``."""
    verdict = d["verdict"]
    if verdict not in TOKEN_VERDICTS:
        raise ValueError(f"not a token verdict: {verdict!r}")
    floor_metrics = d["floor_metrics"]
    return PathComparison(
        **{
            **d,
            "path": _path(d["path"]),
            "metrics": _metrics(d["metrics"]),
            "first_divergence": _ints(d["first_divergence"]),
            "divergence_offsets": _ints(d["divergence_offsets"]),
            "divergence_share": _optional(DivergenceShare, d["divergence_share"]),
            "parting": _optional(PartingSplit, d["parting"]),
            "by_residue": tuple(Bin(**b) for b in d["by_residue"]),
            "by_band": tuple(Bin(**b) for b in d["by_band"]),
            "boundary": _boundary(d["boundary"]),
            "excess": _excess(d["excess"]),
            "tail": _optional(TailTest, d["tail"]),
            "floor_metrics": None if floor_metrics is None else _metrics(floor_metrics),
            "decision": _decision(d["decision"]),
        }
    )


def _optional(kind: Any, d: Mapping[str, Any] | None) -> Any:
    return None if d is None else kind(**d)


def _boundary(d: Mapping[str, Any] | None) -> BoundaryTest | None:
    return None if d is None else BoundaryTest(**{**d, "windows": _ints(d["windows"])})


def _excess(d: Mapping[str, Any] | None) -> Excess | None:
    if d is None:
        return None
    return Excess(**{**d, "item_values": tuple(float(v) for v in d["item_values"])})


def _decision(d: Mapping[str, Any] | None) -> Decision | None:
    return None if d is None else Decision(**{**d, "tolerance": Tolerance(**d["tolerance"])})


def from_dict(d: Mapping[str, Any]) -> TokenComparison:
    """The record :func:`to_dict` wrote (raises on a dict of another shape)."""
    period = d["period"]
    return TokenComparison(
        run_id=str(d["run_id"]),
        baseline_id=str(d["baseline_id"]),
        period=None if period is None else int(period),
        paths={_path(k): _path_comparison(v) for k, v in d["paths"].items()},
        unavailable={_path(k): str(v) for k, v in d["unavailable"].items()},
    )
