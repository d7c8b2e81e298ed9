"""Shared fixtures: a small run's configuration, its task, and the wflora CLI."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

import wflora

REPO = pathlib.Path(__file__).resolve().parents[3]


def small_toml(cache: pathlib.Path, rounds: int = 2, extra: str = "") -> str:
    """The embedded default cut to seconds: 30 pre-training steps, 4 clients,
    2 local steps (the configuration of the Rust engine tests)."""
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
rounds = {rounds}
[local]
steps = 2
{extra}
"""


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A pre-training cache shared by the session's tasks."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def task(cache: pathlib.Path) -> wflora.Task:
    """The small run's task, built once."""
    return wflora.Task.from_toml(small_toml(cache), "small.toml")


@pytest.fixture(scope="session")
def wflora_bin() -> pathlib.Path:
    """The `wflora` binary of this checkout (`cargo build -p wflora-experiments`
    or `cargo test --workspace` builds it), or `$WFLORA_BIN`."""
    env = os.environ.get("WFLORA_BIN")
    candidates = [pathlib.Path(env)] if env else [
        REPO / "target" / "debug" / "wflora",
        REPO / "target" / "release" / "wflora",
    ]
    for c in candidates:
        if c.is_file():
            return c
    found = shutil.which("wflora")
    if found:
        return pathlib.Path(found)
    pytest.fail(
        "no wflora binary: build it with `cargo build -p wflora-experiments` "
        "or set WFLORA_BIN"
    )
