"""wflora on Flower's Simulation Engine gives the metrics of `wflora run`
of the same configuration, byte for byte.

Runs in the venv that `just flower-test` makes (flwr[simulation] and the
wflora package installed); needs the `wflora` binary (`$WFLORA_BIN`, or
target/debug/wflora)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from flowerkit import FLWR, REPO, flower_env, small, stop_superlink, superlinks


def test_flower_simulation_equals_wflora_run(tmp_path: pathlib.Path) -> None:
    wflora_bin = pathlib.Path(os.environ.get("WFLORA_BIN", REPO / "target" / "debug" / "wflora"))
    assert wflora_bin.is_file(), f"no wflora binary at {wflora_bin}: cargo build -p wflora-experiments"
    assert FLWR.is_file(), f"no flwr next to {sys.executable}: run in the venv of `just flower-test`"
    config = tmp_path / "small.toml"
    config.write_text(small(tmp_path / "cache"))
    ref = tmp_path / "ref"
    subprocess.run([str(wflora_bin), "run", str(config), "--out", str(ref)], check=True, capture_output=True)
    home = tmp_path / "flwr-home"
    env = flower_env(home)
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
