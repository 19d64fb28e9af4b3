"""The twin PC-DARTS evaluation networks: parameter counts and names against the spec on both backends (full-size
CIFAR with/without aux, ImageNet), loading an upstream-layout state dict by name, eval/train forward of a small net
with the aux head, drop path (ramp and which ops get it)."""
from __future__ import annotations

import numpy as np
import pytest

from common.random_masks import MaskSource
from common.specs import pcdarts as P
from paddle_impl import layout as playout
from paddle_impl import ops as pops
from paddle_impl.backend import Backend as PaddleBackend
from torch_impl import layout as tlayout
from torch_impl import ops as tops
from torch_impl.backend import Backend as TorchBackend

BACKENDS = {"torch": (TorchBackend, tlayout, tops), "paddle": (PaddleBackend, playout, pops)}

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: tiny tensors, one torch thread


def build(backend_name, spec, dtype="float32"):
    backend = BACKENDS[backend_name][0](dtype=dtype)
    return backend, backend.build_model("pcdarts", spec)


def small(aux=True, drop_path=0.0, genotype="PCDARTS"):
    return P.network_spec("cifar", 8, 5, 10, aux, genotype, drop_path=drop_path)


@pytest.fixture(scope="module")
def imagenet_models():
    spec = P.network_spec("imagenet", 48, 14, 1000, True, "PC_DARTS_image")
    return spec, {name: build(name, spec)[1] for name in BACKENDS}


@pytest.mark.parametrize("backend_name", list(BACKENDS))
@pytest.mark.parametrize("aux", [False, True])
def test_cifar_counts_and_names(backend_name, aux):
    spec = P.network_spec("cifar", 36, 20, 10, aux, "PCDARTS")
    _, model = build(backend_name, spec)
    layout = BACKENDS[backend_name][1]
    assert layout.count_parameters(model) == P.count_params(spec) == (4_111_104 if aux else 3_634_678)
    assert layout.expected_shapes(model) == P.expected_state_shapes(spec)
    assert list(layout.expected_shapes(model)) == list(P.expected_state_shapes(spec))  # module order too


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_imagenet_counts_and_names(backend_name, imagenet_models):
    spec, models = imagenet_models
    layout = BACKENDS[backend_name][1]
    assert layout.count_parameters(models[backend_name]) == P.count_params(spec) == 6_603_240
    assert layout.expected_shapes(models[backend_name]) == P.expected_state_shapes(spec)


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_param_kinds_match_ops(backend_name):
    spec = small(aux=True, genotype="PC_DARTS_image")
    _, model = build(backend_name, spec)
    assert BACKENDS[backend_name][2].named_param_kinds(model) == P.param_kinds(spec)


def upstream_state(spec, seed):
    """A trained-looking state dict in upstream's layout, built from the spec's key list alone (torch layout,
    ``num_batches_tracked`` included as upstream writes it, then dropped as the neutral form does)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in P.expected_state_shapes(spec).items():
        if name.endswith("running_var"):
            out[name] = rng.uniform(0.5, 2.0, shape)
        elif name.endswith(".weight") and len(shape) == 1:
            out[name] = rng.uniform(0.5, 1.5, shape)
        elif len(shape) == 1:
            out[name] = rng.normal(0.0, 0.1, shape)
        else:
            out[name] = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[1:])), shape)
        if name.endswith("running_var"):
            out[name[: -len("running_var")] + "num_batches_tracked"] = np.asarray(100, np.int64)
    return out


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_upstream_layout_loads_by_name(backend_name):
    """Load by name: an upstream-ordered dict and the same arrays in reversed order give the same logits; a
    missing key and a wrong shape are refused, naming the tensor."""
    spec = small(aux=True)
    backend, model = build(backend_name, spec, "float64")
    layout = BACKENDS[backend_name][1]
    upstream = upstream_state(spec, 3)
    neutral = {k: v for k, v in upstream.items() if not k.endswith("num_batches_tracked")}
    images = np.random.default_rng(4).standard_normal((2, 3, 32, 32))
    layout.load_neutral(model, neutral)
    first = backend.eval_logits(model, images)
    back = layout.state_to_neutral(model)
    assert all(np.allclose(back[k], v) for k, v in neutral.items())
    _, other = build(backend_name, spec, "float64")
    layout.load_neutral(other, dict(reversed(list(neutral.items()))))
    assert np.array_equal(first, backend.eval_logits(other, images))
    # our own init through the same path runs too, and differs
    _, mine = build(backend_name, spec, "float64")
    layout.load_neutral(mine, P.init_state(spec, np.random.default_rng(0)))
    assert not np.allclose(first, backend.eval_logits(mine, images))
    broken = dict(neutral)
    del broken["cells.2._ops.0.op.1.weight"]
    with pytest.raises(Exception, match="cells.2._ops.0.op.1.weight"):
        layout.load_neutral(other, broken)
    broken = dict(neutral)
    broken["classifier.weight"] = np.zeros((11, 32))
    with pytest.raises(Exception, match="classifier.weight"):
        layout.load_neutral(other, broken)


def _forward(backend, model, images, train):
    if train:
        model.train()
    else:
        model.eval()
    out = model(backend.to_tensor(images))
    if isinstance(out, tuple):
        return tuple(np.asarray(backend.to_numpy(o)) for o in out)
    return np.asarray(backend.to_numpy(out))


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_small_net_eval_and_train_forward(backend_name):
    spec = small(aux=True, drop_path=0.2)
    backend, model = build(backend_name, spec, "float64")
    backend.load_neutral(model, P.init_state(spec, np.random.default_rng(0)))
    images = np.random.default_rng(1).standard_normal((4, 3, 32, 32))
    logits = _forward(backend, model, images, train=False)
    assert isinstance(logits, np.ndarray) and logits.shape == (4, 10) and np.isfinite(logits).all()
    source = MaskSource(5)
    BACKENDS[backend_name][2].attach_mask_source(model, source)
    source.start_step(0)
    out = _forward(backend, model, images, train=True)
    assert isinstance(out, tuple) and [o.shape for o in out] == [(4, 10), (4, 10)]
    # drop path: one draw per non-identity op of every cell (PCDARTS normal: 7 of 8; reduce: 8 of 8)
    draws = sum(sum(1 for op in c.ops if not op.is_identity) for c in P.cell_plan(spec))
    assert source.draws == draws
    no_aux = small(aux=False)
    backend2, model2 = build(backend_name, no_aux, "float64")
    model2.train()
    assert not isinstance(model2(backend2.to_tensor(images)), tuple)


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_set_epoch_ramp(backend_name):
    spec = small(aux=False, drop_path=0.3)
    _, model = build(backend_name, spec)
    ops = BACKENDS[backend_name][2]
    probs = lambda: {round(m.drop_prob, 12) for m in _sublayers(model) if isinstance(m, ops.DropPath)}  # noqa: E731
    assert probs() == {0.3} and model.drop_path_prob == 0.3  # before any set_epoch: MODEL.DROP_PATH as is
    model.set_epoch(0, 600)
    assert probs() == {0.0}
    model.set_epoch(150, 600)
    assert probs() == {0.075} and model.drop_path_prob == pytest.approx(0.075)


def _sublayers(model):
    return model.modules() if hasattr(model, "modules") else model.sublayers(include_self=True)


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_drop_path_off_at_zero_and_in_eval(backend_name):
    """Probability 0 in training draws no mask (upstream: ``if self.training and drop_prob > 0``)."""
    spec = small(aux=False, drop_path=0.2)
    backend, model = build(backend_name, spec, "float64")
    source = MaskSource(1)
    BACKENDS[backend_name][2].attach_mask_source(model, source)
    model.set_epoch(0, 10)
    model.train()
    model(backend.to_tensor(np.zeros((2, 3, 32, 32))))
    assert source.draws == 0
