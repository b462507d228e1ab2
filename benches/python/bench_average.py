"""Times one averaging update on the exact ResNet-50 and ViT-B/16 parameter shapes
(fixtures/param_shapes.json) against the memory-bandwidth floor.

Rows: asymvalley.AveragedModel.update_parameters (SWA, EMA), torch.optim.swa_utils.AveragedModel
.update_parameters (SWA, EMA), a raw torch._foreach_lerp_, and a copy of the same bytes; then the
module EMAs: asymvalley.EMA.update, ema_pytorch.EMA.update (its default per-tensor loop and
use_foreach=True) and timm.utils.ModelEmaV3.update, all with a constant decay 0.999 (on CUDA also
each with the average offloaded to the CPU: asymvalley.EMA(device="cpu"), timm's device="cpu").
The floor is 12 bytes/param (read avg, read param, write avg) at the copy bandwidth measured in
the same run. "ms" is the time per update (CUDA events on a GPU), "host ms" the time until the
call returns to Python (equal on the CPU; on a GPU, what the training loop waits for).

    .venv/bin/python benches/python/bench_average.py --device cpu [--rows ema] [--json out.json]
    python benches/python/bench_average.py --device cuda          # unchanged on a GPU machine
"""
import argparse
import gc
import json
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


def host_timer(device, fn, warmup, reps):
    """Median time until ``fn`` returns, without waiting for the device (the training loop's cost)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()  # each call starts from an idle queue, as after a step's kernels
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return statistics.median(times)


def timer(device, fn, warmup, reps):
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def holder(shapes, device, seed):
    m = nn.Module()
    g = torch.Generator().manual_seed(seed)
    m.ps = nn.ParameterList([nn.Parameter(torch.randn(s, generator=g).to(device)) for s in shapes])
    return m


def module_emas(model, device, offload_rows):
    """(label, build) for the module EMAs compared; each build returns (ema, update callable).

    A peer library that is not installed gets ``build = None`` and its rows are reported as
    skipped (the GPU machine's image has timm but not ema-pytorch; benches/gpu/build.sh ships a
    copy that run.sh adds to the path only where it is missing). ``offload_rows``: also each
    with the average on the CPU (on CUDA; the dry run builds them on the CPU too, to check them).
    """
    try:
        import ema_pytorch  # noqa: PLC0415 - peers, imported only when their rows run
    except ImportError:
        ema_pytorch = None
    try:
        from timm.utils import ModelEmaV3  # noqa: PLC0415
    except ImportError:
        ModelEmaV3 = None

    d = 0.999
    const = dict(beta=d, min_value=d, update_after_step=0, update_every=1)

    def ours(**kw):
        ema = asymvalley.EMA(model, **const, **kw)
        return ema, ema.update

    def theirs_ema_pytorch(**kw):
        ema = ema_pytorch.EMA(model, include_online_model=False, **const, **kw)
        return ema, ema.update

    def timm(**kw):
        ema = ModelEmaV3(model, decay=d, **kw)
        return ema, lambda: ema.update(model)

    have_ep, have_timm = ema_pytorch is not None, ModelEmaV3 is not None
    rows = [
        ("asymvalley.EMA", lambda: ours()),
        ("ema_pytorch.EMA", (lambda: theirs_ema_pytorch()) if have_ep else None),
        ("ema_pytorch.EMA use_foreach", (lambda: theirs_ema_pytorch(use_foreach=True)) if have_ep else None),
        ("timm ModelEmaV3", (lambda: timm()) if have_timm else None),
    ]
    if offload_rows:
        rows += [
            ("asymvalley.EMA device=cpu", lambda: ours(device="cpu")),
            ("timm ModelEmaV3 device=cpu", (lambda: timm(device=torch.device("cpu"))) if have_timm else None),
        ]
    return rows


def bench_model(name, shapes, device, warmup, reps, which, dry_run=False):
    n_params = sum(torch.Size(s).numel() for s in shapes)
    model = holder(shapes, device, 0)
    rows, host, skipped = {}, {}, {}
    ema_fn = swa_utils.get_ema_multi_avg_fn(0.999)
    if which == "all":
        for label, cls, kw in [
            ("asymvalley SWA", asymvalley.AveragedModel, {}),
            ("asymvalley EMA", asymvalley.AveragedModel, {"multi_avg_fn": ema_fn}),
            ("torch AveragedModel SWA", swa_utils.AveragedModel, {}),
            ("torch AveragedModel EMA", swa_utils.AveragedModel, {"multi_avg_fn": ema_fn}),
        ]:
            avg = cls(model, **kw)
            avg.update_parameters(model)  # the first call copies; time the averaging ones
            rows[label] = timer(device, lambda: avg.update_parameters(model), warmup, reps)
            del avg
        a = [p.detach().clone() for p in model.parameters()]
        src = [p.detach() for p in model.parameters()]
        rows["raw torch._foreach_lerp_"] = timer(device, lambda: torch._foreach_lerp_(a, src, 0.001), warmup, reps)
        del a, src
    for label, build in module_emas(model, device, offload_rows=device.type == "cuda" or dry_run):
        if build is None:
            skipped[label] = "its library is not installed in this Python"
            print(f"  {label}: SKIPPED ({skipped[label]})")
            continue
        # The offloaded rows copy the whole model to the host on every update (tens of ms on a
        # GPU): fewer repeats keep the step inside its time limit, and the median stays stable.
        w, n = (min(warmup, 2), min(reps, 10)) if label.endswith("device=cpu") else (warmup, reps)
        ema, update = build()
        update()  # asymvalley / ema-pytorch: the first call copies; time the averaging ones
        rows[label] = timer(device, update, w, n)
        # On the CPU the call returns when the work is done: host time is the same number (the
        # dry run measures it anyway, to run the code the GPU run runs).
        host[label] = host_timer(device, update, w, n) if device.type == "cuda" or dry_run else rows[label]
        del ema, update
        gc.collect()
    # Copy of the same bytes: 12 bytes/param moved as one flat read+write of 6 bytes/param each way.
    flat_src = torch.empty(n_params * 3 // 2, dtype=torch.float32, device=device).normal_()
    flat_dst = torch.empty_like(flat_src)
    t_copy = timer(device, lambda: flat_dst.copy_(flat_src), warmup, reps)
    bandwidth = 2 * flat_src.numel() * 4 / t_copy  # bytes read + written per second
    floor = 12 * n_params / bandwidth
    rows["copy of 12 B/param (floor)"] = floor
    return {"model": name, "tensors": len(shapes), "params": n_params, "copy_bandwidth_GBps": bandwidth / 1e9,
            "floor_s": floor, "times_s": rows, "host_s": host, "skipped": skipped}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dry-run-cpu", action="store_true",
                    help="the GPU run's code on the CPU with the fewest repeats (1 warm-up, 2 timed), "
                         "including the offloaded rows and host timing: checks the script, not a speed")
    ap.add_argument("--json", type=pathlib.Path, default=None)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--rows", choices=["all", "ema"], default="all",
                    help="all rows, or only the module EMAs (asymvalley.EMA, ema_pytorch, timm) and the floor")
    ap.add_argument("--shapes", type=pathlib.Path, default=ROOT / "fixtures" / "param_shapes.json")
    ap.add_argument("--models", default="resnet50,vit_b_16", help="comma-separated keys of --shapes")
    args = ap.parse_args()
    if args.dry_run_cpu:
        args.device = "cpu"
    device = torch.device(args.device)
    reps = args.reps or (50 if device.type == "cuda" else 2 if args.dry_run_cpu else 7)
    warmup = 5 if device.type == "cuda" else 1 if args.dry_run_cpu else 2
    shapes = json.loads(args.shapes.read_text())
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in shapes]
    if unknown or not models:
        sys.exit(f"bench_average: --models {args.models!r}: not in {args.shapes} ({unknown}); "
                 f"expected some of {', '.join(shapes)}")
    results = []
    for name in models:
        r = bench_model(name, shapes[name], device, warmup, reps, args.rows, args.dry_run_cpu)
        results.append(r)
        print(f"\n{name}: {r['tensors']} tensors, {r['params'] / 1e6:.1f} M params, "
              f"copy bandwidth {r['copy_bandwidth_GBps']:.1f} GB/s, floor {r['floor_s'] * 1e3:.3f} ms "
              f"({device.type}, torch {torch.__version__}, {torch.get_num_threads()} threads)")
        print(f"  {'':32s} {'ms':>9s} {'host ms':>9s} {'x floor':>8s} {'x peer':>8s}")
        for label, t in r["times_s"].items():
            if label in r["host_s"]:
                peer = "ema_pytorch.EMA use_foreach"  # the module EMAs against the fastest peer setting
            else:
                peer = "torch AveragedModel EMA" if "EMA" in label else "torch AveragedModel SWA"
            ref = r["times_s"].get(peer)
            h = r["host_s"].get(label)
            print(f"  {label:32s} {t * 1e3:9.3f} {'' if h is None else f'{h * 1e3:9.3f}':>9s} "
                  f"{t / r['floor_s']:8.2f} {'' if ref is None else f'{t / ref:8.2f}':>8s}")
        if args.json:  # after each model, so a run stopped by its time limit keeps what it measured
            report = {"device": str(device), "dry_run": args.dry_run_cpu, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "complete": len(results) == len(models),
                      "results": results}
            tmp = args.json.with_name(args.json.name + ".tmp")
            tmp.write_text(json.dumps(report, indent=2))
            tmp.replace(args.json)
    if args.json:
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
