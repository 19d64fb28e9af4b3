"""The PC-DARTS search: the spec (counts, upstream keys, the genotype rule), the twin search networks (names,
partial channels + shuffle), the architect (no validation gradient reaches the weights; the second-order
finite difference against the exact Hessian-vector product), upstream ``weights.pt`` files, and the `search`
command end to end on both backends (genotype JSON and pictures, resume, the JSON trains)."""
from __future__ import annotations

import csv
import importlib
import json
import os

import numpy as np
import pytest

from common import engine
from common.checkpoint import load_checkpoint
from common.config import load_config
from common.specs import pcdarts as P
from tests.test_pcdarts_train import _Interrupt, _StopAfter  # the interruption hook after epoch 1
from tools.main import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEARCH = os.path.join(ROOT, "configs", "pcdarts_search_digits.yaml")
TRAIN = os.path.join(ROOT, "configs", "pcdarts_cifar_digits.yaml")
TINY = ["PCDARTS.INIT_CHANNELS", "8", "PCDARTS.LAYERS", "5", "DATA.NUM_TRAIN", "96", "DATA.BATCH_SIZE", "16",
        "TRAIN.EPOCHS", "2", "TRAIN.MAX_STEPS_PER_EPOCH", "2", "PCDARTS.ARCH_START_EPOCH", "1", "THREADS", "1"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rows_of(run_dir):
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as handle:
        return list(csv.DictReader(handle))


def backend_of(name, dtype="float64"):
    return importlib.import_module(f"{name}_impl.backend").Backend(dtype=dtype, threads=1)


# ------------------------------------------------------------------------------------------------ the spec
def test_search_network_counts_match_upstream():
    spec = P.search_spec("cifar")
    assert (spec.C, spec.layers, spec.k, spec.num_edges) == (16, 8, 4, 14)
    assert P.count_search_params(spec) == 299_578           # upstream count_parameters_in_MB: 0.299578
    assert P.count_search_params(spec, include_arch=True) == 299_578 + 2 * 14 * 8 + 2 * 14
    keys = P.upstream_search_keys(spec)
    assert len(keys) == 4_186                               # upstream Network(16, 10, 8).state_dict()
    assert sum(k.endswith("num_batches_tracked") for k in keys) == 929
    assert keys["cells.0._ops.0._ops.4.op.1.weight"] == (4, 1, 3, 3)
    assert keys["cells.2._ops.0._ops.3.conv_1.weight"] == (4, 8, 1, 1)  # stride-2 skip: FactorizedReduce on C/4
    assert "cells.0._ops.0._ops.3.op.1.weight" not in keys              # index 3 is skip_connect
    assert P.count_search_params(P.search_spec("cifar", num_classes=100)) == 322_708
    assert P.count_search_params(P.search_spec("imagenet", num_classes=1000)) == 956_512
    assert [c.index for c in P.search_cell_plan(spec) if c.reduction] == [2, 5]
    assert P.node_slices() == ((0, 2), (2, 5), (5, 9), (9, 14))
    assert spec.arch_shapes == {"alphas_normal": (14, 8), "alphas_reduce": (14, 8), "betas_normal": (14,),
                                "betas_reduce": (14,)}


def test_bad_search_settings_name_the_key():
    with pytest.raises(ValueError, match="PCDARTS.PARTIAL_K = 3"):
        P.search_spec("cifar", C=16, k=3)
    with pytest.raises(ValueError, match="DATA.IMAGE_SIZE = 30"):
        P.search_spec("cifar", image_size=30)
    cfg = load_config(SEARCH, ["MODEL.DROP_PATH", "0.2"])
    with pytest.raises(ValueError, match="MODEL.DROPOUT and MODEL.DROP_PATH must be 0"):
        P.spec_from_config(cfg)


def _arch(normal_alphas, normal_betas=None):
    """Architecture arrays with the given normal-cell values and a uniform reduction cell."""
    betas = np.zeros(14) if normal_betas is None else np.asarray(normal_betas, float)
    return {"alphas_normal": np.asarray(normal_alphas, float), "betas_normal": betas,
            "alphas_reduce": np.zeros((14, 8)), "betas_reduce": np.zeros(14)}


def test_genotype_rule():
    """Top-2 incoming edges by their best non-`none` weight, strongest first; the best non-`none` op per edge;
    `none` never chosen even when it dominates; betas re-rank edges but never change an edge's op; ties go to the
    lower index."""
    alphas = np.zeros((14, 8))
    ops = {name: i for i, name in enumerate(P.PRIMITIVES)}
    # node 0 (edges 0, 1): edge 1 strongest via sep_conv_3x3, edge 0 via dil_conv_5x5; `none` huge on edge 0
    alphas[0, ops["none"]] = 9.0
    alphas[0, ops["dil_conv_5x5"]] = 1.0
    alphas[1, ops["sep_conv_3x3"]] = 2.0
    # node 1 (edges 2, 3, 4): edge 4 best (max_pool), edges 2 and 3 tie -> edge 2 (lower index) kept
    alphas[4, ops["max_pool_3x3"]] = 3.0
    alphas[2, ops["skip_connect"]] = 1.0
    alphas[3, ops["avg_pool_3x3"]] = 1.0
    g = P.derive_genotype(_arch(alphas))
    assert g.normal[:4] == (("sep_conv_3x3", 1), ("dil_conv_5x5", 0), ("max_pool_3x3", 2), ("skip_connect", 0))
    # the softmax over a row with `none` at 9 leaves dil_conv_5x5 tiny: betas can lift edge 0 above edge 1
    betas = np.zeros(14)
    betas[0] = 12.0
    g2 = P.derive_genotype(_arch(alphas, betas))
    assert g2.normal[:2] == (("dil_conv_5x5", 0), ("sep_conv_3x3", 1))
    assert g2.normal_concat == (2, 3, 4, 5) == g2.reduce_concat
    # uniform alphas: every op ties -> max_pool_3x3 (the first non-`none`), edges 0 and 1
    g0 = P.derive_genotype(_arch(np.zeros((14, 8))))
    assert g0.normal[:2] == (("max_pool_3x3", 0), ("max_pool_3x3", 1))
    assert g0.reduce[-2:] == (("max_pool_3x3", 0), ("max_pool_3x3", 1))


def test_arch_summary_is_json_and_entropy_is_log8_when_uniform():
    summary = P.arch_summary(_arch(np.zeros((14, 8))))
    json.dumps(summary)
    assert summary["entropy_reduce"] == pytest.approx(np.log(8))
    assert np.allclose(np.asarray(summary["betas_normal_normalised"])[:2], 0.5)


# ------------------------------------------------------------------------------------------------ the twins
@pytest.mark.parametrize("backend_name", ["torch", "paddle"])
def test_twin_names_equal_the_spec_and_mixed_op_shuffles_like_upstream(backend_name):
    be = backend_of(backend_name)
    spec = P.search_spec("cifar", C=8, layers=5)
    model = be.build_model("pcdarts", spec)
    assert be.expected_shapes(model) == {k: tuple(v) for k, v in P.expected_state_shapes(spec).items()}
    be.load_neutral(model, P.init_state(spec, np.random.default_rng(0), dtype=np.float64))
    model.train()
    ops = importlib.import_module(f"{backend_name}_impl.ops")
    for cell_index, edge in ((0, 3), (1, 0)):  # a stride-1 edge, a stride-2 edge (cell 1 is a reduction)
        mixed = model.cells[cell_index]._ops[edge]
        c = 8 * (2 if cell_index else 1)
        x = be.to_tensor(np.random.default_rng(1).standard_normal((2, c, 8, 8)))
        w = be.to_tensor(np.random.default_rng(2).random(8))
        out = be.to_numpy(mixed(x, w))
        # reference: upstream's formula, written out with the same modules
        part = c // spec.k
        head = sum(w[i] * mixed._ops[i](x[:, :part]) for i in range(1, 8))
        rest = x[:, part:] if head.shape[2] == 8 else mixed.mp(x[:, part:])
        if backend_name == "torch":
            import torch

            ref = ops.channel_shuffle(torch.cat([head, rest], 1), spec.k)
        else:
            import paddle

            ref = ops.channel_shuffle(paddle.concat([head, rest], 1), spec.k)
        np.testing.assert_array_equal(out, be.to_numpy(ref))


def _upstream_pt(tmp_path, spec, seed=5):
    """An upstream ``weights.pt`` (``torch.save(model.state_dict())``) built from the upstream key list: trained-
    looking values, ``num_batches_tracked`` included, no alphas/betas."""
    import torch

    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in P.upstream_search_keys(spec).items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            state[name] = torch.from_numpy(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        else:
            state[name] = torch.from_numpy((0.2 * rng.standard_normal(shape)).astype(np.float32))
    path = str(tmp_path / "weights.pt")
    torch.save(state, path)
    return path, {k: v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}


def test_upstream_weights_pt_loads_by_name_in_both_twins(tmp_path, capsys):
    from tools import commands

    cfg = load_config(SEARCH, ["PCDARTS.INIT_CHANNELS", "8", "PCDARTS.LAYERS", "5", "SEED", "4"])
    spec = P.spec_from_config(cfg)
    path, arrays = _upstream_pt(tmp_path, spec)
    ckpt = commands.read_weights(cfg, path)
    assert ckpt.meta["family"] == "pcdarts" and "no alphas/betas" in ckpt.meta["name"]
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    init = P.init_state(spec, np.random.default_rng(4))
    logits = {}
    for name in ("torch", "paddle"):
        be = backend_of(name, "float32")
        model = commands.build_with_weights(be, cfg, P, spec, require_weights=False, weights=ckpt)
        assert "holds no alphas_normal, alphas_reduce, betas_normal, betas_reduce" in capsys.readouterr().err
        own = be.build_model("pcdarts", spec)
        be.load_neutral(own, {**arrays, **{n: init[n] for n in P.ARCH_NAMES}})  # our own weights path
        logits[name] = be.eval_logits(model, x)
        np.testing.assert_array_equal(logits[name], be.eval_logits(own, x))
    np.testing.assert_allclose(logits["torch"], logits["paddle"], rtol=1e-5, atol=1e-6)
    # convert keeps every tensor and names the network
    out = str(tmp_path / "w.safetensors")
    assert main(["convert", "--from", "torch", path, "--to", "neutral", out]) == 0
    assert set(load_checkpoint(out).model) == set(arrays)


# ------------------------------------------------------------------------------------------------ the architect
def _task(backend_name, dtype="float64", extra=()):
    cfg = load_config(SEARCH, ["PCDARTS.INIT_CHANNELS", "8", "PCDARTS.LAYERS", "5", "SEED", "3", *extra])
    spec = P.spec_from_config(cfg)
    be = backend_of(backend_name, dtype)
    model = be.build_model("pcdarts", spec)
    state = P.init_state(spec, np.random.default_rng(3), dtype=np.float64)
    state.update({n: 0.5 * np.random.default_rng(9).standard_normal(state[n].shape) for n in P.ARCH_NAMES})
    be.load_neutral(model, state)
    task = be.make_task("pcdarts_search", model, cfg, spec)
    task.start_epoch(cfg.PCDARTS.ARCH_START_EPOCH)
    return task, be


def _batches(n=6, seed=0):
    rng = np.random.default_rng(seed)
    make = lambda: (rng.standard_normal((n, 3, 32, 32)), rng.integers(0, 10, n))  # noqa: E731
    return make(), make()


@pytest.mark.parametrize("backend_name", ["torch", "paddle"])
@pytest.mark.parametrize("unrolled", [False, True])
def test_validation_gradients_never_reach_the_weights(backend_name, unrolled):
    """After the architecture step no weight holds a gradient, and the weight step that follows equals a weight
    step taken from the same state by a task that never ran an architecture step (PaddleSlim's leak would add
    dL_val/dw to it)."""
    train, search = _batches()
    lrs = {"weights": 0.1, "arch": 6e-4}
    task, be = _task(backend_name, extra=["PCDARTS.UNROLLED", str(unrolled)])
    task.arch_step(train, search, lrs)
    assert all(p.grad is None for _, p in task.weights), "a weight kept a gradient from the architecture step"
    after_arch = be.state_to_neutral(task.model)
    task.weight_step(train, lrs["weights"])
    fresh, _ = _task(backend_name, extra=["PCDARTS.UNROLLED", str(unrolled)])
    be.load_neutral(fresh.model, after_arch)
    fresh.weight_step(train, lrs["weights"])
    a, b = be.state_to_neutral(task.model), be.state_to_neutral(fresh.model)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    moved = [n for n in P.ARCH_NAMES if not np.array_equal(after_arch[n], a[n])]
    assert not moved, f"the weight step moved architecture parameters {moved}"


def _exact_second_order(task, train, search, eta):
    """The DARTS second-order gradient with the exact Hessian-vector product (torch double backward; float64)."""
    import torch

    params = [p for _, p in task.weights]
    opt = task.optimizers["weights"]
    theta = [p.detach().clone() for p in params]
    loss_t, _, _ = task.loss_on(train)
    g = torch.autograd.grad(loss_t, params)
    (group,) = opt.param_groups  # PC-DARTS decays every weight (OPTIM.NO_DECAY_1D false): one group
    wd = float(group["weight_decay"])
    assert wd == 3e-4
    with torch.no_grad():
        for p, th, gi in zip(params, theta, g):
            p.copy_(th - eta * (gi + wd * th))  # no momentum yet (first step)
    loss_v, _, _ = task.loss_on(search)
    grads = torch.autograd.grad(loss_v, task.arch + params)
    dalpha, v = grads[:4], grads[4:]
    with torch.no_grad():
        for p, th in zip(params, theta):
            p.copy_(th)
    loss_t, _, _ = task.loss_on(train)
    gw = torch.autograd.grad(loss_t, params, create_graph=True)
    hv = torch.autograd.grad(sum((a * b).sum() for a, b in zip(gw, v)), task.arch)
    return [(da - eta * h).numpy() for da, h in zip(dalpha, hv)]


def test_second_order_finite_difference_matches_the_exact_hessian_vector_product():
    """The second-order gradient (one unrolled SGD step, then the finite-difference HVP) against the same formula
    with the exact HVP (torch double backward, float64).  With a small step (HVP_R 1e-7) the two agree to 1e-6:
    the unrolled step, the signs and eta are right.  Upstream's r = 0.01 (and on this tiny net even 1e-5) moves the
    weights across ReLU / max-pool kinks, where the gradient jumps, so its value is its own and not the exact
    HVP's; the twins reproduce that value (parity), they do not improve on it."""
    train, search = _batches(4, seed=1)
    eta = 0.1
    task, be = _task("torch", extra=["PCDARTS.UNROLLED", "True", "PCDARTS.HVP_R", "1e-7"])
    state = be.state_to_neutral(task.model)
    exact = _exact_second_order(task, train, search, eta)
    be.load_neutral(task.model, state)  # the exact path's forwards moved the BN statistics
    fd, _, _ = task.arch_gradient(train, search, eta)
    err = _rel([be.to_numpy(t) for t in fd], exact)
    print(f"\nsecond-order arch gradient, finite difference (r = 1e-7) vs exact HVP, float64: max rel {err:.2e}")
    assert err < 1e-6, err


def _rel(got, want):
    return max(float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max()) for a, b in zip(got, want))


def test_float32_second_order_with_the_float64_finite_difference():
    """float32, upstream's r = 0.01: the plain finite difference is ill-conditioned (upstream's own float32 value
    is ~13% off its float64 one); PCDARTS.HVP finite_difference_float64 evaluates the two gradients with a float64
    copy and lands within 1e-3 of the float64 run."""
    train, search = _batches(4, seed=1)
    eta = 0.1
    task, be = _task("torch", extra=["PCDARTS.UNROLLED", "True"])
    state = be.state_to_neutral(task.model)
    reference = [be.to_numpy(t) for t in task.arch_gradient(train, search, eta)[0]]
    errors = {}
    for hvp in ("finite_difference", "finite_difference_float64"):
        t32, be32 = _task("torch", "float32", extra=["PCDARTS.UNROLLED", "True", "PCDARTS.HVP", hvp])
        be32.load_neutral(t32.model, state)
        errors[hvp] = _rel([be32.to_numpy(t) for t in t32.arch_gradient(train, search, eta)[0]], reference)
    print(f"\nfloat32 second-order arch gradient vs the float64 run (max rel): plain finite difference "
          f"{errors['finite_difference']:.2e}, float64 finite difference {errors['finite_difference_float64']:.2e}")
    assert errors["finite_difference_float64"] < 1e-3
    assert errors["finite_difference_float64"] < errors["finite_difference"]


# ------------------------------------------------------------------------------------------------ the command
@pytest.mark.parametrize("backend_name,unrolled", [("torch", "True"), ("paddle", "False")])
def test_search_end_to_end_writes_a_genotype_that_trains(backend_name, unrolled, tmp_path):
    run_dir = str(tmp_path / "search")
    assert main(["search", SEARCH, "--backend", backend_name, *TINY, "PCDARTS.UNROLLED", unrolled,
                 "--output", run_dir]) == 0
    rows = rows_of(run_dir)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[0]["arch_steps"] == "0" and rows[1]["arch_steps"] == "2"   # architecture steps from epoch 1
    assert rows[0]["train_arch_loss"] == "" and float(rows[1]["train_arch_loss"]) > 0
    assert float(rows[1]["lr_arch"]) == pytest.approx(6e-3)  # the quick config: the ImageNet script's arch LR
    for epoch in (1, 2):
        record = json.load(open(os.path.join(run_dir, "arch", f"epoch-{epoch:04d}.json")))
        assert np.asarray(record["alphas_normal_softmax"]).shape == (14, 8)
        for cell in ("normal", "reduce"):
            with open(os.path.join(run_dir, "arch", f"epoch-{epoch:04d}-{cell}.png"), "rb") as fh:
                assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    ckpt = load_checkpoint(os.path.join(run_dir, "last.safetensors"))
    assert ckpt.meta["task"] == "pcdarts_search" and set(ckpt.optimizers) == {"weights", "arch"}
    genotype = P.load_genotype(os.path.join(run_dir, "genotype.json"))
    assert genotype == P.derive_genotype({n: ckpt.model[n] for n in P.ARCH_NAMES})  # the saved alphas/betas
    assert [P.Genotype.from_dict(h["genotype"]) for h in ckpt.extra["genotypes"]][-1] == genotype
    log = open(os.path.join(run_dir, "train.log")).read()
    assert "genotype after epoch 2: Genotype(normal=[" in log and "softmax(alphas_reduce)" in log
    train_dir = str(tmp_path / "train")
    assert main(["train", TRAIN, "--backend", backend_name, "PCDARTS.INIT_CHANNELS", "8", "PCDARTS.LAYERS", "5",
                 "TRAIN.EPOCHS", "1", "TRAIN.MAX_STEPS_PER_EPOCH", "1", "DATA.NUM_VAL", "16", "THREADS", "1",
                 "PCDARTS.GENOTYPE", os.path.join(run_dir, "genotype.json"), "--output", train_dir]) == 0
    trained = load_checkpoint(os.path.join(train_dir, "last.safetensors"))
    assert trained.meta["name"] == "pcdarts_cifar"


def test_search_and_train_refuse_each_others_networks(capsys):
    assert main(["search", TRAIN, "--backend", "torch"]) == 2
    assert "is for train / test / infer, not search" in capsys.readouterr().err
    assert main(["train", SEARCH, "--backend", "torch"]) == 2
    assert "it is the search network" in capsys.readouterr().err


def test_search_reads_cifar_pickles(tmp_path):
    """CIFAR-10 python batches at DATA.ROOT (the file format written by the test), cut in two halves."""
    from tests.test_data import write_cifar10

    write_cifar10(str(tmp_path), per_batch=8)
    run_dir = str(tmp_path / "run")
    cfg = os.path.join(ROOT, "configs", "pcdarts_search_cifar10.yaml")
    assert main(["search", cfg, "--backend", "torch", "DATA.ROOT", str(tmp_path), "DATA.BATCH_SIZE", "8",
                 "DATA.WORKERS", "0", "PCDARTS.INIT_CHANNELS", "8", "PCDARTS.LAYERS", "5", "TRAIN.EPOCHS", "1",
                 "PCDARTS.ARCH_START_EPOCH", "0", "PCDARTS.PLOT_CELLS", "False", "THREADS", "1",
                 "--output", run_dir]) == 0
    assert [r["arch_steps"] for r in rows_of(run_dir)] == ["3"]   # 40 images: 20 + 20, batches of 8, 8 and 4
    assert os.path.isfile(os.path.join(run_dir, "genotype.json"))
    assert not os.path.isdir(os.path.join(run_dir, "arch")) or not any(
        f.endswith(".png") for f in os.listdir(os.path.join(run_dir, "arch")))


@pytest.mark.parametrize("backend_name", ["torch", "paddle"])
def test_resume_repeats_the_uninterrupted_search(backend_name, tmp_path):
    def run(name, resume="", hooks=()):
        # second order on torch, first order on paddle (the slower backend): both architects resume
        cfg = load_config(SEARCH, TINY + ["TRAIN.EPOCHS", "3", "PCDARTS.UNROLLED", str(backend_name == "torch"),
                                          "DATA.BATCH_SIZE", "8", "PCDARTS.PLOT_CELLS", "False", "RESUME", resume])
        spec = P.spec_from_config(cfg)
        be = backend_of(backend_name, "float32")
        run_dir = str(tmp_path / name)
        engine.prepare_run_dir(run_dir, cfg.RESUME)
        try:
            engine.train(cfg, be, P, spec, run_dir, hooks=hooks, kind="pcdarts_search")
        except _Interrupt:
            pass
        return run_dir

    straight = run("straight")
    resumed = run("resumed", hooks=[_StopAfter()])
    run("resumed", resume="auto")
    a = load_checkpoint(os.path.join(straight, "last.safetensors"))
    b = load_checkpoint(os.path.join(resumed, "last.safetensors"))
    for name in a.model:
        assert np.array_equal(a.model[name], b.model[name]), name
    for opt in ("weights", "arch"):
        for slot, per in a.optimizers[opt].slots.items():
            for name in per:
                assert np.array_equal(per[name], b.optimizers[opt].slots[slot][name]), (opt, slot, name)
    assert a.extra == b.extra and len(a.extra["genotypes"]) == 3
    timing = ("images_per_s", "epoch_seconds")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(rows_of(resumed)) == strip(rows_of(straight))
    for epoch in (1, 2, 3):
        name = f"epoch-{epoch:04d}.json"
        assert open(os.path.join(straight, "arch", name)).read() == open(os.path.join(resumed, "arch", name)).read()


@pytest.mark.parametrize("kind,size", [("cifar", 32), ("imagenet", 224)])
def test_macs_equal_a_hook_count_of_the_built_network(kind, size):
    """count_search_macs (from the spec) against conv / linear forward hooks on the torch twin."""
    import torch

    spec = P.search_spec(kind, num_classes=10 if kind == "cifar" else 1000, image_size=size)
    model = backend_of("torch", "float32").build_model("pcdarts", spec)
    total = []

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total.append(output.numel() * (module.in_channels // module.groups) * k)
        elif isinstance(module, torch.nn.Linear):
            total.append(module.in_features * module.out_features)

    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    assert sum(total) == P.count_macs(spec)


def test_imagenet_search_twins_agree():
    """The ImageNet search network (three stride-2 stems, K=2) in both twins: same names, same logits (float64)."""
    spec = P.search_spec("imagenet", C=8, layers=5, num_classes=7, image_size=64)
    assert spec.k == 2 and [c.size for c in P.search_cell_plan(spec)] == [8, 4, 4, 2, 2]
    state = P.init_state(spec, np.random.default_rng(0), dtype=np.float64)
    state.update({n: 0.5 * np.random.default_rng(1).standard_normal(state[n].shape) for n in P.ARCH_NAMES})
    x = np.random.default_rng(2).standard_normal((2, 3, 64, 64))
    out = {}
    for name in ("torch", "paddle"):
        be = backend_of(name)
        model = be.build_model("pcdarts", spec)
        assert be.expected_shapes(model) == {k: tuple(v) for k, v in P.expected_state_shapes(spec).items()}
        be.load_neutral(model, state)
        model.train()
        out[name] = be.to_numpy(model(be.to_tensor(x)))
    np.testing.assert_allclose(out["torch"], out["paddle"], rtol=0, atol=1e-12)


def test_an_upstream_genotype_string_and_our_json_give_the_same_network(tmp_path):
    genotype = P.derive_genotype(_arch(np.random.default_rng(4).standard_normal((14, 8))))
    path = str(tmp_path / "genotype.json")
    P.save_genotype(genotype, path)
    specs = []
    for value in (path, genotype.to_upstream()):
        cfg = load_config(TRAIN, ["PCDARTS.GENOTYPE", value])
        specs.append(P.spec_from_config(cfg))
    assert specs[0].genotype == specs[1].genotype == genotype
    assert P.expected_state_shapes(specs[0]) == P.expected_state_shapes(specs[1])


@pytest.mark.parametrize("backend_name", ["torch", "paddle"])
def test_factorized_reduce_samples_then_convolves_like_a_stride_2_conv(backend_name):
    """FactorizedReduce runs its 1x1 convolutions at stride 1 on the sampled input (torch 2.14's oneDNN 1x1 stride-2
    weight gradient corrupts the heap with 2 threads and an odd batch): the outputs and gradients equal upstream's
    stride-2 formulation, ``conv(x, stride 2)`` and ``conv(x[:, :, 1:, 1:], stride 2)``."""
    ops = importlib.import_module(f"{backend_name}_impl.ops")
    be = backend_of(backend_name)
    if backend_name == "torch":
        fr = ops.FactorizedReduce(4, 6, affine=False).double()
    else:
        import paddle

        previous = paddle.get_default_dtype()
        paddle.set_default_dtype("float64")
        try:
            fr = ops.FactorizedReduce(4, 6, affine=False)
        finally:
            paddle.set_default_dtype(previous)
    be.load_neutral(fr, {"conv_1.weight": np.random.default_rng(0).standard_normal((3, 4, 1, 1)),
                         "conv_2.weight": np.random.default_rng(1).standard_normal((3, 4, 1, 1)),
                         "bn.running_mean": np.zeros(6), "bn.running_var": np.ones(6)})
    fr.train()
    x = np.random.default_rng(2).standard_normal((3, 4, 8, 6))
    w1, w2 = (be.to_numpy(fr.conv_1.weight), be.to_numpy(fr.conv_2.weight))
    relu = np.maximum(x, 0)
    a = np.einsum("oc,bchw->bohw", w1[:, :, 0, 0], relu[:, :, ::2, ::2])            # stride 2 from (0, 0)
    b = np.einsum("oc,bchw->bohw", w2[:, :, 0, 0], relu[:, :, 1:, 1:][:, :, ::2, ::2])  # stride 2 from (1, 1)
    cat = np.concatenate([a, b], 1)
    mean, var = cat.mean((0, 2, 3), keepdims=True), cat.var((0, 2, 3), keepdims=True)
    want = (cat - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(be.to_numpy(fr(be.to_tensor(x))), want, rtol=0, atol=1e-12)
