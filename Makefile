# asymvalley — every target depends on `setup`, which is idempotent.
#   make demo    the main job on the embedded digits data
#   make test    every test: Rust (unit, integration, property, doc) and Python (op library)
#   make bench   criterion + the PyTorch comparison benchmark
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
TORCH_VERSION := 2.11.0
STAMP := $(VENV)/.asymvalley-setup-$(TORCH_VERSION)
OPLIB := target/release/libasymvalley.so
export CARGO_TERM_COLOR ?= never

.PHONY: setup build oplib install demo test test-rust test-python bench bench-rust bench-python fmt clippy clean

setup: $(STAMP) libtorch

$(STAMP): fixtures/requirements.txt
	@command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	@have=$$($(VPY) -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || echo none); \
	if [ "$$have" != "none" ] && [ "$$have" != "$(TORCH_VERSION)" ]; then \
	  echo "setup: $(VENV) has torch $$have but asymvalley needs torch==$(TORCH_VERSION) (tch 0.24)." >&2; \
	  echo "       run 'rm -rf $(VENV) target' and 'make setup' again, or '$(VPY) -m pip install torch==$(TORCH_VERSION)'." >&2; \
	  exit 1; fi
	$(VPY) -m pip install --quiet --disable-pip-version-check -r fixtures/requirements.txt
	@$(VPY) -c 'import torch, sys; v=torch.__version__.split("+")[0]; sys.exit(0 if v=="$(TORCH_VERSION)" else "setup: torch "+v+" installed, need $(TORCH_VERSION)")'
	@touch $@

# tch's build finds libtorch through this link (see .cargo/config.toml).
libtorch: $(STAMP)
	@ln -sfn $$($(VPY) -c 'import torch, os; print(os.path.dirname(torch.__file__))') libtorch

build: setup
	cargo build --release --all-targets

oplib: setup
	cargo build --release -p asymvalley-ops

# The Python package, non-editable, into .venv (pyproject.toml + src/python/build_backend; its cargo build is a no-op
# after `oplib`). The Python tests import this installed copy, never src/python.
install: oplib
	$(VPY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation .

demo: setup
	cargo run --release --bin asymvalley -- demo

test: install
	cargo test --release --workspace
	$(VPY) -m pytest -q tests/python

bench: setup
	cargo bench --bench bench_main
	cargo build --release -p asymvalley-ops
	$(VPY) benches/python/bench_average.py --device cpu

fmt:
	cargo fmt --all

clippy: setup
	cargo clippy --workspace --all-targets

clean:
	cargo clean
