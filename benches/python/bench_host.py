"""Host overhead of one averaging update: many tiny CPU tensors, so the time is Python/dispatch
work and validation, not memory traffic.

    .venv/bin/python benches/python/bench_host.py [--tensors 161] [--reps 2000]

Rows: asymvalley.AveragedModel.update_parameters (SWA, EMA; use_buffers off/on, and a bf16 model),
the op alone on prepared lists, the TorchScript class's update, raw torch._foreach_lerp_, and
torch's AveragedModel. `ASYMVALLEY_LIBRARY=path/libasymvalley.so` measures another build.
"""
import argparse
import pathlib
import statistics
import sys
import time

import torch
from torch import nn
from torch.optim import swa_utils

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src" / "python"))
import asymvalley  # noqa: E402


def timed(fn, reps, rounds=7):
    for _ in range(max(10, reps // 10)):
        fn()
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        per.append((time.perf_counter() - t0) / reps)
    return statistics.median(per)


def model_of(n, dtype=torch.float32, bn=0):
    m = nn.Module()
    m.ps = nn.ParameterList([nn.Parameter(torch.randn(1, dtype=dtype)) for _ in range(n)])
    m.bns = nn.ModuleList([nn.BatchNorm1d(1).to(dtype) for _ in range(bn)])
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tensors", type=int, default=161)
    ap.add_argument("--reps", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    n, reps = args.tensors, args.reps
    ema = swa_utils.get_ema_multi_avg_fn(0.999)
    rows = {}
    model = model_of(n)
    for label, kw in [("SWA", {}), ("EMA", {"multi_avg_fn": ema})]:
        am = asymvalley.AveragedModel(model, **kw)
        am.update_parameters(model)
        rows[f"asymvalley.AveragedModel {label}"] = timed(lambda: am.update_parameters(model), reps)
    bnm = model_of(n - 3 * (n // 10), bn=n // 10)  # ~n params+buffers, with int buffers
    for ub in (False, True):
        am = asymvalley.AveragedModel(bnm, multi_avg_fn=ema, use_buffers=ub)
        am.update_parameters(bnm)
        rows[f"asymvalley.AveragedModel EMA BN use_buffers={ub}"] = timed(lambda: am.update_parameters(bnm), reps)
    bf = model_of(n, torch.bfloat16)
    am = asymvalley.AveragedModel(bf, multi_avg_fn=ema)
    am.update_parameters(bf)
    rows["asymvalley.AveragedModel EMA bf16 model"] = timed(lambda: am.update_parameters(bf), reps)
    avg = [p.detach().clone() for p in model.parameters()]
    src = [p.detach() for p in model.parameters()]
    cnt = torch.tensor(1)
    rows["op ema_update_ (prepared lists)"] = timed(lambda: torch.ops.asymvalley.ema_update_(avg, src, cnt, 0.999), reps)
    rows["op swa_update_ (prepared lists)"] = timed(lambda: torch.ops.asymvalley.swa_update_(avg, src, cnt), reps)
    cls = torch.classes.asymvalley.Averager("ema", 0.999, "none", 1.0, 0.75, 0.0, 0, 1)
    cls.update(src)
    rows["class Averager.update (EMA)"] = timed(lambda: cls.update(src), reps)
    rows["raw torch._foreach_lerp_"] = timed(lambda: torch._foreach_lerp_(avg, src, 0.001), reps)
    ref = swa_utils.AveragedModel(model, multi_avg_fn=ema)
    ref.update_parameters(model)
    rows["torch AveragedModel EMA"] = timed(lambda: ref.update_parameters(model), max(50, reps // 10), 3)
    print(f"{n} one-element CPU tensors, torch {torch.__version__}, 1 thread; median of 7 rounds of {reps}")
    for k, v in rows.items():
        print(f"  {k:48s} {v * 1e3:8.3f} ms")


if __name__ == "__main__":
    main()
