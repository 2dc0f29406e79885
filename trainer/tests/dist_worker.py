"""Run under `torchrun --nproc_per_node=2` (gloo, CPU) by test_distributed.py.

Checks, on every rank, and writes the results to OUT/rank<k>.json:
1. `gather_with_grad` returns every rank's rows in rank order;
2. the triplet loss over gathered negatives gives each rank the same gradient, for its rows, as
   one process computing the loss on the whole global batch (after DDP-style averaging);
3. a few DDP steps with the triplet loss leave identical weights on every rank;
4. `finish_distributed` frees the process group: no thread it started is left for the
   interpreter's shutdown, where a gloo thread still dropping tensors aborts the process.
"""

import json
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from dishcam_trainer.dist import finish_distributed, gather_with_grad, init_distributed
from dishcam_trainer.losses import _triplet_rows, triplet_loss


def threads() -> list[str]:
    return sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))


def main() -> dict:
    info = init_distributed("cpu")
    assert info.world == 2, info
    rank, world, b, d = info.rank, info.world, 3, 5
    g = torch.Generator().manual_seed(0)
    full_img = torch.nn.functional.normalize(torch.randn(world * b, d, generator=g), dim=-1)
    full_rec = torch.nn.functional.normalize(torch.randn(world * b, d, generator=g), dim=-1)
    sl = slice(rank * b, (rank + 1) * b)
    result = {"rank": rank}

    # 1. gathered values
    local = full_img[sl].clone()
    gathered = gather_with_grad(local)
    result["gather_ok"] = bool(torch.equal(gathered, full_img))

    # 2. gradients through the gather against a single-process reference
    img = full_img[sl].clone().requires_grad_(True)
    rec = full_rec[sl].clone().requires_grad_(True)
    loss = triplet_loss(img, rec, 0.3)
    loss.backward()
    # DDP averages gradients over ranks; do the same by hand for this raw-tensor check.
    grad_img, grad_rec = img.grad / world, rec.grad / world
    ref_img = full_img.clone().requires_grad_(True)
    ref_rec = full_rec.clone().requires_grad_(True)
    # Reference: every rank's loss is the mean over its own queries against the global batch;
    # the DDP objective is the mean of the per-rank losses.
    ref = 0
    for r in range(world):
        s = slice(r * b, (r + 1) * b)
        s1, n1 = _triplet_rows(ref_img[s], ref_rec, r * b, 0.3)
        s2, n2 = _triplet_rows(ref_rec[s], ref_img, r * b, 0.3)
        ref = ref + (s1 + s2) / (n1 + n2)
    (ref / world).backward()
    result["grad_max_err"] = float(
        max((grad_img - ref_img.grad[sl]).abs().max(), (grad_rec - ref_rec.grad[sl]).abs().max())
    )
    result["grad_nonzero"] = bool(grad_img.abs().sum() > 0)
    result["loss"] = loss.item()

    # 3. DDP training keeps ranks identical
    class Pair(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
            self.c = torch.nn.Linear(d, 4)

        def forward(self, x, y):
            n = torch.nn.functional.normalize
            return n(self.a(x), dim=-1), n(self.c(y), dim=-1)

    torch.manual_seed(123 + rank)  # different init per rank: DDP must broadcast rank 0's
    both = Pair()
    ddp = DDP(both)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.5)
    start = torch.cat([p.detach().flatten() for p in both.parameters()]).clone()
    torch.manual_seed(1000 + rank)  # different data per rank (sharded)
    for _ in range(4):
        a, c = ddp(torch.randn(b, d), torch.randn(b, d))
        loss = triplet_loss(a, c, 0.3)
        opt.zero_grad()
        loss.backward()
        opt.step()
    flat = torch.cat([p.detach().flatten() for p in both.parameters()])
    flats = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(flats, flat)
    result["weights_identical"] = all(torch.equal(flats[0], f) for f in flats)
    result["weights_changed"] = not torch.equal(start, flat)
    result["threads_running"] = threads()
    return result


if __name__ == "__main__":
    before = threads()
    result = main()
    finish_distributed()
    result["threads_before"], result["threads_after"] = before, threads()
    with open(f"{sys.argv[1]}/rank{result['rank']}.json", "w") as f:
        json.dump(result, f)
