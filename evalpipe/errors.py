"""The one error type users see: printed without a traceback, with an exit code."""

from __future__ import annotations

EXIT_GATE_STORE = 4
"""Exit code of ``evalpipe gate`` when the store cannot be opened or read (missing, unreachable,
not an evalpipe store, damaged): CI must not read it as drift (1) or as a missing run (2)."""


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


class StoreError(EvalpipeError):
    """The store could not be read or written (the database refused or failed a statement).

    Its own type so that callers that turn other errors into verdicts (the gate turns a
    comparison that cannot be made into a failed requirement) let this one through: a store
    that cannot be read says nothing about the runs in it. Exit code 1 like any bad input,
    except where a command documents its own (``gate``: :data:`EXIT_GATE_STORE`).
    """
