"""The ClientApp: the node's partition id is the wflora client index; each
message is handed to that wflora client, whose state (residuals, an update
trained but not yet compressed) lives in the node's ``context.state`` between
messages, and, with the run config's ``client-state-dir``, in a store on the
node's disk that outlives the run (see :mod:`wflora_flower.store`)."""

from __future__ import annotations

import pathlib
from typing import Optional

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from . import common
from .store import ClientStore

app = ClientApp()


def _store(context: Context, k: int) -> Optional[ClientStore]:
    """The client's snapshot store, when the run config names one."""
    root = str(context.run_config.get("client-state-dir", ""))
    return ClientStore(pathlib.Path(root), k) if root else None


def _answer(msg: Message, context: Context) -> Message:
    k = int(context.node_config["partition-id"])
    client = common.task_of(context.run_config).client(k)
    meta = msg.content["meta"]
    round_, start = int(meta["round"]), int(meta["start"])
    store = _store(context, k)
    saved = context.state.get("wflora")
    if saved is not None:
        client.restore_state(bytes(saved["state"]))
    elif store is not None:
        # A context with nothing in it: a new (or resumed) run, or a node
        # that restarted. The store holds where this client was.
        recovered = store.recover(context.run_id, round_, start)
        if recovered is not None:
            client.restore_state(recovered)
    reply = client.handle(common.unpack(msg.content))
    state = client.state()
    context.state["wflora"] = ConfigRecord({"state": state})
    if store is not None:
        store.save(round_, state)
    return Message(common.pack(reply, partition=k), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Round phase 1: local training from the broadcast state."""
    return _answer(msg, context)


@app.query("compress")
def compress(msg: Message, context: Context) -> Message:
    """Round phase 2: compression with the assigned kept components."""
    return _answer(msg, context)


@app.query("hello")
def hello(msg: Message, context: Context) -> Message:
    """Tells the server which wflora client this node is."""
    k = int(context.node_config["partition-id"])
    return Message(RecordDict({"meta": ConfigRecord({"partition": k})}), reply_to=msg)
