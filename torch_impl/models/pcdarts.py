"""PC-DARTS evaluation networks in PyTorch: the twin of ``paddle_impl/models/pcdarts.py``.

``build(spec)`` turns a :class:`common.specs.pcdarts.PCDartsNetSpec` into NetworkCIFAR or NetworkImageNet whose
state names are exactly ``expected_state_shapes(spec)`` (upstream ``model.py``: ``stem`` / ``stem0`` ``stem1``,
``cells.{i}.preprocess{0,1}``, ``cells.{i}._ops.{k}``, ``auxiliary_head.features`` / ``.classifier``,
``classifier``), so upstream checkpoints load by name.  Semantics (``shared/research/pcdarts.md`` §3.1-3.3):

* cell: preprocess0 (FactorizedReduce after a reduction, else ReLUConvBN 1x1), preprocess1 (ReLUConvBN 1x1); node
  ``i`` = op(2i)(state) + op(2i+1)(state); output = concat of the genotype's concat states;
* drop path (training, probability > 0) on every op output except an identity ``skip_connect``: pools and the
  stride-2 FactorizedReduce skip included; masks from numpy when the task attaches a ``MaskSource``;
* ``set_epoch(epoch, total_epochs)``: probability ``spec.drop_path * epoch / total_epochs`` (upstream's ramp);
  before any call, ``spec.drop_path``;
* forward: ``logits`` in eval mode (and without an aux head); ``(logits, aux_logits)`` in training with the aux head.

Every cell decision comes from ``common.specs.pcdarts.cell_plan``; every layer from ``torch_impl/ops.py``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from common.specs.pcdarts import (AUX_CHANNELS, STEM_MULTIPLIER, CellSpec, OpSpec, PCDartsNetSpec, aux_cell_index,
                                  cell_plan, drop_prob_at, op_padding)
from torch_impl import ops

__all__ = ["make_op", "Cell", "AuxiliaryHeadCIFAR", "AuxiliaryHeadImageNet", "NetworkCIFAR", "NetworkImageNet",
           "build"]


def make_op(op: OpSpec, C: int) -> nn.Module:
    """Upstream ``OPS[name](C, stride, affine=True)``."""
    if op.op == "none":
        return ops.Zero(op.stride)
    if op.op == "max_pool_3x3":
        return ops.MaxPool2d(3, op.stride, 1)
    if op.op == "avg_pool_3x3":
        return ops.AvgPool2d(3, op.stride, 1, count_include_pad=False)
    if op.op == "skip_connect":
        return ops.Identity() if op.stride == 1 else ops.FactorizedReduce(C, C)
    kernel, padding, dilation = op_padding(op.op)
    if op.op.startswith("sep_conv"):
        return ops.SepConv(C, C, kernel, op.stride, padding)
    return ops.DilConv(C, C, kernel, op.stride, padding, dilation)


class Cell(nn.Module):
    """The evaluation cell of ``cell_spec`` (upstream ``model.Cell``)."""

    def __init__(self, cell_spec: CellSpec, drop_prob: float):
        super().__init__()
        self.reduction = cell_spec.reduction
        if cell_spec.reduction_prev:
            self.preprocess0 = ops.FactorizedReduce(cell_spec.C_prev_prev, cell_spec.C)
        else:
            self.preprocess0 = ops.ReLUConvBN(cell_spec.C_prev_prev, cell_spec.C, 1, 1, 0)
        self.preprocess1 = ops.ReLUConvBN(cell_spec.C_prev, cell_spec.C, 1, 1, 0)
        self._ops = nn.ModuleList([make_op(op, cell_spec.C) for op in cell_spec.ops])
        self._indices = tuple(op.index for op in cell_spec.ops)
        self._drops = tuple(not op.is_identity for op in cell_spec.ops)
        self._concat = tuple(cell_spec.concat)
        self._steps = cell_spec.steps
        self.drop_path = ops.DropPath(drop_prob)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self._steps):
            a, b = 2 * i, 2 * i + 1
            h1 = self._ops[a](states[self._indices[a]])
            h2 = self._ops[b](states[self._indices[b]])
            if self._drops[a]:
                h1 = self.drop_path(h1)
            if self._drops[b]:
                h2 = self.drop_path(h2)
            states.append(h1 + h2)
        return torch.cat([states[i] for i in self._concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """ReLU, AvgPool2d(5, 3) (8x8 -> 2x2), 1x1 conv 128, BN, ReLU, 2x2 conv 768, BN, ReLU; ``classifier``."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            ops.ReLU(),
            ops.AvgPool2d(5, 3, 0, count_include_pad=False),
            ops.Conv2d(C, AUX_CHANNELS[0], 1),
            ops.BatchNorm2d(AUX_CHANNELS[0]),
            ops.ReLU(),
            ops.Conv2d(AUX_CHANNELS[0], AUX_CHANNELS[1], 2),
            ops.BatchNorm2d(AUX_CHANNELS[1]),
            ops.ReLU(),
        )
        self.classifier = ops.Linear(AUX_CHANNELS[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class AuxiliaryHeadImageNet(nn.Module):
    """ReLU, AvgPool2d(5, 2) (7x7 -> 2x2), 1x1 conv 128, BN, ReLU, 2x2 conv 768 (no BN, as upstream), ReLU."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            ops.ReLU(),
            ops.AvgPool2d(5, 2, 0, count_include_pad=False),
            ops.Conv2d(C, AUX_CHANNELS[0], 1),
            ops.BatchNorm2d(AUX_CHANNELS[0]),
            ops.ReLU(),
            ops.Conv2d(AUX_CHANNELS[0], AUX_CHANNELS[1], 2),
            ops.ReLU(),
        )
        self.classifier = ops.Linear(AUX_CHANNELS[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class _Network(nn.Module):
    """What NetworkCIFAR and NetworkImageNet share: the cells, the aux head, the drop-path ramp, the forward."""

    def _build_cells(self, spec: PCDartsNetSpec, aux_head) -> None:
        if not isinstance(spec, PCDartsNetSpec):
            raise TypeError(f"build(spec) needs a PCDartsNetSpec, got {type(spec).__name__}")
        self.spec = spec
        self.drop_path_prob = spec.drop_path
        plan = cell_plan(spec)
        self.cells = nn.ModuleList([Cell(cell_spec, spec.drop_path) for cell_spec in plan])
        self._aux_index = aux_cell_index(spec) if spec.auxiliary else -1
        if spec.auxiliary:
            self.auxiliary_head = aux_head(plan[self._aux_index].C_out, spec.num_classes)
        else:
            self.auxiliary_head = None

    def set_epoch(self, epoch: int, total_epochs: int) -> None:
        """Drop-path probability for this epoch: ``spec.drop_path * epoch / total_epochs`` (upstream's ramp)."""
        self.drop_path_prob = drop_prob_at(self.spec, epoch, total_epochs)
        for cell in self.cells:
            cell.drop_path.drop_prob = self.drop_path_prob

    def forward_cells(self, s0: torch.Tensor, s1: torch.Tensor):
        """``(last cell output, aux logits or None)``; the aux head runs in training mode only."""
        aux = None
        run_aux = self.auxiliary_head is not None and self.training
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if run_aux and i == self._aux_index:
                aux = self.auxiliary_head(s1)
        return s1, aux


class NetworkCIFAR(_Network):
    """Upstream ``model.NetworkCIFAR``: 3x3 stem to 3C channels, the cells, global average pool, ``classifier``."""

    def __init__(self, spec: PCDartsNetSpec):
        super().__init__()
        c_stem = STEM_MULTIPLIER * spec.C
        self.stem = nn.Sequential(ops.Conv2d(spec.in_channels, c_stem, 3, 1, 1), ops.BatchNorm2d(c_stem))
        self._build_cells(spec, AuxiliaryHeadCIFAR)
        self.classifier = ops.Linear(cell_plan(spec)[-1].C_out, spec.num_classes)

    def forward(self, x: torch.Tensor):
        s = self.stem(x)
        out, aux = self.forward_cells(s, s)
        logits = self.classifier(out.mean((2, 3)))
        return (logits, aux) if aux is not None else logits


class NetworkImageNet(_Network):
    """Upstream ``model.NetworkImageNet``: ``stem0`` (two stride-2 convs), ``stem1`` (one), the cells, AvgPool2d(7)."""

    def __init__(self, spec: PCDartsNetSpec):
        super().__init__()
        C = spec.C
        self.stem0 = nn.Sequential(
            ops.Conv2d(spec.in_channels, C // 2, 3, 2, 1),
            ops.BatchNorm2d(C // 2),
            ops.ReLU(),
            ops.Conv2d(C // 2, C, 3, 2, 1),
            ops.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(ops.ReLU(), ops.Conv2d(C, C, 3, 2, 1), ops.BatchNorm2d(C))
        self._build_cells(spec, AuxiliaryHeadImageNet)
        self.global_pooling = ops.AvgPool2d(7)
        self.classifier = ops.Linear(cell_plan(spec)[-1].C_out, spec.num_classes)

    def forward(self, x: torch.Tensor):
        s0 = self.stem0(x)
        s1 = self.stem1(s0)
        out, aux = self.forward_cells(s0, s1)
        logits = self.classifier(self.global_pooling(out).flatten(1))
        return (logits, aux) if aux is not None else logits


NETWORKS = {"cifar": NetworkCIFAR, "imagenet": NetworkImageNet}


def build(spec: PCDartsNetSpec) -> nn.Module:
    """The network of ``spec`` in eval mode (framework-default initial values: load weights with
    ``layout.load_neutral(model, common.specs.pcdarts.init_state(spec, rng))`` or a checkpoint)."""
    if not isinstance(spec, PCDartsNetSpec):
        raise TypeError(f"build(spec) needs a PCDartsNetSpec, got {type(spec).__name__}")
    return NETWORKS[spec.kind](spec).eval()
