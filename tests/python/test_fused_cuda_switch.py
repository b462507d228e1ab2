"""The switch of the op library's fused CUDA path (`ASYMVALLEY_OP_FUSED_CUDA`, off by default;
`torch.ops.asymvalley._set_fused_cuda`) on a machine without a GPU: how the variable is read (in
child processes, since it is read once per process), and that on the CPU the switch changes
nothing: the fused CPU pass still runs (counted by `_fused_cpu_passes`), the values still equal
`torch.lerp`, and no CUDA launch is made. The kernel itself is checked by benches/gpu/run.sh.
"""
import os
import subprocess
import sys

import pytest
import torch

import asymvalley  # noqa: F401  (loads the op library)

OPS = torch.ops.asymvalley


def _child(value):
    """`_fused_cuda()` in a fresh process with the variable set to `value` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "ASYMVALLEY_OP_FUSED_CUDA"}
    if value is not None:
        env["ASYMVALLEY_OP_FUSED_CUDA"] = value
    code = (
        "import torch, asymvalley\n"
        "try:\n"
        "    print('on' if torch.ops.asymvalley._fused_cuda() else 'off')\n"
        "except RuntimeError as e:\n"
        "    print('error:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_the_variable_is_off_unless_asked_for_and_a_typo_is_refused_by_name():
    assert _child(None) == "off"
    assert _child("0") == "off"
    assert _child("1") == "on"
    assert _child("true") == "on"
    got = _child("maybe")
    assert got.startswith("error:"), got
    assert "ASYMVALLEY_OP_FUSED_CUDA" in got and "maybe" in got and "expected" in got, got


def test_set_fused_cuda_overrides_and_the_cpu_path_is_unchanged():
    before = OPS._fused_cuda()
    torch.manual_seed(0)
    shapes = [(3,), (4097,), (5, 7)]
    try:
        for on in (True, False):
            OPS._set_fused_cuda(on)
            assert OPS._fused_cuda() is on
            avg = [torch.randn(s) for s in shapes]
            params = [torch.randn(s) for s in shapes]
            want = [torch.lerp(a, p, 1.0 / 3.0) for a, p in zip(avg, params)]
            n = torch.tensor(2)
            passes, launches = OPS._fused_cpu_passes(), OPS._fused_cuda_launches()
            OPS.swa_update_(avg, params, n)
            assert OPS._fused_cpu_passes() == passes + 1, "the CPU call took the fused CPU pass"
            assert OPS._fused_cuda_launches() == launches == 0, "no CUDA launch on the CPU"
            assert int(n) == 3
            for a, w in zip(avg, want):
                assert torch.equal(a, w)
    finally:
        OPS._set_fused_cuda(before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the GPU run checks the kernel)")
def test_cuda_switch_on_launches_once_per_update():
    before = OPS._fused_cuda()
    try:
        OPS._set_fused_cuda(True)
        avg = [torch.zeros(s, device="cuda") for s in [(3,), (4097,)]]
        params = [torch.randn(s, device="cuda") for s in [(3,), (4097,)]]
        launches = OPS._fused_cuda_launches()
        OPS.swa_update_(avg, params, torch.tensor(0))
        assert OPS._fused_cuda_launches() == launches + 1
        for a, p in zip(avg, params):
            assert torch.equal(a, p)
    finally:
        OPS._set_fused_cuda(before)
