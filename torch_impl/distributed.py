"""Multi-process runs in PyTorch (``torchrun``): the process group and the collectives the loop, the optimizers
and the BatchNorm layers use.  Twin of ``paddle_impl/distributed.py``; the rules are in ``common/distributed.py``."""
from __future__ import annotations

import datetime
from typing import List, Optional, Sequence

import torch
import torch.distributed as dist

from common.distributed import World, world_from_env


class Dist:
    """An open process group (gloo on CPU, NCCL on GPU)."""

    def __init__(self, world: World, device: torch.device, timeout_s: float):
        if world.launcher != "torchrun":
            raise RuntimeError(f"--backend torch was started by {world.launcher}: launch it with torchrun "
                               "(python -m paddle.distributed.launch starts --backend paddle)")
        self.world = world
        self.device = device
        self.sync_bn = False
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(seconds=float(timeout_s)))

    @property
    def rank(self) -> int:
        return self.world.rank

    @property
    def world_size(self) -> int:
        return self.world.world_size

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    @torch.no_grad()
    def average_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replace every tensor by its mean over the ranks (one flat all-reduce per dtype)."""
        by_dtype = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for group in by_dtype.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.all_reduce(flat)
            flat /= self.world_size
            offset = 0
            for t in group:
                n = t.numel()
                t.copy_(flat[offset:offset + n].view_as(t))
                offset += n

    def sum_floats(self, values: Sequence[float]) -> List[float]:
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return [float(v) for v in t.cpu()]

    def all_reduce_sum_differentiable(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over the ranks whose backward sums the gradients over the ranks (SyncBatchNorm's statistics)."""
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(tensor)

    def all_gather(self, tensor: torch.Tensor) -> List[torch.Tensor]:
        out = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(out, tensor.contiguous())
        return out

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def setup(device: torch.device, timeout_s: float = 600.0) -> Optional[Dist]:
    """The process group of this launch, or None for a world of one."""
    world = world_from_env()
    return Dist(world, device, timeout_s) if world.distributed else None
