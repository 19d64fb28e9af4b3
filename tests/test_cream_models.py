"""The twin Cream child nets: names, shapes and counts against the spec, the same structure in both backends, the
numpy init, the config interface, timm's own blocks as an independent reference, official checkpoints (.pth.tar,
.pdparams) imported and run on both backends, and the CLI (info, infer, train without ImageNet)."""
from __future__ import annotations

import collections
import importlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
import torch

from common.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from common.compare import compare
from common.config import load_config
from common.imagenet_names import imagenet1k_class_names
from common.specs import cream
from paddle_impl import layout as playout
from paddle_impl import ops as pops
from paddle_impl.backend import Backend as PaddleBackend
from torch_impl import layout as tlayout
from torch_impl import ops as tops
from torch_impl.backend import Backend as TorchBackend
from weights_tools.cream_import import import_cream_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "tools", "main.py")
CONFIGS = {name: os.path.join(ROOT, "configs", f"{name}.yaml") for name in cream.NET_NAMES}
F32_REL = 1e-5  # float32 logits, torch vs paddle (measured ~1e-6 in parity_tests/test_cream_parity.py)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: tiny tensors, one torch thread


def build(backend_cls, spec, dtype="float32"):
    backend = backend_cls(dtype=dtype)
    return backend, backend.build_model("cream", spec)


def random_state(spec, seed):
    """Official-looking trained weights: every tensor random (positive running variances)."""
    rng = np.random.default_rng(seed)
    out = collections.OrderedDict()
    for name, shape in cream.expected_state_shapes(spec).items():
        if name.endswith("running_var"):
            out[name] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        elif name.endswith(("bn1.weight", "bn2.weight", "bn3.weight")) or name == "bn1.weight":
            out[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            scale = 0.05 if name.endswith("bias") or "running_mean" in name else 1.0 / math.sqrt(max(
                1, int(np.prod(shape[1:]))))
            out[name] = (scale * rng.standard_normal(shape)).astype(np.float32)
    return out


# ------------------------------------------------------------------------------------------ names, shapes, counts
@pytest.mark.parametrize("name", cream.NET_NAMES)
@pytest.mark.parametrize("honour", [False, True])
def test_state_names_shapes_and_counts(name, honour):
    spec = cream.released_net_spec(name, honour_single_block_choices=honour)
    expected = cream.expected_state_shapes(spec)
    _, tmodel = build(TorchBackend, spec)
    _, pmodel = build(PaddleBackend, spec)
    assert list(tlayout.expected_shapes(tmodel).items()) == list(expected.items())  # names, shapes and order
    assert playout.expected_shapes(pmodel) == expected
    assert list(playout.expected_shapes(pmodel)) == list(expected)
    count = cream.count_params(spec)
    assert tlayout.count_parameters(tmodel) == playout.count_parameters(pmodel) == count
    # the init rule sees the same tensors the same way in the spec and in both built models
    kinds = cream.param_kinds(spec)
    assert tops.named_param_kinds(tmodel) == kinds
    assert pops.named_param_kinds(pmodel) == kinds


def test_official_and_honoured_param_counts():
    def built(name, honour):
        spec = cream.released_net_spec(name, honour_single_block_choices=honour)
        _, tmodel = build(TorchBackend, spec)
        _, pmodel = build(PaddleBackend, spec)
        counts = {tlayout.count_parameters(tmodel), playout.count_parameters(pmodel)}
        assert len(counts) == 1
        return counts.pop()

    assert built("cream14", False) == 2_673_096
    assert built("cream287", False) == 6_044_368
    # the arch list applied in single-block stages too (CREAM.HONOUR_SINGLE_BLOCK_CHOICES True)
    assert built("cream14", True) == 2_686_608
    assert built("cream287", True) == 6_050_200


def test_twins_have_the_same_structure():
    spec = cream.released_net_spec("cream481", num_classes=10)
    _, tmodel = build(TorchBackend, spec)
    _, pmodel = build(PaddleBackend, spec)
    theirs = [(n, type(m).__name__) for n, m in pmodel.named_sublayers(include_self=True)]
    ours = [(n, type(m).__name__) for n, m in tmodel.named_modules()]
    assert ours == theirs
    kinds = {t for _, t in ours}
    assert {"CreamChildNet", "DepthwiseSeparableConv", "InvertedResidual", "ConvBnAct", "SqueezeExcite",
            "BatchNorm2d", "Conv2d", "Linear", "Swish", "ReLU", "HardSigmoid", "Dropout"} <= kinds
    assert "DropPath" not in kinds  # drop_path_rate 0: no layer at all
    assert not tmodel.training and not pmodel.training  # build() returns eval mode


def test_block_semantics_from_the_spec():
    spec = cream.released_net_spec("cream14")
    _, tmodel = build(TorchBackend, spec)
    ds = tmodel.blocks[0][0]
    assert ds.has_residual and ds.se.conv_reduce.out_channels == 8 and ds.act2 is None
    first, second = tmodel.blocks[2][0], tmodel.blocks[2][1]
    assert not first.has_residual and second.has_residual  # stride 2 / channel change vs in == out, stride 1
    assert first.conv_dw.stride == (2, 2) and first.conv_dw.padding == (2, 2) and first.conv_dw.kernel_size == (5, 5)
    assert tmodel.conv_stem.padding == (1, 1) and tmodel.conv_stem.stride == (2, 2)  # symmetric k//2, not SAME
    assert tmodel.conv_head.bias is not None and tmodel.dropout.p == 0.2
    assert tmodel.bn1.eps == 1e-5 and tmodel.bn1.momentum == 0.1


def test_drop_path_is_built_on_skip_blocks_only():
    spec = cream.build_child_spec(cream.RELEASED_NETS["cream43"], drop_path_rate=0.2)
    rates = cream.block_drop_path_rates(spec)
    total = sum(len(s) for s in spec.stages)
    _, tmodel = build(TorchBackend, spec)
    _, pmodel = build(PaddleBackend, spec)
    j = 0
    for s, stage in enumerate(spec.stages):
        for i, layer in enumerate(stage):
            tblock, pblock = tmodel.blocks[s][i], pmodel.blocks[s][i]
            if layer.residual and j > 0:
                assert rates[s][i] == pytest.approx(0.2 * j / total)
                assert tblock.drop_path.drop_prob == pblock.drop_path.drop_prob == rates[s][i]
            else:
                assert getattr(tblock, "drop_path", None) is None and getattr(pblock, "drop_path", None) is None
            j += 1


# ------------------------------------------------------------------------------------------ numpy init
def test_init_state_is_goog():
    spec = cream.released_net_spec("cream287")
    state = cream.init_state(spec, np.random.default_rng(0))
    assert list(state) == list(cream.expected_state_shapes(spec))
    assert all(state[n].shape == s and state[n].dtype == np.float32
               for n, s in cream.expected_state_shapes(spec).items())
    assert np.all(state["bn1.weight"] == 1) and np.all(state["bn1.bias"] == 0)
    assert np.all(state["bn1.running_mean"] == 0) and np.all(state["bn1.running_var"] == 1)
    assert np.all(state["conv_head.bias"] == 0) and np.all(state["classifier.bias"] == 0)
    assert np.all(state["blocks.1.0.se.conv_reduce.bias"] == 0)
    # conv: N(0, sqrt(2 / fan_out)), fan_out = k*k*out/groups (depthwise: k*k)
    pw = state["blocks.3.0.conv_pw.weight"]
    assert pw.shape == (240, 40, 1, 1) and pw.std() == pytest.approx(math.sqrt(2.0 / 240), rel=0.05)
    dw = state["blocks.5.0.conv_dw.weight"]  # groups = 576 channels
    assert dw.shape == (576, 1, 5, 5) and dw.std() == pytest.approx(math.sqrt(2.0 / 25), rel=0.05)
    stem = state["conv_stem.weight"]
    assert stem.std() == pytest.approx(math.sqrt(2.0 / (9 * 16)), rel=0.15)
    # Linear: U(+-1/sqrt(out_features))
    fc = state["classifier.weight"]
    bound = 1.0 / math.sqrt(1000)
    assert np.abs(fc).max() <= bound and np.abs(fc).max() > 0.99 * bound
    # the same seed gives the same network; another seed does not
    again = cream.init_state(spec, np.random.default_rng(0))
    assert all(np.array_equal(state[k], again[k]) for k in state)
    other = cream.init_state(spec, np.random.default_rng(1))
    assert not np.array_equal(state["conv_stem.weight"], other["conv_stem.weight"])


# ------------------------------------------------------------------------------------------ config interface
@pytest.mark.parametrize("name", cream.NET_NAMES)
def test_released_configs(name):
    cfg = load_config(CONFIGS[name])
    spec = cream.spec_from_config(cfg)
    assert spec == cream.released_net_spec(name)  # name, image size, dropout 0.2, 1000 classes, official builder
    assert cfg.DATA.IMAGE_SIZE == cream.RELEASED_IMAGE_SIZE[name]
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.ALPHA, cfg.OPTIM.EPS, cfg.OPTIM.MOMENTUM) == (
        "rmsprop_tf", 0.064, 0.9, 1e-3, 0.9)
    assert (cfg.OPTIM.WEIGHT_DECAY, cfg.OPTIM.NO_DECAY_1D, cfg.TRAIN.LABEL_SMOOTHING, cfg.TRAIN.EMA_DECAY) == (
        1e-5, True, 0.1, 0.9999)
    assert (cfg.SCHED.WARMUP_EPOCHS, cfg.SCHED.WARMUP_LR, cfg.DATA.BATCH_SIZE) == (3.0, 1e-6, 128)
    assert (cfg.AUG.RAND_AUGMENT, cfg.AUG.RANDOM_ERASE, cfg.AUG.COLOR_JITTER, cfg.AUG.INTERPOLATION) == (
        "rand-m9-mstd0.5", 0.2, 0.0, "random")
    assert (cfg.DATA.INTERPOLATION, cfg.DATA.CROP_PCT, cfg.DATA.DATASET) == ("bicubic", 0.875, "imagefolder")
    if name in ("cream14", "cream43"):
        assert (cfg.SCHED.NAME, cfg.SCHED.DECAY_EPOCHS, cfg.SCHED.DECAY_RATE, cfg.TRAIN.EPOCHS) == (
            "step", 2.4, 0.973, 500)
    else:
        assert (cfg.SCHED.NAME, cfg.TRAIN.EPOCHS, cfg.SCHED.COOLDOWN_EPOCHS, cfg.SCHED.MIN_LR) == (
            "cosine", 510, 10.0, 1e-5)
    description = json.loads(json.dumps(cream.describe(spec)))
    assert description["params"] == cream.count_params(spec)
    assert description["macs"]["conv_fc"] == cream.count_macs(spec, spec.image_size)
    assert description["published"]["top1"] == cream.PUBLISHED[name]["top1"]
    names = cream.class_names(spec)  # timm (installed with requirements.txt) ships the ImageNet names
    assert len(names) == 1000 and names[0].startswith("tench")


def test_digits_quick_start_config():
    cfg = load_config(os.path.join(ROOT, "configs", "cream14_digits.yaml"))
    spec = cream.spec_from_config(cfg)
    assert spec.num_classes == 10 and spec.image_size == cfg.DATA.IMAGE_SIZE and spec.name == "cream14"
    assert cfg.DATA.DATASET == "builtin_digits" and not cfg.AUG.RAND_AUGMENT and cfg.AUG.HFLIP == 0.0


def test_custom_arch_and_flags(tmp_path):
    arch = "[[0], [1, 2], [3], [0, 0, 5], [4], [3], [0]]"
    cfg = load_config(CONFIGS["cream14"], ["MODEL.NAME", "my_path", "CREAM.ARCH", arch, "MODEL.NUM_CLASSES", "7",
                                           "DATA.IMAGE_SIZE", "48", "MODEL.DROPOUT", "0.1"])
    spec = cream.spec_from_config(cfg)
    assert spec.name == "my_path" and spec.arch_list == cream.parse_arch_text(arch)
    assert (spec.num_classes, spec.image_size, spec.drop_rate) == (7, 48, 0.1)
    # a single-block stage keeps its template (stage 4: k3 e6) unless the flag is set (choice 4 = k7 e4)
    assert spec.stages[4][0].kernel == 3 and spec.stages[4][0].exp_ratio == 6.0
    honoured = cream.spec_from_config(load_config(CONFIGS["cream14"], [
        "MODEL.NAME", "my_path", "CREAM.ARCH", arch, "CREAM.HONOUR_SINGLE_BLOCK_CHOICES", "true"]))
    assert honoured.stages[4][0].kernel == 7 and honoured.stages[4][0].exp_ratio == 4.0
    assert cream.describe(honoured)["arch_list"] == arch
    # the arch of a released net under its own name is fine
    same = cream.spec_from_config(load_config(CONFIGS["cream14"], [
        "CREAM.ARCH", cream.format_arch_list(cream.RELEASED_NETS["cream14"])]))
    assert same == cream.released_net_spec("cream14")
    # one channel in (DATA.CHANNELS 1)
    gray = cream.spec_from_config(load_config(CONFIGS["cream14"], ["DATA.CHANNELS", "1"]))
    assert cream.expected_state_shapes(gray)["conv_stem.weight"] == (16, 1, 3, 3)
    _, tmodel = build(TorchBackend, gray)
    assert tlayout.expected_shapes(tmodel) == cream.expected_state_shapes(gray)


@pytest.mark.parametrize("overrides, names", [
    (["MODEL.NAME", "cream15"], ["MODEL.NAME", "cream15", "cream14"]),
    (["MODEL.NAME", "''"], ["MODEL.NAME", "CREAM.ARCH"]),
    (["CREAM.ARCH", "[[0], [3]"], ["CREAM.ARCH", "[[0], [3]"]),
    (["MODEL.NAME", "x", "CREAM.ARCH", "[[0], [3], [3], [3], [3], [9], [0]]"], ["CREAM.ARCH", "stage 5", "9"]),
    (["MODEL.NAME", "x", "CREAM.ARCH", "[[0], [3], [3], [3], [3], [0]]"], ["CREAM.ARCH", "6 stages"]),
    (["MODEL.NAME", "x", "CREAM.ARCH", "[[0], [k5], [3], [3], [3], [3], [0]]"], ["CREAM.ARCH", "k5", "stage 1"]),
    (["CREAM.ARCH", "[[0], [1], [1], [1], [1], [1], [0]]"], ["MODEL.NAME", "cream14", "CREAM.ARCH"]),
])
def test_config_errors_name_key_and_value(overrides, names):
    with pytest.raises(ValueError) as err:  # ConfigError (a ValueError) from load_config, or from the spec
        cream.spec_from_config(load_config(CONFIGS["cream14"], overrides))
    for text in names:
        assert text in str(err.value), (text, str(err.value))


# ------------------------------------------------------------------------------------------ timm as a reference
def timm_reference(spec):
    """The same child net from timm's own blocks (MobileNetV3 head: pool, conv_head with bias, act, classifier)."""
    importlib.import_module("timm")
    from functools import partial

    from timm.models._efficientnet_blocks import SqueezeExcite
    from timm.models._efficientnet_builder import decode_arch_def, round_channels
    from timm.models.mobilenetv3 import MobileNetV3

    se_layer = partial(SqueezeExcite, gate_layer="hard_sigmoid", force_act_layer=torch.nn.ReLU,
                       rd_round_fn=round_channels)
    arch_def = [[s.replace("_se0.25", "") if s.startswith("cn") else s for s in stage] for stage in spec.arch_def]
    return MobileNetV3(decode_arch_def(arch_def), num_classes=spec.num_classes, stem_size=spec.stem_ch,
                       num_features=spec.num_features, head_bias=True, head_norm=False, pad_type="",
                       act_layer=torch.nn.SiLU, se_layer=se_layer, se_from_exp=True, round_chs_fn=round_channels)


@pytest.mark.parametrize("name", ["cream14", "cream481"])
def test_forward_matches_timm_blocks(name):
    """Independent structural check: the same weights in timm's MobileNetV3 built from the same block strings give
    the same float64 logits as both twins (eval mode)."""
    spec = cream.released_net_spec(name)
    state = random_state(spec, 5)
    reference = timm_reference(spec).double().eval()
    missing = reference.load_state_dict({k: torch.from_numpy(v.astype(np.float64)) for k, v in state.items()},
                                        strict=False)
    assert not missing.unexpected_keys and all(k.endswith("num_batches_tracked") for k in missing.missing_keys)
    size = spec.image_size
    x = np.random.default_rng(6).standard_normal((2, 3, size, size))
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    for backend_cls in (TorchBackend, PaddleBackend):
        backend, model = build(backend_cls, spec, "float64")
        backend.load_neutral(model, state)
        diff = compare(backend.eval_logits(model, x), expected, f"{backend.name} vs timm")
        assert diff.max_abs <= 1e-10, str(diff)


# ------------------------------------------------------------------------------------------ official checkpoints
def _logits(backend_cls, spec, tensors, x):
    backend, model = build(backend_cls, spec)
    backend.load_neutral(model, tensors)
    return backend.eval_logits(model, x)


def test_upstream_pth_tar_runs_on_both_backends(tmp_path):
    """A fake upstream ``14.pth.tar`` (timm CheckpointSaver layout: ``module.`` keys with ``num_batches_tracked``,
    ``state_dict`` + ``state_dict_ema``) -> import -> the same logits on both backends, and the same as the torch
    model that loads the EMA state dict directly with ``load_state_dict``."""
    spec = cream.released_net_spec("cream14")
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    dicts = {}
    for key, seed in (("state_dict", 1), ("state_dict_ema", 2)):
        _, official = build(TorchBackend, spec)
        tlayout.load_neutral(official, random_state(spec, seed))
        dicts[key] = official.state_dict()  # includes num_batches_tracked, as upstream's files do
    src = tmp_path / "14.pth.tar"
    torch.save({"epoch": 591, "arch": "cream", "version": 2, "metric": 53.8,
                "state_dict": collections.OrderedDict(("module." + k, v) for k, v in dicts["state_dict"].items()),
                "state_dict_ema": collections.OrderedDict(("module." + k, v)
                                                          for k, v in dicts["state_dict_ema"].items())}, str(src))
    ckpt = import_cream_checkpoint(str(src), str(tmp_path / "14.safetensors"))
    assert ckpt.meta["spec"] == "cream14" and ckpt.meta["model_weights"] == "state_dict_ema"

    direct = TorchBackend().build_model("cream", spec)
    direct.load_state_dict(dicts["state_dict_ema"])  # strict: every upstream key has a home
    expected = TorchBackend.to_numpy(direct(torch.from_numpy(x)).detach())
    via_import_torch = _logits(TorchBackend, spec, ckpt.model, x)
    via_import_paddle = _logits(PaddleBackend, spec, ckpt.model, x)
    assert np.array_equal(via_import_torch, expected)
    diff = compare(via_import_paddle, expected, "paddle vs torch, imported .pth.tar")
    assert diff.max_rel <= F32_REL, str(diff)
    plain = import_cream_checkpoint(str(src), use_ema=False)
    direct.load_state_dict(dicts["state_dict"])
    assert np.array_equal(_logits(TorchBackend, spec, plain.model, x),
                          TorchBackend.to_numpy(direct(torch.from_numpy(x)).detach()))
    # the convert command: .pth.tar -> a Paddle state dict (EMA weights, paddle names and layout)
    out = cli("convert", "--from", "cream-pth", str(src), "--to", "paddle", str(tmp_path / "14.pdparams"))
    assert out.returncode == 0, out.stderr
    assert "network      cream/cream14" in out.stdout
    from weights_tools.convert import import_paddle

    assert np.array_equal(_logits(PaddleBackend, spec, import_paddle(str(tmp_path / "14.pdparams")).model, x),
                          via_import_paddle)


def test_pdparams_from_the_paddle_model_runs_on_both_backends(tmp_path):
    """``paddle.save(model.state_dict())`` of the paddle twin (``_mean``/``_variance``, Linear ``[in, out]``) ->
    import -> both backends give the paddle model's own logits."""
    spec = cream.released_net_spec("cream43", num_classes=10)
    backend, model = build(PaddleBackend, spec)
    backend.load_neutral(model, random_state(spec, 3))
    x = np.random.default_rng(1).standard_normal((2, 3, 96, 96)).astype(np.float32)
    expected = backend.eval_logits(model, x)
    src = tmp_path / "43.pdparams"
    paddle.save(model.state_dict(), str(src))
    ckpt = import_cream_checkpoint(str(src), net="cream43")
    assert ckpt.meta["source_framework"] == "paddle"
    assert np.array_equal(_logits(PaddleBackend, spec, ckpt.model, x), expected)
    diff = compare(_logits(TorchBackend, spec, ckpt.model, x), expected, "torch vs paddle, imported .pdparams")
    assert diff.max_rel <= F32_REL, str(diff)


# ------------------------------------------------------------------------------------------ CLI
def cli(*args, timeout=600):
    return subprocess.run([sys.executable, MAIN, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_cli_info_paddle():
    out = cli("info", CONFIGS["cream14"], "--backend", "paddle")
    assert out.returncode == 0, out.stderr
    assert "2,673,096" in out.stdout and "matches the spec" in out.stdout
    assert "13.19 M at 64x64" in out.stdout and "conv_fc" in out.stdout  # MACs with the rule named
    assert '"top1": 53.8' in out.stdout


def test_cli_infer_writes_logits_and_top5(tmp_path):
    spec = cream.released_net_spec("cream14")
    weights = tmp_path / "cream14.safetensors"
    state = random_state(spec, 9)
    save_checkpoint(str(weights), Checkpoint(model=dict(state), meta={"family": "cream", "name": "cream14"}))
    batch = np.random.default_rng(4).standard_normal((2, 3, 64, 64)).astype(np.float32)
    npy = tmp_path / "batch.npy"
    np.save(npy, batch)
    out_dir = tmp_path / "infer"
    out = cli("infer", CONFIGS["cream14"], "MODEL.WEIGHTS", str(weights), "--backend", "paddle",
              "--inputs", str(npy), "--output", str(out_dir))
    assert out.returncode == 0, out.stderr
    logits = np.load(out_dir / "logits.npy")
    assert logits.shape == (2, 1000)
    expected = _logits(TorchBackend, spec, state, batch)
    assert compare(logits, expected).max_rel <= F32_REL
    top = json.loads((out_dir / "top5.json").read_text())
    assert [item["top"][0]["class"] for item in top] == [int(i) for i in expected.argmax(1)]
    names = imagenet1k_class_names()  # timm is a requirement: its class-name files give the labels
    assert all(len(item["top"]) == 5 and item["top"][0]["name"] == names[item["top"][0]["class"]] for item in top)


def test_cli_infer_on_image_files_uses_the_eval_preprocessing(tmp_path):
    """PNG files in, the validation transform applied (resize, centre crop, normalise), the dataset's own class
    names out for a 10-class digits head."""
    from PIL import Image

    from common.data.build import eval_preprocess

    cfg = load_config(os.path.join(ROOT, "configs", "cream14_digits.yaml"))
    spec = cream.spec_from_config(cfg)
    weights = tmp_path / "digits.safetensors"
    state = random_state(spec, 5)
    save_checkpoint(str(weights), Checkpoint(model=dict(state), meta={"family": "cream", "name": "cream14"}))
    rng = np.random.default_rng(2)
    files = []
    for i, size in enumerate(((40, 40), (23, 31))):
        files.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(files[-1])
    out_dir = tmp_path / "infer"
    out = cli("infer", os.path.join(ROOT, "configs", "cream14_digits.yaml"), "MODEL.WEIGHTS", str(weights),
              "--backend", "torch", "--inputs", *files, "--output", str(out_dir), "--topk", "3")
    assert out.returncode == 0, out.stderr
    batch = np.stack([eval_preprocess(cfg, f) for f in files])
    assert batch.shape == (2, 3, 32, 32)
    expected = _logits(TorchBackend, spec, state, batch)
    assert compare(np.load(out_dir / "logits.npy"), expected).max_rel <= F32_REL
    top = json.loads((out_dir / "top3.json").read_text())
    assert [item["input"] for item in top] == files
    assert [item["top"][0]["name"] for item in top] == [str(int(k)) for k in expected.argmax(1)]


def test_cli_infer_names_a_missing_image(tmp_path):
    out = cli("infer", os.path.join(ROOT, "configs", "cream14_digits.yaml"), "--backend", "torch",
              "--inputs", str(tmp_path / "nope.png"))
    assert out.returncode == 2 and "nope.png" in out.stderr and "Traceback" not in out.stderr


def test_cli_train_without_imagenet_stops_with_a_clear_message(tmp_path):
    if os.path.isdir(os.path.join(ROOT, "data", "imagenet")):
        pytest.skip("data/imagenet exists here; the message is for machines without it")
    run_dir = tmp_path / "run"
    out = cli("train", CONFIGS["cream14"], "--backend", "paddle", "--output", str(run_dir))
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "data/imagenet" in out.stderr and "DATA.ROOT" in out.stderr
    assert "train/<class>/<image> and val/<class>/<image>" in out.stderr and "builtin_digits" in out.stderr
    assert "configs/cream14_digits.yaml" in out.stderr
    assert not run_dir.exists()  # stopped before any work: no run folder, no config, no checkpoint


def test_imagenet_recipe_runs_on_an_imagefolder_tree(tmp_path):
    """configs/cream14.yaml end to end on a tiny ImageFolder root (train/<class>/, val/<class>/, as DATA.ROOT
    expects): RandomResizedCrop with random interpolation, flip, RandAugment, random erasing, bicubic centre-crop
    eval, RMSpropTF, EMA; one step of one epoch, then a checkpoint."""
    from PIL import Image

    from common import engine

    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        for label in ("n01440764", "n01443537"):
            folder = tmp_path / "imagenet" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(folder / f"{i}.JPEG")
    run_dir = tmp_path / "run"
    cfg = load_config(CONFIGS["cream14"], [
        "DATA.ROOT", str(tmp_path / "imagenet"), "MODEL.NUM_CLASSES", "2", "DATA.BATCH_SIZE", "4",
        "DATA.EVAL_BATCH_SIZE", "4", "DATA.WORKERS", "0", "TRAIN.EPOCHS", "1", "TRAIN.MAX_STEPS_PER_EPOCH", "1",
        "OUTPUT_DIR", str(run_dir)])
    spec = cream.spec_from_config(cfg)
    assert engine.train(cfg, TorchBackend(), cream, spec, str(run_dir)) == 0
    ckpt = load_checkpoint(str(run_dir / "last.safetensors"))
    assert ckpt.meta["epoch"] == 1 and ckpt.optimizer.name == "rmsprop_tf" and ckpt.ema is not None
