"""Rebuilding GSM8K from the request records that ship in a PyPI wheel."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from evalpipe.errors import EvalpipeError
from evalpipe.tasks.datafetch import GSM8K_SHA256, gsm8k_from_requests


def test_rebuild_from_requests_reproduces_the_upstream_file(shared_data: Path) -> None:
    rows = [json.loads(x) for x in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()]
    # The wheel holds several requests per doc (few-shot variants), in no particular order.
    requests = []
    for doc_id in reversed(range(len(rows))):
        for variant in range(2):
            doc = {**rows[doc_id], "extra": variant}
            requests.append(json.dumps({"doc_id": doc_id, "doc": doc}).encode())
    data = gsm8k_from_requests(requests)
    assert hashlib.sha256(data).hexdigest() == GSM8K_SHA256


def test_gaps_in_doc_ids_are_refused() -> None:
    lines = [
        json.dumps({"doc_id": i, "doc": {"question": "q", "answer": "a"}}).encode() for i in (0, 2)
    ]
    with pytest.raises(EvalpipeError, match="doc ids"):
        gsm8k_from_requests(lines)
