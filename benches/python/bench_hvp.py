"""The PyTorch side of the valley bench's Hessian-vector-product comparison.

Usage: python bench_hvp.py OUT_DIR. Writes OUT_DIR/mlp.pt (a scripted MLP, eval mode) and
OUT_DIR/data.safetensors (inputs, targets), times one Hessian-vector product of the mean
cross-entropy over all the data by double backward (torch.autograd.grad with create_graph, then
the gradient of g·v), median of 20 after 3 warm-ups, for the eager module and for the saved
TorchScript module loaded back, and prints {"hvp_ms": ..., "script_hvp_ms": ..., "threads": ...}.
The Rust bench loads the same files, so both sides differentiate the same model on the same data.
"""
import json
import sys
import time

import torch
from safetensors.torch import save_file

out = sys.argv[1]
torch.manual_seed(0)
net = torch.nn.Sequential(
    torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, 256), torch.nn.Tanh(),
    torch.nn.Linear(256, 10)).eval()
x, y = torch.randn(2048, 64), torch.randint(0, 10, (2048,))
torch.jit.save(torch.jit.script(net), out + "/mlp.pt")
save_file({"inputs": x, "targets": y}, out + "/data.safetensors")



def median_hvp_ms(model):
    params = list(model.parameters())
    v = [torch.randn_like(p) for p in params]

    def hvp():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        g = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((a * b).sum() for a, b in zip(g, v))
        return torch.autograd.grad(dot, params)

    for _ in range(3):
        hvp()
    times = []
    for _ in range(20):
        t = time.perf_counter()
        hvp()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[len(times) // 2]


# Eager is what a PyTorch user runs; the loaded TorchScript module is what the detector runs.
print(json.dumps({"hvp_ms": median_hvp_ms(net),
                  "script_hvp_ms": median_hvp_ms(torch.jit.load(out + "/mlp.pt")),
                  "threads": torch.get_num_threads()}))
