"""Count prompt tokens the way the engine will, with the model's own tokenizer.

vLLM's completions endpoint encodes a prompt with ``add_special_tokens=True`` through the
model's Hugging Face tokenizer, so ``len(tokenizer(text).input_ids)`` is the engine's
``prompt_tokens``. transformers is imported lazily: only generated long-context tasks need it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from evalpipe.errors import EvalpipeError


def token_counter(model_dir: str) -> Callable[[str], int]:
    """A function giving the token count of a text for the model in local folder ``model_dir``."""
    if not Path(model_dir).expanduser().is_dir():
        raise EvalpipeError(
            f"this task builds prompts of exact token lengths and needs the model's tokenizer, "
            f"but {model_dir!r} is not a local folder; pass --model-path DIR (the model's "
            "local files)"
        )
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise EvalpipeError(
            "this task needs the `transformers` package to count tokens; "
            "pip install 'evalpipe[models]'"
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(Path(model_dir).expanduser()))
    except (OSError, ValueError) as exc:
        raise EvalpipeError(f"cannot load the tokenizer in {model_dir}: {exc}") from exc

    def count(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    return count
