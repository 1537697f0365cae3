"""The shared-server pool of the engine tests (tests/engine_servers.py), without vLLM.

What it pins down: a server is launched once per (model, layout) and reused, the cap on live
servers never stops one a test is using, a failed launch fails later tests fast, a missing
vLLM fails (never skips) a test, the launch flags match what ``evalpipe run`` adds on CPU,
and tests are grouped by server.
"""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from engine_servers import (
    TEST_FAULT,
    Entry,
    Served,
    ServerPool,
    count_launches,
    launch_settings,
    order_items,
    servers_of,
    variant_env,
)

from evalpipe.errors import EvalpipeError


class FakeLaunches:
    """Stands in for ServerPool._launch: records launches and stops, starts nothing."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.launched: list[tuple[str, str]] = []
        self.stopped: list[tuple[str, str]] = []

    def launch(self, model: str, layout: str) -> Entry:
        self.launched.append((model, layout))
        stack = contextlib.ExitStack()
        stack.callback(self.stopped.append, (model, layout))
        url = f"http://127.0.0.1:{len(self.launched)}"
        served = Served(url, model, "/w", layout, self.tmp_path / "log")
        return Entry(served, stack, 0.0)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeLaunches:
    launches = FakeLaunches(tmp_path)
    monkeypatch.setattr(
        ServerPool, "_launch", lambda pool, m, lay, variant="": launches.launch(m, lay)
    )
    return launches


def test_one_launch_per_model_and_layout(tmp_path: Path, fake: FakeLaunches) -> None:
    pool = ServerPool(tmp_path, max_alive=2)
    with pool.use("smollm2", "tp1") as a:
        pass
    with pool.use("smollm2", "tp1") as b:
        assert b == a
    with pool.use("gemma3-270m", "tp1") as c:
        assert c.url != a.url
    assert fake.launched == [("smollm2", "tp1"), ("gemma3-270m", "tp1")]
    pool.close()
    assert sorted(fake.stopped) == sorted(fake.launched) and pool.alive == {}


def test_the_cap_stops_the_least_recently_used_idle_server(
    tmp_path: Path, fake: FakeLaunches
) -> None:
    pool = ServerPool(tmp_path, max_alive=2)
    with pool.use("smollm2", "tp1"):
        pass
    with pool.use("gemma3-270m", "tp1"), pool.use("gemma3-270m", "tp2"):
        # smollm2 was idle and least recently used; tp1 is in use and stays up.
        assert fake.stopped == [("smollm2", "tp1")]
        assert set(pool.alive) == {("gemma3-270m", "tp1", ""), ("gemma3-270m", "tp2", "")}


def test_servers_in_use_are_never_stopped_to_make_room(tmp_path: Path, fake: FakeLaunches) -> None:
    pool = ServerPool(tmp_path, max_alive=1)
    with pool.use("gemma3-270m", "tp1"), pool.use("gemma3-270m", "tp2"):
        assert fake.stopped == [] and len(pool.alive) == 2  # over the cap, for this test
    pool.close()


def test_a_failed_launch_fails_later_tests_without_launching_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def broken(pool: ServerPool, model: str, layout: str, variant: str = "") -> Entry:
        calls.append(model)
        raise EvalpipeError("the engine exited with code 1")

    monkeypatch.setattr(ServerPool, "_launch", broken)
    pool = ServerPool(tmp_path)
    for _ in range(2):
        with (
            pytest.raises(pytest.fail.Exception, match="exited with code 1"),
            pool.use("smollm2", "tp1"),
        ):
            pass
    assert calls == ["smollm2"]


def test_without_vllm_a_server_test_fails_instead_of_skipping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    pool = ServerPool(tmp_path)
    with (
        pytest.raises(pytest.fail.Exception, match="vLLM is not installed"),
        pool.use("smollm2", "tp1"),
    ):
        pass
    assert pool.launches == [] and pool.alive == {}


def test_launch_flags_match_what_evalpipe_run_adds_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    command, env = launch_settings("/w/gemma", "tp2", "gemma3-270m", 8001)
    flags = command[command.index("vllm.entrypoints.openai.api_server") + 1 :]
    assert flags[flags.index("--model") + 1] == "/w/gemma"
    assert flags[flags.index("--port") + 1] == "8001"
    assert flags[flags.index("--tensor-parallel-size") + 1] == "2"
    assert flags[flags.index("--distributed-executor-backend") + 1] == "mp"
    assert flags[flags.index("--served-model-name") + 1] == "gemma3-270m"
    assert "--enforce-eager" in flags
    assert env["VLLM_CPU_OMP_THREADS_BIND"] and env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    command, env = launch_settings("/w/smollm2", "tp1", "smollm2", 8002)
    assert "--distributed-executor-backend" not in command
    assert "VLLM_CPU_OMP_THREADS_BIND" not in env


def test_tests_are_ordered_so_that_each_shared_server_launches_once() -> None:
    """The engine suite's shape: a test parametrized over servers (which it gets with
    ``getfixturevalue``) counts as using its server, and the sets are ordered so that a pool
    of two launches each of the six servers once (collection order launches ten)."""

    def item(name: str, *fixtures: str, server: str | None = None) -> Any:
        callspec = SimpleNamespace(params={"server": server}) if server else None
        return SimpleNamespace(name=name, fixturenames=["workdir", *fixtures], callspec=callspec)

    items = [
        item("launch", "gemma"),
        item("forced-smollm2", server="smollm2_tp1"),
        item("forced-gemma", server="gemma_tp2"),
        item("torch", "smollm2_tp1", "smollm2_tp1_torch_attention"),
        item("kill9", "smollm2_tp1"),
        item("pair", "gemma_tp1", "gemma_tp2"),
        item("plain"),
        item("needle", "gemma_tp1"),
        item("bitwise", "smollm2_tp1", "smollm2_tp1_no_plugin"),
        item("fault", "gemma_tp2", "gemma_tp2_fault"),
        item("passkey", "gemma_tp1", "gemma_tp2"),
    ]
    before = [servers_of(i) for i in items if servers_of(i)]
    assert count_launches(before, 2) == 10
    order_items(cast(list[pytest.Item], items), max_alive=2)
    after = [servers_of(i) for i in items if servers_of(i)]
    assert count_launches(after, 2) == 6 == len(set(itertools.chain(*after)))
    assert [i.name for i in items][:2] == ["launch", "plain"]
    names = [i.name for i in items]
    assert names.index("kill9") == names.index("forced-smollm2") + 1  # one set, in order
    assert names.index("passkey") == names.index("pair") + 1


def test_the_launch_count_follows_the_pools_eviction() -> None:
    a, b, c = ("m", "tp1", ""), ("m", "tp2", ""), ("m", "tp1", "x")
    assert count_launches([(a,), (b,), (a,)], 2) == 2
    assert count_launches([(a,), (b,), (c,), (a,)], 2) == 4  # c stopped a, the oldest idle
    assert count_launches([(a, b, c)], 2) == 3  # one test over the cap: nothing is stopped
    assert count_launches([(a,), (b,), (c,), (b,)], 2) == 3


def test_server_variants_are_launched_apart_with_their_environment(
    tmp_path: Path, fake: FakeLaunches
) -> None:
    pool = ServerPool(tmp_path, max_alive=3)
    with pool.use("smollm2", "tp1") as clean, pool.use("smollm2", "tp1", "no-plugin") as other:
        assert clean.url != other.url
    assert set(pool.alive) == {("smollm2", "tp1", ""), ("smollm2", "tp1", "no-plugin")}
    assert variant_env("") == {"EVALPIPE_FAULT": ""}
    assert variant_env("fault") == {"EVALPIPE_FAULT": TEST_FAULT}
    off = variant_env("no-plugin")
    assert off["EVALPIPE_FAULT"] == TEST_FAULT  # set, so a plugin that loaded anyway would show
    assert "evalpipe" not in off["VLLM_PLUGINS"].split(",")
    with pytest.raises(ValueError, match="unknown server variant"):
        variant_env("bogus")


def test_every_server_has_the_forcing_processor_but_the_one_without_evalpipe() -> None:
    from evalpipe.engine.server import FORCING_FLAGS

    command, _ = launch_settings("/w/smollm2", "tp1", "smollm2", 8002)
    assert tuple(command[-len(FORCING_FLAGS) :]) == FORCING_FLAGS
