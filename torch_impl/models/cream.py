"""Cream of the Crop child nets in PyTorch: the twin of ``paddle_impl/models/cream.py``.

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
the layers.  Every layer comes from ``torch_impl/ops.py``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from common.specs.cream import CreamNetSpec, LayerSpec, block_drop_path_rates, conv_padding
from torch_impl import ops

__all__ = ["DepthwiseSeparableConv", "InvertedResidual", "ConvBnAct", "CreamChildNet", "build"]


def _bn(channels: int, spec: CreamNetSpec) -> ops.BatchNorm2d:
    return ops.BatchNorm2d(channels, eps=spec.bn_eps, momentum=spec.bn_momentum)


def _se(layer: LayerSpec, spec: CreamNetSpec) -> Optional[ops.SqueezeExcite]:
    return ops.SqueezeExcite(layer.mid_ch, layer.se_ch, spec.se_act, spec.se_gate) if layer.se_ch else None


def _drop_path(layer: LayerSpec, rate: float) -> Optional[ops.DropPath]:
    return ops.DropPath(rate) if layer.residual and rate > 0.0 else None


class DepthwiseSeparableConv(nn.Module):
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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


class InvertedResidual(nn.Module):
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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


class ConvBnAct(nn.Module):
    """``cn`` block (timm names: conv, bn1); no skip connection (timm 0.1.20)."""

    def __init__(self, layer: LayerSpec, spec: CreamNetSpec, drop_path_rate: float = 0.0):
        super().__init__()
        self.conv = ops.Conv2d(layer.in_ch, layer.out_ch, layer.kernel, layer.stride, layer.padding)
        self.bn1 = _bn(layer.out_ch, spec)
        self.act1 = ops.create_act(layer.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv(x)))


BLOCKS = {"ds": DepthwiseSeparableConv, "dsa": DepthwiseSeparableConv, "ir": InvertedResidual, "cn": ConvBnAct}


class CreamChildNet(nn.Module):
    """A Cream child net built from its spec (see the module docstring)."""

    def __init__(self, spec: CreamNetSpec):
        super().__init__()
        if not isinstance(spec, CreamNetSpec):
            raise TypeError(f"build(spec) needs a CreamNetSpec (a child net), got {type(spec).__name__}")
        self.spec = spec
        self.conv_stem = ops.Conv2d(spec.in_chans, spec.stem_ch, spec.stem_kernel, spec.stem_stride,
                                    conv_padding(spec.stem_kernel, spec.stem_stride))
        self.bn1 = _bn(spec.stem_ch, spec)
        self.act1 = ops.create_act(spec.act)
        rates = block_drop_path_rates(spec)
        self.blocks = nn.Sequential(*[
            nn.Sequential(*[BLOCKS[layer.type](layer, spec, rates[s][i]) for i, layer in enumerate(stage)])
            for s, stage in enumerate(spec.stages)
        ])
        self.conv_head = ops.Conv2d(spec.head_in_ch, spec.num_features, 1, bias=spec.head_bias)
        self.act2 = ops.create_act(spec.act)
        self.dropout = ops.Dropout(spec.drop_rate)
        self.classifier = ops.Linear(spec.num_features, spec.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and blocks: the last feature map, before pooling."""
        return self.blocks(self.act1(self.bn1(self.conv_stem(x))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv_head(x.mean((2, 3), keepdim=True)))
        return self.classifier(self.dropout(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build(spec: CreamNetSpec) -> CreamChildNet:
    """The child net of ``spec`` in eval mode (framework-default initial values: load weights with
    ``layout.load_neutral(model, common.specs.cream.init_state(spec, rng))`` or a checkpoint)."""
    return CreamChildNet(spec).eval()
