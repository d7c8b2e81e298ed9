"""The ClientApp: the node's partition id is the wflora client index; each
message is handed to that wflora client, whose state (residuals, an update
trained but not yet compressed) lives in the node's ``context.state`` between
messages."""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from . import common

app = ClientApp()


def _answer(msg: Message, context: Context) -> Message:
    k = int(context.node_config["partition-id"])
    client = common.task_of(context.run_config).client(k)
    saved = context.state.get("wflora")
    if saved is not None:
        client.restore_state(bytes(saved["state"]))
    reply = client.handle(common.unpack(msg.content))
    context.state["wflora"] = ConfigRecord({"state": client.state()})
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
