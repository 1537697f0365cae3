"""Find, load and validate task files (YAML + jinja2 template) into frozen :class:`TaskSpec`.

A task file is data, never code: it is read with a safe loader, every key is checked (an
unknown key is an error naming the key and the file), and its template, few-shot exemplars,
extractors and generator parameters are all checked when the task is loaded, before any
data is read or engine started. A task's name is its file name, so listing tasks needs no
parsing. The schema is documented in ``tasks/README.md``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import evalpipe
from evalpipe.errors import EvalpipeError
from evalpipe.records import canonical_json, sha256_text
from evalpipe.tasks import generators
from evalpipe.tasks.data import TARGET_TRANSFORMS, read_rows
from evalpipe.tasks.prompts import FEWSHOT_VAR, compile_template
from evalpipe.tasks.scoring import METRICS, ExtractorSpec, check_extractor
from evalpipe.tasks.spec import DataSpec, TaskSpec
from evalpipe.yamlload import YamlInputError, load_yaml

TASKS_PATH_ENV = "EVALPIPE_TASKS_PATH"
REQUEST_KINDS = ("completion", "chat")
# Keys vLLM's SamplingParams and its OpenAI server both accept; the seed is the run's.
SAMPLING_FLOATS = (
    "temperature",
    "top_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
)
SAMPLING_INTS = ("max_tokens", "min_tokens", "top_k")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --- finding tasks ------------------------------------------------------------------------


def builtin_task_dirs() -> list[Path]:
    """Shipped task directories: the wheel's copy, else the source checkout's ``tasks/``."""
    package = Path(evalpipe.__file__).resolve().parent
    dirs = [package / "_builtin" / "tasks"]
    # Only a source checkout (pyproject.toml next to the package) may use ../tasks: in an
    # installed environment that directory could belong to some other distribution.
    if (package.parent / "pyproject.toml").is_file():
        dirs.append(package.parent / "tasks")
    return [d for d in dirs if d.is_dir()]


def default_search_path() -> list[Path]:
    """``EVALPIPE_TASKS_PATH`` entries (first, so they can shadow), then the built-ins."""
    env = os.environ.get(TASKS_PATH_ENV, "")
    return [Path(p).expanduser() for p in env.split(os.pathsep) if p] + builtin_task_dirs()


def list_tasks(search_path: Sequence[Path] | None = None) -> list[str]:
    """Names of the tasks on the search path (one per ``NAME.yaml``), sorted."""
    dirs = default_search_path() if search_path is None else search_path
    return sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})


def find_task(name_or_path: str, search_path: Sequence[Path] | None = None) -> Path:
    """The task file for a name (first match on the search path) or a path to a YAML file."""
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path or os.sep in name_or_path:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise EvalpipeError(f"task file {path} does not exist")
        return path
    dirs = default_search_path() if search_path is None else list(search_path)
    for d in dirs:
        if (d / f"{name_or_path}.yaml").is_file():
            return d / f"{name_or_path}.yaml"
    names = list_tasks(dirs)
    raise EvalpipeError(
        f"unknown task {name_or_path!r}; available: {', '.join(names) or '(none)'} "
        f"(searched {', '.join(str(d) for d in dirs) or 'nothing'}; add directories with "
        f"{TASKS_PATH_ENV} or pass a path to a .yaml file)"
    )


# --- loading ------------------------------------------------------------------------------


def load_task(
    name_or_path: str,
    search_path: Sequence[Path] | None = None,
    params: Mapping[str, Any] | None = None,
) -> TaskSpec:
    """Load and validate a task by name (see :func:`default_search_path`) or YAML path.

    ``params`` (``evalpipe run --param``) override the generator parameters of the file's
    ``data.params`` before anything is checked or generated. Raises :class:`EvalpipeError`
    for an unknown task (listing the available ones) and for any problem in the file, naming
    the file and the key.
    """
    path = find_task(name_or_path, search_path)
    try:
        # As safe as yaml.safe_load, and refuses duplicate keys (see evalpipe.yamlload).
        doc = load_yaml(path.read_text(encoding="utf-8"))
    except YamlInputError as exc:
        raise EvalpipeError(f"{path}: not a valid task file: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise EvalpipeError(
            f"{path}: not a valid task file: not UTF-8 text ({exc.reason})"
        ) from exc
    except OSError as exc:
        raise EvalpipeError(f"{path}: cannot read the task file: {exc.strerror or exc}") from exc
    doc = _mapping(doc, f"{path}")
    if params:
        data = doc.get("data")
        if not isinstance(data, dict) or "generator" not in data:
            raise EvalpipeError(
                f"--param sets generator parameters, and task {path.stem} reads its items "
                "from data, not a generator"
            )
        data["params"] = {**_mapping(data.get("params", {}), f"{path}: data.params"), **params}
    return _parse(path, doc)


_TOP_REQUIRED = "name version data request template sampling extractors primary metric"
_TOP_OPTIONAL = "description fewshot system stop"
_DATA_OPTIONAL = (
    "source hf_config hf_split hf_revision data_dir_file target_transform generator params"
)


def _parse(path: Path, doc: dict[str, Any]) -> TaskSpec:
    where = str(path)
    _keys(doc, where, _TOP_REQUIRED, _TOP_OPTIONAL)
    name = _str(doc, "name", where)
    if name != path.stem or not _NAME.fullmatch(name):
        raise EvalpipeError(f"{where}: name {name!r} must equal the file name {path.stem!r}")
    version = doc["version"]
    if not isinstance(version, str) or not version:
        raise EvalpipeError(f'{where}: version must be a quoted string such as "1.0"')
    data = _data(doc["data"], f"{where}: data")
    request = _str(doc, "request", where)
    if request not in REQUEST_KINDS:
        raise EvalpipeError(f"{where}: request must be one of {REQUEST_KINDS}, not {request!r}")
    system = _opt_str(doc, "system", where)
    if system is not None and request != "chat":
        raise EvalpipeError(f"{where}: system is only for request: chat")
    template_name = _str(doc, "template", where)
    template_path = path.parent / template_name
    if not template_path.is_file():
        raise EvalpipeError(f"{where}: template {template_path} does not exist")
    template = template_path.read_text(encoding="utf-8")
    compile_template(template, str(template_path))
    fewshot, fewshot_source = _fewshot(doc.get("fewshot"), path, data)
    sampling = _sampling(doc["sampling"], f"{where}: sampling")
    stop = tuple(_str_list(doc.get("stop", []), f"{where}: stop"))
    extractors = _extractors(doc["extractors"], f"{where}: extractors")
    primary = _str(doc, "primary", where)
    if primary not in {e.name for e in extractors}:
        raise EvalpipeError(f"{where}: primary {primary!r} is not one of the extractors")
    metric = _str(doc, "metric", where)
    if metric not in METRICS:
        raise EvalpipeError(f"{where}: metric must be one of {METRICS}, not {metric!r}")
    template_hash = sha256_text(
        canonical_json(
            {
                "template": template,
                "system": system,
                "fewshot": list(fewshot),
                "fields": dict(data.fields),
                "request": request,
                "stop": list(stop),
                "sampling": dict(sampling),
            }
        )
    )
    return TaskSpec(
        name=name,
        version=version,
        description=_opt_str(doc, "description", where) or "",
        path=path,
        data=data,
        fewshot=fewshot,
        fewshot_source=fewshot_source,
        request=request,
        template_name=template_name,
        template=template,
        system=system,
        sampling=sampling,
        stop=stop,
        extractors=extractors,
        primary=primary,
        metric=metric,
        template_hash=template_hash,
    )


def _data(value: Any, where: str) -> DataSpec:
    d = _mapping(value, where)
    _keys(d, where, "fields", _DATA_OPTIONAL)
    fields = _mapping(d["fields"], f"{where}.fields")
    if "target" not in fields:
        raise EvalpipeError(f"{where}.fields: needs a 'target' entry (the answer field)")
    for var, column in fields.items():
        if not isinstance(column, str) or not _IDENT.fullmatch(str(var)) or var == FEWSHOT_VAR:
            raise EvalpipeError(
                f"{where}.fields: {var!r}: {column!r} must map a template variable name "
                f"(not {FEWSHOT_VAR!r}) to a record field name"
            )
    transform = _opt_str(d, "target_transform", where) or "none"
    if transform not in TARGET_TRANSFORMS:
        raise EvalpipeError(
            f"{where}.target_transform: {transform!r} is not one of {sorted(TARGET_TRANSFORMS)}"
        )
    source = _opt_str(d, "source", where)
    generator = _opt_str(d, "generator", where)
    if source is not None and not source.startswith("hf:"):
        raise EvalpipeError(f"{where}.source: only 'hf:ORG/NAME' is supported, not {source!r}")
    if source and generator:
        raise EvalpipeError(f"{where}: set source or generator, not both")
    params: dict[str, Any] = {}
    if generator is not None:
        params = _mapping(d.get("params", {}), f"{where}.params")
        try:
            generators.check_params(generator, params)
        except ValueError as exc:
            raise EvalpipeError(f"{where}.params: {exc}") from exc
    elif "params" in d:
        raise EvalpipeError(f"{where}.params: only for a generator")
    return DataSpec(
        fields=dict(fields),
        target_transform=transform,
        source=source,
        hf_config=_opt_str(d, "hf_config", where),
        hf_split=_opt_str(d, "hf_split", where) or "test",
        hf_revision=_opt_str(d, "hf_revision", where),
        data_dir_file=_opt_str(d, "data_dir_file", where),
        generator=generator,
        generator_params=params,
    )


def _fewshot(
    value: Any, path: Path, data: DataSpec
) -> tuple[tuple[Mapping[str, Any], ...], str | None]:
    """Exemplars from a file next to the task (so every data source gets the same prompt)
    or from the task's generator with its own seed (a stream apart from the items)."""
    if value is None:
        return (), None
    where = f"{path}: fewshot"
    f = _mapping(value, where)
    _keys(f, where, "n", "file generator_seed")
    n = _int(f, "n", where)
    if n < 0 or ("file" in f) == ("generator_seed" in f):
        raise EvalpipeError(f"{where}: needs n >= 0 and exactly one of file, generator_seed")
    if "file" in f:
        rows, digest = read_rows(path.parent / _str(f, "file", where))
        records, source = [r for _, r in rows], f"file:{_str(f, 'file', where)}#sha256={digest}"
    else:
        seed = _int(f, "generator_seed", where)
        if data.generator is None:
            raise EvalpipeError(f"{where}.generator_seed: the task's data has no generator")
        if seed == data.generator_params.get("seed"):
            raise EvalpipeError(f"{where}.generator_seed must differ from the data seed")
        params = {**data.generator_params, "n": max(n, 1), "seed": seed}
        gen, records = generators.generate(data.generator, params)
        source = generators.source_id(gen, params)
    if n > len(records) or not all(isinstance(r, dict) for r in records[:n]):
        raise EvalpipeError(f"{where}: needs {n} exemplars (JSON objects); {source} has fewer")
    return tuple(records[:n]), source


def _sampling(value: Any, where: str) -> dict[str, Any]:
    s = _mapping(value, where)
    _keys(s, where, "max_tokens", " ".join([*SAMPLING_FLOATS, *SAMPLING_INTS]))
    # Floats are stored as floats so `temperature: 0` and `0.0` hash the same.
    out: dict[str, Any] = {k: float(_num(s, k, where)) for k in SAMPLING_FLOATS if k in s}
    out.update({k: _int(s, k, where) for k in SAMPLING_INTS if k in s})
    if out["max_tokens"] < 1:
        raise EvalpipeError(f"{where}.max_tokens must be at least 1")
    return out


def _extractors(value: Any, where: str) -> tuple[ExtractorSpec, ...]:
    if not isinstance(value, list) or not value:
        raise EvalpipeError(f"{where}: must be a non-empty list")
    specs: list[ExtractorSpec] = []
    for i, entry in enumerate(value):
        w = f"{where}[{i}]"
        e = _mapping(entry, w)
        kind = _str(e, "kind", w)
        _keys(e, w, "name kind", "pattern select" if kind == "regex" else "")
        spec = ExtractorSpec(
            _str(e, "name", w), kind, _opt_str(e, "pattern", w), _opt_str(e, "select", w) or "first"
        )
        try:
            check_extractor(spec)
        except ValueError as exc:
            raise EvalpipeError(f"{w}: {exc}") from exc
        if spec.name in {s.name for s in specs}:
            raise EvalpipeError(f"{w}: duplicate extractor name {spec.name!r}")
        specs.append(spec)
    return tuple(specs)


# --- small typed accessors: each error names the file and the key --------------------------


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EvalpipeError(f"{where}: must be a mapping, not {type(value).__name__}")
    return value


def _keys(d: Mapping[str, Any], where: str, required: str, optional: str = "") -> None:
    """Reject keys not in ``required``/``optional`` (space-separated) and missing ones."""
    need, allowed = required.split(), {*required.split(), *optional.split()}
    for key in d:
        if key not in allowed:
            names = ", ".join(sorted(allowed))
            raise EvalpipeError(f"{where}: unknown key {key!r} (allowed: {names})")
    for key in need:
        if key not in d:
            raise EvalpipeError(f"{where}: missing required key {key!r}")


def _str(d: Mapping[str, Any], key: str, where: str) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value:
        raise EvalpipeError(f"{where}: {key} must be a non-empty string, not {value!r}")
    return value


def _opt_str(d: Mapping[str, Any], key: str, where: str) -> str | None:
    return None if d.get(key) is None else _str(d, key, where)


def _int(d: Mapping[str, Any], key: str, where: str) -> int:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise EvalpipeError(f"{where}: {key} must be an integer, not {value!r}")
    return value


def _num(d: Mapping[str, Any], key: str, where: str) -> float | int:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EvalpipeError(f"{where}: {key} must be a number, not {value!r}")
    return value


def _str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise EvalpipeError(f"{where}: must be a list of non-empty strings")
    return value
