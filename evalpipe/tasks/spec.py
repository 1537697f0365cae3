"""What a task is once loaded: :class:`TaskSpec` (with its :class:`DataSpec`), and the
:class:`Item` s and :class:`Dataset` its data source yields. Plain frozen records, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalpipe.tasks.scoring import ExtractorSpec


@dataclass(frozen=True)
class DataSpec:
    """Where a task's items come from and which record fields it uses.

    ``fields`` maps template variable -> record field and always has ``target``; exactly one
    of ``source`` (``hf:org/name``) and ``generator`` may be set (neither: file only).
    """

    fields: Mapping[str, str]
    target_transform: str = "none"
    source: str | None = None
    hf_config: str | None = None
    hf_split: str = "test"
    hf_revision: str | None = None
    data_dir_file: str | None = None
    generator: str | None = None
    generator_params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """A loaded, validated task; ``template_hash`` covers everything that shapes a request
    apart from the item (template, system message, few-shot exemplars, field mapping,
    request kind, stop strings, sampling)."""

    name: str
    version: str
    description: str
    path: Path
    data: DataSpec
    fewshot: tuple[Mapping[str, Any], ...]
    fewshot_source: str | None
    request: str
    template_name: str
    template: str
    system: str | None
    sampling: Mapping[str, Any]
    stop: tuple[str, ...]
    extractors: tuple[ExtractorSpec, ...]
    primary: str
    metric: str
    template_hash: str


@dataclass(frozen=True)
class Item:
    """One item: its template fields (never the target) and the target answer text.

    ``item_id`` is the 0-based index in the source, as text, so ids agree across the file,
    ``hf:`` and data-directory copies of the same data and under ``--limit``.
    """

    item_id: str
    fields: Mapping[str, Any]
    target: str


@dataclass(frozen=True)
class Dataset:
    """Items to evaluate (the first ``limit`` of ``n_total``) and where they came from."""

    items: tuple[Item, ...]
    source: str
    sha256: str | None
    n_total: int
