"""The capacity checks a sweep passes before anything starts (evalpipe.sweep.devices): pure
functions on literal groups and nodes, and this machine's device counts from its environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ray_cluster import cell, group

from evalpipe.errors import EvalpipeError
from evalpipe.sweep.cells import Group
from evalpipe.sweep.devices import (
    Node,
    cluster_refusals,
    hosts_for,
    local_devices,
    local_refusals,
    raise_refusals,
    relative_paths,
    store_refusal,
)
from evalpipe.sweep.rayexec import task_resources

URL = "http://127.0.0.1:9"
TWO_HOSTS = [Node("10.0.0.1", 8, "a"), Node("10.0.0.2", 4, "b"), Node("10.0.0.3", 0, "c")]


def g(layout: str, devices: int, *, endpoint: str | None = None, store: str = "/s.db") -> Group:
    return group(devices, cell(URL, store, Path("/runs"), layout=layout), endpoint=endpoint)


def test_every_layout_that_does_not_fit_is_refused_at_once_with_both_numbers() -> None:
    groups = [g("tp1", 1), g("dp2tp8dcp8", 16), g("tp4pcp2dcp2", 8), g("tp2", 10)]
    lines = cluster_refusals(groups, TWO_HOSTS, "NPU")
    assert lines[0] == "dp2tp8dcp8 (model m) needs 16 NPU; the cluster offers 12 in total"
    # 10 fit the cluster's 12, but no node: one engine is packed on one node.
    assert lines[1].startswith(
        "tp2 (model m) needs 10 NPU on one node; the cluster offers 12 in total but its "
        "largest node has 8: evalpipe's Ray executor packs each engine on one node"
    )
    assert "Serve this pair yourself" in lines[1] and "endpoint for m tp2" in lines[1]
    assert len(lines) == 2, "tp1 and tp4pcp2dcp2 (8 on the 8-NPU node) fit"
    with pytest.raises(EvalpipeError) as err:
        raise_refusals(lines)
    assert str(err.value).splitlines()[1:] == [f"  - {line}" for line in lines]
    raise_refusals([])  # nothing to refuse: no error


def test_groups_with_an_endpoint_need_no_devices() -> None:
    groups = [g("dp2tp8dcp8", 16, endpoint=URL), g("tp2", 2)]
    assert cluster_refusals(groups, [], "GPU") == [
        "tp2 (model m) needs 2 GPU; the cluster offers 0 in total"
    ]
    assert local_refusals([groups[0]], 0, "cuda") == []


def test_this_machine_is_one_node_and_its_count_can_be_overridden() -> None:
    lines = local_refusals([g("tp8", 8), g("tp2", 2)], 4, "cuda")
    assert lines == [
        "tp8 (model m) needs 8 GPU; this machine offers 4 in total (--devices N overrides "
        "the count)"
    ]
    assert local_refusals([g("tp2", 2)], 2, "cpu") == []
    assert "needs 3 CPU cores" in local_refusals([g("tp3", 3)], 2, "cpu")[0]


def test_local_device_counts() -> None:
    assert local_devices("cpu") == len(os.sched_getaffinity(0))
    assert local_devices("cuda", {"CUDA_VISIBLE_DEVICES": "0,1,3"}) == 3
    assert local_devices("cuda", {"CUDA_VISIBLE_DEVICES": ""}) == 0  # set empty: none visible
    assert local_devices("ascend", {"ASCEND_RT_VISIBLE_DEVICES": "4,5"}) == 2


def test_without_a_visible_devices_variable_the_devices_are_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("davinci0", "davinci1", "davinci7", "davinci_manager", "davinci1x"):
        (dev / name).touch()
    assert local_devices("ascend", {}, dev) == 3
    # nvidia-smi -L: one "GPU i: …" line per GPU (a MIG line under it is not a GPU).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\necho '  MIG 1g.10gb Device 0'\n"
        "echo 'GPU 1: NVIDIA H100 (UUID: GPU-b)'\n"
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert local_devices("cuda", {}) == 2
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert local_devices("cuda", {}) == 0
    with pytest.raises(EvalpipeError, match="unknown platform"):
        local_devices("tpu", {})


def test_a_sqlite_store_is_refused_when_the_groups_may_run_on_several_hosts() -> None:
    big, small = g("tp8", 8), g("tp2", 2)
    # Only one node has 8: the tp8 group can land on one host, SQLite is fine.
    assert hosts_for([big], TWO_HOSTS) == {"10.0.0.1"}
    assert store_refusal("/data/s.db", [big], TWO_HOSTS) is None
    # A tp2 group fits two hosts: one SQLite file cannot be shared by both.
    refusal = store_refusal("/data/s.db", [big, small], TWO_HOSTS)
    assert refusal is not None
    assert "SQLite" in refusal and "2 hosts (10.0.0.1, 10.0.0.2)" in refusal
    assert "postgresql://" in refusal and "evalpipe store copy" in refusal
    assert store_refusal("sqlite:////data/s.db", [big, small], TWO_HOSTS) is not None
    # A group with an endpoint may run on any node, even one without devices.
    assert hosts_for([g("tp8", 8, endpoint=URL)], TWO_HOSTS) == {n.host for n in TWO_HOSTS}
    # PostgreSQL is shared by every host; two nodes on one host share its file system.
    assert store_refusal("postgresql://ci@db/evalpipe", [big, small], TWO_HOSTS) is None
    one_host = [Node("10.0.0.1", 4, "a"), Node("10.0.0.1", 4, "b")]
    assert store_refusal("/data/s.db", [small], one_host) is None
    two = store_refusal("/data/s.db", [small], TWO_HOSTS)
    assert two is not None and "postgresql://" in two
    # The default store ($EVALPIPE_STORE, else ./evalpipe.db) is SQLite, as the store reads it.
    assert store_refusal(None, [small], TWO_HOSTS) is not None


def test_a_worker_needs_absolute_paths() -> None:
    rel = group(1, cell(URL, "s.db", Path("runs")))
    lines = relative_paths([rel, g("tp1", 1), g("tp1", 1, store="postgresql://ci@db/e")])
    assert lines == [
        "m/arith/tp1#0: the store s.db must be an absolute path on a worker",
        "m/arith/tp1#0: the runs folder runs must be an absolute path on a worker",
    ]
    assert relative_paths([group(1, cell(URL, "sqlite:///rel.db", Path("/r")))]) != []
    assert relative_paths([group(1, cell(URL, "sqlite:////abs.db", Path("/r")))]) == []


def test_a_task_asks_for_its_devices_in_the_words_ray_takes() -> None:
    assert task_resources("CPU", 2) == {"num_cpus": 2}
    assert task_resources("GPU", 8) == {"num_gpus": 8, "num_cpus": 0}
    assert task_resources("NPU", 4) == {"resources": {"NPU": 4}, "num_cpus": 0}
    assert task_resources("NPU", 0) == {"resources": {}, "num_cpus": 0}
