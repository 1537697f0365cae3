"""Answer extraction, numeric normalisation and verdicts, on literal inputs."""

from __future__ import annotations

import pytest

from evalpipe.errors import EvalpipeError
from evalpipe.tasks.load import load_task
from evalpipe.tasks.scoring import (
    ExtractorSpec,
    Scoring,
    check_extractor,
    extract,
    normalize_number,
    score,
)

STRICT = ExtractorSpec(
    "strict", "regex", pattern=r"The answer is \$?(-?[0-9.,]*[0-9])", select="first"
)
FLEXIBLE = ExtractorSpec("flexible", "last_number")
LAST_LINE = ExtractorSpec("last_line", "last_line_number")
GSM8K_LIKE = Scoring((STRICT, FLEXIBLE), primary="strict")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("18", "18"),
        ("18.00", "18"),
        ("18.0", "18"),
        ("18.", "18"),
        ("$18", "18"),
        ("$1,000.", "1000"),
        ("1,000", "1000"),
        ("1,450,000", "1450000"),
        ("-5", "-5"),
        ("-$5", "-5"),
        ("$-5", "-5"),
        ("\u22125", "-5"),
        ("+7", "7"),
        ("-0", "0"),
        ("-0.00", "0"),
        (".5", "0.5"),
        ("0.50", "0.5"),
        ("3.14159", "3.14159"),
        ("0.0001", "0.0001"),
        ("  42 ", "42"),
        ("007", "7"),
        ("100", "100"),
        ("12345678901234567890", "12345678901234567890"),
    ],
)
def test_normalize_number_accepts(text: str, expected: str) -> None:
    assert normalize_number(text) == expected


@pytest.mark.parametrize(
    "text", ["", ".", "$", "-", "abc", "1e3", "1/2", "50%", "1 000", "18 apples", "1.2.3", "--5"]
)
def test_normalize_number_rejects(text: str) -> None:
    assert normalize_number(text) is None


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("So 23 - 15 = 8. The answer is 8.", "8"),
        ("The answer is $1,000.", "1000"),
        ("The answer is 18.00", "18"),
        ("The answer is -5.", "-5"),
        ("The answer is 7. Q: then The answer is 9.", "7"),  # first, like the exemplars
        ("the answer is 8.", None),  # strict is case-sensitive
        ("The answer is .", None),
        ("The answer is eight.", None),
        ("I think it is 8.", None),
        ("", None),
    ],
)
def test_strict_regex(output: str, expected: str | None) -> None:
    assert extract(STRICT, output) == expected


def test_regex_select_last_and_whole_match() -> None:
    last = ExtractorSpec("x", "regex", pattern=r"is (\d+)", select="last")
    assert extract(last, "is 1, is 2, is 3") == "3"
    no_group = ExtractorSpec("x", "regex", pattern=r"\d+", select="first")
    assert extract(no_group, "a 12 b 34") == "12"
    optional_group = ExtractorSpec("x", "regex", pattern=r"ans(?:wer (\d+))?")
    assert extract(optional_group, "ans") is None


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("She has 5 apples and 3 pears, so 8 in total.", "8"),
        ("Total: $1,234.50.", "1234.5"),
        ("The difference is 10-20 = -10", "-10"),
        ("From 10-20 people", "20"),  # a range, not minus twenty
        ("x-5", "5"),
        ("Items 5,6,7", "7"),  # not a thousands group
        ("It costs $.5", "0.5"),
        ("v2 and abc123", None),  # digits inside words are not numbers
        ("no numbers here", None),
        ("", None),
        ("18.00 dollars.", "18"),
        ("Answer: 72\n\n", "72"),
    ],
)
def test_last_number(output: str, expected: str | None) -> None:
    assert extract(FLEXIBLE, output) == expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Step 1: 3 + 4 = 7\nStep 2: 7 * 2 = 14\n14\n", "14"),
        ("Reasoning 12 and 13.\n\nFinal answer: $1,000\n  \n", "1000"),
        ("The total is 9.\nHope this helps!", None),  # the last line holds no number
        ("Computation: 5 + 5 = 10", "10"),
        ("", None),
        ("\n \n", None),
    ],
)
def test_last_line_number(output: str, expected: str | None) -> None:
    assert extract(LAST_LINE, output) == expected


def test_score_strict_and_flexible_disagree() -> None:
    # No "The answer is" sentence: strict finds nothing (wrong), flexible finds 18 (right).
    s = score(GSM8K_LIKE, "She makes 9 * 2 = 18 dollars.", "18")
    assert s.extracted == {"strict": None, "flexible": "18"}
    assert s.correct_by == {"strict": False, "flexible": True}
    assert s.correct is False
    # The opposite: strict right, flexible picks up a trailing number.
    s = score(GSM8K_LIKE, "The answer is 18. Next, 5 more.", "18")
    assert s.correct_by == {"strict": True, "flexible": False}
    assert s.correct is True


def test_score_normalises_both_sides() -> None:
    s = score(GSM8K_LIKE, "The answer is $1,000.00.", "1,000")
    assert s.correct is True
    assert s.target == "1000"
    assert s.extracted["strict"] == "1000"
    assert score(GSM8K_LIKE, "The answer is 1001.", "1000").correct is False


def test_score_no_answer_is_wrong_not_an_error() -> None:
    s = score(GSM8K_LIKE, "", "5")
    assert s.correct is False
    assert s.extracted == {"strict": None, "flexible": None}


def test_score_primary_decides() -> None:
    flexible_first = Scoring((STRICT, FLEXIBLE), primary="flexible")
    assert score(flexible_first, "so 18", "18").correct is True
    assert score(GSM8K_LIKE, "so 18", "18").correct is False


def test_score_rejects_non_numeric_target() -> None:
    with pytest.raises(EvalpipeError, match="not a number"):
        score(GSM8K_LIKE, "The answer is 5.", "five")


def test_score_rejects_unknown_primary() -> None:
    with pytest.raises(EvalpipeError, match="primary"):
        score(Scoring((FLEXIBLE,), primary="strict"), "5", "5")


def test_score_accepts_a_task() -> None:
    task = load_task("gsm8k")
    s = score(task, "9 * 2 = 18. The answer is 18.", "18")
    assert s.correct_by == {"strict": True, "flexible": True}
    chat = load_task("gsm8k-chat")
    s = score(chat, "Janet sells 9 eggs, 9 * 2 = 18.\n\n18", "18")
    assert s.correct_by == {"last_line": True, "flexible": True}
    assert score(chat, "The answer is 18.\nGood luck!", "18").correct is False


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ExtractorSpec("x", "magic"), "unknown extractor kind"),
        (ExtractorSpec("x", "regex"), "pattern"),
        (ExtractorSpec("x", "regex", pattern="(unclosed"), "bad regex"),
        (ExtractorSpec("x", "regex", pattern="a", select="middle"), "select"),
    ],
)
def test_check_extractor_rejects(spec: ExtractorSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_extractor(spec)
