#!/usr/bin/env bash
# Runs every fuzz target for N minutes (default 10), seeded from the repository's own files.
# Usage: fuzz/run.sh [MINUTES] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
minutes=${1:-10}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors_load keymap pth pth_ops image)
seed() {
  local t=$1 dir=corpus/$1
  mkdir -p "$dir"
  case $t in
    image) cp ../tests/data/images/*.{jpg,png} "$dir"/ ;;
    safetensors_load) find ../tests/fixtures -maxdepth 1 -name 'resnet20*.safetensors' -exec cp {} "$dir"/ \; 2>/dev/null || true ;;
    pth) find ../tests/fixtures/pth -name '*.pth' -size -2M -exec cp {} "$dir"/ \; 2>/dev/null || true ;;
    pth_ops) ;; # structure-aware: libFuzzer's bytes are an op sequence, no seed files
    keymap) printf 'conv1.weight\nresnet.encoder.stages.0.layers.0.layer.0.convolution.weight\nstages.0.blocks.0.norm1.weight\nhead.fc.bias\n' > "$dir/names" ;;
  esac
}
# Nightly if installed (FUZZ_STABLE=1 forces stable), else the stable toolchain with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags).
if [ -z "${FUZZ_STABLE:-}" ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
for t in "${targets[@]}"; do
  seed "$t"
  echo "== $t: ${minutes} min"
  mkdir -p "artifacts/$t"
  "${fuzz[@]}" run "$t" "corpus/$t" -- -max_total_time=$((minutes * 60)) -rss_limit_mb=4096 \
    -artifact_prefix="artifacts/$t/" 2>&1 | tail -n 5
done
