"""Cell pictures (``common/cell_pictures.py``): both engines write a real, non-blank PNG atomically, the matplotlib
layout keeps labels apart, the engine choice is explained in one line, and the module loads no framework."""
import os
import shutil
import subprocess
import sys
import types

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.image import imread

from common import cell_pictures
from common.cell_pictures import _label_box, _layout, _overlap, draw_cell, draw_genotype
from common.specs.pcdarts import DARTS_V2, GENOTYPES, PC_DARTS_cifar, Genotype

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: both edges of a node from the same input (a legal genotype): their labels must not coincide
TWINS = Genotype(normal=[("sep_conv_3x3", 1), ("skip_connect", 1), ("max_pool_3x3", 0), ("avg_pool_3x3", 0)],
                 normal_concat=[2, 3], reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1)], reduce_concat=[2])


def _check_png(path: str):
    with open(path, "rb") as handle:
        data = handle.read()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    pixels = imread(path)
    height, width = pixels.shape[:2]
    assert 200 <= height <= 2000 and 400 <= width <= 4000 and width > height, pixels.shape
    assert pixels.std() > 0.01, "blank picture"
    return pixels


@pytest.mark.parametrize("name", ["PC_DARTS_cifar", "DARTS_V2"])
@pytest.mark.parametrize("reduction", [False, True])
def test_matplotlib_draws_a_real_png(tmp_path, name, reduction):
    path = str(tmp_path / "cell.png")
    assert draw_cell(GENOTYPES[name], reduction, path, engine="matplotlib") == "matplotlib"
    _check_png(path)
    assert os.listdir(tmp_path) == ["cell.png"]  # no temporary left behind


def test_width_follows_the_node_count(tmp_path):
    big = _check_png(draw_genotype(PC_DARTS_cifar, str(tmp_path), engine="matplotlib")["normal"])
    path = str(tmp_path / "small.png")
    draw_cell(TWINS, True, path, title="one node", engine="matplotlib")
    small = imread(path)
    assert small.shape[1] < big.shape[1] * 0.75


def test_draw_genotype_returns_both_paths(tmp_path):
    folder = tmp_path / "new" / "pictures"
    out = draw_genotype(DARTS_V2, str(folder), prefix="darts_v2_", engine="matplotlib")
    assert out == {"normal": str(folder / "darts_v2_normal.png"), "reduce": str(folder / "darts_v2_reduce.png"),
                   "engine": "matplotlib"}
    for key in ("normal", "reduce"):
        _check_png(out[key])
    assert sorted(os.listdir(folder)) == ["darts_v2_normal.png", "darts_v2_reduce.png"]


@pytest.mark.parametrize("genotype", list(GENOTYPES.values()) + [TWINS], ids=list(GENOTYPES) + ["twins"])
@pytest.mark.parametrize("reduction", [False, True])
def test_layout_keeps_labels_apart(genotype, reduction):
    layout = _layout(genotype, reduction)
    assert len(layout.edges) == len(genotype.edges(reduction)) + len(genotype.concat(reduction))
    labels = [_label_box(e.op, e.label_xy) for e in layout.edges if e.op is not None]
    nodes = [n.box() for n in layout.nodes.values()]
    for i, box in enumerate(labels):
        assert not any(_overlap(box, other) for other in labels[i + 1:] + nodes), box
    pairs = [(e.src, e.dst) for e in layout.edges]
    for edge in layout.edges:
        if pairs.count((edge.src, edge.dst)) > 1:  # repeated pair: both bend, to opposite sides
            twin = next(e for e in layout.edges if (e.src, e.dst) == (edge.src, edge.dst) and e is not edge)
            assert edge.rad * twin.rad < 0


def test_twin_edges_are_drawn(tmp_path):
    path = str(tmp_path / "twins.png")
    draw_cell(TWINS, False, path, engine="matplotlib")
    _check_png(path)


def test_failed_draw_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(FigureCanvasAgg, "print_png", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        draw_cell(PC_DARTS_cifar, False, str(tmp_path / "cell.png"), engine="matplotlib")
    assert os.listdir(tmp_path) == []


def test_failed_draw_keeps_the_old_picture(tmp_path, monkeypatch):
    path = tmp_path / "cell.png"
    path.write_bytes(b"old")
    monkeypatch.setattr(FigureCanvasAgg, "print_png", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        draw_cell(PC_DARTS_cifar, True, str(path), engine="matplotlib")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["cell.png"]


def test_graphviz_without_dot_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    monkeypatch.setitem(sys.modules, "graphviz", types.ModuleType("graphviz"))  # the package is "there"
    with pytest.raises(ValueError) as info:
        draw_cell(PC_DARTS_cifar, False, str(tmp_path / "cell.png"), engine="graphviz")
    message = str(info.value)
    assert "\n" not in message and "'dot'" in message and "engine='matplotlib'" in message
    assert os.listdir(tmp_path) == []


def test_graphviz_without_the_package_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)  # import graphviz -> ImportError
    with pytest.raises(ValueError, match=r"Python package 'graphviz' is not installed.*engine='matplotlib'"):
        draw_genotype(PC_DARTS_cifar, str(tmp_path / "out"), engine="graphviz")
    assert not (tmp_path / "out").exists()


def test_auto_falls_back_to_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    out = draw_genotype(PC_DARTS_cifar, str(tmp_path), engine="auto")
    assert out["engine"] == "matplotlib"
    _check_png(out["reduce"])


def test_unknown_engine(tmp_path):
    with pytest.raises(ValueError, match="unknown engine 'svg'"):
        draw_cell(PC_DARTS_cifar, False, str(tmp_path / "cell.png"), engine="svg")


class _FakeDigraph:
    """Stands in for ``graphviz.Digraph``: records nodes and edges, "renders" a PNG header."""

    made = []

    def __init__(self, **kwargs):
        self.kwargs, self.nodes, self.edges = kwargs, {}, []
        _FakeDigraph.made.append(self)

    def node(self, name, label=None, **attrs):
        self.nodes[name] = label

    def edge(self, tail, head, label=None, **attrs):
        self.edges.append((self.nodes[tail], self.nodes[head], label))

    def pipe(self, format=None):
        assert format == "png"
        return PNG_SIGNATURE + b"fake"


def test_graphviz_engine_with_a_stand_in(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", types.SimpleNamespace(Digraph=_FakeDigraph))
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: "/usr/bin/" + name)
    _FakeDigraph.made.clear()
    out = draw_genotype(PC_DARTS_cifar, str(tmp_path), prefix="pc_")
    assert out["engine"] == "graphviz"
    assert (tmp_path / "pc_reduce.png").read_bytes() == PNG_SIGNATURE + b"fake"
    normal, reduce = _FakeDigraph.made
    assert normal.kwargs["graph_attr"]["label"] == "normal cell"
    assert reduce.kwargs["graph_attr"]["label"] == "reduction cell"
    assert ("c_{k-1}", "0", "sep_conv_3x3") in normal.edges and ("c_{k-2}", "0", "skip_connect") in normal.edges
    assert ("0", "3", "sep_conv_3x3") in reduce.edges
    assert [e for e in reduce.edges if e[1] == "c_{k}"] == [(str(i), "c_{k}", None) for i in range(4)]


def test_graphviz_engine_for_real(tmp_path):
    pytest.importorskip("graphviz")
    path = str(tmp_path / "cell.png")
    if shutil.which("dot") is None:  # the package without the program: refused in one line
        with pytest.raises(ValueError, match="'dot'"):
            draw_cell(DARTS_V2, False, path, engine="graphviz")
        return
    assert draw_cell(DARTS_V2, False, path, engine="graphviz") == "graphviz"
    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE
    assert imread(path).std() > 0.01
    assert os.listdir(tmp_path) == ["cell.png"]


def test_loads_no_framework():
    code = ("import sys, common.cell_pictures; "
            "assert not any(m in sys.modules for m in ('torch', 'paddle', 'tensorflow')), "
            "[m for m in ('torch', 'paddle', 'tensorflow') if m in sys.modules]")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert cell_pictures.__doc__ and "graphviz" in cell_pictures.__doc__
