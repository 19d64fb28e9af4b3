"""PNASNet-5 spec (common/specs/pnasnet.py) and the TF name table (weights_tools/pnasnet_names.py).

No TensorFlow here.  timm (torch) is the independent check of the canonical names, shapes and MACs of Large.
"""
import importlib
import inspect
import json
import math

import numpy as np
import pytest

from common.specs import pnasnet as P
from weights_tools import pnasnet_names as N

LARGE, MOBILE = P.PNASNET5_LARGE, P.PNASNET5_MOBILE


@pytest.fixture(scope="module")
def timm_large():
    timm = importlib.import_module("timm")
    return timm.create_model("pnasnet5large", pretrained=False, num_classes=1001).eval()


def timm_shapes(model):
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]


# ---------------------------------------------------------------------------------------------------------------
# the cell and the hyper-parameters
# ---------------------------------------------------------------------------------------------------------------
def test_cell_data():
    assert P.CELL_OPERATIONS == ("separable_5x5_2", "max_pool_3x3", "separable_7x7_2", "max_pool_3x3",
                                 "separable_5x5_2", "separable_3x3_2", "separable_3x3_2", "max_pool_3x3",
                                 "separable_3x3_2", "none")
    assert P.CELL_HIDDENSTATE_INDICES == (1, 1, 0, 0, 0, 0, 4, 0, 1, 0)
    assert P.CELL_CONCAT == (2, 3, 4, 5, 6)
    slots = P.cell_slots()
    assert [(s.block, s.side) for s in slots[:3]] == [(0, "left"), (0, "right"), (1, "left")]
    assert [(s.kind, s.kernel_size, s.num_layers) for s in slots[:3]] == [
        ("separable", 5, 2), ("max_pool", 3, 0), ("separable", 7, 2)]
    assert slots[-1].kind == "none" and slots[6].input_index == 4


def test_hyper_parameters():
    assert (LARGE.stem_filters, LARGE.num_cells, LARGE.filters, LARGE.num_classes, LARGE.image_size) == (
        96, 12, 216, 1001, 331)
    assert LARGE.reduction_indices == (4, 8) and P.calc_reduction_layers(12, 2) == [4, 8]
    assert LARGE.aux_head_cell == 7 and LARGE.total_num_cells == 14
    assert (LARGE.bn_eps, LARGE.bn_decay, LARGE.drop_path_keep_prob, LARGE.dense_dropout_keep_prob) == (
        1e-3, 0.9997, 0.6, 0.5)
    assert LARGE.bn_momentum_torch == pytest.approx(3e-4, abs=1e-15)
    assert LARGE.total_training_steps == 250000
    # Mobile: TF-slim mobile_imagenet_config (stem_multiplier 1.0, 9 cells, F=54, drop_path_keep_prob 1.0)
    assert (MOBILE.stem_filters, MOBILE.num_cells, MOBILE.filters, MOBILE.image_size) == (32, 9, 54, 224)
    assert MOBILE.reduction_indices == (3, 6) and MOBILE.aux_head_cell == 5
    assert MOBILE.drop_path_keep_prob == 1.0
    assert P.get_spec("large") is LARGE and P.get_spec("pnasnet5_mobile") is MOBILE
    assert P.get_spec("large", 1000).num_classes == 1000
    with pytest.raises(ValueError, match="unknown PNASNet spec 'huge'"):
        P.get_spec("huge")


def test_cell_structure_large():
    cells = P.cell_structures(LARGE)
    assert [c.name for c in cells] == ["cell_stem_0", "cell_stem_1"] + [f"cell_{i}" for i in range(12)]
    assert [c.cell_num for c in cells] == list(range(14))
    assert [c.filter_size for c in cells] == [54, 108] + [216] * 4 + [432] * 4 + [864] * 4
    assert [c.stride for c in cells] == [2, 2, 1, 1, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1]
    assert [c.out_channels for c in cells] == [270, 540] + [1080] * 4 + [2160] * 4 + [4320] * 4
    kinds = {c.name: c.prev_kind for c in cells}
    assert kinds["cell_stem_0"] == P.PREV_INPUT
    assert [n for n, k in kinds.items() if k == P.PREV_FACTORIZED] == ["cell_stem_1", "cell_0", "cell_5", "cell_9"]
    assert [n for n, k in kinds.items() if k == P.PREV_1X1] == [f"cell_{i}" for i in (1, 2, 3, 4, 6, 7, 8, 10, 11)]
    projections = [op.canonical for c in cells for op in c.ops if op.projection]
    assert projections == ["cell_stem_0.comb_iter_0_right", "cell_stem_0.comb_iter_4_right",
                           "cell_stem_1.comb_iter_4_right", "cell_4.comb_iter_4_right", "cell_8.comb_iter_4_right"]
    stem0 = cells[0]
    assert stem0.ops[0].in_channels == 96 and stem0.ops[1].in_channels == 96          # h1 = raw conv0_bn output
    assert not stem0.ops[1].projection_relu and stem0.ops[9].projection_relu          # pool proj: no ReLU
    assert [op.stride for op in cells[6].ops] == [2, 2, 2, 2, 2, 2, 1, 2, 2, 2]       # comb_iter_3_left reads h4


def test_cell_structure_mobile():
    cells = P.cell_structures(MOBILE)
    assert [c.filter_size for c in cells] == [13, 27] + [54] * 3 + [108] * 3 + [216] * 3
    assert cells[1].factorized_split == (13, 14)          # odd filter count: the extra filter goes to path 2
    assert cells[0].in_channels == 32 and cells[0].ops[0].in_channels == 32
    assert [c.name for c in cells if c.prev_kind == P.PREV_FACTORIZED] == ["cell_stem_1", "cell_0", "cell_4", "cell_7"]


# ---------------------------------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------------------------------
def test_param_counts_large():
    shapes = P.expected_state_shapes(LARGE)
    assert len(shapes) == 1179
    assert P.count_params(LARGE) == 86_061_989
    assert sum(math.prod(s) for n, s in shapes.items() if not P.is_buffer(n)) == 86_061_989
    assert P.count_params(LARGE.with_classes(1000)) == 86_057_668
    assert P.count_params(LARGE, trainable=False) == 86_238_977
    assert not any(n.endswith("num_batches_tracked") for n in shapes)


def test_param_counts_mobile():
    # PNAS paper: PNASNet-5 mobile 5.1M parameters
    assert P.count_params(MOBILE) == 5_065_568
    assert len(P.expected_state_shapes(MOBILE)) == 933


def test_names_and_shapes_equal_timm_large(timm_large):
    ours = list(P.expected_state_shapes(LARGE).items())
    theirs = timm_shapes(timm_large)
    assert len(ours) == len(theirs) == 1179
    assert ours == theirs      # same names, same shapes, same (module registration) order


def test_timm_cannot_build_mobile():
    """timm's PNASNet5Large hard-codes the Large channel numbers, so Mobile is checked against the TF graph
    (tests/test_pnasnet_tf_reference.py) and the paper's 5.1M / 588M instead of a timm model."""
    pnasnet = importlib.import_module("timm.models.pnasnet")
    params = inspect.signature(pnasnet.PNASNet5Large.__init__).parameters
    assert not {"num_cells", "filters", "num_conv_filters", "stem_multiplier", "channels"} & set(params)


def test_aux_params():
    aux = P.aux_head_shapes(LARGE)
    assert aux["input"] == (2160, 21, 21) and aux["pool"] == (2160, 6, 6) and aux["conv_kernel"] == 6
    assert aux["tf_scope"] == "aux_7/aux_logits"
    shapes = P.expected_state_shapes(LARGE, with_aux=True)
    assert shapes["aux_head.conv.weight"] == (768, 128, 6, 6)
    assert shapes["aux_head.proj.weight"] == (128, 2160, 1, 1)
    assert shapes["aux_head.fc.weight"] == (1001, 768)
    assert P.count_params(LARGE, with_aux=True) - P.count_params(LARGE) == 4_586_985
    assert P.aux_head_shapes(LARGE, 224)["conv_kernel"] == 4          # 14 -> (14-5)//3+1
    assert P.aux_head_shapes(MOBILE)["conv_kernel"] == 4 and P.aux_head_shapes(MOBILE)["cell"] == "cell_5"
    with pytest.raises(ValueError, match="aux head"):
        P.aux_head_shapes(LARGE, 64)           # 4x4 left at cell_7


# ---------------------------------------------------------------------------------------------------------------
# spatial sizes and MACs
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, size, expected", [
    (LARGE, 331, [165, 83, 42, 21, 11]),
    (LARGE, 323, [161, 81, 41, 21, 11]),
    (LARGE, 224, [111, 56, 28, 14, 7]),
    (MOBILE, 224, [111, 56, 28, 14, 7]),
    (MOBILE, 331, [165, 83, 42, 21, 11]),
    (MOBILE, 323, [161, 81, 41, 21, 11]),
])
def test_spatial_sizes(spec, size, expected):
    sizes = P.cell_spatial_sizes(spec, size)
    assert sorted(set(sizes.values()), reverse=True) == expected
    assert sizes["conv0_bn"] == expected[0] and sizes["cell_stem_0"] == expected[1]
    assert sizes["cell_stem_1"] == expected[2] == sizes["cell_0"]
    last = f"cell_{spec.num_cells - 1}"
    assert sizes[last] == expected[4]
    shapes = P.endpoint_shapes(spec, size)
    assert list(shapes) == P.endpoint_names(spec)
    assert shapes[last] == (spec.final_channels, expected[4], expected[4])
    assert shapes["logits"] == (spec.num_classes,)


def test_image_size_limits():
    P.check_image_size(LARGE, 19)
    with pytest.raises(ValueError, match="input size 18 is too small"):
        P.check_image_size(LARGE, 18)
    with pytest.raises(ValueError, match="smaller than the 3x3"):
        P.cell_spatial_sizes(LARGE, 2)


def test_macs_large(timm_large):
    torch = importlib.import_module("torch")
    macs = P.count_macs(LARGE, 331)
    print(f"\nPNASNet-5 Large MACs: {macs / 1e9:.4f} G at 331, {P.count_macs(LARGE, 224) / 1e9:.4f} G at 224 "
          f"(paper 25.0B at 331, timm 25.04 GMACs)")
    assert abs(macs - 25.0e9) / 25.0e9 < 0.01
    # the same rule counted on timm's model with forward hooks: conv out_elems * k*k*C_in/groups + linear in*out
    total = [0]

    def hook(module, _inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            total[0] += output.numel() * module.kernel_size[0] * module.kernel_size[1] * (
                module.in_channels // module.groups)
        elif isinstance(module, torch.nn.Linear):
            total[0] += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in timm_large.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.no_grad():
            timm_large(torch.zeros(1, 3, 331, 331))
    finally:
        for h in handles:
            h.remove()
    assert total[0] == macs


def test_macs_mobile():
    macs = P.count_macs(MOBILE)
    print(f"\nPNASNet-5 Mobile MACs: {macs / 1e6:.1f} M at 224 (paper 588M)")
    assert abs(macs - 588e6) / 588e6 < 0.01


# ---------------------------------------------------------------------------------------------------------------
# drop path
# ---------------------------------------------------------------------------------------------------------------
def test_drop_path_schedule():
    assert P.layer_keep_prob(LARGE, 0) == pytest.approx(1 - 1 / 14 * 0.4)
    assert P.layer_keep_prob(LARGE, 13) == pytest.approx(0.6)
    sched = P.drop_path_schedule(LARGE, step=None)
    assert list(sched) == P.cell_names(LARGE)
    assert sched["cell_stem_0"] == pytest.approx(1 - 0.4 / 14) and sched["cell_11"] == pytest.approx(0.6)
    assert set(P.drop_path_schedule(LARGE, step=0).values()) == {1.0}
    half = P.drop_path_schedule(LARGE, step=125000)
    assert half["cell_11"] == pytest.approx(0.8) and half["cell_4"] == pytest.approx(1 - 0.5 * 7 / 14 * 0.4)
    assert P.drop_path_schedule(LARGE, step=10 ** 7) == pytest.approx(sched)
    assert P.drop_path_keep_prob(LARGE, 13, step=10 ** 7, is_training=False) == 1.0
    assert set(P.drop_path_schedule(MOBILE, step=10 ** 6).values()) == {1.0}
    for step in (1, 777, 125000, 249999):
        for cell in range(14):
            a = P.drop_path_keep_prob(LARGE, cell, step)
            b = P.drop_path_keep_prob(LARGE, cell, step, float32=True)
            assert abs(a - b) < 1e-7
    with pytest.raises(ValueError, match="cell_num 14"):
        P.layer_keep_prob(LARGE, 14)


def test_drop_path_mask():
    u = np.array([0.0, 0.19, 0.2, 0.5, 0.999], np.float32)
    np.testing.assert_array_equal(P.drop_path_mask(0.8, u), [0, 0, 1, 1, 1])


def test_describe_is_json():
    d = P.describe(LARGE)
    json.dumps(d)
    assert d["params"] == 86_061_989 and d["spatial_sizes"]["cell_11"] == 11


# ---------------------------------------------------------------------------------------------------------------
# the TF name table
# ---------------------------------------------------------------------------------------------------------------
def test_name_table_large():
    table = N.tf_to_canonical_table(LARGE)
    assert len(table) == 1179
    entries = N.name_entries(LARGE)
    leaves = [e.tf_name.rsplit("/", 1)[-1] for e in entries]
    # research/pnasnet.md: 201 BN x 4 + 168 depthwise + 168 pointwise + 38 `weights` + 1 bias
    assert leaves.count("gamma") == leaves.count("beta") == leaves.count("moving_mean") == 201
    assert leaves.count("moving_variance") == 201
    assert leaves.count("depthwise_weights") == 168 and leaves.count("pointwise_weights") == 168
    assert leaves.count("weights") == 38 and leaves.count("biases") == 1
    assert sum(math.prod(e.tf_shape) for e in entries) == 86_238_977
    examples = {
        "conv0/weights": "conv_0.conv.weight",
        "conv0_bn/gamma": "conv_0.bn.weight",
        "conv0_bn/moving_variance": "conv_0.bn.running_var",
        "cell_4/comb_iter_2/left/separable_5x5_1/depthwise_weights":
            "cell_4.comb_iter_2_left.separable_1.depthwise_conv2d.weight",
        "cell_4/comb_iter_2/left/separable_5x5_2/pointwise_weights":
            "cell_4.comb_iter_2_left.separable_2.pointwise_conv2d.weight",
        "cell_4/comb_iter_2/left/bn_sep_5x5_1/beta": "cell_4.comb_iter_2_left.bn_sep_1.bias",
        "cell_4/comb_iter_2/left/bn_sep_5x5_1/moving_mean": "cell_4.comb_iter_2_left.bn_sep_1.running_mean",
        "cell_4/1x1/weights": "cell_4.conv_1x1.conv.weight",
        "cell_4/beginning_bn/gamma": "cell_4.conv_1x1.bn.weight",
        "cell_4/prev_1x1/weights": "cell_4.conv_prev_1x1.conv.weight",
        "cell_4/prev_bn/beta": "cell_4.conv_prev_1x1.bn.bias",
        "cell_5/path1_conv/weights": "cell_5.conv_prev_1x1.path_1.conv.weight",
        "cell_5/path2_conv/weights": "cell_5.conv_prev_1x1.path_2.conv.weight",
        "cell_5/final_path_bn/moving_mean": "cell_5.conv_prev_1x1.final_path_bn.running_mean",
        "cell_stem_0/comb_iter_0/right/1x1/weights": "cell_stem_0.comb_iter_0_right.conv.weight",
        "cell_stem_0/comb_iter_0/right/bn_1/gamma": "cell_stem_0.comb_iter_0_right.bn.weight",
        "cell_8/comb_iter_4/right/1x1/weights": "cell_8.comb_iter_4_right.conv.weight",
        "cell_1/comb_iter_1/left/separable_7x7_2/depthwise_weights":
            "cell_1.comb_iter_1_left.separable_2.depthwise_conv2d.weight",
        "final_layer/FC/weights": "last_linear.weight",
        "final_layer/FC/biases": "last_linear.bias",
    }
    for tf_name, canonical in examples.items():
        assert table[tf_name] == canonical, tf_name
    reverse = N.canonical_to_tf_table(LARGE)
    assert {v: k for k, v in reverse.items()} == table
    shapes = {e.tf_name: e.tf_shape for e in entries}
    assert shapes["conv0/weights"] == (3, 3, 3, 96)
    assert shapes["final_layer/FC/weights"] == (4320, 1001)
    assert shapes["cell_stem_0/comb_iter_0/left/separable_5x5_1/depthwise_weights"] == (5, 5, 96, 1)
    assert shapes["cell_stem_0/comb_iter_0/left/separable_5x5_1/pointwise_weights"] == (1, 1, 96, 54)
    assert "global_step" not in table and N.is_ignored_tf_name("global_step")


def test_name_table_aux():
    table = N.tf_to_canonical_table(LARGE, with_aux=True)
    aux = {k: v for k, v in table.items() if k.startswith("aux_7/")}
    assert len(table) == 1191 and len(aux) == 12
    assert aux["aux_7/aux_logits/proj/weights"] == "aux_head.proj.weight"
    assert aux["aux_7/aux_logits/aux_bn0/gamma"] == "aux_head.bn0.weight"
    assert aux["aux_7/aux_logits/Conv/weights"] == "aux_head.conv.weight"
    assert aux["aux_7/aux_logits/aux_bn1/moving_variance"] == "aux_head.bn1.running_var"
    assert aux["aux_7/aux_logits/FC/weights"] == "aux_head.fc.weight"
    assert aux["aux_7/aux_logits/FC/biases"] == "aux_head.fc.bias"
    e = {x.tf_name: x for x in N.name_entries(LARGE, with_aux=True)}
    assert e["aux_7/aux_logits/Conv/weights"].tf_shape == (6, 6, 128, 768)
    assert N.aux_tf_prefix(LARGE) == "aux_7/" and N.aux_tf_prefix(MOBILE) == "aux_5/"


@pytest.mark.parametrize("spec", [LARGE, MOBILE], ids=["large", "mobile"])
@pytest.mark.parametrize("with_aux", [False, True])
def test_name_table_covers_expected_state(spec, with_aux):
    """Every canonical name appears exactly once and the TF shape maps onto the torch shape."""
    expected = P.expected_state_shapes(spec, with_aux=with_aux)
    entries = N.name_entries(spec, with_aux=with_aux)
    canon = [e.canonical for e in entries]
    assert sorted(canon) == sorted(expected) and len(set(canon)) == len(canon)
    assert len({e.tf_name for e in entries}) == len(entries)
    for e in entries:
        assert e.neutral_shape == expected[e.canonical], e.tf_name
        assert N.tf_array_to_neutral(e.tf_name, np.zeros(e.tf_shape, np.float32)).shape == expected[e.canonical]
        assert N.neutral_array_to_tf(e.canonical, np.zeros(e.neutral_shape, np.float32)).shape == e.tf_shape
        assert e.trainable == (not P.is_buffer(e.canonical))


def test_layout_transforms():
    rng = np.random.default_rng(0)
    conv = rng.normal(size=(3, 5, 7, 11))          # HWIO
    n = N.tf_array_to_neutral("conv0/weights", conv)
    assert n.shape == (11, 7, 3, 5) and n[4, 6, 2, 1] == conv[2, 1, 6, 4]
    np.testing.assert_array_equal(N.neutral_array_to_tf("conv_0.conv.weight", n), conv)
    np.testing.assert_array_equal(N.neutral_array_to_tf("conv0/weights", n), conv)
    dw = rng.normal(size=(5, 5, 9, 1))
    n = N.tf_array_to_neutral("cell_0/comb_iter_0/left/separable_5x5_1/depthwise_weights", dw)
    assert n.shape == (9, 1, 5, 5) and n[8, 0, 1, 3] == dw[1, 3, 8, 0]
    np.testing.assert_array_equal(
        N.neutral_array_to_tf("cell_0.comb_iter_0_left.separable_1.depthwise_conv2d.weight", n), dw)
    fc = rng.normal(size=(6, 4))
    n = N.tf_array_to_neutral("final_layer/FC/weights", fc)
    assert n.shape == (4, 6) and n.flags.c_contiguous
    np.testing.assert_array_equal(N.neutral_array_to_tf("last_linear.weight", n), fc)
    vec = rng.normal(size=(7,))
    np.testing.assert_array_equal(N.tf_array_to_neutral("conv0_bn/moving_mean", vec), vec)
    with pytest.raises(N.NameTableError, match="depth multiplier 2"):
        N.tf_array_to_neutral("x/separable_3x3_1/depthwise_weights", np.zeros((3, 3, 4, 2)))
    with pytest.raises(N.NameTableError, match="'conv0/weights': rank 3"):
        N.tf_array_to_neutral("conv0/weights", np.zeros((3, 3, 3)))


def test_tf_to_neutral_state_is_strict():
    entries = N.name_entries(MOBILE, with_aux=True)
    arrays = {e.tf_name: np.zeros(e.tf_shape, np.float32) for e in entries}
    arrays["global_step"] = np.array(5, np.int64)
    state = N.tf_to_neutral_state(MOBILE, arrays)              # aux_5/* and global_step ignored
    assert {k: v.shape for k, v in state.items()} == P.expected_state_shapes(MOBILE)
    state = N.tf_to_neutral_state(MOBILE, arrays, with_aux=True)
    assert len(state) == len(entries)
    bad = dict(arrays)
    del bad["cell_3/prev_bn/gamma"]
    bad["cell_3/extra/weights"] = np.zeros(3)
    bad["final_layer/FC/biases"] = np.zeros(1000, np.float32)
    with pytest.raises(N.NameTableError) as info:
        N.tf_to_neutral_state(MOBILE, bad, source="x.ckpt")
    message = str(info.value)
    assert "x.ckpt" in message and "cell_3/prev_bn/gamma" in message and "cell_3/extra/weights" in message
    assert "final_layer/FC/biases: expected TF shape [1001], found [1000]" in message
