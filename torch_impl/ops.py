"""PyTorch op library: the twin of ``paddle_impl/ops.py``.

Same class names, constructor signatures and attribute names in both files (docs/CONVENTIONS.md, "Op library
contract"), so every parameter has one canonical name.  Semantics that the two frameworks do not share
natively are fixed here and proven equal by ``parity_tests/test_ops_parity.py``:

* ``padding='SAME'`` is TensorFlow's (out = ceil(n/stride), odd pixel bottom/right), computed from the
  runtime input size with ``common.padding`` and cached per size; torch refuses ``padding='same'`` with
  stride > 1, so asymmetric cases pad explicitly;
* average pooling with ``count_include_pad=False`` divides by the number of valid elements, also for
  asymmetric SAME padding (sum-pool of the zero-padded input / a cached count map);
* ``HardSigmoid`` is the formula ``relu6(x + 3) / 6``;
* ``DropPath`` / ``Dropout`` accept an injected numpy keep mask for the next training call.

Never imports paddle or tensorflow.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import distributed
from common.init import (
    BN_BIAS,
    BN_MEAN,
    BN_VAR,
    BN_WEIGHT,
    CONV_BIAS,
    CONV_WEIGHT,
    LINEAR_BIAS,
    LINEAR_WEIGHT,
    OTHER,
    ParamSpec,
)
from common.op_args import DropoutMasks, DropPathMasks, PadArg, dropout_p
from common.op_args import check_mask as _check_mask  # noqa: F401  (kept importable as ops._check_mask)
from common.op_args import pair as _pair
from common.op_args import parse_padding as _parse_padding
from common.op_args import valid_counts_1d as _valid_counts_1d
from common.padding import same_pad_2d

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d", "Conv2d", "Linear", "MaxPool2d", "AvgPool2d",
    "ReLU", "ReLU6", "Swish", "HardSigmoid", "Sigmoid", "Identity", "Zero",
    "SqueezeExcite", "SeparableConv2d", "ReLUConvBN", "SepConv", "DilConv", "FactorizedReduce",
    "DropPath", "Dropout", "ChannelShuffle", "channel_shuffle", "Upsample", "resize_bilinear", "pad_same",
    "create_act", "hard_sigmoid", "named_param_kinds", "attach_mask_source",
]

# ---------------------------------------------------------------------------------------------------------
# padding helpers
# ---------------------------------------------------------------------------------------------------------
# _pair, _parse_padding, _valid_counts_1d: common/op_args.py (the same arithmetic in both twins)
class _SamePlan:
    """TF SAME padding for one layer, per input size: ``(pre_pad or None, symmetric pad pair)``.

    When SAME happens to be symmetric the layer's own ``padding`` argument does the work (no copy);
    otherwise ``pre_pad`` is an ``F.pad`` tuple ``(left, right, top, bottom)``.  With stride 1 the padding
    does not depend on the input size, so it is planned once (``static``).
    """

    __slots__ = ("kernel", "stride", "dilation", "static", "cache")

    def __init__(self, kernel, stride, dilation):
        self.kernel, self.stride, self.dilation = kernel, stride, dilation
        self.cache: Dict[Tuple[int, int], tuple] = {}
        # For stride 1, total padding is (k - 1) * d whatever the size: plan with a dummy size.
        self.static = self._plan(1, 1) if stride == (1, 1) else None

    def _plan(self, height: int, width: int):
        top, bottom, left, right = same_pad_2d(height, width, self.kernel, self.stride, self.dilation)
        if top == bottom and left == right:
            return None, (top, left)
        return (left, right, top, bottom), (0, 0)

    def __call__(self, hw) -> tuple:
        plan = self.cache.get(hw)
        if plan is None:
            plan = self.cache[tuple(hw)] = self._plan(int(hw[0]), int(hw[1]))
        return plan


def pad_same(x: torch.Tensor, kernel_size, stride=1, dilation=1, value: float = 0.0) -> torch.Tensor:
    """Pad an NCHW tensor the way TF ``SAME`` does for a window of ``kernel_size`` (odd pixel bottom/right)."""
    top, bottom, left, right = same_pad_2d(x.shape[-2], x.shape[-1], kernel_size, stride, dilation)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


# ---------------------------------------------------------------------------------------------------------
# core layers
# ---------------------------------------------------------------------------------------------------------
class BatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d(num_features, eps, momentum, affine)`` with torch's momentum convention.

    Running variance is updated with the unbiased batch variance (torch semantics, the reference).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True):
        if momentum is None or not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"BatchNorm2d momentum must be a number in [0, 1] (torch convention), got {momentum!r}")
        super().__init__(num_features, eps=float(eps), momentum=float(momentum), affine=bool(affine))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        group = distributed.current()
        if self.training and group is not None and group.sync_bn:
            return _sync_batch_norm(self, x, group)
        return super().forward(x)


def _sync_batch_norm(bn: BatchNorm2d, x: torch.Tensor, group) -> torch.Tensor:
    """Training-mode BN with the statistics of the global batch (``TRAIN.SYNC_BN`` in a multi-process run): the
    per-channel sums of x and the count, then of the squared deviations, are summed over the ranks (a
    differentiable all-reduce, so the gradient flows through the other ranks' samples too); the running statistics
    move with the global mean and the unbiased global variance, as torch's own layer does with a local batch."""
    c = x.shape[1]
    count = torch.full((1,), float(x.numel() // c), dtype=x.dtype, device=x.device)
    stats = group.all_reduce_sum_differentiable(torch.cat([x.sum(dim=(0, 2, 3)), count]))
    n = stats[-1]
    mean = stats[:c] / n
    centred = x - mean.view(1, c, 1, 1)  # two passes, as torch's own kernel: no E[x^2] - E[x]^2 cancellation
    var = group.all_reduce_sum_differentiable((centred * centred).sum(dim=(0, 2, 3))) / n
    if float(n.detach()) < 2:
        raise ValueError(f"BatchNorm2d: expected more than 1 value per channel when training, got {int(n.detach())}")
    y = centred * torch.rsqrt(var + bn.eps).view(1, c, 1, 1)
    if bn.weight is not None:
        y = y * bn.weight.view(1, c, 1, 1) + bn.bias.view(1, c, 1, 1)
    with torch.no_grad():
        bn.running_mean.lerp_(mean.detach(), bn.momentum)
        count = n.detach()
        bn.running_var.lerp_(var.detach() * (count / (count - 1)), bn.momentum)
        bn.num_batches_tracked.add_(1)
    return y


class BatchNorm1d(BatchNorm2d):
    """BatchNorm over the features of ``[N, C]`` inputs (torch ``BatchNorm1d``): the 2-D layer on ``[N, C, 1, 1]``,
    so the statistics, the momentum convention and the state names are :class:`BatchNorm2d`'s."""

    def forward(self, x):
        return super().forward(x.reshape(x.shape[0], x.shape[1], 1, 1)).reshape(x.shape)


class Conv2d(nn.Conv2d):
    """``Conv2d(in_ch, out_ch, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=False)``.

    ``padding``: int, pair, ``'VALID'`` or ``'SAME'`` (TF semantics for any input size and dilation).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size, stride=1, padding: PadArg = 0, dilation=1,
                 groups: int = 1, bias: bool = False):
        kernel = _pair(kernel_size, "kernel_size")
        stride = _pair(stride, "stride")
        dilation = _pair(dilation, "dilation")
        mode, sym = _parse_padding(padding)
        plan = _SamePlan(kernel, stride, dilation) if mode == "SAME" else None
        pre_pad = None
        if plan is not None and plan.static is not None:
            pre_pad, sym = plan.static
            plan = None
        super().__init__(in_ch, out_ch, kernel, stride, sym, dilation, groups, bias)
        self.pad_mode = mode
        self._same: Optional[_SamePlan] = plan
        self._pre_pad = pre_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self._same
        if plan is None:
            if self._pre_pad is not None:
                x = F.pad(x, self._pre_pad)
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        pre_pad, sym = plan(x.shape[-2:])
        if pre_pad is not None:
            x = F.pad(x, pre_pad)
        return F.conv2d(x, self.weight, self.bias, self.stride, sym, self.dilation, self.groups)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text + (", padding=SAME" if self.pad_mode == "SAME" else "")


class Linear(nn.Linear):
    """``Linear(in_features, out_features, bias=True)``; weight ``[out, in]`` (the neutral layout)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)


class MaxPool2d(nn.MaxPool2d):
    """``MaxPool2d(kernel_size, stride=None, padding=0)``; ``'SAME'`` pads with -inf (max over valid elements)."""

    def __init__(self, kernel_size, stride=None, padding: PadArg = 0):
        kernel = _pair(kernel_size, "kernel_size")
        stride = kernel if stride is None else _pair(stride, "stride")
        mode, sym = _parse_padding(padding)
        plan = _SamePlan(kernel, stride, (1, 1)) if mode == "SAME" else None
        pre_pad = None
        if plan is not None and plan.static is not None:
            pre_pad, sym = plan.static
            plan = None
        super().__init__(kernel, stride, sym)
        self.pad_mode = mode
        self._same = plan
        self._pre_pad = pre_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self._same
        if plan is None:
            pre_pad, sym = self._pre_pad, self.padding
        else:
            pre_pad, sym = plan(x.shape[-2:])
        if pre_pad is not None:
            x = F.pad(x, pre_pad, value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride, sym)


class AvgPool2d(nn.AvgPool2d):
    """``AvgPool2d(kernel_size, stride=None, padding=0, count_include_pad=False)``.

    ``count_include_pad=False`` divides by the number of valid (in-image) elements, as TF ``SAME`` and DARTS;
    with asymmetric SAME padding the divisor comes from a count map cached per input size.
    """

    def __init__(self, kernel_size, stride=None, padding: PadArg = 0, count_include_pad: bool = False):
        kernel = _pair(kernel_size, "kernel_size")
        stride = kernel if stride is None else _pair(stride, "stride")
        mode, sym = _parse_padding(padding)
        super().__init__(kernel, stride, sym, count_include_pad=bool(count_include_pad))
        self.pad_mode = mode
        self._same = _SamePlan(kernel, stride, (1, 1)) if mode == "SAME" else None
        self._counts: Dict[tuple, torch.Tensor] = {}

    def _count_map(self, x: torch.Tensor, pre_pad) -> torch.Tensor:
        key = (x.shape[-2], x.shape[-1], x.dtype, x.device)
        counts = self._counts.get(key)
        if counts is None:
            left, right, top, bottom = pre_pad
            ch = _valid_counts_1d(x.shape[-2], self.kernel_size[0], self.stride[0], top, bottom)
            cw = _valid_counts_1d(x.shape[-1], self.kernel_size[1], self.stride[1], left, right)
            counts = torch.from_numpy(np.outer(ch, cw).astype(np.float64)).to(dtype=x.dtype, device=x.device)
            self._counts[key] = counts
        return counts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._same is None:
            return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, False, self.count_include_pad)
        plan = self._same
        pre_pad, sym = plan.static if plan.static is not None else plan(x.shape[-2:])
        if pre_pad is None:
            return F.avg_pool2d(x, self.kernel_size, self.stride, sym, False, self.count_include_pad)
        padded = F.pad(x, pre_pad)
        if self.count_include_pad:
            return F.avg_pool2d(padded, self.kernel_size, self.stride, 0, False, True)
        total = F.avg_pool2d(padded, self.kernel_size, self.stride, 0, False, True, divisor_override=1)
        return total / self._count_map(x, pre_pad)


# ---------------------------------------------------------------------------------------------------------
# activations and trivial ops
# ---------------------------------------------------------------------------------------------------------
def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``relu6(x + 3) / 6`` written as the formula (paddle's API slope is not exactly 1/6)."""
    return F.relu6(x + 3.0) / 6.0


class ReLU(nn.ReLU):
    def __init__(self):
        super().__init__(inplace=False)


class ReLU6(nn.ReLU6):
    def __init__(self):
        super().__init__(inplace=False)


class Swish(nn.Module):
    """``x * sigmoid(x)`` (fused SiLU kernel)."""

    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


class HardSigmoid(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) / 6.0


class Sigmoid(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)


class Identity(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """DARTS ``none``: zeros of the strided output shape (multiplies, so NaN/Inf propagate as upstream)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = int(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        if s == 1:
            return x.mul(0.0)
        return x[:, :, ::s, ::s].mul(0.0)


_ACTS = {
    "relu": ReLU,
    "relu6": ReLU6,
    "swish": Swish,
    "silu": Swish,
    "hard_sigmoid": HardSigmoid,
    "sigmoid": Sigmoid,
    "identity": Identity,
}


def create_act(name: str) -> nn.Module:
    """Activation module by name: relu, relu6, swish (= silu), hard_sigmoid, sigmoid, identity."""
    try:
        return _ACTS[name.lower()]()
    except (KeyError, AttributeError):
        raise ValueError(f"unknown activation {name!r}; known: {sorted(_ACTS)}") from None


# ---------------------------------------------------------------------------------------------------------
# composite blocks
# ---------------------------------------------------------------------------------------------------------
class SqueezeExcite(nn.Module):
    """mean-pool -> ``conv_reduce`` (1x1, bias) -> act -> ``conv_expand`` (1x1, bias) -> gate -> ``x * gate``."""

    def __init__(self, in_ch: int, reduced_ch: int, act: str = "relu", gate: str = "hard_sigmoid"):
        super().__init__()
        self.conv_reduce = Conv2d(in_ch, reduced_ch, 1, bias=True)
        self.act1 = create_act(act)
        self.conv_expand = Conv2d(reduced_ch, in_ch, 1, bias=True)
        self.gate = create_act(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.conv_expand(self.act1(self.conv_reduce(s)))
        return x * self.gate(s)


class SeparableConv2d(nn.Module):
    """Depthwise k x k (groups=in_ch, no bias) then pointwise 1x1 (no bias): PNASNet/timm naming."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size, stride=1, padding: PadArg = "SAME"):
        super().__init__()
        self.depthwise_conv2d = Conv2d(in_ch, in_ch, kernel_size, stride, padding, groups=in_ch, bias=False)
        self.pointwise_conv2d = Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv2d(self.depthwise_conv2d(x))


class ReLUConvBN(nn.Module):
    """DARTS ``ReLUConvBN``: ``op`` = [ReLU, Conv k x k, BN]."""

    def __init__(self, C_in: int, C_out: int, kernel_size, stride, padding: PadArg, affine: bool = True, *,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        super().__init__()
        self.op = nn.Sequential(
            ReLU(),
            Conv2d(C_in, C_out, kernel_size, stride, padding, bias=False),
            BatchNorm2d(C_out, eps=bn_eps, momentum=bn_momentum, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """DARTS ``DilConv``: ``op`` = [ReLU, dilated depthwise k x k (stride), 1x1 C_in->C_out, BN]."""

    def __init__(self, C_in: int, C_out: int, kernel_size, stride, padding: PadArg, dilation, affine: bool = True, *,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        super().__init__()
        self.op = nn.Sequential(
            ReLU(),
            Conv2d(C_in, C_in, kernel_size, stride, padding, dilation, groups=C_in, bias=False),
            Conv2d(C_in, C_out, 1, bias=False),
            BatchNorm2d(C_out, eps=bn_eps, momentum=bn_momentum, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """DARTS ``SepConv``: ``op`` = [ReLU, dw (stride), pw C_in->C_in, BN, ReLU, dw, pw C_in->C_out, BN]."""

    def __init__(self, C_in: int, C_out: int, kernel_size, stride, padding: PadArg, affine: bool = True, *,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        super().__init__()
        self.op = nn.Sequential(
            ReLU(),
            Conv2d(C_in, C_in, kernel_size, stride, padding, groups=C_in, bias=False),
            Conv2d(C_in, C_in, 1, bias=False),
            BatchNorm2d(C_in, eps=bn_eps, momentum=bn_momentum, affine=affine),
            ReLU(),
            Conv2d(C_in, C_in, kernel_size, 1, padding, groups=C_in, bias=False),
            Conv2d(C_in, C_out, 1, bias=False),
            BatchNorm2d(C_out, eps=bn_eps, momentum=bn_momentum, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class FactorizedReduce(nn.Module):
    """DARTS ``FactorizedReduce``: ReLU; ``conv_1`` (1x1 s2) on x, ``conv_2`` (1x1 s2) on ``x[:, :, 1:, 1:]``;
    concat; ``bn``.  Needs even ``C_out`` and even H, W (as upstream).

    A 1x1 stride-2 convolution reads the pixels (2i, 2j) (``conv_2``: (2i+1, 2j+1)), so the input is sampled first
    and the convolutions run at stride 1: the same numbers, and it avoids a heap corruption in torch 2.14's oneDNN
    1x1 stride-2 weight gradient on CPU with 2+ threads and an odd batch (a search epoch's last batch of 15 aborted
    the process; ``tests/test_pcdarts_search.py`` checks the formulation against the strided one)."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True, *, bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even C_out, got {C_out}")
        self.relu = ReLU()
        self.conv_1 = Conv2d(C_in, C_out // 2, 1, bias=False)  # stride 2 by sampling the input (docstring)
        self.conv_2 = Conv2d(C_in, C_out // 2, 1, bias=False)
        self.bn = BatchNorm2d(C_out, eps=bn_eps, momentum=bn_momentum, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(f"FactorizedReduce needs even H and W (upstream DARTS), got input {list(x.shape)}")
        x = self.relu(x)
        b, c, h, w = x.shape
        grid = x.reshape(b, c, h // 2, 2, w // 2, 2)  # pixel (2i + a, 2j + b)
        even, odd = grid[:, :, :, 0, :, 0].contiguous(), grid[:, :, :, 1, :, 1].contiguous()
        return self.bn(torch.cat([self.conv_1(even), self.conv_2(odd)], dim=1))


# ---------------------------------------------------------------------------------------------------------
# stochastic ops with injectable masks
# ---------------------------------------------------------------------------------------------------------
# set_next_mask and the checks of an injected mask: common/op_args.py (DropPathMasks, DropoutMasks)
class DropPath(DropPathMasks, nn.Module):
    """Per-sample drop path: in training ``x * mask / keep`` with a keep mask per sample, keep = 1 - drop_prob.

    ``set_next_mask(mask)`` (shape ``[N]`` or ``[N, 1, 1, 1]``, values 0/1) fixes the mask of the next training
    call; otherwise the framework RNG draws it.  Eval mode, or drop_prob 0 without a pending mask, is a no-op.
    """

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)
        self._next_mask: Optional[np.ndarray] = None
        self.mask_source = None  # a common.random_masks.MaskSource, set by attach_mask_source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        mask = self._take_next_mask(x.shape[0])
        if mask is not None:
            scale = torch.from_numpy((mask / keep).reshape(shape)).to(dtype=x.dtype, device=x.device)
            return x * scale
        if self.drop_prob <= 0.0:
            return x
        if self.mask_source is not None:  # numpy masks: the same on both backends
            self.set_next_mask(self.mask_source.keep_mask((int(x.shape[0]),), keep))
            return self.forward(x)
        scale = x.new_empty(shape).bernoulli_(keep).div_(keep)
        return x * scale


class Dropout(DropoutMasks, nn.Module):
    """Inverted dropout; ``set_next_mask(mask)`` (shape of the input, 0/1) fixes the next training mask."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = dropout_p(p)
        self._next_mask: Optional[np.ndarray] = None
        self.mask_source = None  # a common.random_masks.MaskSource, set by attach_mask_source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        mask = self._take_next_mask(x.shape)
        if mask is not None:
            scale = torch.from_numpy(mask / (1.0 - self.p)).to(dtype=x.dtype, device=x.device)
            return x * scale
        if self.p == 0.0:
            return x
        if self.mask_source is not None:  # numpy masks: the same on both backends
            self.set_next_mask(self.mask_source.keep_mask(tuple(int(d) for d in x.shape), 1.0 - self.p))
            return self.forward(x)
        return F.dropout(x, self.p, True)


# ---------------------------------------------------------------------------------------------------------
# shape ops
# ---------------------------------------------------------------------------------------------------------
def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``[B, g, C/g, H, W] -> transpose(1, 2) -> [B, C, H, W]``: output channel ``g*c + i`` = input ``i*(C/g) + c``."""
    b, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"channel_shuffle: {c} channels are not divisible by {groups} groups")
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = int(groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)


class Upsample(nn.Module):
    """``Upsample(size=None, scale_factor=None, mode='nearest', align_corners=False)``.

    bilinear: ``align_corners=False`` is half-pixel (src = (dst + 0.5) * scale - 0.5, clamped at 0), ``True`` maps
    corners; ``scale`` = in/out for ``size`` and 1/scale_factor for ``scale_factor`` (both frameworks' rule).
    """

    MODES = ("nearest", "bilinear")

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest", align_corners: bool = False):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"Upsample mode must be one of {self.MODES}, got {mode!r}")
        if (size is None) == (scale_factor is None):
            raise ValueError("Upsample needs exactly one of size and scale_factor")
        if mode == "nearest" and align_corners:
            raise ValueError("Upsample: align_corners applies only to mode='bilinear'")
        self.size = None if size is None else _pair(size, "size")
        self.scale_factor = None if scale_factor is None else (
            tuple(float(s) for s in scale_factor) if isinstance(scale_factor, (tuple, list)) else float(scale_factor))
        self.mode = mode
        self.align_corners = bool(align_corners)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, self.size, self.scale_factor, self.mode,
                             self.align_corners if self.mode == "bilinear" else None)

    def extra_repr(self) -> str:
        return (f"size={self.size}, scale_factor={self.scale_factor}, mode={self.mode}, "
                f"align_corners={self.align_corners}")


def resize_bilinear(x: torch.Tensor, size, align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of an NCHW tensor to ``size`` = ``(h, w)`` (read at run time, e.g. another tensor's size):
    ``Upsample(size, mode='bilinear')``'s formula, for up- and downsampling alike, without antialiasing."""
    return F.interpolate(x, size=_pair(size, "size"), mode="bilinear", align_corners=bool(align_corners))


# ---------------------------------------------------------------------------------------------------------
# parameter listing for common.init
# ---------------------------------------------------------------------------------------------------------
def named_param_kinds(module: nn.Module) -> Dict[str, ParamSpec]:
    """``{canonical name: ParamSpec}`` for every state tensor (torch layout, ``num_batches_tracked`` left out)."""
    known: Dict[str, ParamSpec] = {}
    for prefix, sub in module.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(sub, nn.modules.conv._ConvNd):
            wshape = tuple(sub.weight.shape)
            known[dot + "weight"] = ParamSpec(CONV_WEIGHT, wshape, int(sub.groups), wshape)
            if sub.bias is not None:
                known[dot + "bias"] = ParamSpec(CONV_BIAS, tuple(sub.bias.shape), int(sub.groups), wshape)
        elif isinstance(sub, nn.Linear):
            wshape = tuple(sub.weight.shape)
            known[dot + "weight"] = ParamSpec(LINEAR_WEIGHT, wshape, 1, wshape)
            if sub.bias is not None:
                known[dot + "bias"] = ParamSpec(LINEAR_BIAS, tuple(sub.bias.shape), 1, wshape)
        elif isinstance(sub, nn.modules.batchnorm._NormBase):
            leaves = (("weight", BN_WEIGHT), ("bias", BN_BIAS), ("running_mean", BN_MEAN), ("running_var", BN_VAR))
            for leaf, kind in leaves:
                tensor = getattr(sub, leaf, None)
                if tensor is not None:
                    known[dot + leaf] = ParamSpec(kind, tuple(tensor.shape))
    out: Dict[str, ParamSpec] = {}
    for name, tensor in module.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        out[name] = known.get(name) or ParamSpec(OTHER, tuple(tensor.shape))
    return out


def attach_mask_source(module, source) -> int:
    """Make every ``DropPath`` / ``Dropout`` inside ``module`` draw its training masks from ``source``
    (a ``common.random_masks.MaskSource``; ``None`` restores the framework RNG).  Returns how many layers."""
    count = 0
    for layer in module.modules():
        if isinstance(layer, (DropPath, Dropout)):
            layer.mask_source = source
            count += 1
    return count
