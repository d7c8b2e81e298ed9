"""What the Flower app's tests share: a small wflora configuration, the
environment Flower runs in (its state in a folder of the test's), and the
processes of a localhost deployment (a SuperLink and SuperNodes), stopped
whatever happens."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import List

REPO = pathlib.Path(__file__).resolve().parents[2]
# The app's modules, for the tests that call them directly (Flower itself
# loads them from the app it is given).
sys.path.insert(0, str(REPO / "flower"))

from wflora_flower.localhost import BIN, Deployment, cmdlines, flower_env  # noqa: E402

FLWR = BIN / "flwr"
__all__ = ["Deployment", "FLWR", "REPO", "flower_env", "small", "stop_superlink", "superlinks", "wait_lines"]


def small(cache: pathlib.Path, clients: int = 4, rounds: int = 2) -> str:
    """A wflora configuration that runs in seconds a round."""
    return f"""
seed = 3
[task]
cache_dir = "{cache}"
[task.pretrain]
steps = 30
warmup_steps = 5
[federation]
clients = {clients}
clients_per_round = {clients}
rounds = {rounds}
[local]
steps = 2
"""


def superlinks(home: pathlib.Path) -> List[int]:
    """PIDs of the SuperLinks whose command line names this FLWR_HOME."""
    return [pid for pid, cmd in cmdlines().items() if "flower-superlink" in cmd and str(home) in cmd]


def stop_superlink(home: pathlib.Path) -> None:
    """`flwr run` leaves its local SuperLink running: stop the one of this
    FLWR_HOME (its SuperExec exits with it), SIGKILL after 10 s."""
    deadline = time.monotonic() + 10
    while pids := superlinks(home):
        sig = signal.SIGTERM if time.monotonic() < deadline else signal.SIGKILL
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


def wait_lines(path: pathlib.Path, n: int, proc: subprocess.Popen, timeout: float) -> None:
    """Waits until ``path`` has ``n`` lines (or ``proc`` ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.is_file() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{path} did not reach {n} lines in {timeout} s")

