"""``python tools/main.py plot RUN_DIR [RUN_DIR ...] [--metrics val_top1,train_loss] [--out curves.png]``

Reads each run's ``metrics.csv`` (an ``epoch`` column, then numeric columns; an empty cell means "not measured
that epoch"), draws one subplot per metric with one line per run, and writes the figure with matplotlib's Agg
renderer (no display needed).  Without ``--metrics`` every numeric column that holds at least one value in
some run is drawn.  The legend names each run by its folder and the backend that trained it (``BACKEND`` in
``config.yaml``, else the ``backend:`` lines of ``train.log``).
"""
from __future__ import annotations

import csv
import math
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

from common.errors import UserError
from common.io_utils import atomic_path

METRICS_FILE = "metrics.csv"
DEFAULT_OUT = "curves.png"
FORMATS = ("png", "svg", "pdf")
MAX_COLUMNS = 3

Series = Dict[str, List[Tuple[float, float]]]  # metric -> [(epoch, value), ...]


class Run:
    """One run folder: its metric columns (in file order) and their measured points."""

    def __init__(self, path: str, label: str, columns: List[str], series: Series):
        self.path = path
        self.label = label
        self.columns = columns
        self.series = series


def add_arguments(p) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders that hold a metrics.csv")
    p.add_argument("--metrics", default="",
                   help="comma-separated metric columns to draw, e.g. val_top1,train_loss "
                        "(default: every numeric column that has values)")
    p.add_argument("--out", default="", help=f"image file, .png/.svg/.pdf (default: <first RUN_DIR>/{DEFAULT_OUT})")


def run(args) -> int:
    runs = list(args.runs) + list(getattr(args, "overrides", []) or [])  # folders given after an option
    metrics = [m.strip() for m in (args.metrics or "").split(",") if m.strip()]
    out = args.out or os.path.join(runs[0], DEFAULT_OUT)
    written = plot_runs(runs, metrics or None, out)
    print(f"wrote {written}")
    return 0


# ---------------------------------------------------------------------------------------------- reading
def _number(text: str) -> Optional[float]:
    """A csv cell as a float; ``None`` for an empty or non-finite cell; ValueError for text."""
    text = text.strip()
    if not text:
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def read_metrics(run_dir: str) -> Tuple[List[str], Series]:
    """The numeric columns of ``<run_dir>/metrics.csv`` (without ``epoch``) and their measured points."""
    if not os.path.isdir(run_dir):
        raise UserError(f"run folder not found: {run_dir}")
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file (is {run_dir} a training run folder?)")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: cannot be read ({exc})") from None
    if not header or not any(name.strip() for name in header):
        raise UserError(f"{path}: empty file (no header)")
    header = [name.strip() for name in header]
    if "epoch" not in header:
        raise UserError(f"{path}: no 'epoch' column (header: {','.join(header)})")
    if not rows:
        raise UserError(f"{path}: no epochs yet (header only)")
    epoch_at = header.index("epoch")
    columns = [name for name in header if name and name != "epoch"]
    series: Series = {name: [] for name in columns}
    text_columns = set()
    for line, row in rows:
        if len(row) > len(header):
            raise UserError(f"{path}, line {line}: {len(row)} cells for {len(header)} columns")
        try:
            epoch = _number(row[epoch_at]) if epoch_at < len(row) else None
        except ValueError:
            raise UserError(f"{path}, line {line}: epoch {row[epoch_at]!r} is not a number") from None
        if epoch is None:
            raise UserError(f"{path}, line {line}: the epoch cell is empty")
        for name, cell in zip(header, row):
            if not name or name == "epoch" or name in text_columns:
                continue
            try:
                value = _number(cell)
            except ValueError:
                text_columns.add(name)  # not a metric (a note, a path): never drawn
                continue
            if value is not None:
                series[name].append((epoch, value))
    columns = [name for name in columns if name not in text_columns]
    return columns, {name: series[name] for name in columns}


def backend_of(run_dir: str) -> str:
    """The backend that trained the run: ``BACKEND`` in config.yaml, else train.log's ``backend:`` lines
    (``torch→paddle`` for a run resumed on the other backend), else ``""``."""
    config = os.path.join(run_dir, "config.yaml")
    if os.path.isfile(config):
        try:
            import yaml

            with open(config, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        except Exception:  # an unreadable config only costs the legend its backend, never the plot
            data = None
        if isinstance(data, dict):
            for key in ("BACKEND", "backend"):
                if isinstance(data.get(key), str) and data[key].strip():
                    return data[key].strip()
    log = os.path.join(run_dir, "train.log")
    found: List[str] = []
    if os.path.isfile(log):
        try:
            with open(log, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    match = re.search(r"\bbackend:\s*([A-Za-z_][\w-]*)", line)
                    if match and (not found or found[-1] != match.group(1)):
                        found.append(match.group(1))
        except OSError:
            pass
    return "→".join(found)


def _labels(paths: Sequence[str]) -> List[str]:
    names = [os.path.basename(os.path.normpath(os.path.abspath(p))) for p in paths]
    if len(set(names)) < len(names):  # same folder name under different parents: show more of the path
        names = [os.path.relpath(os.path.abspath(p)) for p in paths]
    return names


def load_runs(paths: Sequence[str]) -> List[Run]:
    runs = []
    for path, name in zip(paths, _labels(paths)):
        columns, series = read_metrics(path)
        backend = backend_of(path)
        runs.append(Run(path, f"{name} ({backend})" if backend else name, columns, series))
    return runs


def choose_metrics(runs: Sequence[Run], wanted: Optional[Sequence[str]]) -> List[str]:
    """The metrics to draw: ``wanted`` (each must be a numeric column of some run), else every numeric column
    with at least one value, in the order of the first run's file."""
    known: List[str] = []
    for run_ in runs:
        known += [name for name in run_.columns if name not in known]
    if wanted:
        for name in wanted:
            if name not in known:
                where = runs[0].path if len(runs) == 1 else "any of the runs"
                raise UserError(f"unknown metric {name!r}: not a numeric column of {METRICS_FILE} in {where} "
                                f"(available: {', '.join(known) or 'none'})")
        return list(dict.fromkeys(wanted))
    chosen = [name for name in known if any(run_.series.get(name) for run_ in runs)]
    if not chosen:
        raise UserError(f"nothing to plot: no numeric values in {', '.join(r.path for r in runs)}")
    return chosen


# ---------------------------------------------------------------------------------------------- drawing
def plot_runs(paths: Sequence[str], metrics: Optional[Sequence[str]], out: str, dpi: int = 110) -> str:
    """Draw ``metrics`` (default: all) of the runs at ``paths`` into ``out``; returns ``out``."""
    if not paths:
        raise UserError("give at least one run folder")
    fmt = os.path.splitext(out)[1].lower().lstrip(".")
    if fmt not in FORMATS:
        raise UserError(f"--out {out}: the file name must end with " + ", ".join("." + f for f in FORMATS))
    runs = load_runs(paths)
    names = choose_metrics(runs, metrics)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:
        raise UserError(f"plotting needs matplotlib ({exc}): pip install -r requirements-common.txt") from None

    ncols = min(MAX_COLUMNS, len(names))
    nrows = -(-len(names) // ncols)
    legend_rows = -(-len(runs) // 3)
    fig = Figure(figsize=(4.8 * ncols, 3.4 * nrows + 0.35 * legend_rows + 0.3), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for ax, name in zip(axes, names):
        drawn = False
        for run_, color in zip(runs, colors):
            points = sorted(run_.series.get(name, []))
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, color=color, marker="o", markersize=3, linewidth=1.5)
                drawn = True
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not drawn:
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center", color="gray")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=color, marker="o", markersize=3, linewidth=1.5) for color in colors]
    fig.legend(handles, [run_.label for run_ in runs], loc="outside lower center", ncol=min(3, len(runs)),
               frameon=False)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    return out
