"""What an AISBench run folder holds, once read: frozen records shared by the reader, the
scoring rules and the run builder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AisSample:
    """One request of one (model, dataset) pair, joined from predictions, failures, details.

    ``index`` is AISBench's ``id`` (the position in the evaluated test split); ``prediction``
    is the raw model output (``None`` when the request failed, ``error`` then says why);
    ``reference``, ``extracted`` and ``correct`` come from the details (``None`` without).
    """

    index: int
    prompt: str | list[Any] | None
    prediction: str | None
    gold: str | None
    reference: str | None = None
    extracted: str | None = None
    correct: bool | None = None
    error: str | None = None
    uuid: str | None = None


@dataclass(frozen=True)
class AisDataset:
    """One (model abbr, dataset abbr) pair of a run folder with its configs and files."""

    model_abbr: str
    dataset_abbr: str
    model_cfg: dict[str, Any]
    dataset_cfg: dict[str, Any]
    samples: tuple[AisSample, ...]
    metrics: dict[str, Any]
    has_details: bool
    files: dict[str, str]
    """Relative path → sha256 of every file read for this pair."""


@dataclass(frozen=True)
class AisOutput:
    """A parsed AISBench run folder."""

    folder: str
    config_file: str
    config_sha256: str
    config: dict[str, Any]
    version: str | None
    started: str | None
    """Local time of the run from the folder (or config) name, ISO 8601 without offset."""
    results: tuple[AisDataset, ...]
