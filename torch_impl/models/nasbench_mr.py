"""NAS-Bench-MR multi-resolution networks in PyTorch: the twin of ``paddle_impl/models/nasbench_mr.py``.

``build(spec)`` turns a :class:`common.specs.nasbench_mr.MRNetSpec` into a ``MultiResolutionNet`` whose state names
are exactly ``expected_state_shapes(spec)`` (upstream ``models/supernet.py``: ``downsamples``, ``transform``,
``classifier``, ``features.{2s}.fuse_layers.{i}.{j}``, ``features.{2s+1}.branches.{b}.{k}``), so upstream state
dicts load by name.  Semantics (``shared/research/ncp.md`` §2.1):

* ``ConvBNReLU``: ``0`` conv k x k without bias (padding ``(k-1)//2``), ``1`` BN (momentum 0.1, eps 1e-5), ``2`` ReLU;
* ``BasicBlock``: conv1 3x3, bn1, relu, conv2 3x3, bn2, + identity, relu (one ``relu`` module called twice);
* ``FuseModule`` (upstream's only-fuse-neighbour, direct-downsample form): output branch ``i`` sums its inputs in the
  order ``i-1`` (3x3 stride-2 ConvBNReLU), ``i`` (3x3 ConvBNReLU), ``i+1`` (1x1 ConvBNReLU, nearest x2); every term
  after the first is resized bilinearly (``align_corners=False``) to the first term's size (a no-op unless the input
  size is odd: skipped when the sizes already agree, which is numerically the same), then a ReLU.  A new branch
  ``b`` is a 3x3 stride-2 ConvBNReLU of the *fused* branch ``b-1``.  The slots of a row that are not neighbours
  are ``None``, as upstream: no parameters, but the indices after them keep their numbers;
* ``ParallelModule``: per branch a chain of BasicBlocks;
* head: every branch resized bilinearly (``align_corners=False``, no antialiasing) to branch 0's size
  (segmentation) or the last branch's (classification), concatenated, ``transform`` (1x1 ConvBNReLU), a global
  average pool (classification), ``classifier`` (1x1 conv with bias).  The output is ``(N, classes, 1, 1)``
  (classification; the classification task flattens it) or ``(N, classes, H/4, W/4)`` (segmentation).

Every stage decision comes from ``common.specs.nasbench_mr.stage_plan``; every layer from ``torch_impl/ops.py``.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn

from common.specs.nasbench_mr import (BN_EPS, BN_MOMENTUM, FUSE_KERNEL, FUSE_STRIDE, MRNetSpec, StagePlan,
                                      stage_plan)
from torch_impl import ops

__all__ = ["ConvBNReLU", "BasicBlock", "ParallelModule", "FuseModule", "MultiResolutionNet", "build"]


class ConvBNReLU(nn.Sequential):
    """Upstream ``ConvBNReLU``: ``0`` conv k x k (no bias, padding ``(k-1)//2``), ``1`` BN, ``2`` ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1):
        super().__init__(
            ops.Conv2d(in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2),
            ops.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM),
            ops.ReLU(),
        )


class BasicBlock(nn.Module):
    """ResNet BasicBlock with ``inplanes == planes`` and stride 1 (the only one the space uses: no downsample);
    plain BNs (momentum 0.1, eps 1e-5)."""

    def __init__(self, inplanes: int, planes: int):
        super().__init__()
        if inplanes != planes:
            raise ValueError(f"BasicBlock: a NAS-Bench-MR block keeps its width, got {inplanes} -> {planes}")
        self.conv1 = ops.Conv2d(inplanes, planes, 3, 1, 1)
        self.bn1 = ops.BatchNorm2d(planes)
        self.relu = ops.ReLU()
        self.conv2 = ops.Conv2d(planes, planes, 3, 1, 1)
        self.bn2 = ops.BatchNorm2d(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class ParallelModule(nn.Module):
    """``branches``: per branch a Sequential of ``blocks[b]`` BasicBlocks of width ``channels[b]``."""

    def __init__(self, channels: Sequence[int], blocks: Sequence[int]):
        super().__init__()
        self.branches = nn.ModuleList(
            [nn.Sequential(*[BasicBlock(c, c) for _ in range(n)]) for c, n in zip(channels, blocks)])

    def forward(self, xs: List[torch.Tensor]) -> List[torch.Tensor]:
        return [branch(x) for branch, x in zip(self.branches, xs)]


def _fuse_op(kind: str, c_in: int, c_out: int) -> nn.Module:
    """``same``: the ConvBNReLU itself; ``up``: Sequential(1x1 ConvBNReLU, nearest x2); ``down``:
    Sequential(3x3 stride-2 ConvBNReLU)."""
    conv = ConvBNReLU(c_in, c_out, FUSE_KERNEL[kind], FUSE_STRIDE[kind])
    if kind == "same":
        return conv
    if kind == "up":
        return nn.Sequential(conv, ops.Upsample(scale_factor=2, mode="nearest"))
    return nn.Sequential(conv)


class FuseModule(nn.Module):
    """The transition from one stage's branches to the next's (see the module docstring); ``fuse_layers.{i}`` is a
    list over the input branches (``None`` where ``j`` is not a neighbour of ``i``), and for a new branch ``b`` a
    one-element list holding its stride-2 ConvBNReLU."""

    def __init__(self, plan: StagePlan):
        super().__init__()
        n_in = len(plan.in_channels)
        rows = []
        self._order = []  # per output row: the input branches in summation order (-1: the fused branch above)
        for i, ops_i in enumerate(plan.fuse):
            if ops_i[0].kind == "new":
                (op,) = ops_i
                rows.append(nn.ModuleList([ConvBNReLU(op.c_in, op.c_out, FUSE_KERNEL["new"], FUSE_STRIDE["new"])]))
                self._order.append((-1,))
                continue
            slots = [None] * n_in
            for op in ops_i:
                slots[op.in_branch] = _fuse_op(op.kind, op.c_in, op.c_out)
            rows.append(nn.ModuleList(slots))
            self._order.append(tuple(op.in_branch for op in ops_i))
        self.fuse_layers = nn.ModuleList(rows)
        self.relu = ops.ReLU()

    def forward(self, xs: List[torch.Tensor]) -> List[torch.Tensor]:
        out: List[torch.Tensor] = []
        for i, order in enumerate(self._order):
            row = self.fuse_layers[i]
            if order == (-1,):
                out.append(row[0](out[i - 1]))
                continue
            y = row[order[0]](xs[order[0]])
            for j in order[1:]:
                z = row[j](xs[j])
                if z.shape[2:] != y.shape[2:]:
                    z = ops.resize_bilinear(z, y.shape[2:], align_corners=False)
                y = y + z
            out.append(self.relu(y))
        return out


class MultiResolutionNet(nn.Module):
    """Upstream ``MultiResolutionNet`` (attribute order = state order: ``downsamples``, ``transform``,
    ``classifier``, ``features``)."""

    def __init__(self, spec: MRNetSpec):
        super().__init__()
        if not isinstance(spec, MRNetSpec):
            raise TypeError(f"build(spec) needs an MRNetSpec, got {type(spec).__name__}")
        self.spec = spec
        c0, c1 = spec.code.input_channel
        plans = stage_plan(spec)
        last = plans[-1].out_channels
        self.downsamples = nn.Sequential(ConvBNReLU(spec.in_channels, c0, 3, 2), ConvBNReLU(c0, c1, 3, 2))
        self.transform = ConvBNReLU(sum(last), spec.code.last_channel, 1, 1)
        self.classifier = ops.Conv2d(spec.code.last_channel, spec.num_classes, 1, bias=True)
        layers = []
        for plan in plans:
            layers += [FuseModule(plan), ParallelModule(plan.out_channels, plan.blocks)]
        self.features = nn.Sequential(*layers)
        self._segmentation = spec.task == "segmentation"
        self._align_corners = bool(spec.align_corners)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = [self.downsamples(x)]
        for module in self.features:
            xs = module(xs)
        target = xs[0] if self._segmentation else xs[-1]
        size = target.shape[2:]
        parts = [t if t.shape[2:] == size else ops.resize_bilinear(t, size, self._align_corners) for t in xs]
        y = self.transform(torch.cat(parts, dim=1))
        if not self._segmentation:
            y = y.mean((2, 3), keepdim=True)
        return self.classifier(y)


def build(spec: MRNetSpec) -> MultiResolutionNet:
    """The network of ``spec`` in eval mode (framework-default initial values: load weights with
    ``layout.load_neutral(model, common.specs.nasbench_mr.init_state(spec, rng))`` or a checkpoint)."""
    return MultiResolutionNet(spec).eval()
