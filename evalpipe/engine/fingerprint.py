"""A weights fingerprint that identifies a model folder without reading terabytes.

Small files (config, tokenizer, anything under 64 MiB) are hashed whole; large weight files
contribute their name, size and the hash of their first and last 16 MiB. Two folders with the
same fingerprint hold the same config and tokenizer and the same weight shards, byte-sizes and
boundaries; a change anywhere in the middle of a multi-GB shard with the same size is the one
thing it cannot see, which is why the full config and tokenizer are always hashed in full.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_WHOLE_LIMIT = 64 * 1024 * 1024
_EDGE = 16 * 1024 * 1024
_SKIP_DIRS = {".git", ".cache", "__pycache__"}


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as f:
        if size <= _WHOLE_LIMIT:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f.read(_EDGE))
            f.seek(size - _EDGE)
            h.update(f.read(_EDGE))
    return h.hexdigest()


def model_fingerprint(model: str) -> str:
    """``sha256:<hex>`` for a local folder or file; ``name:<model>`` for a hub or served name.

    A name is not a fingerprint of weights; storing it as such makes that visible instead of
    pretending two runs used the same bytes.
    """
    path = Path(model).expanduser()
    if not path.exists():
        return f"name:{model}"
    files = (
        [path]
        if path.is_file()
        else sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not (_SKIP_DIRS & set(p.relative_to(path).parts))
        )
    )
    h = hashlib.sha256()
    for f in files:
        rel = f.name if path.is_file() else f.relative_to(path).as_posix()
        h.update(f"{rel}\0{f.stat().st_size}\0{_file_digest(f)}\n".encode())
    return "sha256:" + h.hexdigest()[:32]
