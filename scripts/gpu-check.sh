#!/usr/bin/env bash
# On a lent GPU machine: the parity tests on CUDA, then resnet-zoo against PyTorch on the same GPU.
# Builds nothing. Prepare the bundle here first (stripped binary + test executables, ~40 MB):
#
#   scripts/cuda-build.sh --bundle gpu-bundle
#
# then, through the device tool, with gpu-bundle carried along:
#
#   scripts/gpu-check.sh gpu-bundle            # everything, < 8 minutes on an H200
#   GPU_CHECK_BENCH=0 scripts/gpu-check.sh gpu-bundle     # parity only
#
# Uses the machine's python3 (PyTorch with CUDA, torchvision, timm) for the fixtures and the
# benchmark, and the CUDA libraries inside that Python's site-packages (nvidia/*/lib). Writes
# everything under $OUT (the device tool's output folder) or target/gpu-check.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE="$(cd "${1:-gpu-bundle}" && pwd)"
DEST="${OUT:-target/gpu-check}"
mkdir -p "$DEST"
PY="${GPU_PYTHON:-python3}"
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
LIBS="$(find "$SITE/nvidia" -mindepth 2 -maxdepth 3 -type d -name lib | paste -sd: -)"
export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$DEST/gpu.txt"
"$BUNDLE/resnet-zoo" --version

# 1. Fixtures: the presets' weights and PyTorch outputs, made by this machine's PyTorch on its CPU.
t0=$(date +%s)
RESNET_ZOO_FIXTURE_THREADS="$(nproc)" "$PY" tests/parity/make_fixtures.py --models-only \
    --out "$DEST/fixtures" > "$DEST/fixtures.log" 2>&1 || { tail -30 "$DEST/fixtures.log"; exit 1; }
echo "fixtures: $(( $(date +%s) - t0 )) s"

# 2. Parity on CUDA: every preset (f32, tolerance 1e-4), f64/f16/bf16 files, and the backbone test
#    (features and embeddings in f32, f16 and bf16 with its stated tolerances).
status=0
for t in parity backbone; do
    RESNET_ZOO_FIXTURES="$DEST/fixtures" RESNET_ZOO_TEST_DEVICE=cuda \
        "$BUNDLE/test-$t" --test-threads 1 --nocapture > "$DEST/test-$t.log" 2>&1 || status=1
    grep -E "^test result|FAILED|panicked" "$DEST/test-$t.log" || true
done

# 3. Throughput against PyTorch eager (NCHW and channels-last) and channels-last + torch.compile.
if [[ "${GPU_CHECK_BENCH:-1}" != 0 ]]; then
    "$PY" benches/gpu_compare.py --bin "$BUNDLE/resnet-zoo" --work "$DEST/bench" \
        --models "${GPU_CHECK_MODELS:-resnet50,resnext50_32x4d}" --batches "${GPU_CHECK_BATCHES:-1,32,128}" \
        --dtypes f32,f16,bf16 --markdown "$DEST/gpu-table.md" 2> "$DEST/bench.log" || status=1
fi
exit $status
