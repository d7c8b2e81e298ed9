"""wflora: wireless federated LoRA fine-tuning, from the Rust crates.

The math on its own, for any Python federated stack:

- SOFT and the baselines on one client's LoRA factors: :func:`compress`,
  :func:`aggregate`, :func:`importances`, :func:`components_for_ratio`,
  :func:`budget`; messages are :class:`Message`, error-feedback state is
  :class:`Residual`.
- The wireless uplink: :class:`Uplink`, :class:`Network`,
  :func:`equalising_split`.
- The allocator, one round on an instance dict (``docs/alloc-instance.md``):
  :func:`solve_allocation`.
- The bound's offline rank choice: :func:`select_rank`.

And the federated protocol's roles, which exchange bytes (the versioned
messages of ``wflora_fed::protocol``): build a :class:`Task` from a wflora
TOML configuration, then its :meth:`Task.server` and :meth:`Task.client`.
A driver (a loop, threads, Flower) only moves the bytes::

    task = wflora.Task.from_toml(open("run.toml").read(), "run.toml")
    server = task.server()
    clients = [task.client(k) for k in range(len(task.shards))]
    while not server.finished:
        plan = server.plan_round()
        reports = [clients[k].handle(m) for k, m in plan]
        orders = server.allocate(reports)
        updates = [clients[k].handle(m) for k, m in orders]
        record = server.finish_round(updates)  # a dict, as in metrics.jsonl

Errors are :class:`WfloraError` (a ``ValueError``) with the messages of the
``wflora`` command line.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from . import _core
from ._core import (
    PROTOCOL_VERSION,
    Client,
    Message,
    Network,
    Residual,
    Uplink,
    WfloraError,
    aggregate,
    budget,
    components_for_ratio,
    compress,
    equalising_split,
    importances,
)

__all__ = [
    "PROTOCOL_VERSION",
    "Client",
    "Message",
    "Network",
    "Residual",
    "Server",
    "Task",
    "Uplink",
    "WfloraError",
    "aggregate",
    "budget",
    "components_for_ratio",
    "compress",
    "equalising_split",
    "importances",
    "select_rank",
    "solve_allocation",
]


def solve_allocation(instance: Mapping[str, Any]) -> Dict[str, Any]:
    """Solves one allocation round.

    Args:
        instance: the instance as a dict, in the format of
            ``docs/alloc-instance.md`` (what ``wflora alloc solve FILE``
            reads).

    Returns:
        The solution as a dict: ``policy`` and ``allocation`` (``components``,
        ``shares``, ``tau_s``, ``penalty``, ``objective``, …).

    Raises:
        WfloraError: the instance is invalid (the message names the field).
    """
    return json.loads(_core.solve_instance_json(json.dumps(instance)))


def select_rank(
    spectrum: Sequence[float],
    pilot_ranks: Sequence[int],
    pilot_covariances: Sequence[float],
    candidates: Sequence[int],
    budget_s: float,
    latency: Callable[[int, float], float],
    params: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """TSFA's offline stage: the rank that minimises the convergence bound
    under a latency budget.

    Args:
        spectrum: singular values of a reference update (the structural term).
        pilot_ranks: ranks of the pilot runs.
        pilot_covariances: the mean covariance measured at each pilot rank.
        candidates: the ranks to choose from, strictly increasing.
        budget_s: the latency budget in seconds.
        latency: ``latency(rank, ratio)``, the expected round latency in
            seconds (raising is an error, returned to the caller).
        params: the bound's constants (``BoundParams`` fields) overriding the
            defaults.

    Returns:
        The selection (``rank``, ``ratio``, ``kept_components``,
        ``latency_s``, ``terms``, ``table``) as a dict.

    Raises:
        WfloraError: invalid inputs, or no candidate meets the budget.
    """
    text = _core.select_rank(
        list(spectrum),
        list(pilot_ranks),
        list(pilot_covariances),
        list(candidates),
        float(budget_s),
        latency,
        None if params is None else json.dumps(dict(params)),
    )
    return json.loads(text)


class Server:
    """The server role of a run (see :meth:`Task.server`): three calls per
    round, exchanging the protocol's bytes with the clients."""

    def __init__(self, inner: "_core.Server") -> None:
        self._inner = inner
        #: The last record as the exact JSON line ``wflora run`` writes.
        self.last_record_line: Optional[str] = None

    def plan_round(self) -> List[Tuple[int, bytes]]:
        """Round phase 1: ``[(client, message)]``, a train instruction for
        every sampled client."""
        return self._inner.plan_round()

    def allocate(
        self, replies: Sequence[bytes], absent: Sequence[int] = ()
    ) -> List[Tuple[int, bytes]]:
        """Round phase 2: from the sampled clients' train reports (any
        order), this round's allocation as ``[(client, message)]``.

        ``absent`` names sampled clients whose report did not come (a node
        that died or timed out): they are not allocated and get no message;
        the record lists them under ``missing_reports``."""
        return self._inner.allocate(list(replies), list(absent))

    def finish_round(self, replies: Sequence[bytes], absent: Sequence[int] = ()) -> Dict[str, Any]:
        """Round phase 3: from the allocated clients' updates (any order),
        the new global state; returns the round's record (the line ``wflora
        run`` writes to ``metrics.jsonl``) as a dict.

        ``absent`` names allocated clients whose update did not come: they
        sit the round out (listed under ``missing_updates``)."""
        self.last_record_line = self._inner.finish_round(list(replies), list(absent))
        return json.loads(self.last_record_line)

    @property
    def round(self) -> int:
        """Rounds completed."""
        return self._inner.round

    @property
    def finished(self) -> bool:
        """Whether every configured round has run."""
        return self._inner.finished

    def checkpoint(self) -> bytes:
        """The server's state as checkpoint bytes (between rounds)."""
        return self._inner.checkpoint()

    def restore(self, data: bytes) -> None:
        """Restores a :meth:`checkpoint` of a server of the same
        configuration."""
        self._inner.restore(data)


class Task:
    """A run's configuration and its built task (backbone and data), shared
    by the roles made from it."""

    def __init__(self, inner: "_core.Task") -> None:
        self._inner = inner

    @classmethod
    def from_toml(cls, text: str, file: str = "<config>", overrides: Sequence[str] = ()) -> "Task":
        """Reads a wflora TOML configuration (the keys it changes over its
        base, as ``wflora run FILE`` reads it), with ``overrides`` as
        ``--set KEY=VALUE`` takes them (``"federation.rounds=5"``), and builds
        the task, pre-training the backbone on first use (cached on disk).

        Raises:
            WfloraError: the configuration is invalid (the message names the
                file and the key), or the task cannot be built.
        """
        return cls(_core.Task.from_toml(text, file, list(overrides)))

    @property
    def config(self) -> Dict[str, Any]:
        """The full configuration, as a dict."""
        return json.loads(self._inner.config_json())

    @property
    def shards(self) -> List[List[int]]:
        """Every client's sample indices into the training split."""
        return self._inner.shards

    def server(self) -> Server:
        """The run's server (draws the cell, initialises the global model)."""
        return Server(self._inner.server())

    def client(self, k: int) -> Client:
        """Client ``k`` of the run, with its shard."""
        return self._inner.client(k)
