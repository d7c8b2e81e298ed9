"""wflora on Flower's Simulation Engine gives the metrics of `wflora run`
of the same configuration, byte for byte.

Runs in the venv that `just flower-test` makes (flwr[simulation] and the
wflora package installed); needs the `wflora` binary (`$WFLORA_BIN`, or
target/debug/wflora)."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
FLWR = pathlib.Path(sys.executable).parent / "flwr"


def small(cache: pathlib.Path) -> str:
    return f"""
seed = 3
[task]
cache_dir = "{cache}"
[task.pretrain]
steps = 30
warmup_steps = 5
[federation]
clients = 4
clients_per_round = 4
rounds = 2
[local]
steps = 2
"""


def superlinks(home: pathlib.Path) -> list:
    """PIDs of the SuperLinks whose command line names this FLWR_HOME (read
    from /proc: `ps` cuts its lines at $COLUMNS)."""
    pids = []
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "flower-superlink" in cmd and str(home) in cmd:
            pids.append(int(proc.name))
    return pids


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


def test_flower_simulation_equals_wflora_run(tmp_path: pathlib.Path) -> None:
    wflora_bin = pathlib.Path(os.environ.get("WFLORA_BIN", REPO / "target" / "debug" / "wflora"))
    assert wflora_bin.is_file(), f"no wflora binary at {wflora_bin}: cargo build -p wflora-experiments"
    assert FLWR.is_file(), f"no flwr next to {sys.executable}: run in the venv of `just flower-test`"
    config = tmp_path / "small.toml"
    config.write_text(small(tmp_path / "cache"))
    ref = tmp_path / "ref"
    subprocess.run([str(wflora_bin), "run", str(config), "--out", str(ref)], check=True, capture_output=True)
    home = tmp_path / "flwr-home"
    env = dict(
        os.environ,
        FLWR_HOME=str(home),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        PATH=f"{FLWR.parent}{os.pathsep}{os.environ['PATH']}",
    )
    out = tmp_path / "flower"
    try:
        run = subprocess.run(
            [
                str(FLWR), "run", str(REPO / "flower"), "--stream",
                "--federation-config", "num-supernodes=4 client-resources-num-cpus=1",
                "--run-config", f"config='{config}' out='{out}'",
            ],
            env=env, capture_output=True, text=True, timeout=900,
        )
    finally:
        stop_superlink(home)
    assert not superlinks(home), "the SuperLink outlived the run"
    # `flwr run --stream` exits 0 even when the run fails: the metrics tell.
    metrics = out / "metrics.jsonl"
    assert metrics.is_file(), f"the Flower run wrote no metrics:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    assert metrics.read_bytes() == (ref / "metrics.jsonl").read_bytes()
    assert len(metrics.read_text().splitlines()) == 2
