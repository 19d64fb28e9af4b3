"""PC-DARTS evaluation networks in Paddle: the twin of ``torch_impl/models/pcdarts.py``.

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

Every cell decision comes from ``common.specs.pcdarts.cell_plan``; every layer from ``paddle_impl/ops.py``; module
names and order equal the torch twin's.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from common.specs.pcdarts import (ARCH_NAMES, AUX_CHANNELS, PRIMITIVES, SEARCH_STEM_MULTIPLIER, STEM_MULTIPLIER,
                                  CellSpec, OpSpec, PCDartsNetSpec, SearchCellSpec, SearchNetSpec, aux_cell_index,
                                  cell_plan, drop_prob_at, node_slices, op_padding, search_cell_plan)
from paddle_impl import ops

__all__ = ["make_op", "Cell", "AuxiliaryHeadCIFAR", "AuxiliaryHeadImageNet", "NetworkCIFAR", "NetworkImageNet",
           "MixedOp", "SearchCell", "SearchNetwork", "build"]


def make_op(op: OpSpec, C: int) -> nn.Layer:
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


class Cell(nn.Layer):
    """The evaluation cell of ``cell_spec`` (upstream ``model.Cell``)."""

    def __init__(self, cell_spec: CellSpec, drop_prob: float):
        super().__init__()
        self.reduction = cell_spec.reduction
        if cell_spec.reduction_prev:
            self.preprocess0 = ops.FactorizedReduce(cell_spec.C_prev_prev, cell_spec.C)
        else:
            self.preprocess0 = ops.ReLUConvBN(cell_spec.C_prev_prev, cell_spec.C, 1, 1, 0)
        self.preprocess1 = ops.ReLUConvBN(cell_spec.C_prev, cell_spec.C, 1, 1, 0)
        self._ops = nn.LayerList([make_op(op, cell_spec.C) for op in cell_spec.ops])
        self._indices = tuple(op.index for op in cell_spec.ops)
        self._drops = tuple(not op.is_identity for op in cell_spec.ops)
        self._concat = tuple(cell_spec.concat)
        self._steps = cell_spec.steps
        self.drop_path = ops.DropPath(drop_prob)

    def forward(self, s0: paddle.Tensor, s1: paddle.Tensor) -> paddle.Tensor:
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
        return paddle.concat([states[i] for i in self._concat], axis=1)


class AuxiliaryHeadCIFAR(nn.Layer):
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

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.classifier(self.features(x).flatten(1))


class AuxiliaryHeadImageNet(nn.Layer):
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

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.classifier(self.features(x).flatten(1))


class _Network(nn.Layer):
    """What NetworkCIFAR and NetworkImageNet share: the cells, the aux head, the drop-path ramp, the forward."""

    def _build_cells(self, spec: PCDartsNetSpec, aux_head) -> None:
        if not isinstance(spec, PCDartsNetSpec):
            raise TypeError(f"build(spec) needs a PCDartsNetSpec, got {type(spec).__name__}")
        self.spec = spec
        self.drop_path_prob = spec.drop_path
        plan = cell_plan(spec)
        self.cells = nn.LayerList([Cell(cell_spec, spec.drop_path) for cell_spec in plan])
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

    def forward_cells(self, s0: paddle.Tensor, s1: paddle.Tensor):
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

    def forward(self, x: paddle.Tensor):
        s = self.stem(x)
        out, aux = self.forward_cells(s, s)
        logits = self.classifier(out.mean(axis=[2, 3]))
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

    def forward(self, x: paddle.Tensor):
        s0 = self.stem0(x)
        s1 = self.stem1(s0)
        out, aux = self.forward_cells(s0, s1)
        logits = self.classifier(self.global_pooling(out).flatten(1))
        return (logits, aux) if aux is not None else logits


NETWORKS = {"cifar": NetworkCIFAR, "imagenet": NetworkImageNet}


# ---------------------------------------------------------------------------------------------------------
# The search network (upstream model_search.py / model_search_imagenet.py)
# ---------------------------------------------------------------------------------------------------------
def make_search_op(primitive: str, C: int, stride: int) -> nn.Layer:
    """Upstream ``OPS[name](C, stride, affine=False)``; a pool is followed by an ``affine=False`` BN (``.1``)."""
    if primitive == "none":
        return ops.Zero(stride)
    if "pool" in primitive:
        pool = (ops.MaxPool2d(3, stride, 1) if primitive == "max_pool_3x3"
                else ops.AvgPool2d(3, stride, 1, count_include_pad=False))
        return nn.Sequential(pool, ops.BatchNorm2d(C, affine=False))
    if primitive == "skip_connect":
        return ops.Identity() if stride == 1 else ops.FactorizedReduce(C, C, affine=False)
    kernel, padding, dilation = op_padding(primitive)
    if primitive.startswith("sep_conv"):
        return ops.SepConv(C, C, kernel, stride, padding, affine=False)
    return ops.DilConv(C, C, kernel, stride, padding, dilation, affine=False)


class MixedOp(nn.Layer):
    """A partial-channel edge: the first ``C/k`` channels go through ``sum_o w_o * op_o``, the rest bypass it (a 2x2
    max pool on a stride-2 edge); the two parts are concatenated and channel-shuffled with ``k`` groups.

    ``none`` is a module (its index keeps upstream's key numbers) but is not run: ``w * 0`` adds nothing, and its
    alpha still gets its gradient through the softmax.  The concatenation and the shuffle are one copy: the
    bypass half is written straight into its shuffled places."""

    def __init__(self, C: int, stride: int, k: int):
        super().__init__()
        self.k = k
        self._ops = nn.LayerList([make_search_op(p, C // k, stride) for p in PRIMITIVES])
        self.mp = ops.MaxPool2d(2, 2)
        self._run = tuple(i for i, p in enumerate(PRIMITIVES) if p != "none")

    def forward(self, x: paddle.Tensor, weights: paddle.Tensor) -> paddle.Tensor:
        b, c, h, w = x.shape
        part = c // self.k
        head = x[:, :part].contiguous()  # one copy of the partial channels, read by all seven ops
        mixed = None
        for i in self._run:
            y = weights[i] * self._ops[i](head)
            mixed = y if mixed is None else mixed + y
        rest = x[:, part:]
        if mixed.shape[2] != h:
            rest = self.mp(rest)
        oh, ow = mixed.shape[2], mixed.shape[3]
        # cat([mixed, rest]) then channel_shuffle(k): output channel j*k + g = input channel g*part + j
        groups = paddle.concat([mixed.unsqueeze(2),
                                rest.reshape([b, self.k - 1, part, oh, ow]).transpose([0, 2, 1, 3, 4])], axis=2)
        return groups.reshape([b, c, oh, ow])


class SearchCell(nn.Layer):
    """Upstream ``model_search.Cell``: preprocessing, then node ``i`` = ``sum_j beta'_j * MixedOp_j(state_j, alpha_j)``
    over every earlier state; the output concatenates the last ``multiplier`` states."""

    def __init__(self, cell: SearchCellSpec, k: int):
        super().__init__()
        self.reduction = cell.reduction
        if cell.reduction_prev:
            self.preprocess0 = ops.FactorizedReduce(cell.C_prev_prev, cell.C, affine=False)
        else:
            self.preprocess0 = ops.ReLUConvBN(cell.C_prev_prev, cell.C, 1, 1, 0, affine=False)
        self.preprocess1 = ops.ReLUConvBN(cell.C_prev, cell.C, 1, 1, 0, affine=False)
        self._ops = nn.LayerList([MixedOp(cell.C, stride, k) for _, stride in cell.edges])
        self._multiplier = cell.multiplier

    def forward(self, s0: paddle.Tensor, s1: paddle.Tensor, weights: paddle.Tensor, weights2: paddle.Tensor):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        while offset < len(self._ops):
            node = None
            for j, h in enumerate(states):
                y = weights2[offset + j] * self._ops[offset + j](h, weights[offset + j])
                node = y if node is None else node + y
            offset += len(states)
            states.append(node)
        return paddle.concat(states[-self._multiplier:], axis=1)


class SearchNetwork(nn.Layer):
    """Upstream ``model_search.Network`` (``kind='cifar'``) / ``model_search_imagenet.Network``: the stems, the
    search cells, global average pooling, ``classifier``; the architecture parameters ``alphas_normal``,
    ``alphas_reduce`` [edges, 8] and ``betas_normal``, ``betas_reduce`` [edges] are parameters of the module (so
    they are saved with it) that the task gives to the architecture optimizer only."""

    def __init__(self, spec: SearchNetSpec):
        super().__init__()
        self.spec = spec
        c_stem = SEARCH_STEM_MULTIPLIER * spec.C
        if spec.kind == "cifar":
            self.stem = nn.Sequential(ops.Conv2d(spec.in_channels, c_stem, 3, 1, 1), ops.BatchNorm2d(c_stem))
        else:
            self.stem0 = nn.Sequential(ops.Conv2d(spec.in_channels, c_stem // 2, 3, 2, 1), ops.BatchNorm2d(c_stem // 2),
                                       ops.ReLU(), ops.Conv2d(c_stem // 2, c_stem, 3, 2, 1), ops.BatchNorm2d(c_stem))
            self.stem1 = nn.Sequential(ops.ReLU(), ops.Conv2d(c_stem, c_stem, 3, 2, 1), ops.BatchNorm2d(c_stem))
        plan = search_cell_plan(spec)
        self.cells = nn.LayerList([SearchCell(cell, spec.k) for cell in plan])
        self.classifier = ops.Linear(plan[-1].C_out, spec.num_classes)
        for name, shape in spec.arch_shapes.items():
            setattr(self, name, self.create_parameter(list(shape), default_initializer=nn.initializer.Constant(0.0)))
        self._slices = node_slices(spec.steps)

    def arch_parameters(self):
        return [getattr(self, name) for name in ARCH_NAMES]

    def edge_weights(self, betas: paddle.Tensor) -> paddle.Tensor:
        """The edge normalisation: softmax of beta over each node's incoming edges."""
        return paddle.concat([paddle.nn.functional.softmax(betas[a:b], axis=-1) for a, b in self._slices])

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        softmax = paddle.nn.functional.softmax
        mix = {False: (softmax(self.alphas_normal, axis=-1), self.edge_weights(self.betas_normal)),
               True: (softmax(self.alphas_reduce, axis=-1), self.edge_weights(self.betas_reduce))}
        if self.spec.kind == "cifar":
            s0 = s1 = self.stem(x)
        else:
            s0 = self.stem0(x)
            s1 = self.stem1(s0)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, *mix[cell.reduction])
        return self.classifier(s1.mean(axis=[2, 3]))


def build(spec) -> nn.Layer:
    """The network of ``spec`` in eval mode (framework-default initial values: load weights with
    ``layout.load_neutral(model, common.specs.pcdarts.init_state(spec, rng))`` or a checkpoint).
    A :class:`SearchNetSpec` gives the search network."""
    if isinstance(spec, SearchNetSpec):
        return SearchNetwork(spec).eval()
    if not isinstance(spec, PCDartsNetSpec):
        raise TypeError(f"build(spec) needs a PCDartsNetSpec or SearchNetSpec, got {type(spec).__name__}")
    return NETWORKS[spec.kind](spec).eval()
