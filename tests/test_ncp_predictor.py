"""NCP's accuracy predictor: the spec (upstream's counts and names, the table's statistics), the twins, and training
through the real commands on both backends (learns, picks `best` by the lowest main-metric MAE, tests, resumes bit
for bit)."""
import csv
import importlib
import json
import os

import numpy as np
import pytest

from common import engine
from common.checkpoint import load_checkpoint
from common.config import load_config
from common.data import nasbench_mr as tables
from common.specs import ncp
from tools.main import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "ncp_predictor_seg.yaml")
SMALL = ["TRAIN.EPOCHS", "3", "DATA.NUM_TRAIN", "512", "DATA.NUM_VAL", "256", "THREADS", "1"]


def rows_of(run_dir):
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("setting,params", [("seg", 107_835), ("cls-50-1000", 107_706), ("video", 107_706),
                                            ("nas-bench-201", None)])
def test_spec_counts_names_and_statistics(setting, params):
    spec = ncp.predictor_spec(setting)
    table = tables.load_table(setting)
    assert spec.metrics == tables.metric_names(setting)
    assert spec.input_dim == table.features.shape[1]
    if params is not None:  # upstream's MLP parameter counts (research §4)
        assert ncp.count_params(spec) == params
    mean, std = tables.zscore_stats(table.features)
    np.testing.assert_array_equal(np.asarray(spec.input_mean), mean)
    np.testing.assert_array_equal(np.asarray(spec.input_std), std)
    assert spec.dropouts[-1] == 0.0 and all(p == 0.5 for p in spec.dropouts[:-1])
    shapes = ncp.expected_state_shapes(spec)
    assert shapes["fc.1.weight"] == (256, spec.input_dim)
    assert shapes[f"nets.{len(spec.groups) - 1}.4.weight"] == (len(spec.groups[-1]), 128)


@pytest.mark.parametrize("backend", ["torch", "paddle"])
def test_twin_names_params_and_normalised_input(backend):
    be = importlib.import_module(f"{backend}_impl.backend").Backend(dtype="float64", threads=1)
    spec = ncp.predictor_spec("seg")
    model = be.build_model("ncp", spec)
    assert be.expected_shapes(model) == ncp.expected_state_shapes(spec)
    assert be.count_parameters(model) == ncp.count_params(spec)
    be.load_neutral(model, ncp.init_state(spec, np.random.default_rng(0), np.float64))
    codes = tables.load_table("seg").features[:8]
    out = be.eval_logits(model, codes)
    assert out.shape == (8, 5) and np.isfinite(out).all()
    # forward(codes) = forward_normalised((codes - mean) / std)
    z = (codes - np.asarray(spec.input_mean)) / np.asarray(spec.input_std)
    with (importlib.import_module("torch").no_grad() if backend == "torch"
          else importlib.import_module("paddle").no_grad()):
        direct = be.to_numpy(model.forward_normalised(be.to_tensor(z)))
    np.testing.assert_allclose(out, direct, rtol=1e-12, atol=1e-12)


def test_a_checkpoint_from_another_table_is_refused():
    """Every NAS-Bench-MR table holds the same codes (same input statistics), so the metric statistics tell them
    apart; the check runs whenever MODEL.WEIGHTS is loaded."""
    seg, seg4x = ncp.predictor_spec("seg"), ncp.predictor_spec("seg-4x")
    assert seg.input_mean == seg4x.input_mean and seg.output_mean != seg4x.output_mean
    ncp.check_weights(seg, ncp.stats_state(seg, np.float64), "seg.safetensors")
    with pytest.raises(ValueError, match="seg4x.safetensors: its output_mean differs.*'seg' table"):
        ncp.check_weights(seg, ncp.stats_state(seg4x, np.float64), "seg4x.safetensors")


def test_table_rows_are_the_split_and_the_zscored_metrics():
    cfg = load_config(CONFIG)
    from common.data.build import build_dataset

    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert (len(train), len(val)) == (2005, 502)
    table = tables.load_table("seg")
    _, val_idx = tables.split_indices(2507, 233, 0.2)
    code, target = val[0]
    np.testing.assert_array_equal(code, table.features[val_idx[0]].astype(np.float32))
    mean, std = tables.zscore_stats(table.targets)
    np.testing.assert_allclose(target, (table.targets[val_idx[0]] - mean) / std, rtol=1e-6)
    assert target.dtype == np.float32


@pytest.mark.parametrize("backend", ["torch", "paddle"])
def test_training_learns_picks_the_lowest_mae_and_tests(backend, tmp_path):
    run_dir = str(tmp_path / "run")
    assert main(["train", CONFIG, "--backend", backend, *SMALL, "--output", run_dir]) == 0
    rows = rows_of(run_dir)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    maes = [float(r["val_mae_mIoU"]) for r in rows]
    tau = float(rows[-1]["val_tau_mIoU"])
    assert tau > 0.4, f"Kendall tau {tau} of the predicted mIoU after 3 short epochs"
    best = load_checkpoint(os.path.join(run_dir, "best.safetensors"))
    assert best.meta["best"] == pytest.approx(min(maes))
    assert set(ncp.STAT_NAMES) <= set(best.model)
    out = str(tmp_path / "test")
    assert main(["test", CONFIG, "--backend", backend, *SMALL, "MODEL.WEIGHTS",
                 os.path.join(run_dir, "best.safetensors"), "--output", out]) == 0
    result = json.load(open(os.path.join(out, "test_results.json")))
    assert result["mae_mIoU"] == pytest.approx(min(maes), rel=1e-5)
    print(f"\n{backend}: held-out mIoU MAE {min(maes):.3f}, tau {tau:.3f} after 3 epochs on 512 rows")


class _Interrupt(Exception):
    pass


class _StopAfter(engine.Hook):
    def after_epoch(self, loop, row):
        if row["epoch"] == 1:
            raise _Interrupt


@pytest.mark.parametrize("backend", ["torch", "paddle"])
def test_resume_repeats_the_uninterrupted_run(backend, tmp_path):
    """The one-cycle LR and Adam's beta1 cycle are functions of the update count, so a resumed run matches."""
    def run(name, resume="", hooks=()):
        cfg = load_config(CONFIG, SMALL + ["RESUME", resume])
        spec = ncp.spec_from_config(cfg)
        be = importlib.import_module(f"{backend}_impl.backend").Backend(threads=1)
        run_dir = str(tmp_path / name)
        engine.prepare_run_dir(run_dir, cfg.RESUME)
        try:
            engine.train(cfg, be, ncp, spec, run_dir, hooks=hooks, kind="ncp_predictor")
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
    timing = ("images_per_s", "epoch_seconds")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(rows_of(resumed)) == strip(rows_of(straight))


def test_a_wrong_setting_or_dataset_is_one_line(tmp_path, capsys):
    assert main(["train", CONFIG, "--backend", "torch", "NCP.SETTING", "kitti", "--output", str(tmp_path / "a")]) == 2
    assert "NCP.SETTING = 'kitti'" in capsys.readouterr().err
    assert main(["train", CONFIG, "--backend", "torch", "DATA.DATASET", "builtin_digits",
                 "--output", str(tmp_path / "b")]) == 2
    assert "DATA.DATASET nasbench_mr" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")
