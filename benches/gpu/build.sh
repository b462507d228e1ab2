#!/usr/bin/env bash
# Builds here (no GPU needed) everything benches/gpu/run.sh needs on the GPU machine, into
# target/gpu/ (gitignored; ship it with the device tool's `carry: ["target/gpu"]`):
#   target/gpu/gpu_averager      the Rust bench binary, linked --no-as-needed with libtorch_cuda
#   target/gpu/libasymvalley.so  the op library (torch.ops.asymvalley.*)
#   target/gpu/py/ema_pytorch    the dev venv's ema-pytorch (pure Python; the GPU machine's image
#                                lacks it, run.sh adds it to the path only where it is missing)
#   target/gpu/build-info.txt    commit, dirty-file count, date, rustc, torch the build used
# On the shared 2-core dev machine: CARGO_BUILD_JOBS=1 benches/gpu/build.sh
# Always --release (the bench profile also uses target/release).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p target/gpu

echo "== cargo build --release --lib (op library)"
cargo build --release --lib

echo "== cargo bench --bench gpu_averager --no-run"
# The JSON messages name the bench executable; pick the one of our target.
bin=$(cargo bench --bench gpu_averager --no-run --message-format=json |
  python3 -c '
import json, sys
exe = None
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "gpu_averager" and m.get("executable"):
        exe = m["executable"]
print(exe or "")')
if [[ -z "$bin" || ! -x "$bin" ]]; then
  echo "build.sh: could not find the gpu_averager bench executable (run: cargo bench --bench gpu_averager --no-run)" >&2
  exit 1
fi
cp -f "$bin" target/gpu/gpu_averager
cp -f target/release/libasymvalley.so target/gpu/libasymvalley.so

VPY=.venv/bin/python
[[ -x $VPY ]] || VPY=python3
rm -rf target/gpu/py
ema_dir=$("$VPY" -c 'import ema_pytorch, os; print(os.path.dirname(ema_pytorch.__file__))' 2>/dev/null || true)
if [[ -n $ema_dir ]]; then
  mkdir -p target/gpu/py
  cp -r "$ema_dir" target/gpu/py/ema_pytorch
  rm -rf target/gpu/py/ema_pytorch/__pycache__
  ema_version=$("$VPY" -c 'import importlib.metadata as m; print(m.version("ema-pytorch"))' 2>/dev/null || echo unknown)
else
  echo "build.sh: ema_pytorch is not importable from $VPY: bench_average's ema_pytorch rows will be skipped on the GPU machine" >&2
  ema_version=none
fi

if command -v readelf >/dev/null; then
  if ! readelf -d target/gpu/gpu_averager | grep -q 'libtorch_cuda'; then
    echo "build.sh: target/gpu/gpu_averager does not need libtorch_cuda: tch would see no CUDA (src/cli/build.rs forces the link with --no-as-needed)" >&2
    exit 1
  fi
fi

{
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "uncommitted_files: $(git status --porcelain 2>/dev/null | wc -l)"
  echo "built_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "rustc: $(rustc --version)"
  echo "torch: $(readlink -f libtorch 2>/dev/null || echo unknown)"
  echo "bench_binary_from: $bin"
  echo "ema_pytorch_shipped: $ema_version"
} > target/gpu/build-info.txt
ls -la target/gpu target/gpu/py
cat target/gpu/build-info.txt
