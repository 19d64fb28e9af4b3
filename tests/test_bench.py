"""Smoke tests of the benchmark harness and the `bench` command (output format, finite figures).

No timing is asserted anywhere: the figures depend on the machine and its load.  The numpy test checks the
harness mechanics (one worker per contender, interleaved rounds, ratios, peak memory, a failing contender
reported without stopping the others); the command test runs the Cream benchmark on a tiny config with one
warmup and two timed steps and checks the table, the CSV and the JSON.
"""
import csv
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import harness  # noqa: E402  (numpy only)


def _finite_positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _numpy(name, **kwargs):
    return harness.Contender(name=name, framework="numpy", factory="bench.harness:numpy_selftest", kwargs=kwargs)


def test_settings_split_iterations_into_rounds():
    assert harness.Settings(iters=10, rounds=3).round_sizes() == [4, 3, 3]
    assert harness.Settings(iters=2, rounds=5).round_sizes() == [1, 1]
    assert harness.Settings(iters=1, rounds=1).round_sizes() == [1]


def test_harness_times_contenders_in_worker_processes(tmp_path):
    contenders = [_numpy("small", size=32), _numpy("large", size=128), _numpy("broken", fail="step"),
                  _numpy("unbuildable", fail="setup")]
    settings = harness.Settings(warmup=1, iters=4, rounds=2, threads=1, log_dir=str(tmp_path), quiet=True,
                                setup_timeout_s=120, step_timeout_s=120)
    rows = harness.measure(contenders, [harness.Workload("eval", 3)], settings, baseline="small",
                           extra={"family": "selftest"})
    by = {r["contender"]: r for r in rows}
    assert set(by) == {"small", "large", "broken", "unbuildable"}
    for name in ("small", "large"):
        r = by[name]
        assert not r["error"], r["error"]
        assert r["family"] == "selftest" and r["mode"] == "eval" and r["batch"] == 3 and r["threads"] == 1
        assert r["iters"] == 4 and r["rounds"] == 2
        for key in ("img_s", "img_s_p25", "img_s_p75", "ms_step", "ms_min", "first_ms", "peak_mb", "ratio",
                    "ratio_lo", "ratio_hi", "setup_s"):
            assert _finite_positive(r[key]), (name, key, r[key])
        assert r["img_s_p25"] <= r["img_s"] <= r["img_s_p75"]
        assert math.isclose(r["img_s"] * r["ms_step"] / 1e3, 3.0, rel_tol=1e-9)
        assert r["step_mb"] >= 0.0 and math.isfinite(r["step_mb"])
    assert by["small"]["ratio"] == 1.0 and by["small"]["out_max_abs"] == 0.0
    assert by["large"]["out_max_abs"] is None  # outputs of another shape are not compared
    assert "asked to fail in a step" in by["broken"]["error"]
    assert "asked to fail in setup" in by["unbuildable"]["error"]
    # a log file per contender and workload
    assert os.path.isfile(tmp_path / "small_eval_bs3.log")

    table = harness.format_table(rows)
    assert "1.00x base" in table and "FAILED" in table and "failures" in table
    lines = list(csv.DictReader(harness.rows_to_csv(rows).splitlines()))
    assert [line["contender"] for line in lines] == ["small", "large", "broken", "unbuildable"]
    assert list(lines[0]) == list(harness.CSV_COLUMNS)
    assert harness.ratio_of(rows, "eval", 3, "large", "small") == by["large"]["img_s"] / by["small"]["img_s"]
    assert harness.ratio_of(rows, "eval", 3, "broken", "small") is None


def test_unknown_baseline_and_repeated_names_are_refused(tmp_path):
    settings = harness.Settings(warmup=0, iters=1, rounds=1, log_dir=str(tmp_path), quiet=True)
    with pytest.raises(harness.BenchError, match="baseline"):
        harness.measure([_numpy("a")], [harness.Workload("eval", 1)], settings, baseline="b")
    with pytest.raises(harness.BenchError, match="repeat"):
        harness.measure([_numpy("a"), _numpy("a")], [harness.Workload("eval", 1)], settings, baseline="a")


def test_unknown_contender_is_named():
    from bench import cream

    with pytest.raises(harness.BenchError, match="torch\\+bogus"):
        cream.make_contender("torch+bogus", "cfg.yaml")
    with pytest.raises(harness.BenchError, match="jax"):
        cream.make_contender("jax", "cfg.yaml")


def test_bench_command_on_a_tiny_cream_config(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "_BASE_: " + os.path.join(ROOT, "configs", "cream14.yaml") + "\n"
        "MODEL:\n  NUM_CLASSES: 10\n"
        "DATA:\n  IMAGE_SIZE: 32\n"
        "BENCH:\n  QUICK: true\n  THREADS: 1\n  BATCH_SIZES: [2]\n  TRAIN_BATCH_SIZES: [2]\n"
        "  CONTENDERS: [timm, torch, paddle]\n"
    )
    out_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "main.py"), "bench", str(cfg),
                           "--output", str(out_dir)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    text = proc.stdout
    assert "Cream cream14 at 32 px" in text and "1.00x base" in text and "goals" in text
    assert "torch twin >= 1.0x timm" in text and "paddle twin >= 0.8x torch twin" in text

    report = json.loads((out_dir / "bench" / "bench.json").read_text())
    rows = report["rows"]
    assert {(r["mode"], r["contender"]) for r in rows} == {
        (m, c) for m in ("train", "eval") for c in ("timm", "torch", "paddle")}
    for r in rows:
        assert not r["error"], r["error"]
        assert r["family"] == "cream" and r["net"] == "cream14" and r["image_size"] == 32 and r["batch"] == 2
        assert r["iters"] == 2 and r["threads"] == 1
        for key in ("img_s", "ms_step", "peak_mb", "ratio", "first_ms"):
            assert _finite_positive(r[key]), (r["contender"], r["mode"], key, r[key])
        assert r["params"] == rows[0]["params"]          # timm's model has the twin's parameter count
        if r["mode"] == "eval":                          # same weights, same batch: the same logits
            assert r["out_max_abs"] is not None and r["out_max_abs"] < 1e-3
    assert {g["goal"] for g in report["goals"]} == {"torch twin >= 1.0x timm", "paddle twin >= 0.8x torch twin"}
    with open(out_dir / "bench" / "bench.csv", newline="") as handle:
        lines = list(csv.DictReader(handle))
    assert len(lines) == 6 and all(float(line["img_s"]) > 0 for line in lines)


def test_bench_command_on_a_tiny_pcdarts_config(tmp_path):
    """The PC-DARTS benchmark: the twins' training step (aux head, drop path, clip) side by side, one run."""
    cfg = tmp_path / "tiny_pcdarts.yaml"
    cfg.write_text(
        "_BASE_: " + os.path.join(ROOT, "configs", "pcdarts_cifar10.yaml") + "\n"
        "PCDARTS:\n  INIT_CHANNELS: 8\n  LAYERS: 5\n"
        "BENCH:\n  QUICK: true\n  THREADS: 1\n  TRAIN_BATCH_SIZES: [4]\n"
    )
    out_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "main.py"), "bench", str(cfg),
                           "--output", str(out_dir)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PC-DARTS pcdarts_cifar (PCDARTS cell, C=8, 5 cells, auxiliary head on) at 32 px" in proc.stdout
    assert "paddle twin >= 0.8x torch twin" in proc.stdout
    rows = json.loads((out_dir / "bench" / "bench.json").read_text())["rows"]
    assert {(r["mode"], r["contender"]) for r in rows} == {("train", "torch"), ("train", "paddle")}
    for r in rows:
        assert not r["error"], r["error"]
        assert r["family"] == "pcdarts" and r["batch"] == 4 and _finite_positive(r["img_s"])


# ------------------------------------------------------------------------------------------------ PC-DARTS search
def _tiny_search_config(tmp_path, **bench):
    """The search network of pcdarts_search_cifar10.yaml made tiny (C=8, 5 cells); BENCH keys from ``bench``."""
    cfg = tmp_path / "tiny_search.yaml"
    cfg.write_text(
        "_BASE_: " + os.path.join(ROOT, "configs", "pcdarts_search_cifar10.yaml") + "\n"
        "PCDARTS:\n  INIT_CHANNELS: 8\n  LAYERS: 5\n"
        + ("BENCH:\n" + "".join(f"  {k}: {v}\n" for k, v in bench.items()) if bench else "")
    )
    return str(cfg)


def test_pcdarts_search_modes_time_both_twins(tmp_path):
    """weight / arch1 / arch2 of the search network, torch and paddle twins, one warmup and two timed steps each:
    rows with finite times and peaks, the weight count of the spec, the same first-order steps in both twins."""
    from bench import pcdarts
    from common.config import load_config
    from common.specs import pcdarts as P

    cfg_path = _tiny_search_config(tmp_path)
    contenders = [pcdarts.make_contender(n, cfg_path) for n in ("torch", "paddle")]
    settings = harness.Settings(warmup=1, iters=2, rounds=1, threads=1, log_dir=str(tmp_path / "logs"), quiet=True,
                                setup_timeout_s=300, step_timeout_s=300)
    workloads = [harness.Workload(m, 4) for m in pcdarts.SEARCH_MODES]
    rows = harness.measure(contenders, workloads, settings, baseline="torch", extra={"family": "pcdarts"})
    weights = P.count_search_params(P.spec_from_config(load_config(cfg_path)))
    assert {(r["mode"], r["contender"]) for r in rows} == {
        (m, c) for m in ("weight", "arch1", "arch2") for c in ("torch", "paddle")}
    for r in rows:
        assert not r["error"], r["error"]
        assert r["batch"] == 4 and r["iters"] == 2 and r["params"] == weights
        for key in ("img_s", "ms_step", "first_ms", "peak_mb", "ratio"):
            assert _finite_positive(r[key]), (r["contender"], r["mode"], key, r[key])
        assert math.isfinite(r["step_mb"])
        if r["contender"] == "paddle":  # classifier weights (weight) / alphas and betas (arch) after the 3 steps;
            # arch2: the float32 finite difference flips some Adam steps (6e-4 each), so only a loose bound
            bound = {"weight": 1e-3, "arch1": 1e-4, "arch2": 1e-2}[r["mode"]]
            assert r["out_max_abs"] is not None and r["out_max_abs"] < bound, (r["mode"], r["out_max_abs"])
    found = pcdarts.goals(rows)
    assert [(g["mode"], g["goal"]) for g in found] == [
        (m, "paddle twin >= 0.8x torch twin") for m in ("weight", "arch1", "arch2")]
    assert "arch2" in harness.format_table(rows)


def test_pcdarts_search_mode_and_network_must_match(tmp_path):
    from bench import pcdarts

    with pytest.raises(harness.BenchError, match="weight, arch1, arch2"):
        pcdarts._load(_tiny_search_config(tmp_path), "train")
    with pytest.raises(harness.BenchError, match="MODEL.NAME pcdarts_search"):
        pcdarts._load(os.path.join(ROOT, "configs", "pcdarts_cifar10.yaml"), "arch1")


def test_pcdarts_search_goals_include_upstream_speed_and_memory():
    from bench import pcdarts

    def row(contender, img_s, peak):
        return {"mode": "arch1", "batch": 64, "contender": contender, "img_s": img_s, "peak_mb": peak, "error": ""}

    found = pcdarts.goals([row("torch", 20.0, 1000.0), row("paddle", 15.0, 900.0), row("upstream", 16.0, 2000.0)])
    assert [(g["goal"], round(g["value"], 3), g["met"]) for g in found] == [
        ("torch twin >= 1.25x upstream", 1.25, True), ("paddle twin >= 0.8x torch twin", 0.75, False),
        ("torch twin peak memory <= 0.75x upstream", 0.5, True)]


def test_pcdarts_bench_upstream_folder_without_the_search_code_is_one_error_line(tmp_path):
    from bench import pcdarts

    empty = tmp_path / "not_pcdarts"
    empty.mkdir()
    cfg = _tiny_search_config(tmp_path, UPSTREAM=str(empty), CONTENDERS="[torch, paddle, upstream]")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "main.py"), "bench", cfg,
                           "--output", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "BENCH.UPSTREAM" in lines[0] and str(empty) in lines[0], proc.stderr
    assert "model_search.py" in lines[0] and "architect.py" in lines[0]
    with pytest.raises(harness.BenchError, match="BENCH.UPSTREAM is empty"):
        pcdarts.make_contender("upstream", _tiny_search_config(tmp_path))


# ------------------------------------------------------------------------------------------------ NAS-Bench-MR
def test_bench_command_on_a_tiny_nasbench_mr_config(tmp_path):
    """The NAS-Bench-MR benchmark (the seed example's config, bench/nasbench_mr.py) on the quick-start network at
    64 px: train step and eval of both twins in one run, the same logits from the same weights."""
    from common.config import load_config
    from common.specs import nasbench_mr as M

    cfg = tmp_path / "tiny_mrnet.yaml"
    cfg.write_text(
        "_BASE_: " + os.path.join(ROOT, "configs", "mrnet_digits.yaml") + "\n"
        "BENCH:\n  QUICK: true\n  THREADS: 1\n  BATCH_SIZES: [2]\n  TRAIN_BATCH_SIZES: [2]\n"
    )
    out_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "main.py"), "bench", str(cfg),
                           "--output", str(out_dir)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "NAS-Bench-MR mrnet 8_16-1_1_1_16-" in proc.stdout and "(classification head) at 64 px" in proc.stdout
    assert "paddle twin >= 0.8x torch twin" in proc.stdout
    params = M.count_params(M.spec_from_config(load_config(str(cfg))))
    rows = json.loads((out_dir / "bench" / "bench.json").read_text())["rows"]
    assert {(r["mode"], r["contender"]) for r in rows} == {
        (m, c) for m in ("train", "eval") for c in ("torch", "paddle")}
    for r in rows:
        assert not r["error"], r["error"]
        assert r["family"] == "nasbench_mr" and r["image_size"] == 64 and r["batch"] == 2 and r["params"] == params
        for key in ("img_s", "ms_step", "peak_mb", "ratio", "first_ms"):
            assert _finite_positive(r[key]), (r["contender"], r["mode"], key, r[key])
        if r["mode"] == "eval":  # the (N, classes, 1, 1) head flattened to (N, classes) logits in both twins
            assert r["out_max_abs"] is not None and r["out_max_abs"] < 1e-3, r["out_max_abs"]


def test_nasbench_mr_contenders_and_segmentation_train_are_named(tmp_path):
    from bench import nasbench_mr

    with pytest.raises(harness.BenchError, match="torch\\+cl"):
        nasbench_mr.make_contender("torch+cl", "cfg.yaml")
    cfg = tmp_path / "seg.yaml"
    cfg.write_text("_BASE_: " + os.path.join(ROOT, "configs", "mrnet_digits.yaml") + "\n"
                   "NASBENCH_MR:\n  TASK: segmentation\n")
    with pytest.raises(harness.BenchError, match="NASBENCH_MR.TASK is 'segmentation'"):
        nasbench_mr.twin_torch("train", 2, 1, str(cfg))


# ------------------------------------------------------------------------------------------------ NCP predictor
def _ncp_config(tmp_path, **bench):
    cfg = tmp_path / "ncp_bench.yaml"
    cfg.write_text(
        "_BASE_: " + os.path.join(ROOT, "configs", "ncp_predictor_seg.yaml") + "\n"
        "TRAIN:\n  EPOCHS: 3\n"
        + ("BENCH:\n" + "".join(f"  {k}: {v}\n" for k, v in bench.items()) if bench else "")
    )
    return str(cfg)


def test_bench_command_on_the_ncp_predictor(tmp_path):
    """The predictor benchmark (bench/ncp.py): the real task's train_step of both twins and one-epoch steps of a real
    training run (engine.train) in one command; the same steps in both twins; the extrapolated training times."""
    cfg = _ncp_config(tmp_path, QUICK="true", THREADS=1, TRAIN_BATCH_SIZES="[128]",
                      CONTENDERS="[torch, paddle, torch+loop, paddle+loop]")
    out_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "main.py"), "bench", cfg,
                           "--output", str(out_dir)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "NCP predictor on the seg table (2005 train / 502 held-out rows" in text
    assert "a real run: 3 epochs x 16 steps of batch 128" in text and "note:" not in text
    assert "training time for 3 epochs (2005 train rows)" in text
    assert "3 x 16 steps x" in text and "3 epochs x" in text
    assert "paddle twin >= 0.8x torch twin" in text and "paddle loop >= 0.8x torch loop" in text
    rows = {r["contender"]: r for r in json.loads((out_dir / "bench" / "bench.json").read_text())["rows"]}
    assert set(rows) == {"torch", "paddle", "torch+loop", "paddle+loop"}
    for r in rows.values():
        assert not r["error"], r["error"]
        assert r["family"] == "ncp" and r["mode"] == "train" and r["batch"] == 128 and r["image_size"] is None
        assert r["params"] == 107_835
        for key in ("img_s", "ms_step", "peak_mb", "first_ms"):
            assert _finite_positive(r[key]), (r["contender"], key, r[key])
    # the main head's last Linear after the same 3 steps (same batch, same dropout masks) in both twins
    assert rows["paddle"]["out_max_abs"] is not None and rows["paddle"]["out_max_abs"] < 1e-5
    assert rows["torch+loop"]["out_max_abs"] is None  # a loop's output is never compared with a train_step's
    assert "one epoch of engine.train (16 steps of batch 128" in rows["torch+loop"]["note"]


def test_ncp_estimates_and_plan_arithmetic(tmp_path):
    from bench import ncp
    from common.config import load_config

    plan = ncp.training_plan(load_config(_ncp_config(tmp_path)))
    assert plan == {"epochs": 3, "train_rows": 2005, "val_rows": 502, "batch_size": 128, "drop_last": False,
                    "max_steps": 0}
    plan = dict(plan, epochs=200)
    assert ncp.steps_per_epoch(plan, 128) == 16 and ncp.steps_per_epoch(plan, 32) == 63
    assert ncp.steps_per_epoch(dict(plan, drop_last=True), 128) == 15
    assert ncp.steps_per_epoch(dict(plan, max_steps=4), 128) == 4
    rows = [{"mode": "train", "batch": 128, "contender": "torch", "ms_step": 10.0, "error": ""},
            {"mode": "train", "batch": 128, "contender": "paddle+loop", "ms_step": 300.0, "error": ""},
            {"mode": "train", "batch": 128, "contender": "paddle", "error": "boom"},
            {"mode": "eval", "batch": 128, "contender": "torch", "ms_step": 1.0, "error": ""}]
    est = {e["contender"]: e for e in ncp.estimates(rows, plan)}
    assert set(est) == {"torch", "paddle+loop"}
    assert math.isclose(est["torch"]["seconds"], 200 * 16 * 0.010) and not est["torch"]["loop"]
    assert math.isclose(est["paddle+loop"]["seconds"], 200 * 0.300) and est["paddle+loop"]["loop"]


def test_ncp_loop_runs_out_of_epochs_with_one_clear_error(tmp_path):
    """A +loop contender steps through the epochs of one real run; asking for more than TRAIN.EPOCHS is named."""
    from bench import ncp

    with pytest.raises(harness.BenchError, match="mode train only"):
        ncp.twin_torch("eval", 8, 1, _ncp_config(tmp_path), flags=["loop"])
    cfg = tmp_path / "two_epochs.yaml"
    cfg.write_text("_BASE_: " + _ncp_config(tmp_path) + "\nTRAIN:\n  EPOCHS: 2\nDATA:\n  NUM_TRAIN: 256\n")
    import torch

    # in this process: keep the session's thread count (the factory sets it, as a worker does)
    runner = ncp.twin_torch("train", 128, torch.get_num_threads(), str(cfg), flags=["loop"])
    runner.step()
    runner.step()
    with pytest.raises(harness.BenchError, match="ended after its 2 epochs"):
        runner.step()
    assert runner.output().shape == (129,)
    with pytest.raises(harness.BenchError, match="torch\\+bogus"):
        ncp.make_contender("torch+bogus", str(cfg))


# ------------------------------------------------------------------------------------------------ Cream supernet search
def _tiny_supernet_config(tmp_path, **bench):
    """The digits supernet of cream_search_digits.yaml (sta_num 1,2,2,1,1, 32 px, 10 classes) with a board of 3."""
    cfg = tmp_path / "tiny_supernet.yaml"
    cfg.write_text(
        "_BASE_: " + os.path.join(ROOT, "configs", "cream_search_digits.yaml") + "\n"
        "CREAM:\n  POOL_SIZE: 3\n"
        + ("BENCH:\n" + "".join(f"  {k}: {v}\n" for k, v in bench.items()) if bench else "")
    )
    return str(cfg)


def test_bench_command_on_a_tiny_cream_supernet_search(tmp_path, monkeypatch):
    """MODEL.NAME cream_supernet: the search task's train_step with a full board and distillation on (train) and a
    path's evaluation forward (eval), torch vs paddle in one run; then one meta matching update per step (meta)
    through the harness.  The same steps in both twins (classifier / meta layer after the steps, eval logits)."""
    from bench import cream

    cfg = _tiny_supernet_config(tmp_path, QUICK="true", THREADS=1, BATCH_SIZES="[8]", TRAIN_BATCH_SIZES="[8]")
    out_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "main.py"), "bench", cfg,
                           "--output", str(out_dir)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "Cream supernet search (cream_supernet, sta_num [1, 2, 2, 1, 1]" in text and "at 32 px" in text
    assert "board 3 paths x 4 images" in text and "contenders torch, paddle (baseline torch)" in text
    assert "paddle twin >= 0.8x torch twin" in text and "timm" not in text
    rows = json.loads((out_dir / "bench" / "bench.json").read_text())["rows"]
    assert {(r["mode"], r["contender"]) for r in rows} == {
        (m, c) for m in ("train", "eval") for c in ("torch", "paddle")}
    for r in rows:
        assert not r["error"], r["error"]
        assert r["family"] == "cream" and r["net"] == "cream_supernet" and r["image_size"] == 32 and r["batch"] == 8
        assert r["iters"] == 2 and r["params"] == 4_852_819 and "board 3/3" in r["note"]
        for key in ("img_s", "ms_step", "peak_mb", "ratio", "first_ms"):
            assert _finite_positive(r[key]), (r["contender"], r["mode"], key, r[key])
        if r["contender"] == "paddle":  # classifier weights after 3 search steps (LR 0.075; measured 1.7e-5) /
            # the val path's logits (3.8e-10)
            bound = {"train": 1e-3, "eval": 1e-5}[r["mode"]]
            assert r["out_max_abs"] is not None and r["out_max_abs"] < bound, (r["mode"], r["out_max_abs"])

    # meta: the CLI takes it once `meta` is in common/config.BENCH_MODES and bench/harness.MODES
    if "meta" not in harness.MODES:
        monkeypatch.setattr(harness, "MODES", harness.MODES + ("meta",))
    settings = harness.Settings(warmup=0, iters=2, rounds=1, threads=1, log_dir=str(tmp_path / "logs"), quiet=True,
                                setup_timeout_s=300, step_timeout_s=300)
    contenders = [cream.make_contender(n, cfg) for n in ("torch", "paddle")]
    meta = harness.measure(contenders, [harness.Workload("meta", 8)], settings, baseline="torch")
    for r in meta:
        assert not r["error"], r["error"]
        assert _finite_positive(r["ms_step"]) and _finite_positive(r["peak_mb"])
    # the meta layer after 2 updates (which move it by ~1.3e-3): measured 4e-7 apart
    assert meta[1]["out_max_abs"] is not None and meta[1]["out_max_abs"] < 1e-5, meta[1]["out_max_abs"]
    assert [g["mode"] for g in cream.goals(meta)] == ["meta"]


def test_cream_supernet_bench_names_what_it_cannot_run(tmp_path):
    from bench import cream

    cfg = _tiny_supernet_config(tmp_path)
    with pytest.raises(harness.BenchError, match="'timm' has no supernet search"):
        cream.make_contender("timm", cfg)
    with pytest.raises(harness.BenchError, match="'torch\\+cl' has no supernet search"):
        cream.make_contender("torch+cl", cfg)
    with pytest.raises(harness.BenchError, match="mode 'meta' times the supernet search"):
        cream.twin_torch("meta", 8, 1, os.path.join(ROOT, "configs", "cream14_digits.yaml"))
    with pytest.raises(harness.BenchError, match="2 x CREAM.SLICE = 8 images"):
        cream.twin_paddle("meta", 4, 1, cfg)
