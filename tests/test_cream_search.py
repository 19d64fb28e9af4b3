"""The Cream supernet search: the layer search and the path FLOPs table (spec), paths, the prioritized board's
rules and state, the `search` command end to end on both backends (board files, picture, child.yaml that `train`
takes), resume repeating the uninterrupted search (board included), and an upstream supernet state dict loading by
name.  The meta gradient against torch's create_graph is in tests/test_cream_meta_gradient.py, torch vs paddle
over 20 search iterations in parity_tests/test_cream_search_parity.py."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from common import engine
from common.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from common.config import load_config
from common.cream_board import BoardError, PrioritizedBoard
from common.specs import cream as C
from tests.test_pcdarts_train import _Interrupt, _StopAfter  # the interruption hook after epoch 1
from tools.main import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEARCH = os.path.join(ROOT, "configs", "cream_search_digits.yaml")
TINY = ["CREAM.STA_NUM", "[1, 1, 2, 1, 1]", "DATA.NUM_TRAIN", "128", "DATA.NUM_VAL", "32", "DATA.BATCH_SIZE", "16",
        "TRAIN.EPOCHS", "3", "TRAIN.MAX_STEPS_PER_EPOCH", "4", "CREAM.UPDATE_ITER", "2", "CREAM.POOL_SIZE", "3",
        "CREAM.META_START_EPOCH", "0",
        "THREADS", "1"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rows_of(run_dir):
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------------------ spec
@pytest.mark.parametrize("window,sta_num,size", [
    ((0, 600), (4, 4, 4, 4, 4), 224), ((0, 450), (2, 3, 4, 4, 4), 224), ((0, 300), (1, 2, 3, 3, 3), 224),
    ((0, 200), (1, 1, 3, 2, 1), 224), ((0, 100), (1, 1, 1, 1, 1), 224), ((0, 50), (1, 1, 1, 1, 1), 160),
    ((0, 30), (1, 1, 1, 1, 1), 128), ((0, 15), (1, 1, 1, 1, 1), 96)])
def test_layer_search_gives_upstreams_stage_depths(window, sta_num, size):
    """Upstream search_for_layer's results (shared/research/cream.md §2.6, measured by running it)."""
    assert C.search_for_layer(*window) == (sta_num, size)


def test_layer_search_refuses_an_impossible_window():
    with pytest.raises(ValueError, match=r"\[0, 1\].*64 px"):
        C.search_for_layer(0, 1)
    with pytest.raises(ValueError, match="maximum > 0"):
        C.search_for_layer(0, 0)


def test_supernet_from_config_and_its_count():
    cfg = load_config(os.path.join(ROOT, "configs", "cream_search.yaml"), [])
    spec = C.spec_from_config(cfg)
    assert isinstance(spec, C.CreamSupernetSpec) and spec.sta_num == (4, 4, 4, 4, 4)
    assert C.count_params(spec) == 29_809_073  # upstream's count (meta layer 4001 included)
    assert C.commands_for(spec) == ("search",)
    assert C.spec_from_config(load_config(SEARCH, [])).sta_num == (1, 2, 2, 1, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_path_flops_equal_the_child_nets_count(seed):
    """The lookup table's FLOPs of a path = the thop_2020 MACs of the child net of that path, without the classifier
    and the stem's BN (upstream's FlopsEst leaves both out), at the supernet's image size."""
    spec = C.build_supernet_spec((4, 4, 4, 4, 4), image_size=224)
    table = C.flops_table(spec)
    path = C.sample_path(spec, C.path_seed(seed, 0))
    child = C.build_child_spec(C.child_arch_from_path(path), honour_single_block_choices=True)
    stem_bn = 2 * 112 * 112 * 16  # thop_2020: 2 per BN output element
    want = C.count_macs(child, 224, "thop_2020") - child.num_features * child.num_classes - stem_bn
    assert table.path_mflops(path) * 1e6 == pytest.approx(want, rel=1e-12)
    released = C.build_child_spec(C.RELEASED_NETS["cream481"], honour_single_block_choices=True)
    # Cream-481 fits the supernet's 4,4,5,4,4 layout except stage 3's fifth layer (never on a path): compare by hand
    assert C.count_macs(released, 224, "thop_2020") / 1e6 == pytest.approx(481.6, abs=0.01)


def test_paths_are_checked_sampled_and_named():
    spec = C.build_supernet_spec((1, 2, 2, 1, 1), num_classes=10, image_size=32)
    path = C.sample_path(spec, C.path_seed(3, 7))
    assert path == C.sample_path(spec, C.path_seed(3, 7)) and path[0] == (0,) and path[-1] == (0,)
    assert [len(s) for s in path[1:-1]] == [1, 2, 2, 1, 1]
    names = C.path_parameter_names(spec, path)
    assert names[:7] == C.FIXED_PARAMETERS and all(".running_" not in n for n in names)
    assert all(n.startswith(("blocks.0.0.0.", f"blocks.1.0.{path[1][0]}.")) for n in names[7:12])
    for bad, match in [([[0], [9], [0, 0], [0, 0], [0], [0], [0]], "stage 1 layer 0: 9"),
                       ([[0], [0], [0], [0, 0], [0], [0], [0]], "stage 2 has 1 entries"),
                       ([[1], [0], [0, 0], [0, 0], [0], [0], [0]], "stage 0 is fixed"),
                       ([[0], [-1], [0, 0], [0, 0], [0], [0], [0]], "stride 2")]:
        with pytest.raises(C.ArchListError, match=match):
            C.path_plan(spec, bad)
    skip = ((0,), (0,), (0, -1), (0, 0), (0,), (0,), (0,))
    assert C.child_arch_from_path(skip)[2] == (0,)


def test_sampling_follows_the_probabilities_unless_upstreams_bug_is_on():
    spec = C.build_supernet_spec((4, 4, 4, 4, 4))
    prob = (0.05, 0.2, 0.05, 0.5, 0.05, 0.15)

    def freq(upstream):
        counts = np.zeros(6)
        for k in range(400):
            for stage in C.sample_path(spec, C.path_seed(0, k), prob, upstream)[1:-1]:
                np.add.at(counts, list(stage), 1)
        return counts / counts.sum()

    assert np.abs(freq(False) - prob).max() < 0.03
    assert np.abs(freq(True) - 1 / 6).max() < 0.03  # np.random.choice(6, n, prob): prob is `replace`


# ------------------------------------------------------------------------------------------------ board
def _entry(board, epoch, prec1, flops, k):
    path = ((0,), (k % 6,), (0,))
    return board.update(epoch, prec1, flops, path, np.full((2, 3, 4, 4), k, np.float32),
                        np.full((2, 10), 0.1 * k, np.float32), step=k)


def test_board_insertion_order_and_trimming():
    board = PrioritizedBoard(pool_size=3, acc_gap=5.0, start_epoch=2)
    assert not _entry(board, 2, 50.0, 10.0, 0) and len(board) == 0  # only after META_START_EPOCH
    assert _entry(board, 3, 20.0, 10.0, 1) and _entry(board, 3, 40.0, 10.0, 2) and _entry(board, 3, 30.0, 10.0, 3)
    assert [e.prec1 for e in board.entries] == [40.0, 30.0, 20.0]
    assert not _entry(board, 3, 24.0, 11.0, 4)     # full: neither 5 points better nor better and cheaper
    assert _entry(board, 3, 21.0, 9.0, 5)          # better and fewer FLOPs than the last
    assert [e.prec1 for e in board.entries] == [40.0, 30.0, 21.0]
    assert _entry(board, 3, 26.5, 99.0, 6)         # more than ACC_GAP better than the last
    assert [e.prec1 for e in board.entries] == [40.0, 30.0, 26.5]
    assert not _entry(board, 3, float("nan"), 1.0, 7)


@pytest.mark.parametrize("tie_break,order", [("fewer_flops", [5.0, 7.0]), ("upstream", [7.0, 5.0])])
def test_board_tie_break(tie_break, order):
    board = PrioritizedBoard(pool_size=3, start_epoch=0, tie_break=tie_break)
    _entry(board, 1, 30.0, 7.0, 1)
    _entry(board, 1, 30.0, 5.0, 2)
    assert [e.flops for e in board.entries] == order


def test_board_teacher_choice_and_probabilities():
    board = PrioritizedBoard(pool_size=3, start_epoch=0)
    with pytest.raises(BoardError, match="empty"):
        board.top1()
    for k, p in enumerate((30.0, 20.0, 10.0)):
        _entry(board, 1, p, 1.0, k + 1)
    assert board.choose_teacher([0.5, 2.0, 2.0]) == 1          # the first of equal scores
    assert board.choose_teacher([float("nan"), -3.0, -1.0]) == 2  # NaN never wins
    with pytest.raises(BoardError, match="no teacher"):
        board.choose_teacher([float("nan")] * 3)
    assert board.probabilities("even") is None
    assert board.probabilities("pre_prob", (1, 0, 0, 0, 0, 5)) == [1.0, 0.0, 0.0, 0.0, 0.0, 5.0]
    prob = board.probabilities("teacher")  # op counts over the board's paths [0], [k], [0] for k = 1, 2, 3
    assert prob == pytest.approx([6 / 9, 1 / 9, 1 / 9, 1 / 9, 0.0, 0.0])


def test_board_state_round_trips_through_a_checkpoint(tmp_path):
    board = PrioritizedBoard(pool_size=3, start_epoch=0)
    for k in range(4):
        _entry(board, 1, 10.0 + k, 1.0 + k, k)
    board.end_epoch(1)
    data, arrays = board.state()
    path = str(tmp_path / "b.safetensors")
    save_checkpoint(path, Checkpoint(model={"w": np.zeros(1, np.float32)}, extra={"board": data},
                                     extra_arrays=arrays))
    ckpt = load_checkpoint(path)
    again = PrioritizedBoard(pool_size=3, start_epoch=0)
    again.load_state(ckpt.extra["board"], ckpt.extra_arrays, path)
    assert [e.summary() for e in again.entries] == [e.summary() for e in board.entries]
    for a, b in zip(again.entries, board.entries):
        assert np.array_equal(a.images, b.images) and np.array_equal(a.soft, b.soft)
    assert again.history == board.history
    small = PrioritizedBoard(pool_size=2, start_epoch=0)
    with pytest.raises(ValueError, match="more than CREAM.POOL_SIZE = 2"):
        small.load_state(ckpt.extra["board"], ckpt.extra_arrays, path)


# ------------------------------------------------------------------------------------------------ the command
@pytest.mark.parametrize("backend_name", ["torch", "paddle"])
def test_search_end_to_end_exports_a_path_that_trains(backend_name, tmp_path):
    run_dir = str(tmp_path / "search")
    assert main(["search", SEARCH, "--backend", backend_name, *TINY, "--output", run_dir]) == 0
    rows = rows_of(run_dir)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["board_size"] == "0" and rows[0]["train_kd_loss"] == ""   # epoch 1: CE only, no board
    assert int(rows[1]["board_size"]) == 3 and float(rows[1]["train_kd_loss"]) > 0 and rows[1]["board_val_top1"]
    assert int(rows[2]["meta_updates"]) == 1  # epoch step 2 of 4 (step 0 never updates)
    for epoch in (1, 2, 3):
        record = json.load(open(os.path.join(run_dir, "board", f"epoch-{epoch:04d}.json")))
        assert record["epoch"] == epoch
    with open(os.path.join(run_dir, "board.png"), "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    ckpt = load_checkpoint(os.path.join(run_dir, "last.safetensors"))
    assert ckpt.meta["task"] == "cream_search" and set(ckpt.optimizers) == {"weights", "meta"}
    assert ckpt.model["meta_layer.weight"].dtype == np.float64  # CREAM.META_DTYPE float64
    best = json.load(open(os.path.join(run_dir, "best_path.json")))
    assert best["path"] == ckpt.extra["board"]["entries"][0]["path"]
    log = open(os.path.join(run_dir, "train.log")).read()
    assert "board after epoch 3 (3/3 paths):" in log and "No.0 top-1" in log
    child = os.path.join(run_dir, "child.yaml")
    cfg = load_config(child, [])
    assert C.format_arch_list(C.spec_from_config(cfg).arch_list) == best["arch_list"]
    train_dir = str(tmp_path / "train")
    assert main(["train", child, "--backend", backend_name, "TRAIN.EPOCHS", "1", "TRAIN.MAX_STEPS_PER_EPOCH", "1",
                 "DATA.NUM_VAL", "16", "THREADS", "1", "--output", train_dir]) == 0
    assert load_checkpoint(os.path.join(train_dir, "last.safetensors")).meta["name"] == "cream_searched"


@pytest.mark.parametrize("backend_name", ["torch", "paddle"])
def test_resume_repeats_the_uninterrupted_search(backend_name, tmp_path):
    """Killed after epoch 1 and resumed: the same weights, optimizer slots, board (entries, images, soft targets)
    and metrics rows as the search that ran through."""
    import importlib

    def run(name, resume="", hooks=()):
        cfg = load_config(SEARCH, TINY + ["CREAM.PLOT_BOARD", "False", "RESUME", resume])
        spec = C.spec_from_config(cfg)
        be = importlib.import_module(f"{backend_name}_impl.backend").Backend(dtype="float32", threads=1)
        run_dir = str(tmp_path / name)
        engine.prepare_run_dir(run_dir, cfg.RESUME)
        try:
            engine.train(cfg, be, C, spec, run_dir, hooks=hooks, kind="cream_search")
        except _Interrupt:
            pass
        return run_dir

    straight = run("straight")
    resumed = run("resumed", hooks=[_StopAfter()])
    run("resumed", resume="auto")
    a = load_checkpoint(os.path.join(straight, "last.safetensors"))
    b = load_checkpoint(os.path.join(resumed, "last.safetensors"))
    for name in a.model:
        assert np.array_equal(a.model[name], b.model[name]), name
    for opt in ("weights", "meta"):
        for slot, per in a.optimizers[opt].slots.items():
            for name in per:
                assert np.array_equal(per[name], b.optimizers[opt].slots[slot][name]), (opt, slot, name)
    assert a.extra == b.extra and len(a.extra["board"]["entries"]) == 3
    assert set(a.extra_arrays) == set(b.extra_arrays) and len(a.extra_arrays) == 6
    for name in a.extra_arrays:
        assert np.array_equal(a.extra_arrays[name], b.extra_arrays[name]), name
    timing = ("images_per_s", "epoch_seconds")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(rows_of(resumed)) == strip(rows_of(straight))


def test_an_upstream_supernet_state_dict_loads_by_name(tmp_path, capsys):
    """A torch ``state_dict`` of upstream's SuperNet (its key names, ``num_batches_tracked`` included) starts a
    search through MODEL.WEIGHTS."""
    import torch

    cfg = load_config(SEARCH, ["CREAM.STA_NUM", "[1, 1, 2, 1, 1]"])
    spec = C.spec_from_config(cfg)
    state = C.init_state(spec, np.random.default_rng(4))
    upstream = {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}
    for name in [k for k in state if k.endswith(".running_mean")]:
        upstream[name.replace("running_mean", "num_batches_tracked")] = torch.tensor(7)
    path = str(tmp_path / "supernet.pth")
    torch.save(upstream, path)
    run_dir = str(tmp_path / "run")
    assert main(["search", SEARCH, "--backend", "paddle", *TINY, "TRAIN.EPOCHS", "1", "TRAIN.MAX_STEPS_PER_EPOCH",
                 "1", "MODEL.WEIGHTS", path, "--output", run_dir]) == 0
    assert "initial weights: " + path in open(os.path.join(run_dir, "train.log")).read()
