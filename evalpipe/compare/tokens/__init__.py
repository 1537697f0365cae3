"""Token-level comparison of two runs' traces: the typed result (``types``), the pure
estimators (``positions``, ``stats``, ``loc``, ``tail``, ``inference``), the verdict on a
tolerance (``verdict``), the store reads (``runs``) and the JSON edge (``json``, ``view``).

The typed results are re-exported here. Nothing heavier is: importing this package must stay
as cheap as its records (``evalpipe … --help`` imports them, and numpy and scipy must not load
there); the power (:func:`evalpipe.compare.tokens.inference.items_needed`) and the margin
(:mod:`evalpipe.compare.tokens.verdict`) are imported from their modules.
"""

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

__all__ = [
    "BoundaryTest",
    "DivergenceShare",
    "Excess",
    "MetricSummary",
    "PathComparison",
    "TailTest",
    "TokenComparison",
    "TokenVerdict",
    "Tolerance",
]
