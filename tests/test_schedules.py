"""``common/schedules.py``: every schedule against hand-computed values and against the torch / paddle / timm
schedulers that implement the same rule (within 1e-12)."""
from __future__ import annotations

import importlib
import math
import pytest

from common import schedules as S
from common.config import get_default_config, merge_overrides

TOL = 1e-12


# ------------------------------------------------------------------------------------------------ hand values
def test_constant():
    s = S.ConstantSchedule(0.1)
    assert [s(e) for e in (0, 1, 7.5, 1000)] == [0.1] * 4


def test_step_decay_cream_values():
    # Cream retrain 14/43: 0.064 * 0.973 ** floor(epoch / 2.4)
    s = S.StepSchedule(0.064, decay_epochs=2.4, decay_rate=0.973)
    assert s(0) == 0.064 and s(2) == 0.064 and s(2.39) == 0.064
    assert s(2.4) == pytest.approx(0.062272, abs=TOL)       # 0.064 * 0.973
    assert s(3) == pytest.approx(0.062272, abs=TOL)
    assert s(5) == pytest.approx(0.060590656, abs=TOL)     # 0.064 * 0.946729
    # 26.4 = 11 * 2.4 decays 11 times (true division); Python's 26.4 // 2.4 would say 10.
    assert 26.4 // 2.4 == 10.0
    assert s(26.4) == pytest.approx(0.064 * 0.973 ** 11, abs=TOL)
    assert S.step_lr(26.4, 1.0, 2.4, 0.5) == 0.5 ** 11


def test_warmup_then_step_timm_semantics():
    # Cream: warmup from 1e-6 over 3 epochs, then the step decay evaluated at the *unshifted* epoch.
    s = S.StepSchedule(0.064, 2.4, 0.973, warmup_epochs=3, warmup_lr=1e-6)
    assert s(0) == 1e-6
    assert s(1) == pytest.approx(1e-6 + 0.063999 / 3, abs=TOL)          # 0.021334
    assert s(2) == pytest.approx(1e-6 + 2 * 0.063999 / 3, abs=TOL)      # 0.042667
    assert s(1.5) == pytest.approx(0.0320005, abs=TOL)
    assert s(3) == pytest.approx(0.062272, abs=TOL)                     # floor(3 / 2.4) = 1
    prefixed = S.StepSchedule(0.064, 2.4, 0.973, warmup_epochs=3, warmup_lr=1e-6, warmup_prefix=True)
    assert prefixed(3) == 0.064 and prefixed(5.4) == pytest.approx(0.062272, abs=TOL)


def test_cosine_values_and_cooldown():
    s = S.CosineSchedule(0.064, t_initial=500, lr_min=1e-5, cooldown_epochs=10)
    assert s(0) == pytest.approx(0.064, abs=TOL)
    assert s(500 / 3) == pytest.approx(1e-5 + 0.75 * (0.064 - 1e-5), abs=TOL)   # cos(pi/3) = 1/2
    assert s(250) == pytest.approx(0.032005, abs=TOL)                          # midpoint
    assert s(1000 / 3) == pytest.approx(1e-5 + 0.25 * (0.064 - 1e-5), abs=TOL)
    assert s(500) == 1e-5 and s(505) == 1e-5 and s(509.9) == 1e-5               # cooldown at lr_min, no restart
    assert s.total_epochs == 510


def test_multistep_and_linear():
    m = S.MultiStepSchedule(0.1, milestones=(30, 10), decay_rate=0.1)
    assert m(9.99) == 0.1 and m(10) == pytest.approx(0.01, abs=TOL) and m(30) == pytest.approx(0.001, abs=TOL)
    lin = S.LinearSchedule(0.5, decay_epochs=10, lr_min=0.1)
    assert lin(0) == 0.5 and lin(5) == pytest.approx(0.3, abs=TOL) and lin(10) == pytest.approx(0.1, abs=TOL)
    assert lin(12) == pytest.approx(0.1, abs=TOL)


def test_cream_supernet_lambda():
    # LR 1.0, ITERS 150000: a linear decay 1 -> 0 multiplied into every group's base lr (meta lr 1e-4 too).
    assert S.cream_supernet_lr(0, 1.0, 1.0, 150000) == 1.0
    assert S.cream_supernet_lr(75000, 1.0, 1.0, 150000) == 0.5
    assert S.cream_supernet_lr(75000, 1e-4, 1.0, 150000) == pytest.approx(5e-5, abs=TOL)
    assert S.cream_supernet_lr(150000, 1.0, 1.0, 150000) == 0.0
    assert S.cream_supernet_lr(200000, 1.0, 1.0, 150000) == 0.0


def test_pcdarts_cosine_and_imagenet_linear():
    assert S.pcdarts_cosine_lr(0, 0.1, 50) == 0.1
    assert S.pcdarts_cosine_lr(25, 0.1, 50) == pytest.approx(0.05, abs=TOL)
    assert S.pcdarts_cosine_lr(50, 0.1, 50, 0.001) == pytest.approx(0.001, abs=TOL)
    assert S.pcdarts_cosine_lr(49, 0.1, 50) == pytest.approx(9.866357858642e-05, abs=1e-15)  # pcdarts.md: ~9.87e-5
    # pcdarts.md §3.5, own check of train_imagenet.py's adjust_lr + warm-up (6 decimals)
    want = {0: 0.1, 1: 0.2, 4: 0.5, 5: 0.489796, 100: 0.295918, 244: 0.002041, 245: 0.002041, 249: 0.000408}
    for epoch, lr in want.items():
        assert round(S.pcdarts_imagenet_linear_lr(epoch), 6) == lr, epoch


def test_per_step_vs_per_epoch():
    per_epoch = S.CosineSchedule(1.0, t_initial=10)
    per_step = S.CosineSchedule(1.0, t_initial=10, per_step=True)
    assert per_epoch.lr_for(3, 7, 10) == per_epoch(3)
    assert per_step.lr_for(3, 7, 10) == per_step(3.7)
    assert per_step.lr_for(3, 0, 10) == per_epoch(3)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="decay_epochs"):
        S.StepSchedule(0.1, decay_epochs=0, decay_rate=0.5)
    with pytest.raises(ValueError, match="t_initial"):
        S.CosineSchedule(0.1, t_initial=0)
    with pytest.raises(ValueError, match="epoch"):
        S.ConstantSchedule(0.1)(-1)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        S.ConstantSchedule(0.1, per_step=True).lr_for(0, 0, 0)


# ------------------------------------------------------------------------------------------------ from config
def _cfg(*overrides):
    cfg = get_default_config()
    merge_overrides(cfg, [str(o) for o in overrides])
    return cfg


def test_build_schedule_from_config():
    s = S.build_schedule(_cfg("OPTIM.LR", 0.064, "SCHED.NAME", "step", "SCHED.DECAY_EPOCHS", 2.4,
                              "SCHED.DECAY_RATE", 0.973, "SCHED.WARMUP_EPOCHS", 3.0, "SCHED.WARMUP_LR", 1e-6))
    assert isinstance(s, S.StepSchedule) and s(0) == 1e-6 and s(5) == pytest.approx(0.060590656, abs=TOL)
    c = S.build_schedule(_cfg("OPTIM.LR", 0.064, "SCHED.NAME", "cosine", "TRAIN.EPOCHS", 500, "SCHED.MIN_LR", 1e-5,
                              "SCHED.PER_STEP", True))
    assert isinstance(c, S.CosineSchedule) and c.t_initial == 500 and c.per_step
    assert c(250) == pytest.approx(0.032005, abs=TOL)
    lin = S.build_schedule(_cfg("OPTIM.LR", 0.5, "SCHED.NAME", "linear", "TRAIN.EPOCHS", 10))
    assert lin(5) == pytest.approx(0.25, abs=TOL)
    const = S.build_schedule(_cfg("OPTIM.LR", 0.2, "SCHED.NAME", "constant", "SCHED.WARMUP_EPOCHS", 2.0,
                                  "SCHED.WARMUP_LR", 0.0))
    assert const(1) == pytest.approx(0.1, abs=TOL) and const(2) == 0.2
    with pytest.raises(ValueError, match="TRAIN.EPOCHS"):
        S.build_schedule(_cfg("SCHED.NAME", "cosine", "TRAIN.EPOCHS", 0))


# ------------------------------------------------------------------------------------------------ vs frameworks
def _torch_sequence(make, epochs):
    torch = importlib.import_module("torch")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = make(opt)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _paddle_sequence(sched, epochs):
    out = []
    for _ in range(epochs):
        out.append(sched.last_lr)
        sched.step()
    return out


def _close(a, b):
    assert len(a) == len(b)
    worst = max(abs(x - y) for x, y in zip(a, b))
    assert worst <= TOL, worst


def test_against_torch_schedulers():
    torch = importlib.import_module("torch")
    sch = torch.optim.lr_scheduler
    E = 70
    _close(_torch_sequence(lambda o: sch.StepLR(o, step_size=3, gamma=0.5), E),
           [S.StepSchedule(0.1, 3, 0.5)(e) for e in range(E)])
    _close(_torch_sequence(lambda o: sch.MultiStepLR(o, milestones=[10, 25], gamma=0.3), E),
           [S.MultiStepSchedule(0.1, (10, 25), 0.3)(e) for e in range(E)])
    # CosineAnnealingLR (recursive form) == the closed form, past T_max too (the LR rises again).
    _close(_torch_sequence(lambda o: sch.CosineAnnealingLR(o, T_max=50, eta_min=0.001), E),
           [S.pcdarts_cosine_lr(e, 0.1, 50, 0.001) for e in range(E)])
    _close(_torch_sequence(lambda o: sch.LambdaLR(o, lambda s: S.cream_supernet_factor(s, 1.0, 40)), E),
           [S.cream_supernet_lr(e, 0.1, 1.0, 40) for e in range(E)])
    _close(_torch_sequence(lambda o: sch.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=40), E),
           [S.LinearSchedule(0.1, 40, lr_min=0.01)(e) for e in range(E)])


def test_against_paddle_schedulers():
    paddle = importlib.import_module("paddle")
    lr = paddle.optimizer.lr
    E = 70
    _close(_paddle_sequence(lr.StepDecay(0.1, step_size=3, gamma=0.5), E),
           [S.StepSchedule(0.1, 3, 0.5)(e) for e in range(E)])
    _close(_paddle_sequence(lr.MultiStepDecay(0.1, milestones=[10, 25], gamma=0.3), E),
           [S.MultiStepSchedule(0.1, (10, 25), 0.3)(e) for e in range(E)])
    _close(_paddle_sequence(lr.CosineAnnealingDecay(0.1, T_max=50, eta_min=0.001), E),
           [S.pcdarts_cosine_lr(e, 0.1, 50, 0.001) for e in range(E)])
    _close(_paddle_sequence(lr.LambdaDecay(0.1, lambda s: S.cream_supernet_factor(s, 1.0, 40)), E),
           [S.cream_supernet_lr(e, 0.1, 1.0, 40) for e in range(E)])
    _close(_paddle_sequence(lr.PolynomialDecay(0.1, decay_steps=40, end_lr=0.01, power=1.0), E),
           [S.LinearSchedule(0.1, 40, lr_min=0.01)(e) for e in range(E)])
    # Paddle's LinearWarmup around a scheduler *delays* it: that is warmup_prefix=True.
    _close(_paddle_sequence(lr.LinearWarmup(lr.StepDecay(0.1, 3, 0.5), warmup_steps=5, start_lr=0.0, end_lr=0.1), E),
           [S.StepSchedule(0.1, 3, 0.5, warmup_epochs=5, warmup_lr=0.0, warmup_prefix=True)(e) for e in range(E)])


def test_against_timm_schedulers():
    torch = importlib.import_module("torch")
    timm_scheduler = importlib.import_module("timm.scheduler")

    def timm_sequence(make, epochs):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.064)
        sched = make(opt)
        out = []
        for e in range(epochs):
            sched.step(e)  # timm: step(epoch) sets the LR of epoch e
            out.append(opt.param_groups[0]["lr"])
        return out

    E = 530
    cos = timm_sequence(lambda o: timm_scheduler.CosineLRScheduler(
        o, t_initial=500, lr_min=1e-5, warmup_t=3, warmup_lr_init=1e-6, cycle_limit=1), E)
    _close(cos, [S.CosineSchedule(0.064, 500, 1e-5, cooldown_epochs=10, warmup_epochs=3, warmup_lr=1e-6)(e)
                 for e in range(E)])
    # timm >= 0.6 defaults StepLRScheduler to warmup_prefix=True; Cream's timm 0.1.20 had the unshifted form.
    step = timm_sequence(lambda o: timm_scheduler.StepLRScheduler(
        o, decay_t=2.4, decay_rate=0.973, warmup_t=3, warmup_lr_init=1e-6, warmup_prefix=False), E)
    _close(step, [S.StepSchedule(0.064, 2.4, 0.973, warmup_epochs=3, warmup_lr=1e-6)(e) for e in range(E)])


def test_pcdarts_linear_schedule_is_the_reference_formula():
    """configs/pcdarts_imagenet.yaml: SCHED.NAME pcdarts_linear gives train_imagenet.py's per-epoch LRs
    (shared/research/pcdarts.md §3.5: e0 0.1, e1 0.2, e4 0.5, e5 0.489796, e100 0.295918, e244 0.002041, e249 0.000408)."""
    from common.config import load_config

    cfg = load_config("configs/pcdarts_imagenet.yaml")
    schedule = S.build_schedule(cfg)
    want = {0: 0.1, 1: 0.2, 4: 0.5, 5: 0.489796, 100: 0.295918, 244: 0.002041, 245: 0.002041, 249: 0.000408}
    for epoch, lr in want.items():
        assert schedule(epoch) == pytest.approx(lr, abs=5e-7)
    assert all(schedule(e) == S.pcdarts_imagenet_linear_lr(e) for e in range(250))
    no_warmup = S.build_schedule(load_config("configs/pcdarts_imagenet.yaml", ["SCHED.WARMUP_EPOCHS", "0"]))
    assert no_warmup(0) == 0.5


def test_epoch_shift_reproduces_the_pcdarts_scripts_on_new_pytorch():
    """SCHED.EPOCH_SHIFT 1: epoch e trains with eta(e + 1), the last epoch at MIN_LR (research pcdarts.md §2.3)."""
    from common.config import load_config
    from common.schedules import build_schedule, pcdarts_cosine_lr

    base = ["SCHED.NAME", "cosine", "TRAIN.EPOCHS", "50", "OPTIM.LR", "0.1"]
    paper = build_schedule(load_config(None, base))
    shifted = build_schedule(load_config(None, base + ["SCHED.EPOCH_SHIFT", "1"]))
    for e in (0, 15, 49):
        assert paper.lr_at(e) == pytest.approx(pcdarts_cosine_lr(e, 0.1, 50))
        assert shifted.lr_at(e) == pytest.approx(pcdarts_cosine_lr(e + 1, 0.1, 50))
    assert shifted.lr_at(0) == pytest.approx(0.0999013, abs=1e-7) and shifted.lr_at(49) == 0.0


def test_staircase_warmup_is_the_scripts_lr_times_e_plus_1_over_w():
    from common.config import load_config
    from common.schedules import build_schedule

    cfg = load_config(None, ["SCHED.NAME", "cosine", "TRAIN.EPOCHS", "50", "OPTIM.LR", "0.5", "SCHED.WARMUP_EPOCHS", "5",
                             "SCHED.WARMUP_STYLE", "staircase"])
    sched = build_schedule(cfg)
    assert [sched.lr_at(e) for e in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert sched.lr_at(4.5) == pytest.approx(0.5)          # per epoch, not per step
    assert sched.lr_at(5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 50)) / 2)


@pytest.mark.parametrize("epochs,steps", [(3, 7), (200, 16), (1, 5)])
def test_one_cycle_equals_torch_one_cycle_lr_and_its_momentum(epochs, steps):
    """``one_cycle`` is torch's OneCycleLR (cosine, two phases) update by update, Adam's beta1 cycle included
    (NCP's predictor recipe: peak 1e-2, 30% rising, div 10, final div 1e4, beta1 0.85..0.95)."""
    torch = pytest.importorskip("torch")
    cfg = get_default_config()
    merge_overrides(cfg, ["SCHED.NAME", "one_cycle", "OPTIM.LR", "0.01", "TRAIN.EPOCHS", str(epochs)])
    sched = S.build_schedule(cfg)
    sched.bind_steps(steps)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=0.01)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=epochs * steps, pct_start=0.3,
                                              div_factor=10.0, final_div_factor=1e4, base_momentum=0.85,
                                              max_momentum=0.95)
    for k in range(epochs * steps):
        t = (k // steps) + (k % steps) / steps
        group = opt.param_groups[0]
        assert sched(t) == pytest.approx(group["lr"], rel=1e-12, abs=1e-18), k
        assert sched.momentum_at(t) == pytest.approx(group["betas"][0], rel=1e-12), k
        opt.step()
        ref.step()


def test_one_cycle_needs_its_steps_and_refuses_a_warmup():
    cfg = get_default_config()
    merge_overrides(cfg, ["SCHED.NAME", "one_cycle", "TRAIN.EPOCHS", "4"])
    sched = S.build_schedule(cfg)
    with pytest.raises(ValueError, match="steps per epoch"):
        sched(0.0)
    merge_overrides(cfg, ["SCHED.WARMUP_EPOCHS", "1"])
    with pytest.raises(ValueError, match="SCHED.WARMUP_EPOCHS 0"):
        S.build_schedule(cfg)
    merge_overrides(cfg, ["SCHED.WARMUP_EPOCHS", "0", "SCHED.CYCLE_MOMENTUM", "[]"])
    sched = S.build_schedule(cfg)
    sched.bind_steps(3)
    assert sched.momentum_at(1.0) is None


def test_poly_equals_the_segmentation_formula():
    cfg = get_default_config()
    merge_overrides(cfg, ["SCHED.NAME", "poly", "OPTIM.LR", "0.01", "TRAIN.EPOCHS", "10", "SCHED.PER_STEP", "True"])
    sched = S.build_schedule(cfg)
    for t in (0.0, 0.5, 3.25, 9.99, 10.0):
        assert sched(t) == pytest.approx(0.01 * (1 - t / 10) ** 0.9, rel=1e-12, abs=0.0)
