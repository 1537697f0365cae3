"""The weights fingerprint: what it sees and what it deliberately ignores."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalpipe.engine import fingerprint
from evalpipe.engine.fingerprint import model_fingerprint


def make_model(root: Path) -> Path:
    d = root / ".cache" / "models" / "m"  # a hidden cache dir above must not matter
    d.mkdir(parents=True)
    (d / "config.json").write_text('{"hidden_size": 8}')
    (d / "model.safetensors").write_bytes(b"\x00" * 1000)
    return d


def test_same_bytes_same_fingerprint_any_location(tmp_path: Path) -> None:
    a = make_model(tmp_path / "a")
    b = make_model(tmp_path / "b")
    fa = model_fingerprint(str(a))
    assert fa.startswith("sha256:") and fa == model_fingerprint(str(b))


def test_config_or_weights_change_the_fingerprint(tmp_path: Path) -> None:
    d = make_model(tmp_path)
    before = model_fingerprint(str(d))
    (d / "config.json").write_text('{"hidden_size": 9}')
    after_config = model_fingerprint(str(d))
    (d / "model.safetensors").write_bytes(b"\x01" + b"\x00" * 999)
    after_weights = model_fingerprint(str(d))
    assert len({before, after_config, after_weights}) == 3


def test_git_metadata_is_ignored(tmp_path: Path) -> None:
    d = make_model(tmp_path)
    before = model_fingerprint(str(d))
    (d / ".git").mkdir()
    (d / ".git" / "HEAD").write_text("ref: x")
    assert model_fingerprint(str(d)) == before


def test_large_files_hash_their_edges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fingerprint, "_WHOLE_LIMIT", 100)
    monkeypatch.setattr(fingerprint, "_EDGE", 10)
    f = tmp_path / "w.bin"
    f.write_bytes(bytes(range(200)))
    base = model_fingerprint(str(f))
    f.write_bytes(bytes(range(100)) + b"\xff" + bytes(range(101, 200)))  # a middle byte
    assert model_fingerprint(str(f)) == base  # the documented blind spot
    f.write_bytes(b"\xff" + bytes(range(1, 200)))  # the first byte
    assert model_fingerprint(str(f)) != base


def test_a_name_is_not_a_fingerprint() -> None:
    assert model_fingerprint("deepseek-ai/DeepSeek-V3.2") == "name:deepseek-ai/DeepSeek-V3.2"
