"""Deterministic task-data generators (``arith``, ``passkey``, ``needle-multi``), by name.

Importing the package registers every built-in generator; callers use :func:`get`,
:func:`generate`, :func:`check_params` and :func:`source_id`.
"""

from evalpipe.tasks.generators import arith, longctx
from evalpipe.tasks.generators.registry import (
    Generator,
    Rows,
    check_params,
    generate,
    get,
    register,
    source_id,
)

__all__ = [
    "Generator",
    "Rows",
    "arith",
    "check_params",
    "generate",
    "get",
    "longctx",
    "register",
    "source_id",
]
