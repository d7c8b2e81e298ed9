"""The ServerApp: wflora's server role (TSFA: this round's channel, kept
components and bandwidth per client, the virtual queue, factor-wise
aggregation) driving the nodes through two Flower exchanges per round.
Metrics are the JSON lines ``wflora run`` writes."""

from __future__ import annotations

import pathlib
import time
from typing import Dict, List, Sequence, Tuple

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

import wflora

from . import common

app = ServerApp()


def wait_for_nodes(grid: Grid, k: int, timeout: float) -> List[int]:
    """Waits until ``k`` nodes are connected (Flower's own strategies start
    as soon as a minimum is up; a deterministic run needs all of them)."""
    start = time.monotonic()
    while True:
        ids = sorted(grid.get_node_ids())
        if len(ids) >= k:
            return ids
        if time.monotonic() - start > timeout:
            raise wflora.WfloraError(f"only {len(ids)} of {k} Flower nodes connected within {timeout} s")
        time.sleep(0.5)


def partitions(grid: Grid, nodes: Sequence[int], timeout: float) -> Dict[int, int]:
    """wflora client index → Flower node id, asked of every node."""
    msgs = [Message(RecordDict({"meta": ConfigRecord({})}), dst_node_id=n, message_type=common.HELLO) for n in nodes]
    out: Dict[int, int] = {}
    for reply in grid.send_and_receive(msgs, timeout=timeout):
        if reply.has_error():
            raise wflora.WfloraError(f"a node did not say which client it is: {reply.error.reason}")
        k = int(reply.content["meta"]["partition"])
        if k in out:
            raise wflora.WfloraError(f"two nodes claim client {k}")
        out[k] = reply.metadata.src_node_id
    return out


def exchange(
    grid: Grid, node_of: Dict[int, int], phase: str, msgs: Sequence[Tuple[int, bytes]], timeout: float
) -> List[bytes]:
    """Sends each client its message and returns the replies that came back
    in time (the server orders them by client)."""
    out = [
        Message(common.pack(payload, client=k), dst_node_id=node_of[k], message_type=phase, ttl=timeout + 60)
        for k, payload in msgs
    ]
    replies, errors = [], []
    for reply in grid.send_and_receive(out, timeout=timeout):
        if reply.has_error():
            errors.append(f"{reply.error.code}: {reply.error.reason}")
            continue
        replies.append(common.unpack(reply.content))
    if errors:
        # A client that failed is not yet treated as sitting out: stop, with
        # its reasons.
        raise wflora.WfloraError(f"{phase}: {len(errors)} of {len(out)} clients failed: " + "; ".join(errors))
    return replies


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Runs every round of the configured run."""
    cfg = context.run_config
    task = common.task_of(cfg)
    k = len(task.shards)
    timeout = float(cfg.get("round-timeout", 600.0))
    nodes = wait_for_nodes(grid, k, float(cfg.get("wait-nodes-timeout", 300.0)))
    node_of = partitions(grid, nodes, timeout)
    missing = sorted(set(range(k)) - set(node_of))
    if missing:
        raise wflora.WfloraError(f"no Flower node is wflora client {missing}; set node-config partition-id")
    server = task.server()
    out = str(cfg.get("out", ""))
    metrics = None
    if out:
        pathlib.Path(out).mkdir(parents=True, exist_ok=True)
        # Never overwrite a run's metrics ("x": fails if the file exists).
        try:
            metrics = (pathlib.Path(out) / "metrics.jsonl").open("x")
        except FileExistsError:
            raise wflora.WfloraError(f"{out}/metrics.jsonl exists: choose another `out`") from None
    try:
        while not server.finished:
            reports = exchange(grid, node_of, common.TRAIN, server.plan_round(), timeout)
            updates = exchange(grid, node_of, common.COMPRESS, server.allocate(reports), timeout)
            record = server.finish_round(updates)
            print(f"wflora-flower: round {record['round']}: accuracy {record['accuracy']}")
            if metrics is not None:
                metrics.write(f"{server.last_record_line}\n")
                metrics.flush()
                (pathlib.Path(out) / "server.ckpt.tmp").write_bytes(server.checkpoint())
                (pathlib.Path(out) / "server.ckpt.tmp").replace(pathlib.Path(out) / "server.ckpt")
    finally:
        if metrics is not None:
            metrics.close()
