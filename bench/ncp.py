"""NCP's accuracy predictor: training-step speed of the torch and paddle twins side by side, and the 200-epoch
training time it implies (``MODEL.FAMILY ncp``, ``configs/ncp_predictor_<setting>.yaml``).

Modes and contenders (``BENCH.MODES``, ``BENCH.CONTENDERS``):

* ``train`` with ``torch`` / ``paddle`` -- one step of the real ``ncp_predictor`` task
  (``<backend>_impl/tasks/ncp_predictor.py`` ``Task.train_step``: forward with the numpy dropout masks, smooth-L1 on
  the z-scored metrics, the gradients, the non-finite check, the twin Adam step), after ``set_momenta`` as the loop
  calls it, at the LR and Adam beta1 of a real run's first update (one-cycle).  The batch is real: the first batch
  of the seeded train stream, table rows ``(codes float32 [B, 27], targets float32 [B, metrics])``.  Each contender
  reports its main head's last Linear weight after all its steps, so ``max|dOut|`` shows both did the same steps.
* ``eval`` with ``torch`` / ``paddle`` -- ``Task.predict`` (eval mode, no gradients) on the first held-out batch.
* ``train`` with ``torch+loop`` / ``paddle+loop`` -- **one step is one epoch of a real training run**:
  ``common.engine.train`` (the loop ``tools/main.py train`` runs: the loader, the task, the one-cycle schedule over
  ``TRAIN.EPOCHS``, evaluation on the held-out rows every epoch, ``best`` / ``last`` checkpoints, metrics.csv, the
  scalars) runs in a thread of the worker, into a temporary folder, ``DATA.BATCH_SIZE`` set to the workload's batch;
  a hook holds it at the start of every epoch until the harness asks for the next one, so the warmup epochs and the
  timed epochs are real epochs of one run and ``ms/step`` is the wall time of one epoch (setup excluded: it happens
  while the worker is built).  ``img/s`` of these rows is batch / epoch time, which means nothing; compare their
  ``ms/step`` or run them on their own so the ratio compares the two loops::

      python tools/main.py bench configs/ncp_predictor_seg.yaml
      python tools/main.py bench configs/ncp_predictor_seg.yaml BENCH.CONTENDERS "[torch+loop, paddle+loop]"

  The run has ``TRAIN.EPOCHS`` epochs (200): warmup + timed steps must fit (the defaults, 10 + 100, do).

Just above the table the command prints the training time each train row implies for ``TRAIN.EPOCHS`` epochs
(extrapolated: epochs x steps per epoch x the median step, or epochs x the median epoch of a ``+loop`` row; printed
by :func:`goals`, the only family hook ``bench/run.py`` calls after measuring).
The predictor configs time the recipe's batch (``BENCH.TRAIN_BATCH_SIZES [128]`` in ``configs/base/ncp_predictor.yaml``,
one thread per contender); the header says when a command line times another batch than DATA.BATCH_SIZE.

Goals printed: paddle twin >= 0.8x torch twin (the train step; the loops when both run).  No framework is imported at
module level.
"""
from __future__ import annotations

import functools
import importlib
import itertools
import shutil
import tempfile
import threading
import traceback
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from bench import cream
from bench.harness import BenchError, Contender, Runner, contender_from_name, set_paddle_threads, set_torch_threads

FAMILY = "ncp"
BASELINE = "torch"
DEFAULT_CONTENDERS = ("torch", "paddle")
DEFAULT_MODES = ("train",)
SUPPORTED_MODES = ("train", "eval")
DEFAULT_WARMUP = 10
DEFAULT_ITERS = 100
TASK_KIND = "ncp_predictor"

#: base name -> (framework, factory, allowed flags)
BASES: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "torch": ("torch", "bench.ncp:twin_torch", ("loop",)),
    "paddle": ("paddle", "bench.ncp:twin_paddle", ("loop",)),
}

GOALS = (
    ("paddle twin >= 0.8x torch twin", "paddle", "torch", 0.8),
    ("paddle loop >= 0.8x torch loop", "paddle+loop", "torch+loop", 0.8),
)


# ------------------------------------------------------------------------------------------------ parent side
def make_contender(name: str, cfg_path: str) -> Contender:
    return contender_from_name(FAMILY, BASES, name, cfg_path)


def training_plan(cfg) -> Dict[str, Any]:
    """What a real run of ``cfg`` does: epochs, train / held-out rows, how the train split is batched."""
    from common.data.build import build_dataset

    return {"epochs": int(cfg.TRAIN.EPOCHS), "train_rows": len(build_dataset(cfg, "train")),
            "val_rows": len(build_dataset(cfg, "val")), "batch_size": int(cfg.DATA.BATCH_SIZE),
            "drop_last": bool(cfg.DATA.DROP_LAST), "max_steps": int(cfg.TRAIN.MAX_STEPS_PER_EPOCH)}


def steps_per_epoch(plan: Dict[str, Any], batch_size: int) -> int:
    """Updates per epoch at ``batch_size`` (the loader's rule: a short last batch unless ``DATA.DROP_LAST``)."""
    n, b = int(plan["train_rows"]), int(batch_size)
    steps = n // b if plan["drop_last"] else -(-n // b)
    return min(steps, plan["max_steps"]) if plan["max_steps"] else steps


#: the plan of the config the ``bench`` command runs (``header`` records it; ``goals`` extrapolates with it)
_PLAN: Dict[str, Any] = {}


def header(cfg, spec) -> str:
    from common.specs import ncp

    plan = training_plan(cfg)
    _PLAN.clear()
    _PLAN.update(plan)
    bs = plan["batch_size"]
    text = (f"NCP predictor on the {spec.setting} table ({plan['train_rows']} train / {plan['val_rows']} held-out "
            f"rows; {spec.input_dim} inputs -> {', '.join(spec.metrics)}): {ncp.count_params(spec):,} parameters, "
            f"{ncp.count_macs(spec):,} MACs per code; train step = the {TASK_KIND} task's train_step "
            f"({cfg.OPTIM.NAME} lr {cfg.OPTIM.LR}, wd {cfg.OPTIM.WEIGHT_DECAY}, {cfg.SCHED.NAME} schedule); a real "
            f"run: {plan['epochs']} epochs x {steps_per_epoch(plan, bs)} steps of batch {bs}")
    modes = tuple(cfg.BENCH.MODES) or DEFAULT_MODES
    sizes = [int(s) for s in (cfg.BENCH.TRAIN_BATCH_SIZES or cfg.BENCH.BATCH_SIZES)]
    if bool(cfg.BENCH.QUICK):
        sizes = sizes[:1]
    if "train" in modes and bs not in sizes:
        text += (f"\nnote: the run trains at DATA.BATCH_SIZE {bs}, this benchmark times train batch {sizes} "
                 f"(BENCH.TRAIN_BATCH_SIZES); BENCH.TRAIN_BATCH_SIZES \"[{bs}]\" times the real step")
    return text


def estimates(rows: Sequence[Dict[str, Any]], plan: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The training time each train row implies for ``plan['epochs']`` epochs (extrapolated from its median)."""
    out = []
    for r in rows:
        if r.get("mode") != "train" or r.get("error") or not r.get("ms_step"):
            continue
        steps = steps_per_epoch(plan, r["batch"])
        loop = "loop" in r["contender"].split("+")[1:]
        if loop:
            seconds = plan["epochs"] * r["ms_step"] / 1e3
            basis = f"{plan['epochs']} epochs x {r['ms_step']:.0f} ms (median epoch of a real run)"
        else:
            seconds = plan["epochs"] * steps * r["ms_step"] / 1e3
            basis = (f"{plan['epochs']} x {steps} steps x {r['ms_step']:.2f} ms (median train_step; no loader, "
                     "evaluation or checkpoints)")
        out.append({"contender": r["contender"], "batch": r["batch"], "epochs": plan["epochs"],
                    "steps_per_epoch": steps, "seconds": seconds, "basis": basis, "loop": loop})
    return out


def goals(rows: Sequence[Dict[str, Any]], plan: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """paddle / torch per mode and batch size; prints the extrapolated training times (``estimates``) as well."""
    found = cream.goals(rows, GOALS)
    plan = plan if plan is not None else (_PLAN or None)
    if plan:
        est = estimates(rows, plan)
        if est:
            print(f"training time for {plan['epochs']} epochs ({plan['train_rows']} train rows), extrapolated from "
                  "the medians below:")
            for e in est:
                print(f"  {e['contender']:<12} bs{e['batch']:<4} {e['seconds']:8.1f} s   = {e['basis']}")
    return found


# ------------------------------------------------------------------------------------------------ worker side
def _backend(backend_name: str, cfg, threads: int):
    if backend_name == "torch":
        set_torch_threads(threads)
    else:
        set_paddle_threads(threads)
    module = importlib.import_module(f"{backend_name}_impl.backend")
    return module, module.Backend(device=cfg.DEVICE, dtype="float32", threads=threads)


def _load(cfg_path: str, batch_size: int):
    """The config with ``DATA.BATCH_SIZE`` / ``DATA.EVAL_BATCH_SIZE`` = the workload's batch, and its spec."""
    from common.config import load_config
    from common.specs import ncp

    cfg = load_config(cfg_path, ["DATA.BATCH_SIZE", str(batch_size), "DATA.EVAL_BATCH_SIZE", str(batch_size)])
    return cfg, ncp.spec_from_config(cfg)


def first_batch(cfg, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """The first batch of the ``split`` stream (train: the seeded shuffle of epoch 0), as the loop would get it."""
    from common.data.build import build_dataset, build_loader

    dataset = build_dataset(cfg, split)
    size = int(cfg.DATA.BATCH_SIZE)
    if size > len(dataset):
        raise BenchError(f"batch {size}: the {split} split of the {cfg.NCP.SETTING} table has only {len(dataset)} rows")
    it = iter(build_loader(cfg, split, dataset=dataset))
    try:
        codes, targets = next(it)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
    return np.ascontiguousarray(codes), np.ascontiguousarray(targets)


def first_update(cfg, task) -> Tuple[Dict[str, float], Dict[str, float]]:
    """LRs and momenta (Adam beta1) of a real run's first update (the loop's schedules)."""
    from common import engine

    plan = training_plan(cfg)
    lrs, momenta = {}, {}
    for name, schedule in engine.build_schedules(cfg, task).items():
        bind = getattr(schedule, "bind_steps", None)
        if bind is not None:
            bind(steps_per_epoch(plan, int(cfg.DATA.BATCH_SIZE)))
        lrs[name] = float(schedule(0.0))
        at = getattr(schedule, "momentum_at", None)
        value = at(0.0) if at is not None else None
        if value is not None:
            momenta[name] = float(value)
    return lrs, momenta


def _twin(backend_name: str, mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str]) -> Runner:
    if "loop" in flags:
        if mode != "train":
            raise BenchError(f"{backend_name}+loop times epochs of a real training run: mode train only, not {mode!r}")
        return _loop(backend_name, batch_size, threads, cfg_path)
    from common.specs import ncp

    cfg, spec = _load(cfg_path, batch_size)
    backend_module, be = _backend(backend_name, cfg, threads)
    model = be.build_model(FAMILY, spec)
    be.load_neutral(model, ncp.init_state(spec, np.random.default_rng(cfg.SEED)), source="numpy init")
    task = be.make_task(TASK_KIND, model, cfg, spec)
    holder: Dict[str, Any] = {}
    if mode == "train":
        batch = first_batch(cfg, "train")
        lrs, momenta = first_update(cfg, task)
        counter = itertools.count()

        def step():
            if momenta:
                task.set_momenta(momenta)
            holder["stats"] = task.train_step({"train": batch}, lrs, next(counter))

        def output():  # the main head's last Linear after every step: both twins took the same steps
            return be.state_to_neutral(model)["nets.0.4.weight"]

        note = f"train_step, lr {lrs['weights']:.3g}" + (f", beta1 {momenta['weights']:.3g}" if momenta else "")
    else:
        codes, _ = first_batch(cfg, "val")

        def step():
            holder["out"] = task.predict(codes)

        def output():
            return holder.get("out")

        note = "predict (eval mode, no gradients)"
    profile = cream.torch_profile if backend_name == "torch" else cream.paddle_profile
    return Runner(step, {"version": backend_module.framework_version(), "params": be.count_parameters(model),
                         "note": note}, output, functools.partial(profile, step))


class _Stop(Exception):
    """Raised in the training thread to end the run the benchmark no longer needs."""


def _epoch_gate_class():
    from common.engine import Hook

    class EpochGate(Hook):
        """Holds the loop at the start of every epoch until :meth:`run_epoch` lets one epoch through."""

        def __init__(self):
            self.go = threading.Semaphore(0)
            self.arrived = threading.Semaphore(0)
            self.loop = None
            self.stop = False
            self.finished = False
            self.error: Optional[str] = None
            self.epochs = 0

        def before_train(self, loop):
            self.loop = loop

        def before_epoch(self, loop):
            self.arrived.release()
            self.go.acquire()
            if self.stop:
                raise _Stop()

        def after_epoch(self, loop, row):
            self.epochs += 1

        def wait(self):
            self.arrived.acquire()
            if self.error is not None:
                raise RuntimeError(f"the training run failed after {self.epochs} epochs:\n{self.error}")

        def run_epoch(self):
            if self.finished:
                raise BenchError(f"the training run ended after its {self.epochs} epochs (TRAIN.EPOCHS): ask for "
                                 "fewer warmup + timed steps (BENCH.WARMUP, BENCH.ITERS)")
            self.go.release()
            self.wait()

    return EpochGate


def _loop(backend_name: str, batch_size: int, threads: int, cfg_path: str) -> Runner:
    """A real training run (``engine.train``) in a thread; one step = one epoch of it."""
    import atexit

    from common import engine, families
    from common.specs import ncp

    cfg, spec = _load(cfg_path, batch_size)
    backend_module, be = _backend(backend_name, cfg, threads)
    kind = families.task_kind(FAMILY, "train")
    run_dir = tempfile.mkdtemp(prefix=f"bench_ncp_{backend_name}_loop_")
    atexit.register(shutil.rmtree, run_dir, True)
    gate = _epoch_gate_class()()

    def target():
        try:
            (set_torch_threads if backend_name == "torch" else set_paddle_threads)(threads)
            engine.train(cfg, be, ncp, spec, run_dir, hooks=[gate], kind=kind)
        except _Stop:
            pass
        except BaseException:  # noqa: BLE001 - reported by the next step
            gate.error = traceback.format_exc()
        finally:
            gate.finished = True
            gate.arrived.release()

    thread = threading.Thread(target=target, name="ncp-training-run", daemon=True)
    thread.start()
    gate.wait()  # data, model, task and loop built; held before epoch 1
    if gate.finished:
        raise RuntimeError("the training run ended before its first epoch")
    steps = steps_per_epoch(training_plan(cfg), batch_size)

    def output():  # the main head's last Linear weight and bias: 129 numbers, never compared with a train_step row
        gate.stop = True
        gate.go.release()
        thread.join(timeout=120)
        state = be.state_to_neutral(gate.loop.task.model)
        return np.concatenate([state["nets.0.4.weight"].reshape(-1), state["nets.0.4.bias"].reshape(-1)])

    def profile(n: int, path: str) -> None:  # a profiler in the worker's main thread would see only the wait
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"{backend_name}+loop: not profiled (its epochs run in another thread); profile the "
                         f"{backend_name} contender's train_step instead\n")

    note = (f"one step = one epoch of engine.train ({steps} steps of batch {batch_size}, evaluation, checkpoints; "
            f"{int(cfg.TRAIN.EPOCHS)}-epoch schedule)")
    return Runner(gate.run_epoch, {"version": backend_module.framework_version(),
                                   "params": ncp.count_params(spec), "note": note}, output, profile)


def twin_torch(mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str] = ()) -> Runner:
    return _twin("torch", mode, batch_size, threads, cfg_path, flags)


def twin_paddle(mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str] = ()) -> Runner:
    return _twin("paddle", mode, batch_size, threads, cfg_path, flags)

