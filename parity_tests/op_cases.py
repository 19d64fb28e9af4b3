"""Framework-free table of op parity cases, plus numpy float64 reference implementations.

A case names an op of the twin op library (``torch_impl/ops.py`` / ``paddle_impl/ops.py``), its constructor
kwargs and an input shape.  The harness in ``test_ops_parity.py`` builds the op in both backends, loads the
same random weights, runs train and eval forward plus backward, and compares.  Cases with a ``ref`` are also
checked against the numpy reference below, which applies TF's SAME rule written out independently of
``common.padding`` (explicit pad, then a VALID window op in float64).
"""
from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Any, Dict, List, Optional, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class OpCase:
    id: str
    op: str                          # class name in both ops modules
    kwargs: Dict[str, Any]
    shape: Tuple[int, ...]           # input shape (NCHW, or [N, F] for Linear)
    scale: float = 1.0               # input = offset + scale * N(0, 1)
    offset: float = 0.0
    mask: Optional[str] = None       # 'sample' (DropPath) / 'element' (Dropout): inject a keep mask
    ref: Optional[str] = None        # numpy reference: 'conv', 'maxpool', 'avgpool', 'upsample'

    @property
    def seed(self) -> int:
        return zlib.crc32(self.id.encode("utf-8"))


def _conv_cases() -> List[OpCase]:
    cases = []
    for k in (1, 3, 5, 7):
        for s in (1, 2):
            for hw in ((8, 8), (7, 7)):
                cases.append(OpCase(f"conv_k{k}_s{s}_same_{hw[0]}x{hw[1]}", "Conv2d",
                                    dict(in_ch=3, out_ch=4, kernel_size=k, stride=s, padding="SAME"), (2, 3) + hw,
                                    ref="conv"))
    cases += [
        OpCase("conv_k2_s1_same_6x9", "Conv2d", dict(in_ch=3, out_ch=4, kernel_size=2, stride=1, padding="SAME"),
               (2, 3, 6, 9), ref="conv"),
        OpCase("conv_k2_s2_same_6x9", "Conv2d", dict(in_ch=3, out_ch=4, kernel_size=2, stride=2, padding="SAME"),
               (2, 3, 6, 9), ref="conv"),
        OpCase("conv_k3_s2_same_6x9_bias", "Conv2d",
               dict(in_ch=3, out_ch=4, kernel_size=3, stride=2, padding="SAME", bias=True), (2, 3, 6, 9), ref="conv"),
        OpCase("conv_k3_d2_s1_same_8x8", "Conv2d",
               dict(in_ch=3, out_ch=4, kernel_size=3, stride=1, padding="SAME", dilation=2), (2, 3, 8, 8), ref="conv"),
        OpCase("conv_k3_d2_s2_same_8x8", "Conv2d",
               dict(in_ch=3, out_ch=4, kernel_size=3, stride=2, padding="SAME", dilation=2), (2, 3, 8, 8), ref="conv"),
        OpCase("conv_k5_d2_s2_same_9x9", "Conv2d",
               dict(in_ch=3, out_ch=4, kernel_size=5, stride=2, padding="SAME", dilation=2), (2, 3, 9, 9), ref="conv"),
        OpCase("conv_dw_k5_s2_same_8x8", "Conv2d",
               dict(in_ch=4, out_ch=4, kernel_size=5, stride=2, padding="SAME", groups=4), (2, 4, 8, 8), ref="conv"),
        OpCase("conv_dw_k3_s1_same_7x7", "Conv2d",
               dict(in_ch=4, out_ch=4, kernel_size=3, stride=1, padding="SAME", groups=4), (2, 4, 7, 7), ref="conv"),
        OpCase("conv_g2_k3_s2_same_8x8", "Conv2d",
               dict(in_ch=4, out_ch=6, kernel_size=3, stride=2, padding="SAME", groups=2, bias=True), (2, 4, 8, 8),
               ref="conv"),
        OpCase("conv_k3_s1_p1_8x8", "Conv2d", dict(in_ch=3, out_ch=4, kernel_size=3, stride=1, padding=1),
               (2, 3, 8, 8), ref="conv"),
        OpCase("conv_k3_s2_p1_7x7", "Conv2d", dict(in_ch=3, out_ch=4, kernel_size=3, stride=2, padding=1),
               (2, 3, 7, 7), ref="conv"),
        OpCase("conv_k3_s2_pair_8x8", "Conv2d", dict(in_ch=3, out_ch=4, kernel_size=3, stride=2, padding=(1, 2)),
               (2, 3, 8, 8), ref="conv"),
        OpCase("conv_k3_s2_valid_9x9", "Conv2d", dict(in_ch=3, out_ch=4, kernel_size=3, stride=2, padding="VALID"),
               (2, 3, 9, 9), ref="conv"),
        OpCase("conv_k7_s2_valid_8x8_bias", "Conv2d",
               dict(in_ch=3, out_ch=4, kernel_size=7, stride=2, padding="VALID", bias=True), (2, 3, 8, 8), ref="conv"),
    ]
    return cases


def _pool_cases() -> List[OpCase]:
    cases = []
    for k in (2, 3, 5):
        for s in (1, 2):
            for hw in ((8, 8), (7, 7)):
                tag = f"k{k}_s{s}_same_{hw[0]}x{hw[1]}"
                cases.append(OpCase(f"maxpool_{tag}", "MaxPool2d", dict(kernel_size=k, stride=s, padding="SAME"),
                                    (2, 3) + hw, ref="maxpool"))
                cases.append(OpCase(f"avgpool_{tag}", "AvgPool2d",
                                    dict(kernel_size=k, stride=s, padding="SAME", count_include_pad=False),
                                    (2, 3) + hw, ref="avgpool"))
    cases += [
        OpCase("avgpool_k3_s2_same_incl_8x8", "AvgPool2d",
               dict(kernel_size=3, stride=2, padding="SAME", count_include_pad=True), (2, 3, 8, 8), ref="avgpool"),
        OpCase("avgpool_k3_s1_same_incl_7x7", "AvgPool2d",
               dict(kernel_size=3, stride=1, padding="SAME", count_include_pad=True), (2, 3, 7, 7), ref="avgpool"),
        OpCase("avgpool_k3_s1_same_6x9", "AvgPool2d", dict(kernel_size=3, stride=1, padding="SAME"), (2, 3, 6, 9),
               ref="avgpool"),
        OpCase("avgpool_k3_s2_same_6x9", "AvgPool2d", dict(kernel_size=3, stride=2, padding="SAME"), (2, 3, 6, 9),
               ref="avgpool"),
        OpCase("maxpool_k3_s2_same_6x9", "MaxPool2d", dict(kernel_size=3, stride=2, padding="SAME"), (2, 3, 6, 9),
               ref="maxpool"),
        # DARTS pools: int padding 1, count_include_pad=False
        OpCase("darts_maxpool_k3_s1_p1_8x8", "MaxPool2d", dict(kernel_size=3, stride=1, padding=1), (2, 3, 8, 8),
               ref="maxpool"),
        OpCase("darts_maxpool_k3_s2_p1_8x8", "MaxPool2d", dict(kernel_size=3, stride=2, padding=1), (2, 3, 8, 8),
               ref="maxpool"),
        OpCase("darts_avgpool_k3_s1_p1_7x7", "AvgPool2d", dict(kernel_size=3, stride=1, padding=1), (2, 3, 7, 7),
               ref="avgpool"),
        OpCase("darts_avgpool_k3_s2_p1_8x8", "AvgPool2d", dict(kernel_size=3, stride=2, padding=1), (2, 3, 8, 8),
               ref="avgpool"),
        OpCase("avgpool_k3_s2_p1_incl_7x7", "AvgPool2d",
               dict(kernel_size=3, stride=2, padding=1, count_include_pad=True), (2, 3, 7, 7), ref="avgpool"),
        OpCase("maxpool_k2_s2_p0_8x8", "MaxPool2d", dict(kernel_size=2, stride=2), (2, 3, 8, 8), ref="maxpool"),
        OpCase("avgpool_k5_s2_valid_9x9", "AvgPool2d", dict(kernel_size=5, stride=2, padding="VALID"), (2, 3, 9, 9),
               ref="avgpool"),
    ]
    return cases


def _bn_cases() -> List[OpCase]:
    return [
        OpCase("bn_default_8x8", "BatchNorm2d", dict(num_features=3), (4, 3, 8, 8), scale=2.0, offset=1.5),
        OpCase("bn_eps1e-3_mom0.0003_7x7", "BatchNorm2d", dict(num_features=3, eps=1e-3, momentum=0.0003),
               (2, 3, 7, 7), scale=0.5, offset=-3.0),
        OpCase("bn_affine_false_5x5", "BatchNorm2d", dict(num_features=4, affine=False), (3, 4, 5, 5), scale=3.0,
               offset=2.0),
        # eps = 2**-10 is exact in float32, so paddle's fused kernel runs in float64 too (1e-3 takes the exact path)
        OpCase("bn_eps2^-10_fused_6x6", "BatchNorm2d", dict(num_features=3, eps=2.0 ** -10), (2, 3, 6, 6),
               scale=0.05, offset=1.0),
        OpCase("bn_mom0.01_1x1", "BatchNorm2d", dict(num_features=6, momentum=0.01), (8, 6, 1, 1), scale=1.0,
               offset=0.5),
    ]


def _misc_cases() -> List[OpCase]:
    cases = [
        OpCase("linear_bias", "Linear", dict(in_features=6, out_features=5), (4, 6)),
        OpCase("linear_nobias", "Linear", dict(in_features=6, out_features=5, bias=False), (4, 6)),
    ]
    for act in ("ReLU", "ReLU6", "Swish", "HardSigmoid", "Sigmoid", "Identity"):
        cases.append(OpCase(f"act_{act}", act, {}, (2, 3, 5, 6), scale=4.0))
    cases += [
        OpCase("zero_s1_7x7", "Zero", dict(stride=1), (2, 3, 7, 7)),
        OpCase("zero_s2_7x7", "Zero", dict(stride=2), (2, 3, 7, 7)),
        OpCase("zero_s2_8x8", "Zero", dict(stride=2), (2, 3, 8, 8)),
        OpCase("se_relu_hsig_7x7", "SqueezeExcite", dict(in_ch=8, reduced_ch=4), (2, 8, 7, 7), scale=2.0),
        OpCase("se_swish_sigmoid_6x6", "SqueezeExcite", dict(in_ch=8, reduced_ch=2, act="swish", gate="sigmoid"),
               (2, 8, 6, 6), scale=2.0),
        OpCase("channel_shuffle_g4", "ChannelShuffle", dict(groups=4), (2, 8, 3, 5)),
        OpCase("droppath_mask", "DropPath", dict(drop_prob=0.3), (4, 3, 5, 5), mask="sample"),
        OpCase("dropout_mask", "Dropout", dict(p=0.25), (2, 3, 5, 5), mask="element"),
        OpCase("upsample_nearest_x2", "Upsample", dict(scale_factor=2, mode="nearest"), (2, 3, 5, 7), ref="upsample"),
        OpCase("upsample_nearest_size", "Upsample", dict(size=(9, 12), mode="nearest"), (2, 3, 5, 7), ref="upsample"),
        OpCase("upsample_nearest_x1.5", "Upsample", dict(scale_factor=1.5, mode="nearest"), (2, 3, 5, 7),
               ref="upsample"),
        OpCase("upsample_bilinear_x2", "Upsample", dict(scale_factor=2, mode="bilinear"), (2, 3, 5, 7),
               ref="upsample"),
        OpCase("upsample_bilinear_size", "Upsample", dict(size=(9, 12), mode="bilinear"), (2, 3, 5, 7),
               ref="upsample"),
        OpCase("upsample_bilinear_x1.5", "Upsample", dict(scale_factor=1.5, mode="bilinear"), (2, 3, 5, 7),
               ref="upsample"),
        OpCase("upsample_bilinear_ac_size", "Upsample", dict(size=(9, 12), mode="bilinear", align_corners=True),
               (2, 3, 5, 7), ref="upsample"),
        OpCase("upsample_bilinear_ac_x2", "Upsample", dict(scale_factor=2, mode="bilinear", align_corners=True),
               (2, 3, 5, 7), ref="upsample"),
        OpCase("upsample_bilinear_down", "Upsample", dict(size=(3, 4), mode="bilinear"), (2, 3, 7, 9),
               ref="upsample"),
    ]
    return cases


def _block_cases() -> List[OpCase]:
    cases = []
    for k in (3, 5, 7):
        for s in (1, 2):
            for hw in ((8, 8), (7, 7)):
                cases.append(OpCase(f"sepconv2d_k{k}_s{s}_same_{hw[0]}x{hw[1]}", "SeparableConv2d",
                                    dict(in_ch=4, out_ch=6, kernel_size=k, stride=s, padding="SAME"), (2, 4) + hw))
    cases += [
        OpCase("relu_conv_bn_k1_s1", "ReLUConvBN",
               dict(C_in=4, C_out=6, kernel_size=1, stride=1, padding=0, affine=False), (2, 4, 7, 7), offset=0.3),
        OpCase("relu_conv_bn_k3_s2_affine", "ReLUConvBN",
               dict(C_in=4, C_out=6, kernel_size=3, stride=2, padding=1, affine=True), (2, 4, 8, 8), offset=0.3),
        OpCase("relu_conv_bn_k3_s2_same_eps1e-3", "ReLUConvBN",
               dict(C_in=4, C_out=6, kernel_size=3, stride=2, padding="SAME", bn_eps=1e-3), (2, 4, 8, 8)),
        OpCase("darts_sep_conv_3x3_s1", "SepConv",
               dict(C_in=4, C_out=4, kernel_size=3, stride=1, padding=1, affine=False), (2, 4, 8, 8)),
        OpCase("darts_sep_conv_5x5_s2", "SepConv",
               dict(C_in=4, C_out=4, kernel_size=5, stride=2, padding=2, affine=False), (2, 4, 8, 8)),
        OpCase("darts_sep_conv_7x7_s2_affine", "SepConv",
               dict(C_in=4, C_out=6, kernel_size=7, stride=2, padding=3, affine=True), (2, 4, 9, 9)),
        OpCase("pnas_sep_conv_5x5_s2_same", "SepConv",
               dict(C_in=4, C_out=6, kernel_size=5, stride=2, padding="SAME", bn_eps=1e-3), (2, 4, 8, 8)),
        OpCase("darts_dil_conv_3x3_s1", "DilConv",
               dict(C_in=4, C_out=4, kernel_size=3, stride=1, padding=2, dilation=2, affine=False), (2, 4, 8, 8)),
        OpCase("darts_dil_conv_5x5_s2", "DilConv",
               dict(C_in=4, C_out=4, kernel_size=5, stride=2, padding=4, dilation=2, affine=False), (2, 4, 9, 9)),
        OpCase("dil_conv_3x3_s2_same_affine", "DilConv",
               dict(C_in=4, C_out=6, kernel_size=3, stride=2, padding="SAME", dilation=2, affine=True), (2, 4, 8, 8)),
        OpCase("factorized_reduce_8x8", "FactorizedReduce", dict(C_in=4, C_out=6, affine=False), (2, 4, 8, 8)),
        OpCase("factorized_reduce_affine_6x10", "FactorizedReduce", dict(C_in=3, C_out=8, affine=True),
               (3, 3, 6, 10)),
    ]
    return cases


CASES: List[OpCase] = _conv_cases() + _pool_cases() + _bn_cases() + _misc_cases() + _block_cases()
CASES_BY_ID: Dict[str, OpCase] = {c.id: c for c in CASES}
assert len(CASES_BY_ID) == len(CASES), "duplicate case ids"

# Second-order gradients (Cream's meta-matching step differentiates through a weight update with
# create_graph=True).  Max pooling is left out: paddle has no max-pool double grad ("only supports avgpool").
DOUBLE_GRAD_CASE_IDS: Tuple[str, ...] = (
    "conv_dw_k5_s2_same_8x8", "conv_dw_k3_s1_same_7x7", "conv_k3_s2_same_6x9_bias", "conv_g2_k3_s2_same_8x8",
    "bn_default_8x8", "bn_eps1e-3_mom0.0003_7x7", "bn_affine_false_5x5",
    "act_ReLU", "act_ReLU6", "act_Swish", "act_HardSigmoid", "act_Sigmoid",
    "se_relu_hsig_7x7", "se_swish_sigmoid_6x6", "linear_bias",
    "avgpool_k3_s2_same_8x8", "darts_avgpool_k3_s1_p1_7x7",
    "sepconv2d_k5_s2_same_8x8", "pnas_sep_conv_5x5_s2_same", "darts_dil_conv_3x3_s1", "factorized_reduce_8x8",
)
DOUBLE_GRAD_CASES: List[OpCase] = [CASES_BY_ID[i] for i in DOUBLE_GRAD_CASE_IDS]


# ---------------------------------------------------------------------------------------------------------
# numpy float64 references
# ---------------------------------------------------------------------------------------------------------
def tf_same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> Tuple[int, int]:
    """TF's SAME rule, written out here independently of common.padding: out = ceil(n/s), odd pixel after."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _pair(v) -> Tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def resolve_pads(padding, hw, kernel, stride, dilation=1) -> Tuple[int, int, int, int]:
    """(top, bottom, left, right) for an int / pair / 'SAME' / 'VALID' padding argument."""
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    if isinstance(padding, str):
        if padding.upper() == "VALID":
            return 0, 0, 0, 0
        top, bottom = tf_same_pads(hw[0], kh, sh, dh)
        left, right = tf_same_pads(hw[1], kw, sw, dw)
        return top, bottom, left, right
    ph, pw = _pair(padding)
    return ph, ph, pw, pw


def _windows(xp: np.ndarray, kernel, stride, dilation) -> np.ndarray:
    """[N, C, Ho, Wo, kh, kw] view of the VALID windows of a padded NCHW array."""
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (eh, ew), axis=(2, 3))
    return win[:, :, ::sh, ::sw, ::dh, ::dw]


def _pad(x: np.ndarray, pads, value: float) -> np.ndarray:
    top, bottom, left, right = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def np_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> np.ndarray:
    x = np.asarray(x, np.float64)
    weight = np.asarray(weight, np.float64)
    pads = resolve_pads(padding, x.shape[2:], weight.shape[2:], stride, dilation)
    win = _windows(_pad(x, pads, 0.0), weight.shape[2:], stride, dilation)
    cin, cout = x.shape[1] // groups, weight.shape[0] // groups
    outs = []
    for g in range(groups):
        w = weight[g * cout:(g + 1) * cout]
        outs.append(np.einsum("nchwij,ocij->nohw", win[:, g * cin:(g + 1) * cin], w))
    out = np.concatenate(outs, axis=1)
    if bias is not None:
        out = out + np.asarray(bias, np.float64).reshape(1, -1, 1, 1)
    return out


def np_maxpool2d(x, kernel_size, stride=None, padding=0) -> np.ndarray:
    x = np.asarray(x, np.float64)
    stride = kernel_size if stride is None else stride
    pads = resolve_pads(padding, x.shape[2:], kernel_size, stride)
    return _windows(_pad(x, pads, -np.inf), kernel_size, stride, 1).max(axis=(4, 5))


def np_avgpool2d(x, kernel_size, stride=None, padding=0, count_include_pad=False) -> np.ndarray:
    x = np.asarray(x, np.float64)
    stride = kernel_size if stride is None else stride
    pads = resolve_pads(padding, x.shape[2:], kernel_size, stride)
    total = _windows(_pad(x, pads, 0.0), kernel_size, stride, 1).sum(axis=(4, 5))
    if count_include_pad:
        kh, kw = _pair(kernel_size)
        return total / (kh * kw)
    ones = np.ones((1, 1) + x.shape[2:])
    count = _windows(_pad(ones, pads, 0.0), kernel_size, stride, 1).sum(axis=(4, 5))
    return total / count


def _out_size(in_size: int, size, scale_factor) -> int:
    return int(size) if size is not None else int(math.floor(in_size * scale_factor))


def np_upsample(x, size=None, scale_factor=None, mode="nearest", align_corners=False) -> np.ndarray:
    """torch's interpolate semantics in float64: nearest = floor(dst * scale); bilinear half-pixel or corners."""
    x = np.asarray(x, np.float64)
    sizes = _pair(size) if size is not None else (None, None)
    factors = (scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor, scale_factor))
    out = x
    for axis, n_in, n_size, factor in ((2, x.shape[2], sizes[0], factors[0]), (3, x.shape[3], sizes[1], factors[1])):
        n_out = _out_size(n_in, n_size, factor)
        dst = np.arange(n_out, dtype=np.float64)
        if mode == "nearest":
            scale = 1.0 / factor if factor is not None else n_in / n_out
            idx = np.minimum(np.floor(dst * scale).astype(np.int64), n_in - 1)
            out = np.take(out, idx, axis=axis)
            continue
        if align_corners:
            src = dst * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        else:
            scale = 1.0 / factor if factor is not None else n_in / n_out
            src = np.maximum((dst + 0.5) * scale - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        w1 = src - i0
        shape = [1, 1, 1, 1]
        shape[axis] = n_out
        w1 = w1.reshape(shape)
        out = np.take(out, i0, axis=axis) * (1.0 - w1) + np.take(out, i1, axis=axis) * w1
    return out


def numpy_reference(case: OpCase, x: np.ndarray, state: Dict[str, np.ndarray]) -> np.ndarray:
    """float64 reference output of ``case`` on ``x`` with neutral weights ``state``."""
    kw = case.kwargs
    if case.ref == "conv":
        return np_conv2d(x, state["weight"], state.get("bias"), kw.get("stride", 1), kw.get("padding", 0),
                         kw.get("dilation", 1), kw.get("groups", 1))
    if case.ref == "maxpool":
        return np_maxpool2d(x, kw["kernel_size"], kw.get("stride"), kw.get("padding", 0))
    if case.ref == "avgpool":
        return np_avgpool2d(x, kw["kernel_size"], kw.get("stride"), kw.get("padding", 0),
                            kw.get("count_include_pad", False))
    if case.ref == "upsample":
        return np_upsample(x, kw.get("size"), kw.get("scale_factor"), kw.get("mode", "nearest"),
                           kw.get("align_corners", False))
    raise ValueError(f"case {case.id} has no numpy reference")


def case_input(case: OpCase, rng: np.random.Generator) -> np.ndarray:
    return case.offset + case.scale * rng.standard_normal(case.shape)


def random_state(named_shapes: Dict[str, Tuple[Tuple[int, ...], str]],
                 rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Non-trivial float64 weights for parity: ``{name: (shape, kind)}`` -> arrays (BN stats off 0/1)."""
    out = {}
    for name, (shape, kind) in named_shapes.items():
        if kind == "bn.running_var":
            out[name] = rng.uniform(0.5, 2.0, shape)
        elif kind == "bn.running_mean":
            out[name] = rng.normal(0.0, 0.5, shape)
        elif kind == "bn.weight":
            out[name] = rng.uniform(0.5, 1.5, shape)
        elif kind.endswith("bias"):
            out[name] = rng.normal(0.0, 0.2, shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            out[name] = rng.normal(0.0, 1.0 / math.sqrt(fan_in), shape)
    return out


def keep_mask(case: OpCase, rng: np.random.Generator) -> np.ndarray:
    """A 0/1 keep mask for DropPath ('sample': [N]) or Dropout ('element': input shape), with both values present."""
    p = case.kwargs.get("drop_prob", case.kwargs.get("p", 0.5))
    shape = (case.shape[0],) if case.mask == "sample" else case.shape
    mask = (rng.random(shape) >= p).astype(np.float64)
    mask.reshape(-1)[0], mask.reshape(-1)[-1] = 0.0, 1.0
    return mask
