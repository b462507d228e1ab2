"""A refused call changes nothing: memory layouts the op library cannot write, refused up front.

Each case hands one op (or one `torch.classes.asymvalley.Averager` method) a list whose *second*
tensor is unusable: self-overlapping (`as_strided`, `expand`), overlapping another argument, an
inference tensor outside inference mode, a sparse tensor, a dtype the one dtype policy refuses
(float64 into a float32 average), or a `beta` outside the normal float32 range for one dtype
group of a mixed list. Left to ATen, such a call fails part-way:
the first tensor (and a group of another dtype) is already written when the bad one is reached.

Every case runs in its own Python process and prints one JSON line; the test checks that the
process survived, that the exception is a RuntimeError naming the argument (`avg[1]`, `out[1]`,
`n_averaged`, `beta`) and the op, and that no byte of any tensor and no counter changed. The
oracle is the bytes before the call.
"""
import json
import subprocess
import sys
import textwrap

import pytest

PRELUDE = textwrap.dedent("""
    import json
    import torch
    import asymvalley  # loads the op library
    A = torch.classes.asymvalley.Averager
    OPS = torch.ops.asymvalley

    def raw(t):
        t = t.detach()
        if t.layout != torch.strided:
            t = t.to_dense()
        return t.clone().reshape(-1).contiguous().view(torch.uint8).tolist()

    def snap(ts):
        return [raw(t) for t in ts]

    def attempt(fn):
        try:
            fn()
        except Exception as e:
            return {"type": type(e).__name__, "msg": str(e).splitlines()[0]}
        return {"type": None, "msg": ""}

    def refusal(call, tensors, counters=lambda: []):
        before, cb = snap(tensors()), counters()
        out = attempt(call)
        out["unchanged"] = snap(tensors()) == before
        out["counters_unchanged"] = counters() == cb
        return out

    g = torch.Generator().manual_seed(0)
    def r(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=g, dtype=dtype)
""")

# name -> (body that sets `out`, the parts the message must contain)
CASES = {
    "swa_avg_as_strided_self_overlap": ("""
        avg = [r(4, 3), torch.zeros(12).as_strided((3, 3), (1, 1))]
        params, n = [r(4, 3), r(3, 3)], torch.tensor(2)
        out = refusal(lambda: OPS.swa_update_(avg, params, n), lambda: avg + params + [n])
    """, ["avg[1]", "swa_update_", "overlap"]),
    "ema_avg_expand_stride0": ("""
        avg = [r(5), torch.zeros(1).expand(4)]
        params, n = [r(5), r(4)], torch.tensor(2)
        out = refusal(lambda: OPS.ema_update_(avg, params, n, 0.9), lambda: avg + params + [n])
    """, ["avg[1]", "ema_update_", "stride 0"]),
    "swa_avg_as_strided_stride0_first_dim": ("""
        avg = [r(3), torch.zeros(4).as_strided((2, 4), (0, 1))]
        params, n = [r(3), r(2, 4)], torch.tensor(0)   # n = 0: the copy path
        out = refusal(lambda: OPS.swa_update_(avg, params, n), lambda: avg + params + [n])
    """, ["avg[1]", "swa_update_", "stride 0"]),
    "swa_two_avg_overlap": ("""
        base = r(9)
        avg = [r(3), base[0:6], base[3:9]]
        params, n = [r(3), r(6), r(6)], torch.tensor(1)
        out = refusal(lambda: OPS.swa_update_(avg, params, n), lambda: [base, avg[0]] + params + [n])
    """, ["avg[1]", "avg[2]", "share memory"]),
    "ema_param_overlaps_avg": ("""
        base = r(10)
        avg, params = [r(3), base[0:6]], [r(3), base[3:9]]
        n = torch.tensor(1)
        out = refusal(lambda: OPS.ema_update_(avg, params, n, 0.9), lambda: [base, avg[0], params[0], n])
    """, ["avg[1]", "params[1]", "share memory"]),
    "swa_counter_inference_tensor": ("""
        with torch.inference_mode():
            n = torch.tensor(3)
        avg, params = [r(4), r(2, 2)], [r(4), r(2, 2)]
        out = refusal(lambda: OPS.swa_update_(avg, params, n), lambda: avg + params + [n])
    """, ["n_averaged", "swa_update_", "inference"]),
    "ema_avg_inference_tensor": ("""
        with torch.inference_mode():
            bad = torch.randn(2, 2)
        avg, params, n = [r(4), bad], [r(4), r(2, 2)], torch.tensor(3)
        out = refusal(lambda: OPS.ema_update_(avg, params, n, 0.5), lambda: avg + params + [n])
    """, ["avg[1]", "ema_update_", "inference"]),
    "swa_sparse_avg": ("""
        avg, params, n = [r(4), r(5).to_sparse()], [r(4), r(5)], torch.tensor(1)
        out = refusal(lambda: OPS.swa_update_(avg, params, n), lambda: avg + params + [n])
    """, ["avg[1]", "swa_update_", "torch.strided"]),
    "ema_sparse_param": ("""
        avg, params, n = [r(4), r(5)], [r(4), r(5).to_sparse()], torch.tensor(1)
        out = refusal(lambda: OPS.ema_update_(avg, params, n, 0.9), lambda: avg + params + [n])
    """, ["params[1]", "ema_update_", "torch.strided"]),
    "bias_beta_overflows_float32": ("""
        avg = [r(3, dtype=torch.float64), r(3)]
        anchor = [r(3, dtype=torch.float64), r(3)]
        out_ = [torch.zeros(3, dtype=torch.float64), torch.zeros(3)]
        out = refusal(lambda: OPS.bias_toward_flat_(out_, avg, anchor, 1e300), lambda: out_ + avg + anchor)
    """, ["beta", "bias_toward_flat_", "float32"]),
    "swa_float64_param_into_float32_avg": ("""
        avg, params, n = [r(3), r(4)], [r(3), r(4, dtype=torch.float64)], torch.tensor(1)
        out = refusal(lambda: OPS.swa_update_(avg, params, n), lambda: avg + params + [n])
    """, ["params[1]", "swa_update_", "torch.float64", "torch.float32"]),
    "ema_float64_param_into_float32_avg": ("""
        avg, params, n = [r(3), r(4)], [r(3), r(4, dtype=torch.float64)], torch.tensor(1)
        out = refusal(lambda: OPS.ema_update_(avg, params, n, 0.9), lambda: avg + params + [n])
    """, ["params[1]", "ema_update_", "torch.float64", "rounded"]),
    "bias_float64_anchor_of_float32_avg": ("""
        avg, anchor = [r(3), r(4)], [r(3), r(4, dtype=torch.float64)]
        out_ = [torch.zeros(3), torch.zeros(4)]
        out = refusal(lambda: OPS.bias_toward_flat_(out_, avg, anchor, 0.5), lambda: out_ + avg + anchor)
    """, ["anchor[1]", "bias_toward_flat_", "torch.float64"]),
    "bias_beta_below_the_smallest_normal_float32": ("""
        avg = [r(3, dtype=torch.float64), r(3)]
        anchor = [r(3, dtype=torch.float64), r(3)]
        out_ = [torch.zeros(3, dtype=torch.float64), torch.zeros(3)]
        out = refusal(lambda: OPS.bias_toward_flat_(out_, avg, anchor, 1e-40), lambda: out_ + avg + anchor)
    """, ["beta", "bias_toward_flat_", "smallest normal"]),
    "bias_out_as_strided_self_overlap": ("""
        avg, anchor = [r(3), r(2, 2)], [r(3), r(2, 2)]
        out_ = [torch.zeros(3), torch.zeros(4).as_strided((2, 2), (1, 1))]
        out = refusal(lambda: OPS.bias_toward_flat_(out_, avg, anchor, 0.5), lambda: out_ + avg + anchor)
    """, ["out[1]", "bias_toward_flat_", "overlap"]),
    "averager_copy_to_expand": ("""
        a = A("swa", 0.9, "none", 1.0, 0.75, 0.0, 0, 1)
        a.update([r(3), r(4)])
        model = [torch.zeros(3), torch.zeros(1).expand(4)]
        out = refusal(lambda: a.copy_to(model), lambda: model + a.average(), lambda: [a.steps(), a.n_averaged()])
    """, ["params[1]", "Averager.copy_to", "stride 0"]),
    "averager_swap_inference_tensor": ("""
        a = A("ema", 0.9, "none", 1.0, 0.75, 0.0, 0, 1)
        a.update([r(3), r(4)])
        with torch.inference_mode():
            bad = torch.randn(4)
        model = [torch.zeros(3), bad]
        out = refusal(lambda: a.swap(model), lambda: model + a.average(), lambda: [a.steps(), a.n_averaged()])
    """, ["params[1]", "Averager.swap", "inference"]),
    "averager_update_sparse_param": ("""
        a = A("swa", 0.9, "none", 1.0, 0.75, 0.0, 0, 1)
        a.update([r(3), r(4)])
        params = [r(3), r(4).to_sparse()]
        out = refusal(lambda: a.update(params), lambda: params + a.average(), lambda: [a.steps(), a.n_averaged()])
    """, ["params[1]", "Averager.update", "torch.strided"]),
}


def run(body, timeout=120):
    code = PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"process died (rc={proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", list(CASES))
def test_unusable_layout_is_refused_up_front_and_changes_nothing(case):
    body, parts = CASES[case]
    r = run(body)
    assert r["type"] == "RuntimeError", r
    for p in parts:
        assert p in r["msg"], (p, r["msg"])
    assert r["unchanged"], f"a tensor was modified by the refused call: {r['msg']}"
    assert r["counters_unchanged"], r


def test_usable_views_are_still_accepted_and_match_torch():
    """The checks refuse only what cannot be written: a strided non-contiguous view (a transpose,
    a slice with a step) is updated, and equals torch's own lerp on the same view; inside
    torch.inference_mode() an inference tensor may be updated."""
    r = run("""
        avg = [r(3, 8).t(), r(5, 3)[::2]]         # a transpose; a slice with a step (stride 6, 1)
        params = [r(8, 3), r(3, 3)]
        ref = [a.clone() for a in avg]
        n = torch.tensor(3)
        OPS.swa_update_(avg, params, n)
        torch._foreach_lerp_(ref, params, 0.25)
        ok_views = all(torch.equal(a, b) for a, b in zip(avg, ref)) and int(n) == 4
        with torch.inference_mode():
            ia, ip, inn = [torch.zeros(3)], [torch.ones(3)], torch.tensor(1)
            OPS.ema_update_(ia, ip, inn, 0.75)
        out = {"views": ok_views, "inference": ia[0].tolist(), "n": int(inn)}
    """)
    assert r["views"]
    assert r["inference"] == pytest.approx([0.25] * 3) and r["n"] == 2


def test_bias_out_aliasing_an_input_of_another_dtype_group_reads_the_old_values():
    """`out` may alias `avg`/`anchor`; with two dtype groups, the first group's `out` is the
    second group's `avg`: every group is computed before anything is written, so the result is
    the closed form on the inputs as they were."""
    r = run("""
        x64, y32 = r(3, dtype=torch.float64), r(3)
        avg, anchor = [x64, y32], [r(3, dtype=torch.float64), r(3)]
        want = [a + 0.5 * (a - c) for a, c in zip(avg, anchor)]
        out_ = [y32, torch.zeros(3)]               # out[0] (written as the float64 group) is avg[1]
        want1 = want[1].clone()
        OPS.bias_toward_flat_(out_, avg, anchor, 0.5)
        out = {"dev0": float((out_[0].double() - want[0]).abs().max()),
               "dev1": float((out_[1] - want1).abs().max())}
    """)
    assert r["dev0"] < 1e-6 and r["dev1"] < 1e-6, r


def test_beta_at_the_float32_limits_is_accepted_and_matches_the_formula():
    """The edges of the accepted range for a float32 average, [2^-126, FLT_MAX], and 0: each
    gives avg + beta (avg - anchor) as float64 computes it, rounded to float32 (a kernel that
    flushed the small beta or overflowed the large one would be off by far more than 1 ulp)."""
    r = run("""
        import math
        fmin, fmax = torch.finfo(torch.float32).tiny, torch.finfo(torch.float32).max
        anchor = [torch.tensor([1.0, -2.0, 0.25])]
        avg = [anchor[0] + 2.0 ** -20]              # avg - anchor = 2^-20 exactly
        gaps = {}
        for beta in (0.0, fmin, 1.0, 1e30, fmax):
            out_ = [torch.zeros(3)]
            OPS.bias_toward_flat_(out_, avg, anchor, beta)
            a, c = avg[0].double(), anchor[0].double()
            want = (a + beta * (a - c)).float()
            ok = bool(torch.isfinite(out_[0]).all())
            gaps[repr(beta)] = [ok, float(((out_[0].double() - want.double()).abs()
                                           / want.double().abs().clamp_min(1e-30)).max())]
        out = gaps
    """)
    for beta, (finite, rel) in r.items():
        assert finite and rel <= 2 ** -23, (beta, rel)


def test_float64_params_into_a_float64_avg_and_half_into_float32_still_work():
    """What the one dtype policy keeps: float32/float16/bfloat16 params into a float64 average,
    and float16/bfloat16 params into a float32 one, each equal to torch.lerp on the params
    widened to the average's dtype."""
    r = run("""
        ok = {}
        for adt, pdt in [(torch.float64, torch.float32), (torch.float64, torch.bfloat16),
                         (torch.float32, torch.float16), (torch.float32, torch.bfloat16),
                         (torch.float64, torch.float64)]:
            avg, p = [r(5, dtype=adt)], [r(5).to(pdt)]
            ref = [avg[0].clone()]
            n = torch.tensor(3)
            OPS.swa_update_(avg, p, n)
            torch._foreach_lerp_(ref, [p[0].to(adt)], 0.25)
            ok[f"{adt}<-{pdt}"] = torch.equal(avg[0], ref[0]) and int(n) == 4
        out = ok
    """)
    assert all(r.values()), r
