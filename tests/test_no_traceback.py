"""No traceback reaches a user: every command, run as a user runs it (``python -m evalpipe``),
against a table of bad inputs — files that are not what they claim, stores that cannot be
opened, URLs, layouts and policies a hand or a script got wrong, outputs that cannot be
written. Each row must end with a message and the documented exit code, never with "Traceback
(most recent call last)". No engine: ``--endpoint`` points at a port where nothing listens.

Adding a command adds a row: :func:`test_every_command_has_a_row` fails otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from evalpipe import api
from evalpipe.cli import build_parser

FIXTURES = Path(__file__).parent / "fixtures"
NOWHERE = "http://127.0.0.1:9"  # the discard port: connection refused at once
TRACEBACK = "Traceback (most recent call last)"


@dataclass(frozen=True)
class Row:
    """``evalpipe ARGS`` (``{w}`` is the row's own copy of the bad inputs) and its exit code
    (``None``: any, the input may be accepted; only a traceback fails the row)."""

    name: str
    args: tuple[str, ...]
    code: int | None = 1


def row(name: str, command: str | tuple[str, ...], code: int | None = 1) -> Row:
    """``command``: shell words (``shlex``), or the arguments themselves."""
    return Row(name, tuple(shlex.split(command)) if isinstance(command, str) else command, code)


GOOD = "--store {w}/good.db"
LAYOUTS = ("tp0", "tp" + "9" * 40, "tp\u0661", "tp2tp2", "", "dcp2" * 500, "tp1\x1b")
STORES = {
    "port out of range": "postgresql://u@localhost:99999/db",
    "port not a number": "postgresql://u:pw@host:notaport/db",
    "port zero": "postgresql://u@localhost:0/db",
    "ipv6 unclosed": "postgresql://u@[::1/db",
    "nobody listening": "postgresql://u@127.0.0.1:9/db",
    "unsupported dialect": "mysql://u@localhost/db",
    "no scheme": "://nothing",
    "sqlite in a missing folder": "sqlite:///{w}/missing/x.db",
    "not a database": "{w}/notdb.db",
    "a directory": "{w}/folder",
    "damaged pages": "{w}/damaged.db",
}
IMPORTS = (
    "invalid-utf8", "binary", "deep-run", "deep-meta", "huge-int", "huge-float", "nan",
    "empty", "not-an-object", "bad-layout", "bad-timestamp",
)  # fmt: skip
POLICIES = (
    "missing", "deep", "huge-min-n", "huge-float-min-n", "duplicate-key", "binary",
    "invalid-utf8", "not-a-mapping",
)  # fmt: skip
RUN = f"--endpoint {NOWHERE} --store {{w}}/run.db"

TYPO = "--store {w}/typo.db"
PLAN = "{w}/sweep-nowhere.yaml"
TRACED = ("trace-bomb", "trace-short", "trace-nan", "trace-cut")
GATE = "gate --policy {w}/policy.yaml"
READS = (
    "runs list", "runs show base", "runs export base", "compare cp",
    "score cp --against base", "comment --repo o/r --pr 1 --run cp --dry-run",
)  # fmt: skip
HARDENING_II = [
    # Outputs that would destroy an input or another output, or a protected file.
    row("runs export: -o the store", "runs export base -o {w}/good.db --store {w}/good.db"),
    row("runs export: -o the store's -wal", f"runs export base -o {{w}}/good.db-wal {GOOD}"),
    row("runs export: -o a link to the store", f"runs export base -o {{w}}/store-link {GOOD}"),
    row("runs export: -o write-protected", f"runs export base -o {{w}}/readonly.md {GOOD}"),
    row("gate: --junit the store", f"{GATE} --junit {{w}}/good.db {GOOD}", 3),
    row("gate: --markdown the policy", f"{GATE} --markdown {{w}}/policy.yaml {GOOD}", 3),
    row("gate: one file for both", f"{GATE} --junit {{w}}/r --markdown {{w}}/r {GOOD}", 3),
    row("gate: --markdown write-protected", f"{GATE} --markdown {{w}}/readonly.md {GOOD}", 3),
    row(
        "dashboard: the store at a page path",
        "dashboard --out {w}/site-store --store {w}/site-store/index.html --force",
    ),
    row(
        "sweep: --dashboard over the plan",
        "sweep {w}/board/plan.html --dashboard {w}/board --dry-run",
    ),
    row("store copy: into itself", "store copy {w}/good.db {w}/good.db"),
    # Read commands on a typo create no store.
    *(row(f"{' '.join(c.split()[:2])}: store typo", f"{c} {TYPO}") for c in READS),
    # Every size bounded, the bound named; out of range is usage (2).
    row("compare: shard period 10^20", f"compare cp --shard-period {'9' * 20} {GOOD}", 2),
    row("dashboard: shard period 2^63", f"dashboard --shard-period {2**63} {GOOD}", 2),
    row("dashboard: pair with itself", f"dashboard --out {{w}}/site --pair tp2=tp2 {GOOD}"),
    row("run: concurrency 10^8", f"run arith --concurrency 100000000 {RUN}", 2),
    row("run: repeat 10^6", f"run arith --repeat 1000000 {RUN}", 2),
    row("run: logprobs -1", f"run arith --logprobs -1 {RUN}", 2),
    *(
        row(f"run: request timeout {v}", f"run arith --request-timeout {v} {RUN}", 2)
        for v in ("0", "-1", "nan")
    ),
    row(
        "run: baseline on its own layout",
        f"run arith --layout tp2 --with-baseline --baseline-layout tp2 {RUN}",
    ),
    row("sweep: repeat 10^6 in the plan", f"sweep {{w}}/sweep-repeat.yaml --dry-run {GOOD}"),
    row("sweep: --repeat 0", f"sweep {PLAN} --repeat 0 --dry-run {GOOD}", 2),
    row("sweep: --devices 0", f"sweep {PLAN} --devices 0 --dry-run {GOOD}", 2),
    row("sweep: --devices -2", f"sweep {PLAN} --devices -2 --dry-run {GOOD}", 2),
    row("sweep: store in a missing folder", f"sweep {PLAN} --store {{w}}/no/s.db"),
    row("sweep: platform tpu, no tasks", f"sweep {{w}}/sweep-tpu.yaml --dry-run {GOOD}"),
    row("sweep: endpoint of no layout", f"sweep {{w}}/sweep-endpoint.yaml --dry-run {GOOD}"),
    row("comment: --baseline is no flag", f"comment --repo o/r --pr 1 --baseline cp {GOOD}", 2),
    # Bounded trace import, and a cut file.
    *(row(f"runs import: {n}", f"runs import {{w}}/{n}.jsonl {TYPO}") for n in TRACED),
    row("runs import: version 3, no end line", f"runs import {{w}}/v3.jsonl {TYPO}", 0),
]

ROWS: list[Row] = [
    # The damage hits the samples' pages: listing and showing runs may still work.
    *(
        row(f"runs list: {k}", ("runs", "list", "--store", v), None if "damaged" in k else 1)
        for k, v in STORES.items()
    ),
    *(
        row(f"dashboard: {k}", ("dashboard", "--out", "{w}/site", "--store", v))
        for k, v in STORES.items()
    ),
    row("runs list: limit not a number", "runs list --limit x", code=2),
    row("runs show: missing run", f"runs show nope {GOOD}"),
    row("runs show: empty id", f"runs show '' {GOOD}"),
    row("runs show: damaged store", "runs show big --store {w}/damaged.db", code=None),
    row(
        "runs export: missing run, existing -o", f"runs export nope -o {{w}}/existing.jsonl {GOOD}"
    ),
    row("runs export: -o a directory", f"runs export base -o {{w}}/folder {GOOD}"),
    row("runs export: -o in a missing folder", f"runs export base -o {{w}}/no/r.jsonl {GOOD}"),
    row("runs export: full disk", f"runs export base -o /dev/full {GOOD}"),
    row("runs export: damaged store", "runs export big --store {w}/damaged.db"),
    *(
        row(f"runs import: {n}", f"runs import {{w}}/{n}.jsonl --store {{w}}/import.db")
        for n in IMPORTS
    ),
    row("runs import: NUL characters", "runs import {w}/nul.jsonl --store {w}/i.db", code=None),
    row("runs import: missing file", "runs import {w}/missing.jsonl"),
    row("runs import: a directory", "runs import {w}/folder"),
    row("import lm-eval: missing folder", "import lm-eval {w}/missing --layout tp1"),
    row("import lm-eval: a file", "import lm-eval {w}/existing.jsonl --layout tp1"),
    row("import lm-eval: empty folder", "import lm-eval {w}/empty --layout tp1"),
    row("import lm-eval: results not JSON", "import lm-eval {w}/lmeval-bad-results"),
    row("import lm-eval: binary samples", "import lm-eval {w}/lmeval-binary-samples"),
    row("import lm-eval: bad layout", "import lm-eval {w}/lmeval --layout tp0"),
    row("import aisbench: missing folder", "import aisbench {w}/missing --layout tp1"),
    row("import aisbench: empty folder", "import aisbench {w}/empty --layout tp1"),
    row("import aisbench: binary predictions", "import aisbench {w}/ais-binary --layout tp1"),
    row("store migrate: not a database", "store migrate --store {w}/notdb.db"),
    row("store migrate: a directory", "store migrate --store {w}/folder"),
    row("store migrate: bad port", "store migrate --store postgresql://u@h:99999/d"),
    row("store copy: missing source", "store copy {w}/missing.db {w}/copy.db"),
    row("store copy: into a directory", "store copy {w}/good.db {w}/folder"),
    row("store copy: damaged source", "store copy {w}/damaged.db {w}/copy.db"),
    row("compare: missing run", f"compare nope {GOOD}"),
    row("compare: a run with itself", f"compare cp --baseline cp {GOOD}"),
    row("compare: junk baseline layout", f"compare base --baseline-layout tp0x {GOOD}"),
    row("compare: margin nan", f"compare cp --baseline base --margin nan {GOOD}", code=2),
    row("compare: margin 0", f"compare cp --baseline base --margin 0 {GOOD}", code=2),
    row("compare: margin negative", f"compare cp --baseline base --margin -1 {GOOD}", code=2),
    row("compare: alpha above 1", f"compare cp --baseline base --alpha 5 {GOOD}", code=2),
    row("compare: huge min-n", f"compare cp --baseline base --min-n {'9' * 30} {GOOD}", None),
    row("compare: shard period 0", f"compare cp --baseline base --shard-period 0 {GOOD}", 2),
    row("compare: damaged store", "compare big --baseline big --store {w}/damaged.db"),
    row("comment: no tagged runs", f"comment --repo o/r --pr 1 --dry-run {GOOD}"),
    row(
        "comment: junk repo",
        f"comment --repo 'not a repo' --pr 1 --run cp --baseline-layout tp1 --dry-run {GOOD}",
        code=None,
    ),
    *(row(f"gate: policy {n}", f"gate --policy {{w}}/{n}.yaml {GOOD}", code=3) for n in POLICIES),
    row("gate: policy a directory", f"gate --policy {{w}}/folder {GOOD}", code=3),
    row("gate: store typo", "gate --policy {w}/policy.yaml --store {w}/TYPO.db", code=4),
    row("gate: store not a database", "gate --policy {w}/policy.yaml --store {w}/notdb.db", 4),
    row(
        "gate: store bad port", "gate --policy {w}/policy.yaml --store postgresql://u@h:99999/d", 4
    ),
    row("gate: junit into a directory", f"gate --policy {{w}}/policy.yaml {GOOD} --junit {{w}}", 3),
    row("dashboard: --out an existing file", f"dashboard --out {{w}}/existing.jsonl {GOOD}"),
    row("dashboard: --out below a file", f"dashboard --out {{w}}/existing.jsonl/site {GOOD}"),
    row("dashboard: junk pair", f"dashboard --out {{w}}/site --pair tp2 {GOOD}"),
    row("dashboard: junk pair layout", f"dashboard --out {{w}}/site --pair tp0=tp1 {GOOD}"),
    row("dashboard: shard period -1", f"dashboard --out {{w}}/site --shard-period -1 {GOOD}", 2),
    row("score: missing run", f"score nope --against base --endpoint {NOWHERE} {GOOD}"),
    row("score: missing baseline", f"score cp --against nope --endpoint {NOWHERE} {GOOD}"),
    row("run: nothing at the endpoint", f"run arith --model m {RUN}"),
    *(row(f"run: layout {v!r}", ("run", "arith", "--layout", v, *RUN.split())) for v in LAYOUTS),
    row("run: margin nan", f"run arith --with-baseline --margin nan {RUN}", code=2),
    row("run: endpoint not a URL", "run arith --endpoint 'not a url' --store {w}/run.db"),
    row("run: engine arg without a value", f"run arith --engine-arg dtype {RUN}"),
    row("run: param bad YAML", f"run arith --param 'lengths=[1,' {RUN}"),
    row("run: concurrency 0", f"run arith --concurrency 0 {RUN}", 2),
    row("run: negative limit", f"run arith --limit -3 {RUN}", 2),
    row("run: max error rate 5", f"run arith --max-error-rate 5 {RUN}", 2),
    row("run: repeat 0", f"run arith --repeat 0 {RUN}", 2),
    row("run: resume a missing run", f"run arith --resume nope --endpoint {NOWHERE} {GOOD}"),
    row("run: data binary", f"run gsm8k --data {{w}}/binary.jsonl {RUN}"),
    row("run: data missing", f"run gsm8k --data {{w}}/missing.jsonl {RUN}"),
    row("run: data a directory", f"run gsm8k --data {{w}}/folder {RUN}"),
    row("run: task file junk", f"run {{w}}/task-junk.yaml {RUN}"),
    row("run: task file deep", f"run {{w}}/task-deep.yaml {RUN}"),
    row("run: bad store", f"run arith --endpoint {NOWHERE} --store postgresql://u@h:x/d"),
    row("run: missing model path", "run arith --model {w}/no-such-model --store {w}/run.db"),
    row("sweep: plan missing", f"sweep {{w}}/no-plan.yaml {GOOD}"),
    row("sweep: plan binary", f"sweep {{w}}/binary.yaml {GOOD}"),
    row("sweep: plan deep", f"sweep {{w}}/deep.yaml {GOOD}"),
    row("sweep: plan a directory", f"sweep {{w}}/folder {GOOD}"),
    row("sweep: plan invalid UTF-8", f"sweep {{w}}/invalid-utf8.yaml {GOOD}"),
    row("sweep: no plan, no flags", f"sweep {GOOD}"),
    row("sweep: nothing at the endpoint", f"sweep {{w}}/sweep-nowhere.yaml {GOOD}"),
    row(
        "sweep: ray unreachable",
        f"sweep {{w}}/sweep-nowhere.yaml --executor ray --ray-address 127.0.0.1:9 {GOOD}",
    ),
    row(
        "sweep: ray address junk",
        f"sweep {{w}}/sweep-nowhere.yaml --executor ray --ray-address ::: {GOOD}",
    ),
    row(
        "sweep: too many devices",
        f"sweep --models {{w}}/folder --tasks arith --layouts tp2 --devices 1 {GOOD}",
    ),
    row("sweep: layout junk", f"sweep --models {{w}}/folder --tasks arith --layouts tp0 {GOOD}"),
    row("sweep: max retries -1", f"sweep {{w}}/sweep-nowhere.yaml --max-retries -1 {GOOD}", 2),
    row("canary: grid missing", f"canary --grid {{w}}/no-grid.yaml {GOOD}"),
    row("canary: grid binary", f"canary --grid {{w}}/binary.yaml {GOOD}"),
    row("canary: grid a directory", f"canary --grid {{w}}/folder {GOOD}"),
    row("canary: grid invalid UTF-8", f"canary --grid {{w}}/invalid-utf8.yaml {GOOD}"),
    row("canary: grid deep", f"canary --grid {{w}}/deep.yaml {GOOD}"),
    row("canary: too many starts", f"canary --max-starts 2 {GOOD}"),
    row("canary: max starts junk", f"canary --max-starts x {GOOD}", 2),
    row("canary: layout junk", f"canary --layout tp0 --model {{w}}/folder {GOOD}"),
    row("run: fault junk", f"run arith --fault nope {RUN}"),
    row("run: fault size nan", f"run arith --fault key-scale:size=nan {RUN}"),
    row("run: fault huge period", f"run arith --fault key-scale:size=1,period={'9' * 40} {RUN}"),
    row("run: request order junk", f"run arith --request-order sideways {RUN}", 2),
    *HARDENING_II,
    *(row(f"layout explain: {v!r}", ("layout", "explain", v)) for v in LAYOUTS),
    row("layout explain: missing model", "layout explain tp1 --model {w}/no-such-model"),
    row("model fetch: unknown model", "model fetch no-such-model", code=2),
    row("model list: junk argument", "model list --junk", code=2),
    row("data fetch: unknown dataset", "data fetch no-such-data", code=2),
    row("tasks list: junk argument", "tasks list --junk", code=2),
]


def _commands() -> set[str]:
    found: set[str] = set()

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            found.add(" ".join(prefix))
        for action in subs:
            for name, child in action.choices.items():
                walk(child, [*prefix, name])

    walk(build_parser(), [])
    return found


def test_every_command_has_a_row() -> None:
    covered = {
        " ".join(r.args[:n]) for r in ROWS for n in (1, 2) if " ".join(r.args[:n]) in _commands()
    }
    assert sorted(_commands() - covered) == []


# --- the bad inputs ---------------------------------------------------------------------


def _jsonl(run: dict[str, object], samples: list[dict[str, object]]) -> str:
    fields = {"model": "m", "task": "gsm8k", "task_version": "1.0", "layout": "tp1", **run}
    return "".join(json.dumps(line) + "\n" for line in [{"run": fields}, *samples])


def _samples(n: int, output: str = "The answer is 1.") -> list[dict[str, object]]:
    return [
        {"item_id": str(i), "output": output, "correct": i % 3 != 0, "prompt": f"q{i}"}
        for i in range(n)
    ]


def _damage(db: Path) -> None:
    """Overwrite pages in the middle of the file (the samples' pages), keep the schema page."""
    data = bytearray(db.read_bytes())
    page = 4096
    pages = len(data) // page
    for p in range(pages // 3, 2 * pages // 3):
        data[p * page : (p + 1) * page] = bytes([0xA5]) * page
    db.write_bytes(bytes(data))


def _stores(w: Path) -> None:
    good = str(w / "good.db")
    for rid, layout in (("base", "tp1"), ("cp", "tp2")):
        (w / f"{rid}.src").write_text(_jsonl({"run_id": rid, "layout": layout}, _samples(6)))
        api.import_run(good, str(w / f"{rid}.src"))
    big = w / "big.src"
    big.write_text(_jsonl({"run_id": "big"}, _samples(3000, "x" * 300)))
    api.import_run(str(w / "damaged.db"), str(big))
    _damage(w / "damaged.db")
    (w / "notdb.db").write_bytes(b"this is not a database" * 200)
    for name in ("folder", "empty"):
        (w / name).mkdir()
    (w / "existing.jsonl").write_text("keep me\n")


def _imports(w: Path) -> None:
    base = {"model": "m", "task": "gsm8k", "task_version": "1.0", "layout": "tp1"}
    head = json.dumps({"run": base})
    sample = json.dumps(_samples(1)[0])
    files = {
        "invalid-utf8": head.encode() + b"\n" + b'{"item_id": "0", "output": "\xff\xfe", '
        b'"correct": true}\n',
        "binary": bytes(range(256)) * 40,
        "deep-run": ('{"run": ' + "[" * 200_000 + "]" * 200_000 + "}\n").encode(),
        "deep-meta": (
            head
            + "\n"
            + sample[:-1]
            + ', "meta": '
            + '{"a":' * 100_000
            + "1"
            + "}" * 100_000
            + "}\n"
        ).encode(),
        "huge-int": (
            json.dumps({"run": base})[:-2] + ', "seed": ' + "9" * 100_000 + "}}\n" + sample + "\n"
        ).encode(),
        "huge-float": (
            json.dumps({"run": base})[:-2] + ', "seed": 1e999999}}\n' + sample + "\n"
        ).encode(),
        "nan": (head + "\n" + sample[:-1] + ', "latency_s": NaN}\n').encode(),
        "nul": (head + "\n" + json.dumps({**_samples(1)[0], "output": "a\x00b"}) + "\n").encode(),
        "empty": b"",
        "not-an-object": b"[1, 2, 3]\n",
        "bad-layout": _jsonl({"layout": "tp0x"}, _samples(1)).encode(),
        "bad-timestamp": _jsonl({"started_at": "yesterday"}, _samples(1)).encode(),
    }
    for name, data in files.items():
        (w / f"{name}.jsonl").write_bytes(data)


def _policies(w: Path) -> None:
    ok = (
        "name: t\nrequirements:\n  - model: m\n    task: gsm8k\n    layouts: [tp2]\n"
        "    baseline_layout: tp1\nmargin: 1.0\nalpha: 0.05\n"
    )
    files = {
        "policy": ok.encode(),
        "deep": (ok + "description: " + "[" * 50_000 + "]" * 50_000 + "\n").encode(),
        "huge-min-n": (ok + "min_n: " + "9" * 5000 + "\n").encode(),
        "huge-float-min-n": (ok + "min_n: 1e400\n").encode(),
        "duplicate-key": (ok + "margin: 50\n").encode(),
        "binary": bytes(range(256)) * 8,
        "invalid-utf8": ok.encode() + b"description: \xff\xfe\n",
        "not-a-mapping": b"- just\n- a list\n",
    }
    for name, data in files.items():
        (w / f"{name}.yaml").write_bytes(data)
    (w / "task-junk.yaml").write_bytes(b"name: [unclosed\n\x00\xff")
    (w / "sweep-nowhere.yaml").write_text(
        f"models: [{{name: m, endpoints: {{tp1: '{NOWHERE}'}}}}]\ntasks: [arith]\n"
        "layouts: [tp1]\nlimit: 2\n"
    )
    (w / "task-deep.yaml").write_text("name: " + "[" * 50_000 + "]" * 50_000 + "\n")


def _outputs(w: Path) -> None:
    """What outputs must not destroy: a link to the store, a protected file, a store and a
    plan inside folders a dashboard would render into, and hostile sweep plans."""
    (w / "store-link").symlink_to("good.db")  # relative: still the row's own store
    (w / "readonly.md").write_text("mine\n")
    (w / "readonly.md").chmod(0o444)
    (w / "site-store").mkdir()
    shutil.copy(w / "good.db", w / "site-store" / "index.html")
    (w / "board").mkdir()
    shutil.copy(w / "sweep-nowhere.yaml", w / "board" / "plan.html")
    endpoint = f"models: [{{name: m, endpoints: {{tp1: '{NOWHERE}', tp8: '{NOWHERE}'}}}}]\n"
    plans = {
        "sweep-repeat": endpoint + "tasks: [arith]\nlayouts: [tp1]\nrepeat: 1000000\n",
        "sweep-tpu": endpoint + "platform: tpu\nlayouts: [tp1]\n",
        "sweep-endpoint": endpoint + "tasks: [arith]\nlayouts: [tp1]\n",
    }
    for name, text in plans.items():
        (w / f"{name}.yaml").write_text(text)


def _traced(w: Path) -> None:
    """Version 4 files with one traced item: a trace whose header claims 25 M positions (1.2
    MB compressed), one shorter than its sample, NaN inside the blob, a file cut at a line
    end; and a whole version 3 file."""
    import base64
    import struct
    import zlib

    from evalpipe.traces import encode, trace_of

    def blob(n: int, logprob: float = -0.5) -> bytes:
        return encode(trace_of(list(range(n)), [logprob] * n, [[]] * n, 1))

    raw = zlib.decompress(blob(4))
    packer = zlib.compressobj(9)
    bomb = [packer.compress(struct.pack("<4sIH", b"EPT1", 25_000_000, 1))]
    size = 25_000_000 * 16  # k = 1: 16 bytes a position, 400 MB of zeros
    bomb += [packer.compress(bytes(min(1 << 22, size - at))) for at in range(0, size, 1 << 22)]
    datas = {
        "trace-bomb": (b"".join([*bomb, packer.flush()]), 25_000_000),
        "trace-short": (blob(3), 3),
        # logprob -0.5 (0xbf000000) becomes a NaN (0x7fc00000) inside the blob
        "trace-nan": (zlib.compress(raw.replace(b"\0\0\0\xbf", b"\0\0\xc0\x7f", 1)), 4),
        "trace-cut": (blob(4), 4),
        "v3": (blob(4), 4),
    }  # fmt: skip
    for name, (data, n) in datas.items():
        head = {"model": "m", "task": "gsm8k", "task_version": "1", "layout": "tp1"}
        head["schema_version"] = 3 if name == "v3" else 4
        sample = {"item_id": "0", "output": "abcd", "correct": True, "output_tokens": 4}
        trace = {"item_id": "0", "source": "", "start": 1, "k": 1, "n_tokens": n}
        trace["data"] = base64.b64encode(data).decode()
        lines = [json.dumps(x) for x in ({"run": head}, sample, {"trace": trace})]
        if name not in ("v3", "trace-cut"):
            digest = hashlib.sha256("".join(f"{x}\n" for x in lines).encode()).hexdigest()
            lines.append(json.dumps({"end": {"samples": 1, "traces": 1, "sha256": digest}}))
        (w / f"{name}.jsonl").write_text("".join(f"{x}\n" for x in lines))


def _harness_outputs(w: Path) -> None:
    lm = w / "lmeval"
    shutil.copytree(FIXTURES / "lmeval" / "gsm8k-smollm2-tp1", lm)
    for name, pattern, data in (
        ("lmeval-bad-results", "results_*.json", b"{ not json"),
        ("lmeval-binary-samples", "samples_*.jsonl", bytes(range(256)) * 16),
    ):
        shutil.copytree(lm, w / name)
        for path in (w / name).rglob(pattern):
            path.write_bytes(data)
    ais = w / "ais-binary"
    shutil.copytree(FIXTURES / "aisbench" / "details" / "20261128_072944", ais)
    for path in (ais / "predictions").rglob("*.json*"):
        path.write_bytes(bytes(range(256)) * 16)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    w = tmp_path_factory.mktemp("bad-inputs")
    _stores(w)
    _imports(w)
    _policies(w)
    _harness_outputs(w)
    _outputs(w)
    _traced(w)
    return w


def _run(case: Row, inputs: Path, w: Path) -> subprocess.CompletedProcess[str]:
    # A row's writes (or wrongly deleted files) stay its own; a link stays a link.
    shutil.copytree(inputs, w, symlinks=True)
    args = [a.replace("{w}", str(w)) for a in case.args]
    env = {**os.environ, "EVALPIPE_STORE": str(w / "default.db"), "EVALPIPE_RUNS_DIR": str(w)}
    return subprocess.run(
        [sys.executable, "-m", "evalpipe", *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=300,
        cwd=w,
        env=env,
    )


@pytest.fixture(scope="module")
def results(
    request: pytest.FixtureRequest, inputs: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every selected row's process, run a few at a time: each one mostly waits for its
    interpreter to start, and there are over a hundred."""
    selected = {
        item.callspec.params["case"].name: item.callspec.params["case"]
        for item in request.session.items
        if isinstance(item, pytest.Function) and item.originalname == "test_no_traceback"
    }
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        futures = {
            name: pool.submit(_run, case, inputs, tmp_path_factory.mktemp("row") / "w")
            for name, case in selected.items()
        }
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("case", ROWS, ids=[r.name for r in ROWS])
def test_no_traceback(case: Row, results: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = results[case.name]
    shown = f"exit {proc.returncode}\nstderr: {proc.stderr[-3000:]}\nstdout: {proc.stdout[-500:]}"
    assert TRACEBACK not in proc.stderr + proc.stdout, shown
    if case.code is not None:
        assert proc.returncode == case.code, shown
    if proc.returncode not in (0, 2):
        # The message is evalpipe's own line, not a stray exception's last line
        # (`layout explain` of an invalid layout explains it on stdout instead).
        assert "evalpipe: error: " in proc.stderr or bool(proc.stdout.strip()), shown
