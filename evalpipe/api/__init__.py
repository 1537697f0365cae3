"""The Python API: the one place that wires layouts, tasks, engines and the store together.

Every CLI command is a call into this package, so everything the CLI does is scriptable.
"""

from evalpipe.api.canary import (
    CanarySettings,
    canary,
    canary_dry_run,
    canary_json,
    format_canary,
)
from evalpipe.api.comparing import (
    compare,
    comparison_json,
    format_comparison,
    tagged_comparisons,
)
from evalpipe.api.dashboard import dashboard
from evalpipe.api.frames import (
    pairs_frame,
    runs_frame,
    samples_frame,
    tokens_frame,
    write_frame,
)
from evalpipe.api.gating import format_gate, gate, gate_json
from evalpipe.api.importing import describe_lmeval_import, import_aisbench, import_lmeval
from evalpipe.api.layouts import explain_layout, format_layout
from evalpipe.api.reporting import comment
from evalpipe.api.running import resolve_model, run, run_repeated, run_with_baseline
from evalpipe.api.scoring import format_score, score, score_json
from evalpipe.api.setup import ModelInfo, TaskInfo, fetch_data, fetch_model, iter_tasks, list_models
from evalpipe.api.store import copy_store, migrate_store
from evalpipe.api.stored import (
    export_run,
    format_run_summary,
    format_runs_table,
    get_run,
    import_run,
    list_runs,
    run_to_dict,
)
from evalpipe.api.sweeping import SweepSettings, format_sweep, sweep, sweep_json
from evalpipe.options import RunOptions

__all__ = [
    "CanarySettings",
    "ModelInfo",
    "RunOptions",
    "SweepSettings",
    "TaskInfo",
    "canary",
    "canary_dry_run",
    "canary_json",
    "comment",
    "compare",
    "comparison_json",
    "copy_store",
    "dashboard",
    "describe_lmeval_import",
    "explain_layout",
    "export_run",
    "fetch_data",
    "fetch_model",
    "format_canary",
    "format_comparison",
    "format_gate",
    "format_layout",
    "format_run_summary",
    "format_runs_table",
    "format_score",
    "format_sweep",
    "gate",
    "gate_json",
    "get_run",
    "import_aisbench",
    "import_lmeval",
    "import_run",
    "iter_tasks",
    "list_models",
    "list_runs",
    "migrate_store",
    "pairs_frame",
    "resolve_model",
    "run",
    "run_repeated",
    "run_to_dict",
    "run_with_baseline",
    "runs_frame",
    "samples_frame",
    "score",
    "score_json",
    "sweep",
    "sweep_json",
    "tagged_comparisons",
    "tokens_frame",
    "write_frame",
]
