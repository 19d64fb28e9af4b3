"""PC-DARTS evaluation networks through the real commands: a short run on the built-in digits learns on both
backends (auxiliary head, drop path ramped by epoch, clip, weight decay on every parameter), an interrupted run
resumes to the uninterrupted one bit for bit, a searched genotype JSON trains, and test/infer take the weights."""
import csv
import json
import os

import numpy as np
import pytest

from common import engine
from common.checkpoint import load_checkpoint
from tools.main import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "pcdarts_cifar_digits.yaml")
SMALL = ["PCDARTS.INIT_CHANNELS", "8", "PCDARTS.LAYERS", "5", "TRAIN.EPOCHS", "2", "TRAIN.MAX_STEPS_PER_EPOCH", "25",
         "DATA.NUM_VAL", "128", "THREADS", "1", "MODEL.DROP_PATH", "0.2"]


def rows_of(run_dir):
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("backend", ["torch", "paddle"])
def test_a_short_run_learns_and_its_weights_test_and_infer(backend, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    assert main(["train", CONFIG, "--backend", backend, *SMALL, "--output", run_dir]) == 0
    rows = rows_of(run_dir)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    top1 = float(rows[-1]["val_top1"])
    assert top1 > 40.0, f"val top-1 {top1}% after 50 steps (chance 10%)"
    print(f"\n{backend}: val top-1 {top1:.1f}% after 50 steps of C=8, 5 cells on the digits (chance 10%)")
    ckpt = load_checkpoint(os.path.join(run_dir, "last.safetensors"))
    assert ckpt.meta["family"] == "pcdarts" and ckpt.meta["name"] == "pcdarts_cifar"
    assert any(k.startswith("auxiliary_head.") for k in ckpt.model)
    out = str(tmp_path / "test")
    assert main(["test", CONFIG, "--backend", backend, *SMALL, "MODEL.WEIGHTS",
                 os.path.join(run_dir, "best.safetensors"), "--output", out]) == 0
    assert json.load(open(os.path.join(out, "test_results.json")))["top1"] == pytest.approx(top1, abs=1e-3)
    batch = str(tmp_path / "x.npy")
    np.save(batch, np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    assert main(["infer", CONFIG, "--backend", backend, *SMALL, "MODEL.WEIGHTS", os.path.join(run_dir, "last.safetensors"),
                 "--output", str(tmp_path / "infer"), "--inputs", batch]) == 0
    assert np.load(tmp_path / "infer" / "logits.npy").shape == (2, 10)


class _Interrupt(Exception):
    pass


class _StopAfter(engine.Hook):
    def after_epoch(self, loop, row):
        if row["epoch"] == 1:
            raise _Interrupt


@pytest.mark.parametrize("backend", ["torch", "paddle"])
def test_resume_repeats_the_uninterrupted_run(backend, tmp_path):
    """Drop path ramps with the epoch (set_epoch), so a resumed run must get the ramp right to match."""
    import importlib

    from common.config import load_config
    from common.specs import pcdarts

    def run(name, resume="", hooks=()):
        cfg = load_config(CONFIG, SMALL + ["TRAIN.MAX_STEPS_PER_EPOCH", "4", "DATA.NUM_VAL", "32",
                                           "TRAIN.EPOCHS", "3", "RESUME", resume])
        spec = pcdarts.spec_from_config(cfg)
        be = importlib.import_module(f"{backend}_impl.backend").Backend(threads=1)
        run_dir = str(tmp_path / name)
        engine.prepare_run_dir(run_dir, cfg.RESUME)
        try:
            engine.train(cfg, be, pcdarts, spec, run_dir, hooks=hooks)
        except _Interrupt:
            pass
        return run_dir

    straight = run("straight")
    resumed = run("resumed", hooks=[_StopAfter()])
    assert [r["epoch"] for r in rows_of(resumed)] == ["1"]
    run("resumed", resume="auto")
    a = load_checkpoint(os.path.join(straight, "last.safetensors"))
    b = load_checkpoint(os.path.join(resumed, "last.safetensors"))
    assert a.meta["epoch"] == b.meta["epoch"] == 3
    for name in a.model:
        assert np.array_equal(a.model[name], b.model[name]), name
    for slot, per in a.optimizer.slots.items():
        for name in per:
            assert np.array_equal(per[name], b.optimizer.slots[slot][name]), (slot, name)
    timing = ("images_per_s", "epoch_seconds")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(rows_of(resumed)) == strip(rows_of(straight))


def test_a_genotype_json_trains(tmp_path, capsys):
    """`search` writes a genotype JSON; PCDARTS.GENOTYPE takes it by path (here: DARTS_V2 written as that JSON)."""
    from common.specs import pcdarts

    path = str(tmp_path / "genotype.json")
    pcdarts.save_genotype(pcdarts.genotype_by_name("DARTS_V2"), path)
    assert main(["info", CONFIG, "--backend", "torch", "PCDARTS.GENOTYPE", path]) == 0
    shown = capsys.readouterr().out
    assert "matches the spec" in shown and "without the auxiliary head" in shown
    run_dir = str(tmp_path / "run")
    assert main(["train", CONFIG, "--backend", "paddle", *SMALL, "TRAIN.EPOCHS", "1", "TRAIN.MAX_STEPS_PER_EPOCH", "2",
                 "PCDARTS.GENOTYPE", path, "--output", run_dir]) == 0
    assert load_checkpoint(os.path.join(run_dir, "last.safetensors")).meta["config"]["PCDARTS"]["GENOTYPE"] == path
