"""The Ray executor on a real local cluster (tests/ray_cluster.py): a head with 2 fake NPUs and
a worker node with 4, on loopback, shared by every test of this module.

The scheduling cases send their cells to the OpenAI fake: a group without an endpoint still
asks for its layout's devices (a placement group) while its cells reach the fake by URL, so
placement, packing, retries and the kill of a worker are the real Ray ones and cost seconds.
The engine test launches the real CPU vLLM from a Ray worker and kills that worker mid-cell.
"""

from __future__ import annotations

import _thread
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from engine_servers import require_vllm
from fake_openai import FakeOpenAI
from ray_cluster import Cluster, cell, free_port, group, ray_cluster

from evalpipe.errors import EvalpipeError
from evalpipe.options import RunOptions
from evalpipe.store import open_store
from evalpipe.sweep.cells import Cell, Group, GroupResult
from evalpipe.sweep.rayexec import RaySettings, import_ray, run_groups

TASK_TITLE = "ray::sweep_group"  # the process title of a worker running a group


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with ray_cluster(
        head={"NPU": 2},
        worker={"NPU": 4},
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    ) as c:
        yield c


def settings(cluster: Cluster, max_retries: int = 2, wait_timeout_s: float = 900.0) -> RaySettings:
    return RaySettings(cluster.address, "NPU", max_retries, wait_timeout_s)


class Said(list[str]):
    """The driver's messages, kept for the assertions."""

    def __call__(self, text: str) -> None:
        self.append(text)


def stored(store: str) -> dict[str, tuple[str, int, list[str]]]:
    """Each run in the store: (status, n_samples, item ids of its good samples, sorted)."""
    with open_store(store) as s:
        return {
            r.run_id: (r.status, r.n_samples, sorted(s.done_item_ids(r.run_id), key=int))
            for r in s.list_runs()
        }


def test_a_small_sweep_runs_every_group_on_its_devices_and_a_rerun_reuses_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    store, runs = str(tmp_path / "s.db"), tmp_path / "runs"
    with FakeOpenAI(model="m") as srv:
        groups = [
            group(
                2,
                cell(srv.url, store, runs, layout="tp2"),
                cell(srv.url, store, runs, layout="tp2", repeat=1),
            ),
            group(4, cell(srv.url, store, runs, layout="tp4", limit=3)),
            group(8, cell(srv.url, store, runs, layout="tp8"), endpoint=srv.url),
        ]
        said = Said()
        results = run_groups(groups, settings(cluster), said)
        assert [r.key for r in results] == ["m@tp2", "m@tp4", "m@tp8"]
        for r, g in zip(results, groups, strict=True):
            assert r.attempts == 1 and r.engine_lost is None and r.host
            assert [c.key for c in r.cells] == [c.key for c in g.cells]
            assert all(c.state == "finished" for c in r.cells), r
        assert [c.n_samples for r in results for c in r.cells] == [4, 4, 3, 4]
        runs_stored = stored(store)
        assert len(runs_stored) == 4
        for status, n, items in runs_stored.values():
            assert status == "finished" and items == [str(i) for i in range(n)]
        assert srv.completions == 15
        # Where each group went: the tp4 only fits the worker node; the endpoint group holds none.
        assert any("m@tp2 starts: 2 NPU on " in m for m in said)
        assert any("m@tp4 starts: 4 NPU on " in m for m in said)
        assert any("m@tp8 starts: no devices" in m for m in said)
        assert sum(" ended on " in m for m in said) == 3

        # The same sweep again, from outside the cluster (Ray Client): every cell is already
        # stored, nothing is generated.
        client = replace(settings(cluster), address=cluster.client_address)
        again = run_groups(groups, client, Said())
        assert srv.completions == 15
        assert [c.run_id for r in again for c in r.cells] == [
            c.run_id for r in results for c in r.cells
        ]


def test_layouts_that_do_not_fit_are_refused_before_anything_is_scheduled(
    cluster: Cluster, tmp_path: Path
) -> None:
    store, runs = str(tmp_path / "s.db"), tmp_path / "runs"
    with FakeOpenAI(model="m") as srv:
        groups = [
            group(1, cell(srv.url, store, runs)),
            group(16, cell(srv.url, store, runs, layout="dp2tp8dcp8")),
            group(5, cell(srv.url, store, runs, layout="tp5")),
        ]
        said = Said()
        with pytest.raises(EvalpipeError) as err:
            run_groups(groups, settings(cluster), said)
        assert srv.completions == 0 and said == []
    text = str(err.value)
    assert "dp2tp8dcp8 (model m) needs 16 NPU; the cluster offers 6 in total" in text
    assert "tp5 (model m) needs 5 NPU on one node; the cluster offers 6 in total" in text
    assert "its largest node has 4" in text and "STRICT_PACK" in text
    assert "endpoint" in text
    assert "tp1" not in text
    assert not Path(store).exists(), "nothing ran, so nothing was stored"


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_unreachable_address_says_which_and_how_to_fix_it(scheme: str) -> None:
    address = f"{scheme}127.0.0.1:{free_port()}"
    began = time.monotonic()
    with pytest.raises(EvalpipeError) as err:
        run_groups([], RaySettings(address=address, resource="NPU"), Said())
    assert time.monotonic() - began < 10, "refused at once, not after Ray's own retries"
    text = str(err.value)
    assert f"cannot reach the Ray cluster at {address}" in text
    assert "ray start --head" in text and "ray status" in text and "ray://HEAD:10001" in text


def test_lost_groups_are_retried_then_their_cells_say_retries_exhausted(
    cluster: Cluster, tmp_path: Path
) -> None:
    store, runs = str(tmp_path / "s.db"), tmp_path / "runs"
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens: the engine is gone
    groups = [
        # Its server does not answer: run_group returns engine_lost on every attempt.
        group(
            2,
            cell(down, store, runs, layout="tp2"),
            cell(down, store, runs, layout="tp2", repeat=1),
        ),
        # Its endpoint does not answer: run_group raises on the worker on every attempt.
        group(1, cell(down, store, runs), endpoint=down),
    ]
    said = Said()
    results = run_groups(groups, settings(cluster, max_retries=1), said)
    for r in results:
        assert r.attempts == 2 and r.engine_lost is not None
        assert "cannot reach an OpenAI-compatible server" in r.engine_lost
        for c in r.cells:
            assert c.state == "not run" and c.message is not None
            assert "retries exhausted (2 attempts, max_retries 1)" in c.message
            assert "cannot reach" in c.message
    assert sum("lost on" in m and "retrying (attempt 2 of 2)" in m for m in said) == 2
    assert sum("retries exhausted after 2 attempts" in m for m in said) == 2


def test_a_group_whose_devices_other_work_holds_is_given_up_after_the_timeout(
    cluster: Cluster, tmp_path: Path
) -> None:
    store, runs = str(tmp_path / "s.db"), tmp_path / "runs"
    ray = import_ray()
    ray.init(address=cluster.address, logging_level="WARNING")
    try:
        other = ray.util.placement_group([{"NPU": 4}], strategy="STRICT_PACK")  # another job
        ray.get(other.ready(), timeout=60)
        with FakeOpenAI(model="m") as srv:
            groups = [
                group(4, cell(srv.url, store, runs, layout="tp4")),
                group(2, cell(srv.url, store, runs, layout="tp2")),
            ]
            said = Said()
            results = run_groups(groups, settings(cluster, wait_timeout_s=2), said)
        blocked, ran = results
        assert [c.state for c in ran.cells] == ["finished"]
        ((c,),) = [blocked.cells]
        assert c.state == "not run" and c.message is not None
        assert "waited 2 s for 4 NPU on one node" in c.message and "ray status" in c.message
        assert any("m@tp4 not run: waited" in m for m in said)
        ray.util.remove_placement_group(other)
    finally:
        ray.shutdown()


def kill_when_stored(
    cluster: Cluster, store: str, at_least: int, killed: list[int]
) -> Callable[[], None]:
    """A thread body: once a run in ``store`` has ``at_least`` good samples and is not
    finished, SIGKILL the Ray worker running the group (found by its title)."""

    def body() -> None:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            time.sleep(0.2)
            runs = stored_or_none(store)
            if any(
                status != "finished" and len(items) >= at_least
                for status, _, items in runs.values()
            ):
                pids = cluster.processes(TASK_TITLE)
                if pids:
                    for pid in pids:
                        os.kill(pid, signal.SIGKILL)
                    killed.extend(pids)
                    return

    return body


def run_with_kill(
    cluster: Cluster, groups: list[Group], s: RaySettings, store: str, at_least: int
) -> tuple[list[GroupResult], list[int], Said]:
    killed: list[int] = []
    killer = threading.Thread(
        target=kill_when_stored(cluster, store, at_least, killed), daemon=True
    )
    killer.start()
    said = Said()
    results = run_groups(groups, s, said)
    killer.join(timeout=5)
    return results, killed, said


def test_a_worker_killed_mid_cell_is_retried_and_the_cell_ends_with_exactly_its_samples(
    cluster: Cluster, tmp_path: Path
) -> None:
    store, runs = str(tmp_path / "s.db"), tmp_path / "runs"
    n = 10
    with FakeOpenAI(model="m", delay_s=0.3) as srv:
        groups = [group(1, cell(srv.url, store, runs, limit=n, concurrency=1))]
        results, killed, said = run_with_kill(cluster, groups, settings(cluster), store, 2)
        sent = srv.completions
    assert len(killed) == 1, "exactly one worker ran the group when it was killed"
    (result,) = results
    assert result.attempts == 2 and result.engine_lost is None
    (only,) = result.cells
    assert only.state == "finished" and only.n_samples == n
    assert any("attempt 1 lost on" in m and "WorkerCrashedError" in m for m in said), said
    ((status, n_samples, items),) = stored(store).values()
    assert status == "finished" and n_samples == n
    assert items == [str(i) for i in range(n)]
    # Resumed, not restarted: only the request in flight when the worker died is sent twice.
    assert n <= sent <= n + 1


def test_ctrl_c_on_the_driver_stops_the_tasks_and_removes_their_placement_groups(
    cluster: Cluster, tmp_path: Path
) -> None:
    store, runs = str(tmp_path / "s.db"), tmp_path / "runs"
    ray = import_ray()
    ray.init(address=cluster.address, logging_level="WARNING")  # kept open to look after
    try:
        # 200 items, 60 s of work: the interrupt lands after 2 of them even on a machine an
        # engine keeps busy (with 40 items, 12 s, such a machine finished the run first).
        with FakeOpenAI(model="m", delay_s=0.3) as srv:
            groups = [group(1, cell(srv.url, store, runs, limit=200, concurrency=1))]

            def interrupt() -> None:
                while not any(len(i) >= 2 for _, _, i in stored_or_none(store).values()):
                    time.sleep(0.2)
                _thread.interrupt_main()  # what Ctrl-C does to the driver

            threading.Thread(target=interrupt, daemon=True).start()
            with pytest.raises(KeyboardInterrupt):
                run_groups(groups, settings(cluster), Said())
            sent = srv.completions
        ((status, n_samples, _),) = stored(store).values()
        # The task got the interrupt: its run is stored as interrupted, to resume later.
        assert status == "aborted" and 2 <= n_samples < 200 and sent < 200
        tables = ray.util.placement_group_table()
        assert tables and all(t["state"] == "REMOVED" for t in tables.values())
    finally:
        ray.shutdown()


def stored_or_none(store: str) -> dict[str, tuple[str, int, list[str]]]:
    try:
        return stored(store)
    except EvalpipeError:
        return {}  # not created yet


def test_importing_the_executor_needs_no_ray_and_using_it_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = "import sys; sys.modules['ray'] = None; import evalpipe.sweep.rayexec; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(EvalpipeError, match=r"pip install 'evalpipe\[ray\]'"):
        import_ray()


@pytest.mark.engine
@pytest.mark.timeout(1800)  # two engine starts on a machine shared with other work
def test_real_engine_worker_killed_mid_cell_resumes_on_a_fresh_engine(
    cluster: Cluster, tmp_path: Path, smollm2: str, pg_database: str
) -> None:
    """The group launches vLLM (CPU, tp1) from its Ray worker; SIGKILL of that worker
    mid-cell loses the group, which is retried on a fresh engine: the interrupted cell resumes
    from its stored samples and every cell ends with exactly its items."""
    require_vllm()
    runs = tmp_path / "runs"

    def real(repeat: int, limit: int) -> Cell:
        options = RunOptions(
            task="arith",
            model=smollm2,
            layout="tp1",
            engine="serve",
            engine_args=("max_model_len=2048",),
            limit=limit,
            concurrency=1,  # one item at a time: the kill lands mid-cell
            store=pg_database,
            runs_dir=runs,
            progress=False,
            repeat_index=repeat,
            reuse_finished=True,
        )
        return Cell("smollm2", "arith", "tp1", repeat, options)

    groups = [Group("smollm2", "tp1", 1, (real(0, 8), real(1, 4)))]
    results, killed, said = run_with_kill(cluster, groups, settings(cluster), pg_database, 2)
    assert len(killed) == 1, said
    (result,) = results
    assert result.attempts == 2 and result.engine_lost is None, result
    assert [(c.state, c.n_samples) for c in result.cells] == [("finished", 8), ("finished", 4)]
    assert result.server_start_s is not None
    runs_stored = stored(pg_database)
    assert sorted(n for _, n, _ in runs_stored.values()) == [4, 8]
    for status, n, items in runs_stored.values():
        assert status == "finished" and items == [str(i) for i in range(n)]


def test_the_cli_sweeps_on_the_cluster_with_progress_and_a_summary(
    cluster: Cluster, tmp_path: Path
) -> None:
    """`evalpipe sweep --executor ray` as a user runs it, in its own driver process: the
    cluster's devices are checked, the groups run on it, the driver prints each cell's
    stored samples as they grow (read from the store), pairs are compared at the end."""
    store = tmp_path / "s.db"
    with FakeOpenAI(model="m", delay_s=0.1) as tp1, FakeOpenAI(model="m", delay_s=0.1) as tp2:
        plan = tmp_path / "plan.yaml"
        plan.write_text(
            f"models: [{{name: m, endpoints: {{tp1: '{tp1.url}', tp2: '{tp2.url}'}}}}]\n"
            "tasks: [arith]\nlayouts: [tp2=tp1]\nlimit: 12\nconcurrency: 1\n"
        )
        base = [sys.executable, "-m", "evalpipe", "sweep", str(plan), "--store", str(store)]
        ray_args = ["--executor", "ray", "--ray-address", cluster.address]
        ray_args += ["--ray-resource", "NPU", "--progress-every", "0.3", "--quiet"]
        done = subprocess.run(
            [*base, *ray_args], capture_output=True, text=True, timeout=300, env=os.environ
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "sweep progress: m/arith/tp1#0: " in done.stderr
        assert "m/arith/tp2#0 vs tp1#0" in done.stdout and "executor ray" in done.stdout
        assert (tp1.completions, tp2.completions) == (12, 12)
    assert {s for s, _, _ in stored(str(store)).values()} == {"finished"}
    # More devices than the cluster has: refused with both numbers before anything starts.
    (tmp_path / "m").mkdir()
    flags = ["--models", str(tmp_path / "m"), "--tasks", "arith", "--layouts", "tp8"]
    refused = subprocess.run(
        [*base[:4], *flags, "--store", str(tmp_path / "t.db"), *ray_args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1
    assert "tp8 (model m) needs 8 NPU; the cluster offers 6 in total" in refused.stderr
    assert not (tmp_path / "t.db").exists()
