"""Weight-initialisation rules in numpy, shared by both backends.

The same seed must give the same initial network on PyTorch and on Paddle.  Framework initialisers
cannot give that (their RNGs and even their default distributions differ: anchors §3.3 rows 11-12),
so a model is initialised here, in numpy, and loaded through ``layout.load_neutral``::

    specs = ops.named_param_kinds(model)              # {canonical name: ParamSpec}, same in both backends
    state = init_state(specs, "goog", np.random.default_rng(seed))
    layout.load_neutral(model, state)

Every tensor gets its own random stream derived from ``rng`` and the tensor's canonical name, so the
result does not depend on the order in which a backend lists its tensors, and a tensor that two
networks share by name (a Cream supernet and its child) gets the same values in both.

Shapes are in torch layout (Linear ``[out, in]``, conv ``[out, in/groups, kh, kw]``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

# Parameter kinds reported by ``named_param_kinds`` in both backends.
CONV_WEIGHT = "conv.weight"
CONV_BIAS = "conv.bias"
LINEAR_WEIGHT = "linear.weight"
LINEAR_BIAS = "linear.bias"
BN_WEIGHT = "bn.weight"
BN_BIAS = "bn.bias"
BN_MEAN = "bn.running_mean"
BN_VAR = "bn.running_var"
OTHER = "other"
KINDS = (CONV_WEIGHT, CONV_BIAS, LINEAR_WEIGHT, LINEAR_BIAS, BN_WEIGHT, BN_BIAS, BN_MEAN, BN_VAR, OTHER)


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """What an init rule needs to know about one tensor.

    ``weight_shape`` is the shape of the owning module's weight (torch layout); for a bias it gives the
    fan-in/fan-out of its layer.  ``groups`` is the conv's group count (1 for everything else).
    """

    kind: str
    shape: Tuple[int, ...]
    groups: int = 1
    weight_shape: Optional[Tuple[int, ...]] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown parameter kind {self.kind!r}; expected one of {KINDS}")


SpecLike = Union[ParamSpec, Tuple[Sequence[int], str]]
Rule = Callable[[str, ParamSpec, np.random.Generator], np.ndarray]


# ---------------------------------------------------------------------------------------------------------
# distributions (each returns float64; init_state casts once)
# ---------------------------------------------------------------------------------------------------------
def fan_in_out(weight_shape: Sequence[int]) -> Tuple[int, int]:
    """torch's fans: ``fan_in = shape[1] * k*k`` (already in/groups for convs), ``fan_out = shape[0] * k*k``."""
    shape = tuple(int(s) for s in weight_shape)
    if len(shape) < 2:
        raise ValueError(f"fan-in/fan-out need a weight of rank >= 2, got shape {list(shape)}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def conv_normal_fan_out(shape: Sequence[int], rng: np.random.Generator, groups: int = 1) -> np.ndarray:
    """N(0, sqrt(2 / fan_out)) with ``fan_out = kh*kw*out_ch / groups`` (timm ``init_weight_goog``, Cream)."""
    shape = tuple(int(s) for s in shape)
    fan_out = int(np.prod(shape[2:])) * shape[0] // int(groups)
    return rng.normal(0.0, math.sqrt(2.0 / fan_out), size=shape)


def kaiming_normal(shape: Sequence[int], rng: np.random.Generator, mode: str = "fan_in",
                   gain: float = math.sqrt(2.0)) -> np.ndarray:
    """torch ``kaiming_normal_`` semantics (fans without any group correction)."""
    fan_in, fan_out = fan_in_out(shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out}.get(mode)
    if fan is None:
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return rng.normal(0.0, gain / math.sqrt(fan), size=tuple(shape))


def linear_uniform(shape: Sequence[int], rng: np.random.Generator, bound: float) -> np.ndarray:
    """U(-bound, bound)."""
    return rng.uniform(-bound, bound, size=tuple(int(s) for s in shape))


def kaiming_uniform_torch_default(shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """torch's default Conv/Linear weight init, ``kaiming_uniform_(a=sqrt(5))`` = U(±1/sqrt(fan_in))."""
    fan_in, _ = fan_in_out(shape)
    return linear_uniform(shape, rng, 1.0 / math.sqrt(fan_in))


def bias_uniform_torch_default(shape: Sequence[int], rng: np.random.Generator,
                               weight_shape: Sequence[int]) -> np.ndarray:
    """torch's default Conv/Linear bias init, U(±1/sqrt(fan_in of the weight))."""
    fan_in, _ = fan_in_out(weight_shape)
    return linear_uniform(shape, rng, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0)


def xavier_uniform(shape: Sequence[int], rng: np.random.Generator, gain: float = 1.0) -> np.ndarray:
    fan_in, fan_out = fan_in_out(shape)
    return linear_uniform(shape, rng, gain * math.sqrt(6.0 / (fan_in + fan_out)))


def ones(shape: Sequence[int]) -> np.ndarray:
    return np.ones(tuple(shape), dtype=np.float64)


def zeros(shape: Sequence[int]) -> np.ndarray:
    return np.zeros(tuple(shape), dtype=np.float64)


def _bn_default(spec: ParamSpec) -> np.ndarray:
    if spec.kind in (BN_WEIGHT, BN_VAR):
        return ones(spec.shape)
    return zeros(spec.shape)


def _weight_shape(name: str, spec: ParamSpec) -> Tuple[int, ...]:
    if spec.kind in (CONV_WEIGHT, LINEAR_WEIGHT):
        return spec.shape
    if spec.weight_shape is None:
        raise ValueError(f"{name}: a {spec.kind} needs weight_shape to compute its fan")
    return spec.weight_shape


def _unsupported(name: str, spec: ParamSpec, rule: str):
    return ValueError(f"{name}: init rule {rule!r} has no rule for kind {spec.kind!r} (shape {list(spec.shape)})")


# ---------------------------------------------------------------------------------------------------------
# rules: (name, spec, rng) -> array
# ---------------------------------------------------------------------------------------------------------
def rule_torch_default(name: str, spec: ParamSpec, rng: np.random.Generator) -> np.ndarray:
    """PyTorch's defaults: Conv/Linear U(±1/sqrt(fan_in)) weight and bias; BN ones/zeros (DARTS, PC-DARTS)."""
    if spec.kind in (CONV_WEIGHT, LINEAR_WEIGHT):
        return kaiming_uniform_torch_default(spec.shape, rng)
    if spec.kind in (CONV_BIAS, LINEAR_BIAS):
        return bias_uniform_torch_default(spec.shape, rng, _weight_shape(name, spec))
    if spec.kind.startswith("bn."):
        return _bn_default(spec)
    raise _unsupported(name, spec, "torch_default")


def rule_goog(name: str, spec: ParamSpec, rng: np.random.Generator) -> np.ndarray:
    """timm ``init_weight_goog`` (Cream): conv N(0, sqrt(2/fan_out)) with groups, Linear U(±1/sqrt(out)), biases 0."""
    if spec.kind == CONV_WEIGHT:
        return conv_normal_fan_out(spec.shape, rng, spec.groups)
    if spec.kind == LINEAR_WEIGHT:
        return linear_uniform(spec.shape, rng, 1.0 / math.sqrt(spec.shape[0]))
    if spec.kind in (CONV_BIAS, LINEAR_BIAS):
        return zeros(spec.shape)
    if spec.kind.startswith("bn."):
        return _bn_default(spec)
    raise _unsupported(name, spec, "goog")


def rule_paddle_default(name: str, spec: ParamSpec, rng: np.random.Generator) -> np.ndarray:
    """Paddle's defaults: Conv2D N(0, sqrt(2/(k*k*in_channels))) (fan ignores groups), Linear Xavier, zero biases."""
    if spec.kind == CONV_WEIGHT:
        fan = int(np.prod(spec.shape[1:])) * int(spec.groups)
        return rng.normal(0.0, math.sqrt(2.0 / fan), size=spec.shape)
    if spec.kind == LINEAR_WEIGHT:
        return xavier_uniform(spec.shape, rng)
    if spec.kind in (CONV_BIAS, LINEAR_BIAS):
        return zeros(spec.shape)
    if spec.kind.startswith("bn."):
        return _bn_default(spec)
    raise _unsupported(name, spec, "paddle_default")


def rule_kaiming_normal_fan_out(name: str, spec: ParamSpec, rng: np.random.Generator) -> np.ndarray:
    """torchvision/HRNet style: conv ``kaiming_normal_(mode='fan_out', relu)``, Linear N(0, 0.01), biases 0."""
    if spec.kind == CONV_WEIGHT:
        return kaiming_normal(spec.shape, rng, mode="fan_out")
    if spec.kind == LINEAR_WEIGHT:
        return rng.normal(0.0, 0.01, size=spec.shape)
    if spec.kind in (CONV_BIAS, LINEAR_BIAS):
        return zeros(spec.shape)
    if spec.kind.startswith("bn."):
        return _bn_default(spec)
    raise _unsupported(name, spec, "kaiming_normal_fan_out")


RULES: Dict[str, Rule] = {
    "torch_default": rule_torch_default,
    "goog": rule_goog,
    "paddle_default": rule_paddle_default,
    "kaiming_normal_fan_out": rule_kaiming_normal_fan_out,
}


def _as_spec(name: str, value: SpecLike) -> ParamSpec:
    if isinstance(value, ParamSpec):
        return value
    try:
        shape, kind = value
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a ParamSpec or a (shape, kind) pair, got {value!r}") from None
    return ParamSpec(kind=kind, shape=tuple(int(s) for s in shape))


def _name_stream(base: int, name: str) -> np.random.Generator:
    digest = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:16], "little")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([base, digest])))


def init_state(
    named_specs: Mapping[str, SpecLike],
    rule: Union[str, Rule],
    rng: np.random.Generator,
    dtype=np.float32,
) -> Dict[str, np.ndarray]:
    """``{name: array}`` for every entry of ``named_specs`` (a ParamSpec or ``(shape, kind)`` pair).

    ``rule`` is a name in ``RULES`` or a callable ``(name, spec, rng) -> array``.  ``rng`` is consumed once
    (one draw of a base seed); each tensor then gets a stream seeded by (base seed, its name).
    """
    if isinstance(rule, str):
        if rule not in RULES:
            raise ValueError(f"unknown init rule {rule!r}; known: {sorted(RULES)}")
        rule_fn = RULES[rule]
    else:
        rule_fn = rule
    base = int(rng.integers(0, 2**63 - 1))
    out: Dict[str, np.ndarray] = {}
    for name, value in named_specs.items():
        spec = _as_spec(name, value)
        array = np.asarray(rule_fn(name, spec, _name_stream(base, name)))
        if array.shape != tuple(spec.shape):
            raise ValueError(f"{name}: init rule returned shape {list(array.shape)}, expected {list(spec.shape)}")
        out[name] = np.ascontiguousarray(array, dtype=dtype)
    return out
