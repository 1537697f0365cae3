"""The ``arith`` generator: seeded arithmetic word problems with exact integer answers."""

from __future__ import annotations

import random
from typing import Any

from evalpipe.tasks.generators.registry import Rows, register

# (place, unit) pairs keep the problems concrete without extra numbers in the wording, so
# every number in a question is an operand (the tests rely on that).
_SCENES = (
    ("warehouse", "boxes"),
    ("library", "books"),
    ("farm", "eggs"),
    ("bakery", "cookies"),
    ("school", "pencils"),
    ("shop", "apples"),
    ("museum", "tickets"),
    ("garden", "flowers"),
)
_PHRASES = {
    "+": (
        "Then {x} more {unit} arrive.",
        "It gets another {x} {unit}.",
        "Someone brings {x} more {unit}.",
    ),
    "-": (
        "Then {x} {unit} are taken away.",
        "Later, {x} of the {unit} are sold.",
        "It gives away {x} {unit}.",
    ),
    "*": (
        "Then the number of {unit} becomes {x} times as large.",
        "Later, the number of {unit} is multiplied by {x}.",
    ),
}
ARITH_OPS = "+-*"


def _draw(rng: random.Random, min_digits: int, max_digits: int) -> int:
    digits = rng.randint(min_digits, max_digits)
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


@register("arith", "1")
def arith(
    n: int,
    seed: int,
    min_digits: int = 2,
    max_digits: int = 3,
    n_ops: int = 2,
    ops: str = "+-",
    mul_digits: int = 1,
) -> Rows:
    """Multi-step arithmetic word problems with a worked rationale, in the GSM8K style.

    Each item starts from a number of ``min_digits``..``max_digits`` digits and applies
    ``n_ops`` operations drawn from ``ops`` (``+``, ``-``, ``*``), left to right; ``+`` and
    ``-`` operands have the same digit range, ``*`` multipliers have ``mul_digits`` digits.
    A subtraction that would not leave at least one is drawn smaller, or becomes an
    addition, so every intermediate result is a positive count. Rows hold ``question``,
    ``answer`` (text), ``rationale`` (ending "The answer is N."), ``start`` and ``steps``.
    Item ``i`` depends only on ``seed`` and the other parameters, never on ``n``.
    """
    for key, value in (
        ("n", n),
        ("seed", seed),
        ("min_digits", min_digits),
        ("max_digits", max_digits),
        ("n_ops", n_ops),
        ("mul_digits", mul_digits),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be an integer, not {value!r}")
    if n < 1 or n_ops < 1:
        raise ValueError("n and n_ops must be at least 1")
    if not 1 <= min_digits <= max_digits <= 12 or not 1 <= mul_digits <= 6:
        raise ValueError("need 1 <= min_digits <= max_digits <= 12 and 1 <= mul_digits <= 6")
    if not isinstance(ops, str) or not ops or set(ops) - set(ARITH_OPS):
        raise ValueError(f"ops must be a non-empty string of {ARITH_OPS!r}, not {ops!r}")
    op_choices = sorted(set(ops))  # "+-" and "-+" are the same task
    rng = random.Random(seed)
    rows: Rows = []
    for _ in range(n):
        place, unit = rng.choice(_SCENES)
        value = _draw(rng, min_digits, max_digits)
        start = value
        sentences = [f"A {place} has {value} {unit}."]
        work = [f"The {place} starts with {value} {unit}."]
        steps: list[list[Any]] = []
        for _ in range(n_ops):
            op = rng.choice(op_choices)
            if op == "*":
                x = _draw(rng, mul_digits, mul_digits)
                x = max(x, 2)  # "1 times as large" is not an operation
                new = value * x
            else:
                x = _draw(rng, min_digits, max_digits)
                if op == "-" and x >= value:
                    low = 10 ** (min_digits - 1)
                    if value - 1 >= low:
                        x = rng.randint(low, value - 1)
                    else:
                        op = "+"
                new = value + x if op == "+" else value - x
            sentences.append(rng.choice(_PHRASES[op]).format(x=x, unit=unit))
            work.append(f"{value} {op} {x} = {new}.")
            steps.append([op, x])
            value = new
        sentences.append(f"How many {unit} does the {place} have now?")
        work.append(f"The answer is {value}.")
        rows.append(
            {
                "question": " ".join(sentences),
                "answer": str(value),
                "rationale": " ".join(work),
                "start": start,
                "steps": steps,
            }
        )
    return rows
