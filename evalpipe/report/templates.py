"""Where the shipped templates (``dashboards/``) are: the wheel's copy, else the checkout's."""

from __future__ import annotations

from pathlib import Path

import evalpipe


def template_dirs(required: str) -> list[Path]:
    """Template folders that hold ``required``, the wheel's copy first."""
    package = Path(evalpipe.__file__).resolve().parent
    dirs = [package / "_builtin" / "dashboards"]
    # As for tasks: ../dashboards only in a source checkout, never in an installed tree.
    if (package.parent / "pyproject.toml").is_file():
        dirs.append(package.parent / "dashboards")
    return [d for d in dirs if (d / required).is_file()]
