"""torchrun / DDP set-up and an all_gather that carries gradients back to every rank."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK). NCCL on CUDA, gloo on CPU.

    Without torchrun (no WORLD_SIZE) this is a single process and no process group is made.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        # torch.distributed.nn.functional takes `group=group.WORLD` as default arguments, read
        # when the module is first imported. DDP imports it (through torch._dynamo), and imported
        # after the group exists those defaults keep the group alive after destroy_process_group,
        # and with it gloo's threads (seen with torch 2.15); see `finish_distributed`. Imported
        # first, the defaults are None.
        import torch.distributed.nn.functional as _defaults_read_now  # noqa: F401

        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local, dev)


def finish_distributed() -> None:
    """Ends a successful distributed run: waits for every rank, destroys the process group and
    frees it. Call it after the run's models, DDP wrappers and tensors are unreachable (the CLI
    calls it after the command returns); without a process group it only collects garbage.

    Why the freeing matters: gloo runs collectives on threads of its own, which live as long as
    the group object, and a worker thread may still be dropping the last collective's tensors
    after the collective has returned. Dropping a tensor that Python knows needs the GIL; if the
    interpreter is shutting down by then, that thread is ended inside a C++ destructor and the
    process aborts ("terminate called without an active exception") after a run that succeeded,
    so torchrun reports it failed. Freeing the group here joins those threads first.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    # Whatever holds the group from inside a reference cycle is freed now, not at shutdown.
    gc.collect()


class _GatherWithGrad(torch.autograd.Function):
    """Forward: all_gather along dim 0. Backward: every rank's loss contributed gradients to all
    gathered rows, so the gradients are summed across ranks and each rank keeps its own slice."""

    @staticmethod
    def forward(ctx, x):
        world = dist.get_world_size()
        out = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(out, x.contiguous())
        ctx.rank = dist.get_rank()
        ctx.n = x.shape[0]
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """[B, D] on each rank -> [world * B, D] on every rank, rank-major; gradients flow back.

    Every rank must pass the same B (the training loader drops the last partial batch).
    With DDP averaging gradients over ranks, the result is the gradient of the mean of the
    per-rank losses, each computed against the global batch.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def global_offset(batch: int) -> int:
    """Index of this rank's first row in a gathered batch."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0
    return dist.get_rank() * batch


def all_gather_tensors(x: torch.Tensor) -> torch.Tensor:
    """Gather without gradients (evaluation); rows may differ in count across ranks."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    m = int(max(s.item() for s in sizes))
    pad = torch.zeros((m - x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
    out = [torch.empty((m, *x.shape[1:]), dtype=x.dtype, device=x.device) for _ in sizes]
    dist.all_gather(out, torch.cat([x, pad]))
    return torch.cat([o[: int(s.item())] for o, s in zip(out, sizes, strict=True)])
