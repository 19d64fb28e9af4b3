"""Pictures of DARTS / PC-DARTS cells: one PNG per cell, the way NAS papers show a genotype.

A cell picture has the two cell inputs ``c_{k-2}`` and ``c_{k-1}`` (green), the intermediate nodes ``0..n-1``
(blue), the cell output ``c_{k}`` (yellow), one arrow per genotype edge labelled with its operation, and an
unlabelled grey arrow from each concatenated state to the output.

Two engines draw it:
  * ``"graphviz"``: the ``graphviz`` Python package writes the graph and Graphviz's ``dot`` lays it out (needs both
    the package and ``dot`` on PATH);
  * ``"matplotlib"``: our own left-to-right layout on matplotlib's Agg canvas (no display, never pyplot): inputs in
    column 0, node ``i`` in column ``i+1`` (staggered up and down), the output last.  Each edge is a straight or
    curved arrow whose bend is chosen so that it misses the other nodes and its label misses the other labels;
    two edges between the same pair of states always get opposite bends, so their labels never coincide.

``engine="auto"`` takes Graphviz when it is fully available, else matplotlib.  Files are written atomically
(:func:`common.io_utils.atomic_path`): a failed draw leaves neither a PNG nor a temporary file behind.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
from typing import Dict, List, Optional, Tuple

from common.errors import UserError
from common.io_utils import atomic_path
from common.specs.pcdarts import PRIMITIVES, Genotype

__all__ = ["ENGINES", "draw_cell", "draw_genotype"]

ENGINES = ("auto", "graphviz", "matplotlib")

INPUT_COLOR = "#b4eeb4"    # darkseagreen2
NODE_COLOR = "#add8e6"     # lightblue
OUTPUT_COLOR = "#eee8aa"   # palegoldenrod
CONCAT_COLOR = "#8c8c8c"

# matplotlib geometry, in inches (one data unit = one inch: the figure size follows the layout)
_COLUMN_GAP = 2.5
_INPUT_Y = 1.1             # c_{k-2} at +y, c_{k-1} at -y
_STAGGER = 0.85            # node i at +/- this, alternating
_BOX_W, _BOX_H = 0.8, 0.42
_FONT = 9                  # edge labels, points
_DPI = 120
_RADS = (0.0, 0.15, -0.15, 0.3, -0.3, 0.45, -0.45, 0.6, -0.6)
_LABEL_AT = (0.5, 0.4, 0.6)


# ---------------------------------------------------------------------------------------------- layout
Point = Tuple[float, float]
Box = Tuple[float, float, float, float]  # x0, y0, x1, y1


@dataclasses.dataclass(frozen=True)
class _Node:
    state: int          # 0, 1 = inputs; 2.. = intermediate nodes; -1 = output
    text: str           # mathtext for matplotlib
    plain: str          # the graphviz label
    color: str
    xy: Point

    def box(self, margin: float = 0.0) -> Box:
        x, y = self.xy
        return (x - _BOX_W / 2 - margin, y - _BOX_H / 2 - margin, x + _BOX_W / 2 + margin, y + _BOX_H / 2 + margin)


@dataclasses.dataclass(frozen=True)
class _Edge:
    src: int
    dst: int
    op: Optional[str]   # None: a concat arrow to the output
    rad: float          # matplotlib's arc3 bend
    label_xy: Optional[Point]


@dataclasses.dataclass(frozen=True)
class _Layout:
    nodes: Dict[int, _Node]
    edges: Tuple[_Edge, ...]
    bounds: Box


def _nodes(steps: int) -> Dict[int, _Node]:
    nodes = {
        0: _Node(0, r"$c_{k-2}$", "c_{k-2}", INPUT_COLOR, (0.0, _INPUT_Y)),
        1: _Node(1, r"$c_{k-1}$", "c_{k-1}", INPUT_COLOR, (0.0, -_INPUT_Y)),
    }
    for i in range(steps):
        y = _STAGGER if i % 2 == 0 else -_STAGGER
        nodes[i + 2] = _Node(i + 2, str(i), str(i), NODE_COLOR, ((i + 1) * _COLUMN_GAP, y))
    nodes[-1] = _Node(-1, r"$c_{k}$", "c_{k}", OUTPUT_COLOR, ((steps + 1) * _COLUMN_GAP, 0.0))
    return nodes


def _curve(a: Point, b: Point, rad: float, t: float) -> Point:
    """The point at ``t`` of matplotlib's ``arc3,rad=rad`` connection from ``a`` to ``b`` (a quadratic Bezier whose
    control point is the chord's midpoint moved by ``rad`` times the chord, turned clockwise)."""
    (x0, y0), (x1, y1) = a, b
    cx, cy = (x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0)
    u = 1 - t
    return u * u * x0 + 2 * u * t * cx + t * t * x1, u * u * y0 + 2 * u * t * cy + t * t * y1


def _label_box(op: str, at: Point) -> Box:
    half_w = (0.6 * _FONT / 72 * len(op) + 0.12) / 2  # ~0.6 em a character, plus the bbox padding
    half_h = (1.25 * _FONT / 72 + 0.08) / 2
    return (at[0] - half_w, at[1] - half_h, at[0] + half_w, at[1] + half_h)


def _inside(p: Point, box: Box) -> bool:
    return box[0] <= p[0] <= box[2] and box[1] <= p[1] <= box[3]


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@dataclasses.dataclass(frozen=True)
class _Choice:
    rad: float
    spot: Optional[Point]
    points: Tuple[Point, ...]     # the curve, sampled away from its ends
    label: Optional[Box]


def _choose(src: int, dst: int, op: Optional[str], nodes: Dict[int, _Node], pair_count: int,
            rivals: List[Tuple[int, int, _Choice]]) -> _Choice:
    """The bend and label spot of one edge with the fewest collisions with the nodes and the ``rivals`` (the other
    edges already placed: ``(src, dst, choice)``)."""
    a, b = nodes[src].xy, nodes[dst].xy
    chord = math.hypot(b[0] - a[0], b[1] - a[1])
    obstacles = [n.box(0.1) for s, n in nodes.items() if s not in (src, dst)]
    labels = [c.label for _, _, c in rivals if c.label is not None]
    curves = [c.points for _, _, c in rivals]
    twins = [c.rad for s, d, c in rivals if (s, d) == (src, dst)]
    steps = max(20, int(chord / 0.08))  # a sample every ~0.08 inch at most: no label box slips between two
    best: Optional[Tuple[float, _Choice]] = None
    for rad in _RADS:
        if pair_count > 1 and (abs(rad) < 0.1 or rad in twins):
            continue  # repeated pair: every copy bends, each its own way
        points = tuple(_curve(a, b, rad, k / steps) for k in range(steps // 10, steps - steps // 10 + 1))
        cost = 100.0 * sum(any(_inside(p, box) for p in points) for box in obstacles)
        cost += 50.0 * sum(r * rad > 0 for r in twins)  # ... preferably to opposite sides
        cost += 10.0 * sum(any(_inside(p, box) for p in points) for box in labels)
        cost += 2.0 * abs(rad) * chord  # twice the bulge, in inches: straight beats curved
        for at in (_LABEL_AT if op else (None,)):
            extra, spot, label = 0.0, None, None
            if op is not None and at is not None:
                spot = _curve(a, b, rad, at)
                label = _label_box(op, spot)
                extra += 100.0 * sum(_overlap(label, other) for other in obstacles + labels)
                extra += 10.0 * sum(any(_inside(p, label) for p in curve) for curve in curves)
                extra += 2.0 * abs(at - 0.5)
            if best is None or cost + extra < best[0]:
                best = (cost + extra, _Choice(rad, spot, points, label))
    assert best is not None, "no bend left for a repeated edge"
    return best[1]


def _layout(genotype: Genotype, reduction: bool, rounds: int = 3) -> _Layout:
    """Place the nodes and choose each edge's bend and label spot: a greedy pass (short edges first, each against
    the edges placed before it), then ``rounds - 1`` passes where each edge chooses again against all the others."""
    edges = genotype.edges(reduction)
    nodes = _nodes(len(edges) // 2)
    wanted: List[Tuple[int, int, Optional[str]]] = [(index, 2 + j // 2, op) for j, (op, index) in enumerate(edges)]
    wanted.sort(key=lambda e: e[1] - e[0])  # stable: genotype order among equals
    wanted += [(state, -1, None) for state in genotype.concat(reduction)]
    pairs = [(src, dst) for src, dst, _ in wanted]
    chosen: List[Optional[_Choice]] = [None] * len(wanted)
    for _ in range(rounds):
        for k, (src, dst, op) in enumerate(wanted):
            rivals = [(s, d, c) for i, ((s, d, _), c) in enumerate(zip(wanted, chosen)) if i != k and c is not None]
            chosen[k] = _choose(src, dst, op, nodes, pairs.count((src, dst)), rivals)
    placed = [_Edge(src, dst, op, c.rad, c.spot) for (src, dst, op), c in zip(wanted, chosen) if c is not None]
    labels = [c.label for c in chosen if c is not None and c.label is not None]

    boxes = [n.box() for n in nodes.values()] + labels
    xs = [x for box in boxes for x in (box[0], box[2])]
    ys = [y for box in boxes for y in (box[1], box[3])]
    for edge in placed:
        for k in range(21):
            x, y = _curve(nodes[edge.src].xy, nodes[edge.dst].xy, edge.rad, k / 20)
            xs.append(x)
            ys.append(y)
    pad = 0.3
    return _Layout(nodes, tuple(placed), (min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad))


# ---------------------------------------------------------------------------------------------- engines
def _graphviz_problem() -> Optional[str]:
    """Why the graphviz engine cannot run here, or ``None`` when it can."""
    try:
        import graphviz  # noqa: F401
    except ImportError:
        return "the Python package 'graphviz' is not installed"
    if shutil.which("dot") is None:
        return "Graphviz's 'dot' program is not on PATH"
    return None


def _choose_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if engine == "matplotlib":
        return engine
    problem = _graphviz_problem()
    if engine == "graphviz" and problem:
        raise ValueError(f"engine='graphviz' is unavailable: {problem} (use engine='matplotlib' or 'auto')")
    return "matplotlib" if problem else "graphviz"


def _op_color(op: str) -> str:
    palette = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
    return palette[PRIMITIVES.index(op) % len(palette)] if op in PRIMITIVES else "#333333"


def _draw_graphviz(genotype: Genotype, reduction: bool, path: str, title: str) -> None:
    import graphviz

    edges = genotype.edges(reduction)
    nodes = _nodes(len(edges) // 2)
    g = graphviz.Digraph(
        graph_attr={"rankdir": "LR", "label": title, "labelloc": "t", "fontsize": "20", "fontname": "helvetica"},
        node_attr={"shape": "box", "style": "filled,rounded", "fontsize": "18", "fontname": "helvetica",
                   "penwidth": "1.5"},
        edge_attr={"fontsize": "14", "fontname": "helvetica", "penwidth": "1.5"},
        engine="dot",
    )
    for state, node in nodes.items():
        g.node(f"s{state}", label=node.plain, fillcolor=node.color)
    for j, (op, index) in enumerate(edges):
        g.edge(f"s{index}", f"s{2 + j // 2}", label=op, color=_op_color(op), fontcolor=_op_color(op))
    for state in genotype.concat(reduction):
        g.edge(f"s{state}", "s-1", color=CONCAT_COLOR)
    data = g.pipe(format="png")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def _draw_matplotlib(genotype: Genotype, reduction: bool, path: str, title: str) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    except ImportError as exc:
        raise UserError(f"drawing a cell needs matplotlib ({exc}): pip install -r requirements-common.txt") from None

    layout = _layout(genotype, reduction)
    x0, y0, x1, y1 = layout.bounds
    width, height = x1 - x0, y1 - y0
    title_h = 0.45 if title else 0.0
    fig = Figure(figsize=(width, height + title_h), dpi=_DPI)
    canvas = FigureCanvasAgg(fig)
    fig.patch.set_facecolor("white")
    ax = fig.add_axes((0.0, 0.0, 1.0, height / (height + title_h)))
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")  # the arc3 bends were planned in inches: keep x and y at the same scale
    ax.set_axis_off()
    if title:
        fig.text(0.5, 1.0 - 0.5 * title_h / (height + title_h), title, ha="center", va="center", fontsize=13,
                 fontweight="bold")

    patches: Dict[int, FancyBboxPatch] = {}
    for state, node in layout.nodes.items():
        bx0, by0, _, _ = node.box()
        patch = FancyBboxPatch((bx0, by0), _BOX_W, _BOX_H, boxstyle="round,pad=0.0,rounding_size=0.1",
                               facecolor=node.color, edgecolor="#404040", linewidth=1.4, zorder=3)
        ax.add_patch(patch)
        patches[state] = patch
        ax.text(node.xy[0], node.xy[1], node.text, ha="center", va="center", fontsize=12, zorder=4)

    for edge in layout.edges:
        color = CONCAT_COLOR if edge.op is None else _op_color(edge.op)
        ax.add_patch(FancyArrowPatch(
            layout.nodes[edge.src].xy, layout.nodes[edge.dst].xy, connectionstyle=f"arc3,rad={edge.rad}",
            arrowstyle="-|>", mutation_scale=13, linewidth=1.4, color=color, patchA=patches[edge.src],
            patchB=patches[edge.dst], shrinkA=1, shrinkB=1, zorder=2))
        if edge.op is not None and edge.label_xy is not None:
            ax.text(edge.label_xy[0], edge.label_xy[1], edge.op, ha="center", va="center", fontsize=_FONT,
                    color=color, zorder=5,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.9})

    with atomic_path(path) as tmp:
        canvas.print_png(tmp)


# ---------------------------------------------------------------------------------------------- entry points
def draw_cell(genotype: Genotype, reduction: bool, path: str, title: str = "", engine: str = "auto") -> str:
    """Write a PNG of ``genotype``'s normal (``reduction=False``) or reduction cell to ``path``; returns the engine
    used (``"graphviz"`` or ``"matplotlib"``).  ``title`` defaults to "normal cell" / "reduction cell"."""
    used = _choose_engine(engine)
    title = title or ("reduction cell" if reduction else "normal cell")
    if used == "graphviz":
        _draw_graphviz(genotype, reduction, path, title)
    else:
        _draw_matplotlib(genotype, reduction, path, title)
    return used


def draw_genotype(genotype: Genotype, folder: str, prefix: str = "", engine: str = "auto") -> Dict[str, str]:
    """Draw both cells to ``<folder>/<prefix>normal.png`` and ``<folder>/<prefix>reduce.png`` (the folder is
    created); returns ``{"normal": path, "reduce": path, "engine": engine used}``."""
    used = _choose_engine(engine)
    os.makedirs(folder, exist_ok=True)
    out: Dict[str, str] = {}
    for name, reduction in (("normal", False), ("reduce", True)):
        out[name] = os.path.join(folder, f"{prefix}{name}.png")
        draw_cell(genotype, reduction, out[name], engine=used)
    out["engine"] = used
    return out

