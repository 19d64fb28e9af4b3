"""The one loop (``common/engine.py``): a two-optimizer, two-stream task with ``extra`` state resumes exactly; kills at
random moments (during saves too) lose nothing; metrics rows survive resume exactly once; NaN is never scored;
run folders are never overwritten; temporary files of a killed save are cleaned."""
import csv
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from common import engine
from common.checkpoint import (Checkpoint, OptimizerState, load_checkpoint, save_checkpoint)
from tools.main import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import toy_search  # noqa: E402

BACKENDS = ("torch", "paddle")
TIMING = ("images_per_s", "epoch_seconds")
TINY = ["DATA.IMAGE_SIZE", "32", "TRAIN.EPOCHS", "2", "TRAIN.MAX_STEPS_PER_EPOCH", "2", "DATA.NUM_VAL", "32",
        "TRAIN.LOG_INTERVAL", "1", "THREADS", "1"]


def rows_of(run_dir):
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as handle:
        return list(csv.DictReader(handle))


def without_timing(rows):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def state_of(path):
    """Everything a checkpoint carries that must be reproduced: tensors, optimizer slots, extra, history."""
    ckpt = load_checkpoint(path)
    out = {f"model/{k}": v for k, v in ckpt.model.items()}
    for name, opt in ckpt.optimizers.items():
        out[f"optim/{name}/step"] = np.asarray(opt.step)
        for slot, per in opt.slots.items():
            out.update({f"optim/{name}/{slot}/{k}": v for k, v in per.items()})
    history = [{k: v for k, v in row.items() if k not in TIMING} for row in ckpt.meta["history"]]
    return out, ckpt.extra, history, ckpt.meta["epoch"]


def assert_same_run(a_path, b_path):
    a, a_extra, a_hist, a_epoch = state_of(a_path)
    b, b_extra, b_hist, b_epoch = state_of(b_path)
    assert a_epoch == b_epoch
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
    assert a_extra == b_extra and a_hist == b_hist


class Interrupt(Exception):
    pass


class StopAfter(engine.Hook):
    def __init__(self, epoch):
        self.epoch = epoch

    def after_epoch(self, loop, row):
        if row["epoch"] == self.epoch:
            raise Interrupt


def run_toy(backend, run_dir, epochs, stop_after=0):
    """The toy search in-process; ``stop_after``: interrupt right after that epoch is logged."""
    import importlib

    from common.data.build import build_dataset, build_loader

    cfg = toy_search.toy_config(run_dir, epochs)
    be = importlib.import_module(f"{backend}_impl.backend").Backend(dtype="float64", threads=1)
    task = (toy_search.torch_task if backend == "torch" else toy_search.paddle_task)(be, cfg)
    engine.prepare_run_dir(run_dir, cfg.RESUME)
    train_set, search_set = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    streams = {"train": build_loader(cfg, "train", dataset=train_set),
               "search": build_loader(cfg, "train", dataset=search_set)}
    loop = engine.Loop(cfg, be, task, run_dir, streams, engine.build_schedules(cfg, task),
                       build_loader(cfg, "val", dataset=search_set),
                       hooks=[StopAfter(stop_after)] if stop_after else ())
    try:
        loop.run()
    except Interrupt:
        pass
    return loop


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_optimizer_task_resumes_to_the_same_state(backend, tmp_path):
    straight = run_toy(backend, str(tmp_path / "straight"), 5)
    assert straight.task.extra["arch_steps"] == 5 * 4 and len(straight.task.extra["chosen"]) == 5
    run_toy(backend, str(tmp_path / "resumed"), 5, stop_after=2)
    assert [r["epoch"] for r in rows_of(tmp_path / "resumed")] == ["1", "2"]
    resumed = run_toy(backend, str(tmp_path / "resumed"), 5)
    assert resumed.task.extra == straight.task.extra
    assert_same_run(tmp_path / "straight" / "last.safetensors", tmp_path / "resumed" / "last.safetensors")
    rows = rows_of(tmp_path / "resumed")
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4", "5"]  # the resumed epoch's row is kept
    assert without_timing(rows) == without_timing(rows_of(tmp_path / "straight"))
    header = list(rows[0])
    assert header[:3] == ["epoch", "lr", "lr_arch"] and "train_arch_loss" in header and "alpha0" in header
    ckpt = load_checkpoint(str(tmp_path / "resumed" / "last.safetensors"))
    assert sorted(ckpt.optimizers) == ["arch", "weights"] and ckpt.optimizers["arch"].name == "adam"
    assert ckpt.meta["task"] == "toy_search" and len(ckpt.meta["history"]) == 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_at_random_moments_loses_nothing(backend, tmp_path):
    """20 SIGKILLs of a short run (4 of them in the middle of a checkpoint write), each followed by a restart with
    RESUME auto: no temporary file survives a restart, every finished epoch is in metrics.csv exactly once, and
    the final state (weights, both optimizers, extra, history) equals an uninterrupted run's bit for bit."""
    epochs = 8
    script = os.path.join(ROOT, "tests", "toy_search.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def start(run_dir, *more):
        return subprocess.Popen([sys.executable, script, "--backend", backend, "--run-dir", run_dir,
                                 "--epochs", str(epochs), *more], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    reference = str(tmp_path / "reference")
    t0 = time.perf_counter()
    proc = start(reference)
    _, err = proc.communicate(timeout=600)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, err

    run_dir = str(tmp_path / "killed")
    rng = random.Random(20261201)
    kills, in_save, attempts, cleaned = 0, 0, 0, 0
    while kills < 20:
        attempts += 1
        assert attempts < 80, f"only {kills} kills landed in {attempts} starts"
        leftovers_before = [n for n in os.listdir(run_dir) if engine.is_temp_file(n)] if os.path.isdir(run_dir) else []
        logged_before = len(rows_of(run_dir)) if os.path.isfile(os.path.join(run_dir, "metrics.csv")) else 0
        if in_save < 4 and kills % 5 == 4:  # every fifth kill: in the middle of the 1st..3rd write of this start
            proc = start(run_dir, "--kill-in-save", str(1 + in_save % 3))
            _, err = proc.communicate(timeout=600)
            landed = proc.returncode == -signal.SIGKILL
            assert landed or proc.returncode == 0, err
            in_save += landed
        else:
            proc = start(run_dir)
            try:
                _, err = proc.communicate(timeout=rng.uniform(0.3, 1.0) * wall)
                assert proc.returncode == 0, err
                landed = False  # it finished before the kill
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                landed = True
        kills += landed
        for name in os.listdir(run_dir) if os.path.isdir(run_dir) else []:
            if name.endswith(".safetensors"):  # whatever carries a checkpoint's name is a complete checkpoint
                load_checkpoint(os.path.join(run_dir, name))
        if os.path.isfile(os.path.join(run_dir, "metrics.csv")):
            epochs_logged = [r["epoch"] for r in rows_of(run_dir)]
            assert epochs_logged == [str(e) for e in range(1, len(epochs_logged) + 1)], epochs_logged
            if leftovers_before and len(epochs_logged) > logged_before:
                # this start got as far as training, so it removed the temporaries the previous kill left
                assert not any(os.path.exists(os.path.join(run_dir, n)) for n in leftovers_before)
                cleaned += 1
        # (checked before a completed run is cleared below: a start that ran to the end cleaned up too)
        if not landed and os.path.isfile(os.path.join(run_dir, "last.safetensors")):
            last = load_checkpoint(os.path.join(run_dir, "last.safetensors"))
            if last.meta["epoch"] == epochs:  # the run completed: start it over to keep killing
                import shutil

                shutil.rmtree(run_dir)
    assert in_save == 4 and cleaned >= 1  # the in-save kills leave temporaries for the next start to clean
    proc = start(run_dir)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert not [n for n in os.listdir(run_dir) if engine.is_temp_file(n)]
    assert_same_run(os.path.join(reference, "last.safetensors"), os.path.join(run_dir, "last.safetensors"))
    rows = rows_of(run_dir)
    assert [r["epoch"] for r in rows] == [str(e) for e in range(1, epochs + 1)]
    assert without_timing(rows) == without_timing(rows_of(reference))
    print(f"\n{backend}: 20 kills (4 during saves) in {attempts} starts, {cleaned} restarts removed leftover "
          f"temporaries; final state bit-identical")


# ------------------------------------------------------------------------------------------ metrics / checkpoints
def test_metrics_file_keeps_the_resumed_epoch_from_an_old_checkpoint(tmp_path):
    """A checkpoint without a history (written before histories were kept): metrics.csv's own rows up to and
    including the resumed epoch stay."""
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,lr\n1,0.1\n2,0.05\n3,0.01\n")
    kept = engine.MetricsFile(str(path), ["epoch", "lr"], history=None, resume_epoch=2)
    assert [r["epoch"] for r in kept.rows] == ["1", "2"]
    assert path.read_text().splitlines() == ["epoch,lr", "1,0.1", "2,0.05"]


def test_version_1_checkpoints_still_load(tmp_path):
    """Files written before named optimizers: one optimizer, ``__optim__/<slot>/<param>``; it becomes ``weights``."""
    from safetensors.numpy import save_file

    path = str(tmp_path / "v1.safetensors")
    header = {"format": "twinnas-neutral", "format_version": 1, "meta": {"epoch": 3}, "has_ema": False, "rng": None,
              "optimizer": {"name": "sgd", "step": 7, "hyper": {"lr": 0.1}, "slots": ["momentum"]}}
    save_file({"fc.weight": np.ones((2, 3), np.float32), "__optim__/momentum/fc.weight": np.full((2, 3), 2, np.float32)},
              path, metadata={"twinnas": json.dumps(header)})
    ckpt = load_checkpoint(path)
    assert list(ckpt.optimizers) == ["weights"] and ckpt.optimizer.step == 7
    assert np.array_equal(ckpt.optimizer.slots["momentum"]["fc.weight"], np.full((2, 3), 2, np.float32))
    assert ckpt.extra == {} and list(ckpt.model) == ["fc.weight"]


def test_named_optimizers_and_extra_round_trip(tmp_path):
    path = str(tmp_path / "c.safetensors")
    opt = lambda name: OptimizerState(name=name, step=3, slots={"m": {"w": np.arange(3.0)}}, hyper={"lr": 1.0})  # noqa
    save_checkpoint(path, Checkpoint(model={"w": np.zeros(3)}, optimizers={"weights": opt("sgd"), "arch": opt("adam")},
                                     extra={"board": [[0, 1], [2, 3]], "position": 5}))
    back = load_checkpoint(path)
    assert sorted(back.optimizers) == ["arch", "weights"] and back.optimizers["arch"].name == "adam"
    assert np.array_equal(back.optimizers["arch"].slots["m"]["w"], np.arange(3.0))
    assert back.extra == {"board": [[0, 1], [2, 3]], "position": 5}


def test_non_finite_metadata_is_refused_not_written_as_nan(tmp_path):
    from common.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="non-finite"):
        save_checkpoint(str(tmp_path / "n.safetensors"), Checkpoint(model={"w": np.zeros(1)}, meta={"x": float("nan")}))
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------------------------------ NaN is never scored
@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_logits_are_never_a_hit(backend):
    logits = np.array([[np.nan, 0.0, 1.0], [np.nan] * 3, [0.0, 1.0, np.nan], [2.0, 1.0, 0.0]], np.float32)
    labels = np.array([2, 0, 1, 0])
    if backend == "torch":
        import torch

        from torch_impl import losses
        top1, top2 = losses.accuracy_topk(torch.from_numpy(logits), torch.from_numpy(labels), ks=(1, 2))
    else:
        import paddle

        from paddle_impl import losses
        top1, top2 = losses.accuracy_topk(paddle.to_tensor(logits), paddle.to_tensor(labels), ks=(1, 2))
    # row 0: one NaN competitor -> top-1 miss, top-2 hit; row 1: NaN target -> miss; row 2: hit (1 NaN rival) at 2
    assert float(top1) == pytest.approx(25.0) and float(top2) == pytest.approx(75.0)


def digits_run(tmp_path, backend, name="R", *more):
    out = str(tmp_path / name)
    return out, main(["train", "configs/cream14_digits.yaml", "--backend", backend, *TINY, "TRAIN.EMA_DECAY", "0",
                      *more, "--output", out])


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("backend", BACKENDS)
def test_exploding_run_stops_and_keeps_the_good_checkpoints(backend, tmp_path, capsys):
    """The issue's case: one good epoch, then LR 1e6 on resume.  The run stops naming the epoch, before scoring;
    best/last stay the good epoch-1 files; metrics.csv holds epoch 1 only."""
    run_dir, code = digits_run(tmp_path, backend, "R", "TRAIN.EPOCHS", "1")
    assert code == 0
    before = {name: sha(os.path.join(run_dir, name)) for name in ("best.safetensors", "last.safetensors")}
    capsys.readouterr()
    _, code = digits_run(tmp_path, backend, "R", "RESUME", "auto", "OPTIM.LR", "1e6", "TRAIN.EPOCHS", "2")
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "epoch 2" in err and ("non-finite" in err or "NaN or infinite" in err), err
    assert "last good state (epoch 1)" in err
    assert {name: sha(os.path.join(run_dir, name)) for name in before} == before
    assert [r["epoch"] for r in rows_of(run_dir)] == ["1"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_test_command_refuses_to_score_nan_outputs(backend, tmp_path, capsys):
    from common.config import load_config
    from common.specs import cream

    cfg = load_config("configs/cream14_digits.yaml", ["DATA.IMAGE_SIZE", "32"])
    state = cream.init_state(cream.spec_from_config(cfg), np.random.default_rng(0))
    state["classifier.weight"] = np.full_like(state["classifier.weight"], np.nan)
    weights = str(tmp_path / "nan.safetensors")
    save_checkpoint(weights, Checkpoint(model=state, meta={"family": "cream", "name": "cream14"}))
    out = tmp_path / "t"
    code = main(["test", "configs/cream14_digits.yaml", "--backend", backend, "DATA.IMAGE_SIZE", "32", "DATA.NUM_VAL",
                 "16", "TRAIN.EMA_DECAY", "0", "MODEL.WEIGHTS", weights, "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "NaN or infinite for 16 of 16 images" in err and "not scored" in err
    assert not (out / "test_results.json").exists()


# ------------------------------------------------------------------------------------------ run folders
def test_training_again_into_a_run_folder_is_refused(tmp_path, capsys):
    run_dir, code = digits_run(tmp_path, "torch", "R", "TRAIN.EPOCHS", "1")
    assert code == 0
    files = {name: sha(os.path.join(run_dir, name)) for name in os.listdir(run_dir) if name.endswith((".csv", ".safetensors"))}
    capsys.readouterr()
    _, code = digits_run(tmp_path, "torch", "R", "TRAIN.EPOCHS", "1")
    err = capsys.readouterr().err
    assert code == 2 and "already holds a run" in err and "RESUME auto" in err and "--output" in err
    assert {name: sha(os.path.join(run_dir, name)) for name in files} == files


def test_leftover_temporaries_are_removed_on_the_next_start(tmp_path, capsys):
    run_dir, code = digits_run(tmp_path, "torch", "R", "TRAIN.EPOCHS", "1")
    assert code == 0
    # ours (common/io_utils.atomic_path) and the one safetensors writes through before its rename
    for name in (".last.safetensors.k2j3.tmp", ".metrics.csv.x9.tmp", ".tmpgQ2Thr"):
        (tmp_path / "R" / name).write_bytes(b"\0" * 100)
    (tmp_path / "R" / ".tmpnotours.txt").write_bytes(b"kept")
    capsys.readouterr()
    _, code = digits_run(tmp_path, "torch", "R", "TRAIN.EPOCHS", "2", "RESUME", "auto")
    err = capsys.readouterr().err
    assert code == 0 and "removed 3 temporary file(s)" in err
    assert sorted(n for n in os.listdir(run_dir) if n.startswith(".")) == [".tmpnotours.txt"]
    assert [r["epoch"] for r in rows_of(run_dir)] == ["1", "2"]


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p.write_text("x"), "is a file, not a folder"),
    (lambda p: None, "cannot create run folder"),
])
def test_unusable_output_folders_are_named(tmp_path, capsys, make, fragment):
    target = tmp_path / "out"
    make(target)
    if fragment == "cannot create run folder":  # a folder under a file cannot be made
        (tmp_path / "file").write_text("x")
        target = tmp_path / "file" / "run"
    code = main(["train", "configs/cream14_digits.yaml", "--backend", "torch", *TINY, "--output", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and str(target) in err and "Traceback" not in err


def test_default_run_folders_are_numbered_never_reused(tmp_path):
    base = str(tmp_path / "runs" / "cfg")
    assert engine.default_run_dir(base, "") == base
    os.makedirs(base)
    (tmp_path / "runs" / "cfg" / "train.log").write_text("a run that died before its first epoch\n")
    assert engine.default_run_dir(base, "") == base  # nothing to lose there yet
    (tmp_path / "runs" / "cfg" / "metrics.csv").write_text("epoch\n")
    assert engine.default_run_dir(base, "") == base + "-2"
    assert engine.default_run_dir(base, "auto") == base
    os.makedirs(base + "-2")
    (tmp_path / "runs" / "cfg-2" / "last.safetensors").write_bytes(b"x")
    assert engine.default_run_dir(base, "") == base + "-3"
    assert engine.default_run_dir(base, "auto") == base + "-2"


def test_the_quick_start_twice_lands_in_two_folders(tmp_path, monkeypatch, capsys):
    """No --output: the second run of a config goes to runs/<config>-2 (a torch and a paddle run side by side),
    RESUME auto continues the newest."""
    monkeypatch.chdir(tmp_path)
    config = os.path.join(ROOT, "configs", "cream14_digits.yaml")
    for backend in BACKENDS:
        assert main(["train", config, "--backend", backend, *TINY, "TRAIN.EPOCHS", "1"]) == 0
    assert sorted(os.listdir(tmp_path / "runs")) == ["cream14_digits", "cream14_digits-2"]
    assert main(["train", config, "--backend", "torch", *TINY, "RESUME", "auto"]) == 0
    assert [r["epoch"] for r in rows_of(tmp_path / "runs" / "cream14_digits-2")] == ["1", "2"]
    assert [r["epoch"] for r in rows_of(tmp_path / "runs" / "cream14_digits")] == ["1"]
    assert load_checkpoint(str(tmp_path / "runs" / "cream14_digits-2" / "last.safetensors")).meta["backend"] == "torch"
