"""The prepared GPU run's main script cannot rot: ``benches/gpu/check_cuda.py --dry-run-cpu``
runs in CI on the small conv/BN/linear net (``--models tiny --check-shapes tiny``, a few
seconds), through every section the CUDA run has (ops, AveragedModel, the sync-check calls, the
graph sequence, the cost section with the profiler count and a training step), and writes the
JSON the GPU run's reader expects.

Oracles: the script compares with ``torch.optim.swa_utils`` (PyTorch itself); the parameter count
is the closed form of the net (conv 16x3x3x3 + 16, BatchNorm 16 + 16, linear 10x576 + 10 = 6250);
and a mutant run, with ``ema_update_`` given the wrong decay, must fail those checks and exit 1,
so the checks this test relies on can fail.

The script runs as it runs on the GPU machine: ``src/python`` on its path, the op library named
by ``ASYMVALLEY_LIBRARY`` (here the installed package's, the one this test process loaded).
"""
import json
import math
import os
import pathlib
import subprocess
import sys

import asymvalley

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benches" / "gpu" / "check_cuda.py"
TINY = ["--dry-run-cpu", "--models", "tiny", "--check-shapes", "tiny"]
# small_net: Conv2d(3, 16, 3), BatchNorm2d(16), Linear(16 * 36, 10).
TINY_PARAMS = 16 * 3 * 3 * 3 + 16 + 16 + 16 + 10 * 16 * 36 + 10
TINY_TENSORS = 6


def _env():
    env = dict(os.environ)
    env["ASYMVALLEY_LIBRARY"] = str(asymvalley.loaded_library())
    # One thread: on a loaded 2-core machine idle OpenMP threads spin (see conftest.one_thread).
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(args, tmp_path, prelude=None):
    out = tmp_path / "check_cuda.json"
    argv = [str(SCRIPT), *args, "--json", str(out)]
    if prelude is None:
        cmd = [sys.executable, *argv]
    else:  # run the script after `prelude` (a patch), in the same interpreter
        code = (
            f"import runpy, sys\nsys.path.insert(0, {str(ROOT / 'src' / 'python')!r})\n{prelude}\n"
            f"sys.argv = {argv!r}\nrunpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
        )
        cmd = [sys.executable, "-c", code]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240, cwd=ROOT)
    report = json.loads(out.read_text()) if out.exists() else None
    return proc, report


def test_dry_run_passes_every_section_and_writes_the_expected_json(tmp_path):
    proc, r = _run(TINY, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert r is not None
    assert r["device"] == "cpu" and r["dry_run"] is True and r["gpu"] is None
    assert r["complete"] is True and r["all_checks_ok"] is True
    assert r["library"] == str(asymvalley.loaded_library())
    for key in ("ops", "averaged_model", "sync_debug", "cuda_graph", "cost"):
        assert key in r["section_seconds"], key

    # 1. ops: swa/ema x fp32/bf16 params (host counter on the CPU) + bias_toward_flat_.
    names = [e["name"] for e in r["ops"]]
    assert len(names) == 5 and names[-1].startswith("op bias_toward_flat_")
    for e in r["ops"]:
        assert e["ok"] is True and "error" not in e, e
        assert e["max_violation"] <= 0 and e["max_abs_diff"] <= 1e-5, e
    # 2. AveragedModel: swa/ema x fp32/bf16 model x use_buffers.
    assert len(r["averaged_model"]) == 8
    for e in r["averaged_model"]:
        assert e["ok"] and e["module_is_rounded_state"] and e["integer_buffers_equal_model"], e
    # 3. sync: on the CPU every call ran (no error) without the detector: 8 AveragedModels,
    # the ops (2 dtypes x 2 counters) and PyTorch's control.
    assert len(r["sync_debug"]) == 8 + 4 + 1
    for e in r["sync_debug"]:
        assert e["ok"] is True and "error" not in e and e["skipped"].startswith("needs CUDA"), e
    # 3b. graph sequence: ema/swa x fp32/bf16, 3 updates after the 2 warm-up ones, exact.
    assert len(r["cuda_graph"]) == 4
    for e in r["cuda_graph"]:
        assert e["ok"] and e["replays"] == 3 and e["max_abs_diff"] == 0.0, e

    # 1f/3f/3bf. The same checks with the fused CUDA path switched on, and one more record: on the
    # CPU the switch must launch nothing (on CUDA: at least one launch).
    for key, base in (("ops_fused_cuda", "ops"), ("sync_debug_fused_cuda", "sync_debug"),
                      ("cuda_graph_fused_cuda", "cuda_graph")):
        assert len(r[key]) == len(r[base]) + 1, key
        assert all(e["ok"] for e in r[key]), r[key]
        assert r[key][-1]["name"].startswith("fused CUDA kernel launched") and r[key][-1]["launches"] == 0

    # 4. cost: one model, the closed-form size, every timing a positive number.
    (c,) = r["cost"]
    assert "error" not in c, c.get("error")
    assert c["model"] == "tiny" and c["params"] == TINY_PARAMS and c["tensors"] == TINY_TENSORS
    expected = {
        "floor_copy_12B", "floor_copy_10B", "raw_foreach_lerp", "op_ema_update_", "op_swa_update_",
        "op_ema_update_bf16_params", "torch_AveragedModel_swa", "torch_AveragedModel_ema",
        "ours_AveragedModel_swa", "ours_AveragedModel_ema",
        # the same op calls with the fused CUDA path switched on (on the CPU: the same CPU pass)
        "op_ema_update__fused_cuda", "op_swa_update__fused_cuda", "op_ema_update_bf16_params_fused_cuda",
    }
    assert set(c["ms"]) == expected
    assert all(math.isfinite(v) and v > 0 for v in c["ms"].values()), c["ms"]
    assert c["ratio_to_floor"]["floor_copy_12B"] == 1.0
    # The profiler ran (CPU operator events on the CPU; device events on CUDA).
    counts = c["cpu_profiler_events_per_call"]
    assert set(counts) == {"op_ema_update_", "raw_foreach_lerp", "torch_AveragedModel_ema", "ours_AveragedModel_ema"}
    assert all(isinstance(v, int) and v > 0 for v in counts.values()), counts
    # The training step ran at the dry run's batch.
    t = c["train"]
    assert "skipped" not in t, t
    assert t["batch"] == 2 and t["image"] == 8 and t["step_ms"] > 0
    assert {"torch_ema_fraction", "ours_ema_fraction", "torch_ema_loop_fraction", "ours_ema_loop_fraction"} <= set(t)
    # The targets are only computed for the models.
    assert r["targets"] == {}


def test_a_wrong_ema_op_fails_the_checks_and_the_exit_status(tmp_path):
    # The op with half its decay: EMA averages differ from PyTorch's, SWA ones do not.
    prelude = (
        "import torch, asymvalley\n"
        "real = torch.ops.asymvalley.ema_update_\n"
        "torch.ops.asymvalley.ema_update_ = lambda avg, p, n, decay: real(avg, p, n, decay * 0.5)\n"
    )
    proc, r = _run([*TINY, "--no-timing"], tmp_path, prelude)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert r["all_checks_ok"] is False and r["complete"] is True
    ops = {e["name"]: e for e in r["ops"]}
    ema = [e for n, e in ops.items() if n.startswith("op ema_update_")]
    swa = [e for n, e in ops.items() if n.startswith("op swa_update_")]
    assert len(ema) == 2 and len(swa) == 2
    assert all(not e["ok"] and e["max_violation"] > 0 for e in ema), ema
    assert all(e["ok"] for e in swa), swa
    assert "cost" not in r  # --no-timing
