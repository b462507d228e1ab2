"""The op library's fused CPU pass: the values against PyTorch's own `torch.lerp`, `Tensor.to` and
`torch.add(alpha=)` (bitwise), and which path each call takes, counted by
`torch.ops.asymvalley._fused_cpu_passes()` (one per fused pass; the `_foreach` fallback adds none).

The shapes cover 1-element tensors, tails that are not a multiple of the 4-element alignment or
of the 4096-element block, tensors spanning several blocks, empty ones, and the ResNet-50 /
ViT-B/16 parameter lists of fixtures/param_shapes.json scaled down.
"""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch

import asymvalley

OPS = torch.ops.asymvalley
ROOT = pathlib.Path(__file__).resolve().parents[2]
SHAPES = [(1,), (3,), (5, 7), (0,), (4095,), (4096,), (4097,), (2, 3, 5), (8191,), (1, 1), (13, 17, 3)]
PARAM_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
AVG_DTYPES = [torch.float32, torch.float64]


def allowed(avg_dtype):
    """The one dtype policy (validate.cpp): a float64 average takes any floating source, a float32
    one float32 and the half types (float64 into float32 is refused; test_ops_refusals.py)."""
    return PARAM_DTYPES if avg_dtype == torch.float64 else [torch.float32, torch.bfloat16, torch.float16]


def sources_for(avg_dtypes):
    """A source dtype per average, cycling through every dtype its average accepts."""
    return [allowed(a)[(i // 2) % len(allowed(a))] for i, a in enumerate(avg_dtypes)]


PAIRS = [(a, p) for a in AVG_DTYPES for p in PARAM_DTYPES if p in allowed(a)]


def passes():
    return OPS._fused_cpu_passes()


def rand(shapes, dtypes, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(d) for s, d in zip(shapes, dtypes)]


def cycle(dtypes, n):
    return [dtypes[i % len(dtypes)] for i in range(n)]


def lerp_ref(avg, params, weight):
    """PyTorch's lerp of each average towards its parameter, widened to the average's dtype first."""
    return [torch.lerp(a, p.to(a.dtype), weight) for a, p in zip(avg, params)]


def assert_bitwise(got, want):
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape, i
        # Bitwise, NaN-safe: compare the raw bits.
        assert torch.equal(g.reshape(-1).contiguous().view(torch.uint8), w.reshape(-1).contiguous().view(torch.uint8)), (
            f"tensor {i} {tuple(g.shape)} {g.dtype}: max |diff| {(g.double() - w.double()).abs().max().item()}"
        )


def scaled_fixture(name, div):
    shapes = json.loads((ROOT / "fixtures" / "param_shapes.json").read_text())[name]
    return [tuple(max(1, d // div) for d in s) for s in shapes]


@pytest.mark.parametrize("avg_dtype,param_dtype", PAIRS)
@pytest.mark.parametrize("n", [1, 3])  # SWA weights 1/2 (the `w >= 0.5` branch) and 1/4
def test_swa_update_is_one_fused_pass_equal_to_torch_lerp(avg_dtype, param_dtype, n):
    avg = rand(SHAPES, [avg_dtype] * len(SHAPES), 1)
    params = rand(SHAPES, [param_dtype] * len(SHAPES), 2)
    want = lerp_ref(avg, params, 1.0 / (n + 1))
    count = torch.tensor(n)
    before = passes()
    OPS.swa_update_(avg, params, count)
    assert passes() - before == 1
    assert int(count) == n + 1
    assert_bitwise(avg, want)


@pytest.mark.parametrize("decay", [0.999, 0.3])  # weights 0.001 and 0.7: both branches of the lerp
def test_ema_update_mixed_dtypes_in_one_call_equal_torch_lerp(decay):
    k = 3 * len(SHAPES)
    shapes = SHAPES * 3
    avg_dtypes = cycle(AVG_DTYPES, k)
    avg = rand(shapes, avg_dtypes, 3)
    params = rand(shapes, sources_for(avg_dtypes), 4)  # every accepted (avg, param) pair occurs
    want = lerp_ref(avg, params, 1.0 - decay)
    before = passes()
    OPS.ema_update_(avg, params, torch.tensor(5), decay)
    assert passes() - before == 1
    assert_bitwise(avg, want)


@pytest.mark.parametrize("op", ["swa", "ema"])
def test_first_update_copies_in_the_averages_dtype(op):
    avg_dtypes = cycle(AVG_DTYPES, 2 * len(SHAPES))
    avg = rand(SHAPES * 2, avg_dtypes, 5)
    params = rand(SHAPES * 2, sources_for(avg_dtypes), 6)
    want = [p.to(a.dtype) for a, p in zip(avg, params)]
    before = passes()
    if op == "swa":
        OPS.swa_update_(avg, params, torch.tensor(0))
    else:
        OPS.ema_update_(avg, params, torch.tensor(0), 0.9)
    assert passes() - before == 1
    assert_bitwise(avg, want)


@pytest.mark.parametrize("model", ["resnet50", "vit_b_16"])
def test_many_tensors_of_real_models_in_one_pass(model):
    shapes = scaled_fixture(model, 4)
    dtypes = cycle([torch.bfloat16, torch.float32, torch.float16], len(shapes))
    avg = rand(shapes, [torch.float32] * len(shapes), 7)
    params = rand(shapes, dtypes, 8)
    want = lerp_ref(avg, params, 1.0 / 8)
    before = passes()
    OPS.swa_update_(avg, params, torch.tensor(7))
    assert passes() - before == 1
    assert_bitwise(avg, want)


def test_two_threads_split_the_blocks_and_agree(one_thread):
    torch.set_num_threads(2)
    shapes = [(300_001,), (7,), (70_000,), (1,)]  # ~90 blocks: several tasks of ATen's pool
    avg = rand(shapes, [torch.float32] * 4, 9)
    params = rand(shapes, [torch.bfloat16, torch.float32, torch.float16, torch.float32], 10)
    want = lerp_ref(avg, params, 0.25)
    before = passes()
    OPS.swa_update_(avg, params, torch.tensor(3))
    assert passes() - before == 1
    assert_bitwise(avg, want)


@pytest.mark.parametrize(
    "case",
    ["transposed param", "strided avg", "bf16 average", "negative view", "one non-contiguous of many"],
)
def test_tensors_the_pass_cannot_address_take_the_foreach_path_with_the_same_values(case):
    g = torch.Generator().manual_seed(11)
    avg = [torch.randn(6, 5, generator=g), torch.randn(9, generator=g)]
    params = [torch.randn(6, 5, generator=g), torch.randn(9, generator=g)]
    if case == "transposed param":
        params[0] = torch.randn(5, 6, generator=g).t()
    elif case == "strided avg":
        avg[1] = torch.randn(18, generator=g)[::2]
    elif case == "bf16 average":
        avg = [a.bfloat16() for a in avg]
        params = [p.bfloat16() for p in params]
    elif case == "negative view":
        params[1] = torch._neg_view(params[1])
        assert params[1].is_neg()
    else:
        avg += [torch.randn(4, generator=g) for _ in range(5)]
        params += [torch.randn(4, generator=g) for _ in range(4)] + [torch.randn(8, generator=g)[::2]]
    want = lerp_ref(avg, params, 0.25)
    before = passes()
    OPS.swa_update_(avg, params, torch.tensor(3))
    assert_bitwise(avg, want)
    # The dispatcher's Negative fallback materializes a negative view before any kernel sees it,
    # so that call may take the pass (on a copy); the others must not.
    if case != "negative view":
        assert passes() == before


def bias_ref(avg, anchor, beta, out_dtypes):
    """The bias formula as PyTorch computes it, in avg's dtype, then rounded to out's."""
    return [torch.add(a, a - c.to(a.dtype), alpha=beta).to(d) for a, c, d in zip(avg, anchor, out_dtypes)]


@pytest.mark.parametrize("anchor_dtype", PARAM_DTYPES)
@pytest.mark.parametrize("out_dtype", PARAM_DTYPES)
def test_bias_into_fresh_tensors_is_one_fused_pass(anchor_dtype, out_dtype):
    # A float64 anchor needs a float64 average (the one dtype policy); the others meet both.
    avg_dtypes = [a if anchor_dtype in allowed(a) else torch.float64 for a in cycle(AVG_DTYPES, len(SHAPES))]
    avg = rand(SHAPES, avg_dtypes, 12)
    anchor = rand(SHAPES, [anchor_dtype] * len(SHAPES), 13)
    out = [torch.full(s, float("nan"), dtype=out_dtype) for s in SHAPES]
    want = bias_ref(avg, anchor, 0.37, [out_dtype] * len(SHAPES))
    before = passes()
    OPS.bias_toward_flat_(out, avg, anchor, 0.37)
    assert passes() - before == 1
    assert_bitwise(out, want)


@pytest.mark.parametrize("dtype", PARAM_DTYPES)
def test_bias_in_place_over_its_own_anchor_is_fused(dtype):
    """What `SWA.bias_toward_flat` does: the model is both the anchor and the destination."""
    avg_dtype = torch.float64 if dtype == torch.float64 else torch.float32  # the average SWA keeps
    avg = rand(SHAPES, [avg_dtype] * len(SHAPES), 14)
    model = rand(SHAPES, [dtype] * len(SHAPES), 15)
    want = bias_ref(avg, model, -0.5, [dtype] * len(SHAPES))
    before = passes()
    OPS.bias_toward_flat_(model, avg, model, -0.5)
    assert passes() - before == 1
    assert_bitwise(model, want)


@pytest.mark.parametrize("case", ["out is avg", "out is another anchor", "out inside an avg", "half avg"])
def test_bias_with_unsafe_aliasing_takes_the_foreach_path(case):
    g = torch.Generator().manual_seed(16)
    avg = [torch.randn(8, generator=g), torch.randn(8, generator=g)]
    anchor = [torch.randn(8, generator=g), torch.randn(8, generator=g)]
    if case == "half avg":
        avg = [a.half() for a in avg]
        anchor = [c.half() for c in anchor]
    want = bias_ref(avg, anchor, 0.25, [a.dtype for a in avg])
    if case == "out is avg":
        out = avg
    elif case == "out is another anchor":
        out = [anchor[1], anchor[0]]
    elif case == "out inside an avg":
        big = torch.randn(16, generator=g)
        avg[1] = big[8:]
        want = bias_ref(avg, anchor, 0.25, [torch.float32] * 2)
        out = [big[4:12], torch.empty(8)]  # out[0] overlaps half of avg[1]
    else:
        out = [torch.empty(8, dtype=torch.half), torch.empty(8, dtype=torch.half)]
    before = passes()
    OPS.bias_toward_flat_(out, avg, anchor, 0.25)
    assert passes() == before
    assert_bitwise(out, want)


def test_averager_class_updates_and_copies_out_through_the_pass():
    shapes = scaled_fixture("resnet50", 8)[:40] + [(1,), (4097,)]
    model = rand(shapes, cycle([torch.bfloat16, torch.float32, torch.float16], len(shapes)), 17)
    av = torch.classes.asymvalley.Averager("swa")
    before = passes()
    av.update(model)  # the copy
    first = [p.float() for p in model]
    model2 = rand(shapes, [p.dtype for p in model], 18)
    av.update(model2)  # weight 1/2
    assert passes() - before == 2
    assert_bitwise(av.average(), lerp_ref(first, model2, 0.5))
    out = [torch.empty_like(p) for p in model]
    av.copy_to(out)
    assert passes() - before == 3
    assert_bitwise(out, [a.to(p.dtype) for a, p in zip(av.average(), model)])


def test_averager_class_refits_its_layout_when_a_returned_view_is_resized():
    """`average()` hands out the views themselves; one shrunk by its caller must not make the
    pass index the old sizes (it would read past the new params and write past the view)."""
    av = torch.classes.asymvalley.Averager("swa")
    params = [torch.randn(3), torch.randn(5)]
    av.update(params)
    view = av.average()[1]
    view.resize_(2)
    flat = torch.empty(0).set_(view.untyped_storage())  # the whole buffer: 3 + 5 elements
    assert flat.numel() == 8
    with pytest.raises(RuntimeError, match=r"params\[1\]"):
        av.update(params)  # refused by the validator: shape [5] against the view's [2]
    saved = flat.clone()
    new = [torch.randn(3), torch.randn(2)]
    av.update(new)
    assert_bitwise(av.average(), lerp_ref([params[0], params[1][:2]], new, 0.5))
    assert torch.equal(flat[5:], saved[5:])  # past the shrunk view: untouched


def test_asymvalley_averaged_model_of_a_bf16_model_is_one_pass_per_update():
    torch.manual_seed(19)
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Linear(5, 3)).bfloat16()
    am = asymvalley.AveragedModel(model)
    am.update_parameters(model)
    ref = [p.detach().clone() for p in am.module.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    before = passes()
    am.update_parameters(model)
    assert passes() - before == 1
    assert_bitwise([p.detach() for p in am.module.parameters()],
                   [torch.lerp(r, p.detach().to(r.dtype), 0.5) for r, p in zip(ref, model.parameters())])


def test_torchscript_calls_take_the_pass():
    @torch.jit.script
    def step(avg: list[torch.Tensor], params: list[torch.Tensor], n: torch.Tensor) -> None:
        torch.ops.asymvalley.swa_update_(avg, params, n)

    avg = rand(SHAPES, [torch.float32] * len(SHAPES), 20)
    params = rand(SHAPES, [torch.bfloat16] * len(SHAPES), 21)
    want = lerp_ref(avg, params, 0.5)
    before = passes()
    step(avg, params, torch.tensor(1))
    assert passes() - before == 1
    assert_bitwise(avg, want)


def test_variant_is_named_and_the_baseline_variant_gives_the_same_bits():
    assert OPS._cpu_variant() in ("avx2+fma", "baseline")
    script = textwrap.dedent(
        """
        import torch, asymvalley
        O = torch.ops.asymvalley
        g = torch.Generator().manual_seed(0)
        shapes = [(1,), (4097,), (5, 7), (3,)]
        ok = True
        for pd in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            for ad in (torch.float32, torch.float64):
                if pd == torch.float64 and ad == torch.float32:
                    continue  # refused by the one dtype policy
                avg = [torch.randn(s, generator=g, dtype=ad) for s in shapes]
                p = [torch.randn(s, generator=g).to(pd) for s in shapes]
                want = [torch.lerp(a, q.to(ad), 0.7) for a, q in zip(avg, p)]
                O.ema_update_(avg, p, torch.tensor(2), 0.3)
                ok &= all(torch.equal(a, w) for a, w in zip(avg, want))
        print(O._cpu_variant(), O._fused_cpu_passes(), ok)
        """
    )
    env = dict(os.environ, ASYMVALLEY_FUSED_CPU="baseline")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["baseline", "7", "True"]  # 4 x 2 pairs less the refused one


@pytest.mark.skipif(not pathlib.Path("/proc/self/task").is_dir(), reason="reads per-thread CPU time from Linux /proc")
def test_the_pass_runs_on_torchs_intra_op_threads():
    """`at::parallel_for` splits the blocks statically over the OpenMP team, so with two threads
    the worker runs half the pass: its CPU time must grow (it stayed at 0 when the pass was
    compiled without -fopenmp, where the pragma is ignored and the pass is serial)."""
    before_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.randn(1 << 20).exp()  # starts the OpenMP team
        avg = [torch.randn(1 << 22) for _ in range(4)]
        params = [torch.randn(1 << 22) for _ in range(4)]
        me = str(__import__("threading").get_native_id())

        def ticks():
            out = {}
            for t in os.listdir("/proc/self/task"):
                stat = pathlib.Path(f"/proc/self/task/{t}/stat").read_text().rsplit(")", 1)[1].split()
                out[t] = int(stat[11]) + int(stat[12])  # utime + stime, in clock ticks
            return out

        start = ticks()
        n = torch.tensor(3)
        for _ in range(40):
            OPS.swa_update_(avg, params, n)
        end = ticks()
        used = {t: end[t] - start.get(t, 0) for t in end}
        workers = sum(v for t, v in used.items() if t != me)
        assert used[me] > 0 and workers >= used[me] // 4, used
    finally:
        torch.set_num_threads(before_threads)
