"""Where evalpipe keeps files it builds once per machine (models, data): the user cache; and
how it writes a file: whole or not at all.

Every file evalpipe writes goes to a temporary name in the target's folder and is renamed
over the target only when complete: a reader never sees half a file, and a failure (a run
that does not exist, a full disk, Ctrl-C) leaves the old file as it was. A target that is
an existing device or pipe (``/dev/stdout``, ``/dev/null``, a FIFO) is written in place
instead: renaming over it would replace the device with a plain file. The file system's
refusals (a folder where a file was meant, a missing folder, a full disk, no permission)
become one :class:`~evalpipe.errors.EvalpipeError` line that says what to do.

An existing file that is write-protected (no write permission bit for anyone, as ``chmod
a-w`` leaves it, or one this process may not write) is refused, although the rename could
replace it: the rename needs only the folder's permission, and root may write any file, so
``os.access`` alone would let root (and the rename) replace a file its owner protected.

:func:`check_outputs` is the one check every command with an output path makes before it
does anything: an output that resolves to one of the command's inputs (the store and its
``-wal``/``-shm``/``-journal`` files, a policy, a plan, a data file) or to another of its
outputs is refused, as is one that cannot be written.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path, PurePath
from typing import Any, TextIO

from evalpipe.errors import EvalpipeError


def cache_dir() -> Path:
    """``$EVALPIPE_CACHE_DIR``, else the platform's user cache dir (``~/.cache/evalpipe``)."""
    env = os.environ.get("EVALPIPE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("evalpipe"))


def cached_data_dir() -> Path:
    """Data built by ``evalpipe data fetch``; searched after ``EVALPIPE_DATA_DIR``."""
    return cache_dir() / "data"


class _WriteFailed(Exception):
    """An ``OSError`` of the file being written, told apart from the producer's own errors."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(exc)
        self.exc = exc


class _Descriptor(io.RawIOBase):
    """A file descriptor written with ``os.write``: the one system call every write of this
    module goes through (and a test's seam to fill the disk)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def write(self, b: Any) -> int:
        return os.write(self.fd, b)

    def close(self) -> None:
        if not self.closed:
            try:
                os.close(self.fd)
            finally:
                super().close()


class _GuardedText(io.TextIOWrapper):
    """A text file whose write errors are known to be the file's (see :class:`_WriteFailed`)."""

    def write(self, s: str) -> int:
        try:
            return super().write(s)
        except OSError as exc:
            raise _WriteFailed(exc) from exc


def _in_place(path: Path) -> bool:
    """Whether ``path`` is an existing device or pipe, to be written in place."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def explain(path: Path, exc: OSError, kept: bool = False) -> str:
    """One line for a failed write of ``path``; ``kept``: an old file there is unchanged."""
    where = f"cannot write {path}"
    code = exc.errno
    if code == errno.EISDIR or path.is_dir():
        return f"{where}: it is a folder; give the path of a file (e.g. {path / 'NAME'})"
    if code == errno.ENOENT and not path.parent.exists():
        return f"{where}: folder {path.parent} does not exist; create it or choose another path"
    if code == errno.ENOTDIR:
        return f"{where}: a part of {path.parent} is a file, not a folder; choose another path"
    tail = f" ({path} is unchanged)" if kept else ""
    if code == errno.EACCES and write_protected(path):
        mode = stat.S_IMODE(path.stat().st_mode)
        return (
            f"{where}: it is write-protected (mode {mode:04o}); make it writable "
            f"(chmod u+w {path}) or choose another path{tail}"
        )
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"{where}: no space left on the device; free some space and run again{tail}"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "read-only file system" if code == errno.EROFS else "permission denied"
        return f"{where}: {reason}; choose a folder you can write to{tail}"
    return f"{where}: {exc.strerror or exc}{tail}"


def _real(path: str | Path) -> Path:
    """The file to replace: a symbolic link's target, so the link still points at the new file."""
    target = Path(path)
    return target.resolve() if target.is_symlink() else target


def write_protected(path: Path) -> bool:
    """Whether ``path`` is an existing regular file its owner protected from writing: no
    write permission bit for anyone, or none for this process. The mode bits decide for root
    too, which ``os.access`` answers "writable" for every file."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if not stat.S_ISREG(mode):
        return False
    return not mode & 0o222 or not os.access(path, os.W_OK)


def _temporary(path: Path) -> tuple[int, Path]:
    """A new file beside ``path``, created with the mode ``path`` has (else the umask's)."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if write_protected(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with contextlib.suppress(OSError):
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
    return fd, tmp


@contextlib.contextmanager
def open_atomic(path: str | Path, *, durable: bool = True, exit_code: int = 1) -> Iterator[TextIO]:
    """A UTF-8 text file that replaces ``path`` when the ``with`` block completes; an error in
    the block leaves ``path`` as it was. ``durable`` syncs the data to disk before the
    rename (a crash then leaves the old file or the new, never an empty one). A failed write
    raises :class:`EvalpipeError` with ``exit_code``.

    Example::

        with open_atomic("run.jsonl") as out:
            export_run(store, run_id, out)
    """
    target = _real(path)
    in_place = _in_place(target)
    tmp: Path | None = None
    try:
        if in_place:
            fd = os.open(target, os.O_WRONLY | os.O_TRUNC)
        else:
            fd, tmp = _temporary(target)
    except OSError as exc:
        raise EvalpipeError(explain(target, exc), exit_code) from exc
    out = _GuardedText(io.BufferedWriter(_Descriptor(fd)), encoding="utf-8", newline="")
    try:
        try:
            yield out
        except _WriteFailed as exc:
            raise _failure(target, exc.exc, in_place, exit_code) from exc.exc
        # The block's own errors went up as they were; from here on, any is the file's.
        try:
            out.flush()
            if durable and tmp is not None:
                os.fsync(fd)
            out.close()
            if tmp is not None:
                os.replace(tmp, target)
                tmp = None
        except OSError as exc:
            raise _failure(target, exc, in_place, exit_code) from exc
    finally:
        with contextlib.suppress(OSError, ValueError):
            out.close()  # on an error path: what is still buffered may not fit either
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()


def _failure(target: Path, exc: OSError, in_place: bool, exit_code: int) -> EvalpipeError:
    return EvalpipeError(explain(target, exc, not in_place and target.exists()), exit_code)


def write_atomic(
    path: str | Path, data: bytes, *, durable: bool = True, exit_code: int = 1
) -> None:
    """Replace ``path`` by ``data`` whole (:func:`open_atomic`; bytes, written as they are)."""
    target = _real(path)
    try:
        fd, tmp = _temporary(target)
    except OSError as exc:
        raise EvalpipeError(explain(target, exc), exit_code) from exc
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _failure(target, exc, False, exit_code) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


# --- outputs that must not destroy inputs -------------------------------------------------

SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
"""What SQLite keeps beside a store file: overwriting one loses commits or corrupts the store."""


def store_files(path: Path | None) -> list[Path]:
    """An SQLite store's file and the files SQLite keeps beside it (none for a server)."""
    if path is None:
        return []
    return [path, *(path.with_name(path.name + s) for s in SQLITE_SIDE_FILES)]


Named = tuple[str, "str | Path | None"]
"""What a message calls a path (``--junit``, ``the store``) and the path (None: not given)."""


def _resolved(path: str | Path) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def _same(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` (resolved) are one file: one path, or hard links of one."""
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _is_stream(path: str | Path) -> bool:
    """``-`` (standard output) or an existing device or pipe: written in place, never replaced."""
    return str(path) == "-" or _in_place(Path(path))


def check_outputs(outputs: Sequence[Named], inputs: Iterable[Named], *, exit_code: int = 1) -> None:
    """Refuse, before anything is done, an output that would destroy an input or another
    output, or that cannot be written: one that resolves (symbolic links followed, hard
    links found) to an input or to another output, an existing write-protected file, a
    folder, or a path in a folder that is missing or may not be written. Each refusal names
    both paths; ``exit_code`` is the command's code for a path that cannot be written."""
    named_inputs = [(what, _resolved(p)) for what, p in inputs if p is not None and str(p) != "-"]
    seen: list[tuple[str, Path]] = []
    for flag, raw in outputs:
        if raw is None or _is_stream(raw):
            continue
        target = _resolved(raw)
        clash = next(((w, p) for w, p in [*named_inputs, *seen] if _same(target, p)), None)
        if clash is not None and clash in named_inputs:
            what, path = clash
            why = f"{flag} {raw} is {what} ({path}): writing it would destroy {what}"
            raise EvalpipeError(f"{why}; choose another path", exit_code)
        if clash is not None:
            other, path = clash
            why = f"{flag} and {other} are the same file ({path}): one would overwrite the other"
            raise EvalpipeError(f"{why}; give each its own path", exit_code)
        seen.append((flag, target))
        probe(raw, exit_code=exit_code)


def probe(path: str | Path, *, exit_code: int = 1) -> None:
    """Whether :func:`open_atomic` could write ``path``, asked before any work is done: a
    temporary file is made beside it and removed (nothing else changes). A device or pipe is
    not probed."""
    target = _real(path)
    if _in_place(target):
        return
    try:
        fd, tmp = _temporary(target)
    except OSError as exc:
        raise EvalpipeError(explain(target, exc), exit_code) from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        tmp.unlink()


def check_folder_output(
    flag: str,
    folder: str | Path,
    inputs: Iterable[Named],
    writes: Callable[[PurePath], bool],
    *,
    exit_code: int = 1,
) -> None:
    """Refuse a folder output (a dashboard) that would write over an input: ``folder``
    itself being an input, or an input inside it at a path ``writes`` says the output may
    write (its relative path given)."""
    root = _resolved(folder)
    for what, raw in inputs:
        if raw is None or str(raw) == "-":
            continue
        path = _resolved(raw)
        if _same(root, path):
            raise EvalpipeError(
                f"{flag} {folder} is {what} ({path}); choose another folder", exit_code
            )
        if root in path.parents and writes(PurePath(path.relative_to(root))):
            raise EvalpipeError(
                f"{what} ({path}) is inside {flag} {folder}, where the output writes its own "
                f"files: it would be overwritten; move it, or choose another {flag}",
                exit_code,
            )
