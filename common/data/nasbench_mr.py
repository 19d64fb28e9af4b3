"""NAS-Bench-MR benchmark tables (and the NAS-Bench-201 table NCP ships): one framework-free reader.

The tables live in the project's ``data/nasbench_mr/<setting>/trainval.pkl`` (see the README there: source,
licence, sizes, sha256, format).  They are pickles, so they are read with the restricted unpickler of
:mod:`common.data.safe_pickle`, never ``pickle.load``:

- the 8 NAS-Bench-MR files are lists of dicts of builtins and may name **no global at all**;
- ``nas-bench-201/trainval.pkl`` may name numpy's ``_reconstruct``, ``ndarray`` and ``dtype`` (each embedding is
  a float32 array), and nothing else.

:func:`load_table` returns a :class:`Table`: ``features`` (the architecture embedding as float64, ``[n, d]``,
d = 27 for NAS-Bench-MR, 30 for NAS-Bench-201), ``targets`` (float64 ``[n, m]`` in :func:`metric_names` order) and
``embeddings`` (the stored codes: int64 for NAS-Bench-MR, the stored float32 one-hot for NAS-Bench-201).  Every
record is checked; a file that is missing, truncated, not a pickle or malformed raises one ``ValueError`` that
names the file (:class:`~common.data.datasets.DataError`, :class:`DatasetNotFoundError` for a missing file,
:class:`~common.data.safe_pickle.PickleReadError` for an unreadable pickle, its subclass
:class:`~common.data.safe_pickle.UnsafePickleError` for a refused global).

The predictor's data handling, as upstream NCP does it (facts in ``shared/research/ncp.md`` section 4):

- :data:`METRIC_GROUPS`: the output groups (one predictor head each), in upstream order; the first metric is
  the main one (model selection uses its MAE only).
- :func:`zscore_stats`: per-column mean and std (ddof 0) over **all** rows of the file, before the split.
- :func:`split_indices`: sklearn's ``train_test_split(test_size=0.2)`` after ``np.random.seed(233)``.
- :func:`kendall_tau_b`, :func:`spearman_rho`, :func:`mae`: the rank metrics, in numpy.

``search_list.txt`` (NCP's 2511 candidate codes) is read by :func:`search_list`.

``3ddet`` (KITTI, upstream's 9th setting, metric ``moderate``) is not shipped (the file is too large), so it is
not in :data:`SETTINGS`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import List, Optional, Tuple

import numpy as np

from common.data.datasets import DataError, DatasetNotFoundError
from common.data.safe_pickle import safe_load

TABLES_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data",
                                           "nasbench_mr"))
TABLE_FILE = "trainval.pkl"
SEARCH_LIST_FILE = "search_list.txt"

MR_SETTINGS = ("seg", "seg-4x", "cls-50-1000", "cls-50-100", "cls-10-1000", "cls-10c", "video", "video-p")
NB201 = "nas-bench-201"
SETTINGS = MR_SETTINGS + (NB201,)

_CLS_GROUPS = (("top1",), ("top5",), ("flops", "params"))
_SEG_GROUPS = (("mIoU",), ("mAcc", "aAcc"), ("flops", "params"))
# The NAS-Bench-201 file's entries are {embedding, Acc, Flops, Params}.  Upstream has no config for it, so the
# groups are our choice, following the MR pattern (the accuracy alone, then the two cost figures together):
# Acc is the main metric, Flops/Params one head.
_NB201_GROUPS = (("Acc",), ("Flops", "Params"))

# The predictor's output groups per setting, in upstream order (configs/{cls,seg,video}.yaml).
METRIC_GROUPS = MappingProxyType({
    "seg": _SEG_GROUPS,
    "seg-4x": _SEG_GROUPS,
    "cls-50-1000": _CLS_GROUPS,
    "cls-50-100": _CLS_GROUPS,
    "cls-10-1000": _CLS_GROUPS,
    "cls-10c": _CLS_GROUPS,
    "video": _CLS_GROUPS,
    "video-p": _CLS_GROUPS,
    NB201: _NB201_GROUPS,
})

MR_EMBEDDING_LENGTH = 27
NB201_EMBEDDING_LENGTH = 30  # 6 edges x 5 ops, one-hot

# A search-list code: six '-'-groups of '_'-separated ints, of these lengths (c0_c1, then block k = 1..4 as
# m_k, k, k block counts, k widths, then last_channel): 31 ints.  The second int of block k is its branch
# count k; dropping those four gives the 27-int embedding.
SEARCH_CODE_GROUP_LENGTHS = (2, 4, 6, 8, 10, 1)
SEARCH_CODE_LENGTH = sum(SEARCH_CODE_GROUP_LENGTHS)

# The globals each kind of file may name (both numpy spellings: numpy 2 moved numpy.core to numpy._core).
_MR_ALLOWED: frozenset = frozenset()
_NB201_ALLOWED = frozenset(
    (f"{core}.multiarray", "_reconstruct") for core in ("numpy.core", "numpy._core")
) | {("numpy", "ndarray"), ("numpy", "dtype")}


# ----------------------------------------------------------------------------------------------- settings
def _check_setting(setting: str) -> str:
    if setting not in METRIC_GROUPS:
        extra = (" (3ddet, upstream's KITTI setting, is not shipped: its file is too large)"
                 if setting == "3ddet" else "")
        raise DataError(f"unknown NAS-Bench-MR setting {setting!r}{extra}; the settings are: {', '.join(SETTINGS)}")
    return setting


def metric_groups(setting: str) -> Tuple[Tuple[str, ...], ...]:
    """The predictor's output groups of ``setting`` (:data:`METRIC_GROUPS`)."""
    return METRIC_GROUPS[_check_setting(setting)]


def metric_names(setting: str) -> Tuple[str, ...]:
    """All metrics of ``setting``, flattened in group order: the column order of :attr:`Table.targets`."""
    return tuple(name for group in metric_groups(setting) for name in group)


def main_metric(setting: str) -> str:
    """The first metric (``top1``, ``mIoU`` or ``Acc``): upstream picks the best predictor by its MAE."""
    return metric_groups(setting)[0][0]


def table_path(setting: str, root: Optional[str] = None) -> str:
    return os.path.join(TABLES_DIR if root is None else root, _check_setting(setting), TABLE_FILE)


# ----------------------------------------------------------------------------------------------- tables
@dataclass(frozen=True, eq=False)
class Table:
    """One benchmark table.  Arrays are read-only.

    ``features``: float64 ``[n, d]``, the embedding (the predictor's input).  ``targets``: float64 ``[n, m]``,
    columns ``metric_names``.  ``embeddings``: the stored embeddings, int64 ``[n, 27]`` for NAS-Bench-MR,
    float32 ``[n, 30]`` (one-hot) for NAS-Bench-201.  ``source``: the file read.
    """

    setting: str
    source: str
    metric_names: Tuple[str, ...]
    features: np.ndarray
    targets: np.ndarray
    embeddings: np.ndarray

    def __len__(self) -> int:
        return len(self.features)

    def column(self, metric: str) -> np.ndarray:
        """The target column of ``metric`` (a read-only view)."""
        if metric not in self.metric_names:
            raise KeyError(f"{self.setting} has no metric {metric!r}; its metrics are: {', '.join(self.metric_names)}")
        return self.targets[:, self.metric_names.index(metric)]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_embedding_mr(value, where: str) -> List[int]:
    if not isinstance(value, list) or len(value) != MR_EMBEDDING_LENGTH:
        got = f"a list of {len(value)}" if isinstance(value, list) else type(value).__name__
        raise DataError(f"{where}: 'embedding' must be a list of {MR_EMBEDDING_LENGTH} ints, got {got}")
    for position, item in enumerate(value):
        if not isinstance(item, int) or isinstance(item, bool) or item <= 0:
            raise DataError(f"{where}: 'embedding'[{position}] must be a positive int, got {item!r}")
    return value


def _read_embedding_nb201(value, where: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.shape != (NB201_EMBEDDING_LENGTH,) or value.dtype.kind not in "fiu":
        got = (f"{value.dtype} array of shape {value.shape}" if isinstance(value, np.ndarray)
               else type(value).__name__)
        raise DataError(f"{where}: 'embedding' must be a numeric array of shape ({NB201_EMBEDDING_LENGTH},), got {got}")
    if not np.all(np.isfinite(value)):
        raise DataError(f"{where}: 'embedding' holds a non-finite value")
    return value


def _records(setting: str, path: str, obj) -> None:
    if not isinstance(obj, list):
        raise DataError(f"{path}: a {setting} table must be a list of dicts, got {type(obj).__name__}")
    if not obj:
        raise DataError(f"{path}: the {setting} table is empty")


def load_table(setting: str, root: Optional[str] = None) -> Table:
    """Read and check ``<root>/<setting>/trainval.pkl`` (``root`` defaults to :data:`TABLES_DIR`).

    Every record must be a dict with ``embedding`` (27 positive ints; NAS-Bench-201: a numeric array of 30) and
    every metric of :func:`metric_names` as a finite number; other keys (``input_channel``,
    ``inverted_residual_setting``, ``last_channel``) are not read.  The first bad record raises a
    :class:`DataError` naming the file, the record index and the key.
    """
    _check_setting(setting)
    path = table_path(setting, root)
    if not os.path.isfile(path):
        raise DatasetNotFoundError(
            f"{path}: NAS-Bench-MR table of setting {setting!r} not found (expected <root>/<setting>/{TABLE_FILE} "
            f"under {TABLES_DIR if root is None else root}; the settings are: {', '.join(SETTINGS)})")
    is_mr = setting != NB201
    if is_mr:
        expected = (f"a NAS-Bench-MR table ({setting}) holds only builtin lists, dicts, numbers and strings and "
                    f"names no global at all; this file is not a genuine NAS-Bench-MR table")
    else:
        expected = ("the NAS-Bench-201 table may only hold builtin containers and numpy arrays; this file is not "
                    "a genuine NAS-Bench-201 table")
    obj = safe_load(path, encoding="ASCII", allowed=_MR_ALLOWED if is_mr else _NB201_ALLOWED, expected=expected)
    _records(setting, path, obj)

    names = metric_names(setting)
    n = len(obj)
    targets = np.empty((n, len(names)), dtype=np.float64)
    embeddings = []
    for index, record in enumerate(obj):
        where = f"{path}: record {index}"
        if not isinstance(record, dict):
            raise DataError(f"{where} is a {type(record).__name__}, not a dict")
        missing = [key for key in ("embedding",) + names if key not in record]
        if missing:
            raise DataError(f"{where} lacks {', '.join(map(repr, missing))} (its keys: {', '.join(map(str, record))})")
        for column, name in enumerate(names):
            value = record[name]
            if not _is_number(value) or not math.isfinite(value):
                raise DataError(f"{where}: {name!r} must be a finite number, got {value!r}")
            targets[index, column] = value
        embedding = record["embedding"]
        embeddings.append(_read_embedding_mr(embedding, where) if is_mr else _read_embedding_nb201(embedding, where))

    if is_mr:
        codes = np.asarray(embeddings, dtype=np.int64)
    else:
        codes = np.stack(embeddings).astype(np.float32, copy=False)
    features = codes.astype(np.float64)
    for array in (features, targets, codes):
        array.setflags(write=False)
    return Table(setting=setting, source=path, metric_names=names, features=features, targets=targets,
                 embeddings=codes)


# ----------------------------------------------------------------------------------------------- predictor data
def zscore_stats(array) -> Tuple[np.ndarray, np.ndarray]:
    """Per-column ``(mean, std)`` over all rows (std with ddof 0, as numpy's default and upstream).

    Upstream computes both over the whole file, before the train/val split, and divides by the std as is.  A
    constant column (every row equal, std exactly 0) would divide by zero there; here its std is returned as
    **1.0**, so ``(x - mean) / std`` maps the column to 0.  No column of the shipped tables is constant.
    A 1-D array is one column (scalars come back).
    """
    data = np.asarray(array, dtype=np.float64)
    if data.ndim not in (1, 2) or data.shape[0] == 0:
        raise ValueError(f"zscore_stats needs a non-empty 1-D or 2-D array, got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError("zscore_stats: the array holds a non-finite value")
    mean = data.mean(axis=0)
    std = data.std(axis=0, ddof=0)
    constant = np.all(data == data[0], axis=0)
    std = np.where(constant, 1.0, std)
    if data.ndim == 1:
        return np.float64(mean), np.float64(std)
    return mean, std


def split_indices(n: int, seed: int = 233, val_fraction: float = 0.2) -> Tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)`` of upstream's split of ``n`` records.

    Upstream calls ``np.random.seed(233)`` then ``sklearn.model_selection.train_test_split(data, test_size=0.2)``
    with no ``random_state``, which draws ``permutation(n)`` from the global numpy generator: the first
    ``ceil(0.2 * n)`` of it are validation, the rest train (sklearn's own arithmetic, so the sizes match it for
    every ``n``).  Here: ``np.random.RandomState(seed).permutation(n)``, without touching the global generator.
    For n = 2507: 2005 train / 502 val.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"split_indices needs an integer n >= 2, got {n!r}")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    n_val = math.ceil(float(val_fraction) * int(n))
    if n_val >= n:
        raise ValueError(f"val_fraction {val_fraction} of {n} records leaves no training record")
    permutation = np.random.RandomState(seed).permutation(int(n))
    return permutation[n_val:], permutation[:n_val]


# ----------------------------------------------------------------------------------------------- rank metrics
def _pair(x, y, what: str) -> Tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"{what} needs two 1-D arrays of the same length, got shapes {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError(f"{what}: the arrays hold a non-finite value")
    return a, b


def _tied_pairs(values: np.ndarray) -> int:
    _, counts = np.unique(values, return_counts=True)
    counts = counts.astype(np.int64)
    return int(np.sum(counts * (counts - 1) // 2))


def kendall_tau_b(x, y) -> float:
    """Kendall's tau-b (ties in either variable handled), as ``scipy.stats.kendalltau`` (default variant).

    ``(concordant - discordant) / sqrt((n0 - ties_x) (n0 - ties_y))`` with ``n0 = n (n - 1) / 2``; pairs tied in
    x or y count as neither.  The sign sum is exact integer arithmetic over all pairs (vectorised, O(n^2), in row
    blocks of bounded memory).  NaN when n < 2 or either variable is constant.
    """
    a, b = _pair(x, y, "kendall_tau_b")
    n = len(a)
    if n < 2:
        return float("nan")
    n0 = n * (n - 1) // 2
    denom_x, denom_y = n0 - _tied_pairs(a), n0 - _tied_pairs(b)
    if denom_x == 0 or denom_y == 0:
        return float("nan")
    block = max(1, 4_000_000 // n)
    total = 0  # sum over ordered pairs (i, j) of sign(a_i - a_j) * sign(b_i - b_j) = 2 (concordant - discordant)
    for start in range(0, n, block):
        rows = slice(start, start + block)
        sa = np.sign(a[rows, None] - a[None, :]).astype(np.int8)
        sb = np.sign(b[rows, None] - b[None, :]).astype(np.int8)
        total += int(np.sum(sa * sb, dtype=np.int64))
    return (total // 2) / math.sqrt(denom_x * denom_y)  # exact integer product: tau_b(x, x) == 1.0 exactly


def rank_average(values) -> np.ndarray:
    """1-based ranks with ties given their average rank (``scipy.stats.rankdata(method='average')``)."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"rank_average needs a 1-D array, got shape {a.shape}")
    order = np.argsort(a, kind="mergesort")
    ordered = a[order]
    new_group = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    group = np.cumsum(new_group) - 1
    counts = np.bincount(group)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    ranks = np.empty(len(a), dtype=np.float64)
    ranks[order] = (starts + (counts + 1) / 2.0)[group]
    return ranks


def spearman_rho(x, y) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks (``scipy.stats.spearmanr``).  NaN when
    n < 2 or either variable is constant."""
    a, b = _pair(x, y, "spearman_rho")
    if len(a) < 2:
        return float("nan")
    ra = rank_average(a)
    rb = rank_average(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = math.sqrt(float(np.dot(ra, ra)) * float(np.dot(rb, rb)))
    if denom == 0.0:
        return float("nan")
    return float(np.dot(ra, rb)) / denom


def mae(x, y, axis: Optional[int] = None):
    """Mean absolute error ``mean(|x - y|)`` (over all elements, or along ``axis``: ``axis=0`` gives one
    figure per metric column)."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"mae needs two non-empty arrays of the same shape, got {a.shape} and {b.shape}")
    result = np.mean(np.abs(a - b), axis=axis)
    return float(result) if axis is None else result


# ----------------------------------------------------------------------------------------------- search list
def search_list(root: Optional[str] = None) -> List[Tuple[int, ...]]:
    """NCP's candidate codes from ``<root>/search_list.txt``, each a tuple of 31 ints.

    A line is six ``-``-separated groups of ``_``-separated ints of lengths 2, 4, 6, 8, 10, 1, and block k's
    second int (its branch count) is k.  A bad line raises a :class:`DataError` naming the file and the line number.
    """
    path = os.path.join(TABLES_DIR if root is None else root, SEARCH_LIST_FILE)
    if not os.path.isfile(path):
        raise DatasetNotFoundError(f"{path}: NAS-Bench-MR search list not found")
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("ascii")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not an ASCII text file ({exc.reason} at byte {exc.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":  # a final newline is fine (upstream's file has none)
        lines.pop()
    codes = []
    for number, line in enumerate(lines, start=1):
        codes.append(_parse_code(line.strip(), f"{path}: line {number}"))
    if not codes:
        raise DataError(f"{path}: the search list is empty")
    return codes


def _parse_code(line: str, where: str) -> Tuple[int, ...]:
    """One line through the spec's code parser (``common.specs.nasbench_mr.parse_code``: groups, branch counts, the
    space's bounds), its error re-raised as a :class:`DataError` naming the file and line."""
    from common.specs.nasbench_mr import CodeError, parse_code

    try:
        return parse_code(line, where).code_ints()
    except CodeError as exc:
        raise DataError(str(exc)) from None


__all__ = [
    "METRIC_GROUPS", "MR_SETTINGS", "NB201", "SETTINGS", "TABLES_DIR", "Table", "kendall_tau_b", "load_table",
    "mae", "main_metric", "metric_groups", "metric_names", "rank_average", "search_list", "spearman_rho",
    "split_indices", "table_path", "zscore_stats",
]
