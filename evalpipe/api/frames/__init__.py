"""Stored runs as pandas DataFrames, for notebooks and for ``evalpipe runs export --format
csv|parquet``: runs, samples, a comparison's paired items and a pair's token positions, with
documented columns and dtypes (:mod:`evalpipe.api.frames.columns`).

pandas is an optional extra (``pip install 'evalpipe[frames]'``; parquet also needs
``evalpipe[parquet]``), imported only when a frame is built: ``import evalpipe.api`` and
``evalpipe --help`` never load it.
"""

from evalpipe.api.frames.columns import PAIR_COLUMNS, RUN_COLUMNS, SAMPLE_COLUMNS, TOKEN_COLUMNS
from evalpipe.api.frames.pairs import pairs_frame, tokens_frame
from evalpipe.api.frames.runs import runs_frame, samples_frame
from evalpipe.api.frames.write import FORMATS, write_frame

TABLES = ("runs", "samples", "pairs", "tokens")
"""The frames by name, as ``evalpipe runs export --table`` calls them."""

__all__ = [
    "FORMATS",
    "PAIR_COLUMNS",
    "RUN_COLUMNS",
    "SAMPLE_COLUMNS",
    "TABLES",
    "TOKEN_COLUMNS",
    "pairs_frame",
    "runs_frame",
    "samples_frame",
    "tokens_frame",
    "write_frame",
]
