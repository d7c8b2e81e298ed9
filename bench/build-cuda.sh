#!/usr/bin/env bash
# Builds wflora's CUDA benchmark binary on a machine without a CUDA toolkit
# (`just build-cuda`): nvcc, the CUDA 13.0 headers and libraries come from
# NVIDIA's PyPI wheels in a virtual environment, the driver's libcuda.so is
# replaced at link time by a stub generated from cuda.h, and the kernels are
# compiled for compute capability 9.0 (H100/H200; override with
# CUDA_COMPUTE_CAP). Output: target-cuda/peer-cuda, the `peer` bench of
# wflora-lora with the feature `cuda` (see crates/lora/benches/peer.rs). It
# needs the driver's libcuda.so.1 and the CUDA 13 runtime libraries (cudart,
# cublas, cublasLt, curand, nvrtc) where it runs.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${WFLORA_CUDA_VENV:-.venv-cuda}
out=target-cuda
# One CUDA release throughout: nvcc's crt and nvvm must match it.
wheels=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14 nvidia-curand==10.4.5.25
)
if [ ! -x "$venv/bin/pip" ]; then
  echo "build-cuda: creating $venv"
  python3 -m venv "$venv"
fi
echo "build-cuda: installing the CUDA 13.0 wheels into $venv (about 1.2 GB)"
"$venv/bin/pip" install -q "${wheels[@]}"
cu=$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)
if [ ! -x "$cu/bin/nvcc" ]; then
  echo "build-cuda: no nvcc under $cu" >&2
  exit 1
fi
cu=$(cd "$cu" && pwd)

# The linker needs unversioned names, and a libcuda.so: the driver's is not
# here, so a stub exporting every cu* name of cuda.h stands in (the real one
# is loaded at run time through its soname, libcuda.so.1).
link="$out/cuda-link"
mkdir -p "$link"
for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
  ln -sf "$cu/lib/$lib" "$link/${lib%%.so.*}.so"
done
grep -oE '\bcu[A-Z][A-Za-z0-9_]*' "$cu/include/cuda.h" | sort -u |
  sed 's/.*/void &(void) {}/' > "$link/libcuda-stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$link/libcuda-stub.c"

export CUDA_HOME="$cu" CUDA_ROOT="$cu" CUDA_PATH="$cu"
export PATH="$cu/bin:$PATH"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH="$(pwd)/$link${LIBRARY_PATH:+:$LIBRARY_PATH}"
export LD_LIBRARY_PATH="$cu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "build-cuda: nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), compute capability $CUDA_COMPUTE_CAP"

export CARGO_TARGET_DIR="$out"
cargo bench -p wflora-lora --bench peer --features cuda --no-run
exe=$(cargo bench -p wflora-lora --bench peer --features cuda --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "peer"][-1])')
strip -o "$out/peer-cuda" "$exe"
echo "build-cuda: built $out/peer-cuda ($(du -h "$out/peer-cuda" | cut -f1)); its CUDA libraries:"
ldd "$out/peer-cuda" | grep -E 'libcu|libnvrtc' || true
