"""A real PostgreSQL server for the tests: initdb into a temp dir, pg_ctl on a unix socket.

Used by the session fixture ``postgres_url`` in conftest.py. Missing binaries make the tests
fail, never skip: CI must run the PostgreSQL tests (see /work/shared/SERVICES.md for why the
server runs as the ``postgres`` user).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

BINARIES = ("initdb", "pg_ctl", "postgres")
INSTALL_HINT = (
    "install the server (Debian: `apt-get install -y postgresql`), put its bin directory on "
    "PATH, or set EVALPIPE_PG_BIN to it"
)


def find_bin_dir() -> Path:
    """Where initdb, pg_ctl and postgres are: $EVALPIPE_PG_BIN, PATH, or Debian's layout."""
    candidates: list[str] = []
    if os.environ.get("EVALPIPE_PG_BIN"):
        candidates.append(os.environ["EVALPIPE_PG_BIN"])
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))
    # Debian/Ubuntu keep the server out of PATH, one directory per major version; newest first.
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    for d in candidates:
        if all(os.access(Path(d, b), os.X_OK) for b in BINARIES):
            return Path(d)
    raise RuntimeError(
        f"PostgreSQL server binaries ({', '.join(BINARIES)}) not found in {candidates or 'PATH'}; "
        + INSTALL_HINT
    )


def free_port() -> int:
    # The server listens on a unix socket only, but the port names the socket file
    # (.s.PGSQL.<port>) and its lock; a free TCP port avoids clashing with a system server.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _as_server_user(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; the tests' user may be root (CI containers).
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throwaway server; yield the URL of its ``evalpipe_test`` database."""
    bin_dir = find_bin_dir()
    root = Path(tempfile.mkdtemp(prefix="evalpipe-pg-"))
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data, log, port = root / "pg", root / "log", free_port()
    started = False
    try:
        _run(
            [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
             "-E", "UTF8", "--no-sync"],
            "initdb",
        )  # fmt: skip
        # fsync off: a test server's data is thrown away, and it makes CREATE DATABASE fast.
        options = f"-p {port} -k {root} -c listen_addresses='' -c fsync=off -c max_connections=200"
        _run(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
             "-o", options, "start"],
            "pg_ctl start",
            log,
        )  # fmt: skip
        started = True
        admin = f"postgresql+psycopg://postgres@/postgres?host={root}&port={port}"
        _wait_ready(admin, log)
        _autocommit(admin, "CREATE DATABASE evalpipe_test")
        yield f"postgresql+psycopg://postgres@/evalpipe_test?host={root}&port={port}"
    finally:
        if started:
            subprocess.run(
                _as_server_user(
                    [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
                ),
                capture_output=True,
                check=False,
            )
        shutil.rmtree(root, ignore_errors=True)


def _run(cmd: list[str], what: str, log: Path | None = None) -> None:
    done = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        server_log = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
        raise RuntimeError(
            f"{what} failed ({done.returncode}): {done.stderr.strip()}\n{server_log}".strip()
        )


def _wait_ready(url: str, log: Path, timeout_s: float = 30.0) -> None:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
                return
            except sa.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL did not accept connections in {timeout_s:.0f} s:\n"
                        + log.read_text(errors="replace")[-2000:]
                    ) from None
                time.sleep(0.1)
    finally:
        engine.dispose()


def _autocommit(url: str, *statements: str) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    engine = sa.create_engine(url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new empty database on the test server for one test; dropped afterwards."""
    url = sa.make_url(server_url)
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = url.set(database="postgres").render_as_string(hide_password=False)
    _autocommit(admin, f"CREATE DATABASE {name}")
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE: a test that failed may have left a connection open in a worker process.
        _autocommit(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
