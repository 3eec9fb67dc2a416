#!/usr/bin/env bash
# Runs tests built for aarch64 under QEMU user-mode emulation, on an x86-64 machine, so that the
# NEON micro-kernels (crates/layers/src/nchwc/neon.rs) are checked without Arm hardware.
#
#   scripts/aarch64-test.sh            # resnet-zoo-layers' unit tests: every kernel, NEON
#                                      # included, against Candle's conv2d (what `make test` runs)
#   scripts/aarch64-test.sh --parity   # also PyTorch parity with RESNET_ZOO_ISA=neon (after
#                                      # `make fixtures`; ~9 min more to build, ~24 min to run)
#
# Emulated timings mean nothing: these runs check values only. Needs the Rust target, qemu-user and
# a cross C toolchain (Debian: qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross), installed
# here when missing (apt-get needs root; otherwise install them and rerun).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu

if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null \
    || [[ ! -d "$SYSROOT/lib" ]]; then
    if [[ "$(id -u)" != 0 ]]; then
        echo "scripts/aarch64-test.sh: qemu-aarch64 or the aarch64 cross toolchain is missing;" >&2
        echo "  hint: sudo apt-get install qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross" >&2
        exit 1
    fi
    apt-get install -y -qq qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $SYSROOT"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc

# The layer tests run every kernel set this CPU has (`Isa::available`): on aarch64, NEON and the
# portable one.
cargo test --release --target "$TARGET" -p resnet-zoo-layers --lib

if [[ "${1:-}" == "--parity" ]]; then
    # The models that between them run every block, shortcut and kernel of the blocked path
    # (basic and bottleneck blocks, the paper's V1, ResNet-D's pooled shortcut, pre-activation,
    # ResNeXt's 4-channel groups, Wide, CIFAR's zero-padding shortcut); the deeper ones repeat
    # them and take far longer emulated. `auto` on aarch64 is the GEMM path, hence the variable.
    RESNET_ZOO_ISA=neon RESNET_ZOO_REQUIRE_FIXTURES=1 \
        cargo test --release --target "$TARGET" --test parity -- --test-threads 2 \
        resnet18_ resnet34_ resnet50_matches resnet50_v1 resnet50d_ resnetv2_50_ resnext50 \
        wide_resnet cifar
fi
