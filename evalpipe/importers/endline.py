"""The end line of the run exchange format (version 4): how a file cut short is told apart.

A version 4 file ends with one line::

    {"end": {"samples": 1319, "traces": 1319, "sha256": "<hex>"}}

``samples`` and ``traces`` count the sample and trace lines before it, and ``sha256`` is the
digest of every byte before it (the run line, the samples, the traces, with their newlines,
exactly as written). An import of a version 4 file needs it as the last line and checks all
three: a file cut anywhere (even at a line end, where every line left is valid JSON) or
edited is refused. Files of versions 1–3 have no end line and still import, with a notice
that a cut could not be detected; a file that states no version (another harness's output,
written by hand) needs none.
"""

from __future__ import annotations

import hashlib
from typing import IO, Any

from evalpipe.errors import EvalpipeError
from evalpipe.importers.lines import COUNT, STR, Check, checked, json_line

FIRST_VERSION = 4
"""The exchange version that introduced the end line."""

_DIGEST: Check = (
    lambda v: STR[0](v) and len(v) == 64 and all(c in "0123456789abcdef" for c in v),
    "64 lowercase hex digits (sha256)",
)
END_KEYS: dict[str, Check] = {"samples": COUNT, "traces": COUNT, "sha256": _DIGEST}


class Summed:
    """A text stream that passes writes on to ``out`` and keeps the digest of their bytes."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.sha = hashlib.sha256()

    def write(self, text: str) -> int:
        self.sha.update(text.encode("utf-8"))
        return self.out.write(text)


def end_line(samples: int, traces: int, digest: str) -> str:
    return json_line({"end": {"samples": samples, "traces": traces, "sha256": digest}})


def is_end_line(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"end"}


class EndCheck:
    """What an import reads towards the end line: the digest and counts of the lines so far
    (:meth:`add`), then the end line itself (:meth:`end`) and the verdict (:meth:`finish`)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha256()
        self.samples = 0
        self.traces = 0
        self.end_at: int | None = None
        self.stated: dict[str, Any] | None = None
        self.digest = ""

    def add(self, text: str) -> None:
        """A line before the end line, as read (lines given without their newline, split
        from a string, count as the file's: each line ends with one ``\n``)."""
        self.sha.update(text.encode("utf-8"))
        if not text.endswith("\n"):
            self.sha.update(b"\n")

    def after_end(self, number: int) -> None:
        """A non-blank line after the end line: the file goes on past where it said it ends."""
        if self.end_at is not None:
            raise EvalpipeError(
                f"{self.source}:{number}: a line after the end line (line {self.end_at}); the "
                "end line is the file's last"
            )

    def end(self, value: Any, number: int) -> None:
        where = f"{self.source}:{number}"
        self.stated = checked(value["end"], END_KEYS, tuple(END_KEYS), where, "end line")
        self.end_at, self.digest = number, self.sha.hexdigest()

    def finish(self, version: int | None) -> str | None:
        """Raise if the file is cut short or altered; a notice for a file too old to tell."""
        if self.stated is None:
            if version is not None and version >= FIRST_VERSION:
                raise EvalpipeError(
                    f"{self.source}: no end line: a version {version} file ends with "
                    '{"end": {…}}, so this one was cut short after its '
                    f"{self.samples} samples and {self.traces} traces; export the run again"
                )
            if version is not None:
                return (
                    f"notice: {self.source} is a version {version} file, which has no end "
                    "line: a file cut short cannot be told from a whole one (exports of this "
                    f"evalpipe are version {FIRST_VERSION} or later)"
                )
            return None
        read = {"samples": self.samples, "traces": self.traces, "sha256": self.digest}
        for key, got in read.items():
            if self.stated[key] != got:
                raise EvalpipeError(
                    f"{self.source}:{self.end_at}: the end line says {key} "
                    f"{self.stated[key]} but the file before it has {got}: it was cut short "
                    "or changed; export the run again"
                )
        return None
