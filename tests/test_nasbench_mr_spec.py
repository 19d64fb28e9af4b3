"""The NAS-Bench-MR spec: codes in their three forms, the space's checks, and the counts that reproduce the
benchmark tables' `flops` / `params` fields for every one of the 2507 architectures."""
import json

import numpy as np
import pytest

from common.data import nasbench_mr as tables
from common.specs import nasbench_mr as M

SEED = [16, 64, 1, 3, 128, 3, 3, 3, 32, 48, 2, 2, 3, 2, 16, 32, 16, 1, 2, 4, 1, 1, 96, 112, 48, 80, 112]
SEED_SETTING = [[1, [3], [128]], [2, [3, 3], [32, 48]], [2, [3, 3], [32, 48]], [2, [3, 3], [32, 48]],
                [3, [2, 3, 2], [16, 32, 16]], [3, [2, 3, 2], [16, 32, 16]], [4, [2, 4, 1, 1], [96, 112, 48, 80]]]
LIST_EXAMPLE = "96_128-1_1_1_48-1_2_1_1_128_8-1_3_1_1_1_128_128_120-4_4_4_4_4_4_128_128_128_128-64"


@pytest.fixture(scope="module")
def seg():
    return tables.load_table("seg")


def test_the_seed_example_in_its_three_forms():
    code = M.from_embedding(SEED)
    assert code.setting() == SEED_SETTING
    assert M.from_setting([16, 64], SEED_SETTING, 112) == code
    assert M.parse_code(code.code()) == code and len(code.code_ints()) == 31
    assert M.code_from_value(json.dumps(SEED), "x") == code and M.code_from_value(list(code.code_ints()), "x") == code
    assert M.parse_code(LIST_EXAMPLE).setting()[3:] == [[4, [4, 4, 4, 4], [128, 128, 128, 128]]] * 4


def test_every_search_list_code_and_benchmark_entry_round_trips(seg):
    codes = tables.search_list()
    assert len(codes) == 2511
    embeddings = set()
    for ints in codes:
        code = M.from_embedding(M.code_to_embedding(ints))
        assert code.code_ints() == tuple(ints)
        assert M.parse_code(code.code()) == code
        embeddings.add(code.embedding())
    for i, emb in enumerate(seg.embeddings):
        code = M.from_embedding(emb.tolist())
        assert M.from_setting(list(code.input_channel), code.setting(), code.last_channel) == code
        assert code.embedding() in embeddings, i  # 2507 of the 2511 list codes are the benchmark's


def test_counts_reproduce_every_benchmark_entry(seg):
    flops, params = seg.column("flops"), seg.column("params")
    for i, emb in enumerate(seg.embeddings):
        f, p = M.table_counts(emb.tolist())
        assert abs(f - flops[i]) < 1e-12 and abs(p - params[i]) < 1e-12, (i, f, flops[i], p, params[i])


@pytest.mark.parametrize("code,task,classes,params,conv,thop", [
    (SEED, "classification", 1000, 3_529_880, 6_149_883_264, 6_169_361_960),
    (LIST_EXAMPLE, "classification", 1000, 25_033_320, 26_384_737_280, 26_435_325_096),
    (SEED, "segmentation", 19, 3_419_027, 6_272_614_656, 6_292_843_424),
])
def test_published_counts_at_224(code, task, classes, params, conv, thop):
    """research ncp.md §2.2: params and MACs of upstream's MultiResolutionNet at 224 px."""
    spec = M.network_spec(code, task=task, num_classes=classes, image_size=224)
    assert M.count_params(spec) == params
    assert M.count_macs(spec, rule="conv") == conv
    assert M.count_macs(spec) == thop


@pytest.mark.parametrize("values,fragment", [
    (SEED[:-1], "expected 27 integers, got 26"),
    (SEED[:4] + [130] + SEED[5:], "position 4 (block 1 branch 0 width) = 130 is outside the search space: "
                                  "allowed 8..128 in steps of 8"),
    (SEED[:2] + [0] + SEED[3:], "position 2 (block 1 repeats) = 0 is outside the search space: allowed 1..4"),
    (SEED[:1] + [60] + SEED[2:], "position 1 (stem1 width) = 60"),
    (SEED[:3] + [2.5] + SEED[4:], "position 3 (block 1 branch 0 blocks): 2.5 is not an integer"),
])
def test_checks_name_the_position(values, fragment):
    with pytest.raises(M.CodeError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        M.from_embedding(values)


def test_code_string_errors_name_the_group():
    with pytest.raises(M.CodeError, match="expected 6 '-'-separated groups"):
        M.parse_code("16_64-1_1_3_128")
    with pytest.raises(M.CodeError, match=r"group 2 \('1_1_3'\) needs 4"):
        M.parse_code(LIST_EXAMPLE.replace("1_1_1_48", "1_1_3"))
    with pytest.raises(M.CodeError, match="position 7 .block 2 branch count. = 3: must be 2"):
        M.parse_code(LIST_EXAMPLE.replace("1_2_1_1_128_8", "1_3_1_1_128_8"))


def test_json_form_and_rounding(tmp_path):
    code = M.parse_code(LIST_EXAMPLE)
    path = str(tmp_path / "code.json")
    M.save_code(code, path, extra={"iteration": 3})
    data = json.load(open(path))
    assert data["code"] == LIST_EXAMPLE and data["iteration"] == 3 and M.load_code(path) == code
    noisy = np.asarray(code.embedding(), float) + np.random.default_rng(0).uniform(-2.9, 2.9, 27) * \
        np.asarray([b[2] for b in M.BOUNDS]) / 8
    assert M.round_embedding(noisy) == code.embedding()
    with pytest.raises(M.CodeError, match="position 5 .block 2 repeats. is nan"):
        M.round_embedding([float("nan") if i == 5 else v for i, v in enumerate(code.embedding())])


def test_an_upstream_state_dict_is_recognised_from_its_shapes():
    spec = M.network_spec(SEED, num_classes=50)
    shapes = M.expected_state_shapes(spec)
    found = M.recognition_candidates({k: np.zeros(s, np.float32) for k, s in shapes.items()})
    assert found and found[0][1] == shapes and M.from_embedding(SEED).code() in found[0][0]
