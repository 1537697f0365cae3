"""A frame to a CSV or parquet file, written whole or not at all (:mod:`evalpipe.paths`)."""

from __future__ import annotations

import io
import os
from typing import IO, TYPE_CHECKING, Any

from evalpipe.api.frames.columns import PARQUET_EXTRA
from evalpipe.errors import EvalpipeError

if TYPE_CHECKING:
    from evalpipe.api.frames.columns import DataFrame

FORMATS = ("csv", "parquet")
"""What :func:`write_frame` writes: CSV (UTF-8, a header line, ``<NA>`` as an empty field,
maps and lists as JSON text, times as ``2026-11-30 12:00:00+00:00``) and parquet (every dtype
kept, ``df.attrs`` too; needs pyarrow)."""


def write_frame(df: DataFrame, out: str | os.PathLike[str] | IO[Any], fmt: str = "csv") -> None:
    """Write ``df`` as ``fmt`` (:data:`FORMATS`) to ``out``, a file path (replaced only when
    the file is complete) or an open stream (text for CSV, binary for parquet).

    Example::

        write_frame(samples_frame("evalpipe.db", task="gsm8k"), "samples.parquet", "parquet")
    """
    from evalpipe.paths import open_atomic, write_atomic

    if fmt not in FORMATS:
        raise EvalpipeError(f"unknown table format {fmt!r}: one of {', '.join(FORMATS)}")
    if not isinstance(out, (str, os.PathLike)):
        if fmt == "parquet":
            out.write(parquet_bytes(df))
        else:
            df.to_csv(out, index=False)
    elif fmt == "parquet":
        write_atomic(os.fspath(out), parquet_bytes(df))
    else:
        with open_atomic(os.fspath(out)) as stream:
            df.to_csv(stream, index=False)


def parquet_bytes(df: DataFrame) -> bytes:
    """``df`` as a parquet file's bytes (pyarrow), or an error naming the extra."""
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise EvalpipeError(f"writing parquet needs pyarrow ({exc}): {PARQUET_EXTRA}") from exc
    buffer = io.BytesIO()
    df.to_parquet(buffer, engine="pyarrow", index=False)
    return buffer.getvalue()
