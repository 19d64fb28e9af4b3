"""PaddlePaddle op library: the twin of ``torch_impl/ops.py``.

Same class names, constructor signatures and attribute names as the torch file (docs/CONVENTIONS.md, "Op
library contract"); torch's semantics are the reference.  What this file changes relative to plain Paddle:

* ``BatchNorm2d`` takes torch's momentum and updates the running variance with the **unbiased** batch
  variance, like torch.  The fused kernel normalises (and gives its batch mean and inverse std); the running
  stats are then updated from those with torch's momentum in the tensor's own precision (two ``lerp_``).
  Letting the kernel update them and correcting afterwards is not enough: Paddle takes momentum as a float32
  attribute (0.9 -> 0.899999976), which alone puts float64 running stats 1e-8 away from torch; this way they
  agree to ~1e-16.  The kernel also takes epsilon as a float32 attribute (1e-3 -> 0.0010000000475), so float64
  tensors whose eps float32 cannot represent use an unfused float64 formula;
* ``'SAME'`` is computed with ``common.padding`` and passed to the kernels as explicit
  ``[top, bottom, left, right]`` padding (Paddle's own ``padding='SAME'`` silently ignores ``dilation``);
* ``HardSigmoid`` is the formula ``relu6(x + 3) / 6`` (the API's slope attribute is float32 1/6), with relu6
  written as ``clip`` because paddle's relu6 has no double grad (Cream's meta step differentiates twice);
* depthwise convs use the grouped ``conv2d`` op on CPU (``depthwise_conv2d`` has no CPU double grad);
* ``AvgPool2d``: paddle's pool2d backward scales in float32 even for float64, and ``exclusive=False`` with
  bottom/right-only padding divides by a wrong count; those cases sum with a ones-kernel conv instead;
* float64 bilinear ``Upsample`` / ``resize_bilinear`` use float64 interpolation tables (Paddle's kernel computes
  coordinates in float32, 1e-6 off in float64; float32 inputs use the native kernel).

Max pooling has no double grad in paddle (kernel: "only supports avgpool"); nothing here works around that.

Never imports torch or tensorflow.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle import _C_ops

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
    """TF SAME padding for one layer as the kernels' padding list, per input size (cached).

    Symmetric SAME gives ``[ph, pw]``; asymmetric gives ``[top, bottom, left, right]``, which Paddle's conv and
    pool kernels take directly (no padded copy).  With stride 1 the padding is size-independent (``static``).
    """

    __slots__ = ("kernel", "stride", "dilation", "static", "cache")

    def __init__(self, kernel, stride, dilation):
        self.kernel, self.stride, self.dilation = kernel, stride, dilation
        self.cache: Dict[Tuple[int, int], list] = {}
        self.static = self._plan(1, 1) if stride == (1, 1) else None

    def _plan(self, height: int, width: int) -> list:
        top, bottom, left, right = same_pad_2d(height, width, self.kernel, self.stride, self.dilation)
        if top == bottom and left == right:
            return [top, left]
        return [top, bottom, left, right]

    def __call__(self, x) -> list:
        shape = x.shape
        hw = (shape[2], shape[3])
        plan = self.cache.get(hw)
        if plan is None:
            plan = self.cache[hw] = self._plan(*hw)
        return plan


def pad_same(x: paddle.Tensor, kernel_size, stride=1, dilation=1, value: float = 0.0) -> paddle.Tensor:
    """Pad an NCHW tensor the way TF ``SAME`` does for a window of ``kernel_size`` (odd pixel bottom/right)."""
    top, bottom, left, right = same_pad_2d(x.shape[-2], x.shape[-1], kernel_size, stride, dilation)
    if top == bottom == left == right == 0:
        return x
    # 4 entries on a 4-D tensor: [left, right, top, bottom] of the last two axes, as torch (anchors row 21).
    return F.pad(x, [left, right, top, bottom], mode="constant", value=value, data_format="NCHW")


# ---------------------------------------------------------------------------------------------------------
# core layers
# ---------------------------------------------------------------------------------------------------------
class BatchNorm2d(nn.BatchNorm2D):
    """``BatchNorm2d(num_features, eps, momentum, affine)`` with torch's momentum convention and torch's
    unbiased running-variance update.  State: ``weight, bias, _mean, _variance`` (layout renames the stats)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True):
        if momentum is None or not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"BatchNorm2d momentum must be a number in [0, 1] (torch convention), got {momentum!r}")
        affine = bool(affine)
        super().__init__(
            num_features,
            momentum=1.0 - float(momentum),
            epsilon=float(eps),
            weight_attr=None if affine else False,
            bias_attr=None if affine else False,
        )
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = float(momentum)  # torch convention; paddle's own _momentum = 1 - momentum
        self.affine = affine
        self._lerp_weight: Dict[object, paddle.Tensor] = {}
        # The kernel takes epsilon as a float32 attribute; float64 tensors need the exact value.
        self._eps_fits_kernel = float(np.float32(self.eps)) == self.eps

    def _momentum_tensor(self, dtype, place) -> paddle.Tensor:
        """torch momentum as a 0-d tensor for ``lerp_`` (a float weight costs ~200 us per call in paddle)."""
        key = (dtype, place, self.momentum)  # momentum may be reassigned; a cached weight must follow it
        weight = self._lerp_weight.get(key)
        if weight is None:
            weight = self._lerp_weight[key] = paddle.to_tensor(self.momentum, dtype=dtype, place=place)
        return weight

    def _forward_exact_eps(self, x: paddle.Tensor) -> paddle.Tensor:
        """Unfused float64 BN with the exact epsilon (the kernel would round it to float32)."""
        eps = self.eps
        if not self.training:
            scale = paddle.rsqrt(self._variance + eps)
            if self.weight is not None:
                scale = scale * self.weight
            shift = -self._mean * scale
            if self.bias is not None:
                shift = shift + self.bias
            return x * scale.reshape([1, -1, 1, 1]) + shift.reshape([1, -1, 1, 1])
        shape = x.shape
        n = shape[0] * shape[2] * shape[3]
        if n < 2:
            raise ValueError(f"BatchNorm2d: expected more than 1 value per channel when training, got input "
                             f"{list(shape)}")
        mean = x.mean(axis=[0, 2, 3], keepdim=True)
        centred = x - mean
        var = (centred * centred).mean(axis=[0, 2, 3], keepdim=True)
        y = centred * paddle.rsqrt(var + eps)
        if self.weight is not None:
            y = y * self.weight.reshape([1, -1, 1, 1])
        if self.bias is not None:
            y = y + self.bias.reshape([1, -1, 1, 1])
        weight = self._momentum_tensor(self._mean.dtype, self._mean.place)
        _C_ops.lerp_(self._mean, mean.detach().reshape([-1]), weight)
        _C_ops.lerp_(self._variance, var.detach().reshape([-1]) * (n / (n - 1.0)), weight)
        return y

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        group = distributed.current()
        if self.training and group is not None and group.sync_bn:
            return _sync_batch_norm(self, x, group)
        if not self._eps_fits_kernel and x.dtype == paddle.float64:
            return self._forward_exact_eps(x)
        if not self.training:
            return _C_ops.batch_norm(x, self._mean, self._variance, self.weight, self.bias,
                                     True, self._momentum, self._epsilon, "NCHW", True, False)[0]
        shape = x.shape
        n = shape[0] * shape[2] * shape[3]
        if n < 2:
            raise ValueError(f"BatchNorm2d: expected more than 1 value per channel when training, got input "
                             f"{list(shape)}")
        mean, variance = self._mean, self._variance
        # The kernel writes its running-stat outputs in place into the tensors it is given and keeps them for
        # backward; give it throw-away buffers so the real statistics can be updated below without tripping
        # paddle's in-place version check.
        place = mean.place
        out, _, _, batch_mean, inv_std, _ = _C_ops.batch_norm(
            x, _C_ops.empty([shape[1]], mean.dtype, place), _C_ops.empty([shape[1]], mean.dtype, place),
            self.weight, self.bias, False, 0.0, self._epsilon, "NCHW", False, False)
        unbias = n / (n - 1.0)
        # biased batch variance = inv_std**-2 - eps; torch's running update uses it times n / (n - 1).
        var = _C_ops.scale(_C_ops.pow(inv_std.detach(), -2.0), unbias, -self._epsilon * unbias, True)
        weight = self._momentum_tensor(mean.dtype, place)
        _C_ops.lerp_(mean, batch_mean.detach(), weight)
        _C_ops.lerp_(variance, var, weight)
        return out

    def extra_repr(self) -> str:
        return (f"num_features={self.num_features}, eps={self.eps}, momentum={self.momentum} (torch), "
                f"affine={self.affine}")


def _sync_batch_norm(bn: BatchNorm2d, x: paddle.Tensor, group) -> paddle.Tensor:
    """Training-mode BN with the statistics of the global batch (``TRAIN.SYNC_BN`` in a multi-process run): the
    per-channel sums of x and the count, then of the squared deviations, are summed over the ranks (a
    differentiable all-reduce, so the gradient flows through the other ranks' samples too); the running statistics
    move with the global mean and the unbiased global variance, as torch's own layer does with a local batch."""
    c = x.shape[1]
    count = paddle.full([1], float(int(x.numel()) // c), dtype=x.dtype)
    stats = group.all_reduce_sum_differentiable(paddle.concat([x.sum(axis=[0, 2, 3]), count]))
    n = stats[-1]
    mean = stats[:c] / n
    centred = x - mean.reshape([1, c, 1, 1])  # two passes, as torch's own kernel: no E[x^2] - E[x]^2 cancellation
    var = group.all_reduce_sum_differentiable((centred * centred).sum(axis=[0, 2, 3])) / n
    if float(n) < 2:
        raise ValueError(f"BatchNorm2d: expected more than 1 value per channel when training, got {int(float(n))}")
    y = centred * paddle.rsqrt(var + bn.eps).reshape([1, c, 1, 1])
    if bn.weight is not None:
        y = y * bn.weight.reshape([1, c, 1, 1]) + bn.bias.reshape([1, c, 1, 1])
    weight = bn._momentum_tensor(bn._mean.dtype, bn._mean.place)
    nn_ = float(n)
    _C_ops.lerp_(bn._mean, mean.detach(), weight)
    _C_ops.lerp_(bn._variance, var.detach() * (nn_ / (nn_ - 1.0)), weight)
    return y


class BatchNorm1d(BatchNorm2d):
    """BatchNorm over the features of ``[N, C]`` inputs (torch ``BatchNorm1d``): the 2-D layer on ``[N, C, 1, 1]``,
    so the statistics, the momentum convention and the state names are :class:`BatchNorm2d`'s."""

    def forward(self, x):
        return super().forward(x.reshape([x.shape[0], x.shape[1], 1, 1])).reshape(x.shape)


class Conv2d(nn.Conv2D):
    """``Conv2d(in_ch, out_ch, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=False)``.

    ``padding``: int, pair, ``'VALID'`` or ``'SAME'`` (TF semantics for any input size and dilation).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size, stride=1, padding: PadArg = 0, dilation=1,
                 groups: int = 1, bias: bool = False):
        kernel = _pair(kernel_size, "kernel_size")
        stride = _pair(stride, "stride")
        dilation = _pair(dilation, "dilation")
        mode, sym = _parse_padding(padding)
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=sym, dilation=dilation, groups=groups,
                         bias_attr=None if bias else False)
        plan = _SamePlan(kernel, stride, dilation) if mode == "SAME" else None
        self._pad = list(sym)
        if plan is not None and plan.static is not None:
            self._pad, plan = plan.static, None
        self._same: Optional[_SamePlan] = plan
        self.pad_mode = mode
        self.in_channels, self.out_channels, self.groups = int(in_ch), int(out_ch), int(groups)
        self.kernel_size, self.stride, self.dilation = kernel, stride, dilation
        self._strides, self._dilations = list(stride), list(dilation)
        # Paddle's depthwise_conv2d op has no CPU double-grad kernel (Cream's meta step differentiates twice);
        # on CPU the generic grouped conv2d op is as fast and has one, so the depthwise op is used on GPU only.
        self._depthwise = self._op_type == "depthwise_conv2d"

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        plan = self._same
        pad = self._pad if plan is None else plan(x)
        if self._depthwise and x.place is not None and x.place.is_gpu_place():  # place is None under to_static
            y = _C_ops.depthwise_conv2d(x, self.weight, self._strides, pad, "EXPLICIT", self._groups,
                                        self._dilations, "NCHW")
        else:
            y = _C_ops.conv2d(x, self.weight, self._strides, pad, "EXPLICIT", self._dilations, self._groups, "NCHW")
        if self.bias is not None:
            y = _C_ops.add(y, self.bias.reshape([1, -1, 1, 1]))
        return y

    def extra_repr(self) -> str:
        pad = "SAME" if self.pad_mode == "SAME" else self._pad
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={pad}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}")


class Linear(nn.Linear):
    """``Linear(in_features, out_features, bias=True)``; paddle stores the weight ``[in, out]`` (layout.py
    transposes to the neutral ``[out, in]``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias_attr=None if bias else False)
        self.in_features, self.out_features = int(in_features), int(out_features)


class MaxPool2d(nn.MaxPool2D):
    """``MaxPool2d(kernel_size, stride=None, padding=0)``; ``'SAME'`` ignores padded positions (-inf padding)."""

    def __init__(self, kernel_size, stride=None, padding: PadArg = 0):
        kernel = _pair(kernel_size, "kernel_size")
        stride = kernel if stride is None else _pair(stride, "stride")
        mode, sym = _parse_padding(padding)
        super().__init__(kernel, stride, list(sym))
        plan = _SamePlan(kernel, stride, (1, 1)) if mode == "SAME" else None
        self._pad = list(sym)
        if plan is not None and plan.static is not None:
            self._pad, plan = plan.static, None
        self._same = plan
        self.pad_mode = mode
        self.kernel_size, self.stride = kernel, stride
        self._k, self._s = list(kernel), list(stride)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        plan = self._same
        pad = self._pad if plan is None else plan(x)
        return _C_ops.pool2d(x, self._k, self._s, pad, False, True, "NCHW", "max", False, False, "EXPLICIT")

    def extra_repr(self) -> str:
        pad = "SAME" if self.pad_mode == "SAME" else self._pad
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={pad}"


class AvgPool2d(nn.AvgPool2D):
    """``AvgPool2d(kernel_size, stride=None, padding=0, count_include_pad=False)``.

    ``count_include_pad=False`` = Paddle ``exclusive=True``: divide by the valid count, also for asymmetric
    SAME padding (checked against numpy in the parity tests).  Paddle's pool2d *backward* scales by the
    window count in float32 precision even for float64 tensors (~2e-8 off), and with ``exclusive=False`` and
    padding only at the bottom/right its forward divides by a wrong count; in those cases the window sum comes
    from a ones-kernel depthwise conv, divided by k*k or by a count map (cached per input size).
    """

    def __init__(self, kernel_size, stride=None, padding: PadArg = 0, count_include_pad: bool = False):
        kernel = _pair(kernel_size, "kernel_size")
        stride = kernel if stride is None else _pair(stride, "stride")
        mode, sym = _parse_padding(padding)
        super().__init__(kernel, stride, list(sym), exclusive=not count_include_pad)
        plan = _SamePlan(kernel, stride, (1, 1)) if mode == "SAME" else None
        self._pad = list(sym)
        if plan is not None and plan.static is not None:
            self._pad, plan = plan.static, None
        self._same = plan
        self.pad_mode = mode
        self.kernel_size, self.stride = kernel, stride
        self.count_include_pad = bool(count_include_pad)
        self._k, self._s = list(kernel), list(stride)
        self._f64: Dict[tuple, paddle.Tensor] = {}

    def _avg_by_sum(self, x: paddle.Tensor, pad: list) -> paddle.Tensor:
        shape = x.shape
        channels, h, w = shape[1], shape[2], shape[3]
        ones = self._f64.get(("ones", channels, x.dtype))
        if ones is None:
            ones = paddle.ones([channels, 1] + self._k, dtype=x.dtype).to(x.place)
            self._f64[("ones", channels, x.dtype)] = ones
        total = _C_ops.conv2d(x, ones, self._s, pad, "EXPLICIT", [1, 1], channels, "NCHW")
        if self.count_include_pad:
            return total / float(self._k[0] * self._k[1])
        counts = self._f64.get(("counts", h, w, x.dtype))
        if counts is None:
            top, bottom, left, right = pad if len(pad) == 4 else (pad[0], pad[0], pad[1], pad[1])
            ch = _valid_counts_1d(h, self._k[0], self._s[0], top, bottom)
            cw = _valid_counts_1d(w, self._k[1], self._s[1], left, right)
            counts = paddle.to_tensor(np.outer(ch, cw)[None, None], dtype=x.dtype, place=x.place)
            self._f64[("counts", h, w, x.dtype)] = counts
        return total / counts

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        plan = self._same
        pad = self._pad if plan is None else plan(x)
        # float64: exact backward; count_include_pad with bottom/right-only padding: paddle's kernel divides by a
        # wrong count there (exclusive=False, also with its own padding='SAME'), so sum and divide by k*k.
        if x.dtype == paddle.float64 or (self.count_include_pad and len(pad) == 4):
            return self._avg_by_sum(x, pad)
        return _C_ops.pool2d(x, self._k, self._s, pad, False, not self.count_include_pad, "NCHW", "avg",
                             False, False, "EXPLICIT")

    def extra_repr(self) -> str:
        pad = "SAME" if self.pad_mode == "SAME" else self._pad
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={pad}, "
                f"count_include_pad={self.count_include_pad}")


# ---------------------------------------------------------------------------------------------------------
# activations and trivial ops
# ---------------------------------------------------------------------------------------------------------
def hard_sigmoid(x: paddle.Tensor) -> paddle.Tensor:
    """``relu6(x + 3) / 6`` as the formula: ``F.hardsigmoid``'s slope is a float32 attribute (0.1666667).

    relu6 is written ``clip(., 0, 6)`` (the same min/max, the same gradient mask): Paddle's relu6 and hardtanh
    have no double-grad op, clip has."""
    return paddle.clip(x + 3.0, 0.0, 6.0) / 6.0


class ReLU(nn.ReLU):
    def __init__(self):
        super().__init__()


class ReLU6(nn.ReLU6):
    """``min(max(x, 0), 6)`` via clip (double-differentiable, unlike paddle's relu6 op)."""

    def __init__(self):
        super().__init__()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return paddle.clip(x, 0.0, 6.0)


class Swish(nn.Layer):
    """``x * sigmoid(x)`` (fused SiLU kernel)."""

    def __init__(self):
        super().__init__()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return F.silu(x)


class HardSigmoid(nn.Layer):
    def __init__(self):
        super().__init__()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return paddle.clip(x + 3.0, 0.0, 6.0) / 6.0


class Sigmoid(nn.Layer):
    def __init__(self):
        super().__init__()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return F.sigmoid(x)


class Identity(nn.Layer):
    def __init__(self):
        super().__init__()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return x


class Zero(nn.Layer):
    """DARTS ``none``: zeros of the strided output shape (multiplies, so NaN/Inf propagate like torch)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = int(stride)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        s = self.stride
        if s == 1:
            return x * 0.0
        return x[:, :, ::s, ::s] * 0.0


_ACTS = {
    "relu": ReLU,
    "relu6": ReLU6,
    "swish": Swish,
    "silu": Swish,
    "hard_sigmoid": HardSigmoid,
    "sigmoid": Sigmoid,
    "identity": Identity,
}


def create_act(name: str) -> nn.Layer:
    """Activation layer by name: relu, relu6, swish (= silu), hard_sigmoid, sigmoid, identity."""
    try:
        return _ACTS[name.lower()]()
    except (KeyError, AttributeError):
        raise ValueError(f"unknown activation {name!r}; known: {sorted(_ACTS)}") from None


# ---------------------------------------------------------------------------------------------------------
# composite blocks
# ---------------------------------------------------------------------------------------------------------
class SqueezeExcite(nn.Layer):
    """mean-pool -> ``conv_reduce`` (1x1, bias) -> act -> ``conv_expand`` (1x1, bias) -> gate -> ``x * gate``."""

    def __init__(self, in_ch: int, reduced_ch: int, act: str = "relu", gate: str = "hard_sigmoid"):
        super().__init__()
        self.conv_reduce = Conv2d(in_ch, reduced_ch, 1, bias=True)
        self.act1 = create_act(act)
        self.conv_expand = Conv2d(reduced_ch, in_ch, 1, bias=True)
        self.gate = create_act(gate)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        s = x.mean(axis=[2, 3], keepdim=True)
        s = self.conv_expand(self.act1(self.conv_reduce(s)))
        return x * self.gate(s)


class SeparableConv2d(nn.Layer):
    """Depthwise k x k (groups=in_ch, no bias) then pointwise 1x1 (no bias): PNASNet/timm naming."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size, stride=1, padding: PadArg = "SAME"):
        super().__init__()
        self.depthwise_conv2d = Conv2d(in_ch, in_ch, kernel_size, stride, padding, groups=in_ch, bias=False)
        self.pointwise_conv2d = Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.pointwise_conv2d(self.depthwise_conv2d(x))


class ReLUConvBN(nn.Layer):
    """DARTS ``ReLUConvBN``: ``op`` = [ReLU, Conv k x k, BN]."""

    def __init__(self, C_in: int, C_out: int, kernel_size, stride, padding: PadArg, affine: bool = True, *,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        super().__init__()
        self.op = nn.Sequential(
            ReLU(),
            Conv2d(C_in, C_out, kernel_size, stride, padding, bias=False),
            BatchNorm2d(C_out, eps=bn_eps, momentum=bn_momentum, affine=affine),
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.op(x)


class DilConv(nn.Layer):
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

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.op(x)


class SepConv(nn.Layer):
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

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.op(x)


class FactorizedReduce(nn.Layer):
    """DARTS ``FactorizedReduce``: ReLU; ``conv_1`` (1x1 s2) on x, ``conv_2`` (1x1 s2) on ``x[:, :, 1:, 1:]``;
    concat; ``bn``.  Needs even ``C_out`` and even H, W (as upstream).

    A 1x1 stride-2 convolution reads the pixels (2i, 2j) (``conv_2``: (2i+1, 2j+1)), so the input is sampled first
    and the convolutions run at stride 1, as in the torch twin (which needs it to avoid a oneDNN bug)."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True, *, bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even C_out, got {C_out}")
        self.relu = ReLU()
        self.conv_1 = Conv2d(C_in, C_out // 2, 1, bias=False)  # stride 2 by sampling the input (docstring)
        self.conv_2 = Conv2d(C_in, C_out // 2, 1, bias=False)
        self.bn = BatchNorm2d(C_out, eps=bn_eps, momentum=bn_momentum, affine=affine)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        shape = x.shape
        if shape[2] % 2 or shape[3] % 2:
            raise ValueError(f"FactorizedReduce needs even H and W (upstream DARTS), got input {list(shape)}")
        x = self.relu(x)
        grid = x.reshape([shape[0], shape[1], shape[2] // 2, 2, shape[3] // 2, 2])  # pixel (2i + a, 2j + b)
        even, odd = grid[:, :, :, 0, :, 0], grid[:, :, :, 1, :, 1]
        return self.bn(paddle.concat([self.conv_1(even), self.conv_2(odd)], axis=1))


# ---------------------------------------------------------------------------------------------------------
# stochastic ops with injectable masks
# ---------------------------------------------------------------------------------------------------------
def _np_dtype(x: paddle.Tensor) -> np.dtype:
    return np.dtype(str(x.dtype).replace("paddle.", ""))


# set_next_mask and the checks of an injected mask: common/op_args.py (DropPathMasks, DropoutMasks)
class DropPath(DropPathMasks, nn.Layer):
    """Per-sample drop path: in training ``x * mask / keep`` with a keep mask per sample, keep = 1 - drop_prob.

    ``set_next_mask(mask)`` (shape ``[N]`` or ``[N, 1, 1, 1]``, values 0/1) fixes the mask of the next training
    call; otherwise the framework RNG draws it.  Eval mode, or drop_prob 0 without a pending mask, is a no-op.
    """

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)
        self._next_mask: Optional[np.ndarray] = None
        self.mask_source = None  # a common.random_masks.MaskSource, set by attach_mask_source

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = [x.shape[0]] + [1] * (x.ndim - 1)
        mask = self._take_next_mask(x.shape[0])
        if mask is not None:
            scale = paddle.to_tensor((mask / keep).reshape(shape).astype(_np_dtype(x)), place=x.place)
            return x * scale
        if self.drop_prob <= 0.0:
            return x
        if self.mask_source is not None:  # numpy masks: the same on both backends
            self.set_next_mask(self.mask_source.keep_mask((int(x.shape[0]),), keep))
            return self.forward(x)
        scale = paddle.bernoulli(paddle.full(shape, keep, dtype=x.dtype)) / keep
        return x * scale


class Dropout(DropoutMasks, nn.Layer):
    """Inverted dropout; ``set_next_mask(mask)`` (shape of the input, 0/1) fixes the next training mask."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = dropout_p(p)
        self._next_mask: Optional[np.ndarray] = None
        self.mask_source = None  # a common.random_masks.MaskSource, set by attach_mask_source

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not self.training:
            return x
        mask = self._take_next_mask(x.shape)
        if mask is not None:
            scale = paddle.to_tensor((mask / (1.0 - self.p)).astype(_np_dtype(x)), place=x.place)
            return x * scale
        if self.p == 0.0:
            return x
        if self.mask_source is not None:  # numpy masks: the same on both backends
            self.set_next_mask(self.mask_source.keep_mask(tuple(int(d) for d in x.shape), 1.0 - self.p))
            return self.forward(x)
        return F.dropout(x, self.p, training=True, mode="upscale_in_train")


# ---------------------------------------------------------------------------------------------------------
# shape ops
# ---------------------------------------------------------------------------------------------------------
def channel_shuffle(x: paddle.Tensor, groups: int) -> paddle.Tensor:
    """``[B, g, C/g, H, W] -> transpose(1, 2) -> [B, C, H, W]``: output channel ``g*c + i`` = input ``i*(C/g) + c``."""
    b, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"channel_shuffle: {c} channels are not divisible by {groups} groups")
    return x.reshape([b, groups, c // groups, h, w]).transpose([0, 2, 1, 3, 4]).reshape([b, c, h, w])


class ChannelShuffle(nn.Layer):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = int(groups)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return channel_shuffle(x, self.groups)


def _linear_axis(in_size: int, out_size: int, align_corners: bool, scale_factor: Optional[float]):
    """float64 bilinear taps along one axis with torch's source-index rule (i0, i1, w0, w1)."""
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = np.arange(out_size, dtype=np.float64) * scale
    else:
        scale = 1.0 / scale_factor if scale_factor is not None else in_size / out_size
        src = np.maximum((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = src - i0
    return i0, i1, 1.0 - w1, w1


def _bilinear_tables(h: int, w: int, oh: int, ow: int, align_corners: bool, scale_factors, place) -> tuple:
    """float64 index and weight tensors of a bilinear resize (h, w) -> (oh, ow) with torch's source-index rule."""
    ih0, ih1, hw0, hw1 = _linear_axis(h, oh, align_corners, scale_factors[0])
    iw0, iw1, ww0, ww1 = _linear_axis(w, ow, align_corners, scale_factors[1])
    return (
        paddle.to_tensor(iw0, place=place), paddle.to_tensor(iw1, place=place),
        paddle.to_tensor(ww0.reshape(1, 1, 1, ow), place=place),
        paddle.to_tensor(ww1.reshape(1, 1, 1, ow), place=place),
        paddle.to_tensor(ih0, place=place), paddle.to_tensor(ih1, place=place),
        paddle.to_tensor(hw0.reshape(1, 1, oh, 1), place=place),
        paddle.to_tensor(hw1.reshape(1, 1, oh, 1), place=place),
    )


def _bilinear_from_tables(x: paddle.Tensor, tables: tuple) -> paddle.Tensor:
    iw0, iw1, ww0, ww1, ih0, ih1, hw0, hw1 = tables
    if ww0.dtype != x.dtype:  # a float32 input on the table path (a 1-pixel output): weights in its dtype
        ww0, ww1, hw0, hw1 = (t.astype(x.dtype) for t in (ww0, ww1, hw0, hw1))
    # torch's order: h0 * (w0 * x00 + w1 * x01) + h1 * (w0 * x10 + w1 * x11)
    cols = paddle.index_select(x, iw0, axis=3) * ww0 + paddle.index_select(x, iw1, axis=3) * ww1
    return paddle.index_select(cols, ih0, axis=2) * hw0 + paddle.index_select(cols, ih1, axis=2) * hw1


class Upsample(nn.Layer):
    """``Upsample(size=None, scale_factor=None, mode='nearest', align_corners=False)``.

    bilinear: ``align_corners=False`` is half-pixel (src = (dst + 0.5) * scale - 0.5, clamped at 0), ``True`` maps
    corners; ``scale`` = in/out for ``size`` and 1/scale_factor for ``scale_factor`` (both frameworks' rule).
    Paddle's bilinear kernel computes coordinates in float32 even for float64 tensors, so float64 inputs go
    through float64 interpolation tables (cached per input size) instead.
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
        self._tables: Dict[tuple, tuple] = {}

    def _out_size(self, h: int, w: int) -> Tuple[int, int]:
        if self.size is not None:
            return self.size
        sh, sw = self.scale_factor if isinstance(self.scale_factor, tuple) else (self.scale_factor,) * 2
        return int(math.floor(h * sh)), int(math.floor(w * sw))

    def _bilinear64(self, x: paddle.Tensor) -> paddle.Tensor:
        h, w = x.shape[2], x.shape[3]
        tables = self._tables.get((h, w))
        if tables is None:
            oh, ow = self._out_size(h, w)
            sf = (None, None) if self.scale_factor is None else (
                self.scale_factor if isinstance(self.scale_factor, tuple) else (self.scale_factor,) * 2)
            tables = self._tables[(h, w)] = _bilinear_tables(h, w, oh, ow, self.align_corners, sf, x.place)
        return _bilinear_from_tables(x, tables)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.mode == "bilinear":
            h, w = x.shape[2], x.shape[3]
            if x.dtype == paddle.float64 or _one_pixel_output(h, w, *self._out_size(h, w)):
                return self._bilinear64(x)
            return F.interpolate(x, self.size, self.scale_factor, "bilinear", self.align_corners, align_mode=0)
        return F.interpolate(x, self.size, self.scale_factor, "nearest", False)

    def extra_repr(self) -> str:
        return (f"size={self.size}, scale_factor={self.scale_factor}, mode={self.mode}, "
                f"align_corners={self.align_corners}")


_RESIZE_TABLES: Dict[tuple, tuple] = {}


def _one_pixel_output(h: int, w: int, oh: int, ow: int) -> bool:
    """Paddle's bilinear kernel (align_mode 0) reads the first source pixel when an output axis has one pixel, where
    torch reads the centre (e.g. 4 -> 1: torch averages rows 1 and 2); such resizes go through the tables."""
    return (oh == 1 and h != 1) or (ow == 1 and w != 1)


def resize_bilinear(x: paddle.Tensor, size, align_corners: bool = False) -> paddle.Tensor:
    """Bilinear resize of an NCHW tensor to ``size`` = ``(h, w)`` (read at run time, e.g. another tensor's size):
    ``Upsample(size, mode='bilinear')``'s formula, for up- and downsampling alike, without antialiasing
    (``align_mode=0``: torch's half-pixel rule).  float64, and any resize to a 1-pixel axis (paddle's kernel reads
    the first pixel there, torch the centre), go through interpolation tables (cached per sizes and place)."""
    oh, ow = _pair(size, "size")
    h, w = x.shape[2], x.shape[3]
    if x.dtype == paddle.float64 or _one_pixel_output(h, w, oh, ow):
        key = (h, w, oh, ow, bool(align_corners), str(x.place))
        tables = _RESIZE_TABLES.get(key)
        if tables is None:
            tables = _RESIZE_TABLES[key] = _bilinear_tables(h, w, oh, ow, bool(align_corners), (None, None), x.place)
        return _bilinear_from_tables(x, tables)
    return F.interpolate(x, [oh, ow], None, "bilinear", bool(align_corners), align_mode=0)


# ---------------------------------------------------------------------------------------------------------
# parameter listing for common.init
# ---------------------------------------------------------------------------------------------------------
def named_param_kinds(module: nn.Layer) -> Dict[str, ParamSpec]:
    """``{canonical name: ParamSpec}`` for every state tensor, in torch layout (Linear ``[out, in]``)."""
    from paddle_impl.layout import neutral_name_map

    known: Dict[str, ParamSpec] = {}
    for prefix, sub in module.named_sublayers(include_self=True):
        dot = f"{prefix}." if prefix else ""
        if isinstance(sub, nn.layer.conv._ConvNd):
            wshape = tuple(sub.weight.shape)
            known[dot + "weight"] = ParamSpec(CONV_WEIGHT, wshape, int(sub._groups), wshape)
            if sub.bias is not None:
                known[dot + "bias"] = ParamSpec(CONV_BIAS, tuple(sub.bias.shape), int(sub._groups), wshape)
        elif isinstance(sub, nn.Linear):
            wshape = tuple(sub.weight.shape)[::-1]
            known[dot + "weight"] = ParamSpec(LINEAR_WEIGHT, wshape, 1, wshape)
            if sub.bias is not None:
                known[dot + "bias"] = ParamSpec(LINEAR_BIAS, tuple(sub.bias.shape), 1, wshape)
        elif isinstance(sub, nn.layer.norm._BatchNormBase):
            for leaf, kind in (("weight", BN_WEIGHT), ("bias", BN_BIAS), ("_mean", BN_MEAN), ("_variance", BN_VAR)):
                tensor = getattr(sub, leaf, None)
                if tensor is not None:
                    known[dot + leaf] = ParamSpec(kind, tuple(tensor.shape))
    state = module.state_dict()
    out: Dict[str, ParamSpec] = {}
    for name, neutral in neutral_name_map(module).items():
        spec = known.get(name)
        out[neutral] = spec if spec is not None else ParamSpec(OTHER, tuple(state[name].shape))
    return out


def attach_mask_source(module, source) -> int:
    """Make every ``DropPath`` / ``Dropout`` inside ``module`` draw its training masks from ``source``
    (a ``common.random_masks.MaskSource``; ``None`` restores the framework RNG).  Returns how many layers."""
    count = 0
    for layer in module.sublayers(include_self=True):
        if isinstance(layer, (DropPath, Dropout)):
            layer.mask_source = source
            count += 1
    return count
