# wflora task runner. `just --list` shows the recipes.
# Every recipe is a thin wrapper over cargo: the README gives the plain equivalents.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# The whole test suite (what CI runs after `just lint`).
test:
    cargo test --workspace

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# The main job on the embedded default: pre-train the tiny ViT, then compare
# head-only, LoRA and full fine-tuning (writes results/finetune/).
finetune *ARGS:
    cargo run --release -p wflora-experiments -- finetune {{ARGS}}

# Benchmarks of the math crates and the training step (numbers, not tests).
bench:
    cargo bench -p wflora-soft
    cargo bench -p wflora-alloc
    cargo bench -p wflora-lora

# Solve one allocation instance given as JSON (see docs/alloc-instance.md).
alloc-solve FILE:
    cargo run --release -p wflora-experiments -- alloc solve {{FILE}}
