"""common.data.nasbench_mr: the shipped NAS-Bench-MR / NAS-Bench-201 tables load, are the files the README
describes (sha256), agree with the facts (counts, the README example entry), and the predictor's data handling
(z-score statistics, upstream's split, rank metrics) matches sklearn/scipy.  Broken or malicious files are
refused with the file named."""
import functools
import hashlib
import math
import os
import pickle
import re

import numpy as np
import pytest

from common.data import DataError, DatasetNotFoundError, PickleReadError, UnsafePickleError
from common.data import nasbench_mr as nb
from common.data.safe_pickle import safe_load

MR_COUNT = 2507
NB201_COUNT = 15625
# positions of the fixed branch counts (1, 2, 3, 4) in a 31-int search code
BRANCH_COUNT_POSITIONS = (3, 7, 13, 21)


@functools.lru_cache(maxsize=None)
def table(setting):
    return nb.load_table(setting)


class SystemPayload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


# ------------------------------------------------------------------------------------------------ shipped files

def _readme_digests():
    text = open(os.path.join(nb.TABLES_DIR, "README.md"), encoding="utf-8").read()
    rows = re.findall(r"^\| ([\w./-]+) \| (\d+) \| ([\w ]+?) \| ([0-9a-f]{64}) \|$", text, flags=re.M)
    return {path: (int(size), entries, digest) for path, size, entries, digest in rows}


def test_readme_table_matches_the_shipped_files():
    rows = _readme_digests()
    expected = {f"{s}/trainval.pkl" for s in nb.SETTINGS} | {"search_list.txt"}
    assert set(rows) == expected
    for path, (size, entries, digest) in rows.items():
        full = os.path.join(nb.TABLES_DIR, path)
        data = open(full, "rb").read()
        assert len(data) == size, path
        assert hashlib.sha256(data).hexdigest() == digest, path
        if path.endswith(".pkl"):
            assert int(entries) == len(table(path.split("/")[0])), path
        else:
            assert entries == f"{len(nb.search_list())} codes"
    assert not os.path.exists(os.path.join(nb.TABLES_DIR, "3ddet"))


def test_tables_dir_is_the_projects_data_folder():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert nb.TABLES_DIR == os.path.join(root, "data", "nasbench_mr")
    assert nb.SETTINGS == ("seg", "seg-4x", "cls-50-1000", "cls-50-100", "cls-10-1000", "cls-10c", "video",
                           "video-p", "nas-bench-201")


# ------------------------------------------------------------------------------------------------ contents

@pytest.mark.parametrize("setting", nb.SETTINGS)
def test_every_table_loads(setting):
    t = table(setting)
    mr = setting != nb.NB201
    n, d = (MR_COUNT, 27) if mr else (NB201_COUNT, 30)
    assert t.setting == setting and t.source == nb.table_path(setting) and len(t) == n
    assert t.features.dtype == np.float64 and t.features.shape == (n, d)
    assert t.targets.dtype == np.float64 and t.targets.shape == (n, len(nb.metric_names(setting)))
    assert t.metric_names == nb.metric_names(setting)
    assert t.embeddings.shape == (n, d)
    assert t.embeddings.dtype == (np.int64 if mr else np.float32)
    assert np.array_equal(t.features, t.embeddings.astype(np.float64))
    assert np.all(np.isfinite(t.targets))
    assert not t.features.flags.writeable and not t.targets.flags.writeable
    if not mr:  # 6 edges x 5 ops, one-hot
        assert set(np.unique(t.embeddings)) == {0.0, 1.0}
        assert np.all(t.embeddings.reshape(n, 6, 5).sum(axis=2) == 1)


def test_metric_groups():
    cls = (("top1",), ("top5",), ("flops", "params"))
    seg = (("mIoU",), ("mAcc", "aAcc"), ("flops", "params"))
    for s in ("cls-50-1000", "cls-50-100", "cls-10-1000", "cls-10c", "video", "video-p"):
        assert nb.METRIC_GROUPS[s] == cls and nb.main_metric(s) == "top1"
        assert nb.metric_names(s) == ("top1", "top5", "flops", "params")
    for s in ("seg", "seg-4x"):
        assert nb.METRIC_GROUPS[s] == seg and nb.main_metric(s) == "mIoU"
        assert nb.metric_names(s) == ("mIoU", "mAcc", "aAcc", "flops", "params")
    assert nb.METRIC_GROUPS["nas-bench-201"] == (("Acc",), ("Flops", "Params"))
    assert nb.main_metric("nas-bench-201") == "Acc"
    assert set(nb.METRIC_GROUPS) == set(nb.SETTINGS)
    # the groups name exactly the metric keys of each file
    for s in nb.SETTINGS:
        record = safe_load(nb.table_path(s), encoding="ASCII", allowed=nb._NB201_ALLOWED)[0]
        assert set(record) - {"embedding", "input_channel", "inverted_residual_setting", "last_channel"} == \
            set(nb.metric_names(s)), s


def test_mr_tables_share_architectures_flops_params():
    ref = table("seg")
    for s in nb.MR_SETTINGS[1:]:
        t = table(s)
        assert np.array_equal(t.embeddings, ref.embeddings), s
        assert np.array_equal(t.column("flops"), ref.column("flops")), s
        assert np.array_equal(t.column("params"), ref.column("params")), s
    assert len({tuple(row) for row in ref.embeddings}) == MR_COUNT  # 2507 distinct architectures


def test_readme_example_entry():
    t = table("seg")
    row = dict(zip(t.metric_names, t.targets[508]))
    assert row == {"mIoU": 70.57, "mAcc": 80.07, "aAcc": 95.29, "flops": 2.01445429, "params": 3.42253}
    assert t.embeddings[508].tolist() == [16, 64, 1, 3, 128, 3, 3, 3, 32, 48, 2, 2, 3, 2, 16, 32, 16, 1, 2, 4, 1,
                                          1, 96, 112, 48, 80, 112]


def test_main_metric_ranges_match_the_facts():
    # (min, max) of the main metric, shared/research/ncp.md section 3
    facts = {"cls-10-1000": (74.4, 90.4), "cls-10c": (35.28, 67.96), "cls-50-100": (31.08, 57.24),
             "cls-50-1000": (46.08, 86.16), "seg": (32.91, 79.10), "seg-4x": (33.03, 68.74),
             "video": (8.63, 28.29), "nas-bench-201": (0.83, 47.33)}
    for s, (lo, hi) in facts.items():
        column = table(s).column(nb.main_metric(s))
        assert round(column.min(), 2) == lo and round(column.max(), 2) == hi, s
    # the last entry is the README's search-list example, 1st on seg
    assert int(np.argmax(table("seg").column("mIoU"))) == MR_COUNT - 1


def test_search_list():
    codes = nb.search_list()
    assert len(codes) == 2511 and all(len(c) == 31 for c in codes)
    assert codes[-1] == (96, 128, 1, 1, 1, 48, 1, 2, 1, 1, 128, 8, 1, 3, 1, 1, 1, 128, 128, 120,
                         4, 4, 4, 4, 4, 4, 128, 128, 128, 128, 64)
    assert all(tuple(c[p] for p in BRANCH_COUNT_POSITIONS) == (1, 2, 3, 4) for c in codes)
    embeddings = [tuple(v for i, v in enumerate(c) if i not in BRANCH_COUNT_POSITIONS) for c in codes]
    bench = {tuple(row) for row in table("seg").embeddings.tolist()}
    assert sum(e in bench for e in embeddings) == MR_COUNT and bench <= set(embeddings)
    assert table("seg").embeddings[-1].tolist() == list(embeddings[-1])


def test_search_list_errors_name_the_line(tmp_path):
    good = "16_64-1_1_3_128-3_2_3_3_32_48-2_3_2_3_2_16_32_16-1_4_2_4_1_1_96_112_48_80-112"
    (tmp_path / "search_list.txt").write_text(good + "\n" + good + "\n")  # a final newline is accepted
    assert nb.search_list(str(tmp_path)) == [nb._parse_code(good, "x")] * 2
    bad_lines = {
        good.replace("-112", ""): "6 '-'-separated groups",
        good.replace("1_4_2", "1_4_x"): "group 5",
        good.replace("3_2_3_3", "3_2_3"): "group 3",
        good.replace("2_3_2_3", "2_2_2_3"): "(block 3 branch count) = 2: must be 3",
        good.replace("1_1_3_128", "1_1_3_136"): "(block 1 branch 0 width) = 136 is outside the search space",
        "": "6 '-'-separated groups",
    }
    for line, what in bad_lines.items():
        (tmp_path / "search_list.txt").write_text(f"{good}\n{good}\n{line}\n{good}")
        with pytest.raises(DataError, match=re.escape(what)) as err:
            nb.search_list(str(tmp_path))
        assert f"{tmp_path / 'search_list.txt'}: line 3 " in str(err.value)
    with pytest.raises(DatasetNotFoundError, match="search_list.txt"):
        nb.search_list(str(tmp_path / "nowhere"))


# ------------------------------------------------------------------------------------------------ split / stats

def test_split_indices_sizes_and_seed():
    train, val = nb.split_indices(MR_COUNT)
    assert len(train) == 2005 and len(val) == 502
    perm = np.random.RandomState(233).permutation(MR_COUNT)
    assert np.array_equal(val, perm[:502]) and np.array_equal(train, perm[502:])
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(MR_COUNT))
    state = np.random.get_state()[1].copy()
    nb.split_indices(100, seed=1)
    assert np.array_equal(np.random.get_state()[1], state)  # the global generator is not touched
    with pytest.raises(ValueError):
        nb.split_indices(1)
    with pytest.raises(ValueError):
        nb.split_indices(10, val_fraction=1.0)


@pytest.mark.parametrize("n", [MR_COUNT, NB201_COUNT, 5, 10, 11, 99, 1000])
def test_split_equals_sklearn_after_global_seed(n):
    model_selection = pytest.importorskip("sklearn.model_selection")
    saved = np.random.get_state()
    try:
        np.random.seed(233)  # upstream: utils.set_env seeds the global generator, then train_test_split(test_size=0.2)
        sk_train, sk_val = model_selection.train_test_split(np.arange(n), test_size=0.2)
    finally:
        np.random.set_state(saved)
    train, val = nb.split_indices(n)
    assert np.array_equal(train, sk_train) and np.array_equal(val, sk_val)  # same sets, same order


def test_zscore_stats():
    t = table("seg")
    mean, std = nb.zscore_stats(t.features)
    assert mean.shape == std.shape == (27,)
    assert np.array_equal(mean, t.features.mean(axis=0)) and np.array_equal(std, t.features.std(axis=0, ddof=0))
    assert np.all(std > 0)  # no constant column in the shipped tables
    assert mean[0] == pytest.approx(np.mean(t.embeddings[:, 0]))
    mean, std = nb.zscore_stats(t.targets)
    assert mean.shape == (5,) and mean[0] == pytest.approx(72.59, abs=0.005)
    z = (t.targets - mean) / std
    assert np.allclose(z.mean(axis=0), 0, atol=1e-12) and np.allclose(z.std(axis=0), 1, atol=1e-12)
    # a constant column: std 1, so it normalises to 0 (upstream would divide by zero)
    data = np.array([[1.0, 0.1], [2.0, 0.1], [4.0, 0.1]])
    mean, std = nb.zscore_stats(data)
    assert std[1] == 1.0 and std[0] == np.std(data[:, 0]) and mean[1] == pytest.approx(0.1)
    assert np.all((data - mean)[:, 1] / std[1] == pytest.approx(0.0, abs=1e-15))
    m, s = nb.zscore_stats(np.array([3.0, 5.0]))
    assert m == 4.0 and s == 1.0
    with pytest.raises(ValueError, match="non-finite"):
        nb.zscore_stats(np.array([[1.0], [np.nan]]))


# ------------------------------------------------------------------------------------------------ rank metrics

def _rank_cases():
    rng = np.random.default_rng(0)
    for n in (2, 3, 17, 502):
        yield rng.standard_normal(n), rng.standard_normal(n)  # no ties
        yield rng.integers(0, 5, n).astype(float), rng.integers(0, 4, n).astype(float)  # many ties in both
        x = rng.standard_normal(n)
        yield x, np.round(x + 0.5 * rng.standard_normal(n), 1)  # correlated, ties in y
    x = table("seg").column("mIoU")[:502]
    yield x, x + np.random.default_rng(1).normal(0, 1.0, 502)  # real metrics: ties in x


def test_rank_metrics_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for x, y in _rank_cases():
        assert abs(nb.kendall_tau_b(x, y) - stats.kendalltau(x, y).statistic) <= 1e-12
        assert abs(nb.spearman_rho(x, y) - stats.spearmanr(x, y).statistic) <= 1e-12
        assert np.array_equal(nb.rank_average(y), stats.rankdata(y, method="average"))
        assert nb.mae(x, y) == pytest.approx(np.mean(np.abs(x - y)), rel=1e-15)


def test_rank_metrics_small_cases():
    assert nb.kendall_tau_b([1, 2, 3], [1, 2, 3]) == 1.0
    assert nb.kendall_tau_b([1, 2, 3], [3, 2, 1]) == -1.0
    # x = [1,2,2,3], y = [1,3,2,4]: 5 concordant, 0 discordant, 1 pair tied in x (counts as neither)
    assert nb.kendall_tau_b([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(5 / math.sqrt(5 * 6))
    assert math.isnan(nb.kendall_tau_b([1, 1, 1], [1, 2, 3])) and math.isnan(nb.spearman_rho([2, 2], [1, 2]))
    assert nb.spearman_rho([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert nb.rank_average([3, 1, 3, 2]).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert nb.mae([[1, 2], [3, 4]], [[2, 2], [3, 0]], axis=0).tolist() == [0.5, 2.0]
    with pytest.raises(ValueError, match="same length"):
        nb.kendall_tau_b([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="non-finite"):
        nb.spearman_rho([1, np.nan], [1, 2])


# ------------------------------------------------------------------------------------------------ refusals

def _write_table(root, setting, obj, protocol=3):
    folder = root / setting
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trainval.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return str(path)


@pytest.mark.parametrize("setting", ["seg", "nas-bench-201"])
def test_malicious_table_refused_before_anything_runs(tmp_path, setting):
    marker = tmp_path / "PWNED"
    record = {"embedding": [1] * 27, "mIoU": 1.0, "hook": SystemPayload(marker)}
    path = _write_table(tmp_path, setting, [record])
    with pytest.raises(UnsafePickleError) as err:
        nb.load_table(setting, root=str(tmp_path))
    message = str(err.value)
    assert path in message and "system" in message and "\n" not in message
    assert ("NAS-Bench-MR table" if setting == "seg" else "NAS-Bench-201 table") in message
    assert not marker.exists()


def test_mr_tables_may_name_no_global_at_all(tmp_path):
    # numpy arrays are fine in the NAS-Bench-201 file, refused in an MR file
    record = {"embedding": np.ones(27), "top1": 1.0, "top5": 1.0, "flops": 1.0, "params": 1.0}
    _write_table(tmp_path, "video", [record])
    with pytest.raises(UnsafePickleError, match=r"_reconstruct.*NAS-Bench-MR table \(video\)"):
        nb.load_table("video", root=str(tmp_path))


@pytest.mark.parametrize("keep", [0, 0.01, 0.5, 0.999])
def test_truncated_table_is_one_clear_error(tmp_path, keep):
    data = open(nb.table_path("cls-10c"), "rb").read()
    folder = tmp_path / "cls-10c"
    folder.mkdir()
    path = folder / "trainval.pkl"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(PickleReadError) as err:
        nb.load_table("cls-10c", root=str(tmp_path))
    assert isinstance(err.value, ValueError) and not isinstance(err.value, UnsafePickleError)
    message = str(err.value)
    assert str(path) in message and "truncated or corrupt" in message and "\n" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_malformed_records_name_file_record_and_key(tmp_path):
    good = {"embedding": [8] * 27, "top1": 50.0, "top5": 80.0, "flops": 1.0, "params": 2.0}
    cases = [
        ({"records": "not a list"}, "must be a list of dicts, got dict"),
        ([], "table is empty"),
        ([good, [1, 2]], "record 1 is a list, not a dict"),
        ([good, {k: v for k, v in good.items() if k != "top5"}], "record 1 lacks 'top5'"),
        ([good, {**good, "embedding": [8] * 26}], "record 1: 'embedding' must be a list of 27 ints, got a list of 26"),
        ([good, {**good, "embedding": [8] * 26 + [8.0]}], "'embedding'[26] must be a positive int, got 8.0"),
        ([good, good, {**good, "flops": float("nan")}], "record 2: 'flops' must be a finite number, got nan"),
        ([good, {**good, "top1": "50"}], "'top1' must be a finite number, got '50'"),
        ([good, {**good, "params": True}], "'params' must be a finite number, got True"),
    ]
    for obj, what in cases:
        path = _write_table(tmp_path, "cls-50-100", obj)
        with pytest.raises(DataError, match=re.escape(what)) as err:
            nb.load_table("cls-50-100", root=str(tmp_path))
        assert str(err.value).startswith(path + ":")
    nb201 = {"embedding": np.zeros(30, np.float32), "Acc": 1.0, "Flops": 2.0, "Params": 3.0}
    _write_table(tmp_path, "nas-bench-201", [nb201, {**nb201, "embedding": np.zeros(29, np.float32)}], protocol=4)
    with pytest.raises(DataError, match=r"record 1: 'embedding' must be a numeric array of shape \(30,\)"):
        nb.load_table("nas-bench-201", root=str(tmp_path))
    _write_table(tmp_path, "nas-bench-201", [nb201, nb201], protocol=4)
    assert nb.load_table("nas-bench-201", root=str(tmp_path)).targets.tolist() == [[1.0, 2.0, 3.0]] * 2


def test_missing_file_and_unknown_setting(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        nb.load_table("video-p", root=str(tmp_path))
    message = str(err.value)
    assert str(tmp_path / "video-p" / "trainval.pkl") in message and isinstance(err.value, ValueError)
    assert all(s in message for s in nb.SETTINGS)
    with pytest.raises(DataError, match="unknown NAS-Bench-MR setting 'cls'.*seg, seg-4x, cls-50-1000"):
        nb.load_table("cls")
    with pytest.raises(DataError, match="3ddet.*not shipped"):
        nb.load_table("3ddet")


def test_cifar_refusal_message_unchanged(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"\x80\x02cos\nsystem\nq\x00.")
    with pytest.raises(UnsafePickleError) as err:
        safe_load(str(path))
    assert str(err.value) == (
        f"{path}: refusing to unpickle the global 'os.system': a CIFAR batch file may only hold numpy arrays and "
        f"builtin containers; this file is not a genuine CIFAR batch (it may be malicious), so it was not loaded")


def test_reader_imports_no_framework():
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = (
        "import sys\n"
        f"sys.path.insert(0, {root!r})\n"
        "from common.data import nasbench_mr as nb\n"
        "assert len(nb.load_table('nas-bench-201')) == 15625\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'paddle', 'tensorflow', 'tools', 'bench', 'weights_tools', 'parity_tests')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
