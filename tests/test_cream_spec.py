"""The Cream spec: block-string grammar, channel rounding, the released nets' sizes, MACs against the published
table, and the canonical names/shapes checked against timm's own builder."""
import importlib
import math

import pytest

from common.specs import cream
from common.specs.cream import (
    CHOICES, MAC_RULES, NET_NAMES, PUBLISHED, RELEASED_IMAGE_SIZE, RELEASED_NETS, SUPERNET_ARCH_DEF, ArchListError,
    BlockSpec, BlockStringError, build_child_spec, build_supernet_spec, child_arch_def, count_macs, count_params,
    decode_arch_def, expected_state_shapes, format_block_string, make_divisible, parse_block_string,
    released_net_spec,
)


def _trainable_from_shapes(shapes):
    return sum(math.prod(s) for n, s in shapes.items() if not n.endswith(("running_mean", "running_var")))


# ------------------------------------------------------------------------------------------------ grammar

@pytest.mark.parametrize("text", sorted({s for stage in SUPERNET_ARCH_DEF for s in stage} | {
    "dsa_r1_k3_s1_c16", "ir_r3_k5_s2_e6_c40_se0.25_nre", "ir_r1_k3_s1_e4.5_c24_nr6_noskip", "cn_r1_k1_s1_c320",
    "ds_r1_k3_s1_e1_c16_nsw", "ir_r2_k7_s1_e0.5_c8_se0.5",
}))
def test_block_string_round_trip(text):
    block, repeat = parse_block_string(text)
    assert format_block_string(block, repeat) == text
    assert parse_block_string(format_block_string(block, repeat)) == (block, repeat)


def test_block_string_fields():
    block, repeat = parse_block_string("ir_r2_k5_s2_e6_c40_se0.25_nre_noskip")
    assert repeat == 2
    assert block == BlockSpec("ir", 5, 2, 6.0, 40, 0.25, "relu", True)
    ds, _ = parse_block_string("dsa_r1_k3_s1_c16")
    assert ds.noskip and ds.exp_ratio is None and ds.act is None and ds.se_ratio is None
    cn, _ = parse_block_string("cn_r1_k1_s1_c320_se0.25")
    assert cn.se_ratio == 0.25 and not cn.has_se  # SE is ignored for conv-bn-act blocks (timm 0.1.20)
    # options may come in any order; the canonical form orders them
    shuffled, r = parse_block_string("ir_c24_se0.25_e4_s2_k3_r1")
    assert format_block_string(shuffled, r) == "ir_r1_k3_s2_e4_c24_se0.25"
    assert decode_arch_def([["ir_r2_k3_s1_e4_c80"]]) == ((parse_block_string("ir_r1_k3_s1_e4_c80")[0],) * 2,)


@pytest.mark.parametrize("text, token", [
    ("xx_r1_k3_s1_c16", "xx"),
    ("ir_r1_k3_s1_e4_c16_q5", "q5"),
    ("ir_r1_k3_s1_e4_c16_nhs", "nhs"),
    ("ir_r1_k3_s1_e4_c16_se1.5", "se1.5"),
    ("ir_r1_k4_s1_e4_c16", "k4"),
    ("ir_r0_k3_s1_e4_c16", "r0"),
    ("ir_r1_k3_s1_e4_cx", "cx"),
    ("ir_r1_k3_s1_e4_c16_c24", "c24"),
    ("ir_r1_k3__s1_e4_c16", "''"),
    ("ir_r1_k3_s1_e0_c16", "e0"),
])
def test_block_string_errors_name_string_and_token(text, token):
    with pytest.raises(BlockStringError) as err:
        parse_block_string(text)
    message = str(err.value)
    assert repr(text) in message and token in message


@pytest.mark.parametrize("text, missing", [("ir_r1_k3_s1_c16", "'e'"), ("ds_r1_s1_c16", "'k'"),
                                           ("cn_k1_s1_c320", "'r'")])
def test_block_string_missing_option(text, missing):
    with pytest.raises(BlockStringError, match=missing) as err:
        parse_block_string(text)
    assert repr(text) in str(err.value)


def test_make_divisible():
    assert make_divisible(16 * 0.25) == 8  # the DS block's SE: 16 -> 8 -> 16
    assert make_divisible(64 * 0.25) == 16
    assert make_divisible(144 * 0.25) == 40  # 36 rounds half up to 40
    assert make_divisible(120 * 0.25) == 32  # 30 -> 32
    assert make_divisible(1152 * 0.25) == 288
    assert make_divisible(3) == 8  # never below the divisor
    assert make_divisible(11) == 16  # 11 + 4 = 15 -> 8, but 8 < 0.9 * 11 -> 16
    assert make_divisible(10) == 16  # 8 < 9.0 -> +8
    assert make_divisible(12) == 16
    assert make_divisible(20) == 24
    assert make_divisible(100, 8) == 104
    assert make_divisible(7, 4, min_value=2) == 8
    assert make_divisible(5, 4, min_value=1) == 8  # 4 < 4.5 -> +4
    assert make_divisible(24 * 6) == 144 and make_divisible(16 * 4) == 64


def test_choice_table():
    assert CHOICES == ((3, 4), (3, 6), (5, 4), (5, 6), (7, 4), (7, 6))
    assert [cream.kernel_exp_to_choice(k, e) for k, e in CHOICES] == list(range(6))
    with pytest.raises(ArchListError, match="7"):
        cream.choice_to_kernel_exp(7)


# ------------------------------------------------------------------------------------------------ child nets

def test_official_single_block_stage_quirk():
    spec = released_net_spec("cream14")
    # stage 1 (one block, choice 3 = k5e6) keeps the template's k3/e4; stage 4 keeps k3/e6
    assert (spec.stages[1][0].kernel, spec.stages[1][0].exp_ratio, spec.stages[1][0].choice) == (3, 4.0, None)
    assert (spec.stages[4][0].kernel, spec.stages[4][0].exp_ratio) == (3, 6.0)
    assert (spec.stages[2][1].kernel, spec.stages[2][1].exp_ratio, spec.stages[2][1].choice) == (5, 6.0, 3)
    honoured = released_net_spec("cream14", honour_single_block_choices=True)
    assert (honoured.stages[1][0].kernel, honoured.stages[1][0].exp_ratio) == (5, 6.0)
    assert (honoured.stages[4][0].kernel, honoured.stages[4][0].exp_ratio) == (5, 6.0)
    assert child_arch_def(RELEASED_NETS["cream14"]) == [
        ["ds_r1_k3_s1_e1_c16_se0.25"], ["ir_r1_k3_s2_e4_c24_se0.25"],
        ["ir_r1_k5_s2_e6_c40_se0.25", "ir_r1_k5_s2_e6_c40_se0.25"],
        ["ir_r1_k5_s2_e6_c80_se0.25", "ir_r1_k5_s2_e6_c80_se0.25"],
        ["ir_r1_k3_s1_e6_c96_se0.25"], ["ir_r1_k5_s2_e6_c192_se0.25"], ["cn_r1_k1_s1_c320_se0.25"]]


def test_child_net_structure():
    spec = released_net_spec("cream287")
    assert spec.name == "cream287" and spec.image_size == 224 and spec.stem_ch == 16
    assert (spec.head_in_ch, spec.num_features, spec.head_bias, spec.pool_before_head) == (320, 1280, True, True)
    assert (spec.bn_eps, spec.bn_momentum, spec.act, spec.se_act, spec.se_gate) == (
        1e-5, 0.1, "swish", "relu", "hard_sigmoid")
    assert [len(s) for s in spec.stages] == [1, 1, 2, 3, 4, 3, 1]
    ds = spec.stages[0][0]
    assert (ds.type, ds.in_ch, ds.out_ch, ds.se_ch, ds.residual) == ("ds", 16, 16, 8, True)
    for s, stage in enumerate(spec.stages):
        template_stride = parse_block_string(cream.CHILD_STAGE_TEMPLATES[s])[0].stride
        assert stage[0].stride == template_stride
        assert all(layer.stride == 1 for layer in stage[1:])
        for layer in stage:
            if layer.type == "ir":
                assert layer.mid_ch == make_divisible(layer.in_ch * layer.exp_ratio)
                assert layer.se_ch == make_divisible(layer.mid_ch * 0.25, 8)  # SE width from the MID channels
                assert layer.residual == (layer.stride == 1 and layer.in_ch == layer.out_ch)
    b = spec.stages[3][1]  # choice 1 = k3e6 on 80 channels
    assert (b.kernel, b.in_ch, b.mid_ch, b.se_ch, b.out_ch, b.residual) == (3, 80, 480, 120, 80, True)
    cn = spec.stages[6][0]
    assert (cn.type, cn.in_ch, cn.out_ch, cn.se_ch, cn.residual) == ("cn", 192, 320, 0, False)


def test_any_path_builds():
    arch = [[0], [5, 0], [4], [2, 2, 2, 2, 2, 2, 2], [1], [0, 5], [0]]
    spec = build_child_spec(arch, num_classes=10)
    assert spec.stages[2][0].kernel == 5  # single block: template kept
    assert build_child_spec(arch, honour_single_block_choices=True).stages[2][0].kernel == 7
    assert expected_state_shapes(spec)["classifier.weight"] == (10, 1280)
    assert count_params(spec) == _trainable_from_shapes(expected_state_shapes(spec))


@pytest.mark.parametrize("arch, match", [
    ([[0], [3], [3]], "7"),
    ([[1], [3], [3], [3], [3], [3], [0]], "stage 0"),
    ([[0], [], [3], [3], [3], [3], [0]], "stage 1 is empty"),
    ([[0], [3], [3, -1], [3], [3], [3], [0]], "stage 2 block 1.*-1"),
    ([[0], [3], [3, 6], [3], [3], [3], [0]], "stage 2 block 1.*6"),
    ("[[0]]", "list"),
])
def test_bad_arch_lists(arch, match):
    with pytest.raises(ArchListError, match=match):
        build_child_spec(arch)


def test_param_counts_official():
    for builder in (count_params, lambda s: _trainable_from_shapes(expected_state_shapes(s))):
        assert builder(released_net_spec("cream14")) == 2_673_096
        assert builder(released_net_spec("cream287")) == 6_044_368
    assert count_params(released_net_spec("cream14"), bn_affine=False) == 2_662_360
    # the arch list honoured everywhere (research cream.md §3.2 "own params" column)
    honoured = {n: count_params(released_net_spec(n, honour_single_block_choices=True)) for n in NET_NAMES}
    assert [round(v / 1e6, 3) for v in honoured.values()] == [2.687, 4.404, 4.416, 6.050, 7.713, 9.696]
    print("\nparams (official builder / arch list honoured everywhere):")
    for n in NET_NAMES:
        spec = released_net_spec(n)
        assert count_params(spec) == _trainable_from_shapes(expected_state_shapes(spec))
        print(f"  {n:9s} {count_params(spec):>10,d} / {honoured[n]:>10,d}")


def test_supernet_spec():
    spec = build_supernet_spec()
    assert [len(stage) for stage in spec.stages] == [1, 4, 4, 5, 4, 4, 1]  # "4,4,5,4,4" (issue #85)
    assert all(len(options) == 6 for stage in spec.stages[1:6] for options in stage)
    assert [o.choice for o in spec.stages[2][1]] == list(range(6))
    assert [(o.kernel, o.exp_ratio) for o in spec.stages[2][1]] == [(k, float(e)) for k, e in CHOICES]
    assert all(o.stride == 1 for stage in spec.stages for options in stage[1:] for o in options)
    assert count_params(spec) == 29_809_073  # research cream.md §1.6 (incl. meta_layer 4001)
    shapes = expected_state_shapes(spec)
    assert shapes["meta_layer.weight"] == (1, 4000)
    assert count_params(spec) == _trainable_from_shapes(shapes)
    assert [len(s) for s in build_supernet_spec((2, 3, 4, 4, 4)).stages] == [1, 2, 3, 5, 4, 4, 1]
    with pytest.raises(ArchListError, match="sta_num"):
        build_supernet_spec((4, 4, 4, 4))


# ------------------------------------------------------------------------------------------------ MACs

HONOURED_CONV_FC = {"cream14": 14.50, "cream43": 43.33, "cream114": 117.05, "cream287": 290.82,
                    "cream481": 460.40, "cream604": 578.70}  # research cream.md §3.2, arch list honoured


def test_macs_against_research_and_published():
    print("\nMACs in M (official builder): conv_fc | thop_2020 | thop   vs published (rel. diff of thop_2020)")
    for n in NET_NAMES:
        size = RELEASED_IMAGE_SIZE[n]
        official = released_net_spec(n)
        honoured = released_net_spec(n, honour_single_block_choices=True)
        assert round(count_macs(honoured, size) / 1e6, 2) == HONOURED_CONV_FC[n]
        figures = {rule: count_macs(official, size, rule) / 1e6 for rule in MAC_RULES}
        published = PUBLISHED[n]["mflops"]
        rel = figures["thop_2020"] / published - 1
        print(f"  {n:9s} {figures['conv_fc']:9.3f} | {figures['thop_2020']:9.3f} | {figures['thop']:9.3f}   "
              f"vs {published:4d}  ({rel:+.2%})")
        # the 2020 thop rule reproduces the published table (43M was first released as "42M")
        assert abs(rel) < 0.015
        assert figures["conv_fc"] < figures["thop_2020"] < figures["thop"]
    # thop figures quoted in research cream.md §3.2 / §6, measured on the official torch model
    assert f"{count_macs(released_net_spec('cream14'), 64, 'thop') / 1e6:.3f}" == "14.418"
    assert f"{count_macs(released_net_spec('cream287'), 224, 'thop') / 1e6:.3f}" == "296.575"
    assert f"{count_macs(released_net_spec('cream14'), 64, 'thop_2020') / 1e6:.3f}" == "13.849"  # Paddle log 0819
    assert count_macs(released_net_spec("cream14"), 64) == 13_188_608
    with pytest.raises(ValueError, match="rule"):
        count_macs(released_net_spec("cream14"), 64, "ptflops")


# ------------------------------------------------------------------------------------------------ timm cross-check

def _timm_model(spec):
    import torch
    from functools import partial

    from timm.models._efficientnet_blocks import SqueezeExcite
    from timm.models._efficientnet_builder import decode_arch_def as timm_decode, round_channels
    from timm.models.mobilenetv3 import MobileNetV3

    se_layer = partial(SqueezeExcite, gate_layer="hard_sigmoid", force_act_layer=torch.nn.ReLU,
                       rd_round_fn=round_channels)
    # timm >= 0.9 drops the SE ratio from cn blocks itself; strip it so only the grammar's common part is used
    arch_def = [[s.replace("_se0.25", "") if s.startswith("cn") else s for s in stage] for stage in spec.arch_def]
    # MobileNetV3 pools before conv_head (head_bias, no head norm), like Cream's ChildNet
    return MobileNetV3(timm_decode(arch_def), num_classes=spec.num_classes, stem_size=spec.stem_ch,
                       num_features=spec.num_features, head_bias=True, head_norm=False, pad_type="",
                       act_layer=torch.nn.SiLU, se_layer=se_layer, se_from_exp=True, round_chs_fn=round_channels)


@pytest.mark.parametrize("name", NET_NAMES)
def test_expected_state_shapes_match_timm(name):
    spec = released_net_spec(name)
    model = _timm_model(spec)
    theirs = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    ours = expected_state_shapes(spec)
    assert list(ours) == list(theirs)  # same names in the same (module) order
    bad = [(k, ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]]
    assert not bad, bad
    assert sum(p.numel() for p in model.parameters()) == count_params(spec)


def test_count_macs_matches_timm_forward_hooks():
    torch = importlib.import_module("torch")
    for name in ("cream14", "cream287"):
        for honour in (False, True):
            spec = released_net_spec(name, honour_single_block_choices=honour)
            model = _timm_model(spec).eval()
            total = [0]

            def hook(module, inputs, output):
                if isinstance(module, torch.nn.Conv2d):
                    k = module.kernel_size[0] * module.kernel_size[1]
                    total[0] += output.numel() * module.in_channels // module.groups * k
                elif isinstance(module, torch.nn.Linear):
                    total[0] += module.in_features * module.out_features

            handles = [m.register_forward_hook(hook) for m in model.modules()
                       if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
            size = 64 if name == "cream14" else 96  # the rule is size-generic; keep the forward cheap
            with torch.no_grad():
                model(torch.zeros(1, 3, size, size))
            for h in handles:
                h.remove()
            assert total[0] == count_macs(spec, size), (name, honour)
