"""Cream child nets, torch vs paddle: forward, five real training steps, and cross-backend resume.

1. Forward (eval mode), all six released nets at their published image sizes, batch 2, one set of numpy weights
   (``init_state`` plus non-trivial BN statistics/affines and biases) loaded through ``layout.load_neutral``:
   float64 logits must agree to max-abs <= 1e-10 (the structure is identical), float32 logits to max-rel <= 1e-5.
2. Five training steps of Cream-14 at 64 px (batch 6) with the real recipe (``configs/cream14.yaml``) through the
   real trainers (``backend.make_trainer``): RMSpropTF, EMA 0.9999, weight decay without 1-D parameters, label
   smoothing 0.1, dropout 0.2 with the numpy masks the trainer attaches, identical numpy batches.  Step ``k`` uses
   ``build_schedule(cfg)(k)``, i.e. the schedule sampled at epochs 0..4, so the warmup (1e-6 -> 0.064 over 3
   epochs) and the first step decay are both exercised (the recipe's own per-epoch LR would keep all five steps
   at 1e-6).  After the 5 steps every parameter, BN running statistic, EMA tensor and optimizer slot is compared
   per tensor:
     * float64: max-abs <= 1e-10 (measured worst printed);
     * float32: ``|t32 - p32| <= C32 * max(|t32 - t64|, |p32 - p64|) + |t64 - p64|`` per tensor with C32 = 2:
       the bound is each backend's own float32 rounding on the same run; C32 = 2 is what the triangle inequality
       ``|t32-p32| <= |t32-t64| + |t64-p64| + |p64-p32|`` gives, so it is derived, not fitted.  The measured ratio
       ``|t32 - p32| / max(own errors)`` is printed per tensor.
   Some optimizer slots are rounding noise around an exact zero: the bias of a BN whose output reaches a
   training-mode BN only through a 1x1 conv (``bn3`` of a block without a skip, ``blocks.0.0.bn2``) gets a zero
   gradient in exact arithmetic (the next BN removes any per-channel shift), so its momentum is ~1e-17 and its
   max-rel is meaningless; max-abs is what the test holds to, and the summary leaves those tensors out of the
   relative figures.
3. Resume through ``common.engine.train`` on the built-in digits (32 px, 3 steps per epoch): a run of 4 epochs
   equals 2 epochs + resume for 2 on the same backend, bit for bit (torch and paddle); a torch checkpoint loads on
   paddle (and the reverse) with the model, EMA and optimizer slots carried exactly, and training goes on with a
   finite loss.
"""
from __future__ import annotations

import csv
import math
import os
from typing import Dict, List, Tuple

import numpy as np
import pytest

from common.checkpoint import load_checkpoint
from common.compare import compare
from common.config import load_config
from common.schedules import build_schedule
from common.specs import cream
from paddle_impl.backend import Backend as PaddleBackend
from torch_impl.backend import Backend as TorchBackend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG14 = os.path.join(ROOT, "configs", "cream14.yaml")
CFG_DIGITS = os.path.join(ROOT, "configs", "cream14_digits.yaml")
BACKENDS = {"torch": TorchBackend, "paddle": PaddleBackend}

F64_TOL = 1e-10          # max-abs, float64, everywhere
F32_LOGIT_REL = 1e-5     # max-rel of float32 logits (forward)
C32 = 2.0                # float32 training-state bound factor (triangle inequality, see the module docstring)
NOISE_SCALE = 1e-12      # below this fp64 scale a tensor is rounding noise around an exact zero (see below)
TRAIN_STEPS = 5
TRAIN_BATCH = 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: tiny tensors, one torch thread


# ---------------------------------------------------------------------------------------------------- weights
def parity_weights(spec, seed: int = 0) -> Dict[str, np.ndarray]:
    """``init_state`` (goog) with every BN given non-trivial statistics and affine values and every bias non-zero,
    so that eval-mode BN, the SE/head/classifier biases and the running-stat paths are all exercised."""
    state = cream.init_state(spec, np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    kinds = cream.param_kinds(spec)
    for name, array in state.items():
        kind = kinds[name].kind
        if kind == "bn.running_mean":
            state[name] = rng.normal(0.0, 0.1, array.shape)
        elif kind == "bn.running_var":
            state[name] = rng.uniform(0.5, 2.0, array.shape)
        elif kind == "bn.weight":
            state[name] = rng.uniform(0.5, 1.5, array.shape)
        elif kind in ("bn.bias", "conv.bias", "linear.bias"):
            state[name] = rng.normal(0.0, 0.05, array.shape)
        state[name] = np.asarray(state[name], dtype=np.float32)
    return state


def build(backend_name: str, dtype: str, spec, state):
    backend = BACKENDS[backend_name](dtype=dtype)
    model = backend.build_model("cream", spec)
    backend.load_neutral(model, state, source="parity weights")
    return backend, model


# ---------------------------------------------------------------------------------------------------- forward
@pytest.fixture(scope="module")
def forward_report():
    rows: List[Tuple[str, int, float, float, float]] = []
    yield rows
    print("\nCream forward parity, torch vs paddle (logits, batch 2, eval mode)")
    print(f"  {'net':9s} {'size':>4s}  {'fp64 max-abs':>12s}  {'fp32 max-abs':>12s}  {'fp32 max-rel':>12s}")
    for name, size, a64, a32, r32 in rows:
        print(f"  {name:9s} {size:4d}  {a64:12.3e}  {a32:12.3e}  {r32:12.3e}")


@pytest.mark.parametrize("name", cream.NET_NAMES)
def test_forward_parity(name, forward_report):
    spec = cream.released_net_spec(name)
    size = spec.image_size
    state = parity_weights(spec)
    images = np.random.default_rng(7).standard_normal((2, 3, size, size))
    logits = {}
    for dtype in ("float64", "float32"):
        for backend_name in BACKENDS:
            backend, model = build(backend_name, dtype, spec, state)
            logits[backend_name, dtype] = backend.eval_logits(model, images)
    d64 = compare(logits["torch", "float64"], logits["paddle", "float64"], f"{name} fp64 logits")
    d32 = compare(logits["torch", "float32"], logits["paddle", "float32"], f"{name} fp32 logits")
    forward_report.append((name, size, d64.max_abs, d32.max_abs, d32.max_rel))
    assert logits["torch", "float64"].shape == (2, 1000)
    assert d64.nonfinite == 0 and d64.max_abs <= F64_TOL, str(d64)
    assert d32.nonfinite == 0 and d32.max_rel <= F32_LOGIT_REL, str(d32)


# ---------------------------------------------------------------------------------------------------- training
def recipe_config():
    return load_config(CFG14, ["DATA.BATCH_SIZE", str(TRAIN_BATCH)])


def train_five_steps(backend_name: str, dtype: str, cfg, spec, state, batches):
    backend, model = build(backend_name, dtype, spec, state)
    trainer = backend.make_trainer(model, cfg, spec)
    schedule = build_schedule(cfg)
    losses = []
    for step, (images, labels) in enumerate(batches):
        losses.append(trainer.train_step({"train": (images, labels)}, {"weights": schedule(step)}, step)["loss"])
        assert trainer.masks.draws == 1  # the classifier dropout drew its numpy mask this step
    ckpt = trainer.to_checkpoint()
    tensors = {f"model/{k}": v for k, v in ckpt.model.items()}
    tensors.update({f"ema/{k}": v for k, v in ckpt.ema.items()})
    for slot, per_param in ckpt.optimizer.slots.items():
        if slot != "step":
            tensors.update({f"optim.{slot}/{k}": v for k, v in per_param.items()})
    tensors["loss"] = np.asarray(losses)
    steps = {k: int(v) for k, v in ckpt.optimizer.slots.get("step", {}).items()}
    return tensors, steps


@pytest.fixture(scope="module")
def five_steps():
    cfg = recipe_config()
    assert (cfg.OPTIM.NAME, cfg.TRAIN.EMA_DECAY, cfg.MODEL.DROPOUT, cfg.TRAIN.LABEL_SMOOTHING) == (
        "rmsprop_tf", 0.9999, 0.2, 0.1)
    spec = cream.spec_from_config(cfg)
    state = parity_weights(spec, seed=3)
    rng = np.random.default_rng(11)
    batches = [(rng.standard_normal((TRAIN_BATCH, 3, 64, 64)).astype(np.float32),
                rng.integers(0, cfg.MODEL.NUM_CLASSES, TRAIN_BATCH)) for _ in range(TRAIN_STEPS)]
    runs = {(b, d): train_five_steps(b, d, cfg, spec, state, batches)
            for d in ("float64", "float32") for b in BACKENDS}
    lrs = [build_schedule(cfg)(k) for k in range(TRAIN_STEPS)]
    return runs, lrs


def test_training_steps_parity(five_steps):
    runs, lrs = five_steps
    t64, steps_t = runs["torch", "float64"]
    p64, steps_p = runs["paddle", "float64"]
    t32, _ = runs["torch", "float32"]
    p32, _ = runs["paddle", "float32"]
    assert sorted(t64) == sorted(p64) == sorted(t32) == sorted(p32)
    assert steps_t == steps_p and set(steps_t.values()) == {TRAIN_STEPS}
    print(f"\nCream-14 @64 px, {TRAIN_STEPS} training steps (batch {TRAIN_BATCH}), LR per step "
          + ", ".join(f"{lr:.4g}" for lr in lrs))
    print(f"losses fp64 torch {np.round(t64['loss'], 6).tolist()}  paddle {np.round(p64['loss'], 6).tolist()}")
    print(f"  {'tensor':58s} {'fp64 abs':>9s} {'fp64 rel':>9s} | {'fp32 abs':>9s} {'fp32 rel':>9s} "
          f"{'own32':>9s} {'ratio':>6s}")
    failures = []
    worst: Dict[str, Tuple[float, float, float, str]] = {}
    for name in sorted(t64):
        d64 = compare(t64[name], p64[name], name)
        d32 = compare(t32[name], p32[name], name)
        own = max(compare(t32[name], t64[name]).max_abs, compare(p32[name], p64[name]).max_abs)
        bound = C32 * own + d64.max_abs
        ratio = d32.max_abs / own if own > 0 else (0.0 if d32.max_abs == 0 else math.inf)
        print(f"  {name:58s} {d64.max_abs:9.2e} {d64.max_rel:9.2e} | {d32.max_abs:9.2e} {d32.max_rel:9.2e} "
              f"{own:9.2e} {ratio:6.2f}")
        group = name.split("/")[0]
        w = worst.get(group, (0.0, 0.0, 0.0, 0))
        if d64.ref_scale < NOISE_SCALE:  # a zero-gradient slot: its values are rounding noise, rel is meaningless
            worst[group] = (max(w[0], d64.max_abs), w[1], w[2], w[3] + 1)
        else:
            worst[group] = (max(w[0], d64.max_abs), max(w[1], d32.max_rel), max(w[2], ratio), w[3])
        if d64.nonfinite or d64.max_abs > F64_TOL:
            failures.append(f"fp64 {d64}")
        if d32.nonfinite or d32.max_abs > bound:
            failures.append(f"fp32 {d32} > bound {bound:.3e} (own float32 error {own:.3e})")
    print("worst per group (fp64 max-abs; fp32 max-rel and ratio over tensors with a fp64 scale >= "
          f"{NOISE_SCALE:g}):")
    for g, w in sorted(worst.items()):
        print(f"  {g:18s} fp64 abs {w[0]:.2e}  fp32 rel {w[1]:.2e}  ratio {w[2]:.2f}"
              + (f"  ({w[3]} noise-only tensors)" if w[3] else ""))
    assert not failures, "\n".join(failures)


def test_training_moves_the_weights(five_steps):
    """The compared state is a trained one: weights, BN statistics, EMA and slots all left their start."""
    runs, _ = five_steps
    t64, _ = runs["torch", "float64"]
    spec = cream.spec_from_config(recipe_config())
    start = parity_weights(spec, seed=3)
    for name in ("conv_stem.weight", "blocks.3.1.conv_dw.weight", "classifier.weight", "bn1.running_var"):
        change = np.abs(t64[f"model/{name}"] - start[name]).max()
        assert change > 1e-4, (name, change)
        ema_change = np.abs(t64[f"ema/{name}"] - start[name]).max()
        assert 0 < ema_change < change, (name, ema_change, change)
    assert np.all(np.isfinite(t64["loss"]))


# ---------------------------------------------------------------------------------------------------- resume
RESUME_OVERRIDES = [
    "TRAIN.MAX_STEPS_PER_EPOCH", "3", "DATA.BATCH_SIZE", "8", "DATA.NUM_VAL", "16", "DATA.EVAL_BATCH_SIZE", "16",
    # a schedule that does not depend on TRAIN.EPOCHS, so 2 + 2 epochs and 4 epochs share their LRs
    "SCHED.NAME", "step", "SCHED.DECAY_EPOCHS", "1.0", "SCHED.DECAY_RATE", "0.7", "SCHED.WARMUP_EPOCHS", "1.0",
    "TRAIN.LOG_INTERVAL", "0",
]


def run_engine(backend_name: str, run_dir: str, epochs: int, resume: str = "") -> str:
    from common import engine

    overrides = RESUME_OVERRIDES + ["TRAIN.EPOCHS", str(epochs), "OUTPUT_DIR", run_dir]
    cfg = load_config(CFG_DIGITS, overrides + (["RESUME", resume] if resume else []))
    spec = cream.spec_from_config(cfg)
    backend = BACKENDS[backend_name]()
    assert engine.train(cfg, backend, cream, spec, run_dir) == 0
    return os.path.join(run_dir, "last.safetensors")


def flat(ckpt) -> Dict[str, np.ndarray]:
    out = {f"model/{k}": v for k, v in ckpt.model.items()}
    out.update({f"ema/{k}": v for k, v in (ckpt.ema or {}).items()})
    for slot, per_param in ckpt.optimizer.slots.items():
        out.update({f"optim.{slot}/{k}": np.asarray(v) for k, v in per_param.items()})
    return out


def assert_identical(a: Dict[str, np.ndarray], b: Dict[str, np.ndarray], what: str) -> None:
    assert sorted(a) == sorted(b), what
    bad = [k for k in a if a[k].shape != b[k].shape or not np.array_equal(a[k], b[k])]
    assert not bad, f"{what}: {len(bad)} tensors differ, first {bad[:3]}"


def metrics_rows(run_dir: str) -> List[Dict[str, str]]:
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def engine_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("cream_resume")
    out = {}
    for name in BACKENDS:
        out[name, "4"] = run_engine(name, str(base / f"{name}_4"), 4)
        out[name, "2"] = run_engine(name, str(base / f"{name}_2"), 2)
        out[name, "2+2"] = run_engine(name, str(base / f"{name}_2+2"), 4, resume=out[name, "2"])
    out["base"] = base
    return out


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_resume_same_backend_is_exact(engine_runs, backend_name):
    straight = load_checkpoint(engine_runs[backend_name, "4"])
    resumed = load_checkpoint(engine_runs[backend_name, "2+2"])
    assert straight.meta["epoch"] == resumed.meta["epoch"] == 4
    assert_identical(flat(straight), flat(resumed), f"{backend_name}: 4 epochs vs 2 + resumed 2")
    assert straight.optimizer.step == resumed.optimizer.step == 12
    # The resumed folder's metrics.csv carries the whole history (from the checkpoint): epochs 1-2 as the first run
    # wrote them, 3-4 equal to the uninterrupted run's (time columns aside).
    rows = metrics_rows(os.path.dirname(engine_runs[backend_name, "2+2"]))
    first = metrics_rows(os.path.dirname(engine_runs[backend_name, "2"]))
    whole = metrics_rows(os.path.dirname(engine_runs[backend_name, "4"]))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    timing = ("images_per_s", "epoch_seconds")
    strip = lambda row: {k: v for k, v in row.items() if k not in timing}  # noqa: E731
    assert [strip(r) for r in rows[:2]] == [strip(r) for r in first]
    assert [strip(r) for r in rows] == [strip(r) for r in whole]


@pytest.mark.parametrize("source, target", [("torch", "paddle"), ("paddle", "torch")])
def test_resume_across_backends(engine_runs, source, target):
    path = engine_runs[source, "2"]
    saved = load_checkpoint(path)
    assert saved.meta["backend"] == source and saved.meta["epoch"] == 2
    # right after loading: the other backend holds exactly the saved model, EMA and optimizer slots
    cfg = load_config(CFG_DIGITS, RESUME_OVERRIDES + ["TRAIN.EPOCHS", "4"])
    spec = cream.spec_from_config(cfg)
    backend = BACKENDS[target]()
    model = backend.build_model("cream", spec)
    trainer = backend.make_trainer(model, cfg, spec)
    trainer.load_checkpoint(saved, source=path)
    loaded = trainer.to_checkpoint()
    assert loaded.optimizer.step == saved.optimizer.step == 6
    assert_identical(flat(saved), flat(loaded), f"{source} checkpoint loaded on {target}")
    # and training goes on from there with a finite loss
    run_dir = str(engine_runs["base"] / f"{source}_2_{target}_2")
    last = load_checkpoint(run_engine(target, run_dir, 4, resume=path))
    assert last.meta["backend"] == target and last.meta["epoch"] == 4 and last.optimizer.step == 12
    rows = metrics_rows(run_dir)
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]  # epochs 1-2 come with the checkpoint's history
    assert rows[:2] == metrics_rows(os.path.dirname(path))
    assert all(math.isfinite(float(r["train_loss"])) for r in rows)
    # how far the cross-backend continuation lands from the same-backend one (float32 rounding only): reported
    same = flat(load_checkpoint(engine_runs[source, "2+2"]))
    other = flat(last)
    diffs = [compare(other[k], same[k], k) for k in same if k.startswith("model/")]
    worst_abs = max(d.max_abs for d in diffs)
    worst_rel = max(d.max_rel for d in diffs if d.ref_scale >= 1e-6)
    print(f"\n{source} 2 epochs + {target} 2 epochs vs {source} 4 epochs (float32 rounding carried through 6 "
          f"steps): worst state max-abs {worst_abs:.2e}, worst max-rel {worst_rel:.2e} (tensors of scale >= 1e-6)")
