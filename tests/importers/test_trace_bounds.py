"""Bounded trace import and a detectable cut: the issue's hostile files, each refused with its
line (exit 1), cheaply, and the end line of exchange version 4.

- a 2 MB-ish trace whose header claims 25 million positions: refused after reading its
  header, within a few MB of memory (not 3.5 GB);
- a trace shorter than its sample's tokens, NaN or +inf inside the binary logprobs, a ``k``
  above the bound;
- a file cut at a line end inside the trace lines, or edited after export: the end line's
  counts and digest say so; a version 3 file (no end line) still imports, with a notice.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from evalpipe.cli import main
from evalpipe.errors import EvalpipeError
from evalpipe.importers.jsonl import export_run, import_run
from evalpipe.limits import MAX_LOGPROBS, MAX_TRACE_POSITIONS
from evalpipe.records import Run, RunConfig, Sample
from evalpipe.store import Store, open_store
from evalpipe.store.traces import put_answer, read_traces
from evalpipe.traces import DECODE, StoredTrace, TokenTrace, decode, encode, trace_of

CONFIG = RunConfig("m", "f", "t", "1", "p", "d", None, "tp1", "cpu", "serve", (), {}, 0, None, 1)
N = 12  # traced items


def _trace(n: int, k: int = 2) -> TokenTrace:
    ids = list(range(100, 100 + n))
    return trace_of(ids, [-0.5] * n, [[(i, -0.5)] for i in ids], k)


@pytest.fixture
def exported(tmp_path: Path) -> str:
    """A finished run of N items, each answer 4 tokens with its trace, exported (version 4)."""
    with open_store(tmp_path / "src.db") as s:
        s.create_run(Run("r", CONFIG, "finished", "2026-11-28T00:00:00+00:00"))
        for i in range(N):
            sample = Sample("r", str(i), "h", "abcd", "0", False, output_tokens=4)
            put_answer(s, sample, StoredTrace("r", str(i), DECODE, 3, _trace(4)))
        s.update_run(s.get_run("r").with_(**s.summarize("r")))
        out = io.StringIO()
        export_run(s, "r", out)
    return out.getvalue()


def _import(text: str, tmp_path: Path) -> Store:
    store = open_store(tmp_path / "dst.db")
    import_run(store, text.split("\n"), source="f.jsonl")
    return store


def _with_trace_data(text: str, blob: bytes, item: str = "0", **fields: int) -> str:
    """The export with item ``item``'s trace data replaced, resealed so only the data is bad."""
    from test_exchange import sealed

    lines = text.rstrip("\n").split("\n")[:-1]
    for n, line in enumerate(lines):
        value = json.loads(line)
        if "trace" in value and value["trace"]["item_id"] == item:
            value["trace"].update(data=base64.b64encode(blob).decode(), **fields)
            lines[n] = json.dumps(value)
    return "\n".join(sealed(lines)) + "\n"


def _raw(n: int, k: int, body: bytes) -> bytes:
    return zlib.compress(struct.pack("<4sIH", b"EPT1", n, k) + body, 9)


def _bomb(n: int, k: int) -> bytes:
    """A whole trace of ``n`` zeroed positions, compressed as it streams (never held)."""
    packer = zlib.compressobj(9)
    parts = [packer.compress(struct.pack("<4sIH", b"EPT1", n, k))]
    chunk, left = bytes(1 << 22), n * (8 + 8 * k)
    while left:
        parts.append(packer.compress(chunk[: min(left, len(chunk))]))
        left -= min(left, len(chunk))
    return b"".join([*parts, packer.flush()])


def test_an_export_round_trips_with_its_end_line(exported: str, tmp_path: Path) -> None:
    end = json.loads(exported.rstrip("\n").split("\n")[-1])["end"]
    assert (end["samples"], end["traces"]) == (N, N)
    with _import(exported, tmp_path) as store:
        assert len(read_traces(store, "r")) == N


def test_a_trace_claiming_25_million_positions_is_refused_cheaply(
    exported: str, tmp_path: Path
) -> None:
    bomb = _bomb(25_000_000, 5)  # 1.2 GB of zeros, 1.2 MB compressed
    assert len(bomb) < 2_000_000
    text = _with_trace_data(exported, bomb, n_tokens=25_000_000, k=5)
    tracemalloc.start()
    try:
        with pytest.raises(EvalpipeError, match=r"f.jsonl:\d+: trace 'data' cannot be read: .*4"):
            _import(text, tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{peak / 2**20:.0f} MB to refuse it"


def test_decode_stops_at_the_hard_cap_whatever_the_caller_allows() -> None:
    bomb = _raw(MAX_TRACE_POSITIONS + 1, 1, b"")
    with pytest.raises(ValueError, match=f"above the limit of {MAX_TRACE_POSITIONS}"):
        decode(bomb)
    with pytest.raises(ValueError, match=f"k={MAX_LOGPROBS + 1}, above the limit"):
        decode(_raw(1, MAX_LOGPROBS + 1, b""))


def test_a_trace_shorter_than_its_sample_is_refused(exported: str, tmp_path: Path) -> None:
    text = _with_trace_data(exported, encode(_trace(3)), n_tokens=3)
    with pytest.raises(EvalpipeError, match="the trace has 3 positions but its sample has 4"):
        _import(text, tmp_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_logprobs_inside_the_blob_are_refused(
    exported: str, tmp_path: Path, bad: float
) -> None:
    t = _trace(4)
    logprobs = t.logprobs.copy()
    logprobs[2] = bad
    raw = struct.pack("<4sIH", b"EPT1", 4, 2) + b"".join(
        a.astype(f).tobytes()
        for a, f in ((t.token_ids, "<i4"), (logprobs, "<f4"), (t.top_ids, "<i4"))
    )
    raw += t.top_logprobs.astype("<f4").tobytes()
    text = _with_trace_data(exported, zlib.compress(raw))
    with pytest.raises(EvalpipeError, match="NaN or \\+inf"):
        _import(text, tmp_path)


def test_minus_infinity_stays_a_logprob() -> None:
    t = trace_of([1, 2], [float("-inf"), -1.0], [[(1, -1.0)], []], 2)
    assert np.isneginf(decode(encode(t)).logprobs[0])


def test_a_file_cut_at_a_line_end_inside_the_traces_is_refused(
    exported: str, tmp_path: Path
) -> None:
    lines = exported.split("\n")
    cut = "\n".join(lines[: 1 + N + N - 10]) + "\n"  # every line whole, 10 traces lost
    with pytest.raises(EvalpipeError, match=r"no end line.*cut short after its 12 samples and 2"):
        _import(cut, tmp_path)


def test_an_end_line_that_does_not_match_is_refused(exported: str, tmp_path: Path) -> None:
    lines = exported.rstrip("\n").split("\n")
    edited = [*lines[: 1 + N], *lines[2 + N : -1], lines[-1]]  # one trace line dropped
    with pytest.raises(EvalpipeError, match=r"the end line says traces 12 but the file .* 11"):
        _import("\n".join(edited) + "\n", tmp_path)
    extra = [*lines, json.dumps({"item_id": "x", "output": "y", "correct": True})]
    with pytest.raises(EvalpipeError, match="a line after the end line"):
        _import("\n".join(extra) + "\n", tmp_path)


def test_a_version_3_file_imports_with_a_notice(
    exported: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = exported.rstrip("\n").split("\n")[:-1]
    head = json.loads(lines[0])
    head["run"]["schema_version"] = 3
    old = tmp_path / "old.jsonl"
    old.write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n")
    assert main(["runs", "import", str(old), "--store", str(tmp_path / "v3.db")]) == 0
    err = capsys.readouterr().err
    assert "version 3 file, which has no end line" in err
