"""PC-DARTS search network and search steps, torch vs paddle, through the parity harness (``parity_tests/harness.py``).

A small search network (C=8, 5 cells, reductions at cells 1 and 3, K=4 partial channels, 14 mixed ops per cell),
one set of float64 weights with perturbed BN statistics and architecture parameters spread to 0.5 * N(0, 1) (so the
softmaxes are far from uniform and every op matters), the same batches: every submodule output in eval and train
mode, the loss, every output, weight, alpha and beta gradient; one first-order and one second-order architecture
gradient (the finite-difference Hessian-vector product, r = 0.01 / ||v||) from the same weights; then 5 full search
iterations through the real search task (architecture step on batch k + 1, then the weight step on batch k: SGD
momentum 0.9, weight decay 3e-4, clip 5; Adam 6e-4 betas (0.5, 0.999), weight decay 1e-3) with every weight, alpha,
beta, BN running statistic and both optimizers' slots compared, and the derived genotype.  Verdicts are the
harness's (never loosened): float64 ``max_abs <= 1e-10 * max(1, scale)``; float32 ``<= 4 x`` each backend's own
float32-vs-float64 error, so the ill-conditioned float32 second-order term is judged by its own float64 value.
"""
from __future__ import annotations

import numpy as np
import pytest

from common.config import load_config
from common.specs import pcdarts as P
from parity_tests.harness import compare_backends, make_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: tiny tensors, one torch thread

STEPS = 5
LR = 0.1


def small_config(unrolled: bool):
    return load_config(None, [
        "MODEL.FAMILY", "pcdarts", "MODEL.NAME", "pcdarts_search", "MODEL.NUM_CLASSES", "10", "DATA.IMAGE_SIZE", "32",
        "PCDARTS.INIT_CHANNELS", "8", "PCDARTS.LAYERS", "5", "PCDARTS.UNROLLED", str(unrolled),
        "OPTIM.NAME", "sgd", "OPTIM.MOMENTUM", "0.9", "OPTIM.WEIGHT_DECAY", "3e-4", "OPTIM.NO_DECAY_1D", "False",
        "OPTIM.GRAD_CLIP", "5.0", "PARITY.BATCH_SIZE", "4", "PARITY.STEPS", str(STEPS), "SEED", "13",
    ])


def run(unrolled: bool, **options):
    cfg = small_config(unrolled)
    spec = P.spec_from_config(cfg)
    weights = make_weights(P, spec, 13)
    rng = np.random.default_rng(29)
    weights.update({name: 0.5 * rng.standard_normal(weights[name].shape) for name in P.ARCH_NAMES})
    return compare_backends(cfg, P, spec, family="pcdarts", steps=STEPS, lrs=[LR] * STEPS, weights=weights,
                            **options)


@pytest.fixture(scope="module")
def first_order():
    return run(unrolled=False)


def show(result, dtype, title):
    run_ = result.runs[dtype]
    print(f"\n{title}, {dtype} (torch vs paddle)")
    for stage, row in run_.summary().items():
        print(f"  {stage:15s} {row}")


def test_search_parity_float64(first_order):
    show(first_order, "float64", "PC-DARTS search network C=8 L=5, first-order search steps")
    run_ = first_order.runs["float64"]
    assert run_.passed, f"first divergence: {first_order.first_divergence}"
    names = {e.name for e in run_.entries}
    for stage_name in ("first-order alphas_normal", "second-order betas_reduce"):
        assert stage_name in names
    assert {"alphas_normal", "betas_reduce"} <= {e.name for e in run_.stage_entries("grad")}
    assert {e.name for e in run_.stage_entries("derived")} == {"genotype normal", "genotype reduce"}
    assert any("[arch exp_avg]" in e.name for e in run_.stage_entries("optimizer_slot"))
    moved = first_order.entry("float64", "update", "alphas_reduce")
    assert moved.diff.ref_scale > 0, "five search iterations did not move alphas_reduce"
    second = first_order.entry("float64", "arch_grad", "second-order alphas_normal")
    first = first_order.entry("float64", "arch_grad", "first-order alphas_normal")
    assert second.diff.ref_scale > 0 and first.diff.ref_scale > 0


def test_search_parity_float32(first_order):
    show(first_order, "float32", "PC-DARTS search network C=8 L=5, first-order search steps (bound 4 x own error)")
    assert first_order.runs["float32"].passed, f"first divergence: {first_order.first_divergence}"


def test_second_order_search_steps_parity_float64():
    """Five search iterations with the second-order architect (momentum from the weight optimizer's buffer after
    the first step), float64 only: the float32 finite difference is judged by its float64 value above; the
    forward and backward stages are the first-order run's."""
    result = run(unrolled=True, stages=("steps",), dtypes=("float64",))
    show(result, "float64", "PC-DARTS search network C=8 L=5, second-order search steps")
    assert result.runs["float64"].passed, f"first divergence: {result.first_divergence}"
