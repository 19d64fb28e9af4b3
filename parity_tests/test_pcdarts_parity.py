"""PC-DARTS evaluation network, torch vs paddle, through the parity harness (``parity_tests/harness.py``).

A small NetworkCIFAR (C=8, 5 cells, reductions at cells 1 and 3, PCDARTS genotype, aux head after cell 3) with drop
path 0.2 (numpy masks from a shared ``MaskSource``), one set of float64 weights (``init_state`` with perturbed BN),
the same batches: every submodule output in eval and train mode, the loss (CE + 0.4 x aux CE), every output and
parameter gradient, then 5 SGD steps through the real classification task (``backend.make_trainer``: momentum 0.9,
weight decay 3e-4 on every parameter as upstream, global-norm clip 5, LR 0.025) with every weight, update, BN running
statistic and momentum slot compared.  Verdicts are the harness's (never loosened): float64 ``max_abs <= 1e-10 *
max(1, scale)``; float32 ``<= 4 x`` each backend's own float32-vs-float64 error.
"""
from __future__ import annotations

import pytest

from common.config import load_config
from common.specs import pcdarts as P
from parity_tests.harness import compare_backends

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: tiny tensors, one torch thread

STEPS = 5
LR = 0.025


def small_config():
    return load_config(None, [
        "MODEL.FAMILY", "pcdarts", "MODEL.NAME", "pcdarts_cifar", "MODEL.NUM_CLASSES", "10", "MODEL.DROP_PATH", "0.2",
        "DATA.IMAGE_SIZE", "32", "PCDARTS.INIT_CHANNELS", "8", "PCDARTS.LAYERS", "5", "PCDARTS.AUXILIARY", "True",
        "PCDARTS.GENOTYPE", "PCDARTS", "TRAIN.AUX_WEIGHT", "0.4", "OPTIM.NAME", "sgd", "OPTIM.MOMENTUM", "0.9",
        "OPTIM.WEIGHT_DECAY", "3e-4", "OPTIM.NO_DECAY_1D", "False", "OPTIM.GRAD_CLIP", "5.0",
        "PARITY.BATCH_SIZE", "4", "PARITY.STEPS", str(STEPS), "SEED", "11",
    ])


@pytest.fixture(scope="module")
def result():
    cfg = small_config()
    spec = P.spec_from_config(cfg)
    assert (spec.C, spec.layers, spec.auxiliary, spec.drop_path) == (8, 5, True, 0.2)
    return compare_backends(cfg, P, spec, family="pcdarts", steps=STEPS, lrs=[LR] * STEPS)


def test_pcdarts_parity_float64(result):
    run = result.runs["float64"]
    print("\nPC-DARTS small NetworkCIFAR parity, float64 (torch vs paddle)")
    for stage, row in run.summary().items():
        print(f"  {stage:15s} {row}")
    first = result.first_divergence
    assert run.passed, f"first divergence: {first}"
    assert result.meta["mask_draws"], "the train-mode forward drew no drop-path masks"


def test_pcdarts_parity_float32(result):
    run = result.runs["float32"]
    print("\nPC-DARTS small NetworkCIFAR parity, float32 (torch vs paddle, bound = 4 x own float32 error)")
    for stage, row in run.summary().items():
        print(f"  {stage:15s} {row}")
    assert run.passed, f"first divergence: {result.first_divergence}"


def test_stages_covered(result):
    run = result.runs["float64"]
    stages = {stage for stage, rows in run.summary().items() if rows}
    for stage in ("eval_forward", "forward", "loss", "grad", "train_loss", "weight", "running_stat",
                  "optimizer_slot"):
        assert stage in stages, stage
    names = {e.name for e in run.stage_entries("grad")}
    assert "auxiliary_head.classifier.weight" in names and "cells.4._ops.5.op.7.weight" in names
