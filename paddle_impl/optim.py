"""Paddle twins of the TwinNAS optimizers and model EMA (formulas: ``common/optim_reference.py``).

Same classes, arguments and state as ``torch_impl/optim.py``::

    groups = param_groups(layout.trainable_named_parameters(model), weight_decay=1e-5)
    opt = RMSpropTF(groups, alpha=0.9, eps=1e-3, momentum=0.9, model=model)
    for each update:
        opt.zero_grad(); loss.backward()
        opt.clip_grad_norm(10.0)          # optional, explicitly before step (before weight decay)
        opt.step(schedule.lr_for(epoch, i, n))
    opt.state_to_neutral() -> common.checkpoint.OptimizerState;  opt.load_neutral(state)

Paddle specifics handled here so the two backends behave identically:
  * ``zero_grad`` drops gradients (``clear_gradient(set_to_zero=False)``): a parameter the next backward does not
    reach has no gradient and is skipped by ``step`` (``unused_grads='skip'``), like torch.  Paddle's own
    ``clear_grad()`` default would leave zeros, i.e. ``unused_grads='zero'`` behaviour (anchors.md §3.3 row 14).
  * group LRs are ``lr_scale`` multipliers of ``step(lr)`` in both backends (row 13).
  * state is kept in paddle layout; ``state_to_neutral`` / ``load_neutral`` transpose the slots of
    ``paddle.nn.Linear`` weights (``[in, out]``) to torch layout.  Pass ``model=`` so the optimizer knows which
    parameters those are (``paddle_impl.layout.neutral_name_table``).
Updates run under ``paddle.no_grad`` as in-place tensor ops with Python-float hyper-parameters and Python-int step
counts: no host synchronisation per step.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import paddle

from common import distributed
from common import optim_reference as ref
from common.checkpoint import OptimizerState
from paddle_impl import layout

__all__ = ["SGD", "RMSpropTF", "RMSprop", "Adam", "AdamW", "ModelEma", "param_groups", "build_optimizer",
           "clip_grad_norm"]


def _is_trainable(p) -> bool:
    return not p.stop_gradient and getattr(p, "trainable", True)


def param_groups(named_params: Iterable[Tuple[str, paddle.Tensor]], weight_decay: float, no_decay_1d: bool = True,
                 lr_scale: float = 1.0, lr_groups: Sequence[str] = (), key: str = "OPTIM.LR_GROUPS"
                 ) -> List[Dict[str, Any]]:
    """Split ``(name, parameter)`` pairs into a no-decay group (biases, 1-D params) and a decay group.

    With ``lr_groups`` (``"regex=scale"`` rules, as in a node's ``LR_GROUPS``; ``key`` names them in errors) the
    groups are ``common.optim_reference.build_param_groups``'s.

    Parameters that do not train (paddle lists BN statistics as parameters) are dropped."""
    named = [(n, p) for n, p in named_params if _is_trainable(p)]
    if lr_groups:  # scales come from the rules (x lr_scale of the rest is not defined)
        if lr_scale != 1.0:
            raise ValueError("param_groups: give lr_scale or lr_groups, not both")
        return ref.build_param_groups(named, [len(p.shape) for _, p in named], weight_decay, no_decay_1d,
                                      lr_groups, key)
    return ref.split_decay(named, [len(p.shape) for _, p in named], weight_decay, no_decay_1d, lr_scale)


def clip_grad_norm(grads: Sequence[Optional[paddle.Tensor]], max_norm: float) -> paddle.Tensor:
    """Scale ``grads`` in place by ``min(max_norm / (total + 1e-6), 1)``; returns the total norm (a tensor)."""
    grads = [g for g in grads if g is not None]
    if not grads:
        return paddle.zeros([])
    with paddle.no_grad():
        norms = [paddle.sqrt(paddle.sum(g * g)) for g in grads]
        stacked = paddle.stack([n.astype(grads[0].dtype) for n in norms])
        total = paddle.sqrt(paddle.sum(stacked * stacked))
        coef = paddle.clip(float(max_norm) / (total + 1e-6), max=1.0)
        for g in grads:
            g.multiply_(coef)
    return total


class _TwinOptimizer:
    NAME = ""

    def __init__(self, params: Any, unused_grads: str = "skip", model: Optional[paddle.nn.Layer] = None,
                 **hyper: Any):
        cls = type(self).__name__
        self.hyper = ref.check_hyper(self.NAME, hyper, unused_grads)
        self.unused_grads = unused_grads
        self.param_groups = ref.normalize_groups(params, self.hyper["weight_decay"], cls)
        for group in self.param_groups:
            for name, p in group["params"]:
                if not isinstance(p, paddle.Tensor):
                    raise TypeError(f"{cls}: parameter {name!r} is a {type(p).__name__}, not a paddle tensor")
        self._params: Dict[str, paddle.Tensor] = {n: p for g in self.param_groups for n, p in g["params"]}
        # structured name -> (neutral name, transpose to torch layout?)
        table = layout.neutral_name_table(model) if model is not None else {}
        self._neutral: Dict[str, Tuple[str, bool]] = {n: table.get(n, (n, False)) for n in self._params}
        if model is None:
            suspicious = [n for n, p in self._params.items() if len(p.shape) == 2 and str(p.name).startswith("linear_")]
            if suspicious:
                raise ValueError(f"{cls}: parameters {suspicious[:5]} look like paddle.nn.Linear weights ([in, out]); "
                                 "pass model= so their optimizer state converts to the neutral [out, in] layout")
        self._from_neutral = {neutral: name for name, (neutral, _) in self._neutral.items()}
        self.slot_names = ref.slots_of(self.NAME, self.hyper)
        self.state: Dict[str, Dict[str, paddle.Tensor]] = {}
        self.param_steps: Dict[str, int] = {}
        self.step_count = 0
        # set by build_optimizer: the config node it was built from, its LR and GRAD_CLIP
        self.node_name: Optional[str] = None
        self.base_lr: Optional[float] = None
        self.grad_clip = 0.0
        self._averaged = False  # the present gradients were averaged over the ranks for the coming step

    # ------------------------------------------------------------------ public API
    def set_momentum(self, value: float) -> None:
        """The momentum of the coming updates (a momentum-cycling schedule): Adam beta1, SGD / RMSprop momentum."""
        self.hyper = ref.with_momentum(self.NAME, self.hyper, value)

    def zero_grad(self) -> None:
        """Drop every gradient (torch ``set_to_none``): a parameter the next backward does not reach has none."""
        for p in self._params.values():
            p.clear_gradient(False)
        self._averaged = False

    def average_grads(self) -> None:
        """In a multi-process run: the present gradients become their mean over the ranks (once per step, before
        clipping; ``common/distributed.py``).  Every rank holds gradients for the same parameters."""
        group = distributed.current()
        if group is None or self._averaged:
            return
        group.average_([p.grad for p in self._params.values() if p.grad is not None])
        self._averaged = True

    def clip_grad_norm(self, max_norm: float) -> paddle.Tensor:
        """Global-norm clip of the present gradients (torch formula); returns the total norm before clipping."""
        self.average_grads()
        return clip_grad_norm([p.grad for p in self._params.values()], max_norm)

    def step(self, lr: float) -> None:
        lr = float(lr)
        self.average_grads()
        self._averaged = False
        with paddle.no_grad():
            for group in self.param_groups:
                names, params, grads = [], [], []
                for name, p in group["params"]:
                    g = p.grad
                    if g is None:
                        if self.unused_grads == "skip" or not _is_trainable(p):  # frozen parameters never move
                            continue
                        g = paddle.zeros_like(p)
                    names.append(name)
                    params.append(p)
                    grads.append(g)
                if not names:
                    continue
                for name in names:
                    self.param_steps[name] = self.param_steps.get(name, 0) + 1
                lr_g, wd = lr * group["lr_scale"], group["weight_decay"]
                for name, p, g in zip(names, params, grads):
                    self._update(name, p, g, lr_g, wd)
        self.step_count += 1

    # ------------------------------------------------------------------ state
    def state_to_neutral(self) -> OptimizerState:
        slots: Dict[str, Dict[str, np.ndarray]] = {}
        for name, st in self.state.items():
            neutral, transpose = self._neutral[name]
            for slot, t in st.items():
                array = np.array(t.numpy(), copy=True)
                slots.setdefault(slot, {})[neutral] = np.ascontiguousarray(array.T) if transpose else array
        for name, count in self.param_steps.items():
            slots.setdefault("step", {})[self._neutral[name][0]] = np.asarray(count, dtype=np.int64)
        groups = [dict(g, params=[self._neutral[n][0] for n, _ in g["params"]]) for g in self.param_groups]
        hyper = ref.hyper_record(self.hyper, self.unused_grads, groups)
        return OptimizerState(name=self.NAME, step=self.step_count, slots=slots, hyper=hyper)

    def load_neutral(self, state: OptimizerState, source: str = "<memory>") -> None:
        """Load slots (torch layout) saved by either backend; every name and shape is checked."""
        cls = type(self).__name__
        ref.check_state_header(cls, self.NAME, self.slot_names, self._from_neutral, state, source)
        new_state: Dict[str, Dict[str, paddle.Tensor]] = {}
        steps: Dict[str, int] = {}
        for slot, per_param in state.slots.items():
            for neutral, array in per_param.items():
                name = self._from_neutral[neutral]
                if slot == "step":
                    steps[name] = ref.step_count(cls, source, neutral, array)
                    continue
                p = self._params[name]
                transpose = self._neutral[name][1]
                want = tuple(p.shape)[::-1] if transpose else tuple(p.shape)
                ref.check_slot_shape(cls, source, slot, neutral, want, np.shape(array))
                array = np.asarray(array)
                array = array.T if transpose else array
                dtype = str(p.dtype).replace("paddle.", "")
                t = paddle.to_tensor(np.ascontiguousarray(array).astype(dtype), place=p.place)
                t.stop_gradient = True
                new_state.setdefault(name, {})[slot] = t
        ref.check_state_complete(cls, source, self.slot_names,
                                 {self._neutral[n][0]: set(st) for n, st in new_state.items()},
                                 [self._neutral[n][0] for n in steps])
        self.state = new_state
        self.param_steps = steps
        self.step_count = int(state.step)

    # ------------------------------------------------------------------ formulas
    def _slot(self, name: str, slot: str, like: paddle.Tensor, fill: float) -> paddle.Tensor:
        st = self.state.setdefault(name, {})
        if slot not in st:
            t = paddle.full_like(like, fill)
            t.stop_gradient = True
            st[slot] = t
        return st[slot]

    def _update(self, name, p, g, lr, wd):  # every optimizer class defines its formula
        raise TypeError(f"{type(self).__name__} does not define an update formula")


class SGD(_TwinOptimizer):
    """torch SGD (dampening 0): g += wd*p; buf = g (first step) or mu*buf + g; p -= lr*(g + mu*buf | buf)."""

    NAME = "sgd"

    def __init__(self, params: Any, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 unused_grads: str = "skip", model: Any = None):
        super().__init__(params, unused_grads=unused_grads, model=model, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay)

    def _update(self, name, p, g, lr, wd):
        mu, nesterov = self.hyper["momentum"], self.hyper["nesterov"]
        if wd != 0:
            g = g + p * wd
        if mu == 0:
            p.subtract_(g * lr)
            return
        st = self.state.setdefault(name, {})
        if "momentum" not in st:
            buf = g.clone()
            buf.stop_gradient = True
            st["momentum"] = buf
        else:
            buf = st["momentum"]
            buf.scale_(mu)
            buf.add_(g)
        direction = g + buf * mu if nesterov else buf
        p.subtract_(direction * lr)


class RMSpropTF(_TwinOptimizer):
    """TF / timm RMSprop: square_avg starts at 1, eps inside the sqrt, the LR inside the momentum buffer."""

    NAME = "rmsprop_tf"

    def __init__(self, params: Any, alpha: float = 0.9, eps: float = 1e-10, momentum: float = 0.0,
                 weight_decay: float = 0.0, unused_grads: str = "skip", model: Any = None):
        super().__init__(params, unused_grads=unused_grads, model=model, alpha=alpha, eps=eps, momentum=momentum,
                         weight_decay=weight_decay)

    def _update(self, name, p, g, lr, wd):
        _rmsprop_update(self, name, p, g, lr, wd, tf_form=True)


class RMSprop(_TwinOptimizer):
    """torch RMSprop (not centred): square_avg starts at 0, eps outside the sqrt, the LR outside the buffer."""

    NAME = "rmsprop"

    def __init__(self, params: Any, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
                 weight_decay: float = 0.0, unused_grads: str = "skip", model: Any = None):
        super().__init__(params, unused_grads=unused_grads, model=model, alpha=alpha, eps=eps, momentum=momentum,
                         weight_decay=weight_decay)

    def _update(self, name, p, g, lr, wd):
        _rmsprop_update(self, name, p, g, lr, wd, tf_form=False)


def _rmsprop_update(opt: _TwinOptimizer, name, p, g, lr, wd, tf_form: bool) -> None:
    alpha, eps, mu = opt.hyper["alpha"], opt.hyper["eps"], opt.hyper["momentum"]
    if wd != 0:
        g = g + p * wd
    sq = opt._slot(name, "square_avg", p, ref.slot_init_value(opt.NAME, "square_avg"))
    g2 = g * g
    g2.scale_(1.0 - alpha)
    sq.scale_(alpha)
    sq.add_(g2)
    if tf_form:
        avg = paddle.sqrt(sq + eps)
    else:
        avg = paddle.sqrt(sq) + eps
    ratio = g / avg
    if mu > 0:
        buf = opt._slot(name, "momentum", p, 0.0)
        buf.scale_(mu)
        if tf_form:  # buf = mu*buf + lr*(g/avg); p -= buf
            ratio.scale_(lr)
            buf.add_(ratio)
            p.subtract_(buf)
        else:  # buf = mu*buf + g/avg; p -= lr*buf
            buf.add_(ratio)
            p.subtract_(buf * lr)
    else:
        ratio.scale_(lr)
        p.subtract_(ratio)


class Adam(_TwinOptimizer):
    """torch Adam: coupled L2 (g += wd*p), eps added to sqrt(v)/sqrt(1-b2^t), per-parameter step counts."""

    NAME = "adam"

    def __init__(self, params: Any, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, unused_grads: str = "skip", model: Any = None):
        super().__init__(params, unused_grads=unused_grads, model=model, betas=betas, eps=eps,
                         weight_decay=weight_decay)

    def _update(self, name, p, g, lr, wd):
        _adam_update(self, name, p, g, lr, wd, decoupled=False)


class AdamW(_TwinOptimizer):
    """torch AdamW: p *= 1 - lr*wd, then Adam without L2."""

    NAME = "adamw"

    def __init__(self, params: Any, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, unused_grads: str = "skip", model: Any = None):
        super().__init__(params, unused_grads=unused_grads, model=model, betas=betas, eps=eps,
                         weight_decay=weight_decay)

    def _update(self, name, p, g, lr, wd):
        _adam_update(self, name, p, g, lr, wd, decoupled=True)


def _adam_update(opt: _TwinOptimizer, name, p, g, lr, wd, decoupled: bool) -> None:
    b1, b2 = opt.hyper["betas"]
    eps = opt.hyper["eps"]
    if decoupled:
        if wd != 0:
            p.scale_(1.0 - lr * wd)
    elif wd != 0:
        g = g + p * wd
    m = opt._slot(name, "exp_avg", p, 0.0)
    v = opt._slot(name, "exp_avg_sq", p, 0.0)
    t = opt.param_steps[name]
    m.scale_(b1)
    m.add_(g * (1.0 - b1))
    g2 = g * g
    g2.scale_(1.0 - b2)
    v.scale_(b2)
    v.add_(g2)
    denom = paddle.sqrt(v) / ((1.0 - b2 ** t) ** 0.5) + eps
    update = m / denom
    update.scale_(lr / (1.0 - b1 ** t))
    p.subtract_(update)


# ------------------------------------------------------------------------------ EMA
class ModelEma:
    """timm ``ModelEma``: a separate copy of the model, ``ema = decay*ema + (1-decay)*value`` over every floating
    state entry (parameters and BN running statistics); other entries are copied.  ``module`` is the EMA model."""

    def __init__(self, model: paddle.nn.Layer, decay: float = 0.9999):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ModelEma: decay = {decay!r} must be in [0, 1]")
        self.decay = float(decay)
        self.module = copy.deepcopy(model)
        self.module.eval()
        for p in self.module.parameters():
            p.clear_gradient(False)
            p.stop_gradient = True
        self._keys = list(self.module.state_dict().keys())

    def update(self, model: paddle.nn.Layer) -> None:
        own = self.module.state_dict()
        other = model.state_dict()
        with paddle.no_grad():
            for key in self._keys:
                e, v = own[key], other[key]
                if e.is_floating_point():
                    e.scale_(self.decay)
                    e.add_(v * (1.0 - self.decay))
                else:
                    paddle.assign(v, e)

    def state_to_neutral(self) -> Dict[str, np.ndarray]:
        return layout.state_to_neutral(self.module)

    def load_neutral(self, tensors: Mapping[str, np.ndarray], source: str = "<memory>") -> None:
        layout.load_neutral(self.module, tensors, source)


def build_optimizer(cfg: Any, named_params: Iterable[Tuple[str, Any]], model: Any = None,
                    unused_grads: Optional[str] = None, node: Any = "OPTIM") -> _TwinOptimizer:
    """The optimizer the config node ``node`` describes ("OPTIM", "ARCH_OPTIM", ... or the node object itself).

    Every option comes from that node: NAME and its hyper-parameters (MOMENTUM, NESTEROV, EPS, ALPHA, BETAS), the
    groups (``WEIGHT_DECAY`` / ``NO_DECAY_1D`` / ``LR_GROUPS``, decided by
    ``common.optim_reference.build_param_groups``); ``LR`` and ``GRAD_CLIP`` are recorded on the optimizer as
    ``base_lr`` / ``grad_clip`` for the loop that drives it (``node_name`` says which node built it).  ``unused_grads``
    overrides the node's ``UNUSED_GRADS`` when given.
    """
    spec = ref.optimizer_spec(cfg, node)
    named = [(n, p) for n, p in named_params if _is_trainable(p)]
    groups = ref.build_param_groups(named, [len(p.shape) for _, p in named], spec.weight_decay, spec.no_decay_1d,
                                    spec.lr_groups, spec.key("LR_GROUPS"))
    opt = globals()[spec.cls_name](groups, unused_grads=unused_grads or spec.unused_grads, model=model,
                                   **spec.kwargs)
    opt.node_name, opt.base_lr, opt.grad_clip = spec.node, spec.lr, spec.grad_clip
    return opt
