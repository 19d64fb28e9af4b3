"""Multi-process runs on CPU (gloo): 2 processes x 16 images equal 1 process x 32 on each backend's own launcher.

``torchrun`` and ``python -m paddle.distributed.launch`` start two workers of ``tools/main.py`` on localhost; one
process runs the same config with the doubled batch in-process.  Everything runs in float64 with
``TRAIN.SYNC_BN`` (the BN statistics of the global batch), so the comparison shows the structure: the gradients
averaged over the ranks, the rank-strided shards whose union is the one-process batch, the Cream board built from the
global batch's rows, the PC-DARTS unrolled step of the global batch.  Compared: every weight and BN statistic
(``max|a - b| <= 1e-9 x max(1, max|a|)``), the optimizers' slots, a search's board / genotype history, and
metrics.csv (the epoch statistics summed over ranks; evaluation unsharded).  Also: the environment a launcher sets,
only rank 0 writing, a launch with the wrong engine refused in one line, resuming with another world size, and a
killed worker stopping the run instead of hanging it.
"""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from common.checkpoint import load_checkpoint
from common.distributed import World, world_from_env
from tools.main import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "tools", "main.py")
COMMON = ["DTYPE", "float64", "TRAIN.SYNC_BN", "True", "THREADS", "1", "TRAIN.EPOCHS", "2"]
RUNS = {
    "cream14": ("train", "cream14_digits.yaml",
                ["MODEL.DROPOUT", "0", "TRAIN.MAX_STEPS_PER_EPOCH", "3", "DATA.NUM_TRAIN", "256", "DATA.NUM_VAL", "64"]),
    "cream_search": ("search", "cream_search_digits.yaml",
                     ["TRAIN.MAX_STEPS_PER_EPOCH", "5", "DATA.NUM_TRAIN", "320", "DATA.NUM_VAL", "64",
                      "CREAM.META_START_EPOCH", "0", "CREAM.UPDATE_ITER", "2", "CREAM.POOL_SIZE", "3",
                      "CREAM.STA_NUM", "[1, 1, 2, 1, 1]", "DATA.IMAGE_SIZE", "48", "CREAM.PLOT_BOARD", "False"]),
    "pcdarts_search": ("search", "pcdarts_search_digits.yaml",
                       ["PCDARTS.INIT_CHANNELS", "8", "PCDARTS.LAYERS", "3", "DATA.NUM_TRAIN", "256",
                        "DATA.IMAGE_SIZE", "16", "TRAIN.MAX_STEPS_PER_EPOCH", "2", "PCDARTS.ARCH_START_EPOCH", "1",
                        "PCDARTS.PLOT_CELLS", "False"]),
}


def launch(backend: str, argv, tmp_path, nproc: int = 2, timeout: float = 300.0) -> subprocess.CompletedProcess:
    """``argv`` of tools/main.py in ``nproc`` workers started by the backend's own launcher."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    if backend == "torch":  # a free port: a previous launch's socket may still hold torchrun's default 29500
        cmd = [sys.executable, "-m", "torch.distributed.run", "--master_port", str(free_port()), "--nproc_per_node",
               str(nproc), MAIN, *argv]
    else:
        cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc), "--log_dir",
               str(tmp_path / "launch_logs"), MAIN, *argv]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_logs(tmp_path) -> str:
    folder = tmp_path / "launch_logs"
    return "".join(p.read_text(errors="replace") for p in sorted(folder.glob("workerlog.*"))) if folder.is_dir() else ""


def children_running(parent: int, script: str):
    """PIDs of ``parent``'s child processes whose command line holds ``script`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and script in cmdline:
            out.append(int(entry))
    return sorted(out)


def rows_of(run_dir):
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as handle:
        return list(csv.DictReader(handle))


def assert_same_run(one: str, two: str, what: str) -> float:
    a, b = load_checkpoint(os.path.join(one, "last.safetensors")), load_checkpoint(os.path.join(two, "last.safetensors"))
    assert set(a.model) == set(b.model)
    worst = 0.0
    for name in a.model:
        diff = float(np.max(np.abs(a.model[name] - b.model[name])))
        scale = max(1.0, float(np.max(np.abs(a.model[name]))))
        worst = max(worst, diff / scale)
        assert diff <= 1e-9 * scale, f"{what}: {name} differs by {diff:.3g}"
    for opt, state in a.optimizers.items():
        for slot, per in state.slots.items():
            for name, arr in per.items():
                other = np.asarray(b.optimizers[opt].slots[slot][name], np.float64)
                diff = float(np.max(np.abs(np.asarray(arr, np.float64) - other))) if np.size(arr) else 0.0
                assert diff <= 1e-9 * max(1.0, float(np.max(np.abs(arr))) if np.size(arr) else 1.0), \
                    f"{what}: {opt} {slot} {name} differs by {diff:.3g}"
    assert a.extra == b.extra, f"{what}: the search state (board / genotypes) differs"
    for name in a.extra_arrays:
        assert np.max(np.abs(a.extra_arrays[name] - b.extra_arrays[name])) <= 1e-9, name
    skip = ("images_per_s", "epoch_seconds")
    ra, rb = rows_of(one), rows_of(two)
    assert [r["epoch"] for r in ra] == [r["epoch"] for r in rb]
    for x, y in zip(ra, rb):
        for key in x:
            if key in skip or x[key] == "":
                assert key in skip or y[key] == "", (what, key)
                continue
            assert float(x[key]) == pytest.approx(float(y[key]), rel=1e-9, abs=1e-9), (what, key, x[key], y[key])
    return worst


# ------------------------------------------------------------------------------------------------ the environment
def test_world_from_the_launchers_environment():
    assert world_from_env({}) == World()
    assert world_from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == World(2, 4, 0, "torchrun")
    paddle = world_from_env({"PADDLE_TRAINERS_NUM": "2", "PADDLE_TRAINER_ID": "1"})
    assert paddle == World(1, 2, 1, "paddle.distributed.launch") and not paddle.is_main and paddle.distributed
    with pytest.raises(ValueError, match="rank 3 of world size 2"):
        world_from_env({"WORLD_SIZE": "2", "RANK": "3"})
    with pytest.raises(ValueError, match="WORLD_SIZE = 'two'"):
        world_from_env({"WORLD_SIZE": "two"})


def test_a_backend_started_by_the_other_launcher_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "2")
    monkeypatch.setenv("PADDLE_TRAINER_ID", "0")
    code = main(["train", os.path.join(ROOT, "configs", "cream14_digits.yaml"), "--backend", "torch", "--output",
                 str(tmp_path / "run"), "DATA.DATASET", "synthetic", "DATA.IMAGE_SIZE", "32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--backend torch was started by paddle.distributed.launch: launch it with torchrun" in err[0]


# ------------------------------------------------------------------------------------------------ 2 x 16 == 1 x 32
@pytest.mark.parametrize("backend,kind", [("torch", "cream14"), ("paddle", "cream14"), ("torch", "cream_search"),
                                          ("paddle", "cream_search"), ("torch", "pcdarts_search"),
                                          ("paddle", "pcdarts_search")])
def test_two_processes_equal_one_with_the_same_global_batch(backend, kind, tmp_path):
    command, config, extra = RUNS[kind]
    if kind == "pcdarts_search":  # the second-order architect on torch (its unrolled step is averaged over ranks)
        extra = extra + ["PCDARTS.UNROLLED", str(backend == "torch")]
    cfg = os.path.join(ROOT, "configs", config)
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    assert main([command, cfg, "--backend", backend, "--output", one, *COMMON, *extra, "DATA.BATCH_SIZE", "32"]) == 0
    done = launch(backend, [command, cfg, "--backend", backend, "--output", two, *COMMON, *extra,
                            "DATA.BATCH_SIZE", "16"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:] + worker_logs(tmp_path)[-3000:]
    worst = assert_same_run(one, two, f"{backend} {kind}")
    log = open(os.path.join(two, "train.log")).read()
    assert "2 processes" in log and "global batch 32" in log
    assert not [p for p in os.listdir(two) if p.startswith("train.log.")]  # one writer
    print(f"\n{backend} {kind}: 2 x 16 vs 1 x 32, worst weight difference {worst:.2e} (relative to max(1, scale))")


def test_resume_with_another_world_size(tmp_path):
    """Two processes write epoch 1; one process resumes to epoch 2: the same metrics rows as a run that went
    straight through in one process (float64, within 1e-9)."""
    command, config, extra = RUNS["cream14"]
    cfg = os.path.join(ROOT, "configs", config)
    straight, mixed = str(tmp_path / "straight"), str(tmp_path / "mixed")
    assert main([command, cfg, "--backend", "torch", "--output", straight, *COMMON, *extra,
                 "DATA.BATCH_SIZE", "32"]) == 0
    done = launch("torch", [command, cfg, "--backend", "torch", "--output", mixed, *COMMON, *extra,
                            "DATA.BATCH_SIZE", "16", "TRAIN.EPOCHS", "1"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert main([command, cfg, "--backend", "torch", "--output", mixed, *COMMON, *extra, "DATA.BATCH_SIZE", "32",
                 "RESUME", "auto"]) == 0
    assert_same_run(straight, mixed, "resumed with one process")


@pytest.mark.parametrize("backend", ["torch", "paddle"])
def test_a_killed_worker_stops_the_run(backend, tmp_path):
    """SIGKILL one of two workers mid-run: the launcher stops the other and exits non-zero well before the run
    could have finished (no hang)."""
    command, config, extra = RUNS["cream14"]
    argv = [command, os.path.join(ROOT, "configs", config), "--backend", backend, "--output", str(tmp_path / "run"),
            *COMMON, *extra, "TRAIN.EPOCHS", "200", "TRAIN.MAX_STEPS_PER_EPOCH", "0", "DATA.BATCH_SIZE", "16",
            "DIST_TIMEOUT_S", "60"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    launcher = (["torch.distributed.run", "--master_port", str(free_port())] if backend == "torch"
                else ["paddle.distributed.launch", "--log_dir", str(tmp_path / "launch_logs")])
    proc = subprocess.Popen([sys.executable, "-m", *launcher, "--nproc_per_node", "2", MAIN, *argv],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        workers = []
        while time.time() < deadline and len(workers) < 2:
            time.sleep(1.0)
            workers = children_running(proc.pid, MAIN)
        assert len(workers) == 2, "the two workers did not start"
        time.sleep(8.0)  # inside the training loop
        os.kill(workers[1], signal.SIGKILL)
        started = time.time()
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode != 0, out[-2000:]
        print(f"\n{backend}: the launcher stopped {time.time() - started:.1f} s after a worker was killed")
    finally:
        if proc.poll() is None:
            proc.kill()
