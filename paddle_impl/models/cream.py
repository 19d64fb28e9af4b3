"""Cream of the Crop child nets and supernet in Paddle: the twin of ``torch_impl/models/cream.py``.

``build(spec)`` turns a :class:`common.specs.cream.CreamNetSpec` into a module whose state names are exactly
``expected_state_shapes(spec)`` (timm-style: ``conv_stem``, ``bn1``, ``blocks.{stage}.{i}.*``, ``conv_head``,
``classifier``), so upstream checkpoints load by name.  Semantics (``shared/research/cream.md`` §1.2-1.4):

* stem: 3x3 stride-2 conv (symmetric padding ``k//2``, never TF-SAME) -> BN -> Swish;
* ``DepthwiseSeparableConv``: conv_dw -> bn1 -> Swish -> SE -> conv_pw -> bn2 (-> Swish for ``dsa``) (+ skip);
* ``InvertedResidual``: conv_pw -> bn1 -> Swish -> conv_dw -> bn2 -> Swish -> SE -> conv_pwl -> bn3 (+ skip);
* ``ConvBnAct``: conv -> bn1 -> Swish (no skip);
* SE: mean-pool -> conv_reduce -> ReLU -> conv_expand -> hard_sigmoid gate, reduced width from the spec;
* head: global average pool *before* ``conv_head`` (1x1 with bias) -> Swish -> flatten -> Dropout -> classifier.

A skip connection exists when the spec says so (in == out, stride 1, not ``noskip``); DropPath is built on it only
when its rate (``block_drop_path_rates``) is > 0.  Every decision is taken here at build time; forward only runs
the layers.  Every layer comes from ``paddle_impl/ops.py``; module names and order equal the torch twin's.

``build(spec)`` of a :class:`common.specs.cream.CreamSupernetSpec` is the one-shot supernet (:class:`CreamSupernet`,
upstream ``lib/models/structures/supernet.py``): the same stem and head, ``blocks.{stage}.{layer}.{choice}`` built
from the same block classes, a path choosing one block per layer (or skipping it), and the meta-matching
``meta_layer``.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple, Union

import paddle
import paddle.nn as nn

from common.specs.cream import (META_PARAMETERS, CreamNetSpec, CreamSupernetSpec, LayerSpec, Path,
                                block_drop_path_rates, conv_padding, path_parameter_names, path_plan)
from paddle_impl import layout, ops

__all__ = ["DepthwiseSeparableConv", "InvertedResidual", "ConvBnAct", "CreamChildNet", "CreamSupernet", "build"]


def _bn(channels: int, spec: CreamNetSpec) -> ops.BatchNorm2d:
    return ops.BatchNorm2d(channels, eps=spec.bn_eps, momentum=spec.bn_momentum)


def _se(layer: LayerSpec, spec: CreamNetSpec) -> Optional[ops.SqueezeExcite]:
    return ops.SqueezeExcite(layer.mid_ch, layer.se_ch, spec.se_act, spec.se_gate) if layer.se_ch else None


def _drop_path(layer: LayerSpec, rate: float) -> Optional[ops.DropPath]:
    return ops.DropPath(rate) if layer.residual and rate > 0.0 else None


class DepthwiseSeparableConv(nn.Layer):
    """``ds`` / ``dsa`` block (timm names: conv_dw, bn1, se, conv_pw, bn2)."""

    def __init__(self, layer: LayerSpec, spec: CreamNetSpec, drop_path_rate: float = 0.0):
        super().__init__()
        self.has_residual = bool(layer.residual)
        self.conv_dw = ops.Conv2d(layer.in_ch, layer.in_ch, layer.kernel, layer.stride, layer.padding,
                                  groups=layer.in_ch)
        self.bn1 = _bn(layer.in_ch, spec)
        self.act1 = ops.create_act(layer.act)
        self.se = _se(layer, spec)
        self.conv_pw = ops.Conv2d(layer.in_ch, layer.out_ch, 1)
        self.bn2 = _bn(layer.out_ch, spec)
        self.act2 = ops.create_act(layer.act) if layer.pw_act else None
        self.drop_path = _drop_path(layer, drop_path_rate)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv_dw(x)))
        if self.se is not None:
            x = self.se(x)
        x = self.bn2(self.conv_pw(x))
        if self.act2 is not None:
            x = self.act2(x)
        if self.has_residual:
            if self.drop_path is not None:
                x = self.drop_path(x)
            x = x + shortcut
        return x


class InvertedResidual(nn.Layer):
    """``ir`` block, MobileNetV2/EfficientNet MBConv (timm names: conv_pw, bn1, conv_dw, bn2, se, conv_pwl, bn3)."""

    def __init__(self, layer: LayerSpec, spec: CreamNetSpec, drop_path_rate: float = 0.0):
        super().__init__()
        self.has_residual = bool(layer.residual)
        mid = layer.mid_ch
        self.conv_pw = ops.Conv2d(layer.in_ch, mid, 1)
        self.bn1 = _bn(mid, spec)
        self.act1 = ops.create_act(layer.act)
        self.conv_dw = ops.Conv2d(mid, mid, layer.kernel, layer.stride, layer.padding, groups=mid)
        self.bn2 = _bn(mid, spec)
        self.act2 = ops.create_act(layer.act)
        self.se = _se(layer, spec)
        self.conv_pwl = ops.Conv2d(mid, layer.out_ch, 1)
        self.bn3 = _bn(layer.out_ch, spec)
        self.drop_path = _drop_path(layer, drop_path_rate)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv_pw(x)))
        x = self.act2(self.bn2(self.conv_dw(x)))
        if self.se is not None:
            x = self.se(x)
        x = self.bn3(self.conv_pwl(x))
        if self.has_residual:
            if self.drop_path is not None:
                x = self.drop_path(x)
            x = x + shortcut
        return x


class ConvBnAct(nn.Layer):
    """``cn`` block (timm names: conv, bn1); no skip connection (timm 0.1.20)."""

    def __init__(self, layer: LayerSpec, spec: CreamNetSpec, drop_path_rate: float = 0.0):
        super().__init__()
        self.conv = ops.Conv2d(layer.in_ch, layer.out_ch, layer.kernel, layer.stride, layer.padding)
        self.bn1 = _bn(layer.out_ch, spec)
        self.act1 = ops.create_act(layer.act)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.act1(self.bn1(self.conv(x)))


BLOCKS = {"ds": DepthwiseSeparableConv, "dsa": DepthwiseSeparableConv, "ir": InvertedResidual, "cn": ConvBnAct}


class _StemAndHead(nn.Layer):
    """What a child net and the supernet share: the stem (``conv_stem`` -> ``bn1`` -> ``act1``) and the head
    (global average pool -> ``conv_head`` -> ``act2`` -> flatten -> ``dropout`` -> ``classifier``)."""

    def _init_stem(self, spec) -> None:
        self.conv_stem = ops.Conv2d(spec.in_chans, spec.stem_ch, spec.stem_kernel, spec.stem_stride,
                                    conv_padding(spec.stem_kernel, spec.stem_stride))
        self.bn1 = _bn(spec.stem_ch, spec)
        self.act1 = ops.create_act(spec.act)

    def _init_head(self, spec) -> None:
        self.conv_head = ops.Conv2d(spec.head_in_ch, spec.num_features, 1, bias=spec.head_bias)
        self.act2 = ops.create_act(spec.act)
        self.dropout = ops.Dropout(spec.drop_rate)
        self.classifier = ops.Linear(spec.num_features, spec.num_classes)

    def forward_head(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.act2(self.conv_head(x.mean(axis=[2, 3], keepdim=True)))
        return self.classifier(self.dropout(x.flatten(1)))


class CreamChildNet(_StemAndHead):
    """A Cream child net built from its spec (see the module docstring)."""

    def __init__(self, spec: CreamNetSpec):
        super().__init__()
        if not isinstance(spec, CreamNetSpec):
            raise TypeError(f"build(spec) needs a CreamNetSpec (a child net), got {type(spec).__name__}")
        self.spec = spec
        self._init_stem(spec)
        rates = block_drop_path_rates(spec)
        self.blocks = nn.Sequential(*[
            nn.Sequential(*[BLOCKS[layer.type](layer, spec, rates[s][i]) for i, layer in enumerate(stage)])
            for s, stage in enumerate(spec.stages)
        ])
        self._init_head(spec)

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """Stem and blocks: the last feature map, before pooling."""
        return self.blocks(self.act1(self.bn1(self.conv_stem(x))))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------------------------------------------
# The one-shot supernet
# --------------------------------------------------------------------------------------------------------------

class CreamSupernet(_StemAndHead):
    """The Cream supernet (upstream ``lib/models/structures/supernet.py``): ``blocks[s][i][c]`` is choice ``c`` of
    layer ``i`` of stage ``s`` (child-net block classes, no drop path); a path runs one choice per layer (or skips
    it, -1); stage 3's 5th layer is built but never run (paths carry ``sta_num`` entries).  ``meta_layer`` is the
    meta-matching network: ``forward_meta(features)`` on ``[slice, num_classes]`` values -> ``[1, 1]``."""

    def __init__(self, spec: CreamSupernetSpec):
        super().__init__()
        if not isinstance(spec, CreamSupernetSpec):
            raise TypeError(f"CreamSupernet needs a CreamSupernetSpec, got {type(spec).__name__}")
        self.spec = spec
        self._init_stem(spec)
        self.blocks = nn.LayerList([
            nn.LayerList([nn.LayerList([BLOCKS[layer.type](layer, spec) for layer in options]) for options in stage])
            for stage in spec.stages
        ])
        self._init_head(spec)
        self.meta_layer = ops.Linear(spec.meta_features, 1)
        self.path: Optional[Path] = None
        self._plan: Optional[Tuple[nn.Layer, ...]] = None   # the blocks of ``self.path``, in forward order
        self._named: Optional[Dict[str, paddle.Tensor]] = None  # canonical name -> parameter (built on first use)

    # ----------------------------------------------------------------------------------- paths
    def _blocks_of(self, path, key: str = "path") -> Tuple[Path, Tuple[nn.Layer, ...]]:
        checked, plan = path_plan(self.spec, path, key)
        return checked, tuple(self.blocks[s][i][c] for s, i, c in plan)

    def set_path(self, path) -> Path:
        """Check ``path`` and run it on every later ``forward(x)``; returns it as a tuple of tuples."""
        self.path, self._plan = self._blocks_of(path)
        return self.path

    def forward_features(self, x: paddle.Tensor, path=None) -> paddle.Tensor:
        """Stem and the path's blocks: the last feature map, before pooling."""
        if path is None:
            blocks = self._plan
            if blocks is None:
                raise RuntimeError("CreamSupernet.forward: no path; call set_path(path) first or pass "
                                   "forward(x, path)")
        else:
            blocks = self._blocks_of(path)[1]
        x = self.act1(self.bn1(self.conv_stem(x)))
        for block in blocks:
            x = block(x)
        return x

    def forward(self, x: paddle.Tensor, path=None) -> paddle.Tensor:
        """Logits of ``path`` (the one given to :meth:`set_path` when None)."""
        return self.forward_head(self.forward_features(x, path))

    # ----------------------------------------------------------------------------------- meta-matching
    def forward_meta(self, features: paddle.Tensor) -> paddle.Tensor:
        """``meta_layer(features.reshape(1, -1))`` in the meta layer's dtype: ``[1, 1]``."""
        weight = self.meta_layer.weight
        count = math.prod(features.shape)
        if count != self.spec.meta_features:
            raise ValueError(f"forward_meta: features of shape {list(features.shape)} hold {count} values; "
                             f"the meta layer reads slice x num_classes = {self.spec.slice} x "
                             f"{self.spec.num_classes} = {self.spec.meta_features}")
        return self.meta_layer(features.reshape([1, -1]).astype(weight.dtype))

    def set_meta_dtype(self, dtype_name: str) -> None:
        """Cast only ``meta_layer`` to ``dtype_name`` ("float32" / "float64"); the rest keeps its dtype.  The
        parameters stay the same objects (optimizers built earlier keep them)."""
        if dtype_name not in ("float32", "float64"):
            raise ValueError(f"set_meta_dtype: dtype {dtype_name!r} is not 'float32' or 'float64'")
        self.meta_layer.to(dtype=dtype_name)

    # ----------------------------------------------------------------------------------- parameters
    def _canonical_parameters(self) -> Dict[str, paddle.Tensor]:
        if self._named is None:
            names = layout.neutral_name_map(self)  # paddle names -> canonical (torch-style) names
            self._named = {names[name]: p for name, p in self.named_parameters()}
        return self._named

    def path_parameters(self, path) -> List[Tuple[str, paddle.Tensor]]:
        """``[(canonical name, parameter)]`` a path trains, in upstream's ``rand_parameters(path)`` order
        (:func:`common.specs.cream.path_parameter_names`)."""
        checked = self._blocks_of(path)[0]
        named = self._canonical_parameters()
        return [(name, named[name]) for name in path_parameter_names(self.spec, checked)]

    def meta_parameters(self) -> List[Tuple[str, paddle.Tensor]]:
        named = self._canonical_parameters()
        return [(name, named[name]) for name in META_PARAMETERS]


def build(spec: Union[CreamNetSpec, CreamSupernetSpec]) -> Union[CreamChildNet, CreamSupernet]:
    """The child net (a ``CreamNetSpec``) or the supernet (a ``CreamSupernetSpec``) of ``spec`` in eval mode
    (framework-default initial values: load weights with ``layout.load_neutral(model, init_state(spec, rng))`` or
    a checkpoint)."""
    if isinstance(spec, CreamSupernetSpec):
        return CreamSupernet(spec).eval()
    return CreamChildNet(spec).eval()
