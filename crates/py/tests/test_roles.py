"""The protocol's roles driven from Python: the same records as `wflora run`
of the same configuration, byte for byte."""

from __future__ import annotations

import json
import pathlib
import subprocess

import pytest

import wflora
from conftest import small_toml


def drive(task: wflora.Task, reverse: bool = False) -> list:
    """Runs every round, handing replies to the server in client order or
    reversed."""
    server = task.server()
    clients = [task.client(k) for k in range(len(task.shards))]
    records = []
    while not server.finished:
        reports = [clients[k].handle(m) for k, m in server.plan_round()]
        orders = server.allocate(reports[::-1] if reverse else reports)
        updates = [clients[k].handle(m) for k, m in orders]
        records.append(server.finish_round(updates[::-1] if reverse else updates))
    return records


def test_python_driver_equals_wflora_run(
    task: wflora.Task, cache: pathlib.Path, tmp_path: pathlib.Path, wflora_bin: pathlib.Path
) -> None:
    records = drive(task)
    assert [r["round"] for r in records] == [1, 2]
    config = tmp_path / "small.toml"
    config.write_text(small_toml(cache))
    out = tmp_path / "run"
    subprocess.run(
        [str(wflora_bin), "run", str(config), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    lines = (out / "metrics.jsonl").read_text().splitlines()
    # Both sides are serde_json's shortest round-trip floats: equal dicts
    # are equal bits.
    assert [json.loads(line) for line in lines] == records


def test_reply_order_does_not_matter(task: wflora.Task) -> None:
    assert drive(task, reverse=True) == drive(task)


def test_bad_bytes_and_bad_configs_raise_clear_errors(task: wflora.Task, cache: pathlib.Path) -> None:
    server = task.server()
    client = task.client(0)
    plan = dict(server.plan_round())
    msg = plan[0]
    with pytest.raises(wflora.WfloraError, match="truncated"):
        client.handle(msg[:20])
    corrupt = bytearray(msg)
    corrupt[-1] ^= 0xFF
    with pytest.raises(wflora.WfloraError, match="corrupt"):
        client.handle(bytes(corrupt))
    old = bytearray(msg)
    old[8] = 9
    with pytest.raises(wflora.WfloraError, match="protocol version 9"):
        client.handle(bytes(old))
    with pytest.raises(wflora.WfloraError, match="for client 0"):
        task.client(1).handle(msg)
    reply = client.handle(msg)
    with pytest.raises(wflora.WfloraError, match="did not answer"):
        server.allocate([reply])
    with pytest.raises(wflora.WfloraError, match="federation.clients"):
        wflora.Task.from_toml(small_toml(cache).replace("clients = 4\n", "clients = 0\n"), "bad.toml")
    with pytest.raises(wflora.WfloraError, match="bad.toml"):
        wflora.Task.from_toml("[federation]\nnot_a_key = 1\n", "bad.toml")
    with pytest.raises(wflora.WfloraError, match="no client 9"):
        task.client(9)


def test_a_server_checkpoint_restores_the_round(task: wflora.Task) -> None:
    server = task.server()
    clients = [task.client(k) for k in range(len(task.shards))]
    reports = [clients[k].handle(m) for k, m in server.plan_round()]
    updates = [clients[k].handle(m) for k, m in server.allocate(reports)]
    server.finish_round(updates)
    saved = server.checkpoint()
    fresh = task.server()
    fresh.restore(saved)
    assert fresh.round == 1
    with pytest.raises(wflora.WfloraError, match="corrupt"):
        fresh.restore(saved[:-1])


def test_clients_rebuilt_from_their_state_bytes_give_the_same_records(task: wflora.Task) -> None:
    """What a Flower node does: a fresh client per message, its state carried
    as bytes in between."""
    server = task.server()
    states = {k: task.client(k).state() for k in range(len(task.shards))}

    def handle(k: int, msg: bytes) -> bytes:
        client = task.client(k)
        client.restore_state(states[k])
        reply = client.handle(msg)
        states[k] = client.state()
        return reply

    records = []
    while not server.finished:
        reports = [handle(k, m) for k, m in server.plan_round()]
        updates = [handle(k, m) for k, m in server.allocate(reports)]
        records.append(server.finish_round(updates))
    assert records == drive(task)
    with pytest.raises(wflora.WfloraError, match="another client"):
        task.client(1).restore_state(states[0])


def test_overrides_are_applied_as_set_does(cache: pathlib.Path) -> None:
    task = wflora.Task.from_toml(small_toml(cache), "small.toml", ["federation.rounds=1", "seed=4"])
    assert task.config["federation"]["rounds"] == 1 and task.config["seed"] == 4
    with pytest.raises(wflora.WfloraError, match="--set federation.nonsense=1"):
        wflora.Task.from_toml(small_toml(cache), "small.toml", ["federation.nonsense=1"])
    with pytest.raises(wflora.WfloraError, match="--set"):
        wflora.Task.from_toml(small_toml(cache), "small.toml", ["no equals sign"])


def test_absent_clients_are_named_and_recorded(task: wflora.Task) -> None:
    """A driver names the clients that did not answer: the record lists
    them, and a reply from one named absent is refused."""
    server = task.server()
    clients = [task.client(k) for k in range(len(task.shards))]
    plan = server.plan_round()
    sampled = [k for k, _ in plan]
    lost_report, lost_update = sampled[0], sampled[-1]
    reports = [clients[k].handle(m) for k, m in plan if k != lost_report]
    with pytest.raises(wflora.WfloraError, match="did not answer"):
        server.allocate(reports)
    orders = server.allocate(reports, absent=[lost_report])
    assert lost_report not in [k for k, _ in orders]
    updates = [clients[k].handle(m) for k, m in orders if k != lost_update]
    with pytest.raises(wflora.WfloraError, match="named absent twice"):
        server.finish_round(updates, absent=[lost_update, lost_update])
    record = server.finish_round(updates, absent=[lost_update])
    assert record["missing_reports"] == [lost_report]
    assert record["missing_updates"] == [lost_update]
    assert record["components"][sampled.index(lost_report)] == 0
    assert server.round == 1
