"""Multi-process runs in Paddle (``python -m paddle.distributed.launch``): the process group and the collectives the
loop, the optimizers and the BatchNorm layers use.  Twin of ``torch_impl/distributed.py``; the rules are in
``common/distributed.py``."""
from __future__ import annotations

from typing import List, Optional, Sequence

import paddle
import paddle.distributed as dist
from paddle.autograd import PyLayer

from common.distributed import World, world_from_env


class _AllReduceSum(PyLayer):
    """Sum over the ranks; the backward sums the incoming gradients over the ranks (torch's
    ``torch.distributed.nn.functional.all_reduce``)."""

    @staticmethod
    def forward(ctx, x):
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        g = grad.clone()
        dist.all_reduce(g)
        return g


class Dist:
    """An open process group (gloo on CPU, NCCL on GPU: ``paddle.distributed.init_parallel_env``)."""

    def __init__(self, world: World, device: str, timeout_s: float):
        if world.launcher != "paddle.distributed.launch":
            raise RuntimeError(f"--backend paddle was started by {world.launcher}: launch it with python -m "
                               "paddle.distributed.launch (torchrun starts --backend torch)")
        self.world = world
        self.device = device
        self.sync_bn = False
        self.timeout_s = float(timeout_s)
        if not dist.is_initialized():
            dist.init_parallel_env()

    @property
    def rank(self) -> int:
        return self.world.rank

    @property
    def world_size(self) -> int:
        return self.world.world_size

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    def average_(self, tensors: Sequence[paddle.Tensor]) -> None:
        """Replace every tensor by its mean over the ranks (one flat all-reduce per dtype)."""
        by_dtype = {}
        for t in tensors:
            by_dtype.setdefault(str(t.dtype), []).append(t)
        with paddle.no_grad():
            for group in by_dtype.values():
                flat = paddle.concat([t.reshape([-1]) for t in group])
                dist.all_reduce(flat)
                flat = flat / self.world_size
                offset = 0
                for t in group:
                    n = int(t.numel())
                    paddle.assign(flat[offset:offset + n].reshape(t.shape), t)
                    offset += n

    def sum_floats(self, values: Sequence[float]) -> List[float]:
        t = paddle.to_tensor(list(values), dtype="float64")
        dist.all_reduce(t)
        return [float(v) for v in t.numpy()]

    def all_reduce_sum_differentiable(self, tensor: paddle.Tensor) -> paddle.Tensor:
        """Sum over the ranks whose backward sums the gradients over the ranks (SyncBatchNorm's statistics)."""
        return _AllReduceSum.apply(tensor)

    def all_gather(self, tensor: paddle.Tensor) -> List[paddle.Tensor]:
        out: List[paddle.Tensor] = []
        dist.all_gather(out, tensor)
        return out

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        pass  # paddle keeps its parallel environment until the process ends


def setup(device: str, timeout_s: float = 600.0) -> Optional[Dist]:
    """The process group of this launch, or None for a world of one."""
    world = world_from_env()
    return Dist(world, device, timeout_s) if world.distributed else None
