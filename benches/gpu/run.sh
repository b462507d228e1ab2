#!/usr/bin/env bash
# The ONE command to run on the GPU machine (issues 6 and 15). See benches/gpu/README.md.
#
#   benches/gpu/run.sh                 # GPU machine: torch at /opt/torch/.venv, results in $OUT
#   benches/gpu/run.sh --dry-run-cpu   # dry run of the same steps on a CPU, with this repo's .venv
#   DEVICE=cpu benches/gpu/run.sh      # the same dry run
#
# Needs target/gpu/ from benches/gpu/build.sh (built on the dev machine, shipped with carry).
# Environment: DEVICE (cuda|cpu, default cuda), PYTHON (default /opt/torch/.venv/bin/python3 if
# present, else .venv/bin/python, else python3), OUT (default target/gpu-results), MODELS
# (default resnet50,vit_b_16), STEP_TIMEOUT (seconds for every step, overriding the defaults:
# on cuda 200 s for check_cuda, 110 s for bench_average, 140 s for gpu_averager, 450 s in all, and
# 475 s with the 5 s kill grace and env.json, so the run ends inside 8 minutes; 300 s each on cpu).
# The dry run passes --dry-run-cpu to every step (every code path the GPU run takes except the
# CUDA-only calls, with the fewest repeats) and sets OMP_NUM_THREADS=1 unless it is set: on a
# shared 2-core machine idle OpenMP threads spin-wait, and the dry run checks code, not speed.
# Writes into $OUT (flat, at most 8 files, so the device tool returns them all):
#   env.json, check_cuda.json, bench_average.json, gpu_averager.json, steps.json, run.log
# Each step's JSON is rewritten after every section, with "complete": false until it ends, so a
# step stopped by its time limit keeps what it measured.
# Exit status: 0 when every correctness check passed and every step ran; 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
if [[ ${1:-} == --dry-run-cpu ]]; then DEVICE=cpu; shift; fi
if [[ $# -gt 0 ]]; then echo "run.sh: unknown argument $1 (only --dry-run-cpu)" >&2; exit 2; fi
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-$ROOT/target/gpu-results}
MODELS=${MODELS:-resnet50,vit_b_16}
if [[ $DEVICE != cuda && $DEVICE != cpu ]]; then echo "run.sh: DEVICE must be cuda or cpu, got $DEVICE" >&2; exit 2; fi
if [[ $DEVICE == cpu ]]; then
  T_CHECK=300 T_BENCH=300 T_RUST=300
  MODE=(--dry-run-cpu)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
  T_CHECK=200 T_BENCH=110 T_RUST=140
  MODE=(--device cuda)
fi
if [[ -n ${STEP_TIMEOUT:-} ]]; then T_CHECK=$STEP_TIMEOUT T_BENCH=$STEP_TIMEOUT T_RUST=$STEP_TIMEOUT; fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# A reused OUT (the dry run's) must not show an earlier run's results as this one's.
rm -f "$OUT"/{env,check_cuda,bench_average,gpu_averager,steps}.json "$OUT"/*.json.tmp
exec > >(tee "$OUT/run.log") 2>&1

if [[ -z "${PYTHON:-}" ]]; then
  if [[ "$DEVICE" == cuda && -x /opt/torch/.venv/bin/python3 ]]; then PYTHON=/opt/torch/.venv/bin/python3
  elif [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON=$ROOT/.venv/bin/python
  elif [[ -x /opt/torch/.venv/bin/python3 ]]; then PYTHON=/opt/torch/.venv/bin/python3
  else PYTHON=python3; fi
fi
TORCH_DIR=$("$PYTHON" -c 'import os, torch; print(os.path.dirname(torch.__file__))') || {
  echo "run.sh: $PYTHON cannot import torch" >&2; exit 1; }
export LD_LIBRARY_PATH="$TORCH_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [[ -f target/gpu/libasymvalley.so ]]; then LIB=$ROOT/target/gpu/libasymvalley.so
else LIB=$ROOT/target/release/libasymvalley.so; fi
export ASYMVALLEY_LIBRARY=${ASYMVALLEY_LIBRARY:-$LIB}
export PYTHONPATH="$ROOT/src/python${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
BIN=$ROOT/target/gpu/gpu_averager
# ema-pytorch (a peer of bench_average) is not in the GPU machine's image: build.sh ships the
# dev venv's copy (pure Python) in target/gpu/py, used only where the package is missing.
if ! "$PYTHON" -c 'import ema_pytorch' 2>/dev/null && [[ -d target/gpu/py/ema_pytorch ]]; then
  export PYTHONPATH="$PYTHONPATH:$ROOT/target/gpu/py"
  echo "   ema_pytorch: not installed, using the copy in target/gpu/py"
fi
# NVRTC for the Rust Averager's fused kernel: the launcher looks next to the loaded libtorch
# (<site-packages>/nvidia/cu13); where that folder lacks it, point ASYMVALLEY_CUDA_HOME at a
# wheel folder that has it (lib/libnvrtc.so.13 and include/cuda_bf16.h).
if [[ -z ${ASYMVALLEY_CUDA_HOME:-} && ! -f "$TORCH_DIR/../nvidia/cu13/lib/libnvrtc.so.13" ]]; then
  home=$("$PYTHON" -c '
import os, sys
for p in sys.path:
    c = os.path.join(p, "nvidia", "cu13")
    if os.path.isfile(os.path.join(c, "lib", "libnvrtc.so.13")) and os.path.isfile(os.path.join(c, "include", "cuda_bf16.h")):
        print(c); break' 2>/dev/null)
  if [[ -n $home ]]; then export ASYMVALLEY_CUDA_HOME=$home; fi
  echo "   NVRTC: none next to torch; ASYMVALLEY_CUDA_HOME=${ASYMVALLEY_CUDA_HOME:-(none found: the fused kernel cannot compile)}"
fi

echo "== run.sh: DEVICE=$DEVICE PYTHON=$PYTHON MODELS=$MODELS OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
echo "   $(uptime)"
echo "   torch: $TORCH_DIR"
echo "   ASYMVALLEY_LIBRARY=$ASYMVALLEY_LIBRARY  bench binary: $BIN  OUT=$OUT"
[[ -f target/gpu/build-info.txt ]] && sed 's/^/   build: /' target/gpu/build-info.txt
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv

# env.json: what produced these results.
"$PYTHON" - "$OUT/env.json" "$DEVICE" <<'PY'
import datetime, json, os, platform, subprocess, sys
import torch
out, device = sys.argv[1], sys.argv[2]
info = {
    "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "device": device,
    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    "gpu_count": torch.cuda.device_count(),
    "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
    "python": platform.python_version(), "host": platform.node(), "cpu_count": os.cpu_count(),
    "asymvalley_library": os.environ.get("ASYMVALLEY_LIBRARY"),
}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(sm_count=p.multi_processor_count, total_memory_gib=round(p.total_memory / 2**30, 1))
try:
    info["nvidia_smi"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=20).stdout.strip()
except Exception:
    info["nvidia_smi"] = None
try:
    info["build"] = dict(l.split(": ", 1) for l in open("target/gpu/build-info.txt").read().splitlines())
except OSError:
    info["build"] = None
# What the fused kernel's NVRTC compile will find (src/core/src/shim/cuda.rs), and the peers.
home = os.environ.get("ASYMVALLEY_CUDA_HOME") or os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu13")
home = os.path.realpath(home)
lib = os.path.join(home, "lib")
info["nvrtc"] = {
    "home": home,
    "libnvrtc.so.13": os.path.isfile(os.path.join(lib, "libnvrtc.so.13")),
    "libnvrtc-builtins.so.13.0": os.path.isfile(os.path.join(lib, "libnvrtc-builtins.so.13.0")),
    "builtins_found": sorted(f for f in (os.listdir(lib) if os.path.isdir(lib) else []) if "builtins" in f),
    "include/cuda_bf16.h": os.path.isfile(os.path.join(home, "include", "cuda_bf16.h")),
}
import importlib
info["peers"] = {}
for name in ("torchvision", "timm", "ema_pytorch"):
    try:
        m = importlib.import_module(name)
        info["peers"][name] = {"version": getattr(m, "__version__", "?"), "path": os.path.dirname(m.__file__)}
    except Exception as e:  # noqa: BLE001 - report, the steps say what it costs
        info["peers"][name] = {"missing": f"{type(e).__name__}: {e}"}
info["uptime"] = open("/proc/loadavg").read().strip() if os.path.exists("/proc/loadavg") else None
info["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
json.dump(info, open(out, "w"), indent=2)
print("   env:", json.dumps({k: info[k] for k in ("date_utc", "gpu", "torch", "cuda_runtime", "nvrtc")}))
print("   peers:", json.dumps(info["peers"]))
PY

status=0
STEPS=()
step() {  # step NAME SECONDS CMD...: runs with a timeout, records failure, never stops the script
  local name=$1 limit=$2; shift 2
  echo; echo "=================== $name (at most $limit s) ==================="
  local t0=$SECONDS
  timeout -k 5 "$limit" "$@"
  local rc=$?
  local took=$((SECONDS - t0))
  echo "== $name: exit $rc after $took s"
  if [[ $rc -ne 0 ]]; then status=1; FAILED+=("$name (exit $rc$([[ $rc -eq 124 || $rc -eq 137 ]] && echo ', timed out'))"); fi
  STEPS+=("\"$name\": {\"rc\": $rc, \"seconds\": $took, \"limit_s\": $limit}")
  write_steps
}
write_steps() {  # steps.json: each step's exit status and time (also after a failed step)
  local IFS=,
  echo "{\"device\": \"$DEVICE\", \"steps\": {${STEPS[*]}}, \"total_seconds\": $SECONDS}" > "$OUT/steps.json"
}
FAILED=()

step check_cuda "$T_CHECK" "$PYTHON" benches/gpu/check_cuda.py "${MODE[@]}" --models "$MODELS" --json "$OUT/check_cuda.json"

if [[ -f benches/python/bench_average.py ]]; then
  step bench_average "$T_BENCH" "$PYTHON" benches/python/bench_average.py "${MODE[@]}" --models "$MODELS" --json "$OUT/bench_average.json"
else
  echo; echo "== bench_average: SKIPPED, benches/python/bench_average.py is not in this tree"
  FAILED+=("bench_average (missing)"); status=1
fi

if [[ -x "$BIN" ]]; then
  step gpu_averager "$T_RUST" "$BIN" "${MODE[@]}" --models "$MODELS" --shapes fixtures/param_shapes.json --json "$OUT/gpu_averager.json"
else
  echo; echo "== gpu_averager: SKIPPED, $BIN missing: run benches/gpu/build.sh here and carry target/gpu"
  FAILED+=("gpu_averager (binary missing)"); status=1
fi

write_steps
rm -f "$OUT"/*.json.tmp  # a step killed mid-write leaves its last complete JSON, not the temporary
echo
echo "== run.sh done in $SECONDS s; results in $OUT:"; ls -la "$OUT"
if [[ $status -ne 0 ]]; then echo "run.sh: FAILED steps: ${FAILED[*]}"; else echo "run.sh: all steps passed"; fi
sleep 1  # let tee finish run.log before the device tool collects $OUT
exit $status
