"""A client's state on the node's disk, so that a client survives its Flower
run: a resumed run (after the server was killed) or a restarted SuperNode
starts each client from the state it had when the round it resumes began.

Layout: ``<dir>/client-<k>/round-<t>.state`` is the client's state after its
last message of round ``t`` (written atomically: a temporary file, fsync,
rename), the last two kept; ``<dir>/client-<k>/run`` names the Flower run
that owns the files. One run writes a store at a time."""

from __future__ import annotations

import os
import pathlib
from typing import List, Optional, Tuple

import wflora

#: Snapshots kept per client (the newest, and one before it).
KEEP = 2


def write_atomic(path: pathlib.Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that a kill leaves the old file or the
    new one, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ClientStore:
    """The snapshots of wflora client ``k`` under ``root``."""

    def __init__(self, root: pathlib.Path, k: int) -> None:
        if not root.is_absolute():
            raise wflora.WfloraError(f"run config `client-state-dir`: {str(root)!r} must be an absolute path")
        self.dir = root / f"client-{k}"
        self.dir.mkdir(parents=True, exist_ok=True)

    def snapshots(self) -> List[Tuple[int, pathlib.Path]]:
        """``(round, file)`` of every snapshot, oldest first."""
        out = []
        for p in self.dir.glob("round-*.state"):
            try:
                out.append((int(p.stem.split("-", 1)[1]), p))
            except ValueError:
                continue
        return sorted(out)

    def recover(self, run_id: int, round_: int, start: int) -> Optional[bytes]:
        """The state a client with no state in this context continues from
        in round ``round_`` of run ``run_id``, which started (or resumed) at
        round ``start``.

        A store another run owns is taken over: its snapshots of round
        ``start`` and later belong to rounds this run is about to redo and
        are deleted; the newest one before ``start`` is the state. In the
        run that owns it (the node restarted), the newest snapshot before
        ``round_`` is."""
        owner = self.dir / "run"
        mine = owner.is_file() and owner.read_text().strip() == str(run_id)
        limit = round_ if mine else start
        if not mine:
            for t, p in self.snapshots():
                if t >= start:
                    p.unlink()
            write_atomic(owner, f"{run_id}\n".encode())
        before = [p for t, p in self.snapshots() if t < limit]
        return before[-1].read_bytes() if before else None

    def save(self, round_: int, state: bytes) -> None:
        """Keeps ``state`` as the client's state after round ``round_`` and
        drops all but the newest :data:`KEEP` snapshots."""
        write_atomic(self.dir / f"round-{round_:06d}.state", state)
        for _, p in self.snapshots()[:-KEEP]:
            p.unlink()
