"""2-process gloo runs: DDP (each rank's average equals the single-process one) and sharded
parameters (each rank averages its own shard, nothing gathered)."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.optim import swa_utils

import asymvalley


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "localhost"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    ddp = nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    ours = asymvalley.AveragedModel(ddp.module)
    ema = asymvalley.AveragedModel(ddp.module, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.9))
    ref = swa_utils.AveragedModel(ddp.module)  # the single-process oracle on the same sequence
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own data
    for _ in range(5):
        x, y = torch.randn(4, 6, generator=g), torch.randn(4, 2, generator=g)
        opt.zero_grad()
        nn.functional.mse_loss(ddp(x), y).backward()
        opt.step()
        ours.update_parameters(ddp.module)
        ema.update_parameters(ddp.module)
        ref.update_parameters(ddp.module)
    # Sharded: each rank holds a different slice of one flat parameter and averages only that.
    full = [torch.arange(12.0) * (k + 1) for k in range(4)]
    shard = nn.Module()
    shard.w = nn.Parameter(full[0].chunk(world)[rank].clone())
    sharded = asymvalley.AveragedModel(shard)
    for k in range(4):
        with torch.no_grad():
            shard.w.copy_(full[k].chunk(world)[rank])
        sharded.update_parameters(shard)
    torch.save(
        {"ref": ref.state_dict(), "swa": ours.state_dict(), "ema": ema.state_dict(), "shard": sharded.module.w.detach().clone(),
         "final": {k: v.clone() for k, v in net.state_dict().items()}},
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    dist.destroy_process_group()


def test_ddp_and_sharded_two_processes_gloo(tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for key in ("swa", "ema"):
        assert r0[key].keys() == r1[key].keys()
        for k in r0[key]:
            assert torch.equal(r0[key][k], r1[key][k]), (key, k)  # DDP keeps ranks identical
    assert torch.equal(r0["final"]["0.weight"], r1["final"]["0.weight"])
    for k, v in r0["ref"].items():
        torch.testing.assert_close(r0["swa"][k], v, rtol=1e-6, atol=1e-6)
    # The shard averages are the mean of each rank's own slices; together the full mean.
    mean = torch.stack([torch.arange(12.0) * (k + 1) for k in range(4)]).mean(0)
    torch.testing.assert_close(torch.cat([r0["shard"], r1["shard"]]), mean)
    assert r0["shard"].numel() == 6
