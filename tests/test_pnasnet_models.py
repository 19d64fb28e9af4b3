"""The PNASNet-5 twins (torch_impl/models/pnasnet.py, paddle_impl/models/pnasnet.py) and the family interface of
common/specs/pnasnet.py.  No TensorFlow here (tests/test_pnasnet_convert.py and parity_tests/test_pnasnet_parity.py
hold the TF checks); weights with TF-like magnitudes come from ``random_tf_variables`` (numpy) through the name table.
"""
import dataclasses
import importlib
import math
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
import torch

from common.config import load_config
from common.random_masks import MaskSource
from common.specs import pnasnet as P
from conftest import paddle_default_dtype
from paddle_impl import layout as pd_layout
from paddle_impl import ops as pd_ops
from paddle_impl.backend import Backend as PaddleBackend
from paddle_impl.models import pnasnet as PDM
from torch_impl import layout as th_layout
from torch_impl import ops as th_ops
from torch_impl.backend import Backend as TorchBackend
from torch_impl.models import pnasnet as THM
from weights_tools import pnasnet_names as N
from weights_tools.pnasnet_tf_graph import random_tf_variables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LARGE, MOBILE = P.PNASNET5_LARGE, P.PNASNET5_MOBILE
LARGE_AUX_96 = dataclasses.replace(LARGE, image_size=96, build_aux_head=True, total_training_steps=1000)


def tf_like_weights(spec, seed=5, image_size=None):
    """Canonical float32 weights with TF-like magnitudes (the random TF variables through the name table)."""
    aux = spec.build_aux_head
    size = image_size or spec.image_size
    tf_vars = random_tf_variables(spec, seed, with_aux=aux, image_size=size)
    return N.tf_to_neutral_state(spec, tf_vars, with_aux=aux, image_size=size)


def both(spec, weights, dtype="float64"):
    out = {}
    for backend in (TorchBackend(dtype=dtype), PaddleBackend(dtype=dtype)):
        model = backend.build_model("pnasnet", spec)
        backend.load_neutral(model, weights)
        out[backend.name] = (backend, model)
    return out


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.fixture(scope="module")
def timm_large():
    timm = importlib.import_module("timm")
    return timm.create_model("pnasnet5large", pretrained=False, num_classes=1001).eval()


# ---------------------------------------------------------------------------------------------------------------
# names, shapes, counts
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [LARGE, MOBILE, LARGE.with_classes(1000),
                                  dataclasses.replace(LARGE, build_aux_head=True),
                                  dataclasses.replace(MOBILE, build_aux_head=True)],
                         ids=["large", "mobile", "large1000", "large_aux", "mobile_aux"])
def test_state_names_and_shapes_equal_the_spec(spec):
    expected = P.expected_state_shapes(spec)
    th = THM.build(spec)
    pd = PDM.build(spec)
    th_shapes, pd_shapes = th_layout.expected_shapes(th), pd_layout.expected_shapes(pd)
    assert th_shapes == expected and pd_shapes == expected
    if not spec.build_aux_head:          # timm's order (the aux fc sits after last_linear in the spec's listing)
        assert list(th_shapes.items()) == list(expected.items())
    assert th_layout.count_parameters(th) == pd_layout.count_parameters(pd) == P.count_params(spec)
    kinds = P.param_kinds(spec)
    assert kinds == th_ops.named_param_kinds(th) == pd_ops.named_param_kinds(pd)


def test_param_counts():
    for build, layout in ((THM.build, th_layout), (PDM.build, pd_layout)):
        assert layout.count_parameters(build(LARGE)) == 86_061_989
        assert layout.count_parameters(build(LARGE.with_classes(1000))) == 86_057_668
        assert layout.count_parameters(build(MOBILE)) == 5_065_568
        assert layout.count_parameters(build(dataclasses.replace(LARGE, build_aux_head=True))) == 86_061_989 + 4_586_985


def test_names_and_shapes_equal_timm(timm_large):
    theirs = [(k, tuple(v.shape)) for k, v in timm_large.state_dict().items() if not k.endswith("num_batches_tracked")]
    ours = list(th_layout.expected_shapes(THM.build(LARGE)).items())
    assert len(ours) == 1179 and ours == theirs


def test_timm_loads_our_state_dict_and_matches_in_float64(timm_large):
    """timm's pnasnet5large is TF-SAME (dynamic padding) like ours: with our state dict it gives our logits, at an
    all-odd size (131: 65, 33, 17, 9) and one with even stride-2 inputs (96: 47, 24, 12, 6)."""
    weights = tf_like_weights(LARGE)
    ours = TorchBackend(dtype="float64").build_model("pnasnet", LARGE)
    th_layout.load_neutral(ours, weights)
    timm_model = timm_large.double()
    missing, unexpected = timm_model.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    rng = np.random.default_rng(3)
    for size in (131, 96):
        x = torch.from_numpy(rng.uniform(-1, 1, (1, 3, size, size)))
        with torch.no_grad():
            a, b = ours(x).numpy(), timm_model(x).numpy()
        print(f"\n{size}px: max |ours - timm| = {np.abs(a - b).max():.2e} (max |logit| {np.abs(b).max():.2f})")
        assert a.shape == (1, 1001) and np.abs(a - b).max() <= 1e-10 * max(1.0, np.abs(b).max())
    timm_large.float()


# ---------------------------------------------------------------------------------------------------------------
# the family interface
# ---------------------------------------------------------------------------------------------------------------
def test_spec_from_config():
    cfg = load_config(os.path.join(ROOT, "configs/pnasnet5_large.yaml"))
    spec = P.spec_from_config(cfg)
    assert dataclasses.replace(spec, drop_path_keep_prob=0.6, dense_dropout_keep_prob=0.5) == LARGE
    assert spec.drop_path_keep_prob == pytest.approx(0.6) and spec.dense_dropout_keep_prob == 0.5
    assert spec.image_size == 331 and spec.num_classes == 1001 and not spec.build_aux_head
    assert cfg.DATA.INTERPOLATION == "tf_bilinear" and cfg.DATA.CROP_PCT == 0.875
    assert tuple(cfg.DATA.MEAN) == tuple(cfg.DATA.STD) == (0.5, 0.5, 0.5)
    mobile = P.spec_from_config(load_config(os.path.join(ROOT, "configs/pnasnet5_mobile.yaml")))
    assert dataclasses.replace(mobile, dense_dropout_keep_prob=0.5) == MOBILE and mobile.drop_path_keep_prob == 1.0
    aux = P.spec_from_config(load_config(os.path.join(ROOT, "configs/pnasnet5_large.yaml"),
                                         ["PNASNET.AUX_HEAD", "True", "DATA.IMAGE_SIZE", "224",
                                          "MODEL.NUM_CLASSES", "1000", "PNASNET.TOTAL_TRAINING_STEPS", "0"]))
    assert aux.build_aux_head and aux.image_size == 224 and aux.num_classes == 1000
    assert P.expected_state_shapes(aux)["aux_head.conv.weight"] == (768, 128, 4, 4)
    assert P.drop_path_keep_prob(aux, 13, step=0) == pytest.approx(0.6)       # no burn-in
    assert P.drop_path_keep_prob(spec, 13, step=0) == 1.0                      # burn-in starts at keep 1
    errors = [
        (["MODEL.NAME", "pnasnet5_huge"], "MODEL.NAME = 'pnasnet5_huge'"),
        (["DATA.IMAGE_SIZE", "16"], "DATA.IMAGE_SIZE = 16"),
        (["DATA.IMAGE_SIZE", "64", "PNASNET.AUX_HEAD", "True"], "with PNASNET.AUX_HEAD"),
        (["PNASNET.TOTAL_TRAINING_STEPS", "-1"], "PNASNET.TOTAL_TRAINING_STEPS = -1"),
        (["PNASNET.BN_DECAY", "1.0"], "PNASNET.BN_DECAY = 1.0"),
    ]
    short = P.spec_from_config(load_config(os.path.join(ROOT, "configs/pnasnet5_mobile.yaml"),
                                           ["PNASNET.BN_DECAY", "0.97"]))
    assert short.bn_decay == 0.97 and short.bn_momentum_torch == pytest.approx(0.03)
    for overrides, message in errors:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
            P.spec_from_config(load_config(os.path.join(ROOT, "configs/pnasnet5_large.yaml"), overrides))
    names = P.class_names(spec)  # 1001 logits: TF's background first, then ImageNet-1k in synset order
    assert len(names) == 1001 and names[0] == "background" and names[1].startswith("tench")
    assert P.label_offset(spec) == 1 and P.label_offset(spec.with_classes(1000)) == 0
    text = P.describe(aux)
    assert text["aux_head"]["built"] and text["params"] == P.count_params(aux) and text["macs"] == P.count_macs(aux)


def test_init_state_is_tf_fan_out_variance_scaling():
    state = P.init_state(LARGE, np.random.default_rng(0))
    assert list(state) == list(P.expected_state_shapes(LARGE)) and all(a.dtype == np.float32 for a in state.values())
    again = P.init_state(LARGE, np.random.default_rng(0))
    assert all(np.array_equal(state[k], again[k]) for k in state)
    trunc = 0.8796256610342398          # std of N(0,1) truncated at +-2
    for name, fan_out in (("cell_11.conv_1x1.conv.weight", 864),                       # 1x1: C_out
                          ("cell_4.comb_iter_1_left.separable_1.depthwise_conv2d.weight", 49),   # depthwise: k*k
                          ("conv_0.conv.weight", 9 * 96), ("last_linear.weight", 1001)):
        w = state[name].astype(np.float64)
        assert np.abs(w).max() <= 2 * math.sqrt(2.6 / fan_out) + 1e-6, name
        assert w.std() == pytest.approx(math.sqrt(2.6 / fan_out) * trunc, rel=0.05), name
    assert not state["last_linear.bias"].any()
    assert (state["cell_0.conv_1x1.bn.running_var"] == 1).all() and not state["cell_0.conv_1x1.bn.running_mean"].any()
    assert (state["cell_0.conv_1x1.bn.weight"] == 1).all() and not state["cell_0.conv_1x1.bn.bias"].any()


@pytest.mark.parametrize("backend", ["torch", "paddle"])
def test_info_command(backend):
    out = subprocess.run([sys.executable, "tools/main.py", "info", "configs/pnasnet5_large.yaml", "--backend", backend],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "parameters    86,061,989 trainable" in text and "built model   86,061,989 trainable" in text
    assert "(matches the spec)" in text
    line = [ln for ln in text.splitlines() if ln.startswith("MACs")][0]
    macs = float(line.split()[1].replace(",", "")) * 1e6
    print(f"\n{line}")
    assert round(macs / 1e9, 1) == 24.9 and "at 331x331" in line and "conv H_out*W_out*k*k*C_in/groups*C_out" in line


def test_cli_test_scores_imagenet_labels_against_logit_k_plus_1(tmp_path):
    """``test`` on an ImageNet-layout val folder with the 1001-class TF head: dataset class k (sorted synsets) is
    logit k + 1.  The classifier is rigged (zero weights, bias ranking logit 1 first and logit 2 second), so every
    image predicts ImageNet class 0: top-1 is the share of class-0 images (2 of 3) and top-5 is 100%; scoring
    against logit k (no offset) would give 0% top-1 (logit 1 is then class 1)."""
    import json

    from PIL import Image

    from common.checkpoint import Checkpoint, save_checkpoint

    rng = np.random.default_rng(0)
    for synset, count in (("n01440764", 2), ("n01443537", 1)):   # the first two ImageNet-1k synsets
        folder = tmp_path / "imagenet" / "val" / synset
        folder.mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(folder / f"{i}.JPEG", quality=90)
    spec = P.spec_from_config(load_config(os.path.join(ROOT, "configs/pnasnet5_mobile.yaml"),
                                          ["DATA.IMAGE_SIZE", "64"]))
    state = P.init_state(spec, np.random.default_rng(1))
    state["last_linear.weight"] = np.zeros_like(state["last_linear.weight"])
    state["last_linear.bias"] = np.zeros_like(state["last_linear.bias"])
    state["last_linear.bias"][1], state["last_linear.bias"][2] = 5.0, 4.0
    weights = tmp_path / "mobile.safetensors"
    save_checkpoint(str(weights), Checkpoint(model=state, meta={"family": "pnasnet", "name": spec.name}))
    out = subprocess.run([sys.executable, "tools/main.py", "test", "configs/pnasnet5_mobile.yaml", "--backend",
                          "paddle", "MODEL.WEIGHTS", str(weights), "DATA.ROOT", str(tmp_path / "imagenet"),
                          "DATA.IMAGE_SIZE", "64", "--output", str(tmp_path / "run")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "test_results.json").read_text())
    assert result["label_offset"] == 1 and result["preprocessing"] == "tf_bilinear"
    assert result["top1"] == pytest.approx(200 / 3) and result["top5"] == pytest.approx(100.0)


# ---------------------------------------------------------------------------------------------------------------
# layers with TF semantics
# ---------------------------------------------------------------------------------------------------------------
def tf_factorized_reference(x, w1, w2):
    """numpy TF factorized reduction (NCHW, no BN): path 1 = x[::2, ::2]; path 2 = pad 1 bottom/right, drop the first
    row/col, then [::2, ::2]; each through its 1x1 conv; concatenated."""
    p1 = x[:, :, ::2, ::2]
    padded = np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 1)))[:, :, 1:, 1:]
    p2 = padded[:, :, ::2, ::2]
    return np.concatenate([np.einsum("nchw,oc->nohw", p1, w1[:, :, 0, 0]),
                           np.einsum("nchw,oc->nohw", p2, w2[:, :, 0, 0])], axis=1)


@pytest.mark.parametrize("hw", [(9, 9), (10, 10), (9, 12), (12, 7), (1, 2)])
def test_factorized_reduction_paths_shift_like_tf(hw):
    rng = np.random.default_rng(sum(hw))
    x = rng.standard_normal((2, 6, *hw))
    w1, w2 = rng.standard_normal((3, 6, 1, 1)), rng.standard_normal((4, 6, 1, 1))
    ref = tf_factorized_reference(x, w1, w2)
    assert ref.shape[2:] == (math.ceil(hw[0] / 2), math.ceil(hw[1] / 2))
    th = THM.FactorizedReduction(6, 7, LARGE).double()
    th_layout.load_neutral(th, {"path_1.conv.weight": w1, "path_2.conv.weight": w2,
                                "final_path_bn.weight": np.ones(7), "final_path_bn.bias": np.zeros(7),
                                "final_path_bn.running_mean": np.zeros(7), "final_path_bn.running_var": np.ones(7)})
    with torch.no_grad():
        p = torch.from_numpy(x)
        got_th = torch.cat([th.path_1(p), th.path_2(p)], 1).numpy()
    with paddle_default_dtype("float64"):
        pd = PDM.FactorizedReduction(6, 7, LARGE)
    pd.path_1.conv.weight.set_value(w1)
    pd.path_2.conv.weight.set_value(w2)
    p = paddle.to_tensor(x)
    got_pd = paddle.concat([pd.path_1(p), pd.path_2(p)], axis=1).numpy()
    assert np.abs(got_th - ref).max() < 1e-12 and np.abs(got_pd - ref).max() < 1e-12


def test_channels_last_gives_the_same_logits():
    weights = tf_like_weights(MOBILE)
    model = TorchBackend(dtype="float64").build_model("pnasnet", MOBILE)
    th_layout.load_neutral(model, weights)
    x = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (2, 3, 98, 98)))
    with torch.no_grad():
        a = model(x).numpy()
        model = model.to(memory_format=torch.channels_last)
        b = model(x.contiguous(memory_format=torch.channels_last)).numpy()
    assert np.abs(a - b).max() <= 1e-12 * np.abs(a).max()


# ---------------------------------------------------------------------------------------------------------------
# training mode: aux head, drop path, dropout; eval mode never runs them
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def large_aux_weights():
    return tf_like_weights(LARGE_AUX_96, image_size=96)


@pytest.fixture
def large_aux_models(large_aux_weights):
    """Both backends with the same weights (fresh BN statistics: a training forward updates them)."""
    return both(LARGE_AUX_96, large_aux_weights)


def _train_forward(name, backend, model, x, step, seed=11):
    source = MaskSource(seed)
    (th_ops if name == "torch" else pd_ops).attach_mask_source(model, source)
    source.start_step(step)
    model.train()
    model.set_training_step(step)
    try:
        if name == "torch":
            with torch.no_grad():
                logits, aux = model(backend.to_tensor(x))
        else:
            with paddle.no_grad():
                logits, aux = model(backend.to_tensor(x))
    finally:
        model.eval()
    return backend.to_numpy(logits), backend.to_numpy(aux), source.draws


def test_train_forward_returns_aux_with_drop_path_identical_across_backends(large_aux_models):
    x = np.random.default_rng(2).uniform(-1, 1, (2, 3, 96, 96))
    step = 500     # half-way through the 1000-step burn-in: keep = 1 - 0.5 * (c + 1) / 14 * 0.4
    results = {}
    for name, (backend, model) in large_aux_models.items():
        results[name] = _train_forward(name, backend, model, x, step)
        expected = [1.0 - P.drop_path_keep_prob(LARGE_AUX_96, c.cell_num, step) for c in P.cell_structures(LARGE)]
        assert model.drop_probs() == pytest.approx(expected, abs=1e-15)
        assert expected[0] == pytest.approx(0.5 / 14 * 0.4) and expected[-1] == pytest.approx(0.2)
    (t_logits, t_aux, t_draws), (p_logits, p_aux, p_draws) = results["torch"], results["paddle"]
    assert t_logits.shape == t_aux.shape == (2, 1001)
    assert t_draws == p_draws == 14 * 9 + 1        # one mask per drop-pathed op (not `none`), one for the dropout
    assert rel(t_logits, p_logits) < 1e-10 and rel(t_aux, p_aux) < 1e-10
    # the masks matter: at step 0 the burn-in keeps every path (only the dropout mask is drawn)
    name, (backend, model) = "torch", large_aux_models["torch"]
    logits0, aux0, draws0 = _train_forward(name, backend, model, x, 0)
    assert draws0 == 1 and np.abs(logits0 - t_logits).max() > 1e-3
    assert np.abs(aux0 - t_aux).max() > 1e-6      # the aux head reads cell_7, after 8 cells of drop path
    print(f"\ntrain forward at step {step}: torch vs paddle logits {rel(t_logits, p_logits):.1e}, "
          f"aux {rel(t_aux, p_aux):.1e} (relative)")


def test_eval_never_runs_aux_head_dropout_or_drop_path(large_aux_models):
    x = np.random.default_rng(4).uniform(-1, 1, (1, 3, 96, 96))
    outs = []
    for name, (backend, model) in large_aux_models.items():
        def boom(*_):
            raise AssertionError("the aux head ran in eval mode")
        source = MaskSource(0)
        (th_ops if name == "torch" else pd_ops).attach_mask_source(model, source)
        if name == "torch":
            handle = model.aux_head.register_forward_hook(boom)
        else:
            handle = model.aux_head.register_forward_post_hook(boom)
        try:
            model.eval()
            out = backend.eval_logits(model, x)
        finally:
            handle.remove()
        assert out.shape == (1, 1001) and source.draws == 0
        outs.append(out)
    assert rel(outs[0], outs[1]) < 1e-10


def test_trainer_step_with_aux_head_and_drop_path_matches_across_backends():
    """The trainers' step on Mobile with the aux head (TRAIN.AUX_WEIGHT 0.4) and drop path from step 0
    (PNASNET.TOTAL_TRAINING_STEPS 0): same loss and same updated weights in both backends, aux head trained."""
    overrides = ["PNASNET.AUX_HEAD", "True", "DATA.IMAGE_SIZE", "96", "MODEL.DROP_PATH", "0.3",
                 "PNASNET.TOTAL_TRAINING_STEPS", "0", "OPTIM.LR", "0.1", "DTYPE", "float64"]
    cfg = load_config(os.path.join(ROOT, "configs/pnasnet5_mobile.yaml"), overrides)
    spec = P.spec_from_config(cfg)
    assert spec.build_aux_head and spec.drop_path_keep_prob == pytest.approx(0.7)
    weights = P.init_state(spec, np.random.default_rng(cfg.SEED))
    rng = np.random.default_rng(9)
    images, labels = rng.uniform(-1, 1, (2, 3, 96, 96)), np.array([3, 700])
    results = {}
    for name, (backend, model) in both(spec, weights).items():
        trainer = backend.make_trainer(model, cfg, spec)
        stats = trainer.train_step({"train": (images, labels)}, {"weights": 0.1}, 7)
        results[name] = (stats["loss"], trainer.to_checkpoint().model, trainer.masks.draws)
    (t_loss, t_state, t_draws), (p_loss, p_state, p_draws) = results["torch"], results["paddle"]
    assert t_draws == p_draws == 11 * 9 + 1
    assert abs(t_loss - p_loss) < 1e-10 * abs(t_loss)
    for key in ("aux_head.fc.weight", "aux_head.proj.weight", "last_linear.weight", "cell_0.conv_1x1.conv.weight"):
        assert np.abs(t_state[key] - weights[key]).max() > 0, key           # trained
        assert rel(t_state[key], p_state[key]) < 1e-10, key
    print(f"\ntrainer step (Mobile, aux head, drop path 0.3): loss torch {t_loss:.12f} paddle {p_loss:.12f}")


def test_digits_recipe_trains_the_same_on_both_backends(tmp_path):
    """configs/pnasnet5_mobile_digits.yaml through common.engine.train on either backend (two steps, a 64-image
    validation split): TF-slim's RMSProp, the aux head and dropout on, the same losses and the same weights.
    float64: in float32 the first RMSProp steps (square average starting at 1, eps 1.0) turn rounding noise in
    near-zero gradients into updates of either sign, so the runs part at the 1e-3 level after one step."""
    from common import engine
    from common.checkpoint import load_checkpoint

    cfg_path = os.path.join(ROOT, "configs/pnasnet5_mobile_digits.yaml")
    results = {}
    for backend in (TorchBackend(dtype="float64"), PaddleBackend(dtype="float64")):
        run_dir = tmp_path / backend.name
        cfg = load_config(cfg_path, ["TRAIN.EPOCHS", "1", "TRAIN.MAX_STEPS_PER_EPOCH", "2", "DATA.NUM_VAL", "64",
                                     "DTYPE", "float64", "OUTPUT_DIR", str(run_dir)])
        spec = P.spec_from_config(cfg)
        assert spec.build_aux_head and spec.bn_decay == 0.9 and spec.num_classes == 10
        assert engine.train(cfg, backend, P, spec, str(run_dir)) == 0
        with open(run_dir / "metrics.csv") as handle:
            header, row = [line.strip().split(",") for line in handle][:2]
        metrics = dict(zip(header, map(float, row)))
        results[backend.name] = (metrics, load_checkpoint(str(run_dir / "last.safetensors")))
    (t_metrics, t_ckpt), (p_metrics, p_ckpt) = results["torch"], results["paddle"]
    assert t_ckpt.optimizer.name == p_ckpt.optimizer.name == "rmsprop_tf"
    assert "aux_head.fc.weight" in t_ckpt.model and t_ckpt.ema is not None
    assert t_metrics["train_loss"] == p_metrics["train_loss"]  # metrics.csv keeps 6 significant digits
    for key in ("last_linear.weight", "aux_head.fc.weight", "cell_0.conv_1x1.conv.weight",
                "cell_0.conv_1x1.bn.running_var"):
        assert key in t_ckpt.model, key
        assert rel(p_ckpt.model[key], t_ckpt.model[key]) < 1e-10, key
    print(f"\ndigits recipe, 2 float64 steps: train loss {t_metrics['train_loss']} on both backends")
