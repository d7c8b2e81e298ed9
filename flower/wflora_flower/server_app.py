"""The ServerApp: wflora's server role (TSFA: this round's channel, kept
components and bandwidth per client, the virtual queue, factor-wise
aggregation) driving the nodes through two Flower exchanges per round.
Metrics are the JSON lines ``wflora run`` writes."""

from __future__ import annotations

import os
import pathlib
import time
from typing import IO, Dict, List, Mapping, Sequence, Tuple, Union

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid, ServerApp

import wflora

from . import common
from .store import write_atomic

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


#: Flower error codes that mean the message or its node is gone (the node
#: died, was unreachable, or its ClientApp process crashed): the client is
#: absent and sits the round out. Any other error (the ClientApp raised, a
#: bad app) stops the run with the client's reason.
ABSENT_CODES = {
    ErrorCode.MESSAGE_UNAVAILABLE,
    ErrorCode.REPLY_MESSAGE_UNAVAILABLE,
    ErrorCode.NODE_UNAVAILABLE,
    ErrorCode.CLIENT_APP_CRASHED,
}

#: Seconds between two pulls of an exchange's replies (Flower's own
#: ``send_and_receive`` waits 3 s).
POLL_S = 0.05


def partitions(grid: Grid, nodes: Sequence[int], timeout: float) -> Dict[int, int]:
    """wflora client index → Flower node id, asked of ``nodes``; a node
    that does not answer in ``timeout`` seconds is left out."""
    msgs = [Message(RecordDict({"meta": ConfigRecord({})}), dst_node_id=n, message_type=common.HELLO) for n in nodes]
    out: Dict[int, int] = {}
    for reply in grid.send_and_receive(msgs, timeout=timeout):
        if reply.has_error():
            if reply.error.code in ABSENT_CODES:
                continue
            raise wflora.WfloraError(f"a node did not say which client it is: {reply.error.reason}")
        k = int(reply.content["meta"]["partition"])
        if k in out:
            raise wflora.WfloraError(f"two nodes claim client {k}")
        out[k] = reply.metadata.src_node_id
    return out


def refresh(grid: Grid, node_of: Dict[int, int], timeout: float) -> set:
    """The connected nodes; a node not seen before (a SuperNode that
    restarted or joined) is asked which client it is, and ``node_of`` is
    updated."""
    live = set(grid.get_node_ids())
    new = sorted(live - set(node_of.values()))
    if new:
        for k, n in partitions(grid, new, timeout).items():
            if node_of.get(k) != n:
                print(f"wflora-flower: client {k} is now on node {n}")
            node_of[k] = n
    return live


def exchange(
    grid: Grid,
    node_of: Dict[int, int],
    phase: str,
    msgs: Sequence[Tuple[int, bytes]],
    timeout: float,
    meta: Mapping[str, Union[int, str]],
) -> Tuple[List[bytes], List[int]]:
    """Sends each client its message; returns the replies that came back
    within ``timeout`` seconds and the clients that are absent: on a node
    that is not connected (sent nothing), whose message or node Flower
    reports gone, or that did not answer in time. A ClientApp that raised
    stops the run with its reason."""
    live = refresh(grid, node_of, min(timeout, 30.0))
    absent = [k for k, _ in msgs if node_of.get(k) not in live]
    clients = [k for k, _ in msgs if k not in absent]
    payload_of = dict(msgs)
    out = [
        Message(
            common.pack(payload_of[k], client=k, **meta),
            dst_node_id=node_of[k],
            message_type=phase,
            ttl=timeout + 60,
        )
        for k in clients
    ]
    ids = list(grid.push_messages(out)) if out else []
    if len(ids) != len(clients) or None in ids:
        raise wflora.WfloraError(f"{phase}: the SuperLink refused {len(clients) - len(ids) + ids.count(None)} messages")
    pending = dict(zip(ids, clients))
    replies: List[bytes] = []
    failures: List[str] = []
    deadline = time.monotonic() + timeout
    while pending:
        for reply in grid.pull_messages(list(pending)):
            k = pending.pop(reply.metadata.reply_to_message_id, None)
            if k is None:
                continue
            if not reply.has_error():
                replies.append(common.unpack(reply.content))
            elif reply.error.code in ABSENT_CODES:
                print(f"wflora-flower: {phase}: client {k} is absent (Flower error {reply.error.code}: {reply.error.reason})")
                absent.append(k)
            else:
                failures.append(f"client {k}: Flower error {reply.error.code}: {reply.error.reason}")
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
    for k in pending.values():
        print(f"wflora-flower: {phase}: client {k} did not answer within {timeout} s: absent")
        absent.append(k)
    if failures:
        raise wflora.WfloraError(f"{phase}: {len(failures)} of {len(msgs)} clients failed: " + "; ".join(failures))
    return replies, sorted(absent)


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
    out = pathlib.Path(str(cfg.get("out", ""))) if cfg.get("out", "") else None
    resume = bool(cfg.get("resume", False))
    metrics = open_metrics(server, out, resume, bool(cfg.get("client-state-dir", ""))) if out else None
    # The round this run starts at: clients take over their stores there.
    start = server.round
    if start:
        print(f"wflora-flower: resuming at round {start + 1} of {task.config['federation']['rounds']}")
    try:
        while not server.finished:
            meta = {"round": server.round, "start": start}
            reports, absent = exchange(grid, node_of, common.TRAIN, server.plan_round(), timeout, meta)
            orders = server.allocate(reports, absent)
            updates, absent = exchange(grid, node_of, common.COMPRESS, orders, timeout, meta)
            record = server.finish_round(updates, absent)
            print(f"wflora-flower: round {record['round']}: accuracy {record['accuracy']}")
            if metrics is not None and out is not None:
                # The line first, then the checkpoint: a kill between the
                # two leaves one line more than the checkpoint's rounds,
                # which a resume cuts and redoes.
                metrics.write(f"{server.last_record_line}\n")
                metrics.flush()
                os.fsync(metrics.fileno())
                write_atomic(out / "server.ckpt", server.checkpoint())
    finally:
        if metrics is not None:
            metrics.close()


def open_metrics(server: wflora.Server, out: pathlib.Path, resume: bool, has_store: bool) -> IO[str]:
    """``out/metrics.jsonl`` for appending. A new run refuses an existing
    file; a resumed one restores ``out/server.ckpt`` into ``server`` and
    cuts the metrics to the checkpoint's rounds (a line written after the
    last checkpoint is redone, to the same bytes)."""
    if not out.is_absolute():
        raise wflora.WfloraError(f"run config `out`: {str(out)!r} must be an absolute path")
    out.mkdir(parents=True, exist_ok=True)
    path, ckpt = out / "metrics.jsonl", out / "server.ckpt"
    if not resume:
        try:
            # "x": never overwrite a run's metrics.
            return path.open("x")
        except FileExistsError:
            raise wflora.WfloraError(
                f"{path} exists: choose another `out`, or set resume=true to continue that run"
            ) from None
    lines = path.read_text().splitlines(keepends=True) if path.is_file() else []
    if ckpt.is_file():
        server.restore(ckpt.read_bytes())
    elif lines:
        raise wflora.WfloraError(f"{path} has {len(lines)} rounds but {ckpt} is missing: cannot resume")
    done = server.round
    if len(lines) < done:
        raise wflora.WfloraError(
            f"{path} has {len(lines)} rounds, {ckpt} says {done}: the metrics were cut; cannot resume"
        )
    if done and not has_store:
        raise wflora.WfloraError(
            "resume after round 0 needs `client-state-dir`: the clients' error-feedback state lives in "
            "Flower's per-run context otherwise, and a resumed run is a new Flower run"
        )
    write_atomic(path, "".join(lines[:done]).encode())
    return path.open("a")
