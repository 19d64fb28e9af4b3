"""Op-by-op torch vs paddle parity of the twin op library (``torch_impl/ops.py`` / ``paddle_impl/ops.py``).

For every case of ``parity_tests/op_cases.py``: build the op in both backends, load one set of random neutral
weights through ``layout.load_neutral``, run train- and eval-mode forward and the backward pass of
``sum(out * R)`` (R a fixed random array), and compare the outputs, the gradients w.r.t. the input and every
parameter, and the BN running statistics after the train step.

Targets (docs/CONVENTIONS.md): float64 max-abs <= 1e-10, float32 max-rel <= 1e-5 (common/compare.py).
SAME / pool / upsample cases are also compared with a numpy float64 reference (explicit pad + VALID op), so
"TF SAME" is proven, not only mutual agreement.  A table of the measured figures is printed at the end.
"""
from __future__ import annotations

import inspect
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import paddle
import pytest
import torch

from common.compare import compare as _compare
from common.init import init_state
from conftest import paddle_default_dtype
from paddle_impl import layout as PL
from paddle_impl import ops as P
from parity_tests.op_cases import (
    CASES,
    DOUBLE_GRAD_CASES,
    OpCase,
    case_input,
    keep_mask,
    numpy_reference,
    random_state,
)
from torch_impl import layout as TL
from torch_impl import ops as T

F64_ABS = 1e-10
F32_REL = 1e-5
REF_ABS = 1e-10

FIGURES: Dict[str, dict] = {}


def compare(a, b, name: str = ""):
    # common.compare divides 0/0 in its element-wise view when the reference is all zeros (the Zero op).
    with np.errstate(invalid="ignore", divide="ignore"):
        return _compare(a, b, name)


# ---------------------------------------------------------------------------------------------------------
# harness
# ---------------------------------------------------------------------------------------------------------
def build_pair(case: OpCase, dtype: str):
    torch_op = getattr(T, case.op)(**case.kwargs).to(getattr(torch, dtype))
    with paddle_default_dtype(dtype):
        paddle_op = getattr(P, case.op)(**case.kwargs)
    return torch_op, paddle_op


def _paddle_linear_weights(layer) -> set:
    out = set()
    for prefix, sub in layer.named_sublayers(include_self=True):
        if isinstance(sub, paddle.nn.Linear):
            out.add(f"{prefix}.weight" if prefix else "weight")
    return out


def run_torch(op, x: np.ndarray, proj: Optional[np.ndarray], train: bool, mask: Optional[np.ndarray]):
    op.train(train)
    if mask is not None:
        op.set_next_mask(mask)
    for p in op.parameters():
        p.grad = None
    xt = torch.tensor(x, requires_grad=True)
    out = op(xt)
    if proj is None:
        return out.detach().numpy().copy(), None
    (out * torch.from_numpy(proj)).sum().backward()
    grads = {"input": xt.grad.numpy().copy()}
    for name, p in op.named_parameters():
        grads[name] = None if p.grad is None else p.grad.numpy().copy()
    return out.detach().numpy().copy(), grads


def run_paddle(op, x: np.ndarray, proj: Optional[np.ndarray], train: bool, mask: Optional[np.ndarray]):
    op.train() if train else op.eval()
    if mask is not None:
        op.set_next_mask(mask)
    op.clear_gradients(set_to_zero=False)
    xp = paddle.to_tensor(x, stop_gradient=False)
    out = op(xp)
    if proj is None:
        return out.numpy().copy(), None
    (out * paddle.to_tensor(proj)).sum().backward()
    grads = {"input": xp.grad.numpy().copy()}
    names = PL.neutral_name_map(op)
    linear = _paddle_linear_weights(op)
    for name, p in op.named_parameters():
        if p.stop_gradient:
            continue
        g = None if p.grad is None else p.grad.numpy().copy()
        if g is not None and name in linear:
            g = np.ascontiguousarray(g.T)
        grads[names[name]] = g
    return out.numpy().copy(), grads


def run_case(case: OpCase, dtype: str) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``{tensor label: (paddle value, torch value)}`` for one dtype; inputs drawn from the case's seed."""
    rng = np.random.default_rng(case.seed)
    x = case_input(case, rng)
    t_op, p_op = build_pair(case, dtype)
    kinds = T.named_param_kinds(t_op)
    assert kinds == P.named_param_kinds(p_op), f"{case.id}: named_param_kinds differ between backends"
    state = random_state({k: (v.shape, v.kind) for k, v in kinds.items()}, rng)
    mask = keep_mask(case, rng) if case.mask else None
    TL.load_neutral(t_op, state)
    PL.load_neutral(p_op, state)
    np_dtype = np.dtype(dtype)
    xd = x.astype(np_dtype)
    pairs: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for mode in ("train", "eval"):
        train = mode == "train"
        # output shape from a no-grad torch call in the same mode (state-free for eval; train re-runs below)
        out_shape = run_torch(t_op, xd, None, False, None)[0].shape
        proj = rng.standard_normal(out_shape).astype(np_dtype)
        m = mask if (train and mask is not None) else None
        t_out, t_grads = run_torch(t_op, xd, proj, train, m)
        p_out, p_grads = run_paddle(p_op, xd, proj, train, m)
        pairs[f"{mode}.out"] = (p_out, t_out)
        assert set(t_grads) == set(p_grads), f"{case.id}: gradient names differ: {sorted(t_grads)} vs {sorted(p_grads)}"
        for name in t_grads:
            tg, pg = t_grads[name], p_grads[name]
            assert (tg is None) == (pg is None), f"{case.id}: {mode} grad of {name} is None in one backend only"
            if tg is not None:
                pairs[f"{mode}.grad.{name}"] = (pg, tg)
        if train:
            t_state, p_state = TL.state_to_neutral(t_op), PL.state_to_neutral(p_op)
            assert set(t_state) == set(p_state)
            for name in t_state:
                if "running_" in name:
                    pairs[f"train.state.{name}"] = (p_state[name], t_state[name])
    return pairs


def _worst(pairs, key: str):
    worst = None
    for label, (a, b) in pairs.items():
        d = compare(a, b, label)
        if worst is None or getattr(d, key) > getattr(worst, key) or d.nonfinite:
            worst = d
    return worst


# ---------------------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_op_parity(case: OpCase):
    fig = FIGURES.setdefault(case.id, {"op": case.op})
    pairs64 = run_case(case, "float64")
    bad64 = [str(compare(a, b, k)) for k, (a, b) in pairs64.items() if not compare(a, b, k).passes(abs_tol=F64_ABS)]
    w64 = _worst(pairs64, "max_abs")
    fig.update(f64=w64.max_abs, f64_at=w64.name, n=len(pairs64))
    pairs32 = run_case(case, "float32")
    bad32 = [str(compare(a, b, k)) for k, (a, b) in pairs32.items() if not compare(a, b, k).passes(rel_tol=F32_REL)]
    w32 = _worst(pairs32, "max_rel")
    fig.update(f32=w32.max_rel, f32_at=w32.name)
    assert not bad64, f"{case.id}: float64 above {F64_ABS}:\n" + "\n".join(bad64)
    assert not bad32, f"{case.id}: float32 max_rel above {F32_REL}:\n" + "\n".join(bad32)


REF_CASES = [c for c in CASES if c.ref]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", REF_CASES, ids=[c.id for c in REF_CASES])
def test_matches_numpy_reference(case: OpCase, dtype: str):
    """Both backends against numpy float64 (TF SAME written out independently: explicit pad + VALID).

    float64: max_abs <= 1e-10.  float32 (paddle's float32 paths differ from its float64 ones for avg-pool and
    bilinear): max_rel <= 1e-5, the parity target."""
    rng = np.random.default_rng(case.seed + 1)
    x = case_input(case, rng)
    t_op, p_op = build_pair(case, dtype)
    kinds = T.named_param_kinds(t_op)
    state = random_state({k: (v.shape, v.kind) for k, v in kinds.items()}, rng)
    TL.load_neutral(t_op, state)
    PL.load_neutral(p_op, state)
    ref = numpy_reference(case, x.astype(dtype).astype(np.float64),
                          {k: v.astype(dtype).astype(np.float64) for k, v in state.items()})
    t_out, _ = run_torch(t_op, x.astype(dtype), None, False, None)
    p_out, _ = run_paddle(p_op, x.astype(dtype), None, False, None)
    dt, dp = compare(t_out, ref, "torch"), compare(p_out, ref, "paddle")
    tol = dict(abs_tol=REF_ABS) if dtype == "float64" else dict(rel_tol=F32_REL)
    key = "ref" if dtype == "float64" else "ref32"
    FIGURES.setdefault(case.id, {"op": case.op})[key] = max(dt.max_abs, dp.max_abs) if dtype == "float64" else max(
        dt.max_rel, dp.max_rel)
    assert dt.passes(**tol), f"{case.id}: torch vs numpy reference ({dtype}): {dt}"
    assert dp.passes(**tol), f"{case.id}: paddle vs numpy reference ({dtype}): {dp}"


def second_order_torch(op, x, proj):
    op.train(True)
    xt = torch.tensor(x, requires_grad=True)
    params = dict(op.named_parameters())
    (g,) = torch.autograd.grad((op(xt) * torch.from_numpy(proj)).sum(), xt, create_graph=True)
    names = ["input"] + list(params)
    grads = torch.autograd.grad((g * g).sum(), [xt] + list(params.values()), allow_unused=True)
    return {n: (None if v is None else v.numpy().copy()) for n, v in zip(names, grads)}


def second_order_paddle(op, x, proj):
    op.train()
    xp = paddle.to_tensor(x, stop_gradient=False)
    params = {n: p for n, p in op.named_parameters() if not p.stop_gradient}
    (g,) = paddle.grad((op(xp) * paddle.to_tensor(proj)).sum(), xp, create_graph=True)
    grads = paddle.grad((g * g).sum(), [xp] + list(params.values()), allow_unused=True)
    names, linear = PL.neutral_name_map(op), _paddle_linear_weights(op)
    out = {"input": grads[0].numpy().copy()}
    for (name, _), v in zip(params.items(), grads[1:]):
        value = None if v is None else v.numpy().copy()
        out[names[name]] = value.T.copy() if (value is not None and name in linear) else value
    return out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", DOUBLE_GRAD_CASES, ids=[c.id for c in DOUBLE_GRAD_CASES])
def test_second_order_gradients(case: OpCase, dtype: str):
    """d/d(x, params) of |d sum(out * R) / dx|^2 (train mode): the double-backward paths agree."""
    rng = np.random.default_rng(case.seed + 2)
    x = case_input(case, rng).astype(dtype)
    t_op, p_op = build_pair(case, dtype)
    kinds = T.named_param_kinds(t_op)
    state = random_state({k: (v.shape, v.kind) for k, v in kinds.items()}, rng)
    TL.load_neutral(t_op, state)
    PL.load_neutral(p_op, state)
    out_shape = run_torch(t_op, x, None, False, None)[0].shape
    proj = rng.standard_normal(out_shape).astype(dtype)
    t_h, p_h = second_order_torch(t_op, x, proj), second_order_paddle(p_op, x, proj)
    assert set(t_h) == set(p_h)
    worst, bad = 0.0, []
    for name in t_h:
        a, b = t_h[name], p_h[name]
        if a is None or b is None:  # unused (e.g. a bias has no second-order effect): zero in the other backend
            other = b if a is None else a
            assert other is None or not np.any(other), f"{case.id}: {name} unused in one backend only"
            continue
        d = compare(b, a, f"d2.{name}")
        ok = d.passes(abs_tol=F64_ABS) if dtype == "float64" else d.passes(rel_tol=F32_REL)
        worst = max(worst, d.max_abs if dtype == "float64" else d.max_rel)
        if not ok:
            bad.append(str(d))
    FIGURES.setdefault(case.id, {"op": case.op})["d2_" + dtype] = worst
    assert not bad, f"{case.id} ({dtype}) second-order gradients differ:\n" + "\n".join(bad)


def test_same_padding_is_replanned_per_input_size():
    """One SAME layer called on several sizes (stride 2: asymmetric at even sizes) stays TF-exact each time."""
    from parity_tests.op_cases import np_conv2d, np_maxpool2d, np_avgpool2d

    rng = np.random.default_rng(7)
    t_conv, p_conv = T.Conv2d(2, 3, 3, 2, "SAME").double(), None
    with paddle_default_dtype("float64"):
        p_conv = P.Conv2d(2, 3, 3, 2, "SAME")
        p_max, p_avg = P.MaxPool2d(3, 2, "SAME"), P.AvgPool2d(3, 2, "SAME")
    t_max, t_avg = T.MaxPool2d(3, 2, "SAME"), T.AvgPool2d(3, 2, "SAME")
    w = rng.standard_normal((3, 2, 3, 3))
    TL.load_neutral(t_conv, {"weight": w})
    PL.load_neutral(p_conv, {"weight": w})
    for hw in ((8, 8), (7, 9), (8, 8), (5, 6), (7, 9)):
        x = rng.standard_normal((1, 2) + hw)
        for name, t_op, p_op, ref in (
            ("conv", t_conv, p_conv, np_conv2d(x, w, None, 2, "SAME")),
            ("max", t_max, p_max, np_maxpool2d(x, 3, 2, "SAME")),
            ("avg", t_avg, p_avg, np_avgpool2d(x, 3, 2, "SAME")),
        ):
            t_out, _ = run_torch(t_op, x, None, False, None)
            p_out, _ = run_paddle(p_op, x, None, False, None)
            assert compare(t_out, ref).max_abs <= REF_ABS, (name, hw)
            assert compare(p_out, ref).max_abs <= REF_ABS, (name, hw)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("momentum,eps", [(0.1, 1e-5), (0.0003, 1e-3), (0.9, 1e-5)])
def test_bn_running_stats_follow_torch_over_steps(dtype, momentum, eps):
    """Five train steps: both backends' running stats equal the numpy formula of torch semantics
    (running = (1-m)*running + m*batch, variance unbiased)."""
    rng = np.random.default_rng(11)
    kw = dict(num_features=3, eps=eps, momentum=momentum)
    t_bn = T.BatchNorm2d(**kw).to(getattr(torch, dtype))
    with paddle_default_dtype(dtype):
        p_bn = P.BatchNorm2d(**kw)
    start = {"weight": rng.uniform(0.5, 1.5, 3), "bias": rng.normal(size=3),
             "running_mean": rng.normal(size=3), "running_var": rng.uniform(0.5, 2, 3)}
    TL.load_neutral(t_bn, start)
    PL.load_neutral(p_bn, start)
    mean, var = start["running_mean"].copy(), start["running_var"].copy()
    for step in range(5):
        x = rng.normal(2.0, 3.0, size=(3, 3, 5, 4)).astype(dtype)
        run_torch(t_bn, x, None, True, None)
        run_paddle(p_bn, x, None, True, None)
        x64 = x.astype(np.float64)
        mean = (1 - momentum) * mean + momentum * x64.mean(axis=(0, 2, 3))
        var = (1 - momentum) * var + momentum * x64.var(axis=(0, 2, 3), ddof=1)
    t_state, p_state = TL.state_to_neutral(t_bn), PL.state_to_neutral(p_bn)
    tol = dict(abs_tol=1e-12) if dtype == "float64" else dict(rel_tol=1e-6)
    for name, ref in (("running_mean", mean), ("running_var", var)):
        dt, dp = compare(t_state[name], ref, f"torch {name}"), compare(p_state[name], ref, f"paddle {name}")
        d = compare(p_state[name], t_state[name], f"paddle vs torch {name}")
        assert dt.passes(**tol), str(dt)
        assert dp.passes(**tol), str(dp)
        assert d.passes(**tol), str(d)


def test_contract_same_api_in_both_backends():
    """Same public names, and identical constructor/function signatures, in both op libraries."""
    assert T.__all__ == P.__all__
    for name in T.__all__:
        t_obj, p_obj = getattr(T, name), getattr(P, name)
        t_fn = t_obj.__init__ if inspect.isclass(t_obj) else t_obj
        p_fn = p_obj.__init__ if inspect.isclass(p_obj) else p_obj
        t_sig = [(p.name, p.default, p.kind) for p in inspect.signature(t_fn).parameters.values()]
        p_sig = [(p.name, p.default, p.kind) for p in inspect.signature(p_fn).parameters.values()]
        assert t_sig == p_sig, f"{name}: signature differs: torch {t_sig} vs paddle {p_sig}"


@pytest.mark.parametrize("rule", ["torch_default", "goog", "paddle_default", "kaiming_normal_fan_out"])
def test_same_seed_same_initial_weights(rule):
    """common.init + named_param_kinds give bit-identical initial weights on both backends."""
    def build(ops):
        return [
            ops.SepConv(4, 6, 3, 2, 1, affine=True),
            ops.SqueezeExcite(8, 4),
            ops.Linear(6, 5),
            ops.DilConv(4, 4, 3, 1, 2, 2, affine=False),
            ops.SeparableConv2d(4, 8, 5, 2),
        ]
    for t_op, p_op in zip(build(T), build(P)):
        t_specs, p_specs = T.named_param_kinds(t_op), P.named_param_kinds(p_op)
        assert t_specs == p_specs
        t_init = init_state(t_specs, rule, np.random.default_rng(3))
        p_init = init_state(p_specs, rule, np.random.default_rng(3))
        TL.load_neutral(t_op, t_init)
        PL.load_neutral(p_op, p_init)
        t_state, p_state = TL.state_to_neutral(t_op), PL.state_to_neutral(p_op)
        for name in t_state:
            assert np.array_equal(t_state[name], p_state[name]), f"{type(t_op).__name__}.{name}"


def test_stochastic_ops_with_framework_rng():
    """Without an injected mask: DropPath keeps or drops whole samples (scaled 1/keep), Dropout is inverted;
    both are identities in eval mode and when the probability is 0."""
    x = np.ones((64, 2, 3, 3))
    for ops, run in ((T, run_torch), (P, run_paddle)):
        dp = ops.DropPath(0.25)
        out, _ = run(dp, x, None, True, None)
        per_sample = out.reshape(64, -1)
        assert np.all(per_sample.min(1) == per_sample.max(1))
        assert set(np.unique(per_sample).round(12)) <= {0.0, round(1 / 0.75, 12)}
        assert np.array_equal(run(dp, x, None, False, None)[0], x)
        assert np.array_equal(run(ops.DropPath(0.0), x, None, True, None)[0], x)
        do = ops.Dropout(0.5)
        out, _ = run(do, x, None, True, None)
        assert set(np.unique(out)) <= {0.0, 2.0} and 0.3 < (out == 0).mean() < 0.7
        assert np.array_equal(run(do, x, None, False, None)[0], x)
        with pytest.raises(ValueError):
            ops.DropPath(0.2).set_next_mask(np.full(4, 0.5))


# ---------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _print_figures(request):
    start = time.time()
    yield
    if not FIGURES:
        return
    lines = [
        "",
        f"op parity: torch {torch.__version__} vs paddle {paddle.__version__} "
        f"({len(FIGURES)} cases, {time.time() - start:.1f}s); targets f64 max_abs<={F64_ABS:g}, "
        f"f32 max_rel<={F32_REL:g}, numpy ref max_abs<={REF_ABS:g}",
        f"{'case':40s} {'op':17s} {'f64 max_abs':>11s} {'f32 max_rel':>11s} {'np f64 abs':>10s} {'np f32 rel':>10s}"
        f" {'d2 f64 abs':>10s} {'d2 f32 rel':>10s}  worst f32 tensor",
    ]
    for case_id, f in FIGURES.items():
        f64 = f"{f['f64']:.1e}" if "f64" in f else "-"
        f32 = f"{f['f32']:.1e}" if "f32" in f else "-"
        ref = f"{f['ref']:.1e}" if "ref" in f else "-"
        ref32 = f"{f['ref32']:.1e}" if "ref32" in f else "-"
        d64 = f"{f['d2_float64']:.1e}" if "d2_float64" in f else "-"
        d32 = f"{f['d2_float32']:.1e}" if "d2_float32" in f else "-"
        lines.append(f"{case_id:40s} {f['op']:17s} {f64:>11s} {f32:>11s} {ref:>10s} {ref32:>10s} {d64:>10s} {d32:>10s}"
                     f"  {f.get('f32_at', '')}")
    per_op: Dict[str, List[float]] = {}
    for f in FIGURES.values():
        if "f64" in f:
            cur = per_op.setdefault(f["op"], [0.0, 0.0])
            cur[0], cur[1] = max(cur[0], f["f64"]), max(cur[1], f["f32"])
    lines.append("worst per op: " + "; ".join(f"{op} {a:.1e}/{b:.1e}" for op, (a, b) in per_op.items()))
    emit_report(request.config, "\n".join(lines))


def emit_report(config, text: str) -> None:
    """Write to the terminal even under output capture (the figures are the point of a parity test)."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capman = config.pluginmanager.getplugin("capturemanager")
    if reporter is None:
        print(text)
        return
    if capman is not None:
        with capman.global_and_fixture_disabled():
            reporter.write_line(text)
    else:
        reporter.write_line(text)
