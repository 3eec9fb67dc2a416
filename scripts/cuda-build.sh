#!/usr/bin/env bash
# Builds resnet-zoo with `--features cuda,cudnn` on a machine without a GPU or a CUDA install.
#
#   scripts/cuda-build.sh                 # lib, bin, tests and examples (CI's compile check)
#   scripts/cuda-build.sh --bundle DIR    # also copy the stripped binary and parity/backbone test
#                                         # executables into DIR and DIR.tar.xz (what a GPU machine
#                                         # is given), for scripts/gpu-check.sh
#
# Recipe (nothing of it is needed on the GPU machine, which has its own driver and libraries):
# 1. The CUDA 13.0 wheels from PyPI (scripts/cuda-requirements.txt) go into their own venv,
#    $RESNET_ZOO_CUDA_VENV (default ~/.cache/resnet-zoo/cuda): nvcc, cccl headers, cudart, nvrtc,
#    cuBLAS, cuRAND, cuDNN. 13.0 because the lent GPUs run driver 580, which cannot load PTX from a
#    newer nvcc.
# 2. A CUDA root is laid out from the wheels (bin/, include/, nvvm/, lib64/ with the unversioned
#    names the linker asks for: libcublas.so -> libcublas.so.13, ...), because candle-kernels runs
#    nvcc at build time and cudarc (`dynamic-linking`) links libcuda, libcublas, libnvrtc, ...
# 3. No wheel ships the driver library libcuda.so, so a stub with the soname libcuda.so.1 is
#    compiled from the function names that cuda.h declares (every one an empty function); the
#    binary then records libcuda.so.1 as needed, and the real driver's library is the one loaded.
# 4. cargo builds into target/cuda with CUDA_COMPUTE_CAP (default 90, the H100/H200), so no GPU
#    is queried.
set -euo pipefail
cd "$(dirname "$0")/.."

BUNDLE=""
if [[ "${1:-}" == "--bundle" ]]; then
    BUNDLE="${2:?--bundle needs a folder}"
fi

VENV="${RESNET_ZOO_CUDA_VENV:-$HOME/.cache/resnet-zoo/cuda}"
PYTHON="${PYTHON:-python3}"
REQ=scripts/cuda-requirements.txt
if [[ ! -f "$VENV/.installed" || "$REQ" -nt "$VENV/.installed" ]]; then
    test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
    touch "$VENV/.installed"
fi

SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
CU="$SITE/nvidia/cu13"
CUDNN="$SITE/nvidia/cudnn"
ROOT="$VENV/root"
mkdir -p "$ROOT/lib64/stubs" "$ROOT/include"
for d in bin nvvm; do ln -sfn "$CU/$d" "$ROOT/$d"; done
# One include folder with the toolkit's and cuDNN's headers.
for h in "$CU"/include/* "$CUDNN"/include/*; do ln -sfn "$h" "$ROOT/include/$(basename "$h")"; done
for lib in "$CU"/lib/lib*.so.* "$CUDNN"/lib/lib*.so.*; do
    base="$(basename "$lib")"
    ln -sfn "$lib" "$ROOT/lib64/$base"
    ln -sfn "$lib" "$ROOT/lib64/${base%%.so.*}.so"
done

STUB="$ROOT/lib64/stubs/libcuda.so"
if [[ ! -f "$STUB" || "$CU/include/cuda.h" -nt "$STUB" ]]; then
    gcc -E -P -I "$CU/include" "$CU/include/cuda.h" \
        | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d ' (' | sort -u \
        | sed 's/.*/void &(void) {}/' > "$ROOT/lib64/stubs/cuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$STUB" "$ROOT/lib64/stubs/cuda_stub.c"
    echo "libcuda stub: $(wc -l < "$ROOT/lib64/stubs/cuda_stub.c") driver functions"
fi

export CUDA_ROOT="$ROOT" CUDA_HOME="$ROOT" CUDA_PATH="$ROOT" CUDNN_LIB="$ROOT/lib64"
export PATH="$ROOT/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/cuda}"
nvcc --version | tail -2

FEATURES="cuda,cudnn"
cargo build --release --workspace --features "$FEATURES" --all-targets
echo "cuda build: ok (features $FEATURES, compute capability $CUDA_COMPUTE_CAP, $CARGO_TARGET_DIR)"

if [[ -n "$BUNDLE" ]]; then
    mkdir -p "$BUNDLE"
    cp "$CARGO_TARGET_DIR/release/resnet-zoo" "$BUNDLE/"
    # The test executables gpu-check.sh runs: their paths come from cargo's own listing.
    for t in parity backbone; do
        exe="$(cargo test --release --features "$FEATURES" --test "$t" --no-run --message-format=json 2>/dev/null \
            | "$VENV/bin/python" -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])' | tail -1)"
        cp "$exe" "$BUNDLE/test-$t"
    done
    strip "$BUNDLE"/*
    du -sh "$BUNDLE"/*
    # Each executable embeds Candle's CUDA kernels (~40 MB of the 60): xz's long window stores
    # them once, ~11 MB in all, under the device tool's 64 MiB carry limit.
    XZ_OPT="-9 -T2" tar -cJf "$BUNDLE.tar.xz" -C "$(dirname "$BUNDLE")" "$(basename "$BUNDLE")"
    du -sh "$BUNDLE.tar.xz"
fi
