"""Paddle <-> neutral state.

The neutral layout is torch's.  Paddle differs in exactly two ways, handled here and nowhere else:
  * BatchNorm statistics are named ``_mean`` / ``_variance`` (torch: ``running_mean`` / ``running_var``);
  * ``paddle.nn.Linear`` stores its weight as ``[in, out]`` (torch: ``[out, in]``).
"""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import numpy as np
import paddle

from common.checkpoint import check_state

_BN_RENAMES = {"_mean": "running_mean", "_variance": "running_var"}


def _name_table(layer: paddle.nn.Layer) -> Dict[str, Tuple[str, bool]]:
    """paddle state name -> (neutral name, transpose?) for every entry of ``layer.state_dict()``."""
    bn_prefixes = set()
    linear_weights = set()
    for prefix, sub in layer.named_sublayers(include_self=True):
        dot = f"{prefix}." if prefix else ""
        if isinstance(sub, paddle.nn.layer.norm._BatchNormBase):
            bn_prefixes.add(dot)
        elif isinstance(sub, paddle.nn.Linear):
            linear_weights.add(f"{dot}weight")
    table = {}
    for name in layer.state_dict().keys():
        head, _, leaf = name.rpartition(".")
        dot = f"{head}." if head else ""
        if dot in bn_prefixes and leaf in _BN_RENAMES:
            table[name] = (dot + _BN_RENAMES[leaf], False)
        else:
            table[name] = (name, name in linear_weights)
    return table


def expected_shapes(layer: paddle.nn.Layer) -> Dict[str, Tuple[int, ...]]:
    state = layer.state_dict()
    out = {}
    for name, (neutral, transpose) in _name_table(layer).items():
        shape = tuple(state[name].shape)
        out[neutral] = shape[::-1] if transpose else shape
    return out


def neutral_name_table(layer: paddle.nn.Layer) -> Dict[str, Tuple[str, bool]]:
    """paddle structured name -> (neutral name, transpose?) for every state entry (the optimizers and EMA use it
    to store per-parameter state in torch layout)."""
    return dict(_name_table(layer))


def neutral_name_map(layer: paddle.nn.Layer) -> Dict[str, str]:
    """paddle structured name -> neutral (canonical) name."""
    return {name: neutral for name, (neutral, _) in _name_table(layer).items()}


def state_to_neutral(layer: paddle.nn.Layer) -> Dict[str, np.ndarray]:
    state = layer.state_dict()
    out = {}
    for name, (neutral, transpose) in _name_table(layer).items():
        array = np.array(state[name].numpy(), copy=True)
        out[neutral] = np.ascontiguousarray(array.T) if transpose else array
    return out


def load_neutral(layer: paddle.nn.Layer, tensors: Mapping[str, np.ndarray], source: str = "<memory>") -> None:
    """Strictly load ``tensors`` (torch layout) into ``layer``, cast to each tensor's own dtype."""
    check_state(expected_shapes(layer), tensors, source)
    state = layer.state_dict()
    with paddle.no_grad():
        for name, (neutral, transpose) in _name_table(layer).items():
            target = state[name]
            array = np.asarray(tensors[neutral])
            if transpose:
                array = array.T
            target.set_value(np.ascontiguousarray(array).astype(_numpy_dtype(target)))


def trainable_named_parameters(layer: paddle.nn.Layer):
    """Named parameters that the optimizer updates (paddle also lists BN statistics as parameters)."""
    return [(name, p) for name, p in layer.named_parameters() if not p.stop_gradient and getattr(p, "trainable", True)]


def count_parameters(layer: paddle.nn.Layer, trainable_only: bool = True) -> int:
    total = 0
    for _, p in layer.named_parameters():
        if trainable_only and (p.stop_gradient or not getattr(p, "trainable", True)):
            continue
        total += int(np.prod(p.shape)) if len(p.shape) else 1
    return total


def _numpy_dtype(tensor) -> np.dtype:
    return np.dtype(str(tensor.dtype).replace("paddle.", ""))
