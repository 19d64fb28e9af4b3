"""The twin Cream supernets (``CreamSupernet`` in ``torch_impl/models/cream.py`` and ``paddle_impl/models/cream.py``):
names, shapes and upstream's parameter count; a path's output equals the child net built from that path with the
path's weights (eval and train mode, both backends) and torch == paddle in float64; the parameters a path trains
(names, order, gradients); the float64 meta layer inside a float32 network; stage 3's never-run 5th layer."""
from __future__ import annotations

import numpy as np
import paddle
import pytest
import torch

from common.compare import compare
from common.specs import cream
from paddle_impl import layout as playout
from paddle_impl import ops as pops
from paddle_impl.backend import Backend as PaddleBackend
from torch_impl import ops as tops
from torch_impl.backend import Backend as TorchBackend

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: tiny tensors, one torch thread

BACKENDS = (TorchBackend, PaddleBackend)
TINY = cream.build_supernet_spec((1, 2, 2, 1, 1), num_classes=10, image_size=32)
F64_REL = 1e-10  # float64 torch vs paddle (CONVENTIONS.md: ~1e-10 or better proves the structure)


def build(backend_cls, spec, dtype="float64"):
    backend = backend_cls(dtype=dtype)
    return backend, backend.build_model("cream", spec)


def supernet_state(spec, seed=0, dtype=np.float64):
    """``init_state`` (timm's goog rule) with the BN entries, biases and the meta layer made non-trivial, so a
    wrong statistic, a swapped BN or a missing bias cannot hide behind 1/0 values."""
    rng = np.random.default_rng(seed)
    state = cream.init_state(spec, rng, dtype=dtype)
    for name, value in state.items():
        if name.endswith("running_var"):
            state[name] = rng.uniform(0.5, 2.0, value.shape).astype(dtype)
        elif name.endswith(("running_mean", "bias")):
            state[name] = (0.1 * rng.standard_normal(value.shape)).astype(dtype)
        elif name.rpartition(".")[0].rpartition(".")[2].startswith("bn"):
            state[name] = rng.uniform(0.5, 1.5, value.shape).astype(dtype)
    return state


def child_state(spec, state, path):
    """The supernet weights of ``path`` under the child net's names: ``blocks.s.i.c.x`` -> ``blocks.s.k.x`` with
    ``k`` the index of layer ``i`` among the layers the path keeps in stage ``s``; no meta layer."""
    rename = {}
    for s, stage in enumerate(path):
        kept = [(i, c) for i, c in enumerate(stage) if c != cream.SKIP]
        for k, (i, c) in enumerate(kept):
            rename[f"blocks.{s}.{i}.{c}."] = f"blocks.{s}.{k}."
    out = {}
    for name, value in state.items():
        if name.startswith("meta_layer."):
            continue
        if name.startswith("blocks."):
            prefix = ".".join(name.split(".")[:4]) + "."
            if prefix not in rename:
                continue
            name = rename[prefix] + name[len(prefix):]
        out[name] = value
    return out


def run(backend, model, x, path, train):
    """``model(x, path)`` as numpy in train or eval mode (train mode: BN batch statistics and their update)."""
    model.train() if train else model.eval()
    args = (backend.to_tensor(x),) if path is None else (backend.to_tensor(x), path)
    if isinstance(backend, TorchBackend):
        with torch.no_grad():
            return backend.to_numpy(model(*args))
    with paddle.no_grad():
        return backend.to_numpy(model(*args))


def tiny_paths():
    paths = [cream.sample_path(TINY, np.random.default_rng(seed)) for seed in range(3)]
    # skips on layers that keep the feature map (the second layer of stages 2 and 3)
    paths.append(((0,), (5,), (2, cream.SKIP), (4, cream.SKIP), (1,), (3,), (0,)))
    paths.append(((0,), (0,), (3, cream.SKIP), (5, 0), (2,), (4,), (0,)))
    return paths


# ------------------------------------------------------------------------------------------ names, shapes, counts
def test_full_supernet_names_shapes_and_upstream_count():
    spec = cream.build_supernet_spec((4, 4, 4, 4, 4), num_classes=1000)
    expected = cream.expected_state_shapes(spec)
    for backend_cls in BACKENDS:
        backend, model = build(backend_cls, spec, "float32")
        assert list(backend.expected_shapes(model).items()) == list(expected.items()), backend.name
        assert backend.count_parameters(model) == 29_809_073 == cream.count_params(spec)
        assert not model.training  # build() returns eval mode
        assert type(model).__name__ == "CreamSupernet" and model.spec is spec


def test_twins_have_the_same_structure_and_init_kinds():
    _, tmodel = build(TorchBackend, TINY)
    _, pmodel = build(PaddleBackend, TINY)
    ours = [(n, type(m).__name__) for n, m in tmodel.named_modules()]
    theirs = [(n, type(m).__name__.replace("LayerList", "ModuleList"))
              for n, m in pmodel.named_sublayers(include_self=True)]
    assert ours == theirs
    assert {"CreamSupernet", "DepthwiseSeparableConv", "InvertedResidual", "ConvBnAct", "ModuleList", "Linear",
            "Dropout"} <= {t for _, t in ours}
    assert "DropPath" not in {t for _, t in ours}  # the supernet's blocks have no drop path
    kinds = cream.param_kinds(TINY)
    assert tops.named_param_kinds(tmodel) == kinds
    assert pops.named_param_kinds(pmodel) == kinds
    for model in (tmodel, pmodel):
        assert [len(stage) for stage in model.blocks] == [1, 1, 2, 2, 1, 1, 1]
        assert [len(layer) for stage in model.blocks for layer in stage] == [1] + [6] * 7 + [1]


# ------------------------------------------------------------------------------------------ a path is a child net
@pytest.mark.parametrize("backend_cls", BACKENDS, ids=["torch", "paddle"])
def test_path_output_equals_its_child_net(backend_cls):
    state = supernet_state(TINY)
    backend, supernet = build(backend_cls, TINY)
    backend.load_neutral(supernet, state)
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32))
    for path in tiny_paths():
        child_spec = cream.build_child_spec(cream.child_arch_from_path(path), honour_single_block_choices=True,
                                            num_classes=10)
        _, child = build(backend_cls, child_spec)
        backend.load_neutral(child, child_state(TINY, state, path))
        for train in (False, True):
            got, want = run(backend, supernet, x, path, train), run(backend, child, x, None, train)
            diff = compare(got, want, f"{backend.name} supernet vs child {path} train={train}")
            assert diff.max_rel <= 1e-13, str(diff)
        # the train-mode pass updated exactly the path's BN statistics, as the child's
        after, child_after = backend.state_to_neutral(supernet), child_state(TINY, backend.state_to_neutral(supernet),
                                                                             path)
        for name, value in backend.state_to_neutral(child).items():
            assert np.allclose(child_after[name], value, rtol=1e-13, atol=0), name
        kept = {f"blocks.{s}.{i}.{c}." for s, stage in enumerate(path) for i, c in enumerate(stage) if c >= 0}
        for name, value in after.items():
            if name.endswith("running_mean") and name.startswith("blocks.") and \
                    ".".join(name.split(".")[:4]) + "." not in kept:
                assert np.array_equal(value, state[name]), name  # a choice off the path kept its statistics
        backend.load_neutral(supernet, state)  # the next path starts from the same statistics


def test_torch_and_paddle_supernets_agree_in_float64():
    state = supernet_state(TINY, seed=3)
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32))
    outs = {}
    for backend_cls in BACKENDS:
        backend, model = build(backend_cls, TINY)
        backend.load_neutral(model, state)
        for p, path in enumerate(tiny_paths()):
            model.set_path(path)
            for train in (False, True):
                outs[backend.name, p, train] = run(backend, model, x, None, train)
            backend.load_neutral(model, state)
    for p, _ in enumerate(tiny_paths()):
        for train in (False, True):
            diff = compare(outs["paddle", p, train], outs["torch", p, train], f"paddle vs torch path {p} {train}")
            print(diff)
            assert diff.max_rel <= F64_REL, str(diff)


@pytest.mark.parametrize("backend_cls", BACKENDS, ids=["torch", "paddle"])
def test_paths_are_checked_and_named(backend_cls):
    backend, model = build(backend_cls, TINY)
    x = backend.to_tensor(np.zeros((1, 3, 32, 32)))
    with pytest.raises(RuntimeError, match="set_path"):
        model(x)
    with pytest.raises(cream.ArchListError, match="stage 2 has 1 entries"):
        model.set_path(((0,), (1,), (1,), (1, 1), (1,), (1,), (0,)))
    with pytest.raises(cream.ArchListError, match="stage 3 layer 0: 7"):
        model(x, ((0,), (1,), (1, 1), (7, 1), (1,), (1,), (0,)))
    # a skip must keep the feature map: the first layer of a stage changes stride/channels
    with pytest.raises(cream.ArchListError, match=r"stage 1 layer 0: -1 \(skip\).*stride 2, 16 -> 24"):
        model.set_path(((0,), (cream.SKIP,), (1, 1), (1, 1), (1,), (1,), (0,)))
    with pytest.raises(cream.ArchListError, match="stage 4 layer 0.*80 -> 96"):
        model.path_parameters(((0,), (1,), (1, 1), (1, 1), (cream.SKIP,), (1,), (0,)))
    assert model.path is None
    path = [[0], [1], [2, -1], [3, 4], [5], [0], [0]]
    assert model.set_path(path) == ((0,), (1,), (2, -1), (3, 4), (5,), (0,), (0,)) == model.path
    assert tuple(model(x).shape) == (1, 10)


# ------------------------------------------------------------------------------------------ the parameters of a path
def _grads(backend, model, x, labels, path):
    """Canonical name -> gradient (torch layout) of a train-mode cross-entropy on ``path``."""
    model.train()
    if isinstance(backend, TorchBackend):
        model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(backend.to_tensor(x), path), torch.from_numpy(labels))
        loss.backward()
        return {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}
    model.clear_gradients(set_to_zero=False)
    loss = paddle.nn.functional.cross_entropy(model(backend.to_tensor(x), path), paddle.to_tensor(labels))
    loss.backward()
    table = playout.neutral_name_table(model)
    out = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            neutral, transpose = table[name]
            out[neutral] = p.grad.numpy().T.copy() if transpose else p.grad.numpy().copy()
    return out


def test_path_parameters_and_their_gradients():
    state = supernet_state(TINY, seed=4)
    x = np.random.default_rng(5).standard_normal((3, 3, 32, 32))
    labels = np.array([1, 7, 3])
    grads = {}
    for backend_cls in BACKENDS:
        backend, model = build(backend_cls, TINY)
        backend.load_neutral(model, state)
        own = (dict(model.named_parameters()) if backend.name == "torch" else
               {playout.neutral_name_map(model)[n]: p for n, p in model.named_parameters()})
        assert [(n, id(p)) for n, p in model.meta_parameters()] == [
            (n, id(own[n])) for n in ("meta_layer.weight", "meta_layer.bias")]
        for k, path in enumerate(tiny_paths()):
            names = cream.path_parameter_names(TINY, path)
            listed = model.path_parameters(path)
            assert [n for n, _ in listed] == list(names)  # upstream's rand_parameters(path) order
            assert all(p is own[n] for n, p in listed)
            assert not any(n.startswith(("meta_layer", "blocks.3.4")) or "running" in n for n in names)
            got = _grads(backend, model, x, labels, path)
            assert set(got) == set(names), (backend.name, path, set(got) ^ set(names))  # none to other choices / meta
            for name, g in got.items():
                grads[backend.name, k, name] = g
            backend.load_neutral(model, state)
    # torch vs paddle, relative to the path's largest gradient: a bias in front of a conv and a train-mode BN (e.g.
    # blocks.0.0.0.bn2.bias) has an exactly-zero gradient in exact arithmetic, rounding noise (~1e-14) here
    for k, _ in enumerate(tiny_paths()):
        scale = max(float(np.abs(g).max()) for (b, j, _), g in grads.items() if b == "torch" and j == k)
        worst = max(float(np.abs(grads["paddle", k, n] - g).max()) for (b, j, n), g in grads.items()
                    if b == "torch" and j == k)
        print(f"path {k}: max |grad paddle - grad torch| / max |grad| = {worst / scale:.2e}")
        assert worst <= F64_REL * scale


# ------------------------------------------------------------------------------------------ the meta layer
@pytest.mark.parametrize("backend_cls", BACKENDS, ids=["torch", "paddle"])
def test_float64_meta_layer_in_a_float32_network(backend_cls, tmp_path):
    backend, model = build(backend_cls, TINY, "float32")
    backend.load_neutral(model, supernet_state(TINY, seed=6, dtype=np.float32))
    params = dict(model.meta_parameters())
    model.set_meta_dtype("float64")
    assert all(params[n] is p for n, p in model.meta_parameters())  # the same parameter objects, now float64
    dtype_of = (lambda t: str(t.dtype).replace("torch.", "").replace("paddle.", ""))
    assert {dtype_of(p) for _, p in model.meta_parameters()} == {"float64"}
    assert {dtype_of(p) for n, p in model.path_parameters(tiny_paths()[0])} == {"float32"}

    # features: [slice, num_classes] float32 logits of the float32 network itself
    x = np.random.default_rng(7).standard_normal((TINY.slice, 3, 32, 32)).astype(np.float32)
    model.set_path(tiny_paths()[1])
    logits = model(backend.to_tensor(x))
    assert dtype_of(logits) == "float32" and tuple(logits.shape) == (TINY.slice, TINY.num_classes)
    out = model.forward_meta(logits)
    assert dtype_of(out) == "float64" and tuple(out.shape) == (1, 1)
    state = backend.state_to_neutral(model)
    assert state["meta_layer.weight"].dtype == np.float64 and state["conv_stem.weight"].dtype == np.float32
    feats = backend.to_numpy(logits.detach()).astype(np.float64).reshape(1, -1)
    expected = feats @ state["meta_layer.weight"].T + state["meta_layer.bias"]
    diff = compare(backend.to_numpy(out.detach()), expected, "forward_meta vs numpy")
    assert diff.max_rel <= 1e-14, str(diff)
    out.sum().backward()  # the float64 meta loss reaches the float32 network through the cast
    assert dtype_of(model.classifier.weight.grad) == "float32" and dtype_of(model.meta_layer.weight.grad) == "float64"
    with pytest.raises(ValueError, match="slice x num_classes = 4 x 10 = 40"):
        model.forward_meta(logits[:2])

    # state round-trips: the float64 meta layer keeps its dtype when loaded from float32 or float64 tensors
    fresh = supernet_state(TINY, seed=8, dtype=np.float32)
    backend.load_neutral(model, fresh)
    again = backend.state_to_neutral(model)
    assert again["meta_layer.weight"].dtype == np.float64 and again["classifier.weight"].dtype == np.float32
    assert all(np.array_equal(again[n], fresh[n]) for n in fresh)
    precise = {n: v.astype(np.float64) for n, v in fresh.items()}
    precise["meta_layer.weight"] = precise["meta_layer.weight"] + 1e-12
    backend.load_neutral(model, precise)
    assert np.array_equal(backend.state_to_neutral(model)["meta_layer.weight"], precise["meta_layer.weight"])
    # ... and through a checkpoint file into a plain float32 network
    from common.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

    save_checkpoint(str(tmp_path / "s.safetensors"), Checkpoint(model=backend.state_to_neutral(model), meta={}))
    loaded = load_checkpoint(str(tmp_path / "s.safetensors")).model
    _, plain = build(backend_cls, TINY, "float32")
    backend.load_neutral(plain, loaded)
    assert backend.state_to_neutral(plain)["meta_layer.weight"].dtype == np.float32
    model.set_meta_dtype("float32")
    assert {dtype_of(p) for _, p in model.meta_parameters()} == {"float32"}
    with pytest.raises(ValueError, match="float16"):
        model.set_meta_dtype("float16")


# ------------------------------------------------------------------------------------------ stage 3's 5th layer
@pytest.mark.parametrize("backend_cls", BACKENDS, ids=["torch", "paddle"])
def test_stage_three_fifth_layer_exists_and_never_runs(backend_cls):
    spec = cream.build_supernet_spec((1, 1, 4, 1, 1), num_classes=10, image_size=32)
    backend, model = build(backend_cls, spec)
    assert len(model.blocks[3]) == 5 and spec.paths_per_stage[2] == 4
    names = backend.expected_shapes(model)
    assert [n for n in names if n.startswith("blocks.3.4.")] and names == cream.expected_state_shapes(spec)
    ran = []
    for c, block in enumerate(model.blocks[3][4]):
        hook = (lambda c: lambda *_: ran.append(c))(c)
        block.register_forward_hook(hook) if backend.name == "torch" else block.register_forward_post_hook(hook)
    fourth = []
    model.blocks[3][3][2].register_forward_hook(lambda *_: fourth.append(1)) if backend.name == "torch" else \
        model.blocks[3][3][2].register_forward_post_hook(lambda *_: fourth.append(1))
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    for c in range(cream.NUM_CHOICES):
        path = ((0,), (c,), (c,), (c, c, c, 2), (c,), (c,), (0,))
        run(backend, model, x, path, train=c % 2 == 1)
        assert not any(n.startswith("blocks.3.4.") for n in cream.path_parameter_names(spec, path))
    assert ran == [] and fourth == [1] * cream.NUM_CHOICES  # the 4th layer ran every time, the 5th never
    with pytest.raises(cream.ArchListError, match="stage 3 has 5 entries; the supernet's sta_num gives 4"):
        model.set_path(((0,), (0,), (0,), (0, 0, 0, 0, 0), (0,), (0,), (0,)))
