"""PC-DARTS (ICLR 2020) evaluation networks: what NetworkCIFAR / NetworkImageNet *are*, as plain data.

Pure Python at import time (numpy only inside :func:`init_state`; never a framework).  Both backends build their
modules from :func:`cell_plan` and the spec made here, and checkpoints are checked against
:func:`expected_state_shapes`.  Facts: ``shared/research/pcdarts.md`` §1.1-1.2 (primitives, ops) and §3 (eval cell,
networks, genotypes, counts).

Contents
  * :data:`PRIMITIVES` (the search space, in alpha-column order) and :class:`Genotype` (normal / reduce lists of
    ``(op, input state)`` pairs and their concat lists) with a JSON form (:meth:`Genotype.to_json`,
    :meth:`Genotype.from_json`, :func:`save_genotype`, :func:`load_genotype`) and :func:`parse_upstream` for the
    ``Genotype(normal=[...], normal_concat=range(2, 6), ...)`` text upstream prints (parsed with ``ast``, never
    evaluated);
  * the published genotypes as data (:data:`GENOTYPES`: ``PCDARTS`` = ``PC_DARTS_cifar``, ``PC_DARTS_image``,
    ``DARTS_V1``, ``DARTS_V2``) and :func:`genotype_from_config` (``PCDARTS.GENOTYPE``: a name, a JSON file or an
    upstream ``Genotype(...)`` string);
  * :class:`PCDartsNetSpec` (frozen) and :func:`cell_plan` -> :class:`CellSpec` per cell (reductions at
    ``layers//3`` and ``2*layers//3``, preprocess0 a FactorizedReduce after a reduction, stride 2 for inputs 0/1 of
    a reduction cell, channel bookkeeping, the map size each cell sees);
  * counting from the spec: :func:`expected_state_shapes` (upstream ``model.py`` names), :func:`count_params`,
    :func:`count_macs`;
  * the entry points of ``common/families.py``: :func:`spec_from_config`, :func:`describe`, :func:`init_state`
    (torch defaults, as upstream trains), :func:`recognition_candidates`; plus :func:`param_kinds` and
    :func:`drop_prob_at` (the drop-path ramp) for the builders and the task.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from common.specs._checks import at_least, classifier_width, model_keys

__all__ = [
    "PRIMITIVES", "Genotype", "GenotypeError", "GENOTYPES", "GENOTYPE_ALIASES", "PCDARTS", "PC_DARTS_cifar",
    "PC_DARTS_image", "DARTS_V1", "DARTS_V2", "parse_upstream", "format_upstream", "save_genotype", "load_genotype",
    "genotype_by_name", "genotype_from_config", "NET_KINDS", "NET_NAMES", "PCDartsNetSpec", "CellSpec", "OpSpec",
    "network_spec", "cell_plan", "reduction_indices", "aux_cell_index", "op_padding", "expected_state_shapes",
    "param_kinds", "count_params", "count_macs", "init_state", "INIT_RULE", "spec_from_config", "describe",
    "recognition_candidates", "drop_prob_at", "STEM_MULTIPLIER", "AUX_CHANNELS", "PUBLISHED",
    "SEARCH_NAMES", "ARCH_NAMES", "SearchNetSpec", "SearchCellSpec", "search_spec", "search_cell_plan", "node_slices",
    "upstream_search_keys", "is_arch_name", "edge_weights", "derive_genotype", "arch_summary", "init_search_state",
    "count_search_params", "search_spec_from_config", "describe_search", "DEFAULT_PARTIAL_K",
]

# --------------------------------------------------------------------------------------------------------------
# Primitives and genotypes
# --------------------------------------------------------------------------------------------------------------

#: the candidate operations, index = column of alpha (research §1.1; the order matters for the search)
PRIMITIVES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
              "dil_conv_3x3", "dil_conv_5x5")

#: (kernel, padding, dilation) of the conv primitives (research §1.2)
_CONV_OPS = {
    "sep_conv_3x3": (3, 1, 1),
    "sep_conv_5x5": (5, 2, 1),
    "dil_conv_3x3": (3, 2, 2),
    "dil_conv_5x5": (5, 4, 2),
}

_GENOTYPE_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")

Edge = Tuple[str, int]


class GenotypeError(ValueError):
    """A genotype (data, JSON or upstream text) is malformed; the message names the field and the entry."""


def _check_edges(field: str, edges) -> Tuple[Edge, ...]:
    if isinstance(edges, (str, bytes)) or not isinstance(edges, Sequence):
        raise GenotypeError(f"genotype {field}: expected a list of [op, input] pairs, got {edges!r}")
    if not edges or len(edges) % 2:
        raise GenotypeError(f"genotype {field}: expected an even, non-zero number of [op, input] pairs (two per "
                            f"node), got {len(edges)}")
    out = []
    for j, edge in enumerate(edges):
        if isinstance(edge, (str, bytes)) or not isinstance(edge, Sequence) or len(edge) != 2:
            raise GenotypeError(f"genotype {field}[{j}]: expected an [op, input] pair, got {edge!r}")
        op, index = edge
        if op not in PRIMITIVES or op == "none":
            raise GenotypeError(f"genotype {field}[{j}]: unknown op {op!r} (expected one of "
                                f"{', '.join(p for p in PRIMITIVES if p != 'none')})")
        if isinstance(index, bool) or not isinstance(index, int):
            raise GenotypeError(f"genotype {field}[{j}]: input index must be a whole number, got {index!r}")
        node = j // 2
        if not 0 <= index < 2 + node:
            raise GenotypeError(f"genotype {field}[{j}] = [{op!r}, {index}]: node {node + 2} can take inputs "
                                f"0..{node + 1} only")
        out.append((str(op), int(index)))
    return tuple(out)


def _check_concat(field: str, concat, steps: int) -> Tuple[int, ...]:
    if isinstance(concat, range):
        concat = list(concat)
    if isinstance(concat, (str, bytes)) or not isinstance(concat, Sequence) or not concat:
        raise GenotypeError(f"genotype {field}: expected a non-empty list of state indices, got {concat!r}")
    out = []
    for value in concat:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 + steps:
            raise GenotypeError(f"genotype {field}: state index {value!r} is not in 0..{steps + 1}")
        out.append(int(value))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Genotype:
    """A DARTS cell pair: ``normal`` / ``reduce`` hold two ``(op, input state)`` pairs per intermediate node (state
    0 = c_{k-2}, 1 = c_{k-1}, 2.. = earlier nodes); the cell outputs the concatenation of the ``*_concat`` states.
    Checked on construction (:class:`GenotypeError` names the bad field and entry)."""

    normal: Tuple[Edge, ...]
    normal_concat: Tuple[int, ...]
    reduce: Tuple[Edge, ...]
    reduce_concat: Tuple[int, ...]

    def __post_init__(self):
        normal = _check_edges("normal", self.normal)
        reduce = _check_edges("reduce", self.reduce)
        object.__setattr__(self, "normal", normal)
        object.__setattr__(self, "reduce", reduce)
        object.__setattr__(self, "normal_concat", _check_concat("normal_concat", self.normal_concat, len(normal) // 2))
        object.__setattr__(self, "reduce_concat", _check_concat("reduce_concat", self.reduce_concat, len(reduce) // 2))

    def edges(self, reduction: bool) -> Tuple[Edge, ...]:
        return self.reduce if reduction else self.normal

    def concat(self, reduction: bool) -> Tuple[int, ...]:
        return self.reduce_concat if reduction else self.normal_concat

    def as_dict(self) -> Dict[str, list]:
        """``{"normal": [[op, input], ...], "normal_concat": [...], "reduce": [...], "reduce_concat": [...]}``."""
        return {
            "normal": [[op, index] for op, index in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, index] for op, index in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    def to_json(self) -> str:
        """The genotype JSON text (the form ``PCDARTS.GENOTYPE`` files hold, see :meth:`as_dict`)."""
        return json.dumps(self.as_dict(), indent=1) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "<memory>") -> "Genotype":
        if not isinstance(data, Mapping):
            raise GenotypeError(f"{source}: a genotype must be a JSON object with keys {', '.join(_GENOTYPE_FIELDS)}")
        missing = [k for k in _GENOTYPE_FIELDS if k not in data]
        extra = sorted(set(data) - set(_GENOTYPE_FIELDS))
        if missing or extra:
            raise GenotypeError(f"{source}: genotype keys must be exactly {', '.join(_GENOTYPE_FIELDS)} "
                                f"(missing: {missing or 'none'}; unknown: {extra or 'none'})")
        try:
            return cls(**{k: data[k] for k in _GENOTYPE_FIELDS})
        except GenotypeError as exc:
            raise GenotypeError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, text: str, source: str = "<memory>") -> "Genotype":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GenotypeError(f"{source}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source)

    def to_upstream(self) -> str:
        return format_upstream(self)


def _pairs(text: str) -> List[Edge]:
    """``"sep_conv_3x3,1 skip_connect,0"`` -> pairs (compact data literal used below)."""
    out = []
    for item in text.split():
        op, index = item.split(",")
        out.append((op, int(index)))
    return out


_NODES = (2, 3, 4, 5)

#: published genotypes (research §3.6; upstream ``genotypes.py`` of PC-DARTS, DARTS_V1/V2 as in quark0/darts)
PC_DARTS_cifar = Genotype(
    normal=_pairs("sep_conv_3x3,1 skip_connect,0 sep_conv_3x3,0 dil_conv_3x3,1 "
                  "sep_conv_5x5,0 sep_conv_3x3,1 avg_pool_3x3,0 dil_conv_3x3,1"),
    normal_concat=_NODES,
    reduce=_pairs("sep_conv_5x5,1 max_pool_3x3,0 sep_conv_5x5,1 sep_conv_5x5,2 "
                  "sep_conv_3x3,0 sep_conv_3x3,3 sep_conv_3x3,1 sep_conv_3x3,2"),
    reduce_concat=_NODES,
)
PCDARTS = PC_DARTS_cifar
PC_DARTS_image = Genotype(
    normal=_pairs("skip_connect,1 sep_conv_3x3,0 sep_conv_3x3,0 skip_connect,1 "
                  "sep_conv_3x3,1 sep_conv_3x3,3 sep_conv_3x3,1 dil_conv_5x5,4"),
    normal_concat=_NODES,
    reduce=_pairs("sep_conv_3x3,0 skip_connect,1 dil_conv_5x5,2 max_pool_3x3,1 "
                  "sep_conv_3x3,2 sep_conv_3x3,1 sep_conv_5x5,0 sep_conv_3x3,3"),
    reduce_concat=_NODES,
)
DARTS_V1 = Genotype(
    normal=_pairs("sep_conv_3x3,1 sep_conv_3x3,0 skip_connect,0 sep_conv_3x3,1 "
                  "skip_connect,0 sep_conv_3x3,1 sep_conv_3x3,0 skip_connect,2"),
    normal_concat=_NODES,
    reduce=_pairs("max_pool_3x3,0 max_pool_3x3,1 skip_connect,2 max_pool_3x3,0 "
                  "max_pool_3x3,0 skip_connect,2 skip_connect,2 avg_pool_3x3,0"),
    reduce_concat=_NODES,
)
DARTS_V2 = Genotype(
    normal=_pairs("sep_conv_3x3,0 sep_conv_3x3,1 sep_conv_3x3,0 sep_conv_3x3,1 "
                  "sep_conv_3x3,1 skip_connect,0 skip_connect,0 dil_conv_3x3,2"),
    normal_concat=_NODES,
    reduce=_pairs("max_pool_3x3,0 max_pool_3x3,1 skip_connect,2 max_pool_3x3,1 "
                  "max_pool_3x3,0 skip_connect,2 skip_connect,2 max_pool_3x3,1"),
    reduce_concat=_NODES,
)

#: ``PCDARTS.GENOTYPE`` names -> genotype (``PCDARTS`` is upstream's alias of ``PC_DARTS_cifar``)
GENOTYPES: Dict[str, Genotype] = {
    "PCDARTS": PCDARTS,
    "PC_DARTS_cifar": PC_DARTS_cifar,
    "PC_DARTS_image": PC_DARTS_image,
    "DARTS_V1": DARTS_V1,
    "DARTS_V2": DARTS_V2,
}
GENOTYPE_ALIASES = {"PCDARTS": "PC_DARTS_cifar"}


def genotype_by_name(name: str) -> Genotype:
    try:
        return GENOTYPES[name]
    except (KeyError, TypeError):
        raise GenotypeError(f"unknown genotype {name!r}; published: {', '.join(GENOTYPES)}") from None


def _literal(node: ast.AST, field: str):
    """A literal, or ``range(a[, b[, c]])`` with whole-number arguments (-> list); nothing else is accepted."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range"
            and not node.keywords and 1 <= len(node.args) <= 3):
        args = [_literal(a, field) for a in node.args]
        if not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
            raise GenotypeError(f"upstream genotype {field}: range() needs whole numbers, got {args}")
        return list(range(*args))
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise GenotypeError(f"upstream genotype {field}: only literals and range(...) are accepted, got "
                            f"{ast.dump(node)[:80]}") from None


def parse_upstream(text: str) -> Genotype:
    """Upstream's printed genotype, ``Genotype(normal=[('sep_conv_3x3', 1), ...], normal_concat=range(2, 6),
    reduce=[...], reduce_concat=[2, 3, 4, 5])`` (keywords or positional; ``genotypes.Genotype`` also accepted).
    Parsed with :mod:`ast`: only literals and ``range(...)`` are read, nothing is evaluated."""
    if not isinstance(text, str):
        raise GenotypeError(f"upstream genotype: expected a string, got {type(text).__name__}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise GenotypeError(f"upstream genotype {text[:60]!r}...: not a Genotype(...) expression ({exc.msg})") from None
    call = tree.body
    func = getattr(call, "func", None)
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if not isinstance(call, ast.Call) or name != "Genotype":
        raise GenotypeError(f"upstream genotype {text[:60]!r}: expected Genotype(normal=..., normal_concat=..., "
                            "reduce=..., reduce_concat=...)")
    if len(call.args) > 4:
        raise GenotypeError(f"upstream genotype: {len(call.args)} positional fields, expected at most 4")
    values = {}
    for field, node in zip(_GENOTYPE_FIELDS, call.args):
        values[field] = _literal(node, field)
    for kw in call.keywords:
        if kw.arg not in _GENOTYPE_FIELDS or kw.arg in values:
            raise GenotypeError(f"upstream genotype: unexpected or repeated field {kw.arg!r}")
        values[kw.arg] = _literal(kw.value, kw.arg)
    return Genotype.from_dict(values, "upstream genotype")


def format_upstream(genotype: Genotype) -> str:
    """The ``Genotype(normal=[('op', i), ...], normal_concat=[...], ...)`` text (upstream's repr with lists)."""
    def edges(e):
        return "[" + ", ".join(f"({op!r}, {i})" for op, i in e) + "]"
    return (f"Genotype(normal={edges(genotype.normal)}, normal_concat={list(genotype.normal_concat)}, "
            f"reduce={edges(genotype.reduce)}, reduce_concat={list(genotype.reduce_concat)})")


def save_genotype(genotype: Genotype, path: str) -> None:
    """Write ``genotype`` as JSON to ``path`` (atomically)."""
    from common.io_utils import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(genotype.to_json())


def load_genotype(path: str) -> Genotype:
    """Read a genotype JSON file (errors name the file)."""
    try:
        with open(path, "r", encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise GenotypeError(f"genotype file {path!r}: cannot read it ({exc.strerror or exc})") from None
    return Genotype.from_json(text, f"genotype file {path!r}")


def genotype_from_config(cfg, key: str = "PCDARTS.GENOTYPE") -> Tuple[str, Genotype]:
    """``(name, genotype)`` from ``PCDARTS.GENOTYPE``: a published name (:data:`GENOTYPES`), the path of a genotype
    JSON file (the name is then the file's path), or an upstream ``Genotype(...)`` string (name ``"custom"``).
    Errors are ``ValueError`` naming the key, the value and, for a file, what is wrong in it."""
    node = cfg.PCDARTS if "PCDARTS" in cfg else None
    value = str(node.GENOTYPE if node is not None else "PCDARTS").strip()
    if not value:
        raise ValueError(f"{key} is empty: set it to one of {', '.join(GENOTYPES)} or to a genotype JSON file")
    if value in GENOTYPES:
        return value, GENOTYPES[value]
    if value.startswith("Genotype("):
        try:
            return "custom", parse_upstream(value)
        except GenotypeError as exc:
            raise ValueError(f"{key}: {exc}") from None
    if value.lower().endswith(".json") or os.path.sep in value or os.path.exists(value):
        if not os.path.isfile(value):
            raise ValueError(f"{key} = {value!r}: no such genotype file")
        try:
            return value, load_genotype(value)
        except GenotypeError as exc:
            raise ValueError(f"{key} = {value!r}: {exc}") from None
    raise ValueError(f"{key} = {value!r} is neither a published genotype ({', '.join(GENOTYPES)}) nor a genotype "
                     "JSON file")


# --------------------------------------------------------------------------------------------------------------
# The evaluation networks
# --------------------------------------------------------------------------------------------------------------

NET_KINDS = ("cifar", "imagenet")
NET_NAMES = {"pcdarts_cifar": "cifar", "pcdarts_imagenet": "imagenet"}
STEM_MULTIPLIER = 3       # NetworkCIFAR stem: 3C channels
AUX_CHANNELS = (128, 768)  # both aux heads: 1x1 conv to 128, 2x2 conv to 768, Linear(768, classes)
IMAGENET_SIZE = 224       # NetworkImageNet ends in a fixed AvgPool2d(7): 224 px only

#: published figures (research §3.7-3.8): params exclude the aux head (upstream's count_parameters_in_MB)
PUBLISHED = {
    ("cifar", "PC_DARTS_cifar"): {"params_M": 3.6, "test_error_pct": 2.57, "search_gpu_days": 0.1},
    ("imagenet", "PC_DARTS_image"): {"params_M": 5.3, "mflops": 597, "top1_error_pct": 24.2, "top5_error_pct": 7.3,
                                     "search_gpu_days": 3.8,
                                     "note": "597M is not reproducible as conv+linear MACs (581.63M measured)"},
}


@dataclasses.dataclass(frozen=True)
class PCDartsNetSpec:
    """A PC-DARTS/DARTS evaluation network (upstream ``model.py``): NetworkCIFAR (``kind='cifar'``) or
    NetworkImageNet (``kind='imagenet'``) with ``C`` initial channels, ``layers`` cells, the genotype's cells, an
    optional auxiliary head, drop-path probability ``drop_path`` (the value before any epoch ramp)."""

    kind: str
    C: int
    layers: int
    num_classes: int
    auxiliary: bool
    genotype: Genotype
    genotype_name: str = "custom"
    drop_path: float = 0.0
    image_size: int = 32
    in_channels: int = 3

    @property
    def name(self) -> str:
        return f"pcdarts_{self.kind}"


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One edge of a cell: primitive ``op`` on input state ``index`` at ``stride``."""

    op: str
    index: int
    stride: int

    @property
    def is_identity(self) -> bool:
        return self.op == "skip_connect" and self.stride == 1


@dataclasses.dataclass(frozen=True)
class CellSpec:
    index: int
    reduction: bool
    reduction_prev: bool
    C_prev_prev: int
    C_prev: int
    C: int
    ops: Tuple[OpSpec, ...]
    concat: Tuple[int, ...]
    size_prev_prev: int     # spatial size of s0 (input of preprocess0)
    size_prev: int          # spatial size of s1 (input of preprocess1)

    @property
    def multiplier(self) -> int:
        return len(self.concat)

    @property
    def steps(self) -> int:
        return len(self.ops) // 2

    @property
    def C_out(self) -> int:
        return self.multiplier * self.C

    @property
    def size(self) -> int:
        """Spatial size of the cell's states (after the preprocessing and, in a reduction cell, its stride)."""
        return self.size_prev // 2 if self.reduction else self.size_prev


def reduction_indices(layers: int) -> Tuple[int, ...]:
    return tuple(sorted({layers // 3, 2 * layers // 3}))


def aux_cell_index(spec: PCDartsNetSpec) -> int:
    return 2 * spec.layers // 3


def op_padding(op: str) -> Tuple[int, int, int]:
    """(kernel, padding, dilation) of a conv primitive."""
    return _CONV_OPS[op]


def _stem_sizes(spec: PCDartsNetSpec) -> Tuple[int, int]:
    """(size of s0, size of s1) entering cell 0."""
    if spec.kind == "cifar":
        return spec.image_size, spec.image_size
    s = spec.image_size
    stem0 = _half_up(_half_up(s))
    return stem0, _half_up(stem0)


def _half_up(size: int) -> int:
    """Output size of a 3x3 stride-2 pad-1 conv (and of every stride-2 primitive): ceil(size / 2)."""
    return (size - 1) // 2 + 1


def cell_plan(spec: PCDartsNetSpec) -> Tuple[CellSpec, ...]:
    """Every cell: reduction flags, channels, ops with strides and input map sizes (upstream ``model.py``)."""
    reductions = reduction_indices(spec.layers)
    if spec.kind == "cifar":
        C_curr = STEM_MULTIPLIER * spec.C
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, spec.C
        reduction_prev = False
    else:
        C_prev_prev, C_prev, C_curr = spec.C, spec.C, spec.C
        reduction_prev = True
    size_pp, size_p = _stem_sizes(spec)
    cells = []
    for i in range(spec.layers):
        reduction = i in reductions
        if reduction:
            C_curr *= 2
        edges = spec.genotype.edges(reduction)
        ops = tuple(OpSpec(op, index, 2 if reduction and index < 2 else 1) for op, index in edges)
        cell = CellSpec(i, reduction, reduction_prev, C_prev_prev, C_prev, C_curr, ops, spec.genotype.concat(reduction),
                        size_pp, size_p)
        cells.append(cell)
        reduction_prev = reduction
        C_prev_prev, C_prev = C_prev, cell.C_out
        size_pp, size_p = size_p, cell.size
    return tuple(cells)


def _check_sizes(spec: PCDartsNetSpec, key: str = "DATA.IMAGE_SIZE") -> None:
    """FactorizedReduce needs even maps, the aux heads need their fixed map sizes: errors name ``key``."""
    for cell in cell_plan(spec):
        needs_even = []
        if cell.reduction_prev:
            needs_even.append(("preprocess0 (FactorizedReduce)", cell.size_prev_prev))
        if cell.reduction:
            needs_even.append(("the stride-2 ops", cell.size_prev))
        for what, size in needs_even:
            if size % 2 or size < 2:
                raise ValueError(f"{key} = {spec.image_size}: {what} of cell {cell.index} meets a {size}x{size} map; "
                                 "FactorizedReduce needs an even size (CIFAR networks: a multiple of 4)")
    if spec.auxiliary:
        size = cell_plan(spec)[aux_cell_index(spec)].size
        kernel_stride = (5, 3) if spec.kind == "cifar" else (5, 2)
        pooled = (size - kernel_stride[0]) // kernel_stride[1] + 1 if size >= kernel_stride[0] else 0
        if pooled != 2:
            raise ValueError(f"{key} = {spec.image_size}: the auxiliary head (PCDARTS.AUXILIARY) after cell "
                             f"{aux_cell_index(spec)} meets a {size}x{size} map and needs one that its "
                             f"AvgPool2d({kernel_stride[0]}, stride {kernel_stride[1]}) turns into 2x2 "
                             + ("(8x8 to 10x10: image size 32, 36 or 40)" if spec.kind == "cifar" else "(224 px)"))


def network_spec(kind: str, C: int, layers: int, num_classes: int, auxiliary: bool = False,
                 genotype: Union[str, Genotype] = "PCDARTS", drop_path: float = 0.0, image_size: Optional[int] = None,
                 in_channels: int = 3, genotype_name: Optional[str] = None) -> PCDartsNetSpec:
    """A checked :class:`PCDartsNetSpec` (``genotype``: a published name or a :class:`Genotype`).  Image size
    defaults to 32 (CIFAR) / 224 (ImageNet)."""
    if kind not in NET_KINDS:
        raise ValueError(f"network kind {kind!r}: expected one of {', '.join(NET_KINDS)}")
    if isinstance(genotype, str):
        genotype_name = genotype_name or genotype
        genotype = genotype_by_name(genotype)
    elif not isinstance(genotype, Genotype):
        raise TypeError(f"genotype: expected a name or a Genotype, got {type(genotype).__name__}")
    size = int(image_size if image_size is not None else (32 if kind == "cifar" else IMAGENET_SIZE))
    spec = PCDartsNetSpec(kind, int(C), int(layers), int(num_classes), bool(auxiliary), genotype,
                          genotype_name or "custom", float(drop_path), size, int(in_channels))
    _validate(spec)
    return spec


def _validate(spec: PCDartsNetSpec) -> None:
    at_least(spec.C, "PCDARTS.INIT_CHANNELS", 1)
    at_least(spec.layers, "PCDARTS.LAYERS", 1)
    if spec.kind == "imagenet":
        if spec.C % 2:
            raise ValueError(f"PCDARTS.INIT_CHANNELS = {spec.C} must be even for pcdarts_imagenet (stem0 halves it and "
                             "cell 0's FactorizedReduce splits it in two)")
        if spec.image_size != IMAGENET_SIZE:
            raise ValueError(f"DATA.IMAGE_SIZE = {spec.image_size}: pcdarts_imagenet needs {IMAGENET_SIZE} (its global "
                             "pool is a fixed AvgPool2d(7) on the 7x7 map of a 224 px input)")
    _check_sizes(spec)


# --------------------------------------------------------------------------------------------------------------
# State names, shapes, kinds and counts
# --------------------------------------------------------------------------------------------------------------

Shape = Tuple[int, ...]
# name -> (kind, shape, groups, weight shape or None for BN); kinds as in common/init.py
_Row = Tuple[str, Shape, int, Optional[Shape]]


def _conv(rows: Dict[str, _Row], prefix: str, c_in: int, c_out: int, k: int, groups: int = 1) -> None:
    shape = (c_out, c_in // groups, k, k)
    rows[f"{prefix}.weight"] = ("conv.weight", shape, groups, shape)


def _bn(rows: Dict[str, _Row], prefix: str, c: int) -> None:
    for leaf, kind in (("weight", "bn.weight"), ("bias", "bn.bias"), ("running_mean", "bn.running_mean"),
                       ("running_var", "bn.running_var")):
        rows[f"{prefix}.{leaf}"] = (kind, (c,), 1, None)


def _linear(rows: Dict[str, _Row], prefix: str, c_in: int, c_out: int) -> None:
    shape = (c_out, c_in)
    rows[f"{prefix}.weight"] = ("linear.weight", shape, 1, shape)
    rows[f"{prefix}.bias"] = ("linear.bias", (c_out,), 1, shape)


def _relu_conv_bn(rows, prefix: str, c_in: int, c_out: int) -> None:
    _conv(rows, f"{prefix}.op.1", c_in, c_out, 1)
    _bn(rows, f"{prefix}.op.2", c_out)


def _factorized_reduce(rows, prefix: str, c_in: int, c_out: int) -> None:
    _conv(rows, f"{prefix}.conv_1", c_in, c_out // 2, 1)
    _conv(rows, f"{prefix}.conv_2", c_in, c_out // 2, 1)
    _bn(rows, f"{prefix}.bn", c_out)


def _op_rows(rows, prefix: str, op: OpSpec, C: int) -> None:
    if op.op.startswith("sep_conv"):
        k = op_padding(op.op)[0]
        _conv(rows, f"{prefix}.op.1", C, C, k, groups=C)
        _conv(rows, f"{prefix}.op.2", C, C, 1)
        _bn(rows, f"{prefix}.op.3", C)
        _conv(rows, f"{prefix}.op.5", C, C, k, groups=C)
        _conv(rows, f"{prefix}.op.6", C, C, 1)
        _bn(rows, f"{prefix}.op.7", C)
    elif op.op.startswith("dil_conv"):
        k = op_padding(op.op)[0]
        _conv(rows, f"{prefix}.op.1", C, C, k, groups=C)
        _conv(rows, f"{prefix}.op.2", C, C, 1)
        _bn(rows, f"{prefix}.op.3", C)
    elif op.op == "skip_connect" and op.stride == 2:
        _factorized_reduce(rows, prefix, C, C)
    # pools, identity and none carry no state


def _state_rows(spec: PCDartsNetSpec) -> Dict[str, _Row]:
    rows: Dict[str, _Row] = {}
    if spec.kind == "cifar":
        c_stem = STEM_MULTIPLIER * spec.C
        _conv(rows, "stem.0", spec.in_channels, c_stem, 3)
        _bn(rows, "stem.1", c_stem)
    else:
        _conv(rows, "stem0.0", spec.in_channels, spec.C // 2, 3)
        _bn(rows, "stem0.1", spec.C // 2)
        _conv(rows, "stem0.3", spec.C // 2, spec.C, 3)
        _bn(rows, "stem0.4", spec.C)
        _conv(rows, "stem1.1", spec.C, spec.C, 3)
        _bn(rows, "stem1.2", spec.C)
    cells = cell_plan(spec)
    for cell in cells:
        p = f"cells.{cell.index}"
        if cell.reduction_prev:
            _factorized_reduce(rows, f"{p}.preprocess0", cell.C_prev_prev, cell.C)
        else:
            _relu_conv_bn(rows, f"{p}.preprocess0", cell.C_prev_prev, cell.C)
        _relu_conv_bn(rows, f"{p}.preprocess1", cell.C_prev, cell.C)
        for k, op in enumerate(cell.ops):
            _op_rows(rows, f"{p}._ops.{k}", op, cell.C)
    if spec.auxiliary:
        c_aux = cells[aux_cell_index(spec)].C_out
        _conv(rows, "auxiliary_head.features.2", c_aux, AUX_CHANNELS[0], 1)
        _bn(rows, "auxiliary_head.features.3", AUX_CHANNELS[0])
        _conv(rows, "auxiliary_head.features.5", AUX_CHANNELS[0], AUX_CHANNELS[1], 2)
        if spec.kind == "cifar":  # upstream's ImageNet head has no BN after the 2x2 conv
            _bn(rows, "auxiliary_head.features.6", AUX_CHANNELS[1])
        _linear(rows, "auxiliary_head.classifier", AUX_CHANNELS[1], spec.num_classes)
    _linear(rows, "classifier", cells[-1].C_out, spec.num_classes)
    return rows


def expected_state_shapes(spec: PCDartsNetSpec) -> Dict[str, Shape]:
    """Upstream ``model.py`` state names and shapes (torch layout), in module order.

    NetworkCIFAR: ``stem.{0,1}``; NetworkImageNet: ``stem0.{0,1,3,4}``, ``stem1.{1,2}``.  Then per cell
    ``cells.{i}.preprocess0`` (``op.{1,2}`` of a ReLUConvBN, or ``conv_1 conv_2 bn`` of a FactorizedReduce after a
    reduction), ``cells.{i}.preprocess1.op.{1,2}``, ``cells.{i}._ops.{k}`` (SepConv ``op.{1,2,3,5,6,7}``, DilConv
    ``op.{1,2,3}``, stride-2 skip ``conv_1 conv_2 bn``; pools and identity hold nothing); the aux head
    ``auxiliary_head.features.{2,3,5,6}`` (ImageNet: ``{2,3,5}``) and ``auxiliary_head.classifier``; ``classifier``.
    BN entries are ``weight, bias, running_mean, running_var`` (no ``num_batches_tracked``, as every family).
    A :class:`SearchNetSpec`: upstream ``model_search.py`` names plus the architecture parameters."""
    return {name: row[1] for name, row in _rows(spec).items()}


def param_kinds(spec: PCDartsNetSpec) -> Dict[str, "object"]:
    """``{canonical name: common.init.ParamSpec}`` from the spec alone (equals ``ops.named_param_kinds`` of the built
    model: depthwise convs carry ``groups = channels``)."""
    from common import init as I

    return {name: I.ParamSpec(kind, shape, groups, wshape)
            for name, (kind, shape, groups, wshape) in _rows(spec).items() if kind != "arch"}


def _rows(spec) -> Dict[str, _Row]:
    return _search_state_rows(spec) if isinstance(spec, SearchNetSpec) else _state_rows(spec)


def _numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def count_params(spec: PCDartsNetSpec, include_aux: bool = True) -> int:
    """Trainable parameters (conv/Linear weights and biases, BN weight/bias; BN running statistics are buffers).
    ``include_aux=False`` leaves the auxiliary head out: upstream's ``count_parameters_in_MB`` figure (3.6M / 5.3M).
    A :class:`SearchNetSpec`: weights and architecture parameters (:func:`count_search_params` splits them)."""
    if isinstance(spec, SearchNetSpec):
        return count_search_params(spec, include_arch=True)
    return sum(_numel(shape) for name, (kind, shape, _, _) in _state_rows(spec).items()
               if kind not in ("bn.running_mean", "bn.running_var")
               and (include_aux or not name.startswith("auxiliary_head.")))


def count_macs(spec: PCDartsNetSpec, image_size: Optional[int] = None) -> int:
    """Batch-1 MACs, rule 'conv_fc': conv + linear multiply-adds of one eval-mode forward (no aux head).

    Every convolution costs ``H_out*W_out*C_out*(C_in/groups)*k*k`` (stems, preprocessing, SepConv/DilConv
    depthwise and pointwise convs, both halves of every FactorizedReduce) and the classifier ``in*out``.  Not
    counted: BatchNorm, ReLU, pools, additions, concatenation, drop path, and the aux head (it runs in training only).
    Upstream's published 597M (ImageNet) is not reproducible this way; this counts 581,627,328 (research §3.7).
    """
    if isinstance(spec, SearchNetSpec):
        return count_search_macs(spec, image_size)
    if image_size is not None and int(image_size) != spec.image_size:
        spec = dataclasses.replace(spec, image_size=int(image_size))
        _validate(spec)
    total = 0

    def conv(hw: int, c_in: int, c_out: int, k: int, groups: int = 1) -> None:
        nonlocal total
        total += hw * hw * c_out * (c_in // groups) * k * k

    def fact_reduce(hw_in: int, c_in: int, c_out: int) -> None:
        conv(_half_up(hw_in), c_in, c_out // 2, 1)
        conv(_half_up(hw_in - 1), c_in, c_out // 2, 1)

    s = spec.image_size
    if spec.kind == "cifar":
        conv(s, spec.in_channels, STEM_MULTIPLIER * spec.C, 3)
    else:
        h1 = _half_up(s)
        h2 = _half_up(h1)
        conv(h1, spec.in_channels, spec.C // 2, 3)
        conv(h2, spec.C // 2, spec.C, 3)
        conv(_half_up(h2), spec.C, spec.C, 3)
    cells = cell_plan(spec)
    for cell in cells:
        if cell.reduction_prev:
            fact_reduce(cell.size_prev_prev, cell.C_prev_prev, cell.C)
        else:
            conv(cell.size_prev_prev, cell.C_prev_prev, cell.C, 1)
        conv(cell.size_prev, cell.C_prev, cell.C, 1)
        C, hw_in, hw = cell.C, cell.size_prev, cell.size
        for op in cell.ops:
            out = hw  # stride-2 ops halve the input; stride-1 ops of a reduction cell read nodes already halved
            if op.op.startswith("sep_conv"):
                k = op_padding(op.op)[0]
                conv(out, C, C, k, groups=C)
                conv(out, C, C, 1)
                conv(out, C, C, k, groups=C)
                conv(out, C, C, 1)
            elif op.op.startswith("dil_conv"):
                k = op_padding(op.op)[0]
                conv(out, C, C, k, groups=C)
                conv(out, C, C, 1)
            elif op.op == "skip_connect" and op.stride == 2:
                fact_reduce(hw_in, C, C)
    total += cells[-1].C_out * spec.num_classes
    return total


# --------------------------------------------------------------------------------------------------------------
# Init, drop path, entry points
# --------------------------------------------------------------------------------------------------------------

#: upstream trains from PyTorch's default initialisers (``common/init.py`` ``rule_torch_default``)
INIT_RULE = "torch_default"


def init_state(spec: PCDartsNetSpec, rng, dtype=None) -> Dict[str, "object"]:
    """Initial weights from numpy with PyTorch's defaults (upstream sets no init): Conv/Linear weights
    U(+-1/sqrt(fan_in)), Linear biases U(+-1/sqrt(fan_in)), BN weight 1, bias 0, running mean 0, var 1.
    Exactly the names of :func:`expected_state_shapes` (float32 unless ``dtype``)."""
    import numpy as np

    from common import init as I

    if isinstance(spec, SearchNetSpec):
        return init_search_state(spec, rng, dtype)
    return I.init_state(param_kinds(spec), INIT_RULE, rng, dtype=np.float32 if dtype is None else dtype)


def drop_prob_at(spec: PCDartsNetSpec, epoch: int, total_epochs: int) -> float:
    """Upstream's linear ramp: ``drop_path * epoch / total_epochs`` (``train.py`` sets it at each epoch start)."""
    total = int(total_epochs)
    if total <= 0:
        raise ValueError(f"total_epochs must be >= 1, got {total_epochs!r}")
    return spec.drop_path * int(epoch) / total


def spec_from_config(cfg) -> PCDartsNetSpec:
    """The evaluation network a config describes.

    ``MODEL.NAME``: ``pcdarts_cifar`` (NetworkCIFAR) or ``pcdarts_imagenet`` (NetworkImageNet, ``DATA.IMAGE_SIZE``
    224); ``PCDARTS.GENOTYPE`` (:func:`genotype_from_config`), ``PCDARTS.INIT_CHANNELS`` (C), ``PCDARTS.LAYERS``,
    ``PCDARTS.AUXILIARY``; ``MODEL.NUM_CLASSES``, ``MODEL.DROP_PATH`` (the drop-path probability the epoch ramp
    reaches), ``MODEL.DROPOUT`` (must be 0: these networks have no dropout), ``DATA.IMAGE_SIZE``, ``DATA.CHANNELS``.
    ``MODEL.NAME`` ``pcdarts_search`` / ``pcdarts_search_imagenet``: the search network
    (:func:`search_spec_from_config`: ``PCDARTS.INIT_CHANNELS``, ``LAYERS``, ``PARTIAL_K``).
    Errors are ``ValueError`` naming the key and the value."""
    raw = str(cfg.MODEL.NAME).strip()
    if raw in SEARCH_NAMES:
        return search_spec_from_config(cfg)
    if raw not in NET_NAMES:
        raise ValueError(f"MODEL.NAME = {raw!r} is not a PC-DARTS network; expected one of "
                         f"{', '.join([*NET_NAMES, *SEARCH_NAMES])}")
    keys = model_keys(cfg, drop_path_note="the drop-path probability of the cells' ops (upstream CIFAR 0.3)")
    if keys.dropout:
        raise ValueError(f"MODEL.DROPOUT = {keys.dropout!r}: PC-DARTS evaluation networks have no dropout layer; "
                         "set it to 0 (MODEL.DROP_PATH is their regulariser)")
    name, genotype = genotype_from_config(cfg)
    node = cfg.PCDARTS
    C = at_least(node.INIT_CHANNELS, "PCDARTS.INIT_CHANNELS", 1)
    layers = at_least(node.LAYERS, "PCDARTS.LAYERS", 1)
    return network_spec(NET_NAMES[raw], C, layers, keys.num_classes, bool(node.AUXILIARY), genotype,
                        keys.drop_path, keys.image_size, keys.channels, genotype_name=name)


def describe(spec: PCDartsNetSpec) -> Dict[str, object]:
    """The genotype, the cells (reduction flags, channels, map sizes) and the headline numbers (JSON-able)."""
    if isinstance(spec, SearchNetSpec):
        return describe_search(spec)
    cells = cell_plan(spec)
    out: Dict[str, object] = {
        "name": spec.name,
        "genotype_name": spec.genotype_name,
        "genotype": spec.genotype.as_dict(),
        "genotype_upstream": format_upstream(spec.genotype),
        "C": spec.C,
        "layers": spec.layers,
        "reduction_cells": list(reduction_indices(spec.layers)),
        "cells": [f"{c.index}: {'reduce' if c.reduction else 'normal'} C={c.C} in=({c.C_prev_prev}, {c.C_prev}) "
                  f"out={c.C_out} {c.size}x{c.size}" + (" preprocess0=FactorizedReduce" if c.reduction_prev else "")
                  for c in cells],
        "auxiliary": spec.auxiliary,
        "aux_after_cell": aux_cell_index(spec) if spec.auxiliary else None,
        "num_classes": spec.num_classes,
        "image_size": spec.image_size,
        "in_channels": spec.in_channels,
        "drop_path": spec.drop_path,
        "drop_path_schedule": "drop_path * epoch / total_epochs (model.set_epoch at each epoch start)",
        "params": count_params(spec),
        "params_without_aux": count_params(spec, include_aux=False),
        "macs": {"rule": "conv_fc: conv + linear multiply-adds, eval mode (no aux head)",
                 "conv_fc": count_macs(spec)},
    }
    canonical = GENOTYPE_ALIASES.get(spec.genotype_name, spec.genotype_name)
    if (spec.kind, canonical) in PUBLISHED:
        out["published"] = dict(PUBLISHED[(spec.kind, canonical)])
    return out


_DEFAULTS = {"cifar": (36, 20, 32), "imagenet": (48, 14, IMAGENET_SIZE)}


def recognition_candidates(tensors: Mapping[str, object]) -> List[Tuple[str, Dict[str, Shape]]]:
    """``(name, expected shapes)`` of the published-genotype networks (every genotype of :data:`GENOTYPES` but the
    ``PCDARTS`` alias, as NetworkCIFAR C36/20 cells and NetworkImageNet C48/14 cells, with and without the aux head)
    at the class count of ``tensors`` (``classifier.bias``; 10 / 1000 when absent).  When ``tensors`` show another
    width or depth (``stem.0.weight`` / ``stem0.3.weight`` rows, the highest ``cells.{i}``) those are tried too."""
    import numpy as np

    depth = 1 + max((int(k.split(".")[1]) for k in tensors if k.startswith("cells.") and k.split(".")[1].isdigit()),
                    default=-1)
    sizes = {kind: [_DEFAULTS[kind][:2]] for kind in NET_KINDS}
    if "stem.0.weight" in tensors and depth >= 1:
        sizes["cifar"].append((int(np.shape(tensors["stem.0.weight"])[0]) // STEM_MULTIPLIER, depth))
    if "stem0.3.weight" in tensors and depth >= 1:
        sizes["imagenet"].append((int(np.shape(tensors["stem0.3.weight"])[0]), depth))
    out = []
    for kind in NET_KINDS:
        classes = classifier_width(tensors, "classifier.bias", 10 if kind == "cifar" else 1000)
        for C, layers in dict.fromkeys(sizes[kind]):
            for gname in GENOTYPES:
                if gname in GENOTYPE_ALIASES:
                    continue
                for aux in (False, True):
                    try:
                        spec = network_spec(kind, C, layers, classes, aux, gname)
                    except ValueError:
                        continue
                    label = f"pcdarts_{kind} {gname} C{C} L{layers}" + (" +aux" if aux else "")
                    out.append((label, expected_state_shapes(spec)))
    return out + _search_candidates(tensors, depth)


def _search_candidates(tensors: Mapping[str, object], depth: int) -> List[Tuple[str, Dict[str, Shape]]]:
    """The search networks: upstream's defaults (C=16, 8 cells; CIFAR K=4, ImageNet K=2) and the width, depth and
    K the tensors show; each with the architecture parameters (our checkpoints) and without (upstream's
    ``weights.pt``, which never holds them: :func:`optional_state`)."""
    import numpy as np

    sizes = {"cifar": [(16, 8, 4)], "imagenet": [(16, 8, 2)]}
    probe = tensors.get("cells.0._ops.0._ops.4.op.1.weight")  # the first sep conv: C/K output channels
    for kind, stem in (("cifar", "stem.0.weight"), ("imagenet", "stem0.3.weight")):
        if stem in tensors and probe is not None and depth >= 3:
            C = int(np.shape(tensors[stem])[0]) // SEARCH_STEM_MULTIPLIER
            part = int(np.shape(probe)[0])
            if part and C % part == 0:
                sizes[kind].append((C, depth, C // part))
    out = []
    for kind in NET_KINDS:
        classes = classifier_width(tensors, "classifier.bias", 10 if kind == "cifar" else 1000)
        for C, layers, k in dict.fromkeys(sizes[kind]):
            try:
                spec = search_spec(kind, C, layers, classes, k)
            except ValueError:
                continue
            shapes = expected_state_shapes(spec)
            label = f"{spec.name} C{C} L{layers} K{k}"
            out.append((label, shapes))
            out.append((label + " (no alphas/betas)", {n: v for n, v in shapes.items() if n not in ARCH_NAMES}))
    return out


def optional_state(spec) -> Tuple[str, ...]:
    """Names a loaded state may lack; the run then takes them from :func:`init_state`: the architecture
    parameters of a search network (upstream's ``weights.pt`` never saves them)."""
    return ARCH_NAMES if isinstance(spec, SearchNetSpec) else ()


# --------------------------------------------------------------------------------------------------------------
# The search network (upstream model_search.py / model_search_imagenet.py) and deriving a genotype
# --------------------------------------------------------------------------------------------------------------

SEARCH_NAMES = {"pcdarts_search": "cifar", "pcdarts_search_imagenet": "imagenet"}
SEARCH_STEPS = 4          # intermediate nodes per cell
SEARCH_MULTIPLIER = 4     # the last 4 states are concatenated
SEARCH_STEM_MULTIPLIER = 3
#: partial-channel K by search network: 1/K of the channels go through the mixed op (CIFAR 4, ImageNet 2)
DEFAULT_PARTIAL_K = {"cifar": 4, "imagenet": 2}
#: the architecture parameters, in upstream's ``arch_parameters()`` order (and the order they are drawn in)
ARCH_NAMES = ("alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce")
ARCH_INIT_SCALE = 1e-3    # upstream: 1e-3 * randn


@dataclasses.dataclass(frozen=True)
class SearchNetSpec:
    """The PC-DARTS search network: ``layers`` cells of ``steps`` nodes, every edge a partial-channel mixed op over
    :data:`PRIMITIVES` (``1/k`` of the channels, the rest bypassed and channel-shuffled), the edge normalisation
    by betas.  ``kind='cifar'``: 3x3 stem to ``3C`` (``model_search.py``); ``'imagenet'``: three stride-2 stems
    (``model_search_imagenet.py``)."""

    kind: str
    C: int
    layers: int
    num_classes: int
    k: int
    image_size: int = 32
    in_channels: int = 3
    steps: int = SEARCH_STEPS
    multiplier: int = SEARCH_MULTIPLIER

    @property
    def name(self) -> str:
        return "pcdarts_search" if self.kind == "cifar" else "pcdarts_search_imagenet"

    @property
    def num_edges(self) -> int:
        """Mixed ops per cell: node i has 2 + i incoming edges (4 nodes: 2 + 3 + 4 + 5 = 14)."""
        return sum(2 + i for i in range(self.steps))

    @property
    def arch_shapes(self) -> Dict[str, Shape]:
        edges, ops = self.num_edges, len(PRIMITIVES)
        return {"alphas_normal": (edges, ops), "alphas_reduce": (edges, ops),
                "betas_normal": (edges,), "betas_reduce": (edges,)}


@dataclasses.dataclass(frozen=True)
class SearchCellSpec:
    index: int
    reduction: bool
    reduction_prev: bool
    C_prev_prev: int
    C_prev: int
    C: int
    edges: Tuple[Tuple[int, int], ...]   # (input state, stride) of every mixed op, in upstream order
    size_prev_prev: int
    size_prev: int
    multiplier: int

    @property
    def C_out(self) -> int:
        return self.multiplier * self.C

    @property
    def size(self) -> int:
        return _half_up(self.size_prev) if self.reduction else self.size_prev


def node_slices(steps: int = SEARCH_STEPS) -> Tuple[Tuple[int, int], ...]:
    """``(start, end)`` rows of alpha / beta per intermediate node: ``((0, 2), (2, 5), (5, 9), (9, 14))``; the edge
    normalisation is a softmax of beta over each slice."""
    out, start = [], 0
    for i in range(steps):
        out.append((start, start + 2 + i))
        start += 2 + i
    return tuple(out)


def search_cell_plan(spec: SearchNetSpec) -> Tuple[SearchCellSpec, ...]:
    """Every search cell: reductions at ``layers//3`` and ``2*layers//3`` (channels double), preprocess0 a
    FactorizedReduce after a reduction, stride 2 on the edges from the two inputs of a reduction cell."""
    reductions = reduction_indices(spec.layers)
    C_curr = SEARCH_STEM_MULTIPLIER * spec.C
    C_prev_prev, C_prev, C_curr = C_curr, C_curr, spec.C
    if spec.kind == "cifar":
        reduction_prev = False
        size_pp = size_p = spec.image_size
    else:
        reduction_prev = True
        size_pp = _half_up(_half_up(spec.image_size))
        size_p = _half_up(size_pp)
    cells = []
    for i in range(spec.layers):
        reduction = i in reductions
        if reduction:
            C_curr *= 2
        edges = tuple((j, 2 if reduction and j < 2 else 1) for node in range(spec.steps) for j in range(2 + node))
        cell = SearchCellSpec(i, reduction, reduction_prev, C_prev_prev, C_prev, C_curr, edges, size_pp, size_p,
                              spec.multiplier)
        cells.append(cell)
        reduction_prev = reduction
        C_prev_prev, C_prev = C_prev, cell.C_out
        size_pp, size_p = size_p, cell.size
    return tuple(cells)


def search_spec(kind: str, C: int = 16, layers: int = 8, num_classes: int = 10, k: Optional[int] = None,
                image_size: Optional[int] = None, in_channels: int = 3) -> SearchNetSpec:
    """A checked :class:`SearchNetSpec` (defaults: upstream ``train_search.py``; ImageNet: 224 px, K = 2)."""
    if kind not in NET_KINDS:
        raise ValueError(f"search network kind {kind!r}: expected one of {', '.join(NET_KINDS)}")
    k = DEFAULT_PARTIAL_K[kind] if not k else int(k)
    size = int(image_size if image_size is not None else (32 if kind == "cifar" else IMAGENET_SIZE))
    spec = SearchNetSpec(kind, at_least(C, "PCDARTS.INIT_CHANNELS", 1), at_least(layers, "PCDARTS.LAYERS", 3),
                         at_least(num_classes, "MODEL.NUM_CLASSES", 1), at_least(k, "PCDARTS.PARTIAL_K", 1),
                         at_least(size, "DATA.IMAGE_SIZE", 4), at_least(in_channels, "DATA.CHANNELS", 1))
    for cell in search_cell_plan(spec):
        if cell.C % spec.k:
            raise ValueError(f"PCDARTS.PARTIAL_K = {spec.k}: cell {cell.index} has {cell.C} channels, not divisible "
                             f"by K (PCDARTS.INIT_CHANNELS = {spec.C} must be a multiple of K)")
        if (cell.C // spec.k) % 2 and cell.reduction:
            raise ValueError(f"PCDARTS.INIT_CHANNELS = {spec.C}, PCDARTS.PARTIAL_K = {spec.k}: the stride-2 "
                             f"skip_connect (FactorizedReduce) of cell {cell.index} needs an even C/K, got "
                             f"{cell.C // spec.k}")
        odd = [(what, s) for what, s, need in (("preprocess0 (FactorizedReduce)", cell.size_prev_prev,
                                                 cell.reduction_prev), ("the stride-2 edges", cell.size_prev,
                                                                        cell.reduction)) if need and s % 2]
        if odd:
            what, s = odd[0]
            raise ValueError(f"DATA.IMAGE_SIZE = {spec.image_size}: {what} of search cell {cell.index} meets a "
                             f"{s}x{s} map; FactorizedReduce and the 2x2 max-pool bypass need even sizes "
                             "(CIFAR: a multiple of 4; upstream: 32, or 224 with the ImageNet stems)")
    return spec


def _search_state_rows(spec: SearchNetSpec) -> Dict[str, _Row]:
    """Upstream ``model_search.py`` names: ``stem.{0,1}`` (ImageNet: ``stem0.{0,1,3,4}``, ``stem1.{1,2}``),
    ``cells.{i}.preprocess{0,1}``, ``cells.{i}._ops.{e}._ops.{p}`` (p = PRIMITIVES index: pools ``.1`` BN,
    stride-2 skip a FactorizedReduce, convs ``op.*``), ``classifier``.  Every BN but the stems' is ``affine=False``
    (running statistics only)."""
    rows: Dict[str, _Row] = {}

    def bn_stats(prefix: str, c: int) -> None:
        for leaf in ("running_mean", "running_var"):
            rows[f"{prefix}.{leaf}"] = (f"bn.{leaf}", (c,), 1, None)

    def fact_reduce(prefix: str, c_in: int, c_out: int) -> None:
        _conv(rows, f"{prefix}.conv_1", c_in, c_out // 2, 1)
        _conv(rows, f"{prefix}.conv_2", c_in, c_out // 2, 1)
        bn_stats(f"{prefix}.bn", c_out)

    def relu_conv_bn(prefix: str, c_in: int, c_out: int) -> None:
        _conv(rows, f"{prefix}.op.1", c_in, c_out, 1)
        bn_stats(f"{prefix}.op.2", c_out)

    c_stem = SEARCH_STEM_MULTIPLIER * spec.C
    if spec.kind == "cifar":
        _conv(rows, "stem.0", spec.in_channels, c_stem, 3)
        _bn(rows, "stem.1", c_stem)
    else:
        _conv(rows, "stem0.0", spec.in_channels, c_stem // 2, 3)
        _bn(rows, "stem0.1", c_stem // 2)
        _conv(rows, "stem0.3", c_stem // 2, c_stem, 3)
        _bn(rows, "stem0.4", c_stem)
        _conv(rows, "stem1.1", c_stem, c_stem, 3)
        _bn(rows, "stem1.2", c_stem)
    for cell in search_cell_plan(spec):
        p = f"cells.{cell.index}"
        if cell.reduction_prev:
            fact_reduce(f"{p}.preprocess0", cell.C_prev_prev, cell.C)
        else:
            relu_conv_bn(f"{p}.preprocess0", cell.C_prev_prev, cell.C)
        relu_conv_bn(f"{p}.preprocess1", cell.C_prev, cell.C)
        c = cell.C // spec.k
        for e, (_, stride) in enumerate(cell.edges):
            for o, op in enumerate(PRIMITIVES):
                q = f"{p}._ops.{e}._ops.{o}"
                if "pool" in op:
                    bn_stats(f"{q}.1", c)
                elif op == "skip_connect" and stride == 2:
                    fact_reduce(q, c, c)
                elif op.startswith("sep_conv"):
                    kk = op_padding(op)[0]
                    _conv(rows, f"{q}.op.1", c, c, kk, groups=c)
                    _conv(rows, f"{q}.op.2", c, c, 1)
                    bn_stats(f"{q}.op.3", c)
                    _conv(rows, f"{q}.op.5", c, c, kk, groups=c)
                    _conv(rows, f"{q}.op.6", c, c, 1)
                    bn_stats(f"{q}.op.7", c)
                elif op.startswith("dil_conv"):
                    kk = op_padding(op)[0]
                    _conv(rows, f"{q}.op.1", c, c, kk, groups=c)
                    _conv(rows, f"{q}.op.2", c, c, 1)
                    bn_stats(f"{q}.op.3", c)
    _linear(rows, "classifier", search_cell_plan(spec)[-1].C_out, spec.num_classes)
    for name, shape in spec.arch_shapes.items():
        rows[name] = ("arch", shape, 1, None)
    return rows


def upstream_search_keys(spec: SearchNetSpec) -> Dict[str, Shape]:
    """The keys and shapes of upstream's ``Network(...).state_dict()``: our names without the architecture
    parameters (upstream keeps them out of the state dict) plus ``num_batches_tracked`` after every BN's
    ``running_var`` (4,186 entries for C=16, 8 layers)."""
    out: Dict[str, Shape] = {}
    for name, (kind, shape, _, _) in _search_state_rows(spec).items():
        if kind == "arch":
            continue
        out[name] = shape
        if name.endswith(".running_var"):
            out[name[: -len("running_var")] + "num_batches_tracked"] = ()
    return out


def is_arch_name(name: str) -> bool:
    """An architecture parameter (alphas / betas), kept apart from the weights' optimizer."""
    return name in ARCH_NAMES


def _softmax(x, axis: int = -1):
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def edge_weights(betas, steps: int = SEARCH_STEPS):
    """The edge normalisation: a softmax of ``betas`` over the incoming edges of each node (numpy, float64)."""
    import numpy as np

    betas = np.asarray(betas, dtype=np.float64)
    return np.concatenate([_softmax(betas[a:b]) for a, b in node_slices(steps)])


def _parse_cell(alphas, betas, steps: int) -> List[Edge]:
    """Upstream ``genotype()._parse``: op weights ``softmax(alpha)`` scaled row-wise by the normalised betas; per
    node the two incoming edges with the strongest non-``none`` weight (a stable sort: the lower index wins a tie),
    strongest first, each with its best non-``none`` op (the first on a tie)."""
    weights = _softmax(alphas) * edge_weights(betas, steps)[:, None]
    none = PRIMITIVES.index("none")
    candidates = [k for k in range(len(PRIMITIVES)) if k != none]
    gene: List[Edge] = []
    for i, (start, end) in enumerate(node_slices(steps)):
        rows = weights[start:end]
        strongest = sorted(range(i + 2), key=lambda j: -max(rows[j][k] for k in candidates))[:2]
        for j in strongest:
            best = max(candidates, key=lambda k: (rows[j][k], -k))  # highest weight; the first index on a tie
            gene.append((PRIMITIVES[best], j))
    return gene


def derive_genotype(arch: Mapping[str, object], steps: int = SEARCH_STEPS,
                    multiplier: int = SEARCH_MULTIPLIER) -> Genotype:
    """The genotype the architecture parameters ``arch`` (``{alphas_normal, alphas_reduce, betas_normal,
    betas_reduce}``, arrays from either backend) encode, by upstream's rule (research §1.7), in numpy."""
    missing = [n for n in ARCH_NAMES if n not in arch]
    if missing:
        raise ValueError(f"derive_genotype: missing architecture parameters {missing}")
    concat = tuple(range(2 + steps - multiplier, steps + 2))
    return Genotype(normal=_parse_cell(arch["alphas_normal"], arch["betas_normal"], steps), normal_concat=concat,
                    reduce=_parse_cell(arch["alphas_reduce"], arch["betas_reduce"], steps), reduce_concat=concat)


def arch_summary(arch: Mapping[str, object], steps: int = SEARCH_STEPS) -> Dict[str, object]:
    """JSON-able view of the architecture: the op softmax per edge, the normalised edge weights per cell type, and
    the mean entropy of the op softmax (nats; ``log 8`` = uniform) that shows how decided the search is."""
    import numpy as np

    out: Dict[str, object] = {"primitives": list(PRIMITIVES)}
    for cell in ("normal", "reduce"):
        p = _softmax(arch[f"alphas_{cell}"])
        out[f"alphas_{cell}_softmax"] = np.round(p, 6).tolist()
        out[f"betas_{cell}_normalised"] = np.round(edge_weights(arch[f"betas_{cell}"], steps), 6).tolist()
        out[f"entropy_{cell}"] = float(-(p * np.log(np.clip(p, 1e-300, None))).sum(axis=1).mean())
    return out


def init_search_state(spec: SearchNetSpec, rng, dtype=None) -> Dict[str, "object"]:
    """Initial weights (PyTorch's default initialisers, as upstream) and then the architecture parameters
    ``1e-3 * N(0, 1)`` in upstream's order, all from ``rng``."""
    import numpy as np

    from common import init as I

    dtype = np.float32 if dtype is None else dtype
    rows = _search_state_rows(spec)
    kinds = {n: I.ParamSpec(kind, shape, groups, wshape) for n, (kind, shape, groups, wshape) in rows.items()
             if kind != "arch"}
    state = I.init_state(kinds, INIT_RULE, rng, dtype=dtype)
    for name in ARCH_NAMES:
        state[name] = (ARCH_INIT_SCALE * rng.standard_normal(rows[name][1])).astype(dtype)
    return state


def count_search_params(spec: SearchNetSpec, include_arch: bool = False) -> int:
    """Trainable weights (upstream ``count_parameters_in_MB``: 299,578 for C=16, 8 layers, 10 classes); the
    architecture parameters (2 x 14 x 8 + 2 x 14 = 252) only with ``include_arch``."""
    return sum(_numel(shape) for kind, shape, _, _ in _search_state_rows(spec).values()
               if kind not in ("bn.running_mean", "bn.running_var") and (include_arch or kind != "arch"))


def search_spec_from_config(cfg) -> SearchNetSpec:
    raw = str(cfg.MODEL.NAME).strip()
    keys = model_keys(cfg, min_image_size=None)
    if keys.dropout or keys.drop_path:
        raise ValueError("MODEL.DROPOUT and MODEL.DROP_PATH must be 0 for the PC-DARTS search network (it has "
                         f"neither; got {keys.dropout!r} and {keys.drop_path!r})")
    node = cfg.PCDARTS
    return search_spec(SEARCH_NAMES[raw], node.INIT_CHANNELS, node.LAYERS, keys.num_classes,
                       int(node.PARTIAL_K), keys.image_size, keys.channels)


def describe_search(spec: SearchNetSpec) -> Dict[str, object]:
    cells = search_cell_plan(spec)
    return {
        "name": spec.name,
        "C": spec.C,
        "layers": spec.layers,
        "partial_channels_k": spec.k,
        "steps": spec.steps,
        "edges_per_cell": spec.num_edges,
        "primitives": list(PRIMITIVES),
        "reduction_cells": list(reduction_indices(spec.layers)),
        "cells": [f"{c.index}: {'reduce' if c.reduction else 'normal'} C={c.C} (mixed ops on C/K={c.C // spec.k}) "
                  f"in=({c.C_prev_prev}, {c.C_prev}) out={c.C_out} {c.size}x{c.size}"
                  + (" preprocess0=FactorizedReduce" if c.reduction_prev else "") for c in cells],
        "num_classes": spec.num_classes,
        "image_size": spec.image_size,
        "params": count_search_params(spec),
        "params_note": "weights (upstream's count_parameters_in_MB); the architecture parameters come on top",
        "arch_params": {name: list(shape) for name, shape in spec.arch_shapes.items()},
        "arch_params_total": count_search_params(spec, include_arch=True) - count_search_params(spec),
        "macs": {"rule": "conv_fc: conv + linear multiply-adds of every candidate op", "conv_fc": count_search_macs(spec)},
        "upstream_state_dict_entries": len(upstream_search_keys(spec)),
    }


def commands_for(spec) -> Tuple[str, ...]:
    """The commands a spec is for: the search network is searched (and can be tested), an evaluation network
    trained."""
    if isinstance(spec, SearchNetSpec):
        return ("search", "test", "infer")
    return ("train", "test", "infer")


def command_hint(spec, command: str) -> str:
    if isinstance(spec, SearchNetSpec):
        return ("(it is the search network: `search` finds a genotype, then `train` a pcdarts_cifar / pcdarts_imagenet "
                "network with PCDARTS.GENOTYPE <run>/genotype.json)")
    return (f"(it is an evaluation network built from PCDARTS.GENOTYPE; the search runs MODEL.NAME "
            f"{' or '.join(SEARCH_NAMES)})")


def count_search_macs(spec: SearchNetSpec, image_size: Optional[int] = None) -> int:
    """Batch-1 MACs of the search network, rule 'conv_fc': conv + linear multiply-adds of one forward through every
    candidate op of every edge (stems, preprocessing, the sep / dil convs and stride-2 FactorizedReduce skips on the
    C/K channels, the classifier).  Not counted: BN, ReLU, pools, the weighted sums, the shuffle."""
    if image_size is not None and int(image_size) != spec.image_size:
        spec = search_spec(spec.kind, spec.C, spec.layers, spec.num_classes, spec.k, int(image_size), spec.in_channels)
    total = 0

    def conv(hw: int, c_in: int, c_out: int, k: int, groups: int = 1) -> None:
        nonlocal total
        total += hw * hw * c_out * (c_in // groups) * k * k

    s = spec.image_size
    c_stem = SEARCH_STEM_MULTIPLIER * spec.C
    if spec.kind == "cifar":
        conv(s, spec.in_channels, c_stem, 3)
    else:
        h1 = _half_up(s)
        h2 = _half_up(h1)
        conv(h1, spec.in_channels, c_stem // 2, 3)
        conv(h2, c_stem // 2, c_stem, 3)
        conv(_half_up(h2), c_stem, c_stem, 3)
    cells = search_cell_plan(spec)
    for cell in cells:
        if cell.reduction_prev:
            conv(_half_up(cell.size_prev_prev), cell.C_prev_prev, cell.C // 2, 1)
            conv(_half_up(cell.size_prev_prev - 1), cell.C_prev_prev, cell.C // 2, 1)
        else:
            conv(cell.size_prev_prev, cell.C_prev_prev, cell.C, 1)
        conv(cell.size_prev, cell.C_prev, cell.C, 1)
        c, hw = cell.C // spec.k, cell.size
        for _, stride in cell.edges:
            for op in PRIMITIVES:
                if op.startswith("sep_conv"):
                    kk = op_padding(op)[0]
                    conv(hw, c, c, kk, groups=c)
                    conv(hw, c, c, 1)
                    conv(hw, c, c, kk, groups=c)
                    conv(hw, c, c, 1)
                elif op.startswith("dil_conv"):
                    kk = op_padding(op)[0]
                    conv(hw, c, c, kk, groups=c)
                    conv(hw, c, c, 1)
                elif op == "skip_connect" and stride == 2:
                    conv(hw, c, c // 2, 1)
                    conv(hw, c, c // 2, 1)
    total += cells[-1].C_out * spec.num_classes
    return total


def macs_rule(spec) -> str:
    """The counting rule :func:`count_macs` applies to ``spec`` (its docstring's first line), for ``info``."""
    fn = count_search_macs if isinstance(spec, SearchNetSpec) else count_macs
    return " ".join(fn.__doc__.split(".")[0].split()).replace("``", "") + "."
