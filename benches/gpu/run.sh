#!/usr/bin/env bash
# The ONE command to run on the GPU machine (issue 6). See benches/gpu/README.md.
#
#   benches/gpu/run.sh                 # GPU machine: torch at /opt/torch/.venv, results in $OUT
#   DEVICE=cpu benches/gpu/run.sh      # dry run of the same steps on a CPU, with this repo's .venv
#   benches/gpu/run.sh --dry-run-cpu   # the same dry run
#
# Needs target/gpu/ from benches/gpu/build.sh (built on the dev machine, shipped with carry).
# Environment: DEVICE (cuda|cpu, default cuda), PYTHON (default /opt/torch/.venv/bin/python3 if
# present, else .venv/bin/python, else python3), OUT (default target/gpu-results), MODELS
# (default resnet50,vit_b_16), STEP_TIMEOUT (seconds for every step, overriding the defaults:
# on cuda 210 s for check_cuda, 110 s for bench_average, 140 s for gpu_averager, 460 s in all, so
# the run ends inside 8 minutes; 900 s each on cpu).
# Writes into $OUT (flat, at most 8 files, so the device tool returns them all):
#   env.json, check_cuda.json, bench_average.json, gpu_averager.json, run.log
# Exit status: 0 when every correctness check passed and every step ran; 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
if [[ ${1:-} == --dry-run-cpu ]]; then DEVICE=cpu; shift; fi
if [[ $# -gt 0 ]]; then echo "run.sh: unknown argument $1 (only --dry-run-cpu)" >&2; exit 2; fi
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-$ROOT/target/gpu-results}
MODELS=${MODELS:-resnet50,vit_b_16}
if [[ $DEVICE == cpu ]]; then T_CHECK=900 T_BENCH=900 T_RUST=900; else T_CHECK=210 T_BENCH=110 T_RUST=140; fi
if [[ -n ${STEP_TIMEOUT:-} ]]; then T_CHECK=$STEP_TIMEOUT T_BENCH=$STEP_TIMEOUT T_RUST=$STEP_TIMEOUT; fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
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

echo "== run.sh: DEVICE=$DEVICE PYTHON=$PYTHON"
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
json.dump(info, open(out, "w"), indent=2)
print("   env:", json.dumps({k: info[k] for k in ("date_utc", "gpu", "torch", "cuda_runtime")}))
PY

status=0
step() {  # step NAME SECONDS CMD...: runs with a timeout, records failure, never stops the script
  local name=$1 limit=$2; shift 2
  echo; echo "=================== $name (at most $limit s) ==================="
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@"
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  if [[ $rc -ne 0 ]]; then status=1; FAILED+=("$name (exit $rc)"); fi
}
FAILED=()

step check_cuda "$T_CHECK" "$PYTHON" benches/gpu/check_cuda.py --device "$DEVICE" --models "$MODELS" --json "$OUT/check_cuda.json"

if [[ -f benches/python/bench_average.py ]]; then
  step bench_average "$T_BENCH" "$PYTHON" benches/python/bench_average.py --device "$DEVICE" --json "$OUT/bench_average.json"
else
  echo; echo "== bench_average: SKIPPED, benches/python/bench_average.py is not in this tree"
  FAILED+=("bench_average (missing)"); status=1
fi

if [[ -x "$BIN" ]]; then
  step gpu_averager "$T_RUST" "$BIN" --device "$DEVICE" --models "$MODELS" --shapes fixtures/param_shapes.json --json "$OUT/gpu_averager.json"
else
  echo; echo "== gpu_averager: SKIPPED, $BIN missing: run benches/gpu/build.sh here and carry target/gpu"
  FAILED+=("gpu_averager (binary missing)"); status=1
fi

echo
echo "== run.sh done in $SECONDS s; results in $OUT:"; ls -la "$OUT"
if [[ $status -ne 0 ]]; then echo "run.sh: FAILED steps: ${FAILED[*]}"; else echo "run.sh: all steps passed"; fi
sleep 1  # let tee finish run.log before the device tool collects $OUT
exit $status
