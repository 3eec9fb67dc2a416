# resnet-zoo developer entry points. `make test` is the one command that runs every test on a fresh
# machine: it creates the Python venv (torch, torchvision: ~5.5 GB, a few minutes the first time),
# generates the PyTorch parity fixtures into tests/fixtures/ (git-ignored), and runs the Rust tests
# with optimisation (Candle is too slow unoptimised).

PYTHON ?= python3
# The venv (torch, ~5.5 GB) lives outside the checkout so that clones on one machine share it; it is
# created and brought up to tests/requirements.txt whenever missing or older than that file.
VENV ?= $(HOME)/.cache/resnet-zoo/venv
FIXTURES := tests/fixtures

.PHONY: test venv fixtures check fmt clippy classify clean-fixtures bench bench-smoke cuda-build gpu-bundle test-aarch64

# RESNET_ZOO_REQUIRE_FIXTURES: a test whose PyTorch fixture is missing fails here; plain `cargo test`
# (no fixtures) skips those tests and says so in one line per test binary (tests/common/mod.rs).
test: fixtures
	RESNET_ZOO_REQUIRE_FIXTURES=1 cargo test --release --workspace --all-targets
	# The parity suite again on the other CPU kernels: AVX2 (the default picks AVX-512 where the
	# CPU has it) and the NCHW GEMM path (Arm and other CPUs without AVX2).
	RESNET_ZOO_ISA=avx2 RESNET_ZOO_REQUIRE_FIXTURES=1 cargo test --release --test parity
	RESNET_ZOO_ISA=off RESNET_ZOO_REQUIRE_FIXTURES=1 cargo test --release --test parity
	# ... and with Winograd on no convolution, F(2x2, 3x3) on every stride-1 3x3, and F(4x4, 3x3)
	# on every stride-1 3x3 (the default runs F(4x4) up to 128 channels, F(2x2) above).
	RESNET_ZOO_WINOGRAD=off RESNET_ZOO_REQUIRE_FIXTURES=1 cargo test --release --test parity
	RESNET_ZOO_WINOGRAD=all RESNET_ZOO_REQUIRE_FIXTURES=1 cargo test --release --test parity
	RESNET_ZOO_WINOGRAD=all-f4 RESNET_ZOO_REQUIRE_FIXTURES=1 cargo test --release --test parity
	cargo test --release --workspace --doc
	# The kernel tests again built for aarch64, under QEMU: the NEON kernels against Candle.
	scripts/aarch64-test.sh

$(VENV)/.installed: tests/requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	# scikit-image only for its bundled photos (tests/data/images/make_images.py); no dependencies needed.
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps scikit-image==0.26.0
	touch $@

venv: $(VENV)/.installed

fixtures: $(VENV)/.installed
	$(VENV)/bin/python tests/parity/make_fixtures.py --out $(FIXTURES)

# Cross-engine benchmark (benches/compare.py): resnet-zoo, PyTorch eager, PyTorch channels-last +
# torch.compile and ONNX Runtime on the same weights and input, interleaved; see docs/performance.md.
BENCH_ARGS ?= --models resnet50,resnet18,resnext50_32x4d,wide_resnet50_2 --batches 1,8 --rounds 2 --repeats 5

$(VENV)/.bench-installed: benches/requirements.txt $(VENV)/.installed
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r benches/requirements.txt
	touch $@

bench: $(VENV)/.bench-installed
	cargo build --release
	$(VENV)/bin/python benches/compare.py $(BENCH_ARGS) --markdown target/bench-compare/table.md

# CI: the same script on resnet18, batch 1, one repeat, outputs checked; no timing asserts.
bench-smoke: $(VENV)/.bench-installed
	cargo build --release
	$(VENV)/bin/python benches/compare.py --smoke

# The kernel tests and the parity suite (RESNET_ZOO_ISA=neon) built for aarch64, under QEMU.
test-aarch64: fixtures
	scripts/aarch64-test.sh --parity

# `--features cuda,cudnn` without a GPU (CUDA 13.0 wheels from PyPI; scripts/cuda-build.sh says how).
cuda-build:
	scripts/cuda-build.sh

# The binary and test executables scripts/gpu-check.sh runs on a lent GPU machine.
gpu-bundle:
	scripts/cuda-build.sh --bundle gpu-bundle

check: fmt clippy

fmt:
	cargo fmt --all -- --check

clippy:
	cargo clippy --release --workspace --all-targets -- -D warnings

clean-fixtures:
	rm -rf $(FIXTURES)
