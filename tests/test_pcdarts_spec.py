"""The PC-DARTS evaluation-network spec: parameter and MAC counts against upstream ``model.py`` (research §3.7),
the genotype data, its JSON and upstream-text forms, the config interface and its errors, the cell plan."""
from __future__ import annotations

import json

import numpy as np
import pytest

from common.config import load_config
from common.specs import pcdarts as P

CIFAR = dict(kind="cifar", C=36, layers=20, num_classes=10)
IMAGENET = dict(kind="imagenet", C=48, layers=14, num_classes=1000)


def spec(base, genotype, aux, **kw):
    return P.network_spec(genotype=genotype, auxiliary=aux, **base, **kw)


# ------------------------------------------------------------------------------------------------ counts
@pytest.mark.parametrize("base, genotype, without_aux, with_aux", [
    (CIFAR, "PCDARTS", 3_634_678, 4_111_104),
    (IMAGENET, "PC_DARTS_image", 5_342_464, 6_603_240),
    (CIFAR, "DARTS_V2", 3_349_342, 3_825_768),
    (IMAGENET, "DARTS_V2", 4_718_752, 5_979_528),
    (IMAGENET, "PCDARTS", 5_270_560, 6_531_336),
])
def test_params_match_upstream(base, genotype, without_aux, with_aux):
    plain, aux = spec(base, genotype, False), spec(base, genotype, True)
    assert P.count_params(plain) == without_aux
    assert P.count_params(aux) == with_aux
    assert P.count_params(aux, include_aux=False) == without_aux  # upstream's count_parameters_in_MB
    assert P.describe(aux)["params_without_aux"] == without_aux


def test_aux_head_sizes():
    assert P.count_params(spec(CIFAR, "PCDARTS", True)) - P.count_params(spec(CIFAR, "PCDARTS", False)) == 476_426
    assert (P.count_params(spec(IMAGENET, "PC_DARTS_image", True))
            - P.count_params(spec(IMAGENET, "PC_DARTS_image", False))) == 1_260_776


@pytest.mark.parametrize("base, genotype, size, macs", [
    (CIFAR, "PCDARTS", 32, 556_664_832 + 5_760),
    (IMAGENET, "PC_DARTS_image", 224, 580_859_328 + 768_000),
    (CIFAR, "DARTS_V2", 32, 528_353_280 + 5_760),
    (IMAGENET, "DARTS_V2", 224, 529_143_552 + 768_000),
    (IMAGENET, "PCDARTS", 224, 570_369_408 + 768_000),
])
def test_macs_conv_plus_linear(base, genotype, size, macs):
    for aux in (False, True):  # the aux head does not run in eval mode
        assert P.count_macs(spec(base, genotype, aux), size) == macs
    assert P.count_macs(spec(base, genotype, False)) == macs


def test_state_entries():
    """Upstream NetworkCIFAR(aux) has 1,720 state entries with num_batches_tracked, 967 of them parameters: the
    neutral names leave num_batches_tracked out (one per BN), as every family does."""
    shapes = P.expected_state_shapes(spec(CIFAR, "PCDARTS", True))
    n_bn = sum(1 for k in shapes if k.endswith(".running_mean"))
    params = [k for k in shapes if not k.endswith((".running_mean", ".running_var"))]
    assert len(params) == 967
    assert len(shapes) + n_bn == 1720
    assert not any("num_batches_tracked" in k for k in shapes)
    imagenet = P.expected_state_shapes(spec(IMAGENET, "PC_DARTS_image", True))
    assert len(imagenet) + sum(1 for k in imagenet if k.endswith(".running_mean")) == 1292


def test_names_follow_upstream():
    cifar = P.expected_state_shapes(spec(CIFAR, "PCDARTS", True))
    assert cifar["stem.0.weight"] == (108, 3, 3, 3) and cifar["stem.1.running_var"] == (108,)
    assert cifar["cells.0.preprocess0.op.1.weight"] == (36, 108, 1, 1)
    assert cifar["cells.7.preprocess0.conv_1.weight"] == (36, 144, 1, 1)  # after the reduction at 6
    assert cifar["cells.0._ops.0.op.1.weight"] == (36, 1, 3, 3)  # sep_conv_3x3 depthwise
    assert cifar["cells.0._ops.0.op.7.bias"] == (36,)
    assert not any(k.startswith("cells.0._ops.1.") for k in cifar)  # skip_connect stride 1: identity
    assert cifar["cells.0._ops.3.op.1.weight"] == (36, 1, 3, 3)  # dil_conv_3x3
    for k in (2, 3, 5, 6):
        assert any(n.startswith(f"auxiliary_head.features.{k}.") for n in cifar)
    assert cifar["auxiliary_head.features.5.weight"] == (768, 128, 2, 2)
    assert cifar["auxiliary_head.features.2.weight"] == (128, 576, 1, 1)
    assert cifar["auxiliary_head.classifier.weight"] == (10, 768)
    assert cifar["classifier.weight"] == (10, 576)
    imagenet = P.expected_state_shapes(spec(IMAGENET, "PC_DARTS_image", True))
    stems = sorted({k.rsplit(".", 1)[0] for k in imagenet if k.startswith("stem")})
    assert stems == ["stem0.0", "stem0.1", "stem0.3", "stem0.4", "stem1.1", "stem1.2"]
    assert not any(k.startswith("auxiliary_head.features.6") for k in imagenet)  # no BN after the 2x2 conv
    assert imagenet["cells.0.preprocess0.conv_1.weight"] == (24, 48, 1, 1)  # reduction_prev at the start
    assert imagenet["cells.4._ops.1.conv_1.weight"] == (48, 96, 1, 1)  # stride-2 skip: FactorizedReduce
    assert imagenet["classifier.weight"] == (1000, 768)


def test_cell_plan():
    cells = P.cell_plan(spec(CIFAR, "PCDARTS", False))
    assert [c.index for c in cells if c.reduction] == [6, 13]
    assert [c.C for c in cells] == [36] * 6 + [72] * 7 + [144] * 7
    assert [c.reduction_prev for c in cells] == [i in (7, 14) for i in range(20)]
    assert (cells[0].C_prev_prev, cells[0].C_prev) == (108, 108)
    assert (cells[7].C_prev_prev, cells[7].C_prev) == (144, 288)  # outputs of cells 5 and 6
    assert [c.size for c in cells] == [32] * 6 + [16] * 7 + [8] * 7
    strides = [(op.index, op.stride) for op in cells[6].ops]
    assert all(s == (2 if i < 2 else 1) for i, s in strides)
    assert all(op.stride == 1 for op in cells[0].ops)
    imagenet = P.cell_plan(spec(IMAGENET, "PC_DARTS_image", False))
    assert [c.index for c in imagenet if c.reduction] == [4, 9]
    assert imagenet[0].reduction_prev and (imagenet[0].size_prev_prev, imagenet[0].size_prev) == (56, 28)
    assert [c.C for c in imagenet] == [48] * 4 + [96] * 5 + [192] * 5
    assert imagenet[-1].size == 7 and imagenet[-1].C_out == 768
    assert P.aux_cell_index(spec(CIFAR, "PCDARTS", True)) == 13


def test_drop_prob_ramp():
    s = spec(CIFAR, "PCDARTS", False, drop_path=0.3)
    assert P.drop_prob_at(s, 0, 600) == 0.0
    assert P.drop_prob_at(s, 300, 600) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="total_epochs"):
        P.drop_prob_at(s, 1, 0)


# ------------------------------------------------------------------------------------------------ genotypes
UPSTREAM_PC_DARTS_CIFAR = (
    "Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), ('dil_conv_3x3', 1), "
    "('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), ('dil_conv_3x3', 1)], normal_concat=range(2, 6), "
    "reduce=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_5x5', 2), "
    "('sep_conv_3x3', 0), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], reduce_concat=range(2, 6))")
UPSTREAM_DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), "
    "('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")


def test_primitives_order():
    assert P.PRIMITIVES == ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                            "dil_conv_3x3", "dil_conv_5x5")


def test_parse_upstream_equals_data():
    assert P.parse_upstream(UPSTREAM_PC_DARTS_CIFAR) == P.PC_DARTS_cifar == P.PCDARTS
    assert P.parse_upstream(UPSTREAM_DARTS_V2) == P.DARTS_V2
    for genotype in P.GENOTYPES.values():
        assert P.parse_upstream(P.format_upstream(genotype)) == genotype
    positional = "genotypes.Genotype([('skip_connect', 1), ('sep_conv_3x3', 0)], [2], [('max_pool_3x3', 0), " \
                 "('skip_connect', 1)], range(2, 3))"
    g = P.parse_upstream(positional)
    assert g.normal == (("skip_connect", 1), ("sep_conv_3x3", 0)) and g.reduce_concat == (2,)


@pytest.mark.parametrize("text, match", [
    ("__import__('os').system('true')", "Genotype"),
    ("Genotype(normal=open('x'), normal_concat=[2], reduce=[], reduce_concat=[2])", "only literals"),
    ("Genotype(normal=[('conv_9x9', 0), ('skip_connect', 1)], normal_concat=[2], "
     "reduce=[('skip_connect', 0), ('skip_connect', 1)], reduce_concat=[2])", "unknown op 'conv_9x9'"),
    ("Genotype(normal=[('skip_connect', 0), ('skip_connect', 3)], normal_concat=[2], "
     "reduce=[('skip_connect', 0), ('skip_connect', 1)], reduce_concat=[2])", "inputs 0..1"),
    ("Genotype(normal=[('skip_connect', 0)], normal_concat=[2], reduce=[('skip_connect', 0)], reduce_concat=[2])",
     "even"),
    ("Genotype(normal=[", "not a Genotype"),
])
def test_parse_upstream_errors(text, match):
    with pytest.raises(P.GenotypeError, match=match):
        P.parse_upstream(text)


def test_json_round_trip(tmp_path):
    for name, genotype in P.GENOTYPES.items():
        text = genotype.to_json()
        data = json.loads(text)
        assert data["normal"][0] == list(genotype.normal[0]) and set(data) == {"normal", "normal_concat", "reduce",
                                                                               "reduce_concat"}
        assert P.Genotype.from_json(text) == genotype
        path = str(tmp_path / f"{name}.json")
        P.save_genotype(genotype, path)
        assert P.load_genotype(path) == genotype


def test_json_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(P.GenotypeError, match="bad.json.*not valid JSON"):
        P.load_genotype(str(bad))
    data = P.PCDARTS.as_dict()
    del data["reduce_concat"]
    bad.write_text(json.dumps(data))
    with pytest.raises(P.GenotypeError, match="missing.*reduce_concat"):
        P.load_genotype(str(bad))


# ------------------------------------------------------------------------------------------------ config
def cfg_with(*overrides):
    base = ["MODEL.FAMILY", "pcdarts", "MODEL.NAME", "pcdarts_cifar", "MODEL.NUM_CLASSES", "10", "DATA.IMAGE_SIZE",
            "32"]
    return load_config(None, base + list(overrides))


def test_spec_from_config_defaults():
    s = P.spec_from_config(cfg_with("MODEL.DROP_PATH", "0.3", "PCDARTS.AUXILIARY", "True"))
    assert (s.kind, s.C, s.layers, s.num_classes, s.auxiliary, s.drop_path, s.image_size) == (
        "cifar", 36, 20, 10, True, 0.3, 32)
    assert s.genotype == P.PCDARTS and s.genotype_name == "PCDARTS"
    assert P.count_params(s) == 4_111_104
    d = P.describe(s)
    assert d["published"]["params_M"] == 3.6 and d["reduction_cells"] == [6, 13]
    json.dumps(d)
    imagenet = P.spec_from_config(cfg_with("MODEL.NAME", "pcdarts_imagenet", "MODEL.NUM_CLASSES", "1000",
                                           "DATA.IMAGE_SIZE", "224", "PCDARTS.GENOTYPE", "PC_DARTS_image",
                                           "PCDARTS.INIT_CHANNELS", "48", "PCDARTS.LAYERS", "14"))
    assert P.count_params(imagenet) == 5_342_464 and imagenet.kind == "imagenet"


def test_genotype_from_config_file_and_text(tmp_path):
    path = str(tmp_path / "g.json")
    P.save_genotype(P.DARTS_V2, path)
    name, g = P.genotype_from_config(cfg_with("PCDARTS.GENOTYPE", path))
    assert g == P.DARTS_V2 and name == path
    cfg = cfg_with()
    cfg.defrost()
    cfg.PCDARTS.GENOTYPE = UPSTREAM_PC_DARTS_CIFAR
    assert P.genotype_from_config(cfg) == ("custom", P.PCDARTS)


@pytest.mark.parametrize("overrides, match", [
    (["PCDARTS.GENOTYPE", "NOPE"], r"PCDARTS.GENOTYPE = 'NOPE' is neither a published genotype"),
    (["PCDARTS.GENOTYPE", "/no/such/genotype.json"], r"PCDARTS.GENOTYPE = '/no/such/genotype.json': no such"),
    (["MODEL.NAME", "darts"], r"MODEL.NAME = 'darts' is not a PC-DARTS"),
    (["MODEL.NAME", "pcdarts_imagenet", "PCDARTS.INIT_CHANNELS", "48"], r"DATA.IMAGE_SIZE = 32: pcdarts_imagenet "
                                                                        r"needs 224"),
    (["MODEL.NAME", "pcdarts_imagenet", "DATA.IMAGE_SIZE", "224", "PCDARTS.INIT_CHANNELS", "47"],
     r"PCDARTS.INIT_CHANNELS = 47 must be even"),
    (["PCDARTS.AUXILIARY", "True", "DATA.IMAGE_SIZE", "64"], r"DATA.IMAGE_SIZE = 64: the auxiliary head"),
    (["DATA.IMAGE_SIZE", "30"], r"DATA.IMAGE_SIZE = 30: the stride-2 ops of cell 13 meets a 15x15 map"),
    (["MODEL.DROPOUT", "0.2"], r"MODEL.DROPOUT = 0.2: PC-DARTS evaluation networks have no dropout"),
    (["MODEL.DROP_PATH", "1.0"], r"MODEL.DROP_PATH = 1.0 must be in \[0, 1\)"),
    (["PCDARTS.LAYERS", "0"], r"PCDARTS.LAYERS = 0 must be >= 1"),
])
def test_spec_from_config_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        P.spec_from_config(cfg_with(*overrides))


def test_genotype_file_error_names_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"normal": []}')
    with pytest.raises(ValueError, match=r"PCDARTS.GENOTYPE = '.*broken.json'.*missing"):
        P.spec_from_config(cfg_with("PCDARTS.GENOTYPE", str(bad)))


def test_aux_sizes_allowed():
    for size in (32, 36, 40):
        P.network_spec("cifar", 8, 5, 10, True, image_size=size)
    P.network_spec("cifar", 8, 5, 10, False, image_size=64)  # no aux head: any multiple of 4


# ------------------------------------------------------------------------------------------------ init, recognition
def test_init_state_names_and_rule():
    s = P.network_spec("cifar", 8, 5, 10, True)
    state = P.init_state(s, np.random.default_rng(0))
    assert list(state) == list(P.expected_state_shapes(s))
    assert all(state[k].shape == v for k, v in P.expected_state_shapes(s).items())
    w = state["cells.0._ops.0.op.2.weight"]  # 1x1 conv 8->8: U(+-1/sqrt(8))
    assert np.abs(w).max() <= 1 / np.sqrt(8) and w.std() > 0.1
    assert (state["stem.1.weight"] == 1).all() and (state["stem.1.running_var"] == 1).all()
    again = P.init_state(s, np.random.default_rng(0))
    assert all((again[k] == state[k]).all() for k in state)


def test_recognition_candidates():
    s = spec(CIFAR, "DARTS_V2", True)
    shapes = P.expected_state_shapes(s)
    tensors = {k: np.zeros(v, np.float32) for k, v in shapes.items()}
    hits = [name for name, expected in P.recognition_candidates(tensors) if expected == shapes]
    assert hits == ["pcdarts_cifar DARTS_V2 C36 L20 +aux"]
    small = P.network_spec("cifar", 16, 8, 100, False, "PCDARTS")
    shapes = P.expected_state_shapes(small)
    tensors = {k: np.zeros(v, np.float32) for k, v in shapes.items()}
    hits = [name for name, expected in P.recognition_candidates(tensors) if expected == shapes]
    assert hits == ["pcdarts_cifar PC_DARTS_cifar C16 L8"]
