"""wflora on a localhost Flower deployment: a SuperLink and three SuperNodes
as separate processes, `flwr run` against them.

- A SuperNode killed (SIGKILL, with its ClientApp processes) mid-run: the
  run does not hang; its client is absent and sits out the rounds it misses,
  the records name it, and replaying those absences in process through the
  `wflora` package gives the Flower run's metrics byte for byte.
- The ServerApp killed (SIGKILL) mid-run, then `resume=true`: the final
  metrics are byte for byte those of `wflora run` of the same configuration
  (the clients come back from their stores in `client-state-dir`).

Runs in the venv of `just flower-test`; needs the `wflora` binary
(`$WFLORA_BIN`, or target/debug/wflora) for the second."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
from typing import List

import pytest

import wflora
from flowerkit import FLWR, REPO, Deployment, small, wait_lines

NODES = 3
ROUNDS = 3


@pytest.fixture()
def deployment(tmp_path: pathlib.Path):
    """A running deployment, stopped after the test whatever happened."""
    if not FLWR.is_file():
        pytest.fail("no flwr next to the interpreter: run in the venv of `just flower-test`")
    d = Deployment(tmp_path / "deploy", NODES)
    try:
        yield d
    finally:
        d.stop()
        assert all(p.poll() is not None for p in [*d.nodes, d.link]), "a deployment process outlived the test"


def replay(config: pathlib.Path, lines: List[str]) -> List[str]:
    """The run in process through the `wflora` package, each round with the
    absences the Flower run recorded: the lines its server writes."""
    task = wflora.Task.from_toml(config.read_text(), str(config))
    server = task.server()
    clients = [task.client(k) for k in range(len(task.shards))]
    out = []
    for line in lines:
        rec = json.loads(line)
        lost, dropped = rec.get("missing_reports", []), rec.get("missing_updates", [])
        reports = [clients[k].handle(m) for k, m in server.plan_round() if k not in lost]
        orders = server.allocate(reports, lost)
        updates = [clients[k].handle(m) for k, m in orders if k not in dropped]
        server.finish_round(updates, dropped)
        assert server.last_record_line is not None
        out.append(server.last_record_line)
    return out


def test_a_killed_supernode_sits_out_and_the_run_completes(
    deployment: Deployment, tmp_path: pathlib.Path
) -> None:
    config = tmp_path / "small.toml"
    config.write_text(small(tmp_path / "cache", clients=NODES, rounds=ROUNDS))
    out = tmp_path / "out"
    run = deployment.run(f"config='{config}' out='{out}' round-timeout=60.0 wait-nodes-timeout=180.0")
    try:
        metrics = out / "metrics.jsonl"
        wait_lines(metrics, 1, run, 600)
        deployment.kill_node(NODES - 1)
        run.wait(timeout=900)
    except Exception:
        run.kill()
        raise AssertionError(deployment.tail()) from None
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    assert len(lines) == ROUNDS, deployment.tail()
    recs = [json.loads(line) for line in lines]
    gone = NODES - 1
    assert "missing_reports" not in recs[0] and "missing_updates" not in recs[0]
    for rec in recs[1:]:
        # From the kill on, the dead node's client is absent: not allocated
        # (no report) or sitting out (no update).
        assert gone in rec.get("missing_reports", []) + rec.get("missing_updates", []), rec
        assert rec["participants"] == NODES - 1
    assert recs[-1]["missing_reports"] == [gone]
    assert replay(config, lines) == lines


def test_a_killed_server_resumes_to_the_metrics_of_wflora_run(
    deployment: Deployment, tmp_path: pathlib.Path
) -> None:
    wflora_bin = pathlib.Path(os.environ.get("WFLORA_BIN", REPO / "target" / "debug" / "wflora"))
    assert wflora_bin.is_file(), f"no wflora binary at {wflora_bin}: cargo build -p wflora-experiments"
    config = tmp_path / "small.toml"
    config.write_text(small(tmp_path / "cache", clients=NODES, rounds=ROUNDS))
    ref = tmp_path / "ref"
    subprocess.run([str(wflora_bin), "run", str(config), "--out", str(ref)], check=True, capture_output=True)
    out, store = tmp_path / "out", tmp_path / "store"
    keys = f"config='{config}' out='{out}' client-state-dir='{store}' round-timeout=300.0 wait-nodes-timeout=180.0"
    metrics = out / "metrics.jsonl"
    first = deployment.run(keys)
    try:
        wait_lines(metrics, 1, first, 600)
        apps = deployment.serverapps()
        assert apps, f"no ServerApp process under the SuperLink\n{deployment.tail()}"
        for pid in apps:
            os.kill(pid, 9)
    finally:
        first.kill()
        first.wait()
    done = len(metrics.read_text().splitlines())
    assert done < ROUNDS, "the server finished before it was killed"
    # Let the nodes finish what the dead run had sent them.
    deadline = time.monotonic() + 120
    while deployment.clientapps() and time.monotonic() < deadline:
        time.sleep(0.5)
    second = deployment.run(keys + " resume=true")
    try:
        second.wait(timeout=900)
    except subprocess.TimeoutExpired:
        second.kill()
        raise AssertionError(deployment.tail()) from None
    assert metrics.read_bytes() == (ref / "metrics.jsonl").read_bytes(), deployment.tail()
    for k in range(NODES):
        snaps = sorted(p.name for p in (store / f"client-{k}").glob("round-*.state"))
        assert snaps == [f"round-{t:06d}.state" for t in (ROUNDS - 2, ROUNDS - 1)], snaps
