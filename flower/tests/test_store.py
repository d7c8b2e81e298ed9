"""The pieces of resuming, without Flower's processes: a client's store on
disk, and the server's metrics file on resume."""

from __future__ import annotations

import pathlib

import pytest

import wflora
from flowerkit import small  # first: puts the app's folder on sys.path
from wflora_flower.server_app import open_metrics
from wflora_flower.store import ClientStore


def test_a_store_keeps_the_last_two_rounds(tmp_path: pathlib.Path) -> None:
    s = ClientStore(tmp_path, 3)
    assert s.recover(run_id=7, round_=0, start=0) is None
    for t in range(4):
        s.save(t, f"state {t}".encode())
    assert [t for t, _ in s.snapshots()] == [2, 3]
    assert not list(s.dir.glob(".*tmp")), "no temporary file is left"


def test_a_restarted_node_continues_from_its_newest_earlier_round(tmp_path: pathlib.Path) -> None:
    s = ClientStore(tmp_path, 0)
    s.recover(run_id=7, round_=0, start=0)
    s.save(1, b"after 1")
    s.save(2, b"after 2")
    # Same run, fresh context in round 5 (the node restarted): round 2's.
    assert s.recover(run_id=7, round_=5, start=0) == b"after 2"
    # Same run, round 2 redone after its node died mid-round: round 1's.
    assert s.recover(run_id=7, round_=2, start=0) == b"after 1"


def test_a_resumed_run_takes_over_the_store_and_drops_the_lost_future(tmp_path: pathlib.Path) -> None:
    s = ClientStore(tmp_path, 0)
    s.recover(run_id=7, round_=0, start=0)
    s.save(3, b"after 3")
    s.save(4, b"after 4")  # written after the server's last checkpoint
    # The server resumes at round 4: round 3's state, round 4's is gone.
    assert s.recover(run_id=8, round_=6, start=4) == b"after 3"
    assert [t for t, _ in s.snapshots()] == [3]
    # A new run from round 0 in the same folder starts from nothing.
    assert s.recover(run_id=9, round_=2, start=0) is None
    assert s.snapshots() == []


def test_a_store_path_must_be_absolute() -> None:
    with pytest.raises(wflora.WfloraError, match="client-state-dir"):
        ClientStore(pathlib.Path("relative/store"), 0)


def test_resume_restores_the_checkpoint_and_cuts_the_metrics(tmp_path: pathlib.Path) -> None:
    task = wflora.Task.from_toml(small(tmp_path / "cache"), "small.toml")
    server = task.server()
    clients = [task.client(k) for k in range(len(task.shards))]
    reports = [clients[k].handle(m) for k, m in server.plan_round()]
    updates = [clients[k].handle(m) for k, m in server.allocate(reports)]
    server.finish_round(updates)
    out = tmp_path / "out"
    out.mkdir()
    # Round 1's line, its checkpoint, and a line of round 2 that was
    # written before the server died (no checkpoint after it).
    (out / "metrics.jsonl").write_text(f"{server.last_record_line}\n{{\"round\":2}}\n")
    (out / "server.ckpt").write_bytes(server.checkpoint())
    with pytest.raises(wflora.WfloraError, match="resume=true"):
        open_metrics(task.server(), out, resume=False, has_store=True)
    with pytest.raises(wflora.WfloraError, match="client-state-dir"):
        open_metrics(task.server(), out, resume=True, has_store=False)
    fresh = task.server()
    open_metrics(fresh, out, resume=True, has_store=True).close()
    assert fresh.round == 1
    assert (out / "metrics.jsonl").read_text() == f"{server.last_record_line}\n"
    # A checkpoint ahead of its metrics is refused.
    (out / "metrics.jsonl").write_text("")
    with pytest.raises(wflora.WfloraError, match="metrics were cut"):
        open_metrics(task.server(), out, resume=True, has_store=True)
    with pytest.raises(wflora.WfloraError, match="absolute"):
        open_metrics(task.server(), pathlib.Path("rel"), resume=True, has_store=True)
