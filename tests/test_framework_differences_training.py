"""anchors.md §3.3 rows 13-20 and 23: torch vs paddle training semantics.

Each test shows (a) what the raw framework APIs do, differing or agreeing as the row says, so a framework upgrade
that changes it fails here, and (b) that our twin optimizer / schedule / loss gives the same numbers on both
backends (and the formula of the reference it follows).  Everything runs in float64, where equal formulas agree
to ~1e-16; a difference of 1e-9..1e-7 in float64 is a float32 hyper-parameter inside a paddle kernel (noted where
it happens).
"""
from __future__ import annotations

import importlib
import inspect
import warnings

import numpy as np
import paddle
import pytest
import torch

from common import optim_reference as ref
from common import schedules as S
from conftest import paddle_default_dtype
from paddle_impl import losses as plosses
from paddle_impl import optim as popt
from torch_impl import losses as tlosses
from torch_impl import optim as topt

EQ = 1e-12  # equal formulas in float64
F32_EPS = float(np.finfo(np.float32).eps)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: tiny tensors, one torch thread

_rng = np.random.default_rng(0)
W0 = _rng.standard_normal((3, 4))
XS = [_rng.standard_normal((5, 3)) for _ in range(6)]


def _np(t) -> np.ndarray:
    return t.detach().numpy() if isinstance(t, torch.Tensor) else (t.numpy() if hasattr(t, "numpy") else np.asarray(t))


def _maxdiff(a, b) -> float:
    a, b = _np(a), _np(b)
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ------------------------------------------------------------------------------------------------ harness
def t_param(value):
    return torch.nn.Parameter(torch.tensor(np.asarray(value, np.float64)))


def p_param(value, attr=None):
    value = np.asarray(value, np.float64)
    return paddle.create_parameter(list(value.shape), "float64", attr=attr,
                                   default_initializer=paddle.nn.initializer.Assign(value))


def t_loss(w, x):
    return (torch.from_numpy(x) @ w).square().sum()


def p_loss(w, x):
    return (paddle.to_tensor(x) @ w).square().sum()


def torch_fit(make, steps=5, clip=None):
    """Fit W0 to the quadratic loss with ``make(w)`` -> (optimizer, step_fn(k))."""
    w = t_param(W0)
    opt, step = make(w)
    for k, x in enumerate(XS[:steps]):
        opt.zero_grad()
        t_loss(w, x).backward()
        if clip is not None:
            clip(w)
        step(k)
    return w.detach().numpy()


def paddle_fit(make, steps=5, clip=None):
    w = p_param(W0)
    opt, step = make(w)
    for k, x in enumerate(XS[:steps]):
        if hasattr(opt, "clear_grad"):
            opt.clear_grad()
        else:
            opt.zero_grad()
        p_loss(w, x).backward()
        if clip is not None:
            clip(w)
        step(k)
    return w.numpy()


def raw(opt):
    return opt, lambda k: opt.step()


def twin(opt, lr=0.01):
    return opt, lambda k: opt.step(lr(k) if callable(lr) else lr)


def numpy_fit(update, steps=5):
    """Fit with a numpy update rule ``update(w, g, k, state) -> w``."""
    w, state = W0.copy(), {}
    for k, x in enumerate(XS[:steps]):
        g = 2.0 * x.T @ (x @ w)
        w = update(w, g, k, state)
    return w


# ------------------------------------------------------------------------------------------------ row 13
def test_row13_group_lr_is_absolute_in_torch_and_a_multiplier_in_paddle():
    tw = t_param([1.0])
    topt_ = torch.optim.SGD([{"params": [tw], "lr": 0.5}], lr=0.1)
    tw.sum().backward()
    topt_.step()
    pw = p_param([1.0])
    popt_ = paddle.optimizer.SGD(learning_rate=0.1, parameters=[{"params": [pw], "learning_rate": 0.5}])
    pw.sum().backward()
    popt_.step()
    assert 1.0 - float(tw.detach()[0]) == pytest.approx(0.5, abs=EQ)     # absolute
    assert 1.0 - float(pw.numpy()[0]) == pytest.approx(0.05, abs=EQ)     # 0.5 x 0.1

    # Twin: lr_scale multiplies step(lr) in both backends.
    def run(mod, param, sum_):
        a, b = param([1.0]), param([1.0])
        o = mod.SGD([{"params": [("a", a)], "lr_scale": 0.5}, {"params": [("b", b)]}])
        sum_(a, b).backward()
        o.step(0.1)
        return 1.0 - np.concatenate([_np(a), _np(b)])

    t = run(topt, t_param, lambda a, b: a.sum() + b.sum())
    p = run(popt, p_param, lambda a, b: a.sum() + b.sum())
    assert _maxdiff(t, [0.05, 0.1]) <= EQ and _maxdiff(p, [0.05, 0.1]) <= EQ


# ------------------------------------------------------------------------------------------------ row 14
def _two_steps_torch(make_opt, zero):
    w, u = t_param([1.0]), t_param([1.0])
    opt = make_opt([w, u])
    for k in range(2):
        zero(opt)
        ((w.sum() if k == 0 else 0.0) + u.sum()).backward()
        opt.step() if not hasattr(opt, "hyper") else opt.step(0.1)
    return float(w.detach()[0])


def _two_steps_paddle(make_opt, zero):
    w, u = p_param([1.0]), p_param([1.0])
    opt = make_opt([w, u])
    for k in range(2):
        zero(opt)
        loss = w.sum() + u.sum() if k == 0 else u.sum()
        loss.backward()
        opt.step() if not hasattr(opt, "hyper") else opt.step(0.1)
    return float(w.numpy()[0])


def test_row14_unused_parameters_zero_grad_vs_clear_grad():
    t_sgd = lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1)
    p_mom = lambda ps: paddle.optimizer.Momentum(0.1, 0.9, parameters=ps, weight_decay=0.1)
    torch_default = _two_steps_torch(t_sgd, lambda o: o.zero_grad())                     # set_to_none=True
    paddle_default = _two_steps_paddle(p_mom, lambda o: o.clear_grad())                  # set_to_zero=True
    torch_zeros = _two_steps_torch(t_sgd, lambda o: o.zero_grad(set_to_none=False))
    paddle_none = _two_steps_paddle(p_mom, lambda o: o.clear_grad(set_to_zero=False))
    # w gets a gradient on step 1 only: torch skips it on step 2, paddle's zeros keep momentum and decay going.
    assert torch_default == pytest.approx(0.89, abs=1e-12)
    assert paddle_default == pytest.approx(0.7821, abs=1e-7)   # paddle keeps momentum 0.9 as float32 (~1e-9)
    assert torch_zeros == pytest.approx(paddle_default, abs=1e-7)
    assert paddle_none == pytest.approx(torch_default, abs=1e-7)

    # Twin: both conventions, both backends, identical.
    for unused, want in (("skip", 0.89), ("zero", 0.7821)):
        mk_t = lambda ps, u=unused: topt.SGD([(f"p{i}", p) for i, p in enumerate(ps)], momentum=0.9,
                                             weight_decay=0.1, unused_grads=u)
        mk_p = lambda ps, u=unused: popt.SGD([(f"p{i}", p) for i, p in enumerate(ps)], momentum=0.9,
                                             weight_decay=0.1, unused_grads=u)
        t = _two_steps_torch(mk_t, lambda o: o.zero_grad())
        p = _two_steps_paddle(mk_p, lambda o: o.zero_grad())
        assert t == pytest.approx(want, abs=EQ) and p == pytest.approx(want, abs=EQ), unused
        assert abs(t - p) <= EQ


# ------------------------------------------------------------------------------------------------ row 15
def test_row15_sgd_momentum_nesterov():
    # API: paddle SGD has no momentum; Momentum's default momentum is 0.9 where torch SGD's is 0.
    assert "momentum" not in inspect.signature(paddle.optimizer.SGD.__init__).parameters
    assert inspect.signature(paddle.optimizer.Momentum.__init__).parameters["momentum"].default == 0.9
    assert inspect.signature(torch.optim.SGD.__init__).parameters["momentum"].default == 0

    lr, wd = 2.0 ** -6, 0.125   # exact in float32, see below
    for nesterov in (False, True):
        for mu in (0.5, 0.9):
            t = torch_fit(lambda w: raw(torch.optim.SGD([w], lr=lr, momentum=mu, nesterov=nesterov,
                                                        weight_decay=wd)))
            p = paddle_fit(lambda w: raw(paddle.optimizer.Momentum(lr, mu, parameters=[w], use_nesterov=nesterov,
                                                                   weight_decay=wd)))
            if mu == 0.5:   # same formula (lr outside the buffer, buf = g on the first step)
                assert _maxdiff(t, p) <= EQ, (nesterov, mu)
            else:           # paddle's kernel keeps mu as float32: 0.9 -> 0.89999998, a ~1e-8 drift in float64
                assert 1e-10 < _maxdiff(t, p) < 1e-6, (nesterov, mu, _maxdiff(t, p))
    damp = torch_fit(lambda w: raw(torch.optim.SGD([w], lr=lr, momentum=0.5, dampening=0.9)))
    p = paddle_fit(lambda w: raw(paddle.optimizer.Momentum(lr, 0.5, parameters=[w])))
    assert _maxdiff(damp, p) > 1e-3    # dampening has no paddle counterpart

    # Twin == torch.optim.SGD, on both backends, with mu = 0.9 too.
    for nesterov in (False, True):
        want = torch_fit(lambda w: raw(torch.optim.SGD([w], lr=0.01, momentum=0.9, nesterov=nesterov,
                                                       weight_decay=0.1)))
        t = torch_fit(lambda w: twin(topt.SGD([("w", w)], momentum=0.9, nesterov=nesterov, weight_decay=0.1)))
        p = paddle_fit(lambda w: twin(popt.SGD([("w", w)], momentum=0.9, nesterov=nesterov, weight_decay=0.1)))
        assert _maxdiff(t, want) <= EQ and _maxdiff(p, want) <= EQ


# ------------------------------------------------------------------------------------------------ row 16
def test_row16_adam_epsilon_placement():
    eps = 0.1  # large enough to expose where it sits
    t = torch_fit(lambda w: raw(torch.optim.Adam([w], lr=0.01, eps=eps)))
    p = paddle_fit(lambda w: raw(paddle.optimizer.Adam(0.01, epsilon=eps, parameters=[w])))
    assert _maxdiff(t, p) <= EQ   # the kernel scales eps by sqrt(1 - b2^t): the same as torch

    def doc_formula(w, g, k, st):  # the API page's formula: lr_t = lr sqrt(1-b2^t)/(1-b1^t); w -= lr_t m/(sqrt(v)+eps)
        st["m"] = 0.9 * st.get("m", 0.0) + 0.1 * g
        st["v"] = 0.999 * st.get("v", 0.0) + 0.001 * g * g
        t_ = k + 1
        lr_t = 0.01 * np.sqrt(1 - 0.999 ** t_) / (1 - 0.9 ** t_)
        return w - lr_t * st["m"] / (np.sqrt(st["v"]) + eps)

    assert _maxdiff(numpy_fit(doc_formula), p) > 1e-4   # the documented formula is not what runs

    tt = torch_fit(lambda w: twin(topt.Adam([("w", w)], eps=eps)))
    pt = paddle_fit(lambda w: twin(popt.Adam([("w", w)], eps=eps)))
    assert _maxdiff(tt, t) <= EQ and _maxdiff(pt, t) <= EQ


# ------------------------------------------------------------------------------------------------ row 17
def test_row17_rmsprop_three_different_optimizers():
    timm_optim = importlib.import_module("timm.optim")
    lr, alpha, eps, mu = 0.01, 0.9, 0.1, 0.9
    t = torch_fit(lambda w: raw(torch.optim.RMSprop([w], lr=lr, alpha=alpha, eps=eps, momentum=mu)))
    p = paddle_fit(lambda w: raw(paddle.optimizer.RMSProp(lr, rho=alpha, epsilon=eps, momentum=mu, parameters=[w])))
    tf = torch_fit(lambda w: raw(timm_optim.RMSpropTF([w], lr=lr, alpha=alpha, eps=eps, momentum=mu)))
    assert _maxdiff(t, p) > 1e-3 and _maxdiff(t, tf) > 1e-3 and _maxdiff(p, tf) > 1e-3

    def paddle_formula(w, g, k, st, f32=True):  # r0 = 0, eps inside the sqrt, lr inside the buffer
        a, e, m = (float(np.float32(v)) for v in (alpha, eps, mu)) if f32 else (alpha, eps, mu)
        st["r"] = a * st.get("r", 0.0) + (1 - a) * g * g
        st["v"] = m * st.get("v", 0.0) + lr * g / np.sqrt(st["r"] + e)
        return w - st["v"]

    assert _maxdiff(numpy_fit(paddle_formula), p) <= EQ   # with paddle's float32 rho/epsilon/momentum attributes
    assert _maxdiff(numpy_fit(lambda *a: paddle_formula(*a, f32=False)), p) > 1e-10

    # Twins: RMSprop == torch.optim.RMSprop, RMSpropTF == timm RMSpropTF, each equal on both backends.
    sched = lambda k: 0.01 * (1 + k)  # a changing LR separates "lr inside" from "lr outside" the buffer
    want_t = torch_fit(lambda w: (lambda o: (o, lambda k: ([g.__setitem__("lr", sched(k)) for g in o.param_groups],
                                                             o.step())))(
        torch.optim.RMSprop([w], lr=lr, alpha=alpha, eps=eps, momentum=mu)))
    want_tf = torch_fit(lambda w: (lambda o: (o, lambda k: ([g.__setitem__("lr", sched(k)) for g in o.param_groups],
                                                              o.step())))(
        timm_optim.RMSpropTF([w], lr=lr, alpha=alpha, eps=eps, momentum=mu)))
    kw = dict(alpha=alpha, eps=eps, momentum=mu)
    for mod_t, want in ((topt.RMSprop, want_t), (topt.RMSpropTF, want_tf)):
        mod_p = getattr(popt, mod_t.__name__)
        a = torch_fit(lambda w: twin(mod_t([("w", w)], **kw), sched))
        b = paddle_fit(lambda w: twin(mod_p([("w", w)], **kw), sched))
        assert _maxdiff(a, want) <= EQ and _maxdiff(b, want) <= EQ, mod_t.__name__


# ------------------------------------------------------------------------------------------------ row 18
def test_row18_weight_decay_semantics():
    # Coupled L2 in both: torch weight_decay == paddle float weight_decay == L2Decay(coeff).
    t = torch_fit(lambda w: raw(torch.optim.Adam([w], lr=0.01, weight_decay=0.1)))
    p = paddle_fit(lambda w: raw(paddle.optimizer.Adam(0.01, parameters=[w], weight_decay=0.1)))
    p_l2 = paddle_fit(lambda w: raw(paddle.optimizer.Adam(0.01, parameters=[w],
                                                          weight_decay=paddle.regularizer.L2Decay(0.1))))
    assert _maxdiff(t, p) <= EQ and _maxdiff(p, p_l2) <= EQ
    # Decoupled AdamW in both (paddle keeps the coefficient as float32: exact for 0.125, ~1e-11 off for 0.05).
    t = torch_fit(lambda w: raw(torch.optim.AdamW([w], lr=2.0 ** -6, weight_decay=0.125)))
    p = paddle_fit(lambda w: raw(paddle.optimizer.AdamW(2.0 ** -6, parameters=[w], weight_decay=0.125)))
    assert _maxdiff(t, p) <= EQ
    t = torch_fit(lambda w: raw(torch.optim.AdamW([w], lr=2.0 ** -6, weight_decay=0.05)))
    p = paddle_fit(lambda w: raw(paddle.optimizer.AdamW(2.0 ** -6, parameters=[w], weight_decay=0.05)))
    assert 1e-14 < _maxdiff(t, p) < 1e-8
    # A ParamAttr regularizer overrides the optimizer's weight decay.
    w_attr = p_param(W0, attr=paddle.ParamAttr(regularizer=paddle.regularizer.L2Decay(0.0)))
    w_plain = p_param(W0)
    o = paddle.optimizer.SGD(0.1, parameters=[w_attr, w_plain], weight_decay=0.5)
    (w_attr.sum() * 0.0 + w_plain.sum() * 0.0).backward()
    o.step()
    assert _maxdiff(w_attr.numpy(), W0) == 0.0 and _maxdiff(w_plain.numpy(), W0 * (1 - 0.05)) <= EQ
    # AdamW's apply_decay_param_fun sees paddle's unique parameter names, not structured ones.
    seen = []
    layer = paddle.nn.Linear(3, 4)
    opt = paddle.optimizer.AdamW(0.01, parameters=layer.parameters(),
                                 apply_decay_param_fun=lambda n: seen.append(n) or True)
    layer(paddle.ones([2, 3])).sum().backward()
    opt.step()
    assert seen and all(n.startswith("linear_") for n in seen) and "weight" not in seen

    # Twin: no-decay group by structured names (timm rule), coupled / decoupled exactly as torch.
    t_lin = torch.nn.Linear(3, 4).double()
    with paddle_default_dtype("float64"):
        p_lin = paddle.nn.Linear(3, 4)
    wt, bt = _rng.standard_normal((4, 3)), _rng.standard_normal(4)
    with torch.no_grad():
        t_lin.weight.copy_(torch.from_numpy(wt))
        t_lin.bias.copy_(torch.from_numpy(bt))
    p_lin.weight.set_value(wt.T.copy())
    p_lin.bias.set_value(bt.copy())
    groups_t = topt.param_groups(t_lin.named_parameters(), weight_decay=0.1)
    groups_p = popt.param_groups(p_lin.named_parameters(), weight_decay=0.1)
    assert [[n for n, _ in g["params"]] for g in groups_t] == [["bias"], ["weight"]]
    assert [[n for n, _ in g["params"]] for g in groups_p] == [["bias"], ["weight"]]
    ref_t = torch.nn.Linear(3, 4).double()
    ref_t.load_state_dict(t_lin.state_dict())
    want = torch.optim.AdamW([{"params": [ref_t.bias], "weight_decay": 0.0},
                              {"params": [ref_t.weight], "weight_decay": 0.1}], lr=0.01)
    ot, op = topt.AdamW(groups_t), popt.AdamW(groups_p, model=p_lin)
    for x in XS:
        for o, mod, inp in ((want, ref_t, torch.from_numpy(x)), (ot, t_lin, torch.from_numpy(x)),
                            (op, p_lin, paddle.to_tensor(x))):
            o.zero_grad()
            mod(inp).square().sum().backward()
            o.step() if o is want else o.step(0.01)
    assert _maxdiff(t_lin.weight.detach(), ref_t.weight.detach()) <= EQ
    assert _maxdiff(p_lin.weight.numpy().T, ref_t.weight.detach()) <= EQ
    assert _maxdiff(p_lin.bias.numpy(), ref_t.bias.detach()) <= EQ
    st_t, st_p = ot.state_to_neutral(), op.state_to_neutral()
    for slot in ("exp_avg", "exp_avg_sq"):
        assert _maxdiff(st_t.slots[slot]["weight"], st_p.slots[slot]["weight"]) <= EQ   # paddle slot transposed


# ------------------------------------------------------------------------------------------------ row 19
def test_row19_gradient_clipping():
    max_norm = 1.0
    g = np.array([[1.2, -1.6], [0.0, 0.0]])  # global norm 2 -> clipped by ~1/2
    # torch: explicit clip_grad_norm_, coef = max_norm / (norm + 1e-6)
    tw = t_param(np.zeros((2, 2)))
    tw.grad = torch.from_numpy(g.copy())
    total = torch.nn.utils.clip_grad_norm_([tw], max_norm)
    assert float(total) == pytest.approx(2.0, abs=EQ)
    assert _maxdiff(tw.grad, g * (max_norm / (2.0 + 1e-6))) <= EQ
    # paddle: ClipGradByGlobalNorm inside step(), factor max_norm / max(norm, max_norm), no epsilon
    pw = p_param(np.zeros((2, 2)))
    o = paddle.optimizer.SGD(1.0, parameters=[pw], grad_clip=paddle.nn.ClipGradByGlobalNorm(max_norm))
    (pw * paddle.to_tensor(g)).sum().backward()
    o.step()
    assert _maxdiff(-pw.numpy(), g * 0.5) <= EQ
    assert 1e-8 < _maxdiff(-pw.numpy(), tw.grad) < 1e-5      # the 1e-6 epsilon is the whole difference
    # paddle.nn.utils.clip_grad_norm_ has torch's formula
    pw2 = p_param(np.zeros((2, 2)))
    (pw2 * paddle.to_tensor(g)).sum().backward()
    paddle.nn.utils.clip_grad_norm_([pw2], max_norm)
    assert _maxdiff(pw2.grad.numpy(), tw.grad) <= EQ

    # Both clip before weight decay is added (mu exact in float32 to keep paddle's Momentum exact).
    lr, wd, mu = 2.0 ** -6, 0.5, 0.5

    def clip_t(w):
        torch.nn.utils.clip_grad_norm_([w], 5.0)

    t = torch_fit(lambda w: raw(torch.optim.SGD([w], lr=lr, momentum=mu, weight_decay=wd)), clip=clip_t)
    p = paddle_fit(lambda w: raw(paddle.optimizer.Momentum(lr, mu, parameters=[w], weight_decay=wd,
                                                           grad_clip=paddle.nn.ClipGradByGlobalNorm(5.0))))

    def clip_after_decay(w, g_, k, st):   # the other order, for contrast
        g_ = g_ + wd * w
        g_ = g_ * min(5.0 / (np.linalg.norm(g_) + 1e-6), 1.0)
        st["b"] = g_ if "b" not in st else mu * st["b"] + g_
        return w - lr * st["b"]

    assert _maxdiff(t, p) < 1e-6 and _maxdiff(numpy_fit(clip_after_decay), t) > 1e-3

    # Twin: clip_grad_norm == torch's clip_grad_norm_ on both backends, then the same step.
    for mod, fit in ((topt, torch_fit), (popt, paddle_fit)):
        holder = {}

        def make(w, mod=mod):
            holder["o"] = mod.SGD([("w", w)], momentum=mu, weight_decay=wd)
            return twin(holder["o"], lr)

        got = fit(make, clip=lambda w: holder["o"].clip_grad_norm(5.0))
        assert _maxdiff(got, t) <= EQ, mod.__name__
    grads = {"a": g, "b": np.ones(3)}
    clipped, total = ref.clip_grad_norm_ref(grads, max_norm)
    tt = [torch.from_numpy(v.copy()) for v in grads.values()]
    pp = [paddle.to_tensor(v.copy()) for v in grads.values()]
    t_total, p_total = topt.clip_grad_norm(tt, max_norm), popt.clip_grad_norm(pp, max_norm)
    assert abs(float(t_total) - total) <= EQ and abs(float(p_total) - total) <= EQ
    for k, a, b in zip(grads, tt, pp):
        assert _maxdiff(a, clipped[k]) <= EQ and _maxdiff(b.numpy(), clipped[k]) <= EQ


# ------------------------------------------------------------------------------------------------ row 20
def test_row20_schedulers():
    # Paddle: get_lr() is the update rule. On a chainable scheduler it applies the recursion once more.
    ps = paddle.optimizer.lr.CosineAnnealingDecay(0.1, T_max=50)
    o = torch.optim.SGD([t_param([0.0])], lr=0.1)
    ts = torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=50)
    for _ in range(15):
        ps.step()
        o.step()
        ts.step()
    current = S.pcdarts_cosine_lr(15, 0.1, 50)
    assert ps.last_lr == pytest.approx(current, abs=EQ) and ps() == pytest.approx(current, abs=EQ)
    assert abs(ps.get_lr() - current) > 1e-3                  # 0.0769826 vs 0.0793893
    assert ps.last_lr == pytest.approx(current, abs=EQ)       # (get_lr does not store its value)
    # Torch: scheduler edits the optimizer's group lr; get_last_lr() is the getter; get_lr() warns and recurses.
    assert o.param_groups[0]["lr"] == pytest.approx(current, abs=EQ)
    assert ts.get_last_lr()[0] == pytest.approx(current, abs=EQ)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recursed = ts.get_lr()[0]
    assert any("get_last_lr" in str(w.message) for w in caught)
    assert recursed == pytest.approx(ps.get_lr(), abs=EQ)
    # Paddle: the scheduler is *passed as* learning_rate and the optimizer reads it.
    p_opt = paddle.optimizer.SGD(learning_rate=ps, parameters=[p_param([0.0])])
    assert p_opt.get_lr() == pytest.approx(current, abs=EQ)

    # Twin: the closed form from common/schedules drives both twin optimizers identically.
    sched = S.CosineSchedule(0.1, t_initial=4, lr_min=0.001, warmup_epochs=1, warmup_lr=0.01, per_step=True)
    lr_of = lambda k: sched.lr_for(k // 2, k % 2, 2)
    a = torch_fit(lambda w: twin(topt.SGD([("w", w)], momentum=0.9), lr_of), steps=6)
    b = paddle_fit(lambda w: twin(popt.SGD([("w", w)], momentum=0.9), lr_of), steps=6)

    def sgd(w, g, k, st):
        st["b"] = g if "b" not in st else 0.9 * st["b"] + g
        return w - lr_of(k) * st["b"]

    assert _maxdiff(a, b) <= EQ and _maxdiff(a, numpy_fit(sgd, steps=6)) <= EQ


# ------------------------------------------------------------------------------------------------ row 23
def test_row23_cross_entropy_axis_and_label_smoothing():
    rng = np.random.default_rng(3)
    x4, y4 = rng.standard_normal((2, 3, 4, 5)), rng.integers(0, 3, (2, 4, 5))
    x2, y2 = rng.standard_normal((6, 7)), rng.integers(0, 7, 6)
    tF, pF = torch.nn.functional, paddle.nn.functional
    # (N, C): the same; (N, C, H, W): torch's class axis is 1, paddle's default is -1 (here: a shape error).
    assert abs(float(tF.cross_entropy(torch.tensor(x2), torch.tensor(y2))) -
               float(pF.cross_entropy(paddle.to_tensor(x2), paddle.to_tensor(y2)))) <= EQ
    with pytest.raises(ValueError):
        pF.cross_entropy(paddle.to_tensor(x4), paddle.to_tensor(y4))
    assert abs(float(tF.cross_entropy(torch.tensor(x4), torch.tensor(y4))) -
               float(pF.cross_entropy(paddle.to_tensor(x4), paddle.to_tensor(y4), axis=1))) <= EQ
    # label_smoothing: the same formula; paddle holds epsilon as float32 (8e-9 apart in float64), and refuses it
    # together with axis=1 on 4-D input.
    d = abs(float(tF.cross_entropy(torch.tensor(x2), torch.tensor(y2), label_smoothing=0.1)) -
            float(pF.cross_entropy(paddle.to_tensor(x2), paddle.to_tensor(y2), label_smoothing=0.1)))
    assert d < 1e-7
    with pytest.raises(ValueError):
        pF.cross_entropy(paddle.to_tensor(x4), paddle.to_tensor(y4), axis=1, label_smoothing=0.1)

    # Twin: class axis 1 on both backends, timm LabelSmoothingCrossEntropy formula.
    for x, y in ((x2, y2), (x4, y4)):
        for s in (0.0, 0.1):
            a = float(tlosses.cross_entropy(torch.tensor(x), torch.tensor(y), s))
            b = float(plosses.cross_entropy(paddle.to_tensor(x), paddle.to_tensor(y), s))
            want = float(tF.cross_entropy(torch.tensor(x), torch.tensor(y), label_smoothing=s))
            assert abs(a - want) <= EQ and abs(b - want) <= EQ, (x.shape, s)
    assert abs(float(tlosses.cross_entropy(torch.tensor(x2), torch.tensor(y2), 0.1)) -
               ref.cross_entropy_ref(x2, y2, 0.1)) <= EQ
    timm_loss = importlib.import_module("timm.loss")
    assert abs(float(timm_loss.LabelSmoothingCrossEntropy(0.1)(torch.tensor(x2), torch.tensor(y2))) -
               float(plosses.cross_entropy(paddle.to_tensor(x2), paddle.to_tensor(y2), 0.1))) <= EQ
    probs = rng.dirichlet(np.ones(7), size=6)
    a = float(tlosses.soft_target_cross_entropy(torch.tensor(x2), torch.tensor(probs)))
    b = float(plosses.soft_target_cross_entropy(paddle.to_tensor(x2), paddle.to_tensor(probs)))
    assert abs(a - b) <= EQ and abs(a - ref.soft_target_cross_entropy_ref(x2, probs)) <= EQ
    assert abs(a - float(timm_loss.SoftTargetCrossEntropy()(torch.tensor(x2), torch.tensor(probs)))) <= EQ


# ------------------------------------------------------------------------------------------------ NEW
@pytest.mark.skipif(paddle.is_compiled_with_cuda(), reason="documents the CPU build's kernels")
def test_new_paddle_cpu_softmax_family_clamps_at_minus_64():
    """NEW (not in anchors.md, found by the parity harness on PNASNet-5 Mobile with a 10-class head, whose TF
    fan-out init gives logits spread over ~100): paddle's CPU log_softmax, softmax and cross_entropy clamp
    ``x - max`` at -64, so a logit more than 64 below the row's largest gets log-probability -64 (softmax
    e^-64).  torch computes the true values.  The twins' losses use the unclamped formula in both backends."""
    tF, pF = torch.nn.functional, paddle.nn.functional
    x = np.array([[90.0, 1.0, -5.0], [2.0, 1.0, 0.5]])     # row 0: two logits 89 and 95 below the max
    y = np.array([1, 0])
    true_logp = x - x.max(1, keepdims=True)
    true_logp -= np.log(np.exp(true_logp).sum(1, keepdims=True))
    assert np.abs(tF.log_softmax(torch.tensor(x), 1).numpy() - true_logp).max() <= EQ
    clamped = pF.log_softmax(paddle.to_tensor(x), axis=1).numpy()
    assert clamped[0, 1] == clamped[0, 2] == -64.0 and np.abs(clamped[1] - true_logp[1]).max() <= EQ
    assert pF.softmax(paddle.to_tensor(x), axis=1).numpy()[0, 2] == pytest.approx(np.exp(-64.0), rel=1e-12)
    assert float(pF.cross_entropy(paddle.to_tensor(x[:1]), paddle.to_tensor(y[:1]))) == pytest.approx(64.0)
    assert float(tF.cross_entropy(torch.tensor(x[:1]), torch.tensor(y[:1]))) == pytest.approx(89.0, abs=1e-12)
    # float32 too
    clamped32 = pF.log_softmax(paddle.to_tensor(x.astype(np.float32)), axis=1).numpy()
    assert clamped32[0, 2] == np.float32(-64.0)
    # Twins: the true values, forward and gradient, in both dtypes.
    for dtype, tol in ((np.float64, EQ), (np.float32, 4 * F32_EPS * 95)):
        xt = torch.tensor(x.astype(dtype), requires_grad=True)
        xp = paddle.to_tensor(x.astype(dtype), stop_gradient=False)
        lt, lp = tlosses.log_softmax(xt, 1), plosses.log_softmax(xp, 1)
        assert np.abs(lt.detach().numpy() - true_logp).max() <= tol
        assert np.abs(lp.numpy() - true_logp).max() <= tol, dtype
        for s in (0.0, 0.1):
            a = float(tlosses.cross_entropy(torch.tensor(x.astype(dtype)), torch.tensor(y), s))
            b = float(plosses.cross_entropy(paddle.to_tensor(x.astype(dtype)), paddle.to_tensor(y), s))
            want = ref.cross_entropy_ref(x, y, s)
            assert abs(a - want) <= tol * 2 and abs(b - want) <= tol * 2, (dtype, s, a, b, want)
        (lt[:, 0] - 2 * lt[:, 2]).sum().backward()
        (lp[:, 0] - 2 * lp[:, 2]).sum().backward()
        assert np.abs(xt.grad.numpy() - xp.grad.numpy()).max() <= tol, dtype


def test_accuracy_topk_twins_and_ties():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((50, 10)), rng.integers(0, 10, 50)
    x[0] = 0.0  # a full tie: a hit for every k (ties count for the target) on both backends
    t = [float(v) for v in tlosses.accuracy_topk(torch.tensor(x), torch.tensor(y), (1, 5))]
    p = [float(v) for v in plosses.accuracy_topk(paddle.to_tensor(x), paddle.to_tensor(y), (1, 5))]
    assert t == p == ref.accuracy_topk_ref(x, y, (1, 5))
    # Without ties it is the usual top-k accuracy.
    x[0] = rng.standard_normal(10)
    top5 = np.argsort(-x, axis=1)[:, :5]
    want1 = float(np.mean(top5[:, 0] == y) * 100)
    want5 = float(np.mean((top5 == y[:, None]).any(1)) * 100)
    got = [float(v) for v in plosses.accuracy_topk(paddle.to_tensor(x), paddle.to_tensor(y), (1, 5))]
    assert got == pytest.approx([want1, want5], abs=1e-12)


_DDP_WORKER = r'''
import json, os, sys
import numpy as np
framework, out = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
data = [rng.standard_normal((4, 3)) + 1.0 + r for r in range(2) for _ in range(2)]  # rank r: batches 2r, 2r+1
if framework == "torch":
    import torch, torch.distributed as dist
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    net = torch.nn.Sequential(torch.nn.Linear(3, 3, bias=False), torch.nn.BatchNorm1d(3)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(3, dtype=torch.float64))
    model = torch.nn.parallel.DistributedDataParallel(net)
    for k in range(2):
        model(torch.from_numpy(data[2 * rank + k])).sum().backward()
    mean = net[1].running_mean.numpy()
    json.dump(mean.tolist(), open(f"{out}.{rank}.json", "w"))
    dist.barrier()
    dist.destroy_process_group()  # a gloo group left open can abort the process at exit
    sys.exit(0)
else:
    import paddle, paddle.distributed as dist
    dist.init_parallel_env()
    rank = dist.get_rank()
    paddle.set_default_dtype("float64")
    net = paddle.nn.Sequential(paddle.nn.Linear(3, 3, bias_attr=False), paddle.nn.BatchNorm1D(3, momentum=0.9))
    paddle.assign(paddle.eye(3, dtype="float64"), net[0].weight)
    model = paddle.DataParallel(net)
    for k in range(2):
        model(paddle.to_tensor(data[2 * rank + k])).sum().backward()
    mean = net[1]._mean.numpy()
json.dump(mean.tolist(), open(f"{out}.{rank}.json", "w"))
'''


@pytest.mark.parametrize("framework", ["torch", "paddle"])
def test_row26_ddp_buffer_broadcast(framework, tmp_path):
    """Row 26: torch's ``DistributedDataParallel`` broadcasts rank 0's buffers (BN running statistics) before every
    forward; ``paddle.DataParallel`` does not.  Two CPU processes (gloo), a Linear (identity) + BN on rank-dependent
    batches, two forwards: rank 0 ends with its own statistics in both; rank 1 ends with rank 0's statistics after
    the first batch moved by its own second batch (torch) or with its own two batches (paddle).  TwinNAS uses neither
    wrapper: its optimizers average the gradients, and only rank 0's state is saved (common/distributed.py)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(_DDP_WORKER)
    out = str(tmp_path / "mean")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    from tests.test_distributed import free_port

    launcher = (["torch.distributed.run", "--master_port", str(free_port())] if framework == "torch"
                else ["paddle.distributed.launch", "--log_dir", str(tmp_path / "logs")])
    done = subprocess.run([sys.executable, "-m", *launcher, "--nproc_per_node", "2", str(script), framework, out],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    got = [np.array(json.load(open(f"{out}.{r}.json"))) for r in range(2)]
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((4, 3)) + 1.0 + r for r in range(2) for _ in range(2)]

    def lerp(stat, batch):  # torch momentum 0.1 = paddle momentum 0.9
        return 0.9 * stat + 0.1 * batch.mean(axis=0)

    rank0 = lerp(lerp(np.zeros(3), data[0]), data[1])
    assert np.allclose(got[0], rank0, atol=1e-12)  # rank 0: its own statistics in both frameworks
    if framework == "torch":  # broadcast: rank 0's statistics after batch 0, then rank 1's second batch
        assert np.allclose(got[1], lerp(lerp(np.zeros(3), data[0]), data[3]), atol=1e-12)
    else:  # no broadcast: rank 1's own two batches
        assert np.allclose(got[1], lerp(lerp(np.zeros(3), data[2]), data[3]), atol=1e-12)
