"""Token-level comparison of two runs' traces: the typed result (``types``), the pure
estimators (``positions``, ``stats``, ``loc``, ``tail``, ``inference``), the verdict on a
tolerance (``verdict``), the store reads (``runs``) and the JSON edge (``json``, ``view``).

What a caller outside compare/ needs (the canary, a notebook) is re-exported here; the store
reads stay in :mod:`evalpipe.compare.tokens.runs`.
"""

from evalpipe.compare.tokens.inference import items_needed
from evalpipe.compare.tokens.types import (
    BoundaryTest,
    DivergenceShare,
    Excess,
    MetricSummary,
    PathComparison,
    TailTest,
    TokenComparison,
    TokenVerdict,
    Tolerance,
)
from evalpipe.compare.tokens.verdict import DEFAULT_TOKEN_MARGIN, TokenMargin, margin_from

__all__ = [
    "DEFAULT_TOKEN_MARGIN",
    "BoundaryTest",
    "DivergenceShare",
    "Excess",
    "MetricSummary",
    "PathComparison",
    "TailTest",
    "TokenComparison",
    "TokenMargin",
    "TokenVerdict",
    "Tolerance",
    "items_needed",
    "margin_from",
]
