"""The dashboard's output folder: which files a render wrote, written atomically, and only
when they changed.

A manifest (``.evalpipe/manifest.json``) lists every file the last render wrote with a digest
of its inputs, a digest of its content and its size and modification time. The next render

- skips a page whose inputs digest is unchanged and whose file is as it left it, without
  rendering it (most of a big site: old runs' pages);
- renders the others, and writes one only when its content changed (the per-page CSP nonce
  and the generation time are left out of that comparison: they change on every render);
- removes the files the previous render wrote that this one did not, and nothing else, so a
  file evalpipe never wrote survives in the folder; nor does it remove one whose bytes are no
  longer those it wrote (the manifest keeps their digest): a page a user edited is kept, named
  in the summary, and no longer listed as the dashboard's.

The manifest is also what makes a folder the dashboard's. A render goes into a new or empty
folder, or one with a manifest; a non-empty folder without one (a project, a home folder, a
site of another tool) is refused unless ``force`` says to render into it anyway (its files
are kept; those at the dashboard's page paths are overwritten). The folder is claimed (an
empty manifest) before the first page is written, so a first render cut short does not lock
the folder it started.

Every file is written to a temporary name in its folder, then renamed over the old one, so a
reader (or a killed render) never sees half a page (:func:`evalpipe.paths.write_atomic`). An
unreadable manifest means a folder whose files evalpipe cannot name: every page is written
again, and nothing is removed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePath
from typing import Any

from evalpipe.errors import EvalpipeError
from evalpipe.paths import explain, write_atomic

STATE_DIR = ".evalpipe"
MANIFEST_NAME = "manifest.json"
FORMAT = 1


@dataclass(frozen=True)
class Entry:
    """One written file: its inputs digest (empty: none given), content digest (volatile
    parts left out), stat, and ``sha256``: the digest of its bytes as written (empty in a
    manifest of an evalpipe that did not keep it)."""

    inputs: str
    content: str
    size: int
    mtime_ns: int
    sha256: str = ""


def writes(path: PurePath) -> bool:
    """Whether a render may write (or remove) the file at ``path``, relative to its folder:
    pages (``*.html``) and its own state (``.evalpipe/``)."""
    return path.suffix == ".html" or path.parts[:1] == (STATE_DIR,)


def _digest(text: str, volatile: Iterable[str]) -> str:
    for v in volatile:
        text = text.replace(v, "")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_out_dir(out: Path, force: bool = False) -> bool:
    """Refuse an output folder the dashboard may not render into (a file; a folder with files
    an earlier render did not write, unless ``force``), before any work is done; True when it
    is not claimed yet (no manifest)."""
    manifest = out / STATE_DIR / MANIFEST_NAME
    if out.exists() and not out.is_dir():
        raise EvalpipeError(
            f"--out {out} is a file; the dashboard is a folder of pages: give a folder "
            "that is new, empty, or holds an earlier dashboard"
        )
    if manifest.exists():
        return False
    try:
        foreign = out.is_dir() and any(out.iterdir())
    except OSError as exc:
        raise EvalpipeError(f"cannot read --out {out}: {exc.strerror}; give another") from exc
    if foreign and not force:
        raise EvalpipeError(
            f"--out {out} is a folder with files the dashboard did not write (there is no "
            f"{manifest}); give a new or empty folder, or pass --force to render into it "
            "(its files are kept; those named like the dashboard's pages are overwritten)"
        )
    return True


class Site:
    """The output folder during one render; :meth:`finish` records it."""

    def __init__(self, out_dir: Path, force: bool = False) -> None:
        self.out_dir = out_dir
        self.state_dir = out_dir / STATE_DIR
        self._claim(force)
        self.before = self._read_manifest()
        self.now: dict[str, Entry] = {}
        self.written: set[str] = set()
        self.kept: list[str] = []
        """Files an earlier render wrote, edited since, that this one no longer makes: kept."""

    def _claim(self, force: bool) -> None:
        """Make sure the folder is the dashboard's (see the module's docstring)."""
        if not check_out_dir(self.out_dir, force):
            return
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EvalpipeError(explain(self.state_dir, exc)) from exc
        # Claimed before any page is written: a render cut short leaves a folder that is ours.
        self._save({})

    def _read_manifest(self) -> dict[str, Entry]:
        try:
            data = json.loads((self.state_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
            if data["format"] != FORMAT:
                return {}
            return {str(k): Entry(**v) for k, v in data["files"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}

    def _intact(self, path: str, entry: Entry) -> bool:
        """Whether the file is as the previous render left it (same size and mtime)."""
        try:
            st = (self.out_dir / path).stat()
        except OSError:
            return False
        return st.st_size == entry.size and st.st_mtime_ns == entry.mtime_ns

    def unchanged(self, path: str, inputs: str) -> bool:
        """Whether ``path``'s inputs are those of the previous render and its file intact."""
        old = self.before.get(path)
        return bool(inputs) and old is not None and old.inputs == inputs and self._intact(path, old)

    def keep(self, path: str, inputs: str) -> bool:
        """Keep ``path`` as it is when :meth:`unchanged`; return whether it was kept."""
        if not self.unchanged(path, inputs):
            return False
        self.now[path] = self.before[path]
        return True

    def record(self, path: str, entry: Entry, written: bool) -> None:
        """Record a file written (or found unchanged) by a worker process for this render."""
        self.now[path] = entry
        if written:
            self.written.add(path)

    def write(self, path: str, text: str, inputs: str = "", volatile: Iterable[str] = ()) -> bool:
        """Write ``text`` to ``path`` unless the file already holds the same content (apart
        from the ``volatile`` strings); return whether it was written."""
        content = _digest(text, volatile)
        old = self.before.get(path)
        if old is not None and old.content == content and self._intact(path, old):
            self.now[path] = Entry(inputs, content, old.size, old.mtime_ns, old.sha256)
            return False
        target = self.out_dir / path
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EvalpipeError(explain(target, exc)) from exc
        # Not synced page by page: a page lost to a crash is rewritten by the next render.
        data = text.encode("utf-8")
        write_atomic(target, data, durable=False)
        st = target.stat()
        digest = hashlib.sha256(data).hexdigest()
        self.now[path] = Entry(inputs, content, st.st_size, st.st_mtime_ns, digest)
        self.written.add(path)
        return True

    def finish(self) -> list[str]:
        """Remove what the previous render wrote and this one did not; save the manifest.
        Returns the removed paths."""
        removed = []
        for path in sorted(self.before.keys() - self.now.keys()):
            target = (self.out_dir / path).resolve()
            # Only files inside the folder: a tampered manifest must not reach elsewhere.
            if self.out_dir.resolve() not in target.parents or not target.is_file():
                continue
            if self._edited(path, target, self.before[path]):
                self.kept.append(path)  # the user's now: kept, and no longer in the manifest
                continue
            target.unlink()
            removed.append(path)
        self._save(self.now)
        return removed

    def _edited(self, path: str, target: Path, entry: Entry) -> bool:
        """Whether the file at ``path`` is no longer what a render wrote there: other bytes
        (by their digest), or, for an entry from before digests were kept, another size or
        modification time."""
        if not entry.sha256:
            return not self._intact(path, entry)
        try:
            return hashlib.sha256(target.read_bytes()).hexdigest() != entry.sha256
        except OSError:
            return True  # unreadable: not ours to remove

    def _save(self, entries: dict[str, Entry]) -> None:
        files: dict[str, Any] = {p: asdict(e) for p, e in sorted(entries.items())}
        data = json.dumps({"format": FORMAT, "files": files}, separators=(",", ":"))
        write_atomic(self.state_dir / MANIFEST_NAME, data.encode())
