"""A localhost Flower deployment for wflora: a SuperLink and N SuperNodes as
separate processes (insecure mode, Flower's state in a folder of yours),
`flwr run` of this app against them, and everything stopped afterwards.

    python -m wflora_flower.localhost --root /abs/dir --nodes 3 -- "rounds=3 out='/abs/out'"

Each process runs in a process group of its own, so that a SuperNode and
the ClientApp processes it spawns can be killed together (the deployment
test does so mid-run). Runs from the venv that holds flwr and wflora."""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

BIN = pathlib.Path(sys.executable).parent
APP = pathlib.Path(__file__).resolve().parents[1]


def flower_env(home: pathlib.Path) -> Dict[str, str]:
    """Flower's state under ``home``, no per-run dependency installation,
    the venv's tools first on PATH."""
    return dict(
        os.environ,
        FLWR_HOME=str(home),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
    )


def cmdlines() -> Dict[int, str]:
    """Every process's command line, read from /proc (``ps`` cuts lines at
    $COLUMNS)."""
    out = {}
    for proc in pathlib.Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                raw = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            out[int(proc.name)] = raw.replace(b"\0", b" ").decode(errors="replace")
    return out


def descendants(pid: int) -> List[int]:
    """Every live process below ``pid``."""
    parent: Dict[int, int] = {}
    for proc in pathlib.Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            # `pid (comm) state ppid ...`; comm may hold spaces.
            parent[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        frontier += kids
    return out


def free_port() -> int:
    """A TCP port no one listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float) -> None:
    """Waits until something accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Deployment:
    """A SuperLink and ``nodes`` SuperNodes on localhost, insecure, each in
    a process group of its own (so that a node and the ClientApp processes
    it spawns die together), with Flower's state and the logs in ``root``."""

    def __init__(self, root: pathlib.Path, nodes: int) -> None:
        self.root = root
        self.home = root / "flwr-home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.env = flower_env(self.home)
        self.port = free_port()
        self.logs: List[pathlib.Path] = []
        self.runs: List[subprocess.Popen] = []
        self.link = self._spawn(
            "superlink",
            [str(BIN / "flower-superlink"), "--insecure", "--port", str(self.port),
             "--database", str(root / "superlink.db")],
        )
        wait_port(self.port, 60)
        self.nodes = [
            self._spawn(
                f"supernode-{k}",
                [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{self.port}",
                 "--port", str(free_port()), "--node-config", f"partition-id={k} num-partitions={nodes}"],
            )
            for k in range(nodes)
        ]
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "here"\n\n[superlink.here]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )

    def _spawn(self, name: str, cmd: List[str]) -> subprocess.Popen:
        log = self.root / f"{name}.log"
        self.logs.append(log)
        with open(log, "w") as f:
            return subprocess.Popen(cmd, env=self.env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)

    def run(self, run_config: str) -> subprocess.Popen:
        """``flwr run`` of the app against this SuperLink with the run
        config ``run_config``, in the background (its output in a log)."""
        log = self.root / f"flwr-run-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "w") as f:
            run = subprocess.Popen(
                [str(BIN / "flwr"), "run", str(APP), "here", "--stream", "--run-config", run_config],
                env=self.env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.runs.append(run)
        return run

    def kill_node(self, k: int) -> None:
        """SIGKILL node ``k`` and its ClientApp processes."""
        os.killpg(self.nodes[k].pid, signal.SIGKILL)
        self.nodes[k].wait()

    def serverapps(self) -> List[int]:
        """PIDs of the ServerApp processes the SuperLink runs."""
        cmds = cmdlines()
        return [p for p in descendants(self.link.pid) if "serverapp" in cmds.get(p, "")]

    def clientapps(self) -> List[int]:
        """PIDs of the ClientApp processes of every live node."""
        cmds = cmdlines()
        return [
            p for n in self.nodes if n.poll() is None for p in descendants(n.pid) if "clientapp" in cmds.get(p, "")
        ]

    def tail(self, chars: int = 2500) -> str:
        """The end of every log, for a failing assertion."""
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in self.logs if p.is_file())

    def stop(self) -> None:
        """Stops every process of the deployment (SIGTERM, then SIGKILL)."""
        procs = [*self.runs, *self.nodes, self.link]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in procs:
                # The whole group, also when its leader is gone: a ServerApp
                # or ClientApp process may outlive its parent.
                try:
                    os.killpg(p.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(p.poll() is None for p in procs):
                time.sleep(0.2)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Starts the deployment, runs the app once, stops everything, and
    prints the logs' ends; the exit status is ``flwr run``'s (Flower's CLI
    exits 0 also when the run failed: the ServerApp's log says)."""
    p = argparse.ArgumentParser(prog="python -m wflora_flower.localhost", description=__doc__.split("\n")[0])
    p.add_argument("--root", type=pathlib.Path, required=True, help="folder for Flower's state and the logs")
    p.add_argument("--nodes", type=int, required=True, help="SuperNodes (= federation.clients)")
    p.add_argument("run_config", nargs="?", default="", help="the run config of `flwr run --run-config`")
    args = p.parse_args(argv)
    if args.nodes < 1:
        p.error("--nodes: expected a positive count")
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    d = Deployment(root, args.nodes)
    try:
        run = d.run(args.run_config)
        rc = run.wait()
    except KeyboardInterrupt:
        rc = 130
    finally:
        d.stop()
    print(d.tail(4000))
    return rc


if __name__ == "__main__":
    sys.exit(main())
