"""PyTorch twins of the TwinNAS optimizers and model EMA (formulas: ``common/optim_reference.py``).

Same classes, arguments and state as ``paddle_impl/optim.py``::

    groups = param_groups(model.named_parameters(), weight_decay=1e-5)      # timm add_weight_decay split
    opt = RMSpropTF(groups, alpha=0.9, eps=1e-3, momentum=0.9)               # unused_grads='skip' | 'zero'
    for each update:
        opt.zero_grad(); loss.backward()
        opt.clip_grad_norm(10.0)          # optional, explicitly before step (before weight decay)
        opt.step(schedule.lr_for(epoch, i, n))
    opt.state_to_neutral() -> common.checkpoint.OptimizerState;  opt.load_neutral(state)

A parameter group is ``{'params': [(canonical_name, parameter)], 'lr_scale': 1.0, 'weight_decay': wd}``; its LR is
``lr_scale`` times the LR given to ``step`` (a multiplier, so one schedule drives every group).  The updates run
under ``torch.no_grad`` with ``torch._foreach_*`` kernels, Python-float hyper-parameters and Python-int step counts:
no host synchronisation per step.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from common import distributed
from common import optim_reference as ref
from common.checkpoint import OptimizerState
from torch_impl import layout

__all__ = ["SGD", "RMSpropTF", "RMSprop", "Adam", "AdamW", "ModelEma", "param_groups", "build_optimizer",
           "clip_grad_norm"]


def param_groups(named_params: Iterable[Tuple[str, torch.Tensor]], weight_decay: float, no_decay_1d: bool = True,
                 lr_scale: float = 1.0, lr_groups: Sequence[str] = (), key: str = "OPTIM.LR_GROUPS"
                 ) -> List[Dict[str, Any]]:
    """Split ``(name, parameter)`` pairs into a no-decay group (biases, 1-D params) and a decay group.

    With ``lr_groups`` (``"regex=scale"`` rules, as in a node's ``LR_GROUPS``; ``key`` names them in errors) the
    groups are ``common.optim_reference.build_param_groups``'s."""
    named = [(n, p) for n, p in named_params if p.requires_grad]
    if lr_groups:  # scales come from the rules (x lr_scale of the rest is not defined)
        if lr_scale != 1.0:
            raise ValueError("param_groups: give lr_scale or lr_groups, not both")
        return ref.build_param_groups(named, [p.dim() for _, p in named], weight_decay, no_decay_1d,
                                      lr_groups, key)
    return ref.split_decay(named, [p.dim() for _, p in named], weight_decay, no_decay_1d, lr_scale)


@torch.no_grad()
def clip_grad_norm(grads: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale ``grads`` in place by ``min(max_norm / (total + 1e-6), 1)``; returns the total norm (a tensor)."""
    grads = [g for g in grads if g is not None]
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads, 2)
    total = torch.linalg.vector_norm(torch.stack([n.to(grads[0].dtype) for n in norms]), 2)
    coef = torch.clamp(float(max_norm) / (total + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coef)
    return total


class _TwinOptimizer:
    NAME = ""

    def __init__(self, params: Any, unused_grads: str = "skip", model: Optional[torch.nn.Module] = None,
                 **hyper: Any):
        # ``model`` is accepted for the paddle twin's signature (it needs it for the Linear layout); unused here.
        cls = type(self).__name__
        self.hyper = ref.check_hyper(self.NAME, hyper, unused_grads)
        self.unused_grads = unused_grads
        self.param_groups = ref.normalize_groups(params, self.hyper["weight_decay"], cls)
        for group in self.param_groups:
            for name, p in group["params"]:
                if not isinstance(p, torch.Tensor):
                    raise TypeError(f"{cls}: parameter {name!r} is a {type(p).__name__}, not a torch tensor")
        self._params: Dict[str, torch.Tensor] = {n: p for g in self.param_groups for n, p in g["params"]}
        self.slot_names = ref.slots_of(self.NAME, self.hyper)
        self.state: Dict[str, Dict[str, torch.Tensor]] = {}
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
        """Drop every gradient (``set_to_none``): a parameter the next backward does not reach has none."""
        for p in self._params.values():
            p.grad = None
        self._averaged = False

    def average_grads(self) -> None:
        """In a multi-process run: the present gradients become their mean over the ranks (once per step, before
        clipping; ``common/distributed.py``).  Every rank holds gradients for the same parameters."""
        group = distributed.current()
        if group is None or self._averaged:
            return
        with torch.no_grad():
            group.average_([p.grad for p in self._params.values() if p.grad is not None])
        self._averaged = True

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        """Global-norm clip of the present gradients (torch formula); returns the total norm before clipping."""
        self.average_grads()
        return clip_grad_norm([p.grad for p in self._params.values()], max_norm)

    @torch.no_grad()
    def step(self, lr: float) -> None:
        lr = float(lr)
        self.average_grads()
        self._averaged = False
        for group in self.param_groups:
            names, params, grads = [], [], []
            for name, p in group["params"]:
                g = p.grad
                if g is None:
                    if self.unused_grads == "skip" or not p.requires_grad:  # frozen parameters never move
                        continue
                    g = torch.zeros_like(p)
                elif g.is_sparse:
                    raise RuntimeError(f"{type(self).__name__}: sparse gradient for {name!r} is not supported")
                names.append(name)
                params.append(p)
                grads.append(g)
            if not names:
                continue
            for name in names:
                self.param_steps[name] = self.param_steps.get(name, 0) + 1
            self._update(names, params, grads, lr * group["lr_scale"], group["weight_decay"])
        self.step_count += 1

    # ------------------------------------------------------------------ state
    def state_to_neutral(self) -> OptimizerState:
        slots: Dict[str, Dict[str, np.ndarray]] = {}
        for name, st in self.state.items():
            for slot, t in st.items():
                slots.setdefault(slot, {})[name] = t.detach().cpu().numpy().copy()
        for name, count in self.param_steps.items():
            slots.setdefault("step", {})[name] = np.asarray(count, dtype=np.int64)
        groups = [dict(g, params=[n for n, _ in g["params"]]) for g in self.param_groups]
        hyper = ref.hyper_record(self.hyper, self.unused_grads, groups)
        return OptimizerState(name=self.NAME, step=self.step_count, slots=slots, hyper=hyper)

    def load_neutral(self, state: OptimizerState, source: str = "<memory>") -> None:
        """Load slots (torch layout) saved by either backend; every name and shape is checked."""
        cls = type(self).__name__
        ref.check_state_header(cls, self.NAME, self.slot_names, self._params, state, source)
        new_state: Dict[str, Dict[str, torch.Tensor]] = {}
        steps: Dict[str, int] = {}
        for slot, per_param in state.slots.items():
            for name, array in per_param.items():
                p = self._params[name]
                if slot == "step":
                    steps[name] = ref.step_count(cls, source, name, array)
                    continue
                ref.check_slot_shape(cls, source, slot, name, tuple(p.shape), np.shape(array))
                t = torch.from_numpy(np.ascontiguousarray(array)).to(dtype=p.dtype, device=p.device)
                new_state.setdefault(name, {})[slot] = t.clone()
        ref.check_state_complete(cls, source, self.slot_names, new_state, steps)
        self.state = new_state
        self.param_steps = steps
        self.step_count = int(state.step)

    # ------------------------------------------------------------------ formulas
    def _slot(self, name: str, slot: str, like: torch.Tensor, fill: float) -> torch.Tensor:
        st = self.state.setdefault(name, {})
        if slot not in st:
            st[slot] = torch.full_like(like, fill, memory_format=torch.preserve_format)
        return st[slot]

    def _update(self, names, params, grads, lr, wd):  # every optimizer class defines its formula
        raise TypeError(f"{type(self).__name__} does not define an update formula")


class SGD(_TwinOptimizer):
    """torch SGD (dampening 0): g += wd*p; buf = g (first step) or mu*buf + g; p -= lr*(g + mu*buf | buf)."""

    NAME = "sgd"

    def __init__(self, params: Any, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 unused_grads: str = "skip", model: Any = None):
        super().__init__(params, unused_grads=unused_grads, model=model, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay)

    def _update(self, names, params, grads, lr, wd):
        mu, nesterov = self.hyper["momentum"], self.hyper["nesterov"]
        if wd != 0:
            grads = torch._foreach_add(grads, params, alpha=wd)
        if mu == 0:
            torch._foreach_add_(params, grads, alpha=-lr)
            return
        old_bufs, old_grads = [], []
        bufs = []
        for name, g in zip(names, grads):
            st = self.state.setdefault(name, {})
            if "momentum" not in st:
                st["momentum"] = torch.clone(g).detach()
            else:
                old_bufs.append(st["momentum"])
                old_grads.append(g)
            bufs.append(st["momentum"])
        if old_bufs:
            torch._foreach_mul_(old_bufs, mu)
            torch._foreach_add_(old_bufs, old_grads)
        direction = torch._foreach_add(grads, torch._foreach_mul(bufs, mu)) if nesterov else bufs
        torch._foreach_add_(params, direction, alpha=-lr)


class RMSpropTF(_TwinOptimizer):
    """TF / timm RMSprop: square_avg starts at 1, eps inside the sqrt, the LR inside the momentum buffer."""

    NAME = "rmsprop_tf"

    def __init__(self, params: Any, alpha: float = 0.9, eps: float = 1e-10, momentum: float = 0.0,
                 weight_decay: float = 0.0, unused_grads: str = "skip", model: Any = None):
        super().__init__(params, unused_grads=unused_grads, model=model, alpha=alpha, eps=eps, momentum=momentum,
                         weight_decay=weight_decay)

    def _update(self, names, params, grads, lr, wd):
        _rmsprop_update(self, names, params, grads, lr, wd, tf_form=True)


class RMSprop(_TwinOptimizer):
    """torch RMSprop (not centred): square_avg starts at 0, eps outside the sqrt, the LR outside the buffer."""

    NAME = "rmsprop"

    def __init__(self, params: Any, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
                 weight_decay: float = 0.0, unused_grads: str = "skip", model: Any = None):
        super().__init__(params, unused_grads=unused_grads, model=model, alpha=alpha, eps=eps, momentum=momentum,
                         weight_decay=weight_decay)

    def _update(self, names, params, grads, lr, wd):
        _rmsprop_update(self, names, params, grads, lr, wd, tf_form=False)


def _rmsprop_update(opt: _TwinOptimizer, names, params, grads, lr, wd, tf_form: bool) -> None:
    alpha, eps, mu = opt.hyper["alpha"], opt.hyper["eps"], opt.hyper["momentum"]
    if wd != 0:
        grads = torch._foreach_add(grads, params, alpha=wd)
    sq = [opt._slot(n, "square_avg", p, ref.slot_init_value(opt.NAME, "square_avg")) for n, p in zip(names, params)]
    g2 = torch._foreach_mul(grads, grads)
    torch._foreach_mul_(g2, 1.0 - alpha)
    torch._foreach_mul_(sq, alpha)
    torch._foreach_add_(sq, g2)
    if tf_form:
        avg = torch._foreach_add(sq, eps)
        torch._foreach_sqrt_(avg)
    else:
        avg = torch._foreach_sqrt(sq)
        torch._foreach_add_(avg, eps)
    ratio = torch._foreach_div(grads, avg)
    if mu > 0:
        bufs = [opt._slot(n, "momentum", p, 0.0) for n, p in zip(names, params)]
        torch._foreach_mul_(bufs, mu)
        if tf_form:  # buf = mu*buf + lr*(g/avg); p -= buf
            torch._foreach_mul_(ratio, lr)
            torch._foreach_add_(bufs, ratio)
            torch._foreach_sub_(params, bufs)
        else:  # buf = mu*buf + g/avg; p -= lr*buf
            torch._foreach_add_(bufs, ratio)
            torch._foreach_sub_(params, torch._foreach_mul(bufs, lr))
    else:
        torch._foreach_mul_(ratio, lr)
        torch._foreach_sub_(params, ratio)


class Adam(_TwinOptimizer):
    """torch Adam: coupled L2 (g += wd*p), eps added to sqrt(v)/sqrt(1-b2^t), per-parameter step counts."""

    NAME = "adam"

    def __init__(self, params: Any, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, unused_grads: str = "skip", model: Any = None):
        super().__init__(params, unused_grads=unused_grads, model=model, betas=betas, eps=eps,
                         weight_decay=weight_decay)

    def _update(self, names, params, grads, lr, wd):
        _adam_update(self, names, params, grads, lr, wd, decoupled=False)


class AdamW(_TwinOptimizer):
    """torch AdamW: p *= 1 - lr*wd, then Adam without L2."""

    NAME = "adamw"

    def __init__(self, params: Any, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, unused_grads: str = "skip", model: Any = None):
        super().__init__(params, unused_grads=unused_grads, model=model, betas=betas, eps=eps,
                         weight_decay=weight_decay)

    def _update(self, names, params, grads, lr, wd):
        _adam_update(self, names, params, grads, lr, wd, decoupled=True)


def _adam_update(opt: _TwinOptimizer, names, params, grads, lr, wd, decoupled: bool) -> None:
    b1, b2 = opt.hyper["betas"]
    eps = opt.hyper["eps"]
    if decoupled:
        if wd != 0:
            torch._foreach_mul_(params, 1.0 - lr * wd)
    elif wd != 0:
        grads = torch._foreach_add(grads, params, alpha=wd)
    m = [opt._slot(n, "exp_avg", p, 0.0) for n, p in zip(names, params)]
    v = [opt._slot(n, "exp_avg_sq", p, 0.0) for n, p in zip(names, params)]
    steps = [opt.param_steps[n] for n in names]
    torch._foreach_mul_(m, b1)
    torch._foreach_add_(m, torch._foreach_mul(grads, 1.0 - b1))
    g2 = torch._foreach_mul(grads, grads)
    torch._foreach_mul_(g2, 1.0 - b2)
    torch._foreach_mul_(v, b2)
    torch._foreach_add_(v, g2)
    denom = torch._foreach_sqrt(v)
    torch._foreach_div_(denom, [(1.0 - b2 ** t) ** 0.5 for t in steps])
    torch._foreach_add_(denom, eps)
    update = torch._foreach_div(m, denom)
    torch._foreach_mul_(update, [lr / (1.0 - b1 ** t) for t in steps])
    torch._foreach_sub_(params, update)


# ------------------------------------------------------------------------------ EMA
class ModelEma:
    """timm ``ModelEma``: a separate copy of the model, ``ema = decay*ema + (1-decay)*value`` over every floating
    state entry (parameters and BN running statistics); other entries are copied.  ``module`` is the EMA model."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.9999):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ModelEma: decay = {decay!r} must be in [0, 1]")
        self.decay = float(decay)
        self.module = copy.deepcopy(model)
        self.module.eval()
        for p in self.module.parameters():
            p.grad = None
            p.requires_grad_(False)
        self._keys = list(self.module.state_dict().keys())

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        own = self.module.state_dict()
        other = model.state_dict()
        ema_f, val_f = [], []
        for key in self._keys:
            e, v = own[key], other[key]
            if e.is_floating_point():
                ema_f.append(e)
                val_f.append(v.detach())
            else:
                e.copy_(v)
        if ema_f:
            torch._foreach_mul_(ema_f, self.decay)
            torch._foreach_add_(ema_f, torch._foreach_mul(val_f, 1.0 - self.decay))

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
    named = [(n, p) for n, p in named_params if p.requires_grad]
    groups = ref.build_param_groups(named, [p.dim() for _, p in named], spec.weight_decay, spec.no_decay_1d,
                                    spec.lr_groups, spec.key("LR_GROUPS"))
    opt = globals()[spec.cls_name](groups, unused_grads=unused_grads or spec.unused_grads, model=model,
                                   **spec.kwargs)
    opt.node_name, opt.base_lr, opt.grad_clip = spec.node, spec.lr, spec.grad_clip
    return opt
