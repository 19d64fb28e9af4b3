"""The parity harness: run one network in two backends on the same weights and batches, compare everything.

What is recorded, per backend and per dtype (``*_impl/capture.py`` does the framework-specific part):

  stage           what                                                              order in the report
  ``eval_forward``  every submodule's output, eval mode (BN uses the running stats)   execution order
  ``forward``       every submodule's output, train mode: BN batch statistics,        execution order
                    dropout / drop-path ON with numpy masks (``MaskSource``)
  ``loss``          the training loss of that forward pass (trainer's loss: CE with label smoothing, + aux)
  ``output_grad``   d loss / d (each submodule's output)                              backward order
  ``input_grad``    d loss / d images
  ``grad``          d loss / d (every trainable parameter), canonical names, torch    backward order (of the
                    layout (paddle Linear weights transposed)                          owning module)
  ``arch_grad``     a search task's architecture gradient on batches (0, 1), first and second order, each
                    from the initial weights (``task.arch_gradient``)
  ``train_loss``    the loss of each of the K real optimizer steps (``PARITY.STEPS``)  step order
  ``weight``        every trainable parameter after the K steps                        execution order of owner
  ``update``        weight after K steps minus the initial weight (small updates are compared at their own
                    scale, not hidden under the weight's)
  ``running_stat``  every buffer (BN running mean / var) after the K steps
  ``ema``           every EMA tensor after the K steps (``TRAIN.EMA_DECAY > 0``)
  ``optimizer_slot``every optimizer slot (``trainer.to_checkpoint().optimizers``, neutral layout), as
                    ``param [slot]`` (a second optimizer's: ``param [optimizer slot]``)
  ``derived``       a search task's derived architecture after the K steps (``task.parity_derived()``)

The K steps use the backends' own training task (``backend.make_trainer(model, cfg, spec).train_step``) with the
config's optimizer, EMA, clipping and label smoothing (a search network: its family's search task, both streams,
architecture steps on, step k searching on batch k + 1); step k uses batch k and the LR
``build_schedule(cfg).lr_for(0, k, K)`` (the K steps are the first K updates of epoch 0 of a K-update epoch; with a
warmup that is the warmup LR, and the ``update`` stage still compares the small updates at their own scale; pass
``lrs=`` to choose others).  Weights: one float64 set (``make_weights``: ``spec_module.init_state`` with
deterministically perturbed BN statistics and affine parameters), cast down for float32 runs.  Batches:
``make_batches`` (N(0, 1) pixels, integer labels < MODEL.NUM_CLASSES, seeded by ``SEED``).

Every entry is compared with ``common.compare.compare`` (max-abs, max-rel = max-abs / max|reference|, the element
with the largest error, both values there, shapes); the first backend is ``a``, the second ``b`` (the scale).

Verdicts (``TOLERANCE_RULES``; never chosen to pass, see docs/CONVENTIONS.md):
  * float64: ``max_abs <= 1e-10 * max(1, max|b|)``: absolute 1e-10 for tensors of scale <= 1, relative 1e-10
    for larger ones (forward values of big magnitude).  Any non-finite mismatch fails.
  * float32: ``max_abs(a32, b32) <= c * max(max_abs(a32, a64), max_abs(b32, b64))`` with c = 4: each backend's
    own float32-vs-float64 error on the same entry (same float64 weights cast down, same batch), so the bound
    measures rounding only.  An entry that both backends compute exactly in float32 gets bound 0 (must be equal).
    By the triangle inequality ``|a32 - b32| <= err_a + |a64 - b64| + err_b``, so once float64 agrees this bound
    holds with c = 2; with c = 4 it fails only where the float64 values part by more than 2x the rounding.  It
    cannot see a float32-only precision loss in one backend (that raises the backend's own error and the bound
    with it): the goal column and the own-error ratio ``max(err_a, err_b) / min(err_a, err_b)`` (reported per
    entry, worst per stage) show that case.  What the float32 verdict adds is a measured bound per entry and the
    bound ratio (how close each entry comes to it).
  * float32 goal (a column, reported for the forward stages and the loss): ``max_rel <= 1e-5``.
  * entries present in one backend only, or with different shapes, fail.

The first divergence of a dtype is the first failing entry in stage order, then report order; for a forward
stage it comes with the module's input comparison ("inputs agree, output parts": the module itself differs).

A third column (``Reference``: a dict of arrays keyed like the entries, e.g. TensorFlow's outputs) is compared
against both backends; :func:`run_from_config` takes it from ``parity_tests/references.py`` (per MODEL.FAMILY), or
from the spec module's own ``parity_reference(cfg, spec, weights, images)`` when it has one (see
:func:`reference_function`).

API::

    result = compare_backends(cfg, spec_module, spec, stages=("eval_forward", "forward", "backward", "steps"),
                              steps=3, dtypes=("float64", "float32"), reference=Reference("tensorflow", arrays),
                              after_load=lambda backend, dtype, model: ...)
    result.passed; result.first_divergence -> (dtype, Entry); result.entry("float64", "grad", "conv_stem.weight")
    result.runs["float32"].summary(); result.as_dict()  (what parity.json holds; report.py renders it)
    run_from_config(cfg, spec_module, spec, report_dir) -> exit code   (``tools/main.py parity``)
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import itertools
import math
import os
import platform
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from common.compare import Diff, compare

FORMAT = "twinnas-parity/1"
F64_TOL = 1e-10
F32_C = 4.0
F32_GOAL_REL = 1e-5

STAGES = ("eval_forward", "forward", "loss", "output_grad", "input_grad", "grad", "arch_grad", "train_loss",
          "weight", "update", "running_stat", "ema", "optimizer_slot", "derived")
STAGE_TITLES = {
    "eval_forward": "forward, eval mode",
    "forward": "forward, train mode",
    "loss": "loss",
    "output_grad": "grad of module output",
    "input_grad": "grad of the input",
    "grad": "parameter grad",
    "arch_grad": "architecture-step gradient (search tasks: first and second order)",
    "train_loss": "training-step loss",
    "weight": "post-step weight",
    "update": "post-step update (weight - initial)",
    "running_stat": "post-step running stat",
    "ema": "post-step EMA",
    "optimizer_slot": "post-step optimizer slot",
    "derived": "post-step derived architecture (search tasks: the genotype, as integer codes)",
}
FORWARD_STAGES = ("eval_forward", "forward", "loss")
# The option values of ``compare_backends(stages=...)``: each runs the stages it lists.
STAGE_GROUPS = {
    "eval_forward": ("eval_forward",),
    "forward": ("forward", "loss"),
    "backward": ("output_grad", "input_grad", "grad"),
    "steps": ("arch_grad", "train_loss", "weight", "update", "running_stat", "ema", "optimizer_slot", "derived"),
}
DEFAULT_GROUPS = ("eval_forward", "forward", "backward", "steps")
TOLERANCE_RULES = {
    "float64": f"max_abs <= {F64_TOL:g} * max(1, max|{{b}}|)  (absolute {F64_TOL:g} at scale <= 1, relative above)",
    "float32": f"max_abs(a32, b32) <= {F32_C:g} * max(max_abs(a32, a64), max_abs(b32, b64))  "
               "(each backend's own float32-vs-float64 error on the same entry)",
    "float32_goal": f"forward outputs and loss: max_rel <= {F32_GOAL_REL:g} (reported, a column)",
    "missing": "an entry present in one backend only, or with different shapes, fails",
}


class ParityError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------ data types
@dataclasses.dataclass
class Reference:
    """A third column: arrays keyed by entry name (e.g. TensorFlow's outputs mapped to canonical module names)."""

    name: str
    arrays: Mapping[str, Any]
    stage: str = "eval_forward"
    rel_tol: Optional[float] = None   # None: figures only; else both backends must be within max_rel <= rel_tol
    dtypes: Optional[Sequence[str]] = None  # the dtype runs to compare it in (None: all)
    note: str = ""

    @classmethod
    def coerce(cls, value: Any) -> Optional["Reference"]:
        if value is None or isinstance(value, Reference):
            return value
        if isinstance(value, Mapping) and "arrays" in value:
            return cls(**dict(value))
        if isinstance(value, Mapping):
            return cls(name="reference", arrays=value)
        raise TypeError(f"reference: expected a Reference, a dict with 'arrays', or a dict name -> array, "
                        f"got {type(value).__name__}")


@dataclasses.dataclass
class Entry:
    """One compared tensor of one dtype run."""

    stage: str
    name: str
    order: int
    module: str = ""
    type: str = ""
    status: str = "compared"          # compared | missing:<backend> | shape | no_grad
    shape_a: Optional[List[int]] = None
    shape_b: Optional[List[int]] = None
    dtype_a: str = ""
    dtype_b: str = ""
    diff: Optional[Diff] = None
    tol_abs: Optional[float] = None   # the max_abs the verdict allows
    passed: bool = False
    own_err_a: Optional[float] = None  # float32 runs: max_abs(a32, a64) on this entry
    own_err_b: Optional[float] = None
    goal_passed: Optional[bool] = None
    input_max_abs: Optional[float] = None  # forward stages: how far the module's inputs already differ
    input_max_rel: Optional[float] = None
    input_passed: Optional[bool] = None
    reference: Dict[str, Diff] = dataclasses.field(default_factory=dict)
    ref_passed: Optional[bool] = None
    note: str = ""

    @property
    def max_abs(self) -> float:
        return self.diff.max_abs if self.diff is not None else math.inf

    @property
    def max_rel(self) -> float:
        return self.diff.max_rel if self.diff is not None else math.inf

    @property
    def own_ratio(self) -> Optional[float]:
        """float32: the larger / the smaller of the two backends' own float32-vs-float64 errors (1 = equally
        accurate).  A float32-only precision loss in one backend shows here, not in the derived bound."""
        if self.own_err_a is None or self.own_err_b is None:
            return None
        hi, lo = max(self.own_err_a, self.own_err_b), min(self.own_err_a, self.own_err_b)
        if lo == 0:
            return 1.0 if hi == 0 else math.inf
        return hi / lo

    @property
    def bound_ratio(self) -> Optional[float]:
        """max_abs / allowed max_abs (<= 1 passes)."""
        if self.diff is None or self.tol_abs is None:
            return None
        if self.tol_abs == 0:
            return 0.0 if self.diff.max_abs == 0 else math.inf
        return self.diff.max_abs / self.tol_abs

    def label(self) -> str:
        return f"{STAGE_TITLES.get(self.stage, self.stage)}: {self.name}"

    def as_dict(self) -> Dict[str, Any]:
        d = self.diff
        out: Dict[str, Any] = {
            "stage": self.stage, "name": self.name, "order": self.order, "module": self.module, "type": self.type,
            "status": self.status, "shape_a": self.shape_a, "shape_b": self.shape_b,
            "dtype_a": self.dtype_a, "dtype_b": self.dtype_b,
            "max_abs": d.max_abs if d else None, "max_rel": d.max_rel if d else None,
            "max_elem_rel": d.max_elem_rel if d else None, "worst_index": list(d.worst_index) if d else None,
            "value_a": d.value_a if d else None, "value_b": d.value_b if d else None,
            "ref_scale": d.ref_scale if d else None, "nonfinite": d.nonfinite if d else None,
            "tol_abs": self.tol_abs, "bound_ratio": self.bound_ratio, "passed": self.passed,
            "own_err_a": self.own_err_a, "own_err_b": self.own_err_b, "own_ratio": self.own_ratio,
            "goal_passed": self.goal_passed,
            "input_max_abs": self.input_max_abs, "input_max_rel": self.input_max_rel,
            "input_passed": self.input_passed, "note": self.note,
        }
        if self.reference:
            out["reference"] = {k: v.as_dict() for k, v in self.reference.items()}
            out["ref_passed"] = self.ref_passed
        return out


@dataclasses.dataclass
class DtypeRun:
    dtype: str
    entries: List[Entry]
    first_divergence: Optional[Entry] = None
    localisation: str = ""
    reference_unmatched: List[str] = dataclasses.field(default_factory=list)
    goal_applies: bool = False
    train_mode: bool = True

    @property
    def passed(self) -> bool:
        return all(e.passed and e.ref_passed is not False for e in self.entries)

    def stage_entries(self, stage: str) -> List[Entry]:
        return [e for e in self.entries if e.stage == stage]

    def summary(self) -> Dict[str, Dict[str, Any]]:
        out: Dict[str, Dict[str, Any]] = {}
        for stage in STAGES:
            rows = self.stage_entries(stage)
            if not rows:
                continue
            compared = [e for e in rows if e.diff is not None]
            failed = [e for e in rows if not e.passed]
            info: Dict[str, Any] = {"entries": len(rows), "failed": len(failed),
                                    "first_failed": failed[0].name if failed else None}
            if compared:
                w_abs = max(compared, key=lambda e: e.max_abs)
                w_rel = max(compared, key=lambda e: e.max_rel)
                info.update(worst_abs=w_abs.max_abs, worst_abs_entry=w_abs.name, worst_abs_scale=w_abs.diff.ref_scale,
                            worst_rel=w_rel.max_rel, worst_rel_entry=w_rel.name, worst_rel_scale=w_rel.diff.ref_scale)
                ratios = [e for e in compared if e.bound_ratio is not None]
                if ratios:
                    w_ratio = max(ratios, key=lambda e: e.bound_ratio)
                    info.update(worst_bound_ratio=w_ratio.bound_ratio, worst_bound_ratio_entry=w_ratio.name)
                owns = [e for e in compared if e.own_ratio is not None]
                if owns:
                    w_own = max(owns, key=lambda e: e.own_ratio)
                    info.update(worst_own_ratio=w_own.own_ratio, worst_own_ratio_entry=w_own.name)
            goal = [e for e in rows if e.goal_passed is not None]
            if goal:
                info["goal_failed"] = sum(1 for e in goal if not e.goal_passed)
            out[stage] = info
        return out

    def as_dict(self) -> Dict[str, Any]:
        fd = self.first_divergence
        return {
            "dtype": self.dtype,
            "passed": self.passed,
            "goal_passed": all(e.goal_passed is not False for e in self.entries) if self.goal_applies else None,
            "first_divergence": None if fd is None else dict(fd.as_dict(), localisation=self.localisation),
            "summary": self.summary(),
            "reference_unmatched": list(self.reference_unmatched),
            "entries": [e.as_dict() for e in self.entries],
        }


@dataclasses.dataclass
class ParityResult:
    backends: Tuple[str, str]
    runs: Dict[str, DtypeRun]
    meta: Dict[str, Any]

    @property
    def passed(self) -> bool:
        return all(run.passed for run in self.runs.values())

    @property
    def first_divergence(self) -> Optional[Tuple[str, Entry]]:
        """``(dtype, entry)`` of the earliest failure, float64 first (it is structural)."""
        for dtype in sorted(self.runs, key=lambda d: 0 if d == "float64" else 1):
            if self.runs[dtype].first_divergence is not None:
                return dtype, self.runs[dtype].first_divergence
        return None

    def entry(self, dtype: str, stage: str, name: str) -> Entry:
        for e in self.runs[dtype].entries:
            if e.stage == stage and e.name == name:
                return e
        raise KeyError(f"no {stage} entry {name!r} in the {dtype} run")

    def as_dict(self) -> Dict[str, Any]:
        first = self.first_divergence
        return {
            "format": FORMAT,
            "passed": self.passed,
            "backends": list(self.backends),
            "first_divergence": None if first is None else {
                "dtype": first[0], "stage": first[1].stage, "name": first[1].name, "module": first[1].module,
                "type": first[1].type, "max_abs": first[1].diff.max_abs if first[1].diff else None,
                "max_rel": first[1].diff.max_rel if first[1].diff else None, "status": first[1].status,
                "localisation": self.runs[first[0]].localisation},
            "tolerance_rules": dict(TOLERANCE_RULES),
            "meta": self.meta,
            "runs": {dtype: run.as_dict() for dtype, run in self.runs.items()},
        }


# ------------------------------------------------------------------------------------------------ inputs
def make_weights(spec_module, spec, seed: int, perturb_bn: bool = True) -> Dict[str, np.ndarray]:
    """float64 initial weights from ``spec_module.init_state(spec, rng)``; BN statistics and affine parameters
    perturbed deterministically (running mean U(-0.2, 0.2), running var U(0.5, 1.5), weight U(0.8, 1.2),
    bias U(-0.1, 0.1)), so a wrong epsilon, a swapped mean/var or an ignored affine parameter shows."""
    rng = np.random.default_rng(seed)
    state = {k: np.array(v, dtype=np.float64) for k, v in spec_module.init_state(spec, rng).items()}
    if perturb_bn:
        bn_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB17]))
        for name in sorted(state):
            if not name.endswith(".running_mean") and name != "running_mean":
                continue
            prefix = name[: -len("running_mean")]
            mean = state[name]
            state[name] = mean + bn_rng.uniform(-0.2, 0.2, mean.shape)
            var_key = prefix + "running_var"
            if var_key in state:
                state[var_key] = state[var_key] * bn_rng.uniform(0.5, 1.5, state[var_key].shape)
            if prefix + "weight" in state:
                w = state[prefix + "weight"]
                state[prefix + "weight"] = w * bn_rng.uniform(0.8, 1.2, w.shape)
            if prefix + "bias" in state:
                b = state[prefix + "bias"]
                state[prefix + "bias"] = b + bn_rng.uniform(-0.1, 0.1, b.shape)
    return state


def make_batches(count: int, batch_size: int, channels: int, image_size: int, num_classes: int,
                 seed: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``count`` float64 NCHW batches of N(0, 1) pixels with integer labels < ``num_classes``."""
    out = []
    for k in range(max(1, count)):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xBA7C, k]))
        images = rng.standard_normal((batch_size, channels, image_size, image_size))
        labels = rng.integers(0, num_classes, size=batch_size).astype(np.int64)
        out.append((images, labels))
    return out


def _load_weights_file(path: str) -> Dict[str, np.ndarray]:
    from common.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    return {k: np.array(v, dtype=np.float64) for k, v in ckpt.model.items()}


# ------------------------------------------------------------------------------------------------ running
def _backend_modules(name: str):
    try:
        backend = importlib.import_module(f"{name}_impl.backend")
        capture = importlib.import_module(f"{name}_impl.capture")
    except ModuleNotFoundError as exc:
        raise ParityError(f"parity backend {name!r}: cannot import it ({exc}); known: torch, paddle") from None
    return backend, capture


SPILL_MIN_BYTES = 1 << 20  # arrays of at least this size go to disk when a comparison spills its captures


def _spill(obj: Any, folder: str, counter) -> Any:
    """``obj`` with every large array written to ``folder`` and replaced by a read-only memory map of it, so the
    four captures of a big network (two backends x float64/float32) need not sit in RAM together."""
    if isinstance(obj, np.ndarray):
        if obj.nbytes < SPILL_MIN_BYTES:
            return obj
        path = os.path.join(folder, f"{next(counter)}.npy")
        np.save(path, obj)
        return np.load(path, mmap_mode="r")
    if isinstance(obj, dict):
        return type(obj)((k, _spill(v, folder, counter)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_spill(v, folder, counter) for v in obj)
    return obj


def task_kind_for(family: str, spec_module, spec) -> str:
    """The task the K steps run: the family's search task for a spec that is searched, else classification."""
    from common import families

    commands = spec_module.commands_for(spec) if hasattr(spec_module, "commands_for") else ()
    if "search" in commands:
        return families.task_kind(family, "search")
    return families.task_kind_for_spec(family, "train", spec_module, spec) or "classification"


def _run_backend(name: str, dtype: str, cfg, family: str, spec, weights: Mapping[str, np.ndarray],
                 batches: List[Tuple[np.ndarray, np.ndarray]], groups: Sequence[str], steps: int,
                 lrs: Sequence[float], train_mode: bool, after_load: Optional[Callable],
                 record_inputs: bool, task_kind: str = "classification") -> Dict[str, Any]:
    """Everything one backend computes in one dtype, as numpy (see the module docstring)."""
    from common.random_masks import MaskSource

    backend_mod, cap = _backend_modules(name)
    backend = backend_mod.Backend(device=str(cfg.DEVICE), dtype=dtype)
    out: Dict[str, Any] = {"backend": backend.describe(), "version": backend_mod.framework_version(),
                           "timings": {}}
    label_smoothing = float(cfg.TRAIN.LABEL_SMOOTHING)
    aux_weight = float(cfg.TRAIN.AUX_WEIGHT)
    images, labels = batches[0]

    from common import families

    prepare = getattr(families.spec_module(family), "parity_prepare", None)

    def fresh_model():
        model = backend.build_model(family, spec)
        backend.load_neutral(model, weights, source="parity weights")
        if prepare is not None:  # e.g. the path a supernet runs in the capture
            prepare(model, spec)
        if after_load is not None:
            after_load(name, dtype, model)
        return model

    model = fresh_model()
    out["modules"] = cap.module_table(model)
    out["trainable"] = cap.trainable_names(model)
    out["state_names"] = cap.state_names(model)
    out["initial"] = {k: np.array(v, copy=True) for k, v in backend.state_to_neutral(model).items()}

    # With PARITY.TRAIN_MODE off the "forward" capture runs in eval mode itself; eval_forward would repeat it.
    if "eval_forward" in groups and (train_mode or not {"forward", "backward"} & set(groups)):
        t0 = time.perf_counter()
        res = cap.capture(model, backend, images, labels, train=False, backward=False,
                          label_smoothing=label_smoothing, aux_weight=aux_weight, record_inputs=record_inputs)
        out["eval_forward"] = res["forward"]
        out["eval_forward_inputs"] = res["inputs"]
        out["timings"]["eval_forward"] = time.perf_counter() - t0
    if "forward" in groups or "backward" in groups:
        t0 = time.perf_counter()
        backward = "backward" in groups
        source = MaskSource(int(cfg.SEED))
        res = cap.capture(model, backend, images, labels, train=train_mode, backward=backward, mask_source=source,
                          step=0, label_smoothing=label_smoothing, aux_weight=aux_weight,
                          record_inputs=record_inputs)
        out["forward"] = res["forward"]
        out["forward_inputs"] = res["inputs"]
        out["loss"] = {"loss": res["loss"]}
        out["mask_draws"] = res["mask_draws"]
        if backward:
            out["output_grad"] = res["output_grads"]
            out["input_grad"] = {"images": res["input_grad"]}
            out["grad"] = res["param_grads"]
        out["timings"]["forward_backward" if backward else "forward"] = time.perf_counter() - t0
    searched = task_kind != "classification"
    from common.tasks import task_module

    if "steps" in groups and steps > 0 and searched and hasattr(task_module(name, task_kind).Task, "arch_gradient"):
        t0 = time.perf_counter()
        out["arch_grad"] = {}
        for order, unrolled in (("first-order", False), ("second-order", True)):
            task = backend.make_task(task_kind, fresh_model(), cfg, spec)
            task.unrolled = unrolled
            grads, _, _ = task.arch_gradient(batches[0], batches[1 % len(batches)], float(lrs[0]))
            for arch_name, grad in zip(task.arch_names, grads):
                out["arch_grad"][f"{order} {arch_name}"] = np.array(backend.to_numpy(grad), copy=True)
        out["timings"]["arch_grad"] = time.perf_counter() - t0
    if "steps" in groups and steps > 0:
        t0 = time.perf_counter()
        model = fresh_model()
        search = searched
        trainer = backend.make_task(task_kind, model, cfg, spec) if search else backend.make_trainer(model, cfg, spec)
        other_lrs = {}
        if search:
            from common.engine import build_schedules

            trainer.start_epoch(int(trainer.parity_epoch()))  # the search machinery on
            other_lrs = {n: float(s(0)) for n, s in build_schedules(cfg, trainer).items() if n != "weights"}
        losses = []
        for k in range(steps):
            imgs, labs = batches[k % len(batches)]
            streams = {"train": (imgs, labs)}
            if search:
                streams["search"] = batches[(k + 1) % len(batches)]
            stats = trainer.train_step(streams, {"weights": float(lrs[k]), **other_lrs}, k)
            losses.append((f"step {k}", np.asarray(stats["loss"], dtype=np.float64)))
        out["train_loss"] = losses
        if search:
            derived = getattr(trainer, "parity_derived", None)
            if derived is not None:
                out["derived"] = {k: np.asarray(v) for k, v in derived().items()}
        ckpt = trainer.to_checkpoint()
        trainable = set(out["trainable"])
        out["weight"] = {k: v for k, v in ckpt.model.items() if k in trainable}
        out["running_stat"] = {k: v for k, v in ckpt.model.items() if k not in trainable}
        out["update"] = {k: np.asarray(v, np.float64) - np.asarray(out["initial"][k], np.float64)
                         for k, v in out["weight"].items()}
        out["ema"] = dict(ckpt.ema) if ckpt.ema is not None else {}
        slots: Dict[str, np.ndarray] = {}
        for opt_name, state in ckpt.optimizers.items():
            for slot, per_param in state.slots.items():
                for pname, arr in per_param.items():
                    label = slot if opt_name == "weights" else f"{opt_name} {slot}"
                    slots[f"{pname} [{label}]"] = np.asarray(arr)
        out["optimizer_slot"] = slots
        names = {n: st.name for n, st in ckpt.optimizers.items()}
        out["optimizer_name"] = (names["weights"] if list(names) == ["weights"]
                                 else ", ".join(f"{n}: {o}" for n, o in names.items()) or None)
        out["timings"]["steps"] = time.perf_counter() - t0
    return out


# ------------------------------------------------------------------------------------------------ comparing
def _module_order(cap: Dict[str, Any]) -> Dict[str, int]:
    """module name -> index of its first output in execution order (train forward, else eval forward)."""
    order: Dict[str, int] = {}
    for records in (cap.get("forward"), cap.get("eval_forward")):
        if not records:
            continue
        for i, r in enumerate(records):
            order.setdefault(r["module"], i)
        if order:
            break
    return order


def _owner(param: str) -> str:
    head = param.split(" [", 1)[0]
    return head.rpartition(".")[0] or "(model)"


def _stage_items(cap: Dict[str, Any], stage: str) -> List[Tuple[str, Any, str, str]]:
    """``[(key, array, module, type)]`` of ``stage`` in the report order of that stage."""
    if stage not in cap:
        return []
    value = cap[stage]
    types = dict(cap.get("modules", []))
    if stage in ("eval_forward", "forward"):
        return [(r["key"], r["array"], r["module"], r["type"]) for r in value]
    if stage == "output_grad":
        first: Dict[str, Any] = {}
        for key, arr in value:           # a tensor seen twice (hooked twice) keeps its first gradient
            first.setdefault(key, arr)
        return [(k, a, k.split("[", 1)[0].split("#", 1)[0], types.get(k.split("[", 1)[0].split("#", 1)[0], ""))
                for k, a in first.items()]
    if stage in ("loss", "input_grad", "arch_grad", "derived"):
        return [(k, a, "(model)", types.get("(model)", "")) for k, a in value.items()]
    if stage == "train_loss":
        return [(k, a, "(model)", types.get("(model)", "")) for k, a in value]
    order = _module_order(cap)
    unused = len(order) + 1
    if stage == "grad":
        items = list(value)
        definition = {k: i for i, (k, _) in enumerate(items)}
        # backward order: the module that ran last gets its gradient first; unused parameters at the end.
        items.sort(key=lambda kv: (order.get(_owner(kv[0]), -1) < 0, -order.get(_owner(kv[0]), -1),
                                   definition[kv[0]]))
        return [(k, a, _owner(k), types.get(_owner(k), "")) for k, a in items]
    names = list(value.keys())
    definition = {k: i for i, k in enumerate(cap.get("state_names", []))}

    def key(name: str):
        base = name.split(" [", 1)[0]
        return (order.get(_owner(name), unused), definition.get(base, len(definition)), name)

    names.sort(key=key)
    return [(k, value[k], _owner(k), types.get(_owner(k), "")) for k in names]


def _merge_order(items_a, items_b) -> List[str]:
    keys = [k for k, *_ in items_a]
    seen = set(keys)
    keys += [k for k, *_ in items_b if k not in seen]
    return keys


def _dtype_name(arr: Any) -> str:
    return "" if arr is None else str(np.asarray(arr).dtype)


def _verdict_f64(diff: Diff) -> Tuple[float, bool]:
    tol = F64_TOL * max(1.0, diff.ref_scale)
    return tol, (diff.nonfinite == 0 and diff.max_abs <= tol)


def _own_error(arr32: Any, arr64: Any) -> Optional[float]:
    if arr64 is None or arr32 is None:
        return None
    a32, a64 = np.asarray(arr32, np.float64), np.asarray(arr64, np.float64)
    if a32.shape != a64.shape:
        return None
    if a32.size == 0:
        return 0.0
    return float(np.nanmax(np.abs(a32 - a64)))


def _compare_inputs(ins_a: Optional[List[np.ndarray]], ins_b: Optional[List[np.ndarray]]):
    """(max_abs, max_rel, f64-rule-passed) over the floating inputs of one module call."""
    if ins_a is None or ins_b is None or len(ins_a) != len(ins_b) or not ins_a:
        return None, None, None
    worst_abs, worst_rel, ok = 0.0, 0.0, True
    for x, y in zip(ins_a, ins_b):
        if x.shape != y.shape:
            return math.inf, math.inf, False
        d = compare(x, y)
        worst_abs, worst_rel = max(worst_abs, d.max_abs), max(worst_rel, d.max_rel)
        ok &= _verdict_f64(d)[1]
    return worst_abs, worst_rel, ok


def _call_key(key: str) -> str:
    """``blocks.0#2[1]`` -> ``blocks.0#2`` (the key the module call's inputs are stored under)."""
    return key.split("[", 1)[0]


def compare_captures(dtype: str, names: Tuple[str, str], cap_a: Dict[str, Any], cap_b: Dict[str, Any],
                     cap64_a: Optional[Dict[str, Any]] = None, cap64_b: Optional[Dict[str, Any]] = None,
                     c: float = F32_C, reference: Optional[Reference] = None,
                     train_mode: bool = True) -> DtypeRun:
    """Compare two backends' captures of one dtype (float32 needs both backends' float64 captures too)."""
    entries: List[Entry] = []
    float32 = dtype != "float64"
    a_name, b_name = names
    for stage in STAGES:
        items_a, items_b = _stage_items(cap_a, stage), _stage_items(cap_b, stage)
        if not items_a and not items_b:
            continue
        look_a = {k: (arr, mod, typ) for k, arr, mod, typ in items_a}
        look_b = {k: (arr, mod, typ) for k, arr, mod, typ in items_b}
        look64_a = {k: arr for k, arr, *_ in _stage_items(cap64_a, stage)} if cap64_a else {}
        look64_b = {k: arr for k, arr, *_ in _stage_items(cap64_b, stage)} if cap64_b else {}
        inputs_key = {"eval_forward": "eval_forward_inputs", "forward": "forward_inputs"}.get(stage)
        for order, key in enumerate(_merge_order(items_a, items_b)):
            arr_a, mod, typ = look_a.get(key, (None, None, None))
            arr_b, mod_b, typ_b = look_b.get(key, (None, None, None))
            entry = Entry(stage=stage, name=key, order=order, module=mod or mod_b or "", type=typ or typ_b or "")
            if typ and typ_b and typ != typ_b:
                entry.type = f"{typ} / {typ_b}"
            entries.append(entry)
            if key not in look_a or key not in look_b:
                entry.status = f"missing:{a_name if key not in look_a else b_name}"
                entry.note = f"only in {b_name if key not in look_a else a_name}"
                entry.shape_a = list(np.shape(arr_a)) if arr_a is not None else None
                entry.shape_b = list(np.shape(arr_b)) if arr_b is not None else None
                entry.dtype_a, entry.dtype_b = _dtype_name(arr_a), _dtype_name(arr_b)
                continue
            if arr_a is None or arr_b is None:      # a parameter backward did not reach
                if arr_a is None and arr_b is None:
                    entry.status, entry.passed, entry.note = "no_grad", True, "no gradient in either backend"
                else:
                    entry.status = "missing:" + (a_name if arr_a is None else b_name)
                    entry.note = f"no gradient in {a_name if arr_a is None else b_name} only"
                continue
            arr_a, arr_b = np.asarray(arr_a), np.asarray(arr_b)
            entry.shape_a, entry.shape_b = list(arr_a.shape), list(arr_b.shape)
            entry.dtype_a, entry.dtype_b = str(arr_a.dtype), str(arr_b.dtype)
            if arr_a.shape != arr_b.shape:
                entry.status, entry.note = "shape", f"shapes differ: {list(arr_a.shape)} vs {list(arr_b.shape)}"
                continue
            diff = compare(arr_a, arr_b, key)
            entry.diff = diff
            if not float32:
                entry.tol_abs, entry.passed = _verdict_f64(diff)
            else:
                ea, eb = _own_error(arr_a, look64_a.get(key)), _own_error(arr_b, look64_b.get(key))
                entry.own_err_a, entry.own_err_b = ea, eb
                if ea is None or eb is None:
                    entry.note = "no float64 counterpart to derive the float32 bound from"
                    entry.passed = False
                else:
                    entry.tol_abs = c * max(ea, eb)
                    entry.passed = diff.nonfinite == 0 and diff.max_abs <= entry.tol_abs
                if stage in FORWARD_STAGES:
                    entry.goal_passed = diff.nonfinite == 0 and diff.max_rel <= F32_GOAL_REL
            if inputs_key and cap_a.get(inputs_key) is not None:
                ck = _call_key(key)
                ia, ir, ok = _compare_inputs(cap_a[inputs_key].get(ck), cap_b.get(inputs_key, {}).get(ck))
                entry.input_max_abs, entry.input_max_rel, entry.input_passed = ia, ir, ok
    run = DtypeRun(dtype=dtype, entries=entries, goal_applies=float32, train_mode=train_mode)
    reference = Reference.coerce(reference)
    if reference is not None and (reference.dtypes is None or dtype in reference.dtypes):
        _attach_reference(run, reference, names, cap_a, cap_b)
    _find_first_divergence(run, names)
    return run


def _attach_reference(run: DtypeRun, reference: Reference, names: Tuple[str, str], cap_a, cap_b) -> None:
    if reference.stage not in STAGES:
        raise ParityError(f"reference {reference.name!r}: stage {reference.stage!r} is not one of {list(STAGES)}")
    arrays = {k: np.asarray(v) for k, v in reference.arrays.items()}
    look = {"a": {k: a for k, a, *_ in _stage_items(cap_a, reference.stage)},
            "b": {k: a for k, a, *_ in _stage_items(cap_b, reference.stage)}}
    matched = set()
    for entry in run.stage_entries(reference.stage):
        if entry.name not in arrays:
            continue
        matched.add(entry.name)
        ref = arrays[entry.name]
        ok = True
        for side, backend in zip(("a", "b"), names):
            arr = look[side].get(entry.name)
            if arr is None or np.shape(arr) != ref.shape:
                ok = False
                continue
            d = compare(arr, ref, entry.name)
            entry.reference[backend] = d
            if reference.rel_tol is not None:
                ok &= d.nonfinite == 0 and d.max_rel <= reference.rel_tol
        entry.ref_passed = ok if reference.rel_tol is not None or not ok else None
    run.reference_unmatched = sorted(set(arrays) - matched)


def _find_first_divergence(run: DtypeRun, names: Tuple[str, str]) -> None:
    for entry in run.entries:                    # entries are in stage order, then report order
        if entry.passed and entry.ref_passed is not False:
            continue
        run.first_divergence = entry
        run.localisation = _localise(run, entry, names)
        return


def _localise(run: DtypeRun, entry: Entry, names: Tuple[str, str]) -> str:
    a, b = names
    if entry.status.startswith("missing") or entry.status == "shape":
        return f"structure: {entry.note} (the two models differ in {entry.stage} entries)"
    if entry.passed and entry.ref_passed is False:
        return f"{a} and {b} agree here; the reference column parts"
    where = STAGE_TITLES[entry.stage]
    if entry.stage == "forward" and not run.train_mode:
        where = "forward, eval mode (the differentiated pass)"
    if entry.stage in ("eval_forward", "forward"):
        if entry.input_max_rel is None:
            return f"{where}: first module output that parts (its inputs were not recorded)"
        if run.dtype == "float64":
            if entry.input_passed:
                return (f"{where}: the inputs of `{entry.module}` agree (max_rel {entry.input_max_rel:.2e}) but its "
                        f"output parts (max_rel {entry.max_rel:.2e}): `{entry.module}` ({entry.type}) itself "
                        f"computes differently")
            return (f"{where}: the inputs of `{entry.module}` already differ (max_rel {entry.input_max_rel:.2e}) "
                    "although every earlier module output agreed: the divergence is in code between modules "
                    "(a functional op in the parent's forward)")
        return (f"{where}: inputs max_rel {entry.input_max_rel:.2e}, output max_rel {entry.max_rel:.2e} "
                f"(bound ratio {entry.bound_ratio if entry.bound_ratio is not None else float('nan'):.3g})")
    if entry.stage == "loss":
        return (f"{where}: every module output agreed but the loss parts: the loss (cross-entropy, label smoothing) "
                "differs")
    if entry.stage == "output_grad":
        return (f"{where}: every forward output agreed; the gradient w.r.t. the output of `{entry.module}` is the "
                "first to part in backward order, so the backward of the module that consumes it differs")
    if entry.stage in ("input_grad", "grad"):
        return f"{where}: the forward outputs and module-output gradients agreed; first gradient to part"
    post = []
    for stage in ("weight", "running_stat", "ema", "optimizer_slot"):
        rows = run.stage_entries(stage)
        if rows:
            post.append(f"{sum(1 for e in rows if not e.passed)}/{len(rows)} {STAGE_TITLES[stage]}")
    after = f"; after the steps: {', '.join(post)} tensors part" if post else ""
    if entry.stage == "train_loss":
        return (f"{where}: the forward pass and gradients of batch 0 agreed but `{entry.name}` parts, so an earlier "
                f"optimizer update differs{after}")
    if entry.stage == "running_stat":
        return (f"{where}: forward outputs, gradients and weights agreed but the running statistics of "
                f"`{entry.module}` ({entry.type}) were updated differently (momentum, biased/unbiased variance)"
                f"{after}")
    if entry.stage == "ema":
        return f"{where}: the weights and buffers agreed; the EMA update differs{after}"
    return f"{where}: forward and gradients agreed; the optimizer update differs{after}"


# ------------------------------------------------------------------------------------------------ API
def _resolve_groups(stages: Optional[Iterable[str]]) -> Tuple[str, ...]:
    if stages is None:
        return DEFAULT_GROUPS
    groups = []
    for s in stages:
        if s in STAGE_GROUPS:
            groups.append(s)
        else:
            owner = [g for g, members in STAGE_GROUPS.items() if s in members]
            if not owner:
                raise ParityError(f"stages: {s!r} is not one of {sorted(STAGE_GROUPS)} (or a stage of {list(STAGES)})")
            groups.append(owner[0])
    return tuple(dict.fromkeys(groups))


def default_lrs(cfg, steps: int) -> List[float]:
    """The LR of update k of the K parity steps: ``build_schedule(cfg).lr_for(0, k, K)``."""
    from common.schedules import build_schedule

    schedule = build_schedule(cfg)
    return [float(schedule.lr_for(0, k, max(1, steps))) for k in range(steps)]


def compare_backends(cfg, spec_module, spec, *, family: Optional[str] = None, stages: Optional[Iterable[str]] = None,
                     steps: Optional[int] = None, dtypes: Optional[Sequence[str]] = None,
                     backends: Optional[Sequence[str]] = None, weights: Optional[Mapping[str, np.ndarray]] = None,
                     batches: Optional[List[Tuple[np.ndarray, np.ndarray]]] = None,
                     train_mode: Optional[bool] = None, lrs: Optional[Sequence[float]] = None,
                     reference: Any = None, after_load: Optional[Callable[[str, str, Any], None]] = None,
                     c: float = F32_C, record_inputs: bool = True, verbose: bool = False,
                     spill: bool = False) -> ParityResult:
    """Run ``spec`` in two backends on the same float64 weights and batches and compare everything.

    ``cfg``: a config (``MODEL.*``, ``DATA.*``, ``OPTIM.*``, ``TRAIN.*``, ``PARITY.*``); keyword arguments override
    ``PARITY.*``.  ``stages``: groups among ``eval_forward``, ``forward``, ``backward``, ``steps`` (default all).
    ``weights``: canonical float64 arrays (default :func:`make_weights`).  ``batches``: ``[(images, labels)]``, batch
    0 for the captures, batch k for step k (default :func:`make_batches` from ``cfg.SEED``).  ``lrs``: the LR of
    each step (default :func:`default_lrs`).  ``reference``: a :class:`Reference` (third column).
    ``after_load(backend, dtype, model)`` runs after the weights are loaded into each model (tests sabotage a layer
    there).  float32 runs always come with float64 runs (their bounds need them).  ``spill``: keep each finished
    run's large arrays on disk (memory-mapped, in a temporary folder) instead of in RAM.
    """
    family = family or str(cfg.MODEL.FAMILY)
    names = tuple(backends or cfg.PARITY.BACKENDS)
    if len(names) != 2 or names[0] == names[1]:
        raise ParityError(f"PARITY.BACKENDS must name two different backends, got {list(names)}")
    wanted = [str(d) for d in (dtypes or cfg.PARITY.DTYPES)]
    for d in wanted:
        if d not in ("float64", "float32"):
            raise ParityError(f"PARITY.DTYPES: {d!r} is not float64 or float32")
    run_dtypes = list(dict.fromkeys((["float64"] if "float32" in wanted else []) + wanted))
    run_dtypes.sort(key=lambda d: 0 if d == "float64" else 1)
    groups = _resolve_groups(stages)
    steps = int(cfg.PARITY.STEPS if steps is None else steps)
    train_mode = bool(cfg.PARITY.TRAIN_MODE if train_mode is None else train_mode)
    seed = int(cfg.SEED)
    weights_note = "caller-supplied float64 arrays"
    if weights is None:
        weights = make_weights(spec_module, spec, seed)
        weights_note = "numpy init_state(spec, default_rng(SEED)) with perturbed BN statistics and affine parameters"
    weights = {k: np.asarray(v, dtype=np.float64) if np.issubdtype(np.asarray(v).dtype, np.floating)
               else np.asarray(v) for k, v in weights.items()}
    if batches is None:
        batches = make_batches(max(1, steps), int(cfg.PARITY.BATCH_SIZE), int(cfg.DATA.CHANNELS),
                               int(cfg.DATA.IMAGE_SIZE), int(cfg.MODEL.NUM_CLASSES), seed)
    if lrs is None:
        lrs = default_lrs(cfg, steps)
    if len(lrs) < steps:
        raise ParityError(f"lrs: {len(lrs)} learning rates for {steps} steps")
    reference = Reference.coerce(reference)

    caps: Dict[Tuple[str, str], Dict[str, Any]] = {}
    t_start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        spill_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="parity_spill_")) if spill else None
        counter = itertools.count()
        for dtype in run_dtypes:
            for name in names:
                t0 = time.perf_counter()
                cap = _run_backend(name, dtype, cfg, family, spec, weights, batches, groups, steps, lrs,
                                   train_mode, after_load, record_inputs, task_kind_for(family, spec_module, spec))
                caps[(name, dtype)] = _spill(cap, spill_dir, counter) if spill_dir else cap
                del cap
                if verbose:
                    print(f"parity: {name} {dtype} done in {time.perf_counter() - t0:.1f}s", flush=True)
        return _compare_runs(caps, cfg, spec_module, spec, family, names, wanted, run_dtypes, groups, steps, lrs,
                             batches, seed, train_mode, reference, c, weights_note, t_start)


def _compare_runs(caps, cfg, spec_module, spec, family, names, wanted, run_dtypes, groups, steps, lrs, batches,
                  seed, train_mode, reference, c, weights_note, t_start) -> ParityResult:
    """The verdicts of :func:`compare_backends` from its captures, plus the report's metadata."""
    runs: Dict[str, DtypeRun] = {}
    for dtype in run_dtypes:
        if dtype not in wanted:
            continue
        a, b = caps[(names[0], dtype)], caps[(names[1], dtype)]
        if dtype == "float64":
            runs[dtype] = compare_captures(dtype, names, a, b, reference=reference, train_mode=train_mode)
        else:
            runs[dtype] = compare_captures(dtype, names, a, b, caps[(names[0], "float64")],
                                           caps[(names[1], "float64")], c=c, reference=reference,
                                           train_mode=train_mode)
    first_cap = caps[(names[0], run_dtypes[0])]
    meta = {
        "family": family,
        "model": str(cfg.MODEL.NAME),
        "spec": _describe(spec_module, spec),
        "backends": {n: {"version": caps[(n, run_dtypes[0])]["version"],
                         "describe": {d: caps[(n, d)]["backend"] for d in run_dtypes},
                         "timings_s": {d: caps[(n, d)]["timings"] for d in run_dtypes}} for n in names},
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(cfg.DEVICE),
        "dtypes": wanted,
        "dtypes_run": run_dtypes,
        "stages": [s for g in groups for s in STAGE_GROUPS[g]],
        "train_mode": train_mode,
        "steps": steps if "steps" in groups else 0,
        "lrs": [float(x) for x in lrs[:steps]] if "steps" in groups else [],
        "optimizer": first_cap.get("optimizer_name"),
        "ema_decay": float(cfg.TRAIN.EMA_DECAY),
        "label_smoothing": float(cfg.TRAIN.LABEL_SMOOTHING),
        "batch_shape": list(np.shape(batches[0][0])),
        "labels": [np.asarray(lab).tolist() for _, lab in batches[: max(1, steps)]],
        "batches": len(batches),
        "seed": seed,
        "c": c,
        "mask_draws": first_cap.get("mask_draws"),
        "modules": len(first_cap.get("modules", [])),
        "trainable_parameters": len(first_cap.get("trainable", [])),
        "reference": None if reference is None else {"name": reference.name, "stage": reference.stage,
                                                     "rel_tol": reference.rel_tol, "entries": len(reference.arrays),
                                                     "note": reference.note},
        "weights": weights_note,
        "elapsed_s": time.perf_counter() - t_start,
    }
    try:
        from common.config import config_to_dict

        meta["config"] = config_to_dict(cfg)
    except Exception:  # a plain mapping used as config
        meta["config"] = None
    return ParityResult(backends=names, runs=runs, meta=meta)


def _describe(spec_module, spec) -> Any:
    fn = getattr(spec_module, "describe", None)
    if fn is None:
        return None
    try:
        return fn(spec)
    except Exception as exc:  # the report still helps without it
        return {"error": f"describe failed: {exc}"}


def _available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux); elsewhere a figure that never triggers spilling on its own."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def _capture_bytes_estimate(spec_module, spec, batch: int, image_size: int) -> int:
    """A float64 capture's size, roughly: ~8 parameter-sized records (initial, gradient, weights, update, EMA,
    optimizer slots) plus 4 activation-sized ones per module output (forward, input, output gradient, eval),
    the activations estimated from the MACs (a conv's output elements ~ its MACs / its fan-in, taken as 100)."""
    params = int(spec_module.count_params(spec)) if hasattr(spec_module, "count_params") else 0
    macs = int(spec_module.count_macs(spec, image_size)) if hasattr(spec_module, "count_macs") else 0
    return 8 * (8 * params + 4 * batch * macs // 100)


def reference_function(cfg, spec_module) -> Optional[Callable[..., Any]]:
    """Who supplies the third column: the spec module's own ``parity_reference`` when it has one, else the entry of
    ``cfg.MODEL.FAMILY`` in :data:`parity_tests.references.REFERENCES` (the PNASNet TF column), else None."""
    own = getattr(spec_module, "parity_reference", None)
    if own is not None:
        return own
    from parity_tests import references

    return references.reference_for(str(cfg.MODEL.FAMILY))


def run_from_config(cfg, spec_module, spec, report_dir: str, reference: Any = None,
                    stages: Optional[Iterable[str]] = None, verbose: bool = True) -> int:
    """``tools/main.py parity``: compare, write ``parity.json`` / ``parity.md`` in ``report_dir``, print a summary.

    Weights: ``MODEL.WEIGHTS`` (a neutral checkpoint) when set, else :func:`make_weights`.  A spec module with
    ``parity_reference(cfg, spec, weights, images)``, or the family's entry in ``parity_tests/references.py``,
    supplies a third column (:func:`reference_function`).  Returns 0 when every verdict passes, 1 otherwise."""
    from parity_tests import report

    result = compute_from_config(cfg, spec_module, spec, reference, stages, verbose)
    json_path, md_path = report.write_reports(result.as_dict(), report_dir)
    print(report.console_summary(result.as_dict()))
    print(f"parity reports: {json_path}\n                {md_path}")
    return 0 if result.passed else 1


def compute_from_config(cfg, spec_module, spec, reference: Any = None, stages: Optional[Iterable[str]] = None,
                        verbose: bool = True):
    """The comparison :func:`run_from_config` reports (``parity_tests/suite.py`` runs it for every family)."""
    seed = int(cfg.SEED)
    weights = _load_weights_file(cfg.MODEL.WEIGHTS) if cfg.MODEL.WEIGHTS else make_weights(spec_module, spec, seed)
    steps = int(cfg.PARITY.STEPS)
    batches = make_batches(max(1, steps), int(cfg.PARITY.BATCH_SIZE), int(cfg.DATA.CHANNELS),
                           int(cfg.DATA.IMAGE_SIZE), int(cfg.MODEL.NUM_CLASSES), seed)
    if reference is None:
        make_reference = reference_function(cfg, spec_module)
        if make_reference is not None:
            reference = make_reference(cfg, spec, weights, batches[0][0])
    # Spill each finished run to disk when the four captures would not fit in RAM with room to spare.
    size = _capture_bytes_estimate(spec_module, spec, int(cfg.PARITY.BATCH_SIZE), int(cfg.DATA.IMAGE_SIZE))
    spill = 4 * size > 0.25 * _available_memory_bytes()
    result = compare_backends(cfg, spec_module, spec, weights=weights, batches=batches, reference=reference,
                              stages=stages, verbose=verbose, spill=spill)
    result.meta["weights"] = (f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS} (cast to float64)" if cfg.MODEL.WEIGHTS else
                              "numpy init_state(spec, default_rng(SEED)) with perturbed BN statistics and affine "
                              "parameters")
    return result
