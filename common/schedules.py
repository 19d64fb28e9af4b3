"""Learning-rate schedules as pure Python functions of the (fractional) epoch.

Both backends get their LR from here: the training loop asks the schedule for the LR of the coming
update and passes it to ``optimizer.step(lr)``.  Nothing here touches a framework.

When is a schedule evaluated?
  * ``per_step=False`` (timm ``t_in_epochs=True``, the Cream retrain recipe): the LR changes only at
    epoch boundaries; every update of epoch ``e`` (0-based) uses ``lr_at(e)``.
  * ``per_step=True``: update ``s`` (0-based) of epoch ``e`` with ``n`` updates per epoch uses
    ``lr_at(e + s / n)``, i.e. the schedule is sampled at the fractional epoch where the update starts.
  ``Schedule.lr_for(epoch, step_in_epoch, steps_per_epoch)`` makes that choice in one place.

Warmup (timm semantics, ``warmup_prefix=False``): for ``t < warmup_epochs`` the LR is
``warmup_lr + t * (lr - warmup_lr) / warmup_epochs``; from ``t >= warmup_epochs`` on, the main schedule
is evaluated at the *unshifted* ``t`` (the warmup overlays the start of the main schedule; it does not
delay it).  With ``warmup_prefix=True`` the main schedule is evaluated at ``t - warmup_epochs``.

The main schedules (``lr`` = base LR, ``t`` = epoch):
  constant    lr
  step        lr * rate ** floor(t / decay_epochs)                 (Cream: 0.973 every 2.4 epochs)
              floor(t / d) with true division: fractional epochs such as 26.4 = 11 * 2.4 count as 11 decays
              (Python's ``26.4 // 2.4`` is 10.0 in binary floating point; integer epochs agree with timm's ``//``).
  multistep   lr * rate ** #{m in milestones: m <= t}              (torch MultiStepLR)
  cosine      lr_min + (lr - lr_min) * (1 + cos(pi * t / t_initial)) / 2 for t < t_initial, lr_min after
              (timm CosineLRScheduler, cycle_limit 1, no restart); ``cooldown_epochs`` more epochs at lr_min
              are part of ``total_epochs`` (timm: ``get_cycle_length() + cooldown_epochs``).
  linear      lr_min + (lr - lr_min) * max(0, 1 - t / total)      (linear decay to lr_min at ``total``)

Named upstream schedules (closed forms of what the reference code computes):
  ``cream_supernet_lr(step, base_lr, lr_cfg, iters)``  = base_lr * max(lr_cfg - step / iters, 0)   (Cream LambdaLR)
  ``pcdarts_cosine_lr(epoch, lr, t_max, eta_min)``   = eta_min + (lr - eta_min)(1 + cos(pi * epoch / t_max)) / 2
  ``pcdarts_imagenet_linear_lr(epoch, lr, epochs, warmup_epochs)``  (PC-DARTS ``train_imagenet.py`` 'linear')
"""
from __future__ import annotations

import bisect
import math
from typing import Any, Optional, Sequence, Tuple

__all__ = [
    "constant_lr",
    "step_lr",
    "multistep_lr",
    "cosine_lr",
    "linear_lr",
    "warmup_lr",
    "cream_supernet_factor",
    "cream_supernet_lr",
    "pcdarts_cosine_lr",
    "pcdarts_imagenet_linear_lr",
    "Schedule",
    "ConstantSchedule",
    "StepSchedule",
    "MultiStepSchedule",
    "CosineSchedule",
    "LinearSchedule",
    "build_schedule",
    "SCHEDULE_NAMES", "PCDartsLinearSchedule", "OneCycleSchedule", "PolySchedule",
]


# --------------------------------------------------------------------------------------------- formulas
def constant_lr(epoch: float, lr: float) -> float:
    return float(lr)


def step_lr(epoch: float, lr: float, decay_epochs: float, decay_rate: float) -> float:
    """``lr * decay_rate ** floor(epoch / decay_epochs)``."""
    if decay_epochs <= 0:
        raise ValueError(f"step_lr: decay_epochs = {decay_epochs!r} must be > 0")
    return lr * decay_rate ** math.floor(epoch / decay_epochs)


def multistep_lr(epoch: float, lr: float, milestones: Sequence[float], decay_rate: float) -> float:
    """``lr * decay_rate ** (number of milestones <= epoch)`` (milestones sorted ascending)."""
    ms = sorted(float(m) for m in milestones)
    return lr * decay_rate ** bisect.bisect_right(ms, epoch)


def cosine_lr(epoch: float, lr: float, t_initial: float, lr_min: float = 0.0) -> float:
    """One cosine cycle from ``lr`` at 0 to ``lr_min`` at ``t_initial``; ``lr_min`` afterwards (no restart)."""
    if t_initial <= 0:
        raise ValueError(f"cosine_lr: t_initial = {t_initial!r} must be > 0")
    if epoch >= t_initial:
        return float(lr_min)
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * epoch / t_initial))


def linear_lr(epoch: float, lr: float, total_epochs: float, lr_min: float = 0.0) -> float:
    """Linear decay from ``lr`` at 0 to ``lr_min`` at ``total_epochs``; ``lr_min`` afterwards."""
    if total_epochs <= 0:
        raise ValueError(f"linear_lr: total_epochs = {total_epochs!r} must be > 0")
    return lr_min + (lr - lr_min) * max(0.0, 1.0 - epoch / total_epochs)


def warmup_lr(epoch: float, lr: float, warmup_epochs: float, warmup_start_lr: float) -> float:
    """timm linear warmup: ``warmup_start_lr + epoch * (lr - warmup_start_lr) / warmup_epochs``."""
    return warmup_start_lr + epoch * (lr - warmup_start_lr) / warmup_epochs


def cream_supernet_factor(step: float, lr_cfg: float, iters: float) -> float:
    """Cream supernet ``LambdaLR`` factor: ``max(LR - step / ITERS, 0)`` (``lib/utils/util.py``)."""
    if iters <= 0:
        raise ValueError(f"cream_supernet_factor: iters = {iters!r} must be > 0")
    return max(lr_cfg - step / iters, 0.0)


def cream_supernet_lr(step: float, base_lr: float, lr_cfg: float, iters: float) -> float:
    """LR of a Cream supernet parameter group whose base LR is ``base_lr`` after ``step`` scheduler steps."""
    return base_lr * cream_supernet_factor(step, lr_cfg, iters)


def pcdarts_cosine_lr(epoch: float, lr: float, t_max: float, eta_min: float = 0.0) -> float:
    """Closed form of ``CosineAnnealingLR``: ``eta_min + (lr - eta_min)(1 + cos(pi * epoch / t_max)) / 2``.

    PC-DARTS calls ``scheduler.step()`` at the *start* of each epoch: on PyTorch <= 1.0 (the code's target)
    epoch ``e`` trains with ``pcdarts_cosine_lr(e, ...)``; on PyTorch >= 1.1 with ``pcdarts_cosine_lr(e + 1, ...)``.
    The caller picks the convention explicitly (``pcdarts.md`` §2.3 recommends ``e``).
    """
    if t_max <= 0:
        raise ValueError(f"pcdarts_cosine_lr: t_max = {t_max!r} must be > 0")
    return eta_min + (lr - eta_min) * (1.0 + math.cos(math.pi * epoch / t_max)) / 2.0


def pcdarts_imagenet_linear_lr(epoch: int, lr: float = 0.5, epochs: int = 250, warmup_epochs: int = 5,
                               warmup: bool = True) -> float:
    """PC-DARTS ``train_imagenet.py`` 'linear' ``adjust_lr`` plus its warm-up overwrite (batch > 256).

    ``lr * (epochs - 5 - e) / (epochs - 5)`` while ``epochs - e > 5``, else ``lr * (epochs - e) / ((epochs - 5) * 5)``;
    during the first ``warmup_epochs`` epochs (when ``warmup``) ``lr * (e + 1) / warmup_epochs``.
    """
    tail = 5
    if warmup and epoch < warmup_epochs:
        return lr * (epoch + 1) / warmup_epochs
    if epochs - epoch > tail:
        return lr * (epochs - tail - epoch) / (epochs - tail)
    return lr * (epochs - epoch) / ((epochs - tail) * tail)


# --------------------------------------------------------------------------------------------- objects
class Schedule:
    """A main schedule with optional linear warmup.  ``lr_at(t)`` is a pure function of the epoch ``t``."""

    name = "schedule"

    def __init__(self, lr: float, warmup_epochs: float = 0.0, warmup_lr: float = 0.0, per_step: bool = False,
                 warmup_prefix: bool = False, total_epochs: Optional[float] = None, warmup_style: str = "linear",
                 epoch_shift: float = 0.0):
        if lr < 0:
            raise ValueError(f"{self.name} schedule: lr = {lr!r} must be >= 0")
        if warmup_epochs < 0:
            raise ValueError(f"{self.name} schedule: warmup_epochs = {warmup_epochs!r} must be >= 0")
        self.base_lr = float(lr)
        self.warmup_epochs = float(warmup_epochs)
        self.warmup_lr = float(warmup_lr)
        self.per_step = bool(per_step)
        self.warmup_prefix = bool(warmup_prefix)
        self.total_epochs = total_epochs
        if warmup_style not in ("linear", "staircase"):
            raise ValueError(f"SCHED.WARMUP_STYLE = {warmup_style!r} is not one of ['linear', 'staircase']")
        self.warmup_style = warmup_style
        if epoch_shift < 0:
            raise ValueError(f"SCHED.EPOCH_SHIFT = {epoch_shift!r} must be >= 0")
        self.epoch_shift = float(epoch_shift)

    # The main schedule at epoch t (no warmup); every subclass defines it.
    def main(self, t: float) -> float:
        raise TypeError(f"{type(self).__name__} does not define its main schedule")

    def lr_at(self, epoch: float) -> float:
        t = float(epoch)
        if t < 0:
            raise ValueError(f"{self.name} schedule: epoch = {epoch!r} must be >= 0")
        t += self.epoch_shift
        if self.warmup_epochs > 0 and t < self.warmup_epochs:
            if self.warmup_style == "staircase":  # the PC-DARTS scripts: lr * (e + 1) / warmup at epoch e
                return self.base_lr * (math.floor(t) + 1) / self.warmup_epochs
            return warmup_lr(t, self.base_lr, self.warmup_epochs, self.warmup_lr)
        if self.warmup_prefix:
            t -= self.warmup_epochs
        return float(self.main(t))

    __call__ = lr_at

    def lr_for(self, epoch: int, step_in_epoch: int = 0, steps_per_epoch: int = 1) -> float:
        """LR of update ``step_in_epoch`` of epoch ``epoch`` (see the module docstring)."""
        if not self.per_step:
            return self.lr_at(epoch)
        if steps_per_epoch < 1:
            raise ValueError(f"{self.name} schedule: steps_per_epoch = {steps_per_epoch!r} must be >= 1")
        return self.lr_at(epoch + step_in_epoch / steps_per_epoch)

    def describe(self) -> dict:
        out = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        out["name"] = self.name
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "name")
        return f"{type(self).__name__}({args})"


class ConstantSchedule(Schedule):
    name = "constant"

    def main(self, t: float) -> float:
        return constant_lr(t, self.base_lr)


class StepSchedule(Schedule):
    name = "step"

    def __init__(self, lr: float, decay_epochs: float, decay_rate: float, **kw: Any):
        super().__init__(lr, **kw)
        if decay_epochs <= 0:
            raise ValueError(f"step schedule: decay_epochs = {decay_epochs!r} must be > 0")
        self.decay_epochs = float(decay_epochs)
        self.decay_rate = float(decay_rate)

    def main(self, t: float) -> float:
        return step_lr(t, self.base_lr, self.decay_epochs, self.decay_rate)


class MultiStepSchedule(Schedule):
    name = "multistep"

    def __init__(self, lr: float, milestones: Sequence[float], decay_rate: float, **kw: Any):
        super().__init__(lr, **kw)
        self.milestones: Tuple[float, ...] = tuple(sorted(float(m) for m in milestones))
        self.decay_rate = float(decay_rate)

    def main(self, t: float) -> float:
        return multistep_lr(t, self.base_lr, self.milestones, self.decay_rate)


class CosineSchedule(Schedule):
    name = "cosine"

    def __init__(self, lr: float, t_initial: float, lr_min: float = 0.0, cooldown_epochs: float = 0.0, **kw: Any):
        kw.setdefault("total_epochs", float(t_initial) + float(cooldown_epochs))
        super().__init__(lr, **kw)
        if t_initial <= 0:
            raise ValueError(f"cosine schedule: t_initial = {t_initial!r} must be > 0")
        self.t_initial = float(t_initial)
        self.lr_min = float(lr_min)
        self.cooldown_epochs = float(cooldown_epochs)

    def main(self, t: float) -> float:
        return cosine_lr(t, self.base_lr, self.t_initial, self.lr_min)


class LinearSchedule(Schedule):
    name = "linear"

    def __init__(self, lr: float, decay_epochs: float, lr_min: float = 0.0, **kw: Any):
        kw.setdefault("total_epochs", float(decay_epochs))
        super().__init__(lr, **kw)
        if decay_epochs <= 0:
            raise ValueError(f"linear schedule: decay_epochs = {decay_epochs!r} must be > 0")
        self.decay_epochs = float(decay_epochs)
        self.lr_min = float(lr_min)

    def main(self, t: float) -> float:
        return linear_lr(t, self.base_lr, self.decay_epochs, self.lr_min)


class PCDartsLinearSchedule(Schedule):
    """PC-DARTS ImageNet training (``train_imagenet.py --lr_scheduler linear``): :func:`pcdarts_imagenet_linear_lr`
    at the start of each epoch, its own warm-up ``lr (e + 1) / SCHED.WARMUP_EPOCHS`` included (the reference applies
    it for batches above 256), and a gentler slope over the last 5 epochs."""

    name = "pcdarts_linear"

    def __init__(self, lr: float, epochs: float, warmup_epochs: float = 0.0, **kw: Any):
        kw.pop("warmup_lr", None)
        super().__init__(lr, total_epochs=float(epochs), **kw)  # no generic warm-up: the formula has its own
        if epochs <= 5:
            raise ValueError(f"pcdarts_linear schedule: TRAIN.EPOCHS = {epochs!r} must be > 5 (the last 5 are its tail)")
        self.epochs = int(epochs)
        self.own_warmup = int(warmup_epochs)

    def main(self, t: float) -> float:
        return pcdarts_imagenet_linear_lr(int(t), self.base_lr, self.epochs, self.own_warmup, warmup=self.own_warmup > 0)


SCHEDULE_NAMES = ("constant", "step", "multistep", "cosine", "linear", "pcdarts_linear", "one_cycle", "poly")


class PolySchedule(Schedule):
    """``lr_min + (lr - lr_min) * (1 - t / total) ** power`` (HRNet / NAS-Bench-MR segmentation: power 0.9, per step)."""

    name = "poly"

    def __init__(self, lr: float, total_epochs: float, power: float = 0.9, lr_min: float = 0.0, **kw: Any):
        super().__init__(lr, **kw)
        if total_epochs <= 0:
            raise ValueError(f"{self.name} schedule: TRAIN.EPOCHS = {total_epochs!r} must be > 0")
        if power <= 0:
            raise ValueError(f"SCHED.POWER = {power!r} must be > 0")
        self.decay_epochs = float(total_epochs)
        self.power = float(power)
        self.lr_min = float(lr_min)

    def main(self, t: float) -> float:
        frac = max(0.0, 1.0 - t / self.decay_epochs)
        return self.lr_min + (self.base_lr - self.lr_min) * frac ** self.power

class OneCycleSchedule(Schedule):
    """torch ``OneCycleLR`` (two phases, cosine annealing), stepped per update, with its momentum cycle.

    Over ``T = epochs * steps_per_epoch`` updates, update ``k`` (0-based) uses, with phase ends ``a = pct_start * T - 1``
    and ``b = T - 1`` (torch's float phase ends): for ``k <= a`` the LR anneals from ``lr / div_factor`` up to ``lr``
    and the momentum from ``max_momentum`` down to ``base_momentum``; after it, the LR anneals to
    ``lr / (div_factor * final_div_factor)`` and the momentum back up; each by ``end + (start - end) * (1 + cos(pi *
    x)) / 2`` with ``x`` the position inside the phase.  The momentum is Adam's beta1 (SGD's momentum);
    ``momentum_at(t)`` gives it and ``engine.Loop`` hands it to the optimizer before each update.
    The loop tells the schedule its ``steps_per_epoch`` (:meth:`bind_steps`) before the first update."""

    name = "one_cycle"

    def __init__(self, lr: float, epochs: float, pct_start: float = 0.3, div_factor: float = 10.0,
                 final_div_factor: float = 1e4, momenta: Sequence[float] = (0.85, 0.95), **kw: Any):
        kw["per_step"] = True
        super().__init__(lr, **kw)
        if epochs <= 0:
            raise ValueError(f"{self.name} schedule: TRAIN.EPOCHS = {epochs!r} must be > 0")
        if not 0.0 < pct_start < 1.0:
            raise ValueError(f"SCHED.PCT_START = {pct_start!r} must be in (0, 1)")
        if div_factor <= 0 or final_div_factor <= 0:
            raise ValueError(f"SCHED.DIV_FACTOR / SCHED.FINAL_DIV_FACTOR = {div_factor!r} / {final_div_factor!r} "
                             "must be > 0")
        if self.warmup_epochs:
            raise ValueError("SCHED.NAME one_cycle has its own warm-up phase (SCHED.PCT_START): set "
                             "SCHED.WARMUP_EPOCHS 0")
        self.epochs = float(epochs)
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.momenta = tuple(float(m) for m in momenta)
        if self.momenta and (len(self.momenta) != 2 or not all(0.0 <= m < 1.0 for m in self.momenta)):
            raise ValueError(f"SCHED.CYCLE_MOMENTUM = {list(momenta)!r} must be empty (no momentum cycle) or two "
                             "values (base, max) in [0, 1)")
        self.steps_per_epoch: Optional[int] = None

    def bind_steps(self, steps_per_epoch: int) -> None:
        if int(steps_per_epoch) < 1:
            raise ValueError(f"{self.name} schedule: steps_per_epoch = {steps_per_epoch!r} must be >= 1")
        self.steps_per_epoch = int(steps_per_epoch)

    def _phase(self, t: float) -> Tuple[int, float]:
        if self.steps_per_epoch is None:
            raise ValueError("the one_cycle schedule needs the steps per epoch (bind_steps) before its first use")
        total = self.epochs * self.steps_per_epoch
        k = round(t * self.steps_per_epoch)
        first_end = self.pct_start * total - 1
        if k <= first_end:
            return 0, k / first_end if first_end > 0 else 1.0
        return 1, (k - first_end) / (total - 1 - first_end)

    @staticmethod
    def _anneal(start: float, end: float, x: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * x) + 1)

    def main(self, t: float) -> float:
        phase, x = self._phase(t)
        initial = self.base_lr / self.div_factor
        if phase == 0:
            return self._anneal(initial, self.base_lr, x)
        return self._anneal(self.base_lr, initial / self.final_div_factor, x)

    def momentum_at(self, t: float) -> Optional[float]:
        """The momentum (beta1) of the update at ``t``; None without a momentum cycle."""
        if not self.momenta:
            return None
        base, top = self.momenta
        phase, x = self._phase(float(t))
        return self._anneal(top, base, x) if phase == 0 else self._anneal(base, top, x)


class ScaledSchedule:
    """Another schedule times a constant: an optimizer whose LR follows the weights' decay at its own scale (the
    Cream meta matching network: ``META_OPTIM.LR / OPTIM.LR`` x the weights' LR, as upstream's LambdaLR scales
    every parameter group)."""

    name = "scaled"

    def __init__(self, schedule: Schedule, scale: float):
        if not math.isfinite(scale) or scale < 0:
            raise ValueError(f"scaled schedule: scale = {scale!r} must be a finite number >= 0")
        self.schedule = schedule
        self.scale = float(scale)
        self.per_step = schedule.per_step

    def lr_at(self, epoch: float) -> float:
        return self.scale * self.schedule.lr_at(epoch)

    __call__ = lr_at

    def lr_for(self, epoch: int, step_in_epoch: int = 0, steps_per_epoch: int = 1) -> float:
        return self.scale * self.schedule.lr_for(epoch, step_in_epoch, steps_per_epoch)

    def describe(self) -> dict:
        return {"name": self.name, "scale": self.scale, "of": self.schedule.describe()}


def _cfg_get(node: Any, key: str, default: Any) -> Any:
    try:
        return node[key] if key in node else default
    except TypeError:
        return getattr(node, key, default)


def build_schedule(cfg: Any) -> Schedule:
    """The schedule of a config: ``OPTIM.LR`` and ``SCHED.*`` (``TRAIN.EPOCHS`` for cosine / linear).

    SCHED.NAME       constant | step | cosine | linear (| multistep when SCHED.MILESTONES exists)
    SCHED.WARMUP_EPOCHS, SCHED.WARMUP_LR   timm linear warmup (SCHED.WARMUP_STYLE staircase: the PC-DARTS
                     scripts' LR * (e + 1) / WARMUP_EPOCHS at epoch e)
    SCHED.EPOCH_SHIFT  epoch e uses the schedule at e + shift (1: the PC-DARTS scripts on PyTorch >= 1.1)
    SCHED.DECAY_EPOCHS, SCHED.DECAY_RATE   step decay period and factor (multistep: factor)
    SCHED.MIN_LR     cosine / linear floor
    SCHED.PER_STEP   sample the schedule at fractional epochs (see the module docstring)
    cosine: TRAIN.EPOCHS is the whole run: t_initial = TRAIN.EPOCHS - SCHED.COOLDOWN_EPOCHS, then MIN_LR
            for the cooldown (Cream: 510 epochs = 500 of cosine + 10 of cooldown);
    linear: decays to MIN_LR at TRAIN.EPOCHS.
    """
    sched, optim = cfg["SCHED"], cfg["OPTIM"]
    name = str(sched["NAME"])
    lr = float(optim["LR"])
    epochs = float(cfg["TRAIN"]["EPOCHS"]) if "TRAIN" in cfg else 0.0
    common = dict(
        warmup_epochs=float(sched["WARMUP_EPOCHS"]),
        warmup_lr=float(sched["WARMUP_LR"]),
        per_step=bool(sched["PER_STEP"]),
        warmup_prefix=bool(_cfg_get(sched, "WARMUP_PREFIX", False)),
        warmup_style=str(_cfg_get(sched, "WARMUP_STYLE", "linear")),
        epoch_shift=float(_cfg_get(sched, "EPOCH_SHIFT", 0)),
    )
    if name == "constant":
        return ConstantSchedule(lr, **common)
    if name == "step":
        return StepSchedule(lr, float(sched["DECAY_EPOCHS"]), float(sched["DECAY_RATE"]), **common)
    if name == "multistep":
        milestones = _cfg_get(sched, "MILESTONES", None)
        if not milestones:
            raise ValueError("SCHED.NAME = 'multistep' needs SCHED.MILESTONES (a list of epochs)")
        return MultiStepSchedule(lr, milestones, float(sched["DECAY_RATE"]), **common)
    if name in ("cosine", "linear"):
        if epochs <= 0:
            raise ValueError(f"SCHED.NAME = {name!r} needs TRAIN.EPOCHS > 0, got {epochs!r}")
        if name == "cosine":
            cooldown = float(_cfg_get(sched, "COOLDOWN_EPOCHS", 0.0))
            if not 0.0 <= cooldown < epochs:
                raise ValueError(f"SCHED.COOLDOWN_EPOCHS = {cooldown!r} must be in [0, TRAIN.EPOCHS = {epochs!r})")
            return CosineSchedule(lr, epochs - cooldown, float(sched["MIN_LR"]), cooldown_epochs=cooldown, **common)
        return LinearSchedule(lr, epochs, float(sched["MIN_LR"]), **common)
    if name == "pcdarts_linear":
        if epochs <= 0:
            raise ValueError(f"SCHED.NAME = {name!r} needs TRAIN.EPOCHS > 0, got {epochs!r}")
        return PCDartsLinearSchedule(lr, epochs, warmup_epochs=common["warmup_epochs"], per_step=False,
                                     epoch_shift=common["epoch_shift"])
    if name == "poly":
        if epochs <= 0:
            raise ValueError(f"SCHED.NAME = {name!r} needs TRAIN.EPOCHS > 0, got {epochs!r}")
        return PolySchedule(lr, epochs, float(_cfg_get(sched, "POWER", 0.9)), float(sched["MIN_LR"]), **common)
    if name == "one_cycle":  # OPTIM.LR is the peak (torch max_lr)
        if epochs <= 0:
            raise ValueError(f"SCHED.NAME = {name!r} needs TRAIN.EPOCHS > 0, got {epochs!r}")
        return OneCycleSchedule(lr, epochs, float(_cfg_get(sched, "PCT_START", 0.3)),
                                float(_cfg_get(sched, "DIV_FACTOR", 10.0)),
                                float(_cfg_get(sched, "FINAL_DIV_FACTOR", 1e4)),
                                tuple(_cfg_get(sched, "CYCLE_MOMENTUM", (0.85, 0.95))),
                                warmup_epochs=common["warmup_epochs"])
    raise ValueError(f"SCHED.NAME = {name!r} is not one of {list(SCHEDULE_NAMES)}")
