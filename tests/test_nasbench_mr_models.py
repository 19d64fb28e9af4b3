"""The twin NAS-Bench-MR networks: state names, shapes and order against the spec on both backends (the seed
example, the search_list example, small codes), parameter counts (3,529,880 and 25,033,320 with 1000 classes),
the output shapes of both heads (also at odd input sizes, where the fuse and head resizes do real work), an
upstream-layout ``.pth`` (with torch's ``num_batches_tracked``) loaded through ``MODEL.WEIGHTS``'s path, the
bilinear resize against numpy, and the classification task's flattening of the ``(N, classes, 1, 1)`` output."""
from __future__ import annotations

import os

import numpy as np
import pytest

from common.config import load_config
from common.specs import nasbench_mr as M
from paddle_impl import layout as playout
from paddle_impl import ops as pops
from paddle_impl.backend import Backend as PaddleBackend
from parity_tests.op_cases import np_upsample
from torch_impl import layout as tlayout
from torch_impl import ops as tops
from torch_impl.backend import Backend as TorchBackend

BACKENDS = {"torch": (TorchBackend, tlayout, tops), "paddle": (PaddleBackend, playout, pops)}

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: tiny tensors, one torch thread

SEED_CODE = "16_64-1_1_3_128-3_2_3_3_32_48-2_3_2_3_2_16_32_16-1_4_2_4_1_1_96_112_48_80-112"
SEARCH_LIST_CODE = "96_128-1_1_1_48-1_2_1_1_128_8-1_3_1_1_1_128_128_120-4_4_4_4_4_4_128_128_128_128-64"
TINY_CODE = "8_8-1_1_1_8-1_2_1_1_8_8-1_3_1_1_1_8_8_8-1_4_1_1_1_1_8_8_8_8-8"
# repeats > 1 (several fuse modules between equal branch counts), blocks > 1, distinct widths everywhere
SMALL_CODE = "8_16-2_1_2_8-2_2_1_2_8_16-1_3_2_1_1_8_16_24-2_4_1_1_2_1_8_16_24_32-16"


def build(backend_name, spec, dtype="float32"):
    backend = BACKENDS[backend_name][0](dtype=dtype)
    return backend, backend.build_model("nasbench_mr", spec)


def test_config_default_is_the_seed_example():
    cfg = load_config(None, ["MODEL.FAMILY", "nasbench_mr", "MODEL.NAME", "mrnet"])
    assert M.spec_from_config(cfg).code.code() == SEED_CODE


@pytest.mark.parametrize("backend_name", list(BACKENDS))
@pytest.mark.parametrize("code, classes, params", [
    (SEED_CODE, 1000, 3_529_880),
    (SEARCH_LIST_CODE, 1000, 25_033_320),
    (TINY_CODE, 10, None),
    (SMALL_CODE, 7, None),
])
def test_names_shapes_order_and_params(backend_name, code, classes, params):
    spec = M.network_spec(code, num_classes=classes)
    _, model = build(backend_name, spec)
    layout = BACKENDS[backend_name][1]
    shapes = layout.expected_shapes(model)
    assert shapes == M.expected_state_shapes(spec)
    assert list(shapes) == list(M.expected_state_shapes(spec))  # upstream's state order too
    assert layout.count_parameters(model) == M.count_params(spec)
    if params is not None:
        assert M.count_params(spec) == params


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_seed_example_keys_of_every_fuse_kind(backend_name):
    """ncp.md §2.1's example keys: a new branch from fused branch 0, an up path, a down path, an empty slot."""
    spec = M.network_spec(SEED_CODE)
    shapes = BACKENDS[backend_name][1].expected_shapes(build(backend_name, spec)[1])
    assert shapes["features.2.fuse_layers.1.0.0.weight"] == (48, 32, 3, 3)      # new branch (no Sequential level)
    assert shapes["features.4.fuse_layers.0.1.0.0.weight"] == (32, 48, 1, 1)    # up: 1x1, then nearest x2
    assert shapes["features.4.fuse_layers.1.0.0.0.weight"] == (48, 32, 3, 3)    # down: 3x3 stride 2
    assert shapes["features.0.fuse_layers.0.0.0.weight"] == (128, 64, 3, 3)     # same level, stage 0
    assert not any(k.startswith("features.12.fuse_layers.2.0.") for k in shapes)  # None slot: no keys
    assert "features.12.fuse_layers.2.1.0.0.weight" in shapes                   # ... but the index stays


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_param_kinds_match_ops(backend_name):
    spec = M.network_spec(SMALL_CODE, num_classes=7)
    _, model = build(backend_name, spec)
    assert BACKENDS[backend_name][2].named_param_kinds(model) == M.param_kinds(spec)


def _forward(backend, model, images, train=False):
    model.train() if train else model.eval()
    return np.asarray(backend.to_numpy(model(backend.to_tensor(images))))


@pytest.mark.parametrize("backend_name", list(BACKENDS))
@pytest.mark.parametrize("size", [64, 65, 97])
def test_output_shapes_of_both_heads(backend_name, size):
    images = np.random.default_rng(size).standard_normal((2, 3, size, size))
    sizes = M.branch_sizes(M.network_spec(SMALL_CODE, image_size=size))
    for task, expected in (("classification", (2, 5, 1, 1)), ("segmentation", (2, 5, sizes[0], sizes[0]))):
        spec = M.network_spec(SMALL_CODE, task=task, num_classes=5, image_size=size)
        backend, model = build(backend_name, spec, "float64")
        backend.load_neutral(model, M.init_state(spec, np.random.default_rng(0)))
        for train in (False, True):
            out = _forward(backend, model, images, train)
            assert out.shape == expected and np.isfinite(out).all(), (task, train, out.shape)
        logits = backend.eval_logits(model, images)  # the classification head's (N, C, 1, 1) comes back 2-D
        assert logits.shape == ((2, 5) if task == "classification" else expected)


def test_backends_agree_at_odd_size_and_the_resize_path_runs(monkeypatch):
    """float64, eval mode, 65 px (branches 17, 9, 5, 3: every up path's nearest x2 gives 18 and 10 and is resized
    back); the torch model's resize calls are counted to prove the path ran."""
    spec = M.network_spec(SMALL_CODE, num_classes=5, image_size=65)
    weights = M.init_state(spec, np.random.default_rng(2))
    images = np.random.default_rng(3).standard_normal((2, 3, 65, 65))
    outs = {}
    for name in BACKENDS:
        backend, model = build(name, spec, "float64")
        backend.load_neutral(model, weights)
        outs[name] = backend.eval_logits(model, images)
    assert np.max(np.abs(outs["torch"] - outs["paddle"])) <= 1e-10 * max(1.0, np.max(np.abs(outs["torch"])))

    calls = []
    original = tops.resize_bilinear

    def counting(x, size, align_corners=False):
        calls.append((tuple(x.shape[2:]), tuple(size)))
        return original(x, size, align_corners)

    monkeypatch.setattr(tops, "resize_bilinear", counting)  # the model calls ops.resize_bilinear at run time
    backend, model = build("torch", spec, "float64")
    backend.load_neutral(model, weights)
    backend.eval_logits(model, images)
    assert ((18, 18), (17, 17)) in calls and ((10, 10), (9, 9)) in calls      # fuse: up paths at odd sizes
    assert ((17, 17), (3, 3)) in calls                                          # head: branch 0 -> the last branch


@pytest.mark.parametrize("backend_name", list(BACKENDS))
@pytest.mark.parametrize("hw, size", [((17, 17), (3, 3)), ((18, 10), (17, 9)), ((5, 7), (9, 12)), ((7, 9), (7, 9))])
def test_resize_bilinear_against_numpy(backend_name, hw, size):
    """``ops.resize_bilinear`` = torch's half-pixel bilinear rule (no antialias), float64 and float32."""
    x = np.random.default_rng(0).standard_normal((2, 3) + hw)
    expected = np_upsample(x, size=size, mode="bilinear", align_corners=False)
    ops = BACKENDS[backend_name][2]
    for dtype, tol in (("float64", 1e-12), ("float32", 1e-5)):
        backend = BACKENDS[backend_name][0](dtype=dtype)
        got = np.asarray(backend.to_numpy(ops.resize_bilinear(backend.to_tensor(x), size)), np.float64)
        assert got.shape == expected.shape and np.max(np.abs(got - expected)) <= tol, dtype


def upstream_state(spec, seed):
    """A trained-looking upstream state dict (torch layout) built from the spec's key list alone, with the
    ``num_batches_tracked`` counter torch writes after every BN."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in M.expected_state_shapes(spec).items():
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


def test_upstream_state_of_the_seed_example_has_upstreams_722_keys():
    state = upstream_state(M.network_spec(SEED_CODE), 0)
    assert len(state) == 722 and sum(k.endswith("num_batches_tracked") for k in state) == 120


def test_upstream_pth_loads_by_name_through_model_weights(tmp_path):
    """An upstream ``torch.save`` state dict (float32, ``num_batches_tracked`` included) goes through ``MODEL.WEIGHTS``'
    path (``load_any`` recognises the network, drops the counters; ``build_with_weights`` loads by name) on both
    backends; the same arrays in reversed order give the same logits; a missing key and a wrong shape are refused,
    naming the tensor."""
    import torch

    from tools.commands import build_with_weights, read_weights

    spec = M.network_spec(SMALL_CODE, num_classes=10, image_size=65)
    upstream = upstream_state(spec, 3)
    path = str(tmp_path / "upstream.pth")
    torch.save({k: torch.from_numpy(np.asarray(v, np.float32) if v.dtype == np.float64 else v)
                for k, v in upstream.items()}, path)
    cfg = load_config(None, ["MODEL.FAMILY", "nasbench_mr", "MODEL.NAME", "mrnet", "MODEL.NUM_CLASSES", "10",
                             "DATA.IMAGE_SIZE", "65", "NASBENCH_MR.CODE", SMALL_CODE, "MODEL.WEIGHTS", path,
                             "DTYPE", "float64"])
    ckpt = read_weights(cfg)
    assert ckpt.meta["family"] == "nasbench_mr" and ckpt.meta["name"] == f"mrnet {SMALL_CODE}"
    assert any("num_batches_tracked" in s for s in ckpt.meta["skipped"])
    assert set(ckpt.model) == set(M.expected_state_shapes(spec))
    images = np.random.default_rng(4).standard_normal((2, 3, 65, 65))
    logits = {}
    for name in BACKENDS:
        backend = BACKENDS[name][0](dtype="float64")
        model = build_with_weights(backend, cfg, M, spec, require_weights=True, weights=ckpt)
        logits[name] = backend.eval_logits(model, images)
        back = backend.state_to_neutral(model)
        assert all(np.array_equal(back[k], np.asarray(v, np.float64)) for k, v in ckpt.model.items())
        other = backend.build_model("nasbench_mr", spec)
        backend.load_neutral(other, dict(reversed(list(ckpt.model.items()))))
        assert np.array_equal(logits[name], backend.eval_logits(other, images))
        mine = backend.build_model("nasbench_mr", spec)
        backend.load_neutral(mine, M.init_state(spec, np.random.default_rng(0)))
        assert not np.allclose(logits[name], backend.eval_logits(mine, images))
        for key, value in (("features.10.fuse_layers.2.1.0.0.weight", None),
                           ("classifier.weight", np.zeros((11, 16, 1, 1)))):
            broken = dict(ckpt.model)
            if value is None:
                del broken[key]
            else:
                broken[key] = value
            with pytest.raises(Exception, match=key.replace(".", r"\.")):
                backend.load_neutral(other, broken)
    assert logits["torch"].shape == (2, 10)
    assert np.max(np.abs(logits["torch"] - logits["paddle"])) <= 1e-10 * max(1.0, np.max(np.abs(logits["torch"])))
    assert os.path.exists(path)


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_classification_task_flattens_a_pooled_conv_head(backend_name):
    """``class_logits``: ``(N, C, 1, 1)`` -> ``(N, C)``; 2-D and other shapes untouched.  ``compose_loss`` and
    ``eval_sums`` give the figures of the flattened logits."""
    import importlib

    task_mod = importlib.import_module(f"{backend_name}_impl.tasks.classification")
    backend = BACKENDS[backend_name][0](dtype="float64")
    rng = np.random.default_rng(0)
    flat = rng.standard_normal((4, 6))
    labels = rng.integers(0, 6, 4)
    y = backend.to_tensor(labels)
    t4 = backend.to_tensor(flat.reshape(4, 6, 1, 1))
    t2 = backend.to_tensor(flat)
    assert tuple(task_mod.class_logits(t4).shape) == (4, 6)
    assert task_mod.class_logits(t2) is t2
    seg = backend.to_tensor(rng.standard_normal((4, 6, 2, 2)))
    assert task_mod.class_logits(seg) is seg
    loss4, logits4 = task_mod.compose_loss(t4, y, 0.1)
    loss2, _ = task_mod.compose_loss(t2, y, 0.1)
    assert tuple(logits4.shape) == (4, 6) and float(loss4) == float(loss2)
    spec = M.network_spec(TINY_CODE, num_classes=6, image_size=32)
    _, model = build(backend_name, spec, "float64")
    backend.load_neutral(model, M.init_state(spec, np.random.default_rng(0)))
    images = rng.standard_normal((4, 3, 32, 32))
    sums = task_mod.eval_sums(backend, model, images, labels, 5)
    logits = backend.eval_logits(model, images)
    shifted = logits - logits.max(axis=1, keepdims=True)
    nll = -(shifted[np.arange(4), labels] - np.log(np.exp(shifted).sum(axis=1)))
    assert sums["count"] == 4 and sums["nonfinite"] == 0
    assert sums["loss"] == pytest.approx(nll.sum(), rel=1e-12)
    assert sums["top1"] == float(np.sum(np.argmax(logits, axis=1) == labels))
