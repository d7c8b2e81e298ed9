"""What the ServerApp and the ClientApp share: the wflora configuration read
from Flower's run config, the task built once per process, and the way the
protocol's bytes travel in a Flower RecordDict."""

from __future__ import annotations

import pathlib
from typing import Dict, List, Mapping, Tuple, Union

from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

import wflora

#: Message types: the protocol's two exchanges per round.
TRAIN = "train"
COMPRESS = "query.compress"
HELLO = "query.hello"

RunConfig = Mapping[str, Union[bool, int, float, str]]

_TASKS: Dict[Tuple[str, str, Tuple[str, ...]], wflora.Task] = {}


def config_of(run_config: RunConfig) -> Tuple[str, str, List[str]]:
    """The wflora configuration named by Flower's run config: ``(text, file,
    overrides)``, as ``wflora run FILE --set ...`` would read it."""
    path = str(run_config.get("config", ""))
    if path:
        file = pathlib.Path(path)
        if not file.is_absolute():
            raise wflora.WfloraError(
                f"run config `config`: {path!r} must be an absolute path (the app runs from Flower's install folder)"
            )
        text = file.read_text()
    else:
        file, text = pathlib.Path("<embedded default>"), ""
    overrides = [s.strip() for s in str(run_config.get("set", "")).split(";") if s.strip()]
    rounds = int(run_config.get("rounds", 0))
    if rounds > 0:
        overrides.append(f"federation.rounds={rounds}")
    return text, str(file), overrides


def task_of(run_config: RunConfig) -> wflora.Task:
    """The run's task, built once per process (the backbone comes from
    wflora's pre-training cache after the first build)."""
    text, file, overrides = config_of(run_config)
    key = (text, file, tuple(overrides))
    if key not in _TASKS:
        _TASKS[key] = wflora.Task.from_toml(text, file, overrides)
    return _TASKS[key]


def pack(payload: bytes, **meta: Union[int, str]) -> RecordDict:
    """Protocol bytes in a RecordDict: a raw uint8 Array (no numpy copy)
    and a small ConfigRecord."""
    arr = Array(dtype="uint8", shape=(len(payload),), stype="raw", data=payload)
    return RecordDict({"wflora": ArrayRecord({"message": arr}), "meta": ConfigRecord(dict(meta))})


def unpack(content: RecordDict) -> bytes:
    """The protocol bytes of a RecordDict made by :func:`pack`."""
    return bytes(content["wflora"]["message"].data)
