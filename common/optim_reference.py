"""The optimizer / EMA / loss formulas in numpy float64: the ground truth both backends are tested against.

Also the backend-neutral bookkeeping the twin optimizers share (parameter-group rules, hyper-parameter
defaults, slot names, config node -> optimizer arguments), so ``torch_impl/optim.py`` and
``paddle_impl/optim.py`` only hold framework code.  Parameter groups are decided here, on names and ranks only
(``build_param_groups``): no weight decay on biases and 1-D parameters (``NO_DECAY_1D``), and per-node
``LR_GROUPS`` rules ``"regex=scale"`` (first matching rule wins; a rule that gets no parameter is an error).
Any optimizer node (``OPTIM``, ``ARCH_OPTIM``, ...) is read by ``optimizer_spec(cfg, node)``.

Notation (per parameter ``p`` with gradient ``g``, LR ``lr`` = LR passed to ``step`` x group ``lr_scale``,
``wd`` = the group's weight decay; every formula is elementwise):

SGD (torch ``SGD``, dampening 0)            g += wd*p;  buf = g at the parameter's first step, else buf = mu*buf + g;
                                           p -= lr * (g + mu*buf if nesterov else buf)     (mu = 0: p -= lr*g)
RMSpropTF (TF / timm ``RMSpropTF``)        g += wd*p;  sq = alpha*sq + (1-alpha)*(g*g), sq starts at ONES;
                                           avg = sqrt(sq + eps);  mu > 0: buf = mu*buf + lr*(g/avg), p -= buf
                                           (buf starts at zeros; the LR lives inside the buffer);
                                           mu = 0: p -= lr*(g/avg)
RMSprop (torch ``RMSprop``, not centred)   g += wd*p;  sq = alpha*sq + (1-alpha)*(g*g), sq starts at zeros;
                                           avg = sqrt(sq) + eps;  mu > 0: buf = mu*buf + g/avg, p -= lr*buf;
                                           mu = 0: p -= lr*(g/avg)
Adam (torch ``Adam``)                      g += wd*p;  t += 1;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*(g*g);
                                           denom = sqrt(v)/sqrt(1-b2**t) + eps;  p -= (lr/(1-b1**t)) * (m/denom)
AdamW (torch ``AdamW``)                    p *= 1 - lr*wd (decoupled), then Adam with wd = 0

Unused parameters (``g`` is None this step): ``unused_grads='skip'`` (torch ``set_to_none``) leaves the parameter
and its state untouched (its own step count ``t`` does not advance); ``unused_grads='zero'`` (paddle's default
``clear_grad``, torch ``zero_grad(set_to_none=False)``, Cream's torch-1.x reference) uses ``g = 0``, so weight
decay and momentum keep moving it.  Parameters that do not train (torch ``requires_grad=False``, paddle
``stop_gradient=True``) are never updated under either convention.

Global-norm clipping (torch ``clip_grad_norm_``), applied explicitly before ``step`` (before weight decay):
    total = sqrt(sum_i ||g_i||^2) over parameters with a gradient;  g_i *= min(max_norm / (total + 1e-6), 1)

Model EMA (timm ``ModelEma``): ema = decay*ema + (1-decay)*value for every floating state entry (BN statistics
included); non-floating entries are copied.

State slots (neutral, keyed by canonical parameter name, torch layout): see ``SLOTS``.  Every parameter with state
also has the slot ``step`` (its own update count, a 0-d int64 array).  ``OptimizerState.step`` counts ``step()`` calls.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

# ------------------------------------------------------------------------------------------ the contract
# Neutral optimizer names (OptimizerState.name and OPTIM.NAME) -> class names in the backends.
CLASS_NAMES = {"sgd": "SGD", "rmsprop_tf": "RMSpropTF", "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW"}
NEUTRAL_NAMES = {cls: name for name, cls in CLASS_NAMES.items()}

# Constructor defaults (torch's for SGD/RMSprop/Adam/AdamW, timm's for RMSpropTF).
DEFAULTS: Dict[str, Dict[str, Any]] = {
    "sgd": {"momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
    "rmsprop_tf": {"alpha": 0.9, "eps": 1e-10, "momentum": 0.0, "weight_decay": 0.0},
    "rmsprop": {"alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "weight_decay": 0.0},
    "adam": {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
    "adamw": {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2},
}


def slots_of(name: str, hyper: Mapping[str, Any]) -> Tuple[str, ...]:
    """The tensor slots an optimizer keeps per parameter (besides ``step``)."""
    if name == "sgd":
        return ("momentum",) if hyper.get("momentum", 0.0) != 0 else ()
    if name in ("rmsprop_tf", "rmsprop"):
        return ("square_avg", "momentum") if hyper.get("momentum", 0.0) > 0 else ("square_avg",)
    if name in ("adam", "adamw"):
        return ("exp_avg", "exp_avg_sq")
    raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(CLASS_NAMES)}")



def with_momentum(name: str, hyper: Mapping[str, Any], value: float) -> Dict[str, Any]:
    """``hyper`` with the momentum a momentum-cycling schedule sets (``one_cycle``): Adam/AdamW ``betas[0]``,
    SGD/RMSprop ``momentum`` (which must already be > 0: the momentum buffer exists from the first step)."""
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{CLASS_NAMES[name]}: a cycled momentum must be in [0, 1), got {value!r}")
    out = dict(hyper)
    if "betas" in out:
        out["betas"] = (value, out["betas"][1])
    elif out.get("momentum", 0.0) > 0:
        out["momentum"] = value
    else:
        raise ValueError(f"{CLASS_NAMES[name]}: the schedule cycles the momentum but the optimizer has none; set its "
                         "MOMENTUM > 0 or SCHED.CYCLE_MOMENTUM []")
    return out

# Initial value of a slot at a parameter's first step (SGD momentum is special: buf = g).
SLOT_INIT = {"square_avg": {"rmsprop_tf": 1.0, "rmsprop": 0.0}, "momentum": 0.0, "exp_avg": 0.0, "exp_avg_sq": 0.0}


def slot_init_value(optimizer: str, slot: str) -> float:
    value = SLOT_INIT[slot]
    return value[optimizer] if isinstance(value, dict) else value


UNUSED_GRADS = ("skip", "zero")


def check_hyper(name: str, hyper: Mapping[str, Any], unused_grads: str) -> Dict[str, Any]:
    """Validate and complete the hyper-parameters of optimizer ``name``; errors name the argument."""
    if name not in DEFAULTS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(DEFAULTS)}")
    if unused_grads not in UNUSED_GRADS:
        raise ValueError(f"{CLASS_NAMES[name]}: unused_grads = {unused_grads!r} is not one of {list(UNUSED_GRADS)}")
    out = dict(DEFAULTS[name])
    for key, value in hyper.items():
        if key not in out:
            raise TypeError(f"{CLASS_NAMES[name]}: unexpected argument {key!r} (accepted: {sorted(out)})")
        out[key] = value
    if "betas" in out:
        b1, b2 = (float(b) for b in out["betas"])
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"{CLASS_NAMES[name]}: betas = {out['betas']!r} must be in [0, 1)")
        out["betas"] = (b1, b2)
    for key in ("momentum", "weight_decay", "eps"):
        if key in out:
            out[key] = float(out[key])
            if out[key] < 0:
                raise ValueError(f"{CLASS_NAMES[name]}: {key} = {out[key]!r} must be >= 0")
    if "alpha" in out:
        out["alpha"] = float(out["alpha"])
        if not 0.0 <= out["alpha"] < 1.0:
            raise ValueError(f"{CLASS_NAMES[name]}: alpha = {out['alpha']!r} must be in [0, 1)")
    if name == "sgd":
        out["nesterov"] = bool(out["nesterov"])
        if out["nesterov"] and out["momentum"] <= 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
    return out


def is_no_decay(name: str, ndim: int) -> bool:
    """timm ``add_weight_decay`` rule: biases and every 1-D (or 0-D) parameter get no weight decay."""
    return ndim <= 1 or name.endswith(".bias") or name == "bias"


def split_decay(named: Sequence[Tuple[str, Any]], ndims: Sequence[int], weight_decay: float,
                no_decay_1d: bool = True, lr_scale: float = 1.0) -> List[Dict[str, Any]]:
    """Two groups (no-decay first, like timm) or one group when ``no_decay_1d`` is False / wd is 0."""
    if not no_decay_1d or weight_decay == 0:
        return [{"params": list(named), "weight_decay": float(weight_decay), "lr_scale": float(lr_scale)}]
    decay, no_decay = [], []
    for (name, p), ndim in zip(named, ndims):
        (no_decay if is_no_decay(name, ndim) else decay).append((name, p))
    groups = []
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lr_scale": float(lr_scale)})
    if decay:
        groups.append({"params": decay, "weight_decay": float(weight_decay), "lr_scale": float(lr_scale)})
    return groups


def normalize_groups(params: Any, default_wd: float, cls_name: str) -> List[Dict[str, Any]]:
    """Accept a list of groups (dicts) or a plain list of ``(name, param)``; fill ``lr_scale`` / ``weight_decay``."""
    params = list(params)
    if not params:
        raise ValueError(f"{cls_name}: no parameters to optimize")
    if not isinstance(params[0], dict):
        params = [{"params": params}]
    groups, seen = [], set()
    for gi, group in enumerate(params):
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{cls_name}: parameter group {gi} must be a dict with a 'params' list")
        unknown = set(group) - {"params", "lr_scale", "weight_decay", "name"}
        if unknown:
            raise TypeError(f"{cls_name}: parameter group {gi} has unknown keys {sorted(unknown)} "
                            "(groups take 'params', 'lr_scale', 'weight_decay', 'name'; lr_scale multiplies step(lr))")
        items = list(group["params"])
        for item in items:
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
                raise TypeError(f"{cls_name}: group {gi}: parameters must be (canonical_name, parameter) pairs, "
                                f"got {type(item).__name__}")
            if item[0] in seen:
                raise ValueError(f"{cls_name}: parameter {item[0]!r} appears in more than one group")
            seen.add(item[0])
        wd = float(group.get("weight_decay", default_wd))
        scale = float(group.get("lr_scale", 1.0))
        if wd < 0 or scale < 0:
            raise ValueError(f"{cls_name}: group {gi}: weight_decay {wd!r} and lr_scale {scale!r} must be >= 0")
        groups.append({"params": [(n, p) for n, p in items], "weight_decay": wd, "lr_scale": scale,
                       "name": str(group.get("name", f"group{gi}"))})
    return groups


# ------------------------------------------------------------------------------------------ config nodes
# An optimizer node (``OPTIM``, ``ARCH_OPTIM``, ... made by ``common.config.optimizer_node``) and what it holds.
OPTIMIZER_NODE_KEYS = ("NAME", "LR", "MOMENTUM", "NESTEROV", "WEIGHT_DECAY", "NO_DECAY_1D", "EPS", "ALPHA", "BETAS",
                       "GRAD_CLIP", "UNUSED_GRADS", "LR_GROUPS")
# Keys a node may lack (older nodes / hand-made mappings): their value when absent.
_OPTIONAL_NODE_KEYS: Dict[str, Any] = {"LR": None, "GRAD_CLIP": 0.0, "UNUSED_GRADS": "skip", "LR_GROUPS": ()}


@dataclass(frozen=True)
class LrRule:
    """One ``LR_GROUPS`` entry ``"regex=scale"``: parameters whose name ``regex`` finds train at ``scale`` x LR."""

    index: int      # position in LR_GROUPS
    text: str       # the rule as written
    regex: str
    scale: float

    def matches(self, name: str) -> bool:
        return re.search(self.regex, name) is not None


@dataclass(frozen=True)
class OptimizerSpec:
    """Everything one optimizer node says, read once, framework-free (``optimizer_spec``)."""

    node: str                      # dotted name of the node ("OPTIM", "ARCH_OPTIM")
    name: str                      # neutral optimizer name ("adam")
    cls_name: str                  # twin class name ("Adam")
    kwargs: Dict[str, Any]         # constructor keyword arguments (weight decay goes to the groups)
    weight_decay: float
    no_decay_1d: bool
    lr: Optional[float]            # the node's base LR (its schedule's); None when the node has no LR key
    grad_clip: float               # global-norm clip the loop applies before step (0 = off)
    unused_grads: str              # the node's UNUSED_GRADS
    lr_groups: Tuple[LrRule, ...]

    def key(self, leaf: str) -> str:
        return f"{self.node}.{leaf}"


def _config_error(message: str) -> Exception:
    from common.config import ConfigError

    return ConfigError(message)


def _find_node_name(cfg: Any, node: Any, prefix: str = "", depth: int = 2) -> Optional[str]:
    if depth == 0 or not isinstance(cfg, Mapping):
        return None
    for key, value in cfg.items():
        if value is node:
            return f"{prefix}{key}"
    for key, value in cfg.items():
        if isinstance(value, Mapping):
            found = _find_node_name(value, node, f"{prefix}{key}.", depth - 1)
            if found:
                return found
    return None


def optimizer_node_names(cfg: Any) -> List[str]:
    """Top-level nodes of ``cfg`` that look like optimizer nodes (they have NAME and WEIGHT_DECAY)."""
    return [str(k) for k, v in cfg.items() if isinstance(v, Mapping) and "NAME" in v and "WEIGHT_DECAY" in v]


def resolve_optimizer_node(cfg: Any, node: Any = "OPTIM") -> Tuple[str, Mapping]:
    """``(dotted name, node)`` for ``node`` given as a name ("OPTIM", "ARCH_OPTIM", "X.Y") or as a node object."""
    if isinstance(node, str):
        current: Any = cfg
        for part in node.split("."):
            if not isinstance(current, Mapping) or part not in current:
                raise _config_error(f"no config node {node!r} (optimizer nodes in this config: "
                                    f"{optimizer_node_names(cfg)})")
            current = current[part]
        if not isinstance(current, Mapping):
            raise _config_error(f"{node} = {current!r} is a value, not an optimizer node "
                                f"(optimizer nodes in this config: {optimizer_node_names(cfg)})")
        return node, current
    if isinstance(node, Mapping):
        return _find_node_name(cfg, node) or "<optimizer node>", node
    raise TypeError(f"node must be a config node name or a config node, got {type(node).__name__}")


def parse_lr_groups(rules: Any, key: str = "OPTIM.LR_GROUPS") -> Tuple[LrRule, ...]:
    """Parse ``LR_GROUPS`` (``"regex=scale"`` strings); a malformed rule or a bad regex is a ConfigError naming ``key``.

    The scale is what follows the LAST ``=`` (a regex may hold ``=``, a number never does)."""
    if isinstance(rules, str) or not isinstance(rules, (list, tuple)):
        raise _config_error(f"{key} = {rules!r} must be a list of \"regex=scale\" strings, "
                            f"e.g. [\"^classifier\\\\.=10\"]")
    parsed = []
    for i, rule in enumerate(rules):
        where = f"{key}[{i}] = {rule!r}"
        if not isinstance(rule, str):
            raise _config_error(f"{where} must be a \"regex=scale\" string (quote it in YAML), "
                                f"got {type(rule).__name__}")
        regex, sep, scale_text = rule.strip().rpartition("=")
        if not sep or not regex or not scale_text.strip():
            raise _config_error(f"{where} is not \"regex=scale\" (e.g. \"^classifier\\\\.=10\")")
        try:
            scale = float(scale_text)
        except ValueError:
            raise _config_error(f"{where}: the LR scale {scale_text.strip()!r} is not a number") from None
        if not np.isfinite(scale) or scale < 0:
            raise _config_error(f"{where}: the LR scale {scale!r} must be a finite number >= 0")
        try:
            re.compile(regex)
        except re.error as exc:
            raise _config_error(f"{where}: {regex!r} is not a valid regular expression ({exc})") from None
        parsed.append(LrRule(index=i, text=rule, regex=regex, scale=scale))
    return tuple(parsed)


def assign_lr_groups(names: Sequence[str], rules: Sequence[LrRule], key: str = "OPTIM.LR_GROUPS"
                     ) -> List[Optional[LrRule]]:
    """The rule each parameter name falls under (the first that matches; None = the node's LR).

    Every rule must get at least one parameter: a rule that matches nothing, or only parameters an earlier rule
    already took, is an error naming ``key`` and the rule."""
    out: List[Optional[LrRule]] = [next((r for r in rules if r.matches(n)), None) for n in names]
    for rule in rules:
        if any(r is rule for r in out):
            continue
        shadowed = sorted({out[j].text for j, n in enumerate(names) if rule.matches(n)})  # type: ignore[union-attr]
        if shadowed:
            raise _config_error(f"{key}[{rule.index}] = {rule.text!r} gets no parameter: every parameter it matches "
                                f"is taken by an earlier rule ({shadowed}; the first matching rule wins)")
        sample = list(names[:8]) + (["..."] if len(names) > 8 else [])
        raise _config_error(f"{key}[{rule.index}] = {rule.text!r} matches no trainable parameter "
                            f"(re.search on canonical names such as {sample})")
    return out


def build_param_groups(named: Sequence[Tuple[str, Any]], ndims: Sequence[int], weight_decay: float,
                       no_decay_1d: bool = True, lr_groups: Any = (), key: str = "OPTIM.LR_GROUPS"
                       ) -> List[Dict[str, Any]]:
    """Parameter groups by rule, on names and ranks only (both backends call this).

    * Without ``lr_groups``: exactly ``split_decay`` (no-decay group first, then the decay group).
    * With ``lr_groups`` (``"regex=scale"`` strings or parsed ``LrRule``): the parameters no rule takes form the
      groups ``default`` / ``default_no_decay`` at scale 1, then each rule in order its own ``LR_GROUPS[i]`` /
      ``LR_GROUPS[i]_no_decay`` groups at its scale; weight decay follows ``weight_decay`` / ``no_decay_1d`` in every
      group.  Empty groups are left out; order inside a group is the order of ``named``.
    """
    named, ndims = list(named), list(ndims)
    if len(named) != len(ndims):
        raise ValueError(f"build_param_groups: {len(named)} parameters but {len(ndims)} ranks")
    lr_groups = () if lr_groups is None else lr_groups
    rules = tuple(lr_groups) if all(isinstance(r, LrRule) for r in lr_groups) else parse_lr_groups(lr_groups, key)
    if not rules:
        return split_decay(named, ndims, weight_decay, no_decay_1d)
    owner = assign_lr_groups([n for n, _ in named], rules, key)
    groups: List[Dict[str, Any]] = []
    for label, rule in [("default", None)] + [(f"LR_GROUPS[{r.index}]", r) for r in rules]:
        members = [i for i, o in enumerate(owner) if o is rule]
        scale = 1.0 if rule is None else rule.scale
        for group in split_decay([named[i] for i in members], [ndims[i] for i in members], weight_decay,
                                 no_decay_1d, lr_scale=scale):
            if group["params"]:
                no_decay = group["weight_decay"] == 0.0 and weight_decay != 0 and no_decay_1d
                groups.append(dict(group, name=f"{label}_no_decay" if no_decay else label))
    return groups


def optimizer_spec(cfg: Any, node: Any = "OPTIM") -> OptimizerSpec:
    """Read the optimizer node ``node`` (a name such as "OPTIM" / "ARCH_OPTIM", or the node itself) of ``cfg``.

    Errors are ConfigErrors naming ``<NODE>.<KEY>``."""
    node_name, o = resolve_optimizer_node(cfg, node)

    def get(leaf: str) -> Any:
        if leaf in o:
            return o[leaf]
        if leaf in _OPTIONAL_NODE_KEYS:
            return _OPTIONAL_NODE_KEYS[leaf]
        raise _config_error(f"{node_name}.{leaf} is missing: {node_name} is not an optimizer node "
                            f"(an optimizer node has the keys {list(OPTIMIZER_NODE_KEYS)})")

    name = str(get("NAME"))
    if name == "sgd":
        kw: Dict[str, Any] = {"momentum": float(get("MOMENTUM")), "nesterov": bool(get("NESTEROV"))}
    elif name in ("rmsprop_tf", "rmsprop"):
        kw = {"alpha": float(get("ALPHA")), "eps": float(get("EPS")), "momentum": float(get("MOMENTUM"))}
    elif name in ("adam", "adamw"):
        kw = {"betas": tuple(float(b) for b in get("BETAS")), "eps": float(get("EPS"))}
    else:
        raise _config_error(f"{node_name}.NAME = {name!r} is not one of {sorted(CLASS_NAMES)}")
    unused = str(get("UNUSED_GRADS"))
    if unused not in UNUSED_GRADS:
        raise _config_error(f"{node_name}.UNUSED_GRADS = {unused!r} is not one of {list(UNUSED_GRADS)}")
    lr = get("LR")
    return OptimizerSpec(
        node=node_name, name=name, cls_name=CLASS_NAMES[name], kwargs=kw,
        weight_decay=float(get("WEIGHT_DECAY")), no_decay_1d=bool(get("NO_DECAY_1D")),
        lr=None if lr is None else float(lr), grad_clip=float(get("GRAD_CLIP")), unused_grads=unused,
        lr_groups=parse_lr_groups(get("LR_GROUPS"), f"{node_name}.LR_GROUPS"))


def optimizer_args_from_config(cfg: Any, node: Any = "OPTIM") -> Tuple[str, Dict[str, Any]]:
    """``(class name, keyword arguments)`` of the optimizer the node describes (weight decay goes to groups)."""
    spec = optimizer_spec(cfg, node)
    return spec.cls_name, dict(spec.kwargs)


def reference_optimizer_from_config(cfg: Any, named: Sequence[Tuple[str, np.ndarray]], node: Any = "OPTIM",
                                    unused_grads: Optional[str] = None) -> "ReferenceOptimizer":
    """The numpy twin of the backends' ``build_optimizer``: same node, same groups, same hyper-parameters."""
    spec = optimizer_spec(cfg, node)
    named = list(named)
    groups = build_param_groups(named, [np.ndim(p) for _, p in named], spec.weight_decay, spec.no_decay_1d,
                                spec.lr_groups, spec.key("LR_GROUPS"))
    return ReferenceOptimizer(spec.name, groups, unused_grads=unused_grads or spec.unused_grads, **spec.kwargs)


# ------------------------------------------------------------------------------------------ neutral state
# Checks both backends run when they load an OptimizerState; names are canonical (torch-layout) names.
def hyper_record(hyper: Mapping[str, Any], unused_grads: str, groups: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """JSON-able record of the hyper-parameters and groups (``groups[i]['params']`` as canonical names)."""
    rec: Dict[str, Any] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in hyper.items()}
    rec["unused_grads"] = unused_grads
    rec["groups"] = [{"name": g["name"], "lr_scale": g["lr_scale"], "weight_decay": g["weight_decay"],
                      "params": list(g["params"])} for g in groups]
    return rec


def check_state_header(cls_name: str, opt_name: str, slot_names: Iterable[str], known: Iterable[str],
                       state: Any, source: str) -> None:
    """The state is for this optimizer, has only its slots, and names only parameters it optimizes."""
    from common.checkpoint import CheckpointError

    if state.name != opt_name:
        raise CheckpointError(f"{source}: optimizer state is for {state.name!r}, this optimizer is {opt_name!r} "
                              f"({cls_name})")
    allowed = set(slot_names) | {"step"}
    known = set(known)
    for slot, per_param in state.slots.items():
        if slot not in allowed:
            raise CheckpointError(f"{source}: {cls_name} has no state slot {slot!r} (slots: {sorted(allowed)})")
        unknown = sorted(set(per_param) - known)
        if unknown:
            raise CheckpointError(f"{source}: optimizer slot {slot!r} names parameters this {cls_name} does not "
                                  f"optimize: {unknown[:10]}{' ...' if len(unknown) > 10 else ''}")


def step_count(cls_name: str, source: str, name: str, array: Any) -> int:
    """A per-parameter step count: 0-d int64 in memory; ``save_checkpoint`` stores it with shape [1]."""
    from common.checkpoint import CheckpointError

    arr = np.asarray(array)
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise CheckpointError(f"{source}: optimizer slot 'step' of {name!r} must be one integer, "
                              f"got {arr.dtype} {list(arr.shape)} ({cls_name})")
    return int(arr.reshape(-1)[0])


def check_slot_shape(cls_name: str, source: str, slot: str, name: str, want: Sequence[int], got: Sequence[int]) -> None:
    from common.checkpoint import CheckpointError

    if tuple(want) != tuple(got):
        raise CheckpointError(f"{source}: optimizer slot {slot!r} of {name!r} has shape {list(got)}, "
                              f"the parameter is {list(want)} (torch layout; {cls_name})")


def check_state_complete(cls_name: str, source: str, slot_names: Iterable[str],
                         slots_of_param: Mapping[str, Iterable[str]], stepped: Iterable[str]) -> None:
    """Every parameter with state has a step count and exactly the optimizer's slots."""
    from common.checkpoint import CheckpointError

    want, stepped = set(slot_names), set(stepped)
    for name in sorted(set(slots_of_param) | stepped):
        if name not in stepped:
            raise CheckpointError(f"{source}: optimizer state of {name!r} has no 'step' slot")
        have = set(slots_of_param.get(name, ()))
        if have != want:
            raise CheckpointError(f"{source}: optimizer state of {name!r} has slots {sorted(have)}, "
                                  f"{cls_name} keeps {sorted(want)}")


# ------------------------------------------------------------------------------------------ reference
def clip_grad_norm_ref(grads: Mapping[str, Optional[np.ndarray]], max_norm: float) -> Tuple[Dict[str, Any], float]:
    """torch ``clip_grad_norm_`` in float64: returns (clipped grads, total norm before clipping)."""
    present = {k: np.asarray(g, np.float64) for k, g in grads.items() if g is not None}
    norms = np.array([np.sqrt(np.sum(g * g)) for g in present.values()], dtype=np.float64)
    total = float(np.sqrt(np.sum(norms * norms))) if norms.size else 0.0
    coef = min(max_norm / (total + 1e-6), 1.0)
    out: Dict[str, Any] = dict(grads)
    for k, g in present.items():
        out[k] = g * coef
    return out, total


class ReferenceOptimizer:
    """The twin optimizers' formulas on numpy arrays (float64 unless the arrays say otherwise).

    ``params`` are groups like the backends' (``{'params': [(name, array)], 'lr_scale', 'weight_decay'}``) or a
    list of ``(name, array)``; the arrays are updated in place.  ``step(lr, grads)`` takes ``{name: grad or None}``.
    """

    def __init__(self, name: str, params: Any, unused_grads: str = "skip", **hyper: Any):
        self.name = name
        self.hyper = check_hyper(name, hyper, unused_grads)
        self.unused_grads = unused_grads
        self.groups = normalize_groups(params, self.hyper["weight_decay"], CLASS_NAMES[name])
        self.state: Dict[str, Dict[str, Any]] = {}
        self.step_count = 0

    def params(self) -> Dict[str, np.ndarray]:
        return {n: p for g in self.groups for n, p in g["params"]}

    def step(self, lr: float, grads: Mapping[str, Optional[np.ndarray]]) -> None:
        for group in self.groups:
            glr = lr * group["lr_scale"]
            wd = group["weight_decay"]
            for pname, p in group["params"]:
                g = grads.get(pname)
                if g is None:
                    if self.unused_grads == "skip":
                        continue
                    g = np.zeros_like(p)
                new = self._update(pname, p, np.asarray(g, dtype=p.dtype), glr, wd)
                p[...] = new
        self.step_count += 1

    def _update(self, pname: str, p: np.ndarray, g: np.ndarray, lr: float, wd: float) -> np.ndarray:
        h = self.hyper
        st = self.state.setdefault(pname, {"step": 0})
        st["step"] += 1
        dt = p.dtype.type
        if self.name == "adamw":
            p = p * dt(1.0 - lr * wd)
        elif wd != 0:
            g = g + dt(wd) * p
        if self.name == "sgd":
            mu = h["momentum"]
            if mu == 0:
                return p - dt(lr) * g
            if "momentum" not in st:
                st["momentum"] = g.copy()
            else:
                st["momentum"] = dt(mu) * st["momentum"] + g
            buf = st["momentum"]
            d = g + dt(mu) * buf if h["nesterov"] else buf
            return p - dt(lr) * d
        if self.name in ("rmsprop_tf", "rmsprop"):
            alpha, eps, mu = h["alpha"], h["eps"], h["momentum"]
            if "square_avg" not in st:
                st["square_avg"] = np.full_like(p, slot_init_value(self.name, "square_avg"))
                if mu > 0:
                    st["momentum"] = np.zeros_like(p)
            sq = dt(alpha) * st["square_avg"] + dt(1.0 - alpha) * (g * g)
            st["square_avg"] = sq
            if self.name == "rmsprop_tf":
                avg = np.sqrt(sq + dt(eps))
                if mu > 0:
                    st["momentum"] = dt(mu) * st["momentum"] + dt(lr) * (g / avg)
                    return p - st["momentum"]
                return p - dt(lr) * (g / avg)
            avg = np.sqrt(sq) + dt(eps)
            if mu > 0:
                st["momentum"] = dt(mu) * st["momentum"] + g / avg
                return p - dt(lr) * st["momentum"]
            return p - dt(lr) * (g / avg)
        # adam / adamw
        b1, b2 = h["betas"]
        eps = h["eps"]
        if "exp_avg" not in st:
            st["exp_avg"] = np.zeros_like(p)
            st["exp_avg_sq"] = np.zeros_like(p)
        t = st["step"]
        st["exp_avg"] = dt(b1) * st["exp_avg"] + dt(1.0 - b1) * g
        st["exp_avg_sq"] = dt(b2) * st["exp_avg_sq"] + dt(1.0 - b2) * (g * g)
        bc1 = 1.0 - b1 ** t
        bc2_sqrt = (1.0 - b2 ** t) ** 0.5
        denom = np.sqrt(st["exp_avg_sq"]) / dt(bc2_sqrt) + dt(eps)
        return p - dt(lr / bc1) * (st["exp_avg"] / denom)

    def slots(self) -> Dict[str, Dict[str, np.ndarray]]:
        """``{slot: {param name: array}}`` in the neutral form (``step`` as 0-d int64)."""
        out: Dict[str, Dict[str, np.ndarray]] = {}
        for pname, st in self.state.items():
            for slot, value in st.items():
                arr = np.asarray(value, dtype=np.int64) if slot == "step" else np.asarray(value)
                out.setdefault(slot, {})[pname] = arr
        return out


def ema_update_ref(ema: Dict[str, np.ndarray], values: Mapping[str, np.ndarray], decay: float) -> None:
    """timm ``ModelEma``: ``ema = decay*ema + (1-decay)*value`` (floating entries; others are copied)."""
    for k, e in ema.items():
        v = np.asarray(values[k])
        if np.issubdtype(e.dtype, np.floating):
            e[...] = e.dtype.type(decay) * e + e.dtype.type(1.0 - decay) * v
        else:
            e[...] = v


# ------------------------------------------------------------------------------------------ losses
def log_softmax_ref(x: np.ndarray, axis: int = 1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def cross_entropy_ref(logits: np.ndarray, target: np.ndarray, label_smoothing: float = 0.0) -> float:
    """timm ``LabelSmoothingCrossEntropy``: mean over samples of (1-s)*nll + s*mean_c(-log p_c); class axis 1."""
    logp = log_softmax_ref(logits, axis=1)
    t = np.expand_dims(np.asarray(target, dtype=np.int64), 1)
    nll = -np.take_along_axis(logp, t, axis=1).squeeze(1)
    smooth = -logp.mean(axis=1)
    return float(np.mean((1.0 - label_smoothing) * nll + label_smoothing * smooth))


def soft_target_cross_entropy_ref(logits: np.ndarray, target_probs: np.ndarray) -> float:
    """mean over samples of sum_c -t_c * log p_c (class axis 1)."""
    return float(np.mean(np.sum(-np.asarray(target_probs, np.float64) * log_softmax_ref(logits, axis=1), axis=1)))


def accuracy_topk_ref(logits: np.ndarray, target: np.ndarray, ks: Iterable[int] = (1, 5)) -> List[float]:
    """Percent of samples whose target has fewer than k strictly larger logits (ties count as hits)."""
    logits = np.asarray(logits)
    t = np.asarray(target, dtype=np.int64)
    tl = np.take_along_axis(logits, t[:, None], axis=1)
    greater = np.sum(logits > tl, axis=1)
    return [float(np.mean(greater < k) * 100.0) for k in ks]
