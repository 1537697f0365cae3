"""AISBench output folders → evalpipe runs, on the fixtures of a real AISBench run.

tests/fixtures/aisbench/README.md says how the two folders were made: one AISBench gsm8k run
against the CPU vLLM engine with --dump-eval-details, and the same predictions evaluated
again without details. Every expected value below is read from those files, never retyped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from evalpipe.errors import EvalpipeError
from evalpipe.importers.aisbench import rules
from evalpipe.importers.aisbench.build import build_runs, import_aisbench, read_output
from evalpipe.importers.aisbench.config import parse_config
from evalpipe.layout import LayoutError
from evalpipe.records import Run, canonical_json, sha256_text
from evalpipe.store import Store, open_store

FIXTURES = Path(__file__).parents[1] / "fixtures" / "aisbench"
MODEL, DATASET = "vllm-api-general-chat", "gsm8k"


def _run_folder(variant: str) -> Path:
    (folder,) = (FIXTURES / variant).iterdir()
    return folder


DETAILS = _run_folder("details")
NO_DETAILS = _run_folder("no_details")


def _predictions(folder: Path) -> dict[int, dict[str, Any]]:
    path = folder / "predictions" / MODEL / f"{DATASET}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return {r["id"]: r for r in rows}


def _results(folder: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(
        (folder / "results" / MODEL / f"{DATASET}.json").read_text(encoding="utf-8")
    )
    return value


def _one(value: Any) -> Any:
    return value[0] if isinstance(value, list) else value


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(tmp_path / "evalpipe.db")


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A writable copy of the details folder, keeping its timestamp name."""
    return Path(shutil.copytree(DETAILS, tmp_path / "out" / DETAILS.name))


def _import(store: Store, folder: Path, **kwargs: Any) -> list[Run]:
    return import_aisbench(store, folder, layout=kwargs.pop("layout", "tp1"), **kwargs)


# --- the details variant --------------------------------------------------------------


def test_counts_and_ids(store: Store) -> None:
    preds = _predictions(DETAILS)
    details = _results(DETAILS)["details"]
    (run,) = _import(store, DETAILS)
    samples = store.samples(run.run_id)
    assert len(preds) == len(details) == 10
    assert run.n_items == run.n_samples == len(samples) == 10
    assert sorted(int(s.item_id) for s in samples) == sorted(preds) == list(range(10))
    assert run.n_errors == 0
    assert run.status == "finished"
    assert run.config.task == "aisbench:gsm8k"
    assert run.config.engine_kind == "import"


def test_verdicts_outputs_and_targets_match_the_files(store: Store) -> None:
    preds = _predictions(DETAILS)
    details = _results(DETAILS)["details"]
    (run,) = _import(store, DETAILS)
    samples = {int(s.item_id): s for s in store.samples(run.run_id)}
    verdicts = {i: _one(details[str(i)]["correct"]) for i in preds}
    assert set(verdicts.values()) == {True, False}, "the fixture needs right and wrong answers"
    for i, s in samples.items():
        assert s.correct is verdicts[i]
        assert s.correct_by["aisbench"] is verdicts[i]
        assert s.output == preds[i]["prediction"]
        assert s.target == _one(details[str(i)]["references"])
        assert s.extracted["aisbench"] == _one(details[str(i)]["predictions"])
    texts = store.get_prompts(s.prompt_hash for s in samples.values())
    for i, s in samples.items():
        sent = [
            {"role": "user" if m["role"] == "HUMAN" else m["role"], "content": m["prompt"]}
            for m in preds[i]["origin_prompt"]
        ]
        assert json.loads(texts[s.prompt_hash]) == sent


def test_accuracy_equals_the_results_file(store: Store) -> None:
    results = _results(DETAILS)
    (run,) = _import(store, DETAILS)
    assert run.accuracy is not None
    assert 100 * run.accuracy == pytest.approx(results["accuracy"], abs=1e-9)
    assert run.n_correct == sum(_one(d["correct"]) for d in results["details"].values())
    assert run.provenance["aisbench_metrics"]["accuracy"] == results["accuracy"]
    assert run.provenance["verdicts"] == "details"


def test_config_and_provenance_come_from_the_dumped_config(store: Store) -> None:
    (config_file,) = (DETAILS / "configs").glob("*.py")
    config = parse_config(config_file.read_text(encoding="utf-8"))
    (model_cfg,) = config["models"]
    (run,) = _import(store, DETAILS, layout="DCP1tp1")
    c = run.config
    assert c.layout == "tp1"
    assert c.model == model_cfg["model"] == "smollm2"
    assert c.model_fingerprint == "name:smollm2"
    assert c.sampling == {**model_cfg["generation_kwargs"], "max_tokens": model_cfg["max_out_len"]}
    assert c.concurrency == model_cfg["batch_size"]
    assert c.limit == config["cli_args"]["num_prompts"] == 10
    assert c.task_version.startswith("aisbench-")
    p = run.provenance
    assert p["aisbench_folder"] == DETAILS.name
    assert run.started_at.replace("-", "").replace(":", "").replace("T", "_") == DETAILS.name
    assert p["config_file"] == f"configs/{config_file.name}"
    assert p["config_sha256"] == hashlib.sha256(config_file.read_bytes()).hexdigest()
    assert p["model_config"]["host_port"] == model_cfg["host_port"]
    assert p["dataset_config"]["abbr"] == DATASET
    pred_file = f"predictions/{MODEL}/{DATASET}.jsonl"
    assert p["files"][pred_file] == hashlib.sha256((DETAILS / pred_file).read_bytes()).hexdigest()
    # the run-level prompt hash is the runner's: sha256 over (item_id, prompt_hash) lines
    samples = store.samples(run.run_id)
    expect = sha256_text(
        "".join(canonical_json([s.item_id, s.prompt_hash]) + "\n" for s in samples)
    )
    assert c.prompt_hash == expect


def test_model_path_gives_a_weights_fingerprint(store: Store, tmp_path: Path) -> None:
    weights = tmp_path / "model"
    weights.mkdir()
    (weights / "config.json").write_text("{}", encoding="utf-8")
    (run,) = _import(store, DETAILS, model_path=str(weights), model="SmolLM2-135M")
    assert run.config.model == "SmolLM2-135M"
    assert run.config.model_fingerprint.startswith("sha256:")


def test_layout_is_required_and_checked(store: Store) -> None:
    with pytest.raises(EvalpipeError, match="pass --layout") as info:
        import_aisbench(store, DETAILS, layout=None)
    assert info.value.exit_code == 2
    with pytest.raises(LayoutError):
        import_aisbench(store, DETAILS, layout="tp0")
    with pytest.raises(EvalpipeError, match="cannot run on platform any"):
        import_aisbench(store, DETAILS, layout="tp2dcp3")
    with pytest.raises(EvalpipeError, match="platform cpu"):
        import_aisbench(store, DETAILS, layout="tp2pcp2", platform="cpu")
    assert store.list_runs() == []


def test_importing_twice_writes_nothing_new(store: Store, copy: Path) -> None:
    lines: list[str] = []
    first = _import(store, DETAILS, log=lines.append)
    before = store.samples(first[0].run_id)
    second = _import(store, DETAILS, log=lines.append)
    moved = _import(store, copy)  # the same folder elsewhere is the same run
    assert [r.run_id for r in first] == [r.run_id for r in second] == [r.run_id for r in moved]
    assert len(store.list_runs()) == 1
    assert store.samples(first[0].run_id) == before
    assert lines[0].startswith(f"stored {first[0].run_id}")
    assert lines[1].startswith(f"already stored, nothing written: {first[0].run_id}")
    # another layout is another claim about the server: a new run
    (other,) = _import(store, DETAILS, layout="tp2")
    assert other.run_id != first[0].run_id
    assert len(store.list_runs()) == 2


def test_run_id_is_stable_and_dated() -> None:
    output = read_output(DETAILS)
    a = build_runs(output, layout="tp1")
    b = build_runs(read_output(DETAILS), layout="tp1")
    assert a[0].run.run_id == b[0].run.run_id
    assert a[0].run.run_id.startswith(DETAILS.name.replace("_", "-") + "-")


def test_run_id_did_not_change_when_engine_args_became_structured() -> None:
    # The id the previous code gave this fixture (a store written then finds it again).
    (item,) = build_runs(read_output(DETAILS), layout="tp1")
    assert item.run.run_id == "20261128-072944-5bad3b5bc648"


def test_a_different_stored_run_under_the_same_id_is_refused(store: Store) -> None:
    (item,) = build_runs(read_output(DETAILS), layout="tp1")
    store.create_run(item.run.with_(tags=("edited",)), item.samples, item.prompts)
    with pytest.raises(EvalpipeError, match="different content"):
        _import(store, DETAILS)


# --- the no-details variant -----------------------------------------------------------


def test_without_details_gsm8k_verdicts_are_recomputed(store: Store) -> None:
    assert "details" not in _results(NO_DETAILS)
    assert _predictions(NO_DETAILS) == _predictions(DETAILS)
    lines: list[str] = []
    (plain,) = _import(store, NO_DETAILS, log=lines.append)
    (detailed,) = _import(store, DETAILS)
    assert plain.run_id != detailed.run_id
    assert plain.provenance["verdicts"] == "recomputed"
    newest = sorted((NO_DETAILS / "configs").glob("*.py"))[-1]
    assert plain.provenance["config_file"] == f"configs/{newest.name}"
    assert plain.message is not None and "recomputed" in plain.message
    assert any("note:" in line and "--dump-eval-details" not in line for line in lines)
    assert 100 * (plain.accuracy or 0) == pytest.approx(_results(NO_DETAILS)["accuracy"])
    # the same predictions get the same verdicts, targets and hashes either way
    got = {s.item_id: s for s in store.samples(plain.run_id)}
    want = {s.item_id: s for s in store.samples(detailed.run_id)}
    assert {k: (s.correct, s.target, s.extracted) for k, s in got.items()} == {
        k: (s.correct, s.target, s.extracted) for k, s in want.items()
    }
    for key in ("task_version", "prompt_hash", "data_sha256", "sampling", "layout"):
        assert getattr(plain.config, key) == getattr(detailed.config, key)


def test_without_details_another_evaluator_is_refused(store: Store, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(NO_DETAILS, tmp_path / NO_DETAILS.name))
    # the inference run's config and the re-evaluation's: the newer one is read
    older, config_file = sorted((folder / "configs").glob("*.py"))
    assert "Gsm8kEvaluator" in older.read_text(encoding="utf-8")
    text = config_file.read_text(encoding="utf-8")
    assert "Gsm8kEvaluator" in text
    config_file.write_text(text.replace("Gsm8kEvaluator", "AccEvaluator"), encoding="utf-8")
    with pytest.raises(EvalpipeError, match=r"-m eval --reuse .*--dump-eval-details"):
        _import(store, folder)
    assert store.list_runs() == []


def test_without_details_a_disagreeing_accuracy_is_refused(store: Store, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(NO_DETAILS, tmp_path / NO_DETAILS.name))
    path = folder / "results" / MODEL / f"{DATASET}.json"
    results = json.loads(path.read_text(encoding="utf-8"))
    results["accuracy"] += 10.0
    path.write_text(json.dumps(results), encoding="utf-8")
    with pytest.raises(EvalpipeError, match=r"re-applied .* add per-sample details"):
        _import(store, folder)


# --- broken folders -------------------------------------------------------------------


def _pred_path(folder: Path) -> Path:
    return folder / "predictions" / MODEL / f"{DATASET}.jsonl"


def _result_path(folder: Path) -> Path:
    return folder / "results" / MODEL / f"{DATASET}.json"


def test_truncated_predictions_name_the_line(store: Store, copy: Path) -> None:
    path = _pred_path(copy)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3][: len(lines[3]) // 2]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(EvalpipeError, match=rf"{DATASET}\.jsonl:4: not valid JSON"):
        _import(store, copy)
    assert store.list_runs() == []


def test_missing_results_says_to_run_the_evaluation(store: Store, copy: Path) -> None:
    _result_path(copy).unlink()
    with pytest.raises(EvalpipeError, match=rf"missing.*-m eval --reuse {copy.name}"):
        _import(store, copy)


def test_missing_predictions_says_to_run_the_inference(store: Store, copy: Path) -> None:
    _pred_path(copy).unlink()
    with pytest.raises(EvalpipeError, match="inference step wrote no predictions"):
        _import(store, copy)


def test_corrupt_results_file(store: Store, copy: Path) -> None:
    _result_path(copy).write_text('{"accuracy": 10.0, "details": {', encoding="utf-8")
    with pytest.raises(EvalpipeError, match=r"\.json:1: not valid JSON"):
        _import(store, copy)


def test_edited_details_disagree_with_the_accuracy(store: Store, copy: Path) -> None:
    path = _result_path(copy)
    results = json.loads(path.read_text(encoding="utf-8"))
    first = results["details"]["0"]
    first["correct"] = [not _one(first["correct"])]
    path.write_text(json.dumps(results), encoding="utf-8")
    with pytest.raises(EvalpipeError, match=r"details give .* but its 'accuracy'"):
        _import(store, copy)


def test_details_that_do_not_match_the_predictions(store: Store, copy: Path) -> None:
    path = _result_path(copy)
    results = json.loads(path.read_text(encoding="utf-8"))
    results["details"]["2"]["origin_prediction"] = "something else"
    path.write_text(json.dumps(results), encoding="utf-8")
    with pytest.raises(EvalpipeError, match=r"details\['2'\] does not match the prediction"):
        _import(store, copy)


def test_not_a_run_folder(store: Store, tmp_path: Path, copy: Path) -> None:
    with pytest.raises(EvalpipeError, match="not a folder"):
        _import(store, tmp_path / "nope")
    # the work dir above the run folders: point at the run
    with pytest.raises(EvalpipeError, match=rf"pass one of them, e\.g\. .*{copy.name}"):
        _import(store, copy.parent)
    shutil.rmtree(copy / "configs")
    with pytest.raises(EvalpipeError, match=r"not an AISBench run folder \(no configs/\*\.py\)"):
        _import(store, copy)


def test_damaged_config(store: Store, copy: Path) -> None:
    (config_file,) = (copy / "configs").glob("*.py")
    config_file.write_text("models = [dict(abbr='x',\n", encoding="utf-8")
    with pytest.raises(EvalpipeError, match="not a readable AISBench config dump"):
        _import(store, copy)


def test_unknown_dataset_filter(store: Store) -> None:
    with pytest.raises(EvalpipeError, match="no dataset mmlu in this run"):
        _import(store, DETAILS, datasets=["mmlu"])
    (run,) = _import(store, DETAILS, datasets=[DATASET])
    assert run.config.task == "aisbench:gsm8k"


# --- failed requests, ranges, secrets -------------------------------------------------


def test_a_failed_request_is_an_error_not_a_wrong_answer(store: Store, copy: Path) -> None:
    results = json.loads(_result_path(copy).read_text(encoding="utf-8"))
    wrong = next(int(k) for k, d in results["details"].items() if not _one(d["correct"]))
    path = _pred_path(copy)
    kept = path.read_text(encoding="utf-8").splitlines()
    dropped = [line for line in kept if json.loads(line)["id"] == wrong]
    path.write_text("\n".join(x for x in kept if x not in dropped) + "\n", encoding="utf-8")
    failed = {"data_abbr": DATASET, "id": wrong, "input": "", "error_info": "HTTP 500"}
    path.with_name(f"{DATASET}_failed.jsonl").write_text(json.dumps(failed) + "\n", "utf-8")
    # what AISBench's eval writes for a failed request: an empty mock prediction, wrong
    results["details"][str(wrong)].update(prompt="", origin_prediction="")
    _result_path(copy).write_text(json.dumps(results), encoding="utf-8")
    (run,) = _import(store, copy)
    (sample,) = [s for s in store.samples(run.run_id) if s.item_id == str(wrong)]
    assert sample.error == "HTTP 500" and sample.correct is None and sample.output is None
    assert run.n_errors == 1 and run.n_samples == 10
    assert run.accuracy == pytest.approx(run.n_correct / 9)
    assert run.message is not None and "failed in AISBench" in run.message


def test_a_slice_test_range_maps_back_to_dataset_indices(store: Store, copy: Path) -> None:
    (config_file,) = (copy / "configs").glob("*.py")
    text = config_file.read_text(encoding="utf-8")
    assert "test_range='[:10]'" in text
    config_file.write_text(text.replace("test_range='[:10]'", "test_range='[5:15]'"), "utf-8")
    (run,) = _import(store, copy)
    assert sorted(int(s.item_id) for s in store.samples(run.run_id)) == list(range(5, 15))
    assert run.provenance["item_ids"] == "item ids are dataset indices ([5:15])"


def test_api_key_is_not_stored(store: Store, copy: Path) -> None:
    (config_file,) = (copy / "configs").glob("*.py")
    text = config_file.read_text(encoding="utf-8")
    assert "api_key=''" in text
    config_file.write_text(text.replace("api_key=''", "api_key='sk-secret'"), "utf-8")
    (run,) = _import(store, copy)
    assert run.provenance["model_config"]["api_key"] == "<redacted>"
    assert "sk-secret" not in json.dumps(dict(run.provenance))


# --- pure pieces ----------------------------------------------------------------------


def test_config_dump_is_read_without_running_it() -> None:
    source = (
        "models = [dict(abbr='m', max_out_len=-1, stop=('a', 'b'), kw={'x': 1, 2: None})]\n"
        "datasets = [dict(abbr='d', fn=__import__('os').getcwd())]\n"
        "work_dir = 'outputs/default/20261128_000000'\n"
    )
    config = parse_config(source)
    assert config["models"] == [
        {"abbr": "m", "max_out_len": -1, "stop": ["a", "b"], "kw": {"x": 1, "2": None}}
    ]
    assert config["datasets"][0]["fn"] == "__import__('os').getcwd()"
    assert config["work_dir"] == "outputs/default/20261128_000000"


@pytest.mark.parametrize(
    ("output", "extracted"),
    [
        ("so 5 + 7 = 12\nanswer:12", "12"),
        ("It costs $1,000.", "000"),  # AISBench's rule, kept as it is
        ("x = -3.5 then", "-3.5"),
        ("The answer is 4.\n\nQuestion: what is 9?", "4"),
        ("no number", "NULL"),
    ],
)
def test_aisbench_gsm8k_extraction(output: str, extracted: str) -> None:
    assert rules.gsm8k_extract(output) == extracted


def test_aisbench_gsm8k_equality_and_reference() -> None:
    assert rules.gsm8k_reference("48/2 = <<48/2=24>>24\n#### 1,024") == "1024"
    assert rules.gsm8k_reference("no final line") is None
    assert rules.gsm8k_equal("18.0", "18") and rules.gsm8k_equal("18", "18")
    assert not rules.gsm8k_equal("NULL", "18") and not rules.gsm8k_equal("17", "18")


def test_reasoning_is_stripped_as_aisbench_does() -> None:
    assert rules.non_reasoning("<think>7</think> 8") == "8"
    assert rules.non_reasoning("thinking 7</think> 8") == "8"
    assert rules.non_reasoning("plain 9") == "plain 9"


def test_cli_import_aisbench_needs_a_layout_and_is_idempotent(tmp_path: Path) -> None:
    import subprocess
    import sys

    folder = DETAILS
    store = str(tmp_path / "s.db")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "evalpipe", "import", "aisbench", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    missing = cli("--store", store)
    assert missing.returncode == 2 and "--layout" in missing.stderr
    first = cli("--store", store, "--layout", "tp1", "--json")
    assert first.returncode == 0, first.stderr
    run = json.loads(first.stdout.splitlines()[0])
    assert run["layout"] == "tp1" and run["task"] == "aisbench:gsm8k" and run["n_samples"] == 10
    again = cli("--store", store, "--layout", "tp1")
    assert again.returncode == 0 and "already stored, nothing written" in again.stderr
