"""The layer rows of the torch-vs-paddle difference list (shared/research/anchors.md §3.3), pinned by tests.

Each test shows what the raw framework APIs do (differ, or agree where the row says they agree), so a change
in either framework is caught, and that our twin layer (torch_impl/ops.py, paddle_impl/ops.py) agrees.
Tolerances are measured or derived, never picked to pass:
  * float64 agreement of the twins is held to <= 1e-12 on these single layers;
  * a float32 comparison of a against b is bounded by 2 * max(|a32 - ref64|, |b32 - ref64|) (triangle
    inequality over each backend's own float32-vs-float64 error), see ``f32_bound``;
  * a raw difference caused by a float32 attribute in paddle is bounded by the float32 rounding of that
    attribute, computed from the attribute itself.
Differences found here that anchors.md does not list are marked NEW.
"""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as PF
import pytest
import torch
import torch.nn.functional as TF

from common.init import init_state
from conftest import paddle_default_dtype as paddle_dtype
from paddle_impl import layout as PL
from paddle_impl import ops as P
from parity_tests.op_cases import np_avgpool2d, np_conv2d, np_maxpool2d, np_upsample
from torch_impl import layout as TL
from torch_impl import ops as T

F64 = 1e-12
F32_EPS = float(np.finfo(np.float32).eps)

pytestmark = pytest.mark.filterwarnings(
    "ignore:When training, we now always track global mean and variance:UserWarning",
    "ignore:Using padding='same' with even kernel lengths:UserWarning",
)

MEASURED = {}


def record(name: str, value: float) -> float:
    MEASURED[name] = float(value)
    return float(value)


@pytest.fixture(scope="module", autouse=True)
def _print_measured(request):
    yield
    if not MEASURED:
        return
    text = "\nframework differences (layers), measured:\n" + "\n".join(
        f"  {name:60s} {value:.3e}" for name, value in MEASURED.items())
    from parity_tests.test_ops_parity import emit_report

    emit_report(request.config, text)


def maxabs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def f32_bound(a32, b32, ref64) -> float:
    """|a32 - b32| <= |a32 - ref| + |b32 - ref| <= 2 * max(own float32 errors)."""
    return 2.0 * max(maxabs(a32, ref64), maxabs(b32, ref64))


def pt(x, requires_grad=False):
    return torch.tensor(np.asarray(x), requires_grad=requires_grad)


def pd(x, requires_grad=False):
    return paddle.to_tensor(np.asarray(x), stop_gradient=not requires_grad)


def f32_rounding(value: float) -> float:
    return abs(float(np.float32(value)) - value)


def twin_pair(name, *args, dtype="float64", **kwargs):
    t = getattr(T, name)(*args, **kwargs).to(getattr(torch, dtype))
    with paddle_dtype(dtype):
        p = getattr(P, name)(*args, **kwargs)
    return t, p


def load_both(t, p, state):
    TL.load_neutral(t, state)
    PL.load_neutral(p, state)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ---------------------------------------------------------------------------------------------------------
# rows 1-4: BatchNorm
# ---------------------------------------------------------------------------------------------------------
def _bn_inputs(rng):
    x = rng.normal(1.0, 2.0, size=(4, 3, 5, 5))
    old_mean, old_var = rng.normal(size=3), rng.uniform(0.5, 2.0, 3)
    return x, old_mean, old_var


def test_row1_bn_momentum_convention(rng):
    """torch running = (1-m)*running + m*batch (m=0.1); paddle running = m*running + (1-m)*batch (m=0.9).
    NEW: paddle takes momentum as a float32 attribute, so even in float64 0.9 acts as 0.899999976."""
    x, old_mean, old_var = _bn_inputs(rng)
    batch_mean = x.mean(axis=(0, 2, 3))
    t_bn = torch.nn.BatchNorm2d(3, momentum=0.1).double()
    t_bn.running_mean.copy_(pt(old_mean))
    t_bn.train()(pt(x))

    def paddle_running_mean(momentum):
        with paddle_dtype("float64"):
            bn = paddle.nn.BatchNorm2D(3, momentum=momentum)
        bn._mean.set_value(old_mean)
        bn.train()
        bn(pd(x))
        return bn._mean.numpy()

    # torch's formula holds to rounding
    assert maxabs(t_bn.running_mean.numpy(), 0.9 * old_mean + 0.1 * batch_mean) <= F64
    # same number, opposite meaning: paddle momentum=0.1 keeps 10% of the old value
    wrong = paddle_running_mean(0.1)
    assert maxabs(wrong, 0.1 * old_mean + 0.9 * batch_mean) <= 2 * f32_rounding(0.1) * np.max(
        np.abs(old_mean - batch_mean)) + F64
    assert maxabs(wrong, t_bn.running_mean.numpy()) > 0.1
    # paddle 0.9 == torch 0.1 up to the float32 rounding of the momentum attribute (|delta m| * |old - batch|)
    right = paddle_running_mean(0.9)
    bound = 2 * f32_rounding(0.9) * np.max(np.abs(old_mean - batch_mean)) + F64
    diff = record("row1 raw paddle m=0.9 vs torch m=0.1 running_mean f64", maxabs(right, t_bn.running_mean.numpy()))
    assert 0 < diff <= bound, (diff, bound)
    # twin: torch-convention momentum in both, exact in float64
    t, p = twin_pair("BatchNorm2d", 3, momentum=0.1)
    load_both(t, p, {"weight": np.ones(3), "bias": np.zeros(3), "running_mean": old_mean, "running_var": old_var})
    t.train()(pt(x))
    p.train()
    p(pd(x))
    assert maxabs(PL.state_to_neutral(p)["running_mean"], TL.state_to_neutral(t)["running_mean"]) <= F64


def test_row2_bn_running_var_unbiased_vs_biased(rng):
    """torch updates running_var with the unbiased batch variance, paddle with the biased one."""
    x, old_mean, old_var = _bn_inputs(rng)
    n = x.shape[0] * x.shape[2] * x.shape[3]
    biased, unbiased = x.var(axis=(0, 2, 3)), x.var(axis=(0, 2, 3), ddof=1)
    t_bn = torch.nn.BatchNorm2d(3).double()
    t_bn.running_var.copy_(pt(old_var))
    t_bn.train()(pt(x))
    with paddle_dtype("float64"):
        p_bn = paddle.nn.BatchNorm2D(3)
    p_bn._variance.set_value(old_var)
    p_bn.train()
    p_bn(pd(x))
    assert maxabs(t_bn.running_var.numpy(), 0.9 * old_var + 0.1 * unbiased) <= F64
    f32_m = 2 * f32_rounding(0.9) * np.max(np.abs(old_var - biased)) + F64
    assert maxabs(p_bn._variance.numpy(), 0.9 * old_var + 0.1 * biased) <= f32_m
    gap = record("row2 raw running_var gap (n=100)", maxabs(p_bn._variance.numpy(), t_bn.running_var.numpy()))
    expected_gap = np.max(0.1 * biased / (n - 1))  # 0.1 * (unbiased - biased)
    assert abs(gap - expected_gap) <= f32_m + 1e-12
    # twin: paddle follows torch
    t, p = twin_pair("BatchNorm2d", 3)
    load_both(t, p, {"weight": np.ones(3), "bias": np.zeros(3), "running_mean": old_mean, "running_var": old_var})
    t.train()(pt(x))
    p.train()
    p(pd(x))
    assert maxabs(PL.state_to_neutral(p)["running_var"], TL.state_to_neutral(t)["running_var"]) <= F64
    # and so do eval outputs after the step
    t.eval()
    p.eval()
    assert maxabs(p(pd(x)).numpy(), t(pt(x)).detach().numpy()) <= F64


def test_row3_bn_stats_are_parameters_in_paddle():
    """paddle lists _mean/_variance as (non-trainable) parameters: count trainable ones only."""
    t_bn, p_bn = torch.nn.BatchNorm2d(4), paddle.nn.BatchNorm2D(4)
    assert len(list(t_bn.parameters())) == 2 and len(list(t_bn.buffers())) == 3
    p_params = dict(p_bn.named_parameters())
    assert sorted(p_params) == ["_mean", "_variance", "bias", "weight"]
    assert [n for n, p in p_params.items() if p.trainable and not p.stop_gradient] == ["weight", "bias"]
    t, p = twin_pair("SepConv", 4, 6, 3, 1, 1, affine=True, dtype="float32")
    assert TL.count_parameters(t) == PL.count_parameters(p) == sum(v.numel() for v in t.parameters())
    # counting everything paddle calls a parameter inflates the count by the BN statistics
    assert PL.count_parameters(p, trainable_only=False) == TL.count_parameters(t) + 2 * (4 + 6)


def test_row4_bn_affine_and_track_running_stats(rng):
    """torch affine=False has no weight/bias; paddle needs weight_attr=bias_attr=False.
    torch track_running_stats=False (batch stats in eval) <-> paddle use_global_stats=False."""
    assert set(torch.nn.BatchNorm2d(3, affine=False).state_dict()) == {"running_mean", "running_var",
                                                                       "num_batches_tracked"}
    assert set(paddle.nn.BatchNorm2D(3, weight_attr=False, bias_attr=False).state_dict()) == {"_mean", "_variance"}
    assert set(paddle.nn.BatchNorm2D(3).state_dict()) == {"weight", "bias", "_mean", "_variance"}
    x = rng.normal(1.0, 2.0, size=(2, 3, 4, 4))
    t_bn = torch.nn.BatchNorm2d(3, track_running_stats=False).double().eval()
    with paddle_dtype("float64"):
        p_bn = paddle.nn.BatchNorm2D(3, use_global_stats=False)
    p_bn.eval()
    assert maxabs(p_bn(pd(x)).numpy(), t_bn(pt(x)).detach().numpy()) <= F64  # both use batch stats in eval
    with paddle_dtype("float64"):
        p_default = paddle.nn.BatchNorm2D(3)
    p_default.eval()
    assert maxabs(p_default(pd(x)).numpy(), t_bn(pt(x)).detach().numpy()) > 0.1  # default eval: running stats
    # twin affine=False: same neutral keys, same numbers (search-phase DARTS BN)
    t, p = twin_pair("BatchNorm2d", 3, affine=False)
    assert TL.expected_shapes(t) == PL.expected_shapes(p) == {"running_mean": (3,), "running_var": (3,)}
    state = {"running_mean": rng.normal(size=3), "running_var": rng.uniform(0.5, 2, 3)}
    load_both(t, p, state)
    for train in (True, False):
        t.train(train)
        p.train() if train else p.eval()
        assert maxabs(p(pd(x)).numpy(), t(pt(x)).detach().numpy()) <= F64


# ---------------------------------------------------------------------------------------------------------
# rows 5-6: layouts
# ---------------------------------------------------------------------------------------------------------
def test_row5_linear_layout(rng):
    t_lin, p_lin = torch.nn.Linear(32, 64), paddle.nn.Linear(32, 64)
    assert tuple(t_lin.weight.shape) == (64, 32) and tuple(p_lin.weight.shape) == (32, 64)
    x, w, b = rng.normal(size=(4, 32)), rng.normal(size=(64, 32)), rng.normal(size=64)
    raw_t = TF.linear(pt(x), pt(w), pt(b)).numpy()
    assert maxabs(PF.linear(pd(x), pd(w.T), pd(b)).numpy(), raw_t) <= F64
    t, p = twin_pair("Linear", 32, 64)
    load_both(t, p, {"weight": w, "bias": b})
    assert tuple(p.weight.shape) == (32, 64)
    assert maxabs(p(pd(x)).numpy(), t(pt(x)).detach().numpy()) <= F64
    assert np.array_equal(PL.state_to_neutral(p)["weight"], w)


def test_row6_conv_layout_is_identical(rng):
    for kwargs in (dict(in_channels=16, out_channels=32, kernel_size=3), dict(in_channels=8, out_channels=8,
                                                                              kernel_size=5, groups=8)):
        t_conv, p_conv = torch.nn.Conv2d(**kwargs), paddle.nn.Conv2D(**kwargs)
        assert tuple(t_conv.weight.shape) == tuple(p_conv.weight.shape)
    x, w = rng.normal(size=(2, 8, 9, 9)), rng.normal(size=(8, 1, 5, 5))
    raw = PF.conv2d(pd(x), pd(w), padding=2, groups=8).numpy()
    assert maxabs(raw, TF.conv2d(pt(x), pt(w), padding=2, groups=8).numpy()) <= F64
    t, p = twin_pair("Conv2d", 8, 8, 5, 1, 2, groups=8)
    load_both(t, p, {"weight": w})
    assert maxabs(p(pd(x)).numpy(), t(pt(x)).detach().numpy()) <= F64


# ---------------------------------------------------------------------------------------------------------
# row 7: SAME padding
# ---------------------------------------------------------------------------------------------------------
def test_row7_same_padding(rng):
    """torch refuses padding='same' for stride > 1; paddle's 'SAME' is TF's for dilation 1.
    NEW: paddle's conv 'SAME' silently ignores dilation (pads as if dilation were 1)."""
    with pytest.raises(ValueError, match="strided"):
        torch.nn.Conv2d(3, 4, 3, stride=2, padding="same")
    # torch 'same' (stride 1) with an even kernel puts the odd pixel bottom/right, like TF
    x, w2 = rng.normal(size=(1, 3, 6, 7)), rng.normal(size=(4, 3, 2, 2))
    assert maxabs(TF.conv2d(pt(x), pt(w2), padding="same").numpy(), np_conv2d(x, w2, padding="SAME")) <= F64
    for k in (2, 3):
        w = rng.normal(size=(4, 3, k, k))
        for s in (1, 2):
            for hw in ((6, 6), (7, 7)):
                xs = rng.normal(size=(1, 3) + hw)
                ref = np_conv2d(xs, w, stride=s, padding="SAME")
                assert maxabs(PF.conv2d(pd(xs), pd(w), stride=s, padding="SAME").numpy(), ref) <= F64
                assert maxabs(PF.max_pool2d(pd(xs), k, s, padding="SAME").numpy(),
                              np_maxpool2d(xs, k, s, "SAME")) <= F64
    w3 = rng.normal(size=(4, 3, 3, 3))
    x8 = rng.normal(size=(1, 3, 8, 8))
    ref_dil = np_conv2d(x8, w3, stride=1, padding="SAME", dilation=2)
    raw_dil = PF.conv2d(pd(x8), pd(w3), padding="SAME", dilation=2).numpy()
    assert raw_dil.shape == ref_dil.shape
    assert record("row7 raw paddle SAME dilation=2 vs TF", maxabs(raw_dil, ref_dil)) > 0.1
    # twins: TF-exact for every stride / dilation / parity of size
    for s, d, hw in ((2, 1, (8, 8)), (2, 1, (7, 8)), (1, 2, (8, 8)), (2, 2, (9, 8))):
        t, p = twin_pair("Conv2d", 3, 4, 3, s, "SAME", d)
        load_both(t, p, {"weight": w3})
        xs = rng.normal(size=(2, 3) + hw)
        ref = np_conv2d(xs, w3, stride=s, padding="SAME", dilation=d)
        assert maxabs(t(pt(xs)).detach().numpy(), ref) <= F64
        assert maxabs(p(pd(xs)).numpy(), ref) <= F64


# ---------------------------------------------------------------------------------------------------------
# row 8: average-pool divisor
# ---------------------------------------------------------------------------------------------------------
def test_row8_avgpool_padding_count(rng):
    """torch count_include_pad=True vs paddle exclusive=True by default; equal when matched.
    NEW: paddle avg_pool2d(exclusive=False) with padding only at the bottom/right (also its own padding='SAME'
    at even sizes) divides by a wrong count (9/4 too large at the corner for 3x3 s2 on 8x8)."""
    x = rng.normal(size=(2, 3, 8, 8))
    t_default = TF.avg_pool2d(pt(x), 3, 1, 1).numpy()
    p_default = PF.avg_pool2d(pd(x), 3, 1, 1).numpy()
    assert maxabs(t_default, np_avgpool2d(x, 3, 1, 1, count_include_pad=True)) <= F64
    assert maxabs(p_default, np_avgpool2d(x, 3, 1, 1, count_include_pad=False)) <= F64
    assert record("row8 raw default avg-pool torch vs paddle (3x3 p1)", maxabs(t_default, p_default)) > 0.1
    assert maxabs(TF.avg_pool2d(pt(x), 3, 1, 1, count_include_pad=False).numpy(), p_default) <= F64
    # paddle SAME (exclusive) == TF
    assert maxabs(PF.avg_pool2d(pd(x), 3, 2, padding="SAME").numpy(), np_avgpool2d(x, 3, 2, "SAME")) <= F64
    # paddle exclusive=False with bottom/right padding
    padded = np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 1)))
    want = np_avgpool2d(padded, 3, 2, 0, count_include_pad=True)
    got = PF.avg_pool2d(pd(x), 3, 2, padding=[0, 1, 0, 1], exclusive=False).numpy()
    record("row8 raw paddle exclusive=False bottom/right pad vs TF", maxabs(got, want))
    assert np.allclose(got[..., -1, -1] / want[..., -1, -1], 9 / 4)
    assert maxabs(PF.avg_pool2d(pd(x), 3, 2, padding="SAME", exclusive=False).numpy(), got) <= F64
    # twins: exclusive SAME (TF) and inclusive SAME both right, in float64 and float32
    for cip in (False, True):
        for hw in ((8, 8), (7, 8)):
            xs = rng.normal(size=(2, 3) + hw)
            ref = np_avgpool2d(xs, 3, 2, "SAME", count_include_pad=cip)
            t, p = twin_pair("AvgPool2d", 3, 2, "SAME", cip)
            assert maxabs(t(pt(xs)).numpy(), ref) <= F64 and maxabs(p(pd(xs)).numpy(), ref) <= F64
            t32, p32 = twin_pair("AvgPool2d", 3, 2, "SAME", cip, dtype="float32")
            a, b = t32(pt(xs.astype(np.float32))).numpy(), p32(pd(xs.astype(np.float32))).numpy()
            assert maxabs(a, b) <= f32_bound(a, b, ref)


# ---------------------------------------------------------------------------------------------------------
# row 9: interpolation
# ---------------------------------------------------------------------------------------------------------
def _tf1_legacy_bilinear(x, out_h, out_w):
    """TF1 resize_bilinear(align_corners=False, half_pixel_centers=False): src = dst * in / out."""
    out = x
    for axis, n_in, n_out in ((2, x.shape[2], out_h), (3, x.shape[3], out_w)):
        src = np.arange(n_out) * (n_in / n_out)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        shape = [1, 1, 1, 1]
        shape[axis] = n_out
        w1 = (src - i0).reshape(shape)
        out = np.take(out, i0, axis=axis) * (1 - w1) + np.take(out, i1, axis=axis) * w1
    return out


def test_row9_interpolate_modes(rng):
    """bilinear half-pixel (paddle align_mode=0) == torch align_corners=False; align_corners=True agree;
    paddle align_mode=1 == TF1 legacy resize (no torch mode); nearest equal.
    NEW: paddle computes bilinear source coordinates in float32 even for float64 tensors (~1e-6 off)."""
    x = rng.normal(size=(1, 2, 5, 7))
    size = (9, 12)
    # float64 references
    half = np_upsample(x, size, mode="bilinear", align_corners=False)
    corners = np_upsample(x, size, mode="bilinear", align_corners=True)
    legacy = _tf1_legacy_bilinear(x, *size)
    assert maxabs(TF.interpolate(pt(x), size, mode="bilinear", align_corners=False).numpy(), half) <= F64
    assert maxabs(TF.interpolate(pt(x), size, mode="bilinear", align_corners=True).numpy(), corners) <= F64
    # paddle float64: right formula, float32 coordinates.  Bound: coordinate error <= 2 float32 ulps of the
    # largest source index, times the largest neighbour difference, per axis.
    step = max(np.abs(np.diff(x, axis=2)).max(), np.abs(np.diff(x, axis=3)).max())
    coord_bound = 2 * (2 * F32_EPS * max(x.shape[2:])) * step
    for kwargs, ref in ((dict(align_corners=False, align_mode=0), half), (dict(align_corners=True), corners),
                        (dict(align_corners=False, align_mode=1), legacy)):
        got = PF.interpolate(pd(x), size, mode="bilinear", **kwargs).numpy()
        assert maxabs(got, ref) <= coord_bound, (kwargs, maxabs(got, ref), coord_bound)
    assert record("row9 raw paddle bilinear f64 vs exact (float32 coords)", maxabs(
        PF.interpolate(pd(x), size, mode="bilinear", align_corners=False).numpy(), half)) > 1e-9
    assert record("row9 TF1-legacy vs half-pixel bilinear", maxabs(legacy, half)) > 0.1  # no torch mode
    # nearest: identical
    for kw in (dict(size=size), dict(scale_factor=2), dict(scale_factor=1.5)):
        assert maxabs(PF.interpolate(pd(x), mode="nearest", **kw).numpy(),
                      TF.interpolate(pt(x), mode="nearest", **kw).numpy()) == 0.0
    # twins: float64 exact (paddle uses float64 tables), float32 within the derived bound
    for kw in (dict(size=size, mode="bilinear"), dict(scale_factor=1.5, mode="bilinear"),
               dict(size=size, mode="bilinear", align_corners=True), dict(scale_factor=2, mode="nearest")):
        t, p = twin_pair("Upsample", **kw)
        ref = np_upsample(x, **kw)
        assert maxabs(t(pt(x)).numpy(), ref) <= F64 and maxabs(p(pd(x)).numpy(), ref) <= F64
        t32, p32 = twin_pair("Upsample", dtype="float32", **kw)
        a, b = t32(pt(x.astype(np.float32))).numpy(), p32(pd(x.astype(np.float32))).numpy()
        assert maxabs(a, b) <= f32_bound(a, b, ref)


# ---------------------------------------------------------------------------------------------------------
# row 10: dropout
# ---------------------------------------------------------------------------------------------------------
def test_row10_dropout_modes_and_rng():
    x = np.ones((100, 100), dtype=np.float32)
    torch.manual_seed(0)
    paddle.seed(0)
    t_out = TF.dropout(pt(x), 0.5, training=True).numpy()
    p_out = PF.dropout(pd(x), 0.5, training=True).numpy()
    assert set(np.unique(t_out)) == set(np.unique(p_out)) == {0.0, 2.0}  # both inverted dropout by default
    agreement = record("row10 dropout mask agreement, equal seeds", float(((t_out == 0) == (p_out == 0)).mean()))
    assert abs(agreement - 0.5) < 5 * 0.5 / np.sqrt(x.size)  # masks agree only by chance under equal seeds
    down = paddle.nn.Dropout(0.5, mode="downscale_in_infer")
    assert set(np.unique(down(pd(x)).numpy())) == {0.0, 1.0}
    down.eval()
    assert np.all(down(pd(x)).numpy() == 0.5)
    # twins: inject one numpy mask, identical outputs and gradients
    mask = (np.random.default_rng(0).random(x.shape) > 0.5).astype(np.float64)
    t, p = twin_pair("Dropout", 0.5, dtype="float32")
    t.set_next_mask(mask)
    p.set_next_mask(mask)
    xt, xp = pt(x, True), pd(x, True)
    t.train()(xt).sum().backward()
    p.train()
    p(xp).sum().backward()
    assert np.array_equal(xt.grad.numpy(), xp.grad.numpy())
    t.eval()
    p.eval()
    assert np.array_equal(t(pt(x)).numpy(), x) and np.array_equal(p(pd(x)).numpy(), x)


# ---------------------------------------------------------------------------------------------------------
# rows 11-12: initialisation
# ---------------------------------------------------------------------------------------------------------
def _std_ok(sample, expected_std):
    """Sample std within 5 standard errors (relative s.e. of a std estimate ~ 1/sqrt(2N))."""
    n = sample.size
    return abs(sample.std() / expected_std - 1.0) < 5.0 / np.sqrt(2 * n)


def test_row11_default_initialisers_differ():
    torch.manual_seed(0)
    paddle.seed(0)
    t_conv, p_conv = torch.nn.Conv2d(16, 32, 3), paddle.nn.Conv2D(16, 32, 3)
    assert _std_ok(t_conv.weight.detach().numpy(), 1 / np.sqrt(3 * 16 * 9))  # U(+-1/sqrt(fan_in))
    assert _std_ok(p_conv.weight.numpy(), np.sqrt(2 / (16 * 9)))              # N(0, sqrt(2/(k*k*C_in)))
    assert np.all(p_conv.bias.numpy() == 0) and np.any(t_conv.bias.detach().numpy() != 0)
    # depthwise: paddle's fan ignores groups, torch's does not
    t_dw, p_dw = torch.nn.Conv2d(256, 256, 3, groups=256), paddle.nn.Conv2D(256, 256, 3, groups=256)
    assert _std_ok(t_dw.weight.detach().numpy(), 1 / np.sqrt(3 * 9))
    assert _std_ok(p_dw.weight.numpy(), np.sqrt(2 / (256 * 9)))
    t_lin, p_lin = torch.nn.Linear(64, 32), paddle.nn.Linear(64, 32)
    assert _std_ok(t_lin.weight.detach().numpy(), 1 / np.sqrt(3 * 64))
    assert _std_ok(p_lin.weight.numpy(), np.sqrt(2 / (64 + 32)))               # Xavier uniform
    assert np.all(p_lin.bias.numpy() == 0)
    # our numpy rules: the same seed gives the same weights on both backends, whatever the rule
    for rule in ("torch_default", "goog", "paddle_default"):
        t, p = twin_pair("SqueezeExcite", 16, 8, dtype="float32")
        specs = T.named_param_kinds(t)
        assert specs == P.named_param_kinds(p)
        load_both(t, p, init_state(specs, rule, np.random.default_rng(5)))
        ts, ps = TL.state_to_neutral(t), PL.state_to_neutral(p)
        assert all(np.array_equal(ts[k], ps[k]) for k in ts)


def test_row12_init_api_fan_out():
    """torch kaiming_normal_(mode='fan_out') vs paddle KaimingNormal.
    NEW vs anchors: paddle 3.3.1's KaimingNormal *has* mode='fan_out' (the row says it has none); fan_in=<fan_out
    value> still works.  Both give std sqrt(2/fan_out) with fan_out = out*k*k (no group correction)."""
    shape = [64, 32, 3, 3]
    fan_out = 64 * 9
    t_w = torch.empty(shape, dtype=torch.float64)
    torch.manual_seed(0)
    torch.nn.init.kaiming_normal_(t_w, mode="fan_out", nonlinearity="relu")
    paddle.seed(0)
    by_mode = paddle.create_parameter(shape, "float64",
                                      default_initializer=paddle.nn.initializer.KaimingNormal(mode="fan_out"))
    by_fan = paddle.create_parameter(shape, "float64",
                                     default_initializer=paddle.nn.initializer.KaimingNormal(fan_in=fan_out))
    default = paddle.create_parameter(shape, "float64", default_initializer=paddle.nn.initializer.KaimingNormal())
    expected = np.sqrt(2 / fan_out)
    assert _std_ok(t_w.numpy(), expected) and _std_ok(by_mode.numpy(), expected) and _std_ok(by_fan.numpy(), expected)
    assert _std_ok(default.numpy(), np.sqrt(2 / (32 * 9)))  # default mode is fan_in
    # the numpy rule for the same thing, identical on both backends
    t, p = twin_pair("Conv2d", 32, 64, 3, dtype="float32")
    specs = T.named_param_kinds(t)
    state = init_state(specs, "kaiming_normal_fan_out", np.random.default_rng(0))
    assert _std_ok(state["weight"], expected)
    load_both(t, p, state)
    assert np.array_equal(TL.state_to_neutral(t)["weight"], PL.state_to_neutral(p)["weight"])


# ---------------------------------------------------------------------------------------------------------
# rows 21, 22, 24, 25
# ---------------------------------------------------------------------------------------------------------
def test_row21_pad_axis_order(rng):
    x = np.arange(6.0).reshape(1, 1, 2, 3)
    pads8 = [0, 0, 0, 0, 1, 1, 2, 2]
    assert tuple(TF.pad(pt(x), pads8).shape) == (5, 3, 2, 3)          # from the last axis backwards
    assert tuple(PF.pad(pd(x), pads8).shape) == (1, 1, 4, 7)          # from the first axis
    assert tuple(PF.pad(pd(x), pads8, pad_from_left_axis=False).shape) == (5, 3, 2, 3)
    assert np.array_equal(TF.pad(pt(x), [1, 1, 2, 2]).numpy(), PF.pad(pd(x), [1, 1, 2, 2]).numpy())
    # twin pad_same: TF SAME split, identical in both
    xs = rng.normal(size=(1, 2, 8, 7))
    a = T.pad_same(pt(xs), 3, 2).numpy()
    b = P.pad_same(pd(xs), 3, 2).numpy()
    assert a.shape == (1, 2, 9, 9) and np.array_equal(a, b)
    assert np.array_equal(a[..., :8, 1:8], xs) and np.all(a[..., 8, :] == 0) and np.all(a[..., :, 0] == 0)


def test_row22_instance_norm_affine_default(rng):
    assert set(torch.nn.InstanceNorm2d(4).state_dict()) == set()
    assert set(paddle.nn.InstanceNorm2D(4).state_dict()) == {"scale", "bias"}
    x = rng.normal(1.0, 2.0, size=(2, 4, 5, 5))
    t_in = torch.nn.InstanceNorm2d(4).double()
    with paddle_dtype("float64"):
        p_in = paddle.nn.InstanceNorm2D(4, weight_attr=False, bias_attr=False)
    # epsilon 1e-5 as a float32 attribute: relative effect <= |eps32 - eps| / (2 * min variance)
    var_min = x.var(axis=(2, 3)).min()
    bound = f32_rounding(1e-5) / (2 * var_min) * np.abs(t_in(pt(x)).numpy()).max() + F64
    assert maxabs(p_in(pd(x)).numpy(), t_in(pt(x)).numpy()) <= bound


def test_row24_hardsigmoid_slope():
    """paddle F.hardsigmoid(slope=0.1666667) is not relu6(x+3)/6; NEW: even slope=1/6 is rounded to float32."""
    x = np.linspace(-4, 4, 20001)
    exact = np.clip(x + 3, 0, 6) / 6
    assert maxabs(TF.hardsigmoid(pt(x)).numpy(), exact) == 0.0
    raw_default = record("row24 raw paddle hardsigmoid default vs exact", maxabs(PF.hardsigmoid(pd(x)).numpy(), exact))
    raw_sixth = record("row24 raw paddle hardsigmoid slope=1/6 f64 vs exact",
                       maxabs(PF.hardsigmoid(pd(x), slope=1 / 6, offset=0.5).numpy(), exact))
    # slope error times the largest |x| of the unclipped range (|x| < 3); the attribute is a float32
    assert 0 < raw_default <= abs(float(np.float32(0.1666667)) - 1 / 6) * 3 + F64
    assert 0 < raw_sixth <= f32_rounding(1 / 6) * 3 + F64
    for dtype in ("float64", "float32"):
        xs = x.astype(dtype)
        t, p = twin_pair("HardSigmoid", dtype=dtype)
        assert maxabs(t(pt(xs)).numpy(), p(pd(xs)).numpy()) == 0.0
    t, p = twin_pair("HardSigmoid")
    assert maxabs(p(pd(x)).numpy(), exact) == 0.0


def test_row25_norm_eps_defaults_and_float32_epsilon(rng):
    """Defaults agree (1e-5 everywhere).  NEW: paddle's BN epsilon is a float32 attribute, so a float64 BN with
    eps=1e-3 (TF/PNASNet) is off by up to |eps32 - eps| / (2 (var + eps)^1.5) * |x - mean| * |w|."""
    assert torch.nn.BatchNorm2d(4).eps == torch.nn.LayerNorm(4).eps == torch.nn.GroupNorm(2, 4).eps == 1e-5
    assert torch.nn.InstanceNorm2d(4).eps == 1e-5
    assert paddle.nn.BatchNorm2D(4)._epsilon == paddle.nn.LayerNorm(4)._epsilon == 1e-5
    assert paddle.nn.GroupNorm(2, 4)._epsilon == paddle.nn.InstanceNorm2D(4)._epsilon == 1e-5
    eps = 1e-3
    x = rng.normal(size=(2, 3, 5, 5))
    state = {"weight": rng.uniform(0.5, 1.5, 3), "bias": rng.normal(size=3), "running_mean": rng.normal(size=3),
             "running_var": rng.uniform(1e-3, 1e-2, 3)}
    t_bn = torch.nn.BatchNorm2d(3, eps=eps).double().eval()
    TL.load_neutral(t_bn, state)
    with paddle_dtype("float64"):
        p_bn = paddle.nn.BatchNorm2D(3, epsilon=eps)
    PL.load_neutral(p_bn, state)
    p_bn.eval()
    raw = record("row25 raw paddle BN eps=1e-3 f64 eval vs torch",
                 maxabs(p_bn(pd(x)).numpy(), t_bn(pt(x)).detach().numpy()))
    centred = np.abs(x - state["running_mean"].reshape(1, 3, 1, 1)).max(axis=(0, 2, 3))
    bound = np.max(f32_rounding(eps) / (2 * (state["running_var"] + eps) ** 1.5) * centred * state["weight"]) * 1.01
    assert 1e-9 < raw <= bound, (raw, bound)
    t, p = twin_pair("BatchNorm2d", 3, eps=eps)
    load_both(t, p, state)
    for train in (False, True):
        t.train(train)
        p.train() if train else p.eval()
        assert maxabs(p(pd(x)).numpy(), t(pt(x)).detach().numpy()) <= F64


# ---------------------------------------------------------------------------------------------------------
# rows 29-30: numerics
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cin,cout,k,hw", [(64, 64, 3, 12), (256, 32, 1, 8)])
def test_row29_conv_float32_vs_float64(rng, cin, cout, k, hw):
    x = rng.normal(size=(2, cin, hw, hw))
    w = rng.normal(size=(cout, cin, k, k)) / np.sqrt(cin * k * k)
    ref = TF.conv2d(pt(x), pt(w), padding=k // 2).numpy()
    p64 = PF.conv2d(pd(x), pd(w), padding=k // 2).numpy()
    assert record(f"row29 conv f64 torch vs paddle {cin}->{cout} k{k}", maxabs(p64, ref)) <= F64
    t32 = TF.conv2d(pt(x.astype(np.float32)), pt(w.astype(np.float32)), padding=k // 2).numpy()
    p32 = PF.conv2d(pd(x.astype(np.float32)), pd(w.astype(np.float32)), padding=k // 2).numpy()
    diff = record(f"row29 conv f32 torch vs paddle {cin}->{cout} k{k}", maxabs(t32, p32))
    record(f"row29   bound 2*max(own f32 err) {cin}->{cout} k{k}", f32_bound(t32, p32, ref))
    assert diff <= f32_bound(t32, p32, ref)
    # twin Conv2d (SAME) in both precisions
    t, p = twin_pair("Conv2d", cin, cout, k, 1, "SAME")
    load_both(t, p, {"weight": w})
    assert maxabs(p(pd(x)).numpy(), t(pt(x)).detach().numpy()) <= F64
    t_, p_ = twin_pair("Conv2d", cin, cout, k, 1, "SAME", dtype="float32")
    load_both(t_, p_, {"weight": w})
    a, b = t_(pt(x.astype(np.float32))).detach().numpy(), p_(pd(x.astype(np.float32))).numpy()
    assert maxabs(a, b) <= f32_bound(a, b, ref)


def test_row30_max_tie_breaking_in_backward():
    """Max-pool backward sends a tied window's gradient to the first maximum in both; full max/amax split ties
    evenly in both.  NEW: torch.max(x, dim) sends it to the returned index, paddle.max(x, axis) splits evenly."""
    x = np.zeros((1, 1, 4, 4))
    first = np.zeros((4, 4))
    first[::2, ::2] = 1.0
    xt, xp = pt(x, True), pd(x, True)
    TF.max_pool2d(xt, 2, 2).sum().backward()
    PF.max_pool2d(xp, 2, 2).sum().backward()
    assert np.array_equal(xt.grad.numpy()[0, 0], first) and np.array_equal(xp.grad.numpy()[0, 0], first)
    z = np.zeros((2, 3))
    for t_fn, p_fn, t_want, p_want in (
        (lambda a: torch.amax(a, 1), lambda a: paddle.amax(a, 1), 1 / 3, 1 / 3),
        (lambda a: torch.max(a), lambda a: paddle.max(a), 1 / 6, 1 / 6),
    ):
        zt, zp = pt(z, True), pd(z, True)
        t_fn(zt).sum().backward()
        p_fn(zp).sum().backward()
        assert np.allclose(zt.grad.numpy(), t_want) and np.allclose(zp.grad.numpy(), p_want)
    zt, zp = pt(z, True), pd(z, True)
    torch.max(zt, 1).values.sum().backward()
    paddle.max(zp, 1).sum().backward()
    assert np.array_equal(zt.grad.numpy(), [[1, 0, 0], [1, 0, 0]]) and np.allclose(zp.grad.numpy(), 1 / 3)
    # twins: SAME (torch pads -inf explicitly, paddle pads in the kernel) and DARTS padding, ties everywhere
    for args in ((3, 2, "SAME"), (3, 1, 1), (2, 2, 0)):
        for hw in ((6, 6), (7, 7)):
            t, p = twin_pair("MaxPool2d", *args)
            xt, xp = pt(np.zeros((1, 2) + hw), True), pd(np.zeros((1, 2) + hw), True)
            t(xt).sum().backward()
            p(xp).sum().backward()
            assert np.array_equal(xt.grad.numpy(), xp.grad.numpy()), (args, hw)


# ---------------------------------------------------------------------------------------------------------
# NEW (not in anchors.md): double backward on paddle CPU
# ---------------------------------------------------------------------------------------------------------
def _double_grad(framework, fn, x):
    if framework == "torch":
        xt = pt(x, True)
        (g,) = torch.autograd.grad(fn(xt).pow(2).sum(), xt, create_graph=True)
        (h,) = torch.autograd.grad(g.pow(2).sum(), xt)
        return h.numpy()
    xp = pd(x, True)
    (g,) = paddle.grad(fn(xp).pow(2).sum(), xp, create_graph=True)
    (h,) = paddle.grad(g.pow(2).sum(), xp)
    return h.numpy()


@pytest.mark.skipif(paddle.is_compiled_with_cuda(), reason="documents the CPU build's kernels")
def test_new_paddle_cpu_double_grad_gaps(rng):
    """Cream's meta step differentiates twice.  Paddle (CPU) has no double grad for depthwise_conv2d (what
    F.conv2d picks for groups == channels), relu6/hardtanh, or max pooling; torch has all.  The twins use the
    grouped conv2d op and clip, which have one; max pooling stays unsupported in paddle (not used by Cream)."""
    x = rng.normal(size=(2, 4, 6, 6))
    w = rng.normal(size=(4, 1, 3, 3))
    with pytest.raises(Exception, match="depthwise_conv2d_double_grad"):
        _double_grad("paddle", lambda a: PF.conv2d(a, pd(w), padding=1, groups=4), x)
    with pytest.raises(Exception, match="relu6_grad"):
        _double_grad("paddle", lambda a: PF.relu6(a), x)
    with pytest.raises(Exception, match="only supports avgpool"):
        _double_grad("paddle", lambda a: PF.max_pool2d(a, 3, 2, 1), x)
    _double_grad("torch", lambda a: TF.max_pool2d(a, 3, 2, 1), x)  # fine in torch
    ref = _double_grad("torch", lambda a: TF.conv2d(a, pt(w), padding=1, groups=4), x)
    t, p = twin_pair("Conv2d", 4, 4, 3, 2, "SAME", groups=4)
    load_both(t, p, {"weight": w})
    assert maxabs(_double_grad("paddle", p, x), _double_grad("torch", t, x)) <= F64
    t1, p1 = twin_pair("Conv2d", 4, 4, 3, 1, 1, groups=4)
    load_both(t1, p1, {"weight": w})
    assert maxabs(_double_grad("paddle", p1, x), ref) <= F64
    for name in ("HardSigmoid", "ReLU6"):
        t, p = twin_pair(name)
        xs = 4 * x
        assert maxabs(_double_grad("paddle", p, xs), _double_grad("torch", t, xs)) <= F64


def test_new_bilinear_resize_to_one_pixel(rng):
    """NEW: resizing an axis to 1 pixel (align_corners=False), torch reads the centre of the source (4 -> 1 averages
    rows 1 and 2), paddle's kernel (align_mode=0) the first pixel; any other output size agrees.  A NAS-Bench-MR
    classification head at 32 px resizes its branches to 1x1, so the twin routes this case through its tables."""
    x = rng.standard_normal((1, 2, 4, 6)).astype(np.float32)
    t = TF.interpolate(torch.from_numpy(x), size=(1, 3), mode="bilinear", align_corners=False).numpy()
    p = PF.interpolate(paddle.to_tensor(x), size=[1, 3], mode="bilinear", align_corners=False, align_mode=0).numpy()
    centre = ((x[:, :, 1] + x[:, :, 2]) / 2).reshape(1, 2, 3, 2).mean(axis=-1)  # rows 1-2, column pairs
    np.testing.assert_allclose(t[:, :, 0], centre, rtol=1e-5, atol=1e-6)
    assert np.abs(t - p).max() > 0.1  # paddle: the first row
    for size in ((1, 3), (1, 1), (4, 1), (3, 5)):
        ours_t = T.resize_bilinear(torch.from_numpy(x), size).numpy()
        ours_p = P.resize_bilinear(paddle.to_tensor(x), size).numpy()
        np.testing.assert_allclose(ours_p, ours_t, rtol=0, atol=4 * np.finfo(np.float32).eps * np.abs(x).max())
        up = P.Upsample(size=size, mode="bilinear")(paddle.to_tensor(x)).numpy()
        np.testing.assert_allclose(up, ours_t, rtol=0, atol=4 * np.finfo(np.float32).eps * np.abs(x).max())
