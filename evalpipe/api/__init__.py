"""The Python API: the one place that wires layouts, tasks, engines and the store together.

Every CLI command is a call into this package, so everything the CLI does is scriptable.
"""

from evalpipe.api.comparing import compare, tagged_comparisons
from evalpipe.api.dashboard import dashboard
from evalpipe.api.importing import import_aisbench, import_lmeval
from evalpipe.api.layouts import explain_layout, format_layout
from evalpipe.api.reporting import comment
from evalpipe.api.running import resolve_model, run, run_repeated, run_with_baseline
from evalpipe.api.stored import (
    export_run,
    format_run_summary,
    format_runs_table,
    get_run,
    import_run,
    list_runs,
    run_to_dict,
)
from evalpipe.options import RunOptions

__all__ = [
    "RunOptions",
    "comment",
    "compare",
    "dashboard",
    "explain_layout",
    "export_run",
    "format_layout",
    "format_run_summary",
    "format_runs_table",
    "get_run",
    "import_aisbench",
    "import_lmeval",
    "import_run",
    "list_runs",
    "resolve_model",
    "run",
    "run_repeated",
    "run_to_dict",
    "run_with_baseline",
    "tagged_comparisons",
]
