"""Long-context generators (passkey, needle-multi), shard periods, per-needle scoring and the
shard-boundary breakdown of a comparison."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from builders import run_config

from evalpipe.compare import breakdown
from evalpipe.compare.jsonout import to_json
from evalpipe.compare.runs import compare_runs
from evalpipe.engine.tokens import token_counter
from evalpipe.errors import EvalpipeError
from evalpipe.layout import interleave_size, parse, shard_period
from evalpipe.options import RunOptions, parse_params
from evalpipe.records import Run, Sample, new_run_id, utcnow
from evalpipe.report.text import format_comparison
from evalpipe.run.plan import plan
from evalpipe.store import open_store
from evalpipe.tasks import generators
from evalpipe.tasks.generators import longctx
from evalpipe.tasks.load import load_task
from evalpipe.tasks.scoring import ExtractorSpec, Scoring, score

_WORD = re.compile(r"\w+|[^\w\s]|\n")


def words(text: str) -> int:
    """A tokenizer stand-in: words, punctuation and newlines are one token each."""
    return len(_WORD.findall(text))


def passkey(count: Callable[[str], int] = words, **params: object) -> list[dict[str, object]]:
    ctx = {"count_tokens": count, "shard_period": params.pop("shard_period", None)}
    return generators.generate("passkey", {"n": 1, "seed": 7, **params}, ctx)[1]


def test_default_grid_straddles_multiples_of_the_reference_period() -> None:
    rows = passkey()
    lengths = sorted({r["target_tokens"] for r in rows})
    assert lengths == [1008, 1040, 2032, 2064, 3056, 3088]
    assert len(rows) == 6 * 3  # three depths per length
    assert {r["period_source"] for r in rows} == {"reference"}
    assert {(r["boundary"], r["offset"]) for r in rows if r["target_tokens"] == 2032} == {
        (2048, -16)
    }


def test_period_comes_from_the_layout_unless_too_small_or_given() -> None:
    assert longctx.resolve_period("auto", 2048) == (2048, "layout")
    assert longctx.resolve_period("auto", 8) == (1024, "reference")  # dcp8 x interleave 1
    assert longctx.resolve_period(300, 2048) == (300, "param")
    with pytest.raises(ValueError, match="period"):
        longctx.resolve_period(0, None)
    rows = passkey(shard_period=256, multiples=[1, 2])
    assert sorted({r["target_tokens"] for r in rows}) == [240, 272, 496, 528]


def test_lengths_are_exact_and_the_key_is_recoverable() -> None:
    rows = passkey(lengths=[150, 151, 152, 400], depths=[0.0, 0.5, 1.0])
    for row in rows:
        prompt = str(row["prompt"])
        assert words(prompt) == row["target_tokens"]
        key = str(row["answer"])
        assert re.fullmatch(r"[1-9][0-9]{4}", key)
        # The key is the only number in the prompt and it sits at the requested depth.
        assert re.findall(r"[0-9]+", prompt) == [key, key]
        hay = prompt[len(longctx.PASSKEY_INTRO) : prompt.rindex(longctx.PASSKEY_QUESTION)]
        where = hay.index(f"The pass key is {key}") / len(hay)
        assert abs(where - float(row["depth"])) < 0.15


def test_generation_is_deterministic_and_seeded() -> None:
    assert passkey(lengths=[200]) == passkey(lengths=[200])
    assert passkey(lengths=[200]) != passkey(lengths=[200], seed=8)
    # Item i does not depend on how many repeats follow it.
    assert passkey(lengths=[200], n=2)[:3] == passkey(lengths=[200])


def test_a_target_shorter_than_the_question_is_refused() -> None:
    with pytest.raises(EvalpipeError, match="shorter than the prompt"):
        passkey(lengths=[20])


@pytest.mark.parametrize("bad", [{"depths": [1.5]}, {"key_digits": 2}, {"multiples": [0]}])
def test_bad_parameters_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(EvalpipeError):
        passkey(**bad)


def test_needles_are_all_in_the_prompt_in_order() -> None:
    ctx = {"count_tokens": words, "shard_period": None}
    params = {"n": 2, "seed": 3, "lengths": [300, 333], "needles": 4}
    rows = generators.generate("needle-multi", params, ctx)[1]
    assert len(rows) == 4
    for row in rows:
        assert words(str(row["prompt"])) == row["target_tokens"]
        numbers = str(row["answer"]).split()
        assert len(numbers) == 4
        assert re.findall(r"[0-9]+", str(row["prompt"])) == numbers
        for name in row["names"]:  # type: ignore[attr-defined]
            assert str(row["prompt"]).count(name) == 3  # needle + twice in the question


def test_exact_lengths_with_the_real_tokenizers(gemma: str, smollm2: str) -> None:
    for model in (gemma, smollm2):
        count = token_counter(model)
        rows = passkey(count, period=128, multiples=[1, 2], offsets=[-16, 0, 16])
        assert [r["target_tokens"] for r in rows] == [
            n for n in (112, 128, 144, 240, 256, 272) for _ in range(3)
        ]
        assert all(count(str(r["prompt"])) == r["target_tokens"] for r in rows)


def test_the_task_renders_the_prompt_verbatim_with_the_layouts_grid(gemma: str) -> None:
    options = RunOptions(
        task="passkey",
        model=gemma,
        layout="tp1",
        platform="cpu",
        shard_layout="dcp4",
        engine_args=("cp_kv_cache_interleave_size=64",),
        params=("multiples=[1]",),
    )
    p = plan(options)
    count = token_counter(gemma)
    assert sorted({count(q.text) for q in p.prompts}) == [240, 272]  # 4 x 64 = 256 +-16
    assert "generator:passkey@1" in p.dataset.source
    # The same run without the shard layout gets the reference grid, so other data.
    other = plan(RunOptions(task="passkey", model=gemma, platform="cpu", params=("multiples=[1]",)))
    assert other.dataset.sha256 != p.dataset.sha256
    # A baseline without the interleave argument (DCP's alone) gets the grid's with it.
    base = plan(dataclasses.replace(options, engine_args=(), shard_interleave=64, layout="tp2"))
    assert base.dataset.sha256 == p.dataset.sha256
    without = plan(dataclasses.replace(options, engine_args=(), layout="tp2"))
    assert without.dataset.sha256 != p.dataset.sha256  # 4 x 1: another grid
    with pytest.raises(EvalpipeError, match="--shard-interleave must be at least 1"):
        plan(dataclasses.replace(options, shard_interleave=0))


def test_params_override_generators_only() -> None:
    assert parse_params(["lengths=[1, 2]", "period=auto", "n=3"]) == {
        "lengths": [1, 2],
        "period": "auto",
        "n": 3,
    }
    with pytest.raises(EvalpipeError, match="KEY=VALUE"):
        parse_params(["oops"])
    with pytest.raises(EvalpipeError, match="not a generator"):
        load_task("gsm8k", params={"n": 3})
    with pytest.raises(EvalpipeError, match=r"unexpected keyword|lenghts"):
        load_task("passkey", params={"lenghts": [100]})
    assert load_task("arith", params={"max_digits": 3}).data.generator_params["max_digits"] == 3


def test_shard_period_is_dcp_times_interleave() -> None:
    assert shard_period(parse("tp1"), {}, "cuda") is None
    assert shard_period(parse("dp2tp8dcp8"), {}, "cuda") == 8
    assert shard_period(parse("dp2tp8dcp8"), {}, "ascend") == 1024
    args = {"cp_kv_cache_interleave_size": 16, "tensor_parallel_size": 8}
    assert shard_period(parse("tp8dcp4"), args, "cuda") == 64
    assert interleave_size({"dcp_kv_cache_interleave_size": 32}, "cuda") == 32
    with pytest.raises(ValueError, match="integer"):
        interleave_size({"cp_kv_cache_interleave_size": "x"}, "cuda")
    with pytest.raises(ValueError, match="at least 1"):
        interleave_size({"cp_kv_cache_interleave_size": 0}, "cuda")


def test_all_of_scores_each_needle() -> None:
    cfg = Scoring((ExtractorSpec("numbers", "all_numbers"),), "numbers", "all_of")
    s = score(cfg, "The numbers are 1234, 99 and 5678.", "1234 5678 4321")
    assert s.correct is False
    assert s.correct_by == {
        "numbers": False,
        "numbers[1]": True,
        "numbers[2]": True,
        "numbers[3]": False,
    }
    assert score(cfg, "4321 then 5678 then 1234", "1234 5678 4321").correct is True
    assert score(cfg, "no numbers", "1 2").extracted == {"numbers": None}
    with pytest.raises(EvalpipeError, match="not a number"):
        score(cfg, "1", "1 x")


def test_boundary_groups_exact_lengths_and_buckets() -> None:
    rows = [(240, True, True), (240, False, True), (272, True, False), (496, True, True)]
    groups = breakdown.boundary_groups(rows, 256)
    assert [(g.label, g.n, g.only_run, g.only_baseline) for g in groups] == [
        ("1×256-16", 2, 0, 1),
        ("1×256+16", 1, 1, 0),
        ("2×256-16", 1, 0, 0),
    ]
    assert groups[0].delta == -0.5
    many = [(t, True, True) for t in range(100, 1100, 10)]
    bucketed = breakdown.boundary_groups(many, 256, exact_limit=10)
    assert sum(g.n for g in bucketed) == len(many)
    at = next(g for g in bucketed if g.label == "at 2×256")
    assert (at.offset_low, at.offset_high) == (-12, 8)
    with pytest.raises(ValueError):
        breakdown.boundary_groups(rows, 0)


def _run(store_path: Path, layout: str, correct: list[bool], tokens: list[int]) -> Run:
    cfg = run_config(layout, task="passkey", platform="ascend", engine_args={})
    with open_store(str(store_path)) as store:
        run = Run(run_id=new_run_id(), config=cfg, status="running", started_at=utcnow())
        store.create_run(run)
        for i, (ok, t) in enumerate(zip(correct, tokens, strict=True)):
            store.put_sample(
                Sample(
                    run_id=run.run_id,
                    item_id=str(i),
                    prompt_hash=f"h{i}",
                    output=str(i),
                    target=str(i),
                    correct=ok,
                    correct_by={"key": ok},
                    prompt_tokens=t,
                )
            )
        done = run.with_(status="finished", **store.summarize(run.run_id))
        store.update_run(done)
        return done


def test_compare_locates_prompts_relative_to_the_cp_layouts_boundaries(tmp_path: Path) -> None:
    tokens = [1008, 1040, 2032, 2064] * 30
    base = _run(tmp_path / "s.db", "dp2tp8", [True] * 120, tokens)
    # The CP run loses only the prompts just past a boundary.
    lost = [t in (1040, 2064) and i % 3 == 0 for i, t in enumerate(tokens)]
    run = _run(tmp_path / "s.db", "dp2tp8dcp8", [not x for x in lost], tokens)
    with open_store(str(tmp_path / "s.db")) as store:
        c = compare_runs(store, run, base)
        d = to_json(c)
    assert d["shard_period"] == 1024 and d["shard_period_source"] == "layout"  # 8 x 128
    by = {g["label"]: g for g in d["shard_boundaries"]}
    assert set(by) == {"1×1024-16", "1×1024+16", "2×1024-16", "2×1024+16"}
    assert by["1×1024+16"]["only_baseline"] == 10 and by["1×1024-16"]["only_baseline"] == 0
    assert d["accuracy_by_verdict"]["key"]["baseline"] == 1.0
    text = format_comparison(c)
    assert "period 1024 tokens" in text and "1×1024+16" in text
    with open_store(str(tmp_path / "s.db")) as store:
        forced = to_json(compare_runs(store, run, base, shard_period=512))
    assert forced["shard_period_source"] == "given"
    assert {g["boundary"] for g in forced["shard_boundaries"]} == {1024, 2048}
