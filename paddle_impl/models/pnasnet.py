"""PNASNet-5 (Large / Mobile) in Paddle: the twin of ``torch_impl/models/pnasnet.py``.

``build(spec)`` turns a :class:`common.specs.pnasnet.PNASNetSpec` into a module whose state is exactly
``expected_state_shapes(spec)`` under timm / Cadene names (``conv_0.conv``, ``cell_4.comb_iter_2_left.separable_1
.depthwise_conv2d``, ``last_linear``, ...), so timm's ``pnasnet5large`` state dict loads by name, and TF checkpoints
convert through ``weights_tools/pnasnet_convert.py``.  TF-slim semantics (``shared/research/pnasnet.md`` §1, §9):

* ``conv_0``: 3x3 stride-2 VALID conv -> BN, no ReLU; every BN has eps 1e-3 and momentum 1 - 0.9997 (torch
  convention); convs have no bias;
* every k x k op is TF ``SAME`` from the runtime input size (asymmetric for even sizes at stride 2: the op library
  plans it); max pools pad with -inf;
* cell inputs as TF: ``h0`` = ReLU -> 1x1 -> BN of the cell input (``conv_1x1``); ``h1`` = prev_prev through
  ``conv_prev_1x1`` (factorized reduction when its size differs, ReLU -> 1x1 -> BN when its channels differ), or
  the raw ``conv_0`` output in ``cell_stem_0`` (no ReLU, no 1x1);
* ``separable_KxK_2``: [ReLU -> depthwise (stride on the first) -> pointwise -> BN] x 2, the first depthwise on the
  op's input channels; ``max_pool_3x3`` (+ 1x1 -> BN without ReLU when channels differ); ``none`` = identity, or
  ReLU -> strided 1x1 -> BN;
* factorized reduction: path 1 = 1x1 conv of ``x[::2, ::2]``, path 2 = 1x1 conv of the one-pixel shift
  ``x[1::2, 1::2]`` (zero row / column at the bottom / right for odd sizes, as TF's pad-and-crop), concat, BN;
* cell output = concat of the 5 block outputs (left + right) in order; head: ReLU -> global mean (any size) ->
  dropout (training) -> ``last_linear`` (:class:`BlockedLinear`: its float32 dot products accumulate in ~128-wide
  blocks, so the float32 logits carry TF's level of rounding, not the CPU GEMM's 4-13x more for small batches);
* training only: drop path after every op except ``none`` with TF's keep-probability schedule
  (:meth:`PNASNet5.set_training_step`; masks from numpy when a ``MaskSource`` is attached), and, when
  ``spec.build_aux_head``, the TF aux head ``aux_head.{proj,bn0,conv,bn1,fc}`` after cell ``aux_head_cell`` (forward
  returns ``(logits, aux_logits)``).  The eval forward never runs drop path, dropout or the aux head.

Every decision is taken at build time (the ops, their inputs, the strides, the paddings' plans); forward only runs
layers.  All layers come from ``paddle_impl/ops.py``; class, attribute and module names equal the torch twin's,
so both trees share one canonical name per parameter.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from common.specs import pnasnet as P
from paddle_impl import ops

__all__ = ["ConvBn", "ActConvBn", "FactorizedReduction", "BranchSeparables", "MaxPoolBranch", "Cell", "AuxHead",
           "GlobalMeanPool", "BlockedLinear", "PNASNet5", "build"]


def _bn(channels: int, spec: P.PNASNetSpec) -> ops.BatchNorm2d:
    return ops.BatchNorm2d(channels, eps=spec.bn_eps, momentum=spec.bn_momentum_torch)


class ConvBn(nn.Layer):
    """``conv_0``: conv (no bias) -> BN, no activation."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int, padding, spec: P.PNASNetSpec):
        super().__init__()
        self.conv = ops.Conv2d(in_ch, out_ch, kernel_size, stride, padding)
        self.bn = _bn(out_ch, spec)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.bn(self.conv(x))


class ActConvBn(nn.Layer):
    """ReLU -> 1x1 conv (stride) -> BN: ``conv_1x1`` / ``conv_prev_1x1`` and the projecting ``none`` op."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, spec: P.PNASNetSpec):
        super().__init__()
        self.act = ops.ReLU()
        self.conv = ops.Conv2d(in_ch, out_ch, 1, stride)
        self.bn = _bn(out_ch, spec)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.bn(self.conv(self.act(x)))


class _Path(nn.Layer):
    """One path of the factorized reduction: a 1x1 conv of the stride-2 samples (``shift``: from pixel (1, 1))."""

    def __init__(self, in_ch: int, out_ch: int, shift: bool):
        super().__init__()
        self.shift = bool(shift)
        # path 1: a 1x1 stride-2 VALID conv reads exactly x[::2, ::2]
        self.conv = ops.Conv2d(in_ch, out_ch, 1, 1 if shift else 2)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not self.shift:
            return self.conv(x)
        h, w = x.shape[-2], x.shape[-1]
        if h < 2 or w < 2:  # nothing left after the shift: TF's pad-and-crop literally
            x = F.pad(x, [0, 1, 0, 1], mode="constant", value=0.0, data_format="NCHW")
            return self.conv(x[:, :, 1::2, 1::2])
        y = self.conv(x[:, :, 1::2, 1::2])
        if h % 2 or w % 2:  # TF pads a zero row/column at the bottom/right before the shift; conv(0) = 0 (no bias)
            y = F.pad(y, [0, w % 2, 0, h % 2], mode="constant", value=0.0, data_format="NCHW")
        return y


class FactorizedReduction(nn.Layer):
    """ReLU -> [``path_1`` | ``path_2``] -> concat -> ``final_path_bn`` (TF ``factorized_reduction``, stride 2).

    The odd filter of an odd ``out_ch`` goes to path 2 (Mobile's 27 = 13 + 14)."""

    def __init__(self, in_ch: int, out_ch: int, spec: P.PNASNetSpec):
        super().__init__()
        f1, f2 = P.factorized_split(out_ch)
        self.act = ops.ReLU()
        self.path_1 = _Path(in_ch, f1, shift=False)
        self.path_2 = _Path(in_ch, f2, shift=True)
        self.final_path_bn = _bn(out_ch, spec)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.act(x)
        return self.final_path_bn(paddle.concat([self.path_1(x), self.path_2(x)], axis=1))


class BranchSeparables(nn.Layer):
    """``separable_KxK_L``: L x [ReLU -> depthwise KxK (SAME; stride on the first) -> pointwise -> BN] (+ drop path).

    The first depthwise runs on the op's input channels (``cell_stem_0``'s h1: 96 -> 54 in the first pointwise)."""

    def __init__(self, op: P.OpStructure, spec: P.PNASNetSpec, drop_path: Optional[ops.DropPath]):
        super().__init__()
        k, cin = op.slot.kernel_size, op.in_channels
        self.num_layers = op.slot.num_layers
        for layer in range(1, self.num_layers + 1):
            stride = op.stride if layer == 1 else 1
            setattr(self, f"act_{layer}", ops.ReLU())
            setattr(self, f"separable_{layer}", ops.SeparableConv2d(cin, op.out_channels, k, stride, "SAME"))
            setattr(self, f"bn_sep_{layer}", _bn(op.out_channels, spec))
            cin = op.out_channels
        self._layers = [(getattr(self, f"act_{i}"), getattr(self, f"separable_{i}"), getattr(self, f"bn_sep_{i}"))
                        for i in range(1, self.num_layers + 1)]
        self.drop_path = drop_path

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        for act, sep, bn in self._layers:
            x = bn(sep(act(x)))
        if self.drop_path is not None and self.training:
            x = self.drop_path(x)
        return x


class MaxPoolBranch(nn.Layer):
    """``max_pool_3x3``: max pool SAME (-inf padding, stride), then 1x1 conv -> BN (no ReLU) when the channels
    change (``cell_stem_0.comb_iter_0_right``) (+ drop path)."""

    def __init__(self, op: P.OpStructure, spec: P.PNASNetSpec, drop_path: Optional[ops.DropPath]):
        super().__init__()
        self.max_pool = ops.MaxPool2d(op.slot.kernel_size, op.stride, "SAME")
        if op.projection:
            self.conv = ops.Conv2d(op.in_channels, op.out_channels, 1)
            self.bn = _bn(op.out_channels, spec)
        else:
            self.conv = self.bn = None
        self.drop_path = drop_path

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.max_pool(x)
        if self.conv is not None:
            x = self.bn(self.conv(x))
        if self.drop_path is not None and self.training:
            x = self.drop_path(x)
        return x


def _make_op(op: P.OpStructure, spec: P.PNASNetSpec, drop_path: Optional[ops.DropPath]) -> nn.Layer:
    kind = op.slot.kind
    if kind == "separable":
        return BranchSeparables(op, spec, drop_path)
    if kind == "max_pool":
        return MaxPoolBranch(op, spec, drop_path)
    if kind == "none":  # never drop-pathed (TF)
        return ActConvBn(op.in_channels, op.out_channels, op.stride, spec) if op.projection else ops.Identity()
    raise ValueError(f"{op.canonical}: PNASNet-5 has no {op.slot.op!r} op in this builder")


class Cell(nn.Layer):
    """One PNAS cell (stem cells included): ``forward(prev_prev, prev)`` -> concat of the 5 block outputs."""

    def __init__(self, structure: P.CellStructure, spec: P.PNASNetSpec):
        super().__init__()
        s = structure
        self.name, self.cell_num = s.name, s.cell_num
        f = s.filter_size
        if s.prev_kind == P.PREV_FACTORIZED:
            self.conv_prev_1x1 = FactorizedReduction(s.prev_channels, f, spec)
        elif s.prev_kind == P.PREV_1X1:
            self.conv_prev_1x1 = ActConvBn(s.prev_channels, f, 1, spec)
        else:  # PREV_INPUT (cell_stem_0: the raw input) or PREV_IDENTITY
            self.conv_prev_1x1 = None
        self.conv_1x1 = ActConvBn(s.in_channels, f, 1, spec)
        use_drop_path = spec.drop_path_keep_prob < 1.0
        self.drop_paths: List[ops.DropPath] = []
        for op in s.ops:
            dp = ops.DropPath(0.0) if use_drop_path and op.slot.kind != "none" else None
            if dp is not None:
                self.drop_paths.append(dp)
            setattr(self, f"comb_iter_{op.slot.block}_{op.slot.side}", _make_op(op, spec, dp))
        # (left module, left input, right module, right input) per block; inputs index [h0, h1, block outputs...]
        self._blocks: List[Tuple[nn.Layer, int, nn.Layer, int]] = []
        for b in range(P.NUM_BLOCKS):
            left, right = s.ops[2 * b], s.ops[2 * b + 1]
            self._blocks.append((getattr(self, f"comb_iter_{b}_left"), left.slot.input_index,
                                 getattr(self, f"comb_iter_{b}_right"), right.slot.input_index))
        self._concat = P.CELL_CONCAT

    def set_drop_prob(self, drop_prob: float) -> None:
        for dp in self.drop_paths:
            dp.drop_prob = float(drop_prob)

    def forward(self, prev_prev: paddle.Tensor, prev: paddle.Tensor) -> paddle.Tensor:
        h1 = prev_prev if self.conv_prev_1x1 is None else self.conv_prev_1x1(prev_prev)
        states = [self.conv_1x1(prev), h1]
        for left, li, right, ri in self._blocks:
            states.append(left(states[li]) + right(states[ri]))
        return paddle.concat([states[i] for i in self._concat], axis=1)


class AuxHead(nn.Layer):
    """TF ``aux_<k>/aux_logits``: ReLU -> avg pool 5x5 stride 3 VALID -> ``proj`` 1x1 -> ``bn0`` -> ReLU -> ``conv``
    (kernel = the remaining size at ``spec.image_size``) VALID -> ``bn1`` -> ReLU -> flatten -> ``fc``."""

    def __init__(self, spec: P.PNASNetSpec):
        super().__init__()
        shapes = P.aux_head_shapes(spec)
        self.image_size, self.kernel = spec.image_size, shapes["conv_kernel"]
        self.act0 = ops.ReLU()
        self.pool = ops.AvgPool2d(P.AUX_POOL_KERNEL, P.AUX_POOL_STRIDE, "VALID")
        self.proj = ops.Conv2d(shapes["input"][0], P.AUX_PROJ_FILTERS, 1)
        self.bn0 = _bn(P.AUX_PROJ_FILTERS, spec)
        self.act1 = ops.ReLU()
        self.conv = ops.Conv2d(P.AUX_PROJ_FILTERS, P.AUX_CONV_FILTERS, self.kernel, 1, "VALID")
        self.bn1 = _bn(P.AUX_CONV_FILTERS, spec)
        self.act2 = ops.ReLU()
        self.fc = BlockedLinear(P.AUX_CONV_FILTERS, spec.num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.act1(self.bn0(self.proj(self.pool(self.act0(x)))))
        x = self.act2(self.bn1(self.conv(x)))
        if tuple(x.shape[-2:]) != (1, 1):
            raise ValueError(f"aux head: built for {self.image_size} px inputs ({self.kernel}x{self.kernel} conv), the "
                             f"input gives a {x.shape[-2]}x{x.shape[-1]} map; build the spec with this DATA.IMAGE_SIZE")
        return self.fc(x.flatten(1))


class BlockedLinear(ops.Linear):
    """``ops.Linear`` (same parameters, paddle ``weight [in, out]``) whose dot products accumulate in blocks.

    The inputs are cut into blocks of :func:`common.specs.pnasnet.classifier_block` (~128) features, one batched
    matmul gives every block's partial products, and the partials are added pairwise.  The float32 logits then
    carry TF's level of rounding instead of the 4-13x more that one long accumulation chain in the CPU matmul gives
    for a few images (the reason and the figures are in ``classifier_block``).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.block = P.classifier_block(in_features)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not self.block:
            return F.linear(x, self.weight, self.bias)
        kb = self.block
        nb = self.in_features // kb
        lead = list(x.shape[:-1])
        xs = x.reshape([-1, nb, kb]).transpose([1, 0, 2])                        # [nb, M, kb]
        ws = self.weight.reshape([nb, kb, self.out_features])                    # [nb, kb, out]
        parts = paddle.bmm(xs, ws)                                               # [nb, M, out]
        while parts.shape[0] > 1:                                                # pairwise sum of the blocks
            half = parts.shape[0] // 2
            summed = parts[:half] + parts[half:2 * half]
            parts = paddle.concat([summed, parts[2 * half:]]) if parts.shape[0] % 2 else summed
        y = parts[0]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(lead + [self.out_features])


class GlobalMeanPool(nn.Layer):
    """Mean over H, W (any input size) -> ``[N, C]``."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return x.mean(axis=[2, 3])


class PNASNet5(nn.Layer):
    def __init__(self, spec: P.PNASNetSpec):
        super().__init__()
        self.spec = spec
        self.num_classes = spec.num_classes
        self.conv_0 = ConvBn(spec.in_channels, spec.stem_filters, 3, 2, "VALID", spec)
        self.cell_names = P.cell_names(spec)
        for structure in P.cell_structures(spec):
            setattr(self, structure.name, Cell(structure, spec))
        self._cells: List[Cell] = [getattr(self, name) for name in self.cell_names]
        self.aux_cell = f"cell_{spec.aux_head_cell}" if spec.build_aux_head else None
        self.aux_head = AuxHead(spec) if spec.build_aux_head else None
        self._aux_index = self.cell_names.index(self.aux_cell) if self.aux_cell else -1
        self.act = ops.ReLU()
        self.global_pool = GlobalMeanPool()
        drop_rate = 1.0 - spec.dense_dropout_keep_prob
        self.head_drop = ops.Dropout(drop_rate) if drop_rate > 0.0 else None
        self.last_linear = BlockedLinear(spec.final_channels, spec.num_classes)
        self.training_step: Optional[int] = None
        self.set_training_step(None)

    def set_training_step(self, step: Optional[int]) -> None:
        """TF's drop-path schedule at global step ``step`` (``None`` = past the burn-in, the initial state):
        cell ``c`` keeps with ``1 - min(1, step / total_training_steps) * (c + 1) / total_cells * (1 - keep)``."""
        self.training_step = None if step is None else int(step)
        for cell in self._cells:
            keep = P.drop_path_keep_prob(self.spec, cell.cell_num, self.training_step)
            cell.set_drop_prob(1.0 - keep)

    def drop_probs(self) -> List[float]:
        """The current drop probability of each cell (0 without drop path)."""
        return [cell.drop_paths[0].drop_prob if cell.drop_paths else 0.0 for cell in self._cells]

    def forward_features(self, x: paddle.Tensor):
        """``(last cell output, aux logits or None)``; the aux head runs in training mode only."""
        x = self.conv_0(x)
        prev_prev = prev = x       # cell_stem_0: prev_prev is the raw conv_0 output
        aux = None
        run_aux = self.aux_head is not None and self.training
        for i, cell in enumerate(self._cells):
            prev_prev, prev = prev, cell(prev_prev, prev)
            if run_aux and i == self._aux_index:
                aux = self.aux_head(prev)
        return prev, aux

    def forward(self, x: paddle.Tensor):
        x, aux = self.forward_features(x)
        x = self.global_pool(self.act(x))
        if self.head_drop is not None and self.training:
            x = self.head_drop(x)
        logits = self.last_linear(x)
        return (logits, aux) if aux is not None else logits


def build(spec: P.PNASNetSpec) -> PNASNet5:
    """The network of ``spec`` in eval mode (framework-default initial values: load weights with
    ``layout.load_neutral(model, common.specs.pnasnet.init_state(spec, rng))`` or a converted checkpoint)."""
    return PNASNet5(spec).eval()
