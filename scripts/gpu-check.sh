#!/usr/bin/env bash
# On a lent GPU machine: the parity tests on CUDA, then resnet-zoo against PyTorch on the same GPU.
# Builds nothing. Prepare the bundle here first (stripped binary + parity/backbone test
# executables, 155 MB as files, 11 MB as gpu-bundle.tar.xz):
#
#   scripts/cuda-build.sh --bundle gpu-bundle          # or: make gpu-bundle
#
# then, through the device tool, carrying gpu-bundle.tar.xz (git-ignored):
#
#   scripts/gpu-check.sh gpu-bundle.tar.xz             # everything, < 8 minutes on an H200
#   GPU_CHECK_BENCH=0 scripts/gpu-check.sh gpu-bundle.tar.xz     # parity only
#
# (a folder works too: scripts/gpu-check.sh gpu-bundle). The GPU_CHECK_* variables below exist to
# try the script on a CPU machine, e.g. with a libcuda stub on LD_LIBRARY_PATH: GPU_CHECK_DEVICE=cpu
# GPU_CHECK_FIXTURES=tests/fixtures GPU_CHECK_FILTER=resnet18 GPU_CHECK_BENCH_ARGS=--no-compile.
#
# Uses the machine's python3 (PyTorch with CUDA, torchvision, timm) for the fixtures and the
# benchmark, and the CUDA libraries inside that Python's site-packages (nvidia/*/lib). Writes
# everything under $OUT (the device tool's output folder) or target/gpu-check.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${OUT:-target/gpu-check}"
mkdir -p "$DEST"
BUNDLE="${1:-gpu-bundle.tar.xz}"
if [[ -f "$BUNDLE" ]]; then  # the archive: unpacked with Python's tarfile, which every image has
    "${GPU_PYTHON:-python3}" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="tar")' \
        "$BUNDLE" "$DEST/unpacked"
    BUNDLE="$DEST/unpacked/$(basename "$BUNDLE" .tar.xz)"
fi
BUNDLE="$(cd "$BUNDLE" && pwd)"
PY="${GPU_PYTHON:-python3}"
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
LIBS="$(find "$SITE/nvidia" -mindepth 2 -maxdepth 3 -type d -name lib 2>/dev/null | paste -sd: -)"
export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
if [[ "$DEVICE" == cuda* ]]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$DEST/gpu.txt"
fi
"$BUNDLE/resnet-zoo" --version

# 1. Fixtures: the presets' weights and PyTorch outputs, made by this machine's PyTorch on its CPU
#    (or an existing folder: GPU_CHECK_FIXTURES=tests/fixtures).
FIXTURES="${GPU_CHECK_FIXTURES:-$DEST/fixtures}"
if [[ -z "${GPU_CHECK_FIXTURES:-}" ]]; then
    t0=$(date +%s)
    RESNET_ZOO_FIXTURE_THREADS="$(nproc)" "$PY" tests/parity/make_fixtures.py --models-only \
        --out "$FIXTURES" > "$DEST/fixtures.log" 2>&1 || { tail -30 "$DEST/fixtures.log"; exit 1; }
    echo "fixtures: $(( $(date +%s) - t0 )) s"
fi

# 2. Parity on CUDA: every preset (f32, tolerance 1e-4), f64/f16/bf16 files, and the backbone test
#    (features and embeddings in f32, f16 and bf16 with its stated tolerances).
status=0
# GPU_CHECK_FILTER: a test-name filter (e.g. resnet18), for a quick try.
for t in parity backbone; do
    RESNET_ZOO_FIXTURES="$FIXTURES" RESNET_ZOO_REQUIRE_FIXTURES=1 RESNET_ZOO_TEST_DEVICE="$DEVICE" \
        "$BUNDLE/test-$t" --test-threads 1 --nocapture ${GPU_CHECK_FILTER:-} > "$DEST/test-$t.log" 2>&1 || status=1
    grep -E "^test result|FAILED|panicked" "$DEST/test-$t.log" || true
done

# 3. Throughput against PyTorch eager (NCHW and channels-last) and channels-last + torch.compile.
if [[ "${GPU_CHECK_BENCH:-1}" != 0 ]]; then
    "$PY" benches/gpu_compare.py --bin "$BUNDLE/resnet-zoo" --work "$DEST/bench" \
        --models "${GPU_CHECK_MODELS:-resnet50,resnext50_32x4d}" --batches "${GPU_CHECK_BATCHES:-1,32,128}" \
        --dtypes "${GPU_CHECK_DTYPES:-f32,f16,bf16}" --device "$DEVICE" ${GPU_CHECK_BENCH_ARGS:-} \
        --markdown "$DEST/gpu-table.md" 2> "$DEST/bench.log" || status=1
fi
exit $status
