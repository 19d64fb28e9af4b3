"""PNASNet-5: canonical parameter names <-> official TF-slim variable names, and the layout transform of each.

The table is generated from :func:`common.specs.pnasnet.cell_structures`, never hand-listed.  TF names have no
outer scope and no ``:0`` suffix (as stored in the released ``model.ckpt``):

TF variable  ->  canonical (torch layout):

* ``conv0/weights`` ``[3,3,3,96]`` -> ``conv_0.conv.weight`` ``[96,3,3,3]``;
  ``conv0_bn/{gamma,beta,moving_mean,moving_variance}`` -> ``conv_0.bn.{weight,bias,running_mean,running_var}``
* ``<cell>/1x1/weights``, ``<cell>/beginning_bn/*`` -> ``<cell>.conv_1x1.conv``, ``<cell>.conv_1x1.bn``
* ``<cell>/prev_1x1/weights``, ``<cell>/prev_bn/*`` -> ``<cell>.conv_prev_1x1.conv``, ``<cell>.conv_prev_1x1.bn``
* ``<cell>/path{1,2}_conv/weights``, ``<cell>/final_path_bn/*`` ->
  ``<cell>.conv_prev_1x1.path_{1,2}.conv``, ``<cell>.conv_prev_1x1.final_path_bn``
* ``<cell>/comb_iter_<i>/<side>/separable_KxK_<l>/{depthwise_weights,pointwise_weights}`` ->
  ``<cell>.comb_iter_<i>_<side>.separable_<l>.{depthwise_conv2d,pointwise_conv2d}.weight``;
  ``.../bn_sep_KxK_<l>/*`` -> ``<cell>.comb_iter_<i>_<side>.bn_sep_<l>``
* projections ``<cell>/comb_iter_<i>/<side>/1x1/weights``, ``.../bn_1/*`` -> ``<cell>.comb_iter_<i>_<side>.conv``,
  ``.bn``
* ``final_layer/FC/{weights,biases}`` -> ``last_linear.{weight,bias}``
* ``aux_<k>/aux_logits/{proj,aux_bn0,Conv,aux_bn1,FC}`` -> ``aux_head.{proj,bn0,conv,bn1,fc}`` (``with_aux``)

Layout transforms (``kind`` of an entry): ``conv`` HWIO -> OIHW ``transpose(3,2,0,1)`` (inverse ``(2,3,1,0)``);
``depthwise`` ``[k,k,C,1]`` -> ``[C,1,k,k]`` ``transpose(2,3,0,1)`` (its own inverse); ``linear`` ``[in,out]`` ->
``[out,in]``; ``vector`` (BN tensors, FC bias) unchanged.  ``global_step`` (and any name in
:data:`IGNORED_TF_NAMES`) is ignored by name.  No TensorFlow import here: pure numpy.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

from common.specs import pnasnet as P

IGNORED_TF_NAMES = ("global_step",)
TF_BN_TO_CANONICAL = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                      ("moving_variance", "running_var"))
KINDS = ("conv", "depthwise", "linear", "vector")

_CONV_TO_NEUTRAL = (3, 2, 0, 1)
_CONV_TO_TF = (2, 3, 1, 0)
_DEPTHWISE = (2, 3, 0, 1)


class NameTableError(ValueError):
    """A tensor name or shape does not fit the PNASNet table; the message names it."""


@dataclasses.dataclass(frozen=True)
class NameEntry:
    tf_name: str
    canonical: str
    kind: str                       # conv / depthwise / linear / vector
    tf_shape: Tuple[int, ...]
    neutral_shape: Tuple[int, ...]  # torch layout
    trainable: bool                 # False for moving_mean / moving_variance


def _neutral_shape(kind: str, tf_shape: Tuple[int, ...]) -> Tuple[int, ...]:
    if kind == "conv":
        return tuple(tf_shape[i] for i in _CONV_TO_NEUTRAL)
    if kind == "depthwise":
        return tuple(tf_shape[i] for i in _DEPTHWISE)
    if kind == "linear":
        return (tf_shape[1], tf_shape[0])
    return tuple(tf_shape)


class _Collector:
    def __init__(self):
        self.entries: List[NameEntry] = []

    def add(self, tf_name: str, canonical: str, kind: str, tf_shape, trainable: bool = True) -> None:
        tf_shape = tuple(int(d) for d in tf_shape)
        self.entries.append(NameEntry(tf_name, canonical, kind, tf_shape, _neutral_shape(kind, tf_shape), trainable))

    def conv(self, tf_scope: str, canonical: str, k: int, cin: int, cout: int) -> None:
        self.add(f"{tf_scope}/weights", f"{canonical}.weight", "conv", (k, k, cin, cout))

    def bn(self, tf_scope: str, canonical: str, c: int) -> None:
        for tf_leaf, leaf in TF_BN_TO_CANONICAL:
            self.add(f"{tf_scope}/{tf_leaf}", f"{canonical}.{leaf}", "vector", (c,),
                     trainable=tf_leaf in ("gamma", "beta"))


def name_entries(spec: P.PNASNetSpec, with_aux: bool = False, image_size: Optional[int] = None) -> List[NameEntry]:
    """Every variable of the TF graph (eval graph; plus ``aux_<k>/...`` with ``with_aux``), in canonical order.

    The aux 768-conv kernel depends on the input size (``image_size``, default ``spec.image_size``).
    """
    c = _Collector()
    c.conv("conv0", "conv_0.conv", 3, spec.in_channels, spec.stem_filters)
    c.bn("conv0_bn", "conv_0.bn", spec.stem_filters)
    for cell in P.cell_structures(spec):
        n, f = cell.name, cell.filter_size
        if cell.prev_kind == P.PREV_FACTORIZED:
            f1, f2 = cell.factorized_split
            c.conv(f"{n}/path1_conv", f"{n}.conv_prev_1x1.path_1.conv", 1, cell.prev_channels, f1)
            c.conv(f"{n}/path2_conv", f"{n}.conv_prev_1x1.path_2.conv", 1, cell.prev_channels, f2)
            c.bn(f"{n}/final_path_bn", f"{n}.conv_prev_1x1.final_path_bn", f)
        elif cell.prev_kind == P.PREV_1X1:
            c.conv(f"{n}/prev_1x1", f"{n}.conv_prev_1x1.conv", 1, cell.prev_channels, f)
            c.bn(f"{n}/prev_bn", f"{n}.conv_prev_1x1.bn", f)
        c.conv(f"{n}/1x1", f"{n}.conv_1x1.conv", 1, cell.in_channels, f)
        c.bn(f"{n}/beginning_bn", f"{n}.conv_1x1.bn", f)
        for op in cell.ops:
            scope, canon = op.tf_scope, op.canonical
            if op.slot.kind == "separable":
                k = op.slot.kernel_size
                cin = op.in_channels
                for layer in range(1, op.slot.num_layers + 1):
                    sep = f"{scope}/separable_{k}x{k}_{layer}"
                    c.add(f"{sep}/depthwise_weights", f"{canon}.separable_{layer}.depthwise_conv2d.weight",
                          "depthwise", (k, k, cin, 1))
                    c.add(f"{sep}/pointwise_weights", f"{canon}.separable_{layer}.pointwise_conv2d.weight",
                          "conv", (1, 1, cin, f))
                    c.bn(f"{scope}/bn_sep_{k}x{k}_{layer}", f"{canon}.bn_sep_{layer}", f)
                    cin = f
            elif op.projection:
                c.conv(f"{scope}/1x1", f"{canon}.conv", 1, op.in_channels, f)
                c.bn(f"{scope}/bn_1", f"{canon}.bn", f)
    if with_aux:
        aux = P.aux_head_shapes(spec, image_size)
        scope = aux["tf_scope"]
        c.conv(f"{scope}/proj", "aux_head.proj", 1, aux["input"][0], P.AUX_PROJ_FILTERS)
        c.bn(f"{scope}/aux_bn0", "aux_head.bn0", P.AUX_PROJ_FILTERS)
        c.conv(f"{scope}/Conv", "aux_head.conv", aux["conv_kernel"], P.AUX_PROJ_FILTERS, P.AUX_CONV_FILTERS)
        c.bn(f"{scope}/aux_bn1", "aux_head.bn1", P.AUX_CONV_FILTERS)
    c.add("final_layer/FC/weights", "last_linear.weight", "linear", (spec.final_channels, spec.num_classes))
    c.add("final_layer/FC/biases", "last_linear.bias", "vector", (spec.num_classes,))
    if with_aux:
        scope = P.aux_head_shapes(spec, image_size)["tf_scope"]
        c.add(f"{scope}/FC/weights", "aux_head.fc.weight", "linear", (P.AUX_CONV_FILTERS, spec.num_classes))
        c.add(f"{scope}/FC/biases", "aux_head.fc.bias", "vector", (spec.num_classes,))
    _check_unique(c.entries)
    return c.entries


def _check_unique(entries: List[NameEntry]) -> None:
    for attr in ("tf_name", "canonical"):
        seen = set()
        for e in entries:
            key = getattr(e, attr)
            if key in seen:
                raise NameTableError(f"duplicate {attr} {key!r} in the PNASNet name table")
            seen.add(key)


def tf_to_canonical_table(spec: P.PNASNetSpec, with_aux: bool = False,
                          image_size: Optional[int] = None) -> Dict[str, str]:
    """``{TF variable name: canonical name}`` (1179 entries for Large eval; +12 with the aux head)."""
    return {e.tf_name: e.canonical for e in name_entries(spec, with_aux, image_size)}


def canonical_to_tf_table(spec: P.PNASNetSpec, with_aux: bool = False,
                          image_size: Optional[int] = None) -> Dict[str, str]:
    return {e.canonical: e.tf_name for e in name_entries(spec, with_aux, image_size)}


def aux_tf_prefix(spec: P.PNASNetSpec) -> Optional[str]:
    """``aux_<k>/`` for a spec with an aux head (what an eval-only import ignores), else None."""
    return None if spec.aux_head_cell is None else f"aux_{spec.aux_head_cell}/"


def is_ignored_tf_name(name: str) -> bool:
    return _strip_tf(name) in IGNORED_TF_NAMES


def _strip_tf(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


def kind_of(name: str, ndim: int) -> str:
    """Layout kind of a TF variable name (``a/b/weights``) or a canonical name (``a.b.weight``) of rank ``ndim``."""
    name = _strip_tf(name)
    if "/" in name:
        leaf = name.rsplit("/", 1)[-1]
        if leaf == "depthwise_weights":
            kind = "depthwise"
        elif leaf in ("weights", "pointwise_weights"):
            kind = {4: "conv", 2: "linear"}.get(ndim, "")
        else:
            kind = "vector"
    else:
        if name.endswith("depthwise_conv2d.weight"):
            kind = "depthwise"
        elif name.endswith(".weight") and ndim != 1:
            kind = {4: "conv", 2: "linear"}.get(ndim, "")
        else:
            kind = "vector"
    expected_ndim = {"conv": 4, "depthwise": 4, "linear": 2, "vector": 1}.get(kind)
    if expected_ndim is None or expected_ndim != ndim:
        raise NameTableError(f"tensor {name!r}: rank {ndim} does not fit a PNASNet {kind or 'weight'} tensor")
    return kind


def tf_array_to_neutral(name: str, array) -> np.ndarray:
    """TF layout -> torch layout for the variable ``name`` (TF or canonical name; the kind decides)."""
    a = np.asarray(array)
    kind = kind_of(name, a.ndim)
    if kind == "conv":
        out = a.transpose(_CONV_TO_NEUTRAL)
    elif kind == "depthwise":
        if a.shape[3] != 1:
            raise NameTableError(f"tensor {name!r}: depthwise shape {list(a.shape)} has depth multiplier "
                                 f"{a.shape[3]}, PNASNet uses 1")
        out = a.transpose(_DEPTHWISE)
    elif kind == "linear":
        out = a.T
    else:
        out = a
    return np.ascontiguousarray(out)


def neutral_array_to_tf(name: str, array) -> np.ndarray:
    """Torch layout -> TF layout for the variable ``name`` (TF or canonical name); inverse of the above."""
    a = np.asarray(array)
    kind = kind_of(name, a.ndim)
    if kind == "conv":
        out = a.transpose(_CONV_TO_TF)
    elif kind == "depthwise":
        if a.shape[1] != 1:
            raise NameTableError(f"tensor {name!r}: depthwise shape {list(a.shape)} is not [C, 1, k, k]")
        out = a.transpose(_DEPTHWISE)
    elif kind == "linear":
        out = a.T
    else:
        out = a
    return np.ascontiguousarray(out)


def tf_to_neutral_state(spec: P.PNASNetSpec, tf_arrays: Dict[str, np.ndarray], with_aux: bool = False,
                        image_size: Optional[int] = None, source: str = "TF checkpoint",
                        ignore_extra_prefixes: Tuple[str, ...] = ()) -> Dict[str, np.ndarray]:
    """Strict conversion of ``{TF name: array}`` into ``{canonical name: torch-layout array}``.

    Every table entry must be present with its shape; every source tensor must be used, except ``global_step``,
    names under ``ignore_extra_prefixes`` and, without ``with_aux``, the aux head (``aux_<k>/``).
    """
    entries = name_entries(spec, with_aux, image_size)
    by_tf = {e.tf_name: e for e in entries}
    ignored_prefixes = tuple(ignore_extra_prefixes)
    prefix = aux_tf_prefix(spec)
    if not with_aux and prefix:
        ignored_prefixes += (prefix,)
    names = {_strip_tf(k): k for k in tf_arrays}
    missing = [n for n in by_tf if n not in names]
    unexpected = [n for n in names if n not in by_tf and not is_ignored_tf_name(n)
                  and not n.startswith(ignored_prefixes)]
    wrong = [(n, list(by_tf[n].tf_shape), list(np.shape(tf_arrays[names[n]])))
             for n in by_tf if n in names and tuple(np.shape(tf_arrays[names[n]])) != by_tf[n].tf_shape]
    if missing or unexpected or wrong:
        lines = [f"{source}: does not fit {spec.name} ({spec.num_classes} classes)"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            lines.append(f"  unused ({len(unexpected)}): {', '.join(unexpected[:10])}"
                         f"{' ...' if len(unexpected) > 10 else ''}")
        for n, want, got in wrong[:10]:
            lines.append(f"  {n}: expected TF shape {want}, found {got}")
        raise NameTableError("\n".join(lines))
    return {e.canonical: tf_array_to_neutral(e.tf_name, tf_arrays[names[e.tf_name]]) for e in entries}


__all__ = ("IGNORED_TF_NAMES", "NameEntry", "NameTableError", "name_entries", "tf_to_canonical_table",
           "canonical_to_tf_table", "aux_tf_prefix", "is_ignored_tf_name", "kind_of", "tf_array_to_neutral",
           "neutral_array_to_tf", "tf_to_neutral_state")
