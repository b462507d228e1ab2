"""torch.ops.asymvalley.*: opcheck, torch.compile, TorchScript, and bad inputs."""
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.optim import swa_utils

import asymvalley

OPS = torch.ops.asymvalley
ROOT = pathlib.Path(__file__).resolve().parents[2]


def lists(dtype=torch.float32, n=3):
    g = torch.Generator().manual_seed(n)
    shapes = [(4, 3), (5,), (2, 2, 2)][:n]
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes], [torch.randn(s, generator=g, dtype=dtype) for s in shapes]


@pytest.mark.parametrize("n0", [0, 3])
def test_opcheck_every_op(n0):
    avg, params = lists()
    torch.library.opcheck(OPS.swa_update_.default, (avg, params, torch.tensor(n0)))
    avg, params = lists()
    torch.library.opcheck(OPS.ema_update_.default, (avg, params, torch.tensor(n0), 0.9))
    avg, anchor = lists()
    out = [torch.empty_like(a) for a in avg]
    torch.library.opcheck(OPS.bias_toward_flat_.default, (out, avg, anchor, 0.5))


def test_ops_match_torch_formulas():
    avg, params = lists(torch.float64)
    ref = [a.clone() for a in avg]
    n = torch.tensor(2)
    OPS.ema_update_(avg, params, n, 0.75)
    swa_utils.get_ema_multi_avg_fn(0.75)(ref, params, None)
    assert all(torch.equal(a, r) for a, r in zip(avg, ref)) and int(n) == 3
    out = [torch.empty_like(a) for a in avg]
    anchor = [p + 1 for p in params]
    OPS.bias_toward_flat_(out, avg, anchor, 0.5)
    for o, a, c in zip(out, avg, anchor):
        torch.testing.assert_close(o, a + 0.5 * (a - c))
    before = [a.clone() for a in avg]
    OPS.bias_toward_flat_(avg, avg, anchor, 0.0)  # out may be avg itself; beta = 0 leaves it
    for a, b in zip(avg, before):
        torch.testing.assert_close(a, b)


def test_mixed_dtype_groups_match_the_widened_reference():
    """avg fp32/fp64/bf16 with params bf16/fp64/fp16/bf16/fp32: regrouped by dtype, converted by
    one _foreach_copy_ per group; the first call copies (converting), later ones lerp exactly like
    lerping the widened params."""
    g = torch.Generator().manual_seed(7)
    dtypes = [(torch.float32, torch.bfloat16), (torch.float64, torch.float64),
              (torch.float32, torch.float16), (torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32)]
    avg = [torch.randn(3, 2, generator=g).to(a) for a, _ in dtypes]
    n = torch.tensor(0)
    for step in range(3):
        params = [torch.randn(3, 2, generator=g).to(p) for _, p in dtypes]
        ref = [a.clone() for a in avg]
        OPS.ema_update_(avg, params, n, 0.75)
        for r, p in zip(ref, params):
            r.copy_(p) if step == 0 else r.lerp_(p.to(r.dtype), 0.25)
        for a, r in zip(avg, ref):
            assert a.dtype == r.dtype and torch.equal(a, r)
    assert int(n) == 3


def test_torch_compile_fullgraph_inductor_cpu():
    avg, params = lists(n=2)
    ref = [a.clone() for a in avg]
    n = torch.tensor(1)

    @torch.compile(fullgraph=True, backend="inductor")
    def step(avg, params, n):
        OPS.ema_update_(avg, params, n, 0.9)
        return avg[0] * 2

    out = step(avg, params, n)
    torch._foreach_lerp_(ref, params, 0.1)
    assert all(torch.equal(a, r) for a, r in zip(avg, ref))
    assert torch.equal(out, ref[0] * 2) and int(n) == 2


def run_fresh(code: str) -> str:
    """Runs `code` in a fresh interpreter that imports asymvalley; returns its stdout."""
    prog = "import torch, asymvalley\n" + textwrap.dedent(code)
    res = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_scripted_function_and_module_survive_save_and_load_in_a_fresh_process(tmp_path):
    @torch.jit.script
    def scripted_swa(avg: list[torch.Tensor], params: list[torch.Tensor], n: torch.Tensor) -> torch.Tensor:
        torch.ops.asymvalley.swa_update_(avg, params, n)
        return n

    avg = [torch.zeros(3)]
    n = torch.tensor(0)
    for v in (1.0, 2.0, 6.0):
        scripted_swa(avg, [torch.full((3,), v)], n)
    assert torch.equal(avg[0], torch.full((3,), 3.0)) and int(n) == 3

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.averager = torch.classes.asymvalley.Averager("ema", 0.9, "tf", 1.0, 0.75, 0.0, 1, 1)

        def forward(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
            self.averager.update(params)
            return self.averager.average()

    g = torch.Generator().manual_seed(0)
    snaps = [[torch.randn(2, 3, generator=g), torch.randn(4, generator=g)] for _ in range(5)]
    module = torch.jit.script(Holder())
    for s in snaps[:3]:
        module(s)
    path = tmp_path / "holder.pt"
    module.save(str(path))
    torch.save(snaps, tmp_path / "snaps.pt")
    scripted_swa.save(str(tmp_path / "fn.pt"))
    # Continue in a fresh process; compare with continuing here.
    for s in snaps[3:]:
        want = module(s)
    torch.save(want, tmp_path / "want.pt")
    out = run_fresh(f"""
        m = torch.jit.load({str(path)!r})
        snaps = torch.load({str(tmp_path / 'snaps.pt')!r})
        for s in snaps[3:]:
            got = m(s)
        want = torch.load({str(tmp_path / 'want.pt')!r})
        assert all(torch.equal(a, b) for a, b in zip(got, want)), (got, want)
        assert m.averager.n_averaged() == 4 and m.averager.steps() == 5
        f = torch.jit.load({str(tmp_path / 'fn.pt')!r})
        avg, n = [torch.zeros(2)], torch.tensor(0)
        f(avg, [torch.ones(2)], n); f(avg, [torch.full((2,), 3.0)], n)
        assert torch.equal(avg[0], torch.full((2,), 2.0)) and int(n) == 2
        print("ok")
    """)
    assert out.strip() == "ok"


def test_averager_ema_tf_warmup_matches_closed_form():
    a = torch.classes.asymvalley.Averager("ema", 0.999, "tf", 1.0, 0.75, 0.0, 2, 2)
    g = torch.Generator().manual_seed(1)
    ref = None
    for s in range(9):
        p = [torch.randn(3, generator=g)]
        a.update(p)
        if s < 2:
            ref = p[0].clone()  # mirror before update_after_step
        elif (s - 2) % 2 == 0:
            t = s - 2
            if t == 0:
                ref = p[0].clone()  # first averaging copies
            else:
                d = min(0.999, (1 + t) / (10 + t))
                ref = ref.lerp(p[0], 1 - d)
    torch.testing.assert_close(a.average()[0], ref)
    assert a.steps() == 9 and a.n_averaged() == 4
    model = [torch.zeros(3, dtype=torch.bfloat16)]
    a.swap(model)
    assert torch.equal(model[0], ref.to(torch.bfloat16))
    a.copy_to(model)


BAD_CASES = r'''
import torch, asymvalley
OPS = torch.ops.asymvalley
def good():
    return [torch.ones(2, 3), torch.ones(4)], [torch.zeros(2, 3), torch.zeros(4)]
cases = {
    "length": lambda a, p: OPS.swa_update_(a, p[:1], torch.tensor(1)),
    "empty": lambda a, p: OPS.swa_update_([], [], torch.tensor(1)),
    "shape": lambda a, p: OPS.swa_update_(a, [p[0], torch.zeros(5)], torch.tensor(1)),
    "dtype": lambda a, p: OPS.swa_update_(a, [p[0].int(), p[1]], torch.tensor(1)),
    "half avg": lambda a, p: OPS.swa_update_([a[0].bfloat16(), a[1].bfloat16()], p, torch.tensor(1)),
    "int avg": lambda a, p: OPS.ema_update_([a[0].long(), a[1]], p, torch.tensor(1), 0.9),
    "device": lambda a, p: OPS.swa_update_(a, [p[0].to("meta"), p[1]], torch.tensor(1)),
    "counter float": lambda a, p: OPS.swa_update_(a, p, torch.tensor(1.0)),
    "counter 1-d": lambda a, p: OPS.swa_update_(a, p, torch.tensor([1])),
    "decay 0": lambda a, p: OPS.ema_update_(a, p, torch.tensor(1), 0.0),
    "decay 1.5": lambda a, p: OPS.ema_update_(a, p, torch.tensor(1), 1.5),
    "decay nan": lambda a, p: OPS.ema_update_(a, p, torch.tensor(1), float("nan")),
    "alias": lambda a, p: OPS.swa_update_(a, [a[0], p[1]], torch.tensor(1)),
    "alias view": lambda a, p: OPS.swa_update_(a, [p[0], a[0].view(-1)[:4]], torch.tensor(1)),
    "duplicate avg": lambda a, p: OPS.swa_update_([a[0], a[0]], [p[0], p[0]], torch.tensor(1)),
    "bias length": lambda a, p: OPS.bias_toward_flat_(p[:1], a, p, 0.5),
    "bias beta": lambda a, p: OPS.bias_toward_flat_(p, a, p, float("inf")),
    "averager mode": lambda a, p: torch.classes.asymvalley.Averager("sma", 0.9, "none", 1.0, 0.75, 0.0, 0, 1),
    "averager every": lambda a, p: torch.classes.asymvalley.Averager("ema", 0.9, "none", 1.0, 0.75, 0.0, 0, 0),
    "averager decay": lambda a, p: torch.classes.asymvalley.Averager("ema", 1.0, "tf", 1.0, 0.75, 0.0, 0, 1),
    "averager shape": lambda a, p: (lambda x: (x.update(p), x.update([p[0], torch.zeros(3)])))(torch.classes.asymvalley.Averager()),
    "averager before update": lambda a, p: torch.classes.asymvalley.Averager().copy_to(p),
}
for name, fn in cases.items():
    a, p = good()
    before = [t.clone() for t in a + p]
    try:
        fn(a, p)
    except RuntimeError as e:
        msg = str(e).splitlines()[0]
        assert all(torch.equal(x, y) for x, y in zip(a + p, before)), name + ": modified"
        print(name, "|", msg)
    else:
        print(name, "| NO ERROR")
print("alive")
'''


def test_every_bad_input_raises_a_clear_error_and_modifies_nothing():
    out = run_fresh(BAD_CASES.replace("import torch, asymvalley\n", "", 1))
    lines = dict(l.split(" | ", 1) for l in out.strip().splitlines()[:-1])
    assert out.strip().endswith("alive")
    assert "NO ERROR" not in out, out
    expect = {
        "length": ["params has 1 tensors but avg has 2"],
        "empty": ["avg", "empty list", "at least one tensor"],
        "shape": ["params[1]", "[5]", "[4]"],
        "dtype": ["params[0]", "torch.int32", "floating-point"],
        "half avg": ["params[0]", "torch.float32", "torch.bfloat16"],
        "int avg": ["avg[0]", "torch.int64"],
        "device": ["params[0]", "meta", "cpu"],
        "counter float": ["n_averaged", "torch.float32", "0-dim integer"],
        "counter 1-d": ["n_averaged", "[1]", "0-dim integer"],
        "decay 0": ["decay = 0", "(0, 1)"],
        "decay 1.5": ["decay = 1.5", "(0, 1)"],
        "decay nan": ["decay = NaN"],
        "alias": ["avg[0]", "params[0]", "share memory"],
        "alias view": ["share memory"],
        "duplicate avg": ["avg[0]", "avg[1]", "share memory"],
        "bias length": ["out has 1 tensors but avg has 2"],
        "bias beta": ["beta = inf", "finite"],
        "averager mode": ["mode", "\"sma\""],
        "averager every": ["update_every = 0"],
        "averager decay": ["decay = 1"],
        "averager shape": ["params[1]", "[3]", "[4]"],
        "averager before update": ["no average yet"],
    }
    for name, parts in expect.items():
        for part in parts:
            assert part in lines[name], (name, lines[name])


def test_library_path_error_is_clear(tmp_path):
    res = subprocess.run(
        [sys.executable, "-c", "import asymvalley"],
        capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "ASYMVALLEY_LIBRARY": str(tmp_path / "missing.so")},
    )
    assert res.returncode != 0 and "op library not found" in res.stderr and "make oplib" in res.stderr
