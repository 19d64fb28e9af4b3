"""What a task is, written once: the framework-free half of every task (declarations and bookkeeping).

A *task* is what ``common/engine.Loop`` trains: it owns its step(s), its loss, its metrics and its checkpoint
state.  Each kind has three files with the same class names:

  ``common/tasks/<kind>.py``        the framework-free base: data streams, optimizers and their config nodes,
                                   metric fields, the score, how evaluation sums are turned into metrics
  ``torch_impl/tasks/<kind>.py``    ``Task(<base>)``: the tensor work in PyTorch
  ``paddle_impl/tasks/<kind>.py``   ``Task(<base>)``: the same in Paddle

``backend.make_task(kind, model, cfg, spec)`` builds one.  The loop talks to a task only through
:class:`TaskBase`'s methods below, so a search (two optimizers, two data streams, a board in ``extra``) runs in
the same loop as image classification.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from common.checkpoint import Checkpoint, CheckpointError

Batch = Tuple[np.ndarray, np.ndarray]


class NonFiniteError(RuntimeError):
    """A loss, output, gradient or weight is NaN or infinite; the message says which (the loop adds where)."""


class TaskBase:
    """The contract between the loop and a task.  Subclasses set the class attributes and implement the methods
    marked *backend*; everything else has a framework-free default here."""

    #: task kind (the module name under ``*/tasks/``)
    kind: str = ""
    #: data streams one training step consumes (one batch of each), e.g. ``("train", "search")``
    streams: Tuple[str, ...] = ("train",)
    #: optimizer name -> config node it is built from (``OPTIM``, ``ARCH_OPTIM``, ``META_OPTIM``)
    optimizer_nodes: Mapping[str, str] = {"weights": "OPTIM"}
    #: per-step statistics averaged (weighted by ``count``) over an epoch into ``train_<name>``
    train_stats: Tuple[str, ...] = ("loss",)
    #: evaluation metrics, per variant (``val``, ``ema_val``) -> ``<variant>_<name>``
    eval_stats: Tuple[str, ...] = ("loss",)
    #: per-stat scale applied when the epoch means are reported (e.g. accuracy as a percentage)
    stat_scale: Mapping[str, float] = {}
    #: a task with a ``search`` stream: the share of the train split in the ``train`` stream (the rest is ``search``
    #: and the evaluation set; ``common/engine.build_streams``)
    train_portion: float = 0.5

    # ------------------------------------------------------------------------------------------ declarations
    def eval_variants(self) -> List[str]:
        """Prefixes of the evaluations run each evaluation epoch (``val``; ``ema_val`` when an EMA exists)."""
        return ["val"]

    def score_key(self) -> Optional[str]:
        """The metric that decides ``best`` (higher is better), or None when the task keeps no best."""
        return None

    #: whether a higher (``max``) or a lower (``min``, an error) :meth:`score_key` value is better
    score_mode: str = "max"

    def lr_fields(self) -> List[str]:
        """metrics.csv columns of the learning rates: ``lr`` for the weights, ``lr_<name>`` for the others."""
        return ["lr" if name == "weights" else f"lr_{name}" for name in self.optimizer_nodes]

    def metric_fields(self) -> List[str]:
        """Every metrics.csv column, in order."""
        fields = ["epoch", *self.lr_fields(), *(f"train_{s}" for s in self.train_stats)]
        for variant in self.eval_variants():
            fields += [f"{variant}_{s}" for s in self.eval_stats]
        return fields + list(self.extra_fields()) + ["images_per_s", "epoch_seconds"]

    def extra_fields(self) -> Sequence[str]:
        """Further numeric columns the task reports at epoch end (:meth:`epoch_end`)."""
        return ()

    # ------------------------------------------------------------------------------------------ steps (backend)
    def train_step(self, batches: Mapping[str, Batch], lrs: Mapping[str, float], step: int) -> Dict[str, float]:
        """One update from one batch of each stream; returns ``count`` (samples) and :attr:`train_stats`.
        Raises :class:`NonFiniteError` before touching the weights when the loss, outputs or gradients are
        not finite."""
        raise TypeError(f"{type(self).__name__} does not define train_step")

    def eval_batch(self, images: np.ndarray, labels: np.ndarray, variant: str) -> Dict[str, float]:
        """Sums over one batch: ``count``, ``nonfinite`` (samples whose outputs are not all finite) and one sum
        per :attr:`eval_stats` entry (divided by the total count by :meth:`finish_eval`)."""
        raise TypeError(f"{type(self).__name__} does not define eval_batch")

    # ------------------------------------------------------------------------------------------ state
    # Written once for every task that keeps ``self.backend``, ``self.model``, ``self.ema`` (a backend ``ModelEma``
    # or None) and ``self.optimizers`` ({name: twin optimizer}); a task with more state extends them (``extra``).
    backend: Any = None
    model: Any = None
    #: the run folder (set by the loop; None outside a run): where a task writes its own files (a genotype)
    run_dir: Optional[str] = None
    ema: Any = None
    optimizers: Dict[str, Any] = {}

    def nonfinite_weights(self) -> List[str]:
        """Names of weights (EMA included, as ``ema:<name>``) holding NaN or inf; empty when all are finite."""
        names = nonfinite_names(self.backend.state_to_neutral(self.model))
        if self.ema is not None:
            names += [f"ema:{name}" for name in nonfinite_names(self.ema.state_to_neutral())]
        return names

    def to_checkpoint(self) -> Checkpoint:
        return Checkpoint(
            model=self.backend.state_to_neutral(self.model),
            ema=self.ema.state_to_neutral() if self.ema is not None else None,
            optimizers={name: opt.state_to_neutral() for name, opt in self.optimizers.items()},
        )

    def load_checkpoint(self, ckpt: Checkpoint, source: str = "<memory>") -> None:
        """Model, EMA and every optimizer from ``ckpt`` (written by either backend); names and shapes checked."""
        self.backend.load_neutral(self.model, ckpt.model, source)
        if self.ema is not None:
            if ckpt.ema is None:
                raise CheckpointError(f"{source}: the run keeps an EMA (TRAIN.EMA_DECAY > 0) but the checkpoint has none")
            self.ema.load_neutral(ckpt.ema, source)
        for name, opt in self.optimizers.items():
            if name not in ckpt.optimizers:
                raise CheckpointError(f"{source}: no {name!r} optimizer state, so training cannot resume from it "
                                      "(use MODEL.WEIGHTS to start from its weights instead)")
            opt.load_neutral(ckpt.optimizers[name], source)

    # ------------------------------------------------------------------------------------------ hooks with defaults
    def start_epoch(self, epoch: int) -> None:
        """Called before the first step of every epoch (a search re-samples, a schedule moves)."""

    def set_momenta(self, momenta: Mapping[str, float]) -> None:
        """The momentum (Adam beta1, SGD momentum) of the coming update, per optimizer, from a schedule that cycles
        it (``one_cycle``)."""
        for name, value in momenta.items():
            self.optimizers[name].set_momentum(value)

    def epoch_end(self, epoch: int) -> Dict[str, Any]:
        """Numbers for :meth:`extra_fields`, and under ``"_log"`` lines for the log (a genotype); called after the
        last step of the epoch."""
        return {}

    def finish_eval(self, sums: Mapping[str, float]) -> Dict[str, float]:
        """Metrics from the summed :meth:`eval_batch` results."""
        count = sums.get("count", 0.0)
        if not count:
            return {}
        return {s: self.stat_scale.get(s, 1.0) * sums[s] / count for s in self.eval_stats}

    def mean_train_stats(self, sums: Mapping[str, float], count: float) -> Dict[str, float]:
        return {f"train_{s}": self.stat_scale.get(s, 1.0) * sums[s] / count for s in self.train_stats}


def task_module(backend_name: str, kind: str):
    """``<backend>_impl.tasks.<kind>`` (imported only now)."""
    return importlib.import_module(f"{backend_name}_impl.tasks.{kind}")


def nonfinite_names(tensors: Mapping[str, np.ndarray]) -> List[str]:
    """Names of the floating arrays in ``tensors`` that hold NaN or inf."""
    return [name for name, array in tensors.items()
            if np.issubdtype(np.asarray(array).dtype, np.floating) and not np.isfinite(array).all()]
