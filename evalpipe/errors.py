"""The one error type users see: printed without a traceback, with an exit code."""

from __future__ import annotations


class EvalpipeError(Exception):
    """A user-facing failure whose message says what to do next.

    ``exit_code`` is what the CLI exits with (1 = the evaluation failed or input is bad;
    commands with documented codes, like ``gate``, pass their own).
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message
