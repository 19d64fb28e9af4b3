"""PNASNet-5 as plain data: the cell, the macro hyper-parameters, and everything derived from them.

Written from the facts in ``shared/research/pnasnet.md`` (TF-slim ``pnasnet.py`` / ``nasnet_utils.py`` semantics);
no framework is imported here.  Both backends and the TF reference builder read this module.

Conventions
-----------
* TF hidden-state indices: ``h0`` = *prev* (the cell input after ReLU -> 1x1 -> ``beginning_bn``),
  ``h1`` = *prev_prev* (after ``_reduce_prev_layer``), ``h2..h6`` = the outputs of blocks 0..4.
  DARTS-style ports swap 0 and 1; this module never does.
* Cells are numbered for drop path like TF: ``cell_stem_0`` = 0, ``cell_stem_1`` = 1, ``cell_i`` = i + 2.
* Canonical parameter names follow timm / Cadene (``conv_0.conv``, ``cell_4.comb_iter_2_left.separable_1...``,
  ``last_linear``).  The optional TF auxiliary head (not in timm) is named ``aux_head.{proj,bn0,conv,bn1,fc}``.
* Shapes are torch layout: conv ``[out, in/groups, kh, kw]``, Linear ``[out, in]``, BN ``[C]``.
* Spatial sizes use :mod:`common.padding` (``conv0`` is VALID, everything else TF SAME).

Derived facts for the two released configurations (checked by ``tests/test_pnasnet_spec.py``):

=============  ======  =====  ===========  ==========================  ===========================
config         stem    F      cells        filter sizes (stem0, stem1,  reductions / aux head
                                           then per reduction stage)
=============  ======  =====  ===========  ==========================  ===========================
Large (331)    96      216    12 (+2)      54, 108 | 216, 432, 864     cells 4, 8 / ``aux_7``
Mobile (224)   32      54     9 (+2)       13, 27  | 54, 108, 216      cells 3, 6 / ``aux_5``
=============  ======  =====  ===========  ==========================  ===========================

Mobile (TF-slim ``mobile_imagenet_config``): stem_multiplier 1.0 -> ``int(32*1.0)`` = 32 conv0 filters; the stem
cells run at ``int(54*0.25)`` = 13 and ``int(54*0.5)`` = 27 filters (odd, so ``cell_stem_1``'s factorized reduction
splits 27 into ``path1_conv`` 13 + ``path2_conv`` 14, the odd filter going to path 2 as in ``factorized_reduction``);
``calc_reduction_layers(9, 2)`` = [3, 6]; the aux head sits after ``reduction_indices[1] - 1`` = cell 5;
``drop_path_keep_prob`` = 1.0 (no drop path at all), dense dropout keep 0.5, 250000 total steps.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from common.padding import conv_output_size
from common.specs._checks import at_least, classifier_width, fraction, model_keys

# --------------------------------------------------------------------------------------------------------------
# The PNAS cell (PNasNetNormalCell): 5 blocks, each = left op + right op, combined by addition.
# --------------------------------------------------------------------------------------------------------------
CELL_OPERATIONS: Tuple[str, ...] = (
    "separable_5x5_2", "max_pool_3x3",
    "separable_7x7_2", "max_pool_3x3",
    "separable_5x5_2", "separable_3x3_2",
    "separable_3x3_2", "max_pool_3x3",
    "separable_3x3_2", "none",
)
CELL_HIDDENSTATE_INDICES: Tuple[int, ...] = (1, 1, 0, 0, 0, 0, 4, 0, 1, 0)
# used_hiddenstates of TF: 1 = not concatenated.  Only the two cell inputs are marked, so the output is the
# concatenation of all five block outputs (h2..h6) in order, even though h4 also feeds block 3.
CELL_USED_HIDDENSTATES: Tuple[int, ...] = (1, 1, 0, 0, 0, 0, 0)
NUM_BLOCKS = 5
CELL_CONCAT: Tuple[int, ...] = tuple(i for i, used in enumerate(CELL_USED_HIDDENSTATES) if not used)  # (2..6)

STEM_BASE_FILTERS = 32          # conv0 filters = int(32 * stem_multiplier)
NUM_STEM_CELLS = 2
AUX_POOL_KERNEL = 5             # aux head: avg pool 5x5, stride 3, VALID
AUX_POOL_STRIDE = 3
AUX_PROJ_FILTERS = 128
AUX_CONV_FILTERS = 768

# Prev-prev (h1) treatment, TF ``_reduce_prev_layer``.
PREV_INPUT = "input"                        # cell_stem_0: prev_layer is None -> h1 is the raw cell input
PREV_FACTORIZED = "factorized_reduction"    # spatial size differs -> ReLU -> factorized reduction
PREV_1X1 = "prev_1x1"                       # channels differ -> ReLU -> 1x1 conv -> BN
PREV_IDENTITY = "identity"                  # same size and channels -> used as is (never happens in PNASNet-5)

# Canonical module names of the aux head (TF ``aux_<k>/aux_logits/{proj,aux_bn0,Conv,aux_bn1,FC}``).
AUX_MODULES = ("proj", "bn0", "conv", "bn1", "fc")


@dataclasses.dataclass(frozen=True)
class OpSlot:
    """One op position of the cell: block ``block`` (0..4), ``side`` left/right, its TF op name and input index."""

    block: int
    side: str
    op: str
    input_index: int

    @property
    def kind(self) -> str:
        if self.op.startswith("separable_"):
            return "separable"
        if self.op.startswith("max_pool_"):
            return "max_pool"
        if self.op.startswith("avg_pool_"):
            return "avg_pool"
        if self.op == "none":
            return "none"
        raise ValueError(f"unknown PNAS cell operation {self.op!r}")

    @property
    def kernel_size(self) -> int:
        """Kernel of a separable / pool op (``separable_5x5_2`` -> 5); 1 for ``none``."""
        if self.kind == "none":
            return 1
        token = self.op.split("_")[-2] if self.kind == "separable" else self.op.split("_")[-1]
        return int(token.split("x")[0])

    @property
    def num_layers(self) -> int:
        """Number of stacked ReLU -> separable conv -> BN layers (``separable_5x5_2`` -> 2); 0 otherwise."""
        return int(self.op.split("_")[-1]) if self.kind == "separable" else 0


def cell_slots() -> Tuple[OpSlot, ...]:
    """The 10 op slots of the PNAS cell in TF order (block 0 left, block 0 right, block 1 left, ...)."""
    slots = []
    for i, (op, idx) in enumerate(zip(CELL_OPERATIONS, CELL_HIDDENSTATE_INDICES)):
        slots.append(OpSlot(block=i // 2, side="left" if i % 2 == 0 else "right", op=op, input_index=idx))
    return tuple(slots)


def calc_reduction_layers(num_cells: int, num_reduction_layers: int) -> List[int]:
    """Cell indices of the reduction cells: ``int(k / (R + 1) * num_cells)`` for k = 1..R (TF-slim)."""
    return [int(float(k) / (num_reduction_layers + 1) * num_cells) for k in range(1, num_reduction_layers + 1)]


# --------------------------------------------------------------------------------------------------------------
# Macro hyper-parameters.
# --------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PNASNetSpec:
    name: str
    num_cells: int                      # normal cells after the two stem cells
    filters: int                        # F = num_conv_filters
    stem_multiplier: float
    image_size: int
    num_classes: int = 1001             # 0 = background, 1..1000 = ImageNet classes
    filter_scaling_rate: float = 2.0
    num_reduction_layers: int = 2
    in_channels: int = 3
    bn_eps: float = 1e-3
    bn_decay: float = 0.9997            # TF moving = decay * moving + (1 - decay) * batch
    drop_path_keep_prob: float = 0.6    # training only; eval forces 1.0
    total_training_steps: int = 250000  # drop-path burn-in
    dense_dropout_keep_prob: float = 0.5
    use_aux_head: bool = True
    skip_reduction_layer_input: bool = True
    # Whether the *built model* carries the TF aux head (``aux_head.*``; training mode then returns
    # ``(logits, aux_logits)``).  ``use_aux_head`` is the TF hparam (where the head would sit); this switch
    # (``PNASNET.AUX_HEAD``) decides whether the twins build it.  Off: the eval model, timm's state dict.
    build_aux_head: bool = False

    def __post_init__(self):
        if self.num_cells < 1 or self.filters < 1 or self.stem_multiplier <= 0:
            raise ValueError(f"{self.name}: bad num_cells={self.num_cells} / filters={self.filters} / "
                             f"stem_multiplier={self.stem_multiplier}")
        if not self.skip_reduction_layer_input:
            raise ValueError(f"{self.name}: skip_reduction_layer_input=False is not supported (PNASNet-5 uses 1)")
        if not 0.0 < self.drop_path_keep_prob <= 1.0 or not 0.0 < self.dense_dropout_keep_prob <= 1.0:
            raise ValueError(f"{self.name}: keep probabilities must be in (0, 1]")
        if self.num_classes < 1:
            raise ValueError(f"{self.name}: num_classes must be >= 1, got {self.num_classes}")
        if self.total_training_steps < 0:
            raise ValueError(f"{self.name}: total_training_steps must be >= 0 (0 = no drop-path burn-in), got "
                             f"{self.total_training_steps}")
        if self.build_aux_head and self.aux_head_cell is None:
            raise ValueError(f"{self.name}: build_aux_head needs use_aux_head and two reduction cells")
        if not 0.0 <= self.bn_decay < 1.0:
            raise ValueError(f"{self.name}: bn_decay must be in [0, 1), got {self.bn_decay}")

    # -- derived scalars ---------------------------------------------------------------------------------------
    @property
    def stem_filters(self) -> int:
        return int(STEM_BASE_FILTERS * self.stem_multiplier)

    @property
    def reduction_indices(self) -> Tuple[int, ...]:
        return tuple(calc_reduction_layers(self.num_cells, self.num_reduction_layers))

    @property
    def total_num_cells(self) -> int:
        return self.num_cells + NUM_STEM_CELLS

    @property
    def aux_head_cell(self) -> Optional[int]:
        """Index of the normal cell after which the aux head sits (TF ``aux_<k>``), or None."""
        red = self.reduction_indices
        if not self.use_aux_head or len(red) < 2:
            return None
        return red[1] - 1

    @property
    def bn_momentum_torch(self) -> float:
        """TF decay 0.9997 in torch convention (``running = (1 - m) * running + m * batch``)."""
        return 1.0 - self.bn_decay

    @property
    def final_channels(self) -> int:
        return cell_structures(self)[-1].out_channels

    def with_classes(self, num_classes: int) -> "PNASNetSpec":
        return dataclasses.replace(self, num_classes=num_classes)


PNASNET5_LARGE = PNASNetSpec(name="pnasnet5_large", num_cells=12, filters=216, stem_multiplier=3.0,
                             image_size=331, drop_path_keep_prob=0.6)
PNASNET5_MOBILE = PNASNetSpec(name="pnasnet5_mobile", num_cells=9, filters=54, stem_multiplier=1.0,
                              image_size=224, drop_path_keep_prob=1.0)

SPECS: Dict[str, PNASNetSpec] = {s.name: s for s in (PNASNET5_LARGE, PNASNET5_MOBILE)}
_ALIASES = {"large": "pnasnet5_large", "mobile": "pnasnet5_mobile", "pnasnet5large": "pnasnet5_large",
            "pnasnet5mobile": "pnasnet5_mobile"}


def get_spec(name: str, num_classes: Optional[int] = None) -> PNASNetSpec:
    """``pnasnet5_large`` / ``pnasnet5_mobile`` (or ``large`` / ``mobile``), optionally with another class count."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in SPECS:
        raise ValueError(f"unknown PNASNet spec {name!r}; known: {sorted(SPECS)} (aliases {sorted(_ALIASES)})")
    spec = SPECS[key]
    return spec if num_classes is None else spec.with_classes(num_classes)


# --------------------------------------------------------------------------------------------------------------
# Derived structure.
# --------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class OpStructure:
    slot: OpSlot
    stride: int             # stride applied (the cell stride only when the input is h0/h1)
    in_channels: int
    out_channels: int       # always the cell's filter size
    projection: bool        # a 1x1 conv + BN after the op (pool with a channel change; strided/projecting none)
    projection_relu: bool   # ReLU before that 1x1 (``none`` only; the pool projection has none)
    canonical: str          # e.g. "cell_4.comb_iter_2_left"
    tf_scope: str           # e.g. "cell_4/comb_iter_2/left"

    @property
    def has_params(self) -> bool:
        return self.slot.kind == "separable" or self.projection


@dataclasses.dataclass(frozen=True)
class CellStructure:
    name: str               # canonical module name == TF scope: cell_stem_0, cell_stem_1, cell_0, ...
    cell_num: int           # drop-path numbering: stems 0, 1; cell_i -> i + 2
    index: Optional[int]    # i for cell_i, None for stem cells
    is_stem: bool
    stride: int
    filter_scaling: float
    filter_size: int
    in_channels: int        # channels of the cell input (-> h0)
    prev_channels: int      # channels of prev_prev before reduction (-> h1)
    prev_kind: str          # PREV_INPUT / PREV_FACTORIZED / PREV_1X1 / PREV_IDENTITY
    ops: Tuple[OpStructure, ...]

    @property
    def is_reduction(self) -> bool:
        return self.stride == 2

    @property
    def out_channels(self) -> int:
        return len(CELL_CONCAT) * self.filter_size

    @property
    def factorized_split(self) -> Tuple[int, int]:
        """Output channels of ``path1_conv`` / ``path2_conv``; the odd filter goes to path 2 (TF)."""
        return factorized_split(self.filter_size)


def factorized_split(filters: int) -> Tuple[int, int]:
    return filters // 2, filters // 2 + filters % 2


def cell_names(spec: PNASNetSpec) -> List[str]:
    return [f"cell_stem_{i}" for i in range(NUM_STEM_CELLS)] + [f"cell_{i}" for i in range(spec.num_cells)]


def cell_structures(spec: PNASNetSpec) -> Tuple[CellStructure, ...]:
    """Per-cell structure (14 entries for Large), following TF ``_imagenet_stem`` + ``_build_pnasnet_base``.

    Whether prev_prev needs a factorized reduction depends on the spatial sizes in TF; here it is decided from
    the strides (a stride-2 cell between prev_prev and the current input), which is the same for every input
    size accepted by :func:`check_image_size`.
    """
    out: List[CellStructure] = []
    rate = spec.filter_scaling_rate
    # (channels, stride that produced it) of each cell output so far; conv0 first.
    outputs: List[Tuple[int, int]] = [(spec.stem_filters, 2)]
    scaling = 1.0 / (rate ** NUM_STEM_CELLS)
    plan = []  # (name, index, is_stem, stride, scaling)
    for i in range(NUM_STEM_CELLS):
        plan.append((f"cell_stem_{i}", None, True, 2, scaling))
        scaling *= rate
    scaling = 1.0
    reductions = spec.reduction_indices
    for i in range(spec.num_cells):
        stride = 2 if i in reductions else 1
        if stride == 2:
            scaling *= rate
        plan.append((f"cell_{i}", i, False, stride, scaling))

    for cell_num, (name, index, is_stem, stride, scaling) in enumerate(plan):
        f = int(spec.filters * scaling)
        in_ch = outputs[-1][0]
        if len(outputs) < 2:
            prev_kind, prev_ch = PREV_INPUT, in_ch
        else:
            prev_ch = outputs[-2][0]
            # prev_prev and the input differ in size iff the cell that made the input had stride 2
            if outputs[-1][1] == 2:
                prev_kind = PREV_FACTORIZED
            elif prev_ch != f:
                prev_kind = PREV_1X1
            else:
                prev_kind = PREV_IDENTITY
        h_channels = {0: f, 1: prev_ch if prev_kind == PREV_INPUT else f}
        ops = []
        for slot in cell_slots():
            src = h_channels.get(slot.input_index, f)
            op_stride = stride if slot.input_index < 2 else 1
            kind = slot.kind
            if kind == "none":
                projection = op_stride > 1 or src != f
            elif kind in ("max_pool", "avg_pool"):
                projection = src != f
            else:
                projection = False
            ops.append(OpStructure(
                slot=slot, stride=op_stride, in_channels=src, out_channels=f, projection=projection,
                projection_relu=projection and kind == "none",
                canonical=f"{name}.comb_iter_{slot.block}_{slot.side}",
                tf_scope=f"{name}/comb_iter_{slot.block}/{slot.side}",
            ))
        cell = CellStructure(name=name, cell_num=cell_num, index=index, is_stem=is_stem, stride=stride,
                             filter_scaling=scaling, filter_size=f, in_channels=in_ch, prev_channels=prev_ch,
                             prev_kind=prev_kind, ops=tuple(ops))
        out.append(cell)
        outputs.append((cell.out_channels, stride))
    return tuple(out)


# --------------------------------------------------------------------------------------------------------------
# Parameters (canonical names, torch layout).
# --------------------------------------------------------------------------------------------------------------
BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var")
BUFFER_SUFFIXES = ("running_mean", "running_var")


def _bn(shapes: Dict[str, Tuple[int, ...]], prefix: str, c: int) -> None:
    for suffix in BN_SUFFIXES:
        shapes[f"{prefix}.{suffix}"] = (c,)


def _conv(shapes: Dict[str, Tuple[int, ...]], prefix: str, cout: int, cin: int, k: int = 1) -> None:
    shapes[f"{prefix}.weight"] = (cout, cin, k, k)


def expected_state_shapes(spec: PNASNetSpec, with_aux: Optional[bool] = None,
                          image_size: Optional[int] = None) -> Dict[str, Tuple[int, ...]]:
    """``{canonical name: torch-layout shape}`` in module order (timm order for the eval model).

    BN entries: weight, bias, running_mean, running_var (no ``num_batches_tracked``).  ``with_aux`` adds the TF
    aux head, whose 768-conv kernel depends on the input size (``image_size``, default ``spec.image_size``);
    ``None`` (default) = ``spec.build_aux_head``, i.e. exactly the state of the model the twins build.
    """
    if with_aux is None:
        with_aux = spec.build_aux_head
    shapes: Dict[str, Tuple[int, ...]] = {}
    _conv(shapes, "conv_0.conv", spec.stem_filters, spec.in_channels, 3)
    _bn(shapes, "conv_0.bn", spec.stem_filters)
    for cell in cell_structures(spec):
        f, n = cell.filter_size, cell.name
        if cell.prev_kind == PREV_FACTORIZED:
            f1, f2 = cell.factorized_split
            _conv(shapes, f"{n}.conv_prev_1x1.path_1.conv", f1, cell.prev_channels)
            _conv(shapes, f"{n}.conv_prev_1x1.path_2.conv", f2, cell.prev_channels)
            _bn(shapes, f"{n}.conv_prev_1x1.final_path_bn", f)
        elif cell.prev_kind == PREV_1X1:
            _conv(shapes, f"{n}.conv_prev_1x1.conv", f, cell.prev_channels)
            _bn(shapes, f"{n}.conv_prev_1x1.bn", f)
        _conv(shapes, f"{n}.conv_1x1.conv", f, cell.in_channels)
        _bn(shapes, f"{n}.conv_1x1.bn", f)
        for op in cell.ops:
            p = op.canonical
            if op.slot.kind == "separable":
                k = op.slot.kernel_size
                cin = op.in_channels
                for layer in range(1, op.slot.num_layers + 1):
                    shapes[f"{p}.separable_{layer}.depthwise_conv2d.weight"] = (cin, 1, k, k)
                    _conv(shapes, f"{p}.separable_{layer}.pointwise_conv2d", f, cin)
                    _bn(shapes, f"{p}.bn_sep_{layer}", f)
                    cin = f
            elif op.projection:
                _conv(shapes, f"{p}.conv", f, op.in_channels)
                _bn(shapes, f"{p}.bn", f)
    if with_aux:
        aux = aux_head_shapes(spec, image_size)
        _conv(shapes, "aux_head.proj", AUX_PROJ_FILTERS, aux["input"][0])
        _bn(shapes, "aux_head.bn0", AUX_PROJ_FILTERS)
        _conv(shapes, "aux_head.conv", AUX_CONV_FILTERS, AUX_PROJ_FILTERS, aux["conv_kernel"])
        _bn(shapes, "aux_head.bn1", AUX_CONV_FILTERS)
    shapes["last_linear.weight"] = (spec.num_classes, spec.final_channels)
    shapes["last_linear.bias"] = (spec.num_classes,)
    if with_aux:
        shapes["aux_head.fc.weight"] = (spec.num_classes, AUX_CONV_FILTERS)
        shapes["aux_head.fc.bias"] = (spec.num_classes,)
    return shapes


def is_buffer(name: str) -> bool:
    """BN running statistics: part of the state, not trainable."""
    return name.rsplit(".", 1)[-1] in BUFFER_SUFFIXES


def count_params(spec: PNASNetSpec, trainable: bool = True, with_aux: Optional[bool] = None,
                 image_size: Optional[int] = None) -> int:
    """Trainable parameters (BN running statistics excluded), or every state element with ``trainable=False``.

    Large / 1001 classes: 86,061,989 trainable (86,057,668 with 1000), 86,238,977 state elements.
    ``with_aux=None`` counts what the built model has (``spec.build_aux_head``); the aux head adds 4,586,985 at 331.
    """
    total = 0
    for name, shape in expected_state_shapes(spec, with_aux, image_size).items():
        if trainable and is_buffer(name):
            continue
        total += math.prod(shape)
    return total


# --------------------------------------------------------------------------------------------------------------
# Spatial sizes.
# --------------------------------------------------------------------------------------------------------------
def stem_output_size(image_size: int) -> int:
    """conv0: 3x3, stride 2, VALID."""
    return conv_output_size(image_size, 3, 2, padding="VALID")


def cell_spatial_sizes(spec: PNASNetSpec, image_size: Optional[int] = None) -> Dict[str, int]:
    """Output height (= width) of ``conv0_bn`` and of every cell at a square input size."""
    size = spec.image_size if image_size is None else int(image_size)
    if size < 3:
        raise ValueError(f"{spec.name}: input size {size} is smaller than the 3x3 VALID conv0")
    n = stem_output_size(size)
    sizes = {"conv0_bn": n}
    for cell in cell_structures(spec):
        n = conv_output_size(n, 3, cell.stride, padding="SAME")  # every stride-2 op gives ceil(n / 2)
        sizes[cell.name] = n
    return sizes


def check_image_size(spec: PNASNetSpec, image_size: Optional[int] = None, with_aux: bool = False) -> None:
    """Raise unless the TF graph at this size has the structure of :func:`cell_structures`.

    TF decides "factorized reduction" by comparing spatial sizes, so a stride-2 cell that maps 1 -> 1 would
    change the graph; the aux head needs at least 5x5 at its cell.
    """
    size = spec.image_size if image_size is None else int(image_size)
    sizes = cell_spatial_sizes(spec, size)
    order = ["conv0_bn"] + cell_names(spec)
    for cell in cell_structures(spec):
        if cell.prev_kind == PREV_FACTORIZED:
            i = order.index(cell.name)
            if sizes[order[i - 2]] == sizes[order[i - 1]]:
                raise ValueError(f"{spec.name}: input size {size} is too small: the input of {cell.name} has the "
                                 f"same spatial size ({sizes[order[i - 1]]}) as its prev_prev, which changes the "
                                 "TF graph (no factorized reduction)")
    if with_aux and spec.aux_head_cell is not None:
        s = sizes[f"cell_{spec.aux_head_cell}"]
        if s < AUX_POOL_KERNEL:
            raise ValueError(f"{spec.name}: input size {size} leaves {s}x{s} at cell_{spec.aux_head_cell}, "
                             f"smaller than the aux head's {AUX_POOL_KERNEL}x{AUX_POOL_KERNEL} VALID pool")


def endpoint_names(spec: PNASNetSpec) -> List[str]:
    """Endpoints captured by the TF reference, in network order."""
    return ["conv0_bn"] + cell_names(spec) + ["global_pool", "logits"]


def endpoint_shapes(spec: PNASNetSpec, image_size: Optional[int] = None) -> Dict[str, Tuple[int, ...]]:
    """Per-sample shapes of every endpoint, channels first: ``(C, H, W)`` for feature maps, ``(C,)`` after pooling."""
    sizes = cell_spatial_sizes(spec, image_size)
    shapes: Dict[str, Tuple[int, ...]] = {"conv0_bn": (spec.stem_filters, sizes["conv0_bn"], sizes["conv0_bn"])}
    for cell in cell_structures(spec):
        s = sizes[cell.name]
        shapes[cell.name] = (cell.out_channels, s, s)
    shapes["global_pool"] = (spec.final_channels,)
    shapes["logits"] = (spec.num_classes,)
    return shapes


def aux_head_shapes(spec: PNASNetSpec, image_size: Optional[int] = None) -> Dict[str, object]:
    """Shapes through the TF aux head (``aux_<k>/aux_logits``), channels first, per sample.

    ReLU(cell_k) -> avg pool 5x5 stride 3 VALID -> 1x1 conv 128 (``proj``) -> BN (``aux_bn0``) -> ReLU ->
    conv with kernel = the remaining spatial size -> 768 VALID (``Conv``) -> BN (``aux_bn1``) -> ReLU -> flatten ->
    FC (``FC``) -> num_classes.  Large at 331: 21 -> 6, kernel 6x6.
    """
    k = spec.aux_head_cell
    if k is None:
        raise ValueError(f"{spec.name}: this spec has no aux head")
    size = spec.image_size if image_size is None else int(image_size)
    check_image_size(spec, size, with_aux=True)
    s = cell_spatial_sizes(spec, size)[f"cell_{k}"]
    c = cell_structures(spec)[NUM_STEM_CELLS + k].out_channels
    p = conv_output_size(s, AUX_POOL_KERNEL, AUX_POOL_STRIDE, padding="VALID")
    return {
        "cell": f"cell_{k}",
        "tf_scope": f"aux_{k}/aux_logits",
        "input": (c, s, s),
        "pool": (c, p, p),
        "proj": (AUX_PROJ_FILTERS, p, p),
        "conv_kernel": p,
        "conv": (AUX_CONV_FILTERS, 1, 1),
        "flatten": (AUX_CONV_FILTERS,),
        "logits": (spec.num_classes,),
    }


# --------------------------------------------------------------------------------------------------------------
# Multiply-accumulates.
# --------------------------------------------------------------------------------------------------------------
def count_macs(spec: PNASNetSpec, image_size: Optional[int] = None) -> int:
    """Rule: each conv H_out*W_out*k*k*C_in/groups*C_out + classifier C*classes (eval graph; BN/ReLU/pools/adds free)

    Multiply-accumulates of one image.  Every convolution counts ``H_out * W_out * (k*k*C_in/groups) * C_out``
    (depthwise: ``k*k*C`` per output pixel; pointwise and 1x1 convs ``C_in*C_out``; factorized-reduction paths at
    their strided output size), plus the classifier ``C * num_classes``.  BatchNorm (foldable), ReLU, pooling,
    additions, concatenation and the global mean are not counted.  Large at 331: 24,937,400,112 (= the same rule
    counted with hooks on timm's ``pnasnet5large``; paper 25.0B; timm's benchmark tables say 25.04 GMACs); at 224:
    10.82 G.  Mobile at 224: 587.3 M (paper 588M).
    """
    size = spec.image_size if image_size is None else int(image_size)
    sizes = cell_spatial_sizes(spec, size)
    n = sizes["conv0_bn"]
    macs = n * n * 3 * 3 * spec.in_channels * spec.stem_filters
    prev_sizes = [None, n]  # spatial size of prev_prev, input
    for cell in cell_structures(spec):
        n_in = prev_sizes[-1]
        n_out = sizes[cell.name]
        f = cell.filter_size
        if cell.prev_kind == PREV_FACTORIZED:
            m = math.ceil(prev_sizes[-2] / 2)
            macs += m * m * cell.prev_channels * f  # path1 + path2 together produce f channels
        elif cell.prev_kind == PREV_1X1:
            m = prev_sizes[-2]
            macs += m * m * cell.prev_channels * f
        macs += n_in * n_in * cell.in_channels * f
        for op in cell.ops:
            # ops on h0/h1 see the cell input; ops on a block output (h4) already run at the output size
            n_op = n_in if op.slot.input_index < 2 else n_out
            o = conv_output_size(n_op, 3, op.stride, padding="SAME")
            if op.slot.kind == "separable":
                k = op.slot.kernel_size
                cin = op.in_channels
                for _ in range(op.slot.num_layers):
                    macs += o * o * (k * k * cin + cin * f)
                    cin = f
            elif op.projection:
                macs += o * o * op.in_channels * f
        prev_sizes.append(n_out)
    macs += spec.final_channels * spec.num_classes
    return macs


# --------------------------------------------------------------------------------------------------------------
# Drop path (TF ``_apply_drop_path``, drop_connect_version v3) as pure functions.
# --------------------------------------------------------------------------------------------------------------
def layer_keep_prob(spec: PNASNetSpec, cell_num: int) -> float:
    """``1 - (cell_num + 1) / total_num_cells * (1 - keep_prob)``; cells numbered stems 0, 1, then 2.."""
    if not 0 <= cell_num < spec.total_num_cells:
        raise ValueError(f"{spec.name}: cell_num {cell_num} outside 0..{spec.total_num_cells - 1}")
    layer_ratio = (cell_num + 1) / float(spec.total_num_cells)
    return 1 - layer_ratio * (1 - spec.drop_path_keep_prob)


def drop_path_keep_prob(spec: PNASNetSpec, cell_num: int, step: Optional[int] = None, is_training: bool = True,
                        float32: bool = False) -> float:
    """Keep probability of drop path in cell ``cell_num`` at global step ``step``.

    ``keep = 1 - min(1, step / total_training_steps) * (1 - layer_keep)``.  ``step=None`` means past the burn-in
    (ratio 1), as does ``total_training_steps == 0`` (no burn-in).  Eval (``is_training=False``) and a spec keep
    prob of 1.0 give exactly 1.0 (no drop path op at all).
    ``float32=True`` reproduces TF's arithmetic: ``layer_keep`` in Python double, then the time scaling on float32
    tensors (``1 - ratio * float32(1 - layer_keep)``).
    """
    if not is_training or spec.drop_path_keep_prob >= 1.0:
        return 1.0
    layer_keep = layer_keep_prob(spec, cell_num)
    if float32:
        if step is None or spec.total_training_steps <= 0:
            ratio = np.float32(1.0)
        else:
            ratio = np.minimum(np.float32(1.0), np.float32(step) / np.float32(spec.total_training_steps))
        return float(np.float32(1.0) - ratio * np.float32(1 - layer_keep))
    if step is None or spec.total_training_steps <= 0:
        ratio = 1.0
    else:
        ratio = min(1.0, float(step) / spec.total_training_steps)
    return 1 - ratio * (1 - layer_keep)


def drop_path_schedule(spec: PNASNetSpec, step: Optional[int] = None, float32: bool = False) -> Dict[str, float]:
    """``{cell name: keep probability}`` for every cell at training step ``step``."""
    return {cell.name: drop_path_keep_prob(spec, cell.cell_num, step, True, float32) for cell in cell_structures(spec)}


def drop_path_mask(keep_prob: float, uniform):
    """TF's per-sample keep mask from uniform samples in [0, 1): ``floor(keep_prob + u)`` (1 keeps, 0 drops).

    The kept path is scaled by ``1 / keep_prob``; TF evaluates both in the activation dtype.
    """
    u = np.asarray(uniform)
    return np.floor(u.dtype.type(keep_prob) + u)


# --------------------------------------------------------------------------------------------------------------
# Summary.
# --------------------------------------------------------------------------------------------------------------
def describe(spec: PNASNetSpec, image_size: Optional[int] = None) -> Dict[str, object]:
    """Headline numbers and the cell as JSON-able data."""
    size = spec.image_size if image_size is None else int(image_size)
    return {
        "name": spec.name,
        "cell": {"operations": list(CELL_OPERATIONS), "hiddenstate_indices": list(CELL_HIDDENSTATE_INDICES),
                 "used_hiddenstates": list(CELL_USED_HIDDENSTATES)},
        "stem_filters": spec.stem_filters,
        "num_cells": spec.num_cells,
        "filters": spec.filters,
        "reduction_indices": list(spec.reduction_indices),
        "aux_head_cell": spec.aux_head_cell,
        "num_classes": spec.num_classes,
        "image_size": size,
        "params": count_params(spec),
        "params_eval_model": count_params(spec, with_aux=False),
        "macs": count_macs(spec, size),
        "macs_rule": count_macs.__doc__.strip().splitlines()[0].replace("``", ""),
        "aux_head": (dict(built=True, **aux_head_shapes(spec, size)) if spec.build_aux_head
                     else {"built": False, "tf_cell": spec.aux_head_cell}),
        "training": {"drop_path_keep_prob": spec.drop_path_keep_prob,
                     "dense_dropout_keep_prob": spec.dense_dropout_keep_prob,
                     "total_training_steps": spec.total_training_steps,
                     "bn_eps": spec.bn_eps, "bn_momentum_torch": spec.bn_momentum_torch},
        "cells": [{"name": c.name, "filter_size": c.filter_size, "stride": c.stride, "prev": c.prev_kind,
                   "out_channels": c.out_channels} for c in cell_structures(spec)],
        "spatial_sizes": cell_spatial_sizes(spec, size),
    }


# --------------------------------------------------------------------------------------------------------------
# Entry-point interface (common/families.py): config -> spec, numpy init, the TF parity column.
# --------------------------------------------------------------------------------------------------------------
#: canonical module names of the fully connected layers (everything else with a 4-D weight is a conv)
LINEAR_MODULES = ("last_linear", "aux_head.fc")
#: TF-slim's PNASNet arg scope: ``variance_scaling_initializer(factor=2.0, mode='FAN_OUT', uniform=False)``
INIT_RULE = "tf_variance_scaling_fan_out"
INIT_FACTOR = 2.0


#: target length of the accumulation blocks of the classifiers' dot products (see :func:`classifier_block`)
CLASSIFIER_BLOCK = 128


def classifier_block(in_features: int, target: int = CLASSIFIER_BLOCK) -> int:
    """Block length for the twins' blocked classifier: the divisor of ``in_features`` in ``[target/2, 2*target]``
    closest to ``target`` (4320 -> 135, 1080 -> 135, 768 -> 128), or 0 (no blocking) when there is none.

    Why: for a batch of a few images the CPU GEMMs (MKL in torch, paddle's matmul) run each 4320-long float32 dot
    product of ``last_linear`` in one accumulation chain: 3e-6 (torch) / 9e-6 (paddle) of rounding on the logits of
    Large, 4-13x the 7e-7 of TF's own float32 ``FC`` (Eigen's GEMM accumulates in K blocks).  One batched matmul
    over blocks of ~128 inputs and a pairwise sum of the block results gives 5e-7 / 7e-7, TF's level (measured on
    the TF-converted random checkpoint of ``parity_tests/test_pnasnet_parity.py``).  float64 moves by ~1e-16.
    """
    if in_features <= 2 * target:
        return 0
    candidates = [d for d in range(max(1, target // 2), 2 * target + 1) if in_features % d == 0]
    return min(candidates, key=lambda d: (abs(d - target), d)) if candidates else 0


def spec_from_config(cfg) -> PNASNetSpec:
    """The network a config describes; errors name the key and the value.

    ``MODEL.NAME``: ``pnasnet5_large`` | ``pnasnet5_mobile`` (aliases ``large``, ``mobile``).  ``MODEL.NUM_CLASSES``
    (1001 = TF's background + ImageNet-1k, 1000 without it).  ``DATA.IMAGE_SIZE`` (checked with
    :func:`check_image_size`; the aux head's conv kernel follows it) and ``DATA.CHANNELS``.  Training-only:
    ``MODEL.DROPOUT`` = 1 - TF ``dense_dropout_keep_prob``, ``MODEL.DROP_PATH`` = 1 - TF ``drop_path_keep_prob``
    (the final keep of the last cell; earlier cells and early steps keep more, see :func:`drop_path_keep_prob`),
    ``PNASNET.AUX_HEAD`` (build the TF aux head: training forward returns ``(logits, aux_logits)``, weighted by
    ``TRAIN.AUX_WEIGHT``), ``PNASNET.TOTAL_TRAINING_STEPS`` (drop-path burn-in; 0 = none), ``PNASNET.BN_DECAY``
    (TF batch_norm_decay of the moving statistics).
    """
    section = cfg.PNASNET if "PNASNET" in cfg else None
    raw = str(cfg.MODEL.NAME).strip()
    if not raw:
        raise ValueError(f"MODEL.NAME is empty: set it to one of {', '.join(sorted(SPECS))}")
    try:
        base = get_spec(raw)
    except ValueError:
        raise ValueError(f"MODEL.NAME = {raw!r} is not a PNASNet-5 network; known: {', '.join(sorted(SPECS))} "
                         f"(aliases {', '.join(sorted(_ALIASES))})") from None
    # DATA.IMAGE_SIZE is checked below by check_image_size (the TF graph's own limits)
    keys = model_keys(cfg, dropout_note="1 - TF dense_dropout_keep_prob", drop_path_note="1 - TF drop_path_keep_prob",
                      min_image_size=None)
    size = keys.image_size
    aux = bool(section.AUX_HEAD) if section is not None else False
    total = at_least(section.TOTAL_TRAINING_STEPS if section is not None else base.total_training_steps,
                     "PNASNET.TOTAL_TRAINING_STEPS", 0, "0 = no drop-path burn-in")
    bn_decay = fraction(section.BN_DECAY if section is not None else base.bn_decay, "PNASNET.BN_DECAY",
                        "TF batch_norm_decay")
    spec = dataclasses.replace(base, num_classes=keys.num_classes, image_size=size, in_channels=keys.channels,
                               dense_dropout_keep_prob=1.0 - keys.dropout, drop_path_keep_prob=1.0 - keys.drop_path,
                               total_training_steps=total, build_aux_head=aux, bn_decay=bn_decay)
    try:
        check_image_size(spec, size, with_aux=aux)
    except ValueError as exc:
        key = "DATA.IMAGE_SIZE" + (" (with PNASNET.AUX_HEAD)" if aux else "")
        raise ValueError(f"{key} = {size}: {exc}") from None
    return spec


def param_kinds(spec: PNASNetSpec) -> Dict[str, object]:
    """``{canonical name: common.init.ParamSpec}`` for every state tensor of the built model, from the spec alone
    (equal to ``ops.named_param_kinds`` of either backend's model; depthwise convs carry ``groups = channels``)."""
    from common import init as I  # numpy only

    shapes = expected_state_shapes(spec)
    out: Dict[str, object] = {}
    for name, shape in shapes.items():
        module, _, leaf = name.rpartition(".")
        if module in LINEAR_MODULES:
            wshape = shapes[f"{module}.weight"]
            out[name] = I.ParamSpec(I.LINEAR_WEIGHT if leaf == "weight" else I.LINEAR_BIAS, shape, 1, wshape)
        elif leaf in BUFFER_SUFFIXES:
            out[name] = I.ParamSpec(I.BN_MEAN if leaf == "running_mean" else I.BN_VAR, shape)
        elif len(shape) == 4:
            groups = shape[0] if module.endswith("depthwise_conv2d") else 1
            out[name] = I.ParamSpec(I.CONV_WEIGHT, shape, groups, shape)
        else:
            out[name] = I.ParamSpec(I.BN_WEIGHT if leaf == "weight" else I.BN_BIAS, shape)
    return out


def _truncated_normal(shape: Tuple[int, ...], stddev: float, rng: np.random.Generator) -> np.ndarray:
    """N(0, stddev) with every draw beyond two standard deviations redrawn (``tf.truncated_normal``)."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2.0
    return out * stddev


def rule_tf_fan_out(name: str, pspec, rng: np.random.Generator) -> np.ndarray:
    """TF-slim's PNASNet init (``tf.contrib.layers.variance_scaling_initializer(2.0, 'FAN_OUT')``): truncated normal
    with stddev ``sqrt(1.3 * 2 / fan_out)``, ``fan_out = k*k*C_out/groups`` (depthwise: ``k*k``; FC: classes);
    FC biases 0; BN gamma 1, beta 0, moving mean 0, moving variance 1."""
    from common import init as I

    if pspec.kind in (I.CONV_WEIGHT, I.LINEAR_WEIGHT):
        shape = tuple(pspec.shape)
        receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
        fan_out = shape[0] * receptive // int(pspec.groups)
        return _truncated_normal(shape, math.sqrt(1.3 * INIT_FACTOR / fan_out), rng)
    if pspec.kind in (I.BN_WEIGHT, I.BN_VAR):
        return np.ones(pspec.shape)
    if pspec.kind in (I.BN_BIAS, I.BN_MEAN, I.CONV_BIAS, I.LINEAR_BIAS):
        return np.zeros(pspec.shape)
    raise ValueError(f"{name}: no PNASNet init rule for kind {pspec.kind!r}")


def init_state(spec: PNASNetSpec, rng: np.random.Generator, dtype=None) -> Dict[str, np.ndarray]:
    """Initial weights in numpy (TF-like fan-out variance scaling, :func:`rule_tf_fan_out`) for exactly the names of
    :func:`expected_state_shapes` (float32 unless ``dtype``); the same ``rng`` seed gives the same network on both
    backends (each tensor draws from its own stream, seeded by ``rng`` and its name)."""
    from common import init as I

    return I.init_state(param_kinds(spec), rule_tf_fan_out, rng, dtype=np.float32 if dtype is None else dtype)


def class_names(spec: PNASNetSpec):
    """ImageNet names for each logit (index 0 = TF's background with 1001 classes) when timm's name files are
    installed; None otherwise (or for other class counts), and the CLI prints indices."""
    from common.imagenet_names import class_names_for_head

    return class_names_for_head(spec.num_classes, label_offset(spec))


def label_offset(spec: PNASNetSpec) -> int:
    """Dataset label k is logit k + 1 for TF's 1001-class heads (0 = background); 0 otherwise."""
    return 1 if spec.num_classes == 1001 else 0


#: TF endpoint -> canonical module whose output it is (``(model)`` is the root: logits in eval mode)
TF_ENDPOINT_MODULES = {"conv0_bn": ("conv_0",), "global_pool": ("global_pool",), "logits": ("last_linear", "(model)")}


def endpoint_module_names(spec: PNASNetSpec) -> Dict[str, Tuple[str, ...]]:
    """``{TF endpoint: canonical module names}`` for every endpoint of :func:`endpoint_names`."""
    return {name: TF_ENDPOINT_MODULES.get(name, (name,)) for name in endpoint_names(spec)}


def recognition_candidates(tensors: Mapping[str, object]) -> List[Tuple[str, Dict[str, Tuple[int, ...]]]]:
    """``(name, expected shapes)`` of both networks, without and with the aux head, at the class count of
    ``tensors`` (``last_linear.bias``; 1001 when absent): the hook ``weights_tools/recognise.py`` uses, through
    ``common/families.py``, to name the network of a bare state dict."""
    classes = classifier_width(tensors, "last_linear.bias", 1001)
    out = []
    for name in SPECS:
        spec = get_spec(name, num_classes=classes)
        for with_aux in (False, True):
            out.append((name, expected_state_shapes(spec, with_aux=with_aux)))
    return out


__all__: Sequence[str] = (
    "CELL_OPERATIONS", "CELL_HIDDENSTATE_INDICES", "CELL_USED_HIDDENSTATES", "CELL_CONCAT", "NUM_BLOCKS",
    "OpSlot", "OpStructure", "CellStructure", "PNASNetSpec", "PNASNET5_LARGE", "PNASNET5_MOBILE", "SPECS",
    "get_spec", "cell_slots", "calc_reduction_layers", "cell_structures", "cell_names", "factorized_split",
    "expected_state_shapes", "count_params", "count_macs", "cell_spatial_sizes", "check_image_size",
    "endpoint_names", "endpoint_shapes", "aux_head_shapes", "layer_keep_prob", "drop_path_keep_prob",
    "drop_path_schedule", "drop_path_mask", "describe", "is_buffer", "spec_from_config", "param_kinds",
    "rule_tf_fan_out", "init_state", "class_names", "endpoint_module_names", "classifier_block",
    "recognition_candidates",
)
