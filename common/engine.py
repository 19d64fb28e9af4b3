"""The one training loop, written once for every system and both backends (framework-free).

:class:`Loop` runs a *task* (``common/tasks``: image classification today; the searches build on it) over
epochs of steps.  A step takes one batch of each of the task's data streams (numpy loaders from ``common/data``)
and the learning rate of each of its named optimizers (``common/schedules``, one schedule per optimizer); the
task does the tensor work.  Around the steps the loop keeps, in the style of detectron2's trainer:

  * progress bars, ``train.log``, ``metrics.csv`` (the task declares the columns) and TensorBoard scalars;
  * evaluation every ``TRAIN.EVAL_EVERY`` epochs on the validation loader, for each variant the task names
    (``val``, ``ema_val``), and ``best`` by the task's score;
  * checkpoints (``common/checkpoint``): ``last`` every epoch, ``best`` when the score improves, ``epoch-NNNN``
    every ``TRAIN.CKPT_EVERY`` epochs (the newest ``TRAIN.KEEP_CHECKPOINTS`` kept); each carries the whole
    metrics history, so ``RESUME auto`` rewrites ``metrics.csv`` with every finished epoch exactly once;
  * the non-finite stop: a NaN or infinite loss, output, gradient or weight stops the run naming epoch and step,
    before anything is scored, marked best or saved (the last good checkpoint stays);
  * hooks (:class:`Hook`) called before/after the run, each epoch and each step; :meth:`Loop.run_step` is the
    step a subclass overrides.

Resume: data order and augmentation are functions of (seed, epoch, sample), framework RNGs are re-seeded from
(seed, epoch) at every epoch start and dropout masks from (seed, step), so a resumed run repeats the
uninterrupted one.  ``rank``/``world_size`` go to the loaders (the seam for distributed runs).

A run folder holds ``config.yaml``, ``train.log``, ``metrics.csv``, ``tensorboard/``, ``last.safetensors``,
``best.safetensors`` and ``epoch-NNNN.safetensors``.  :func:`prepare_run_dir` refuses to train into a folder that
already holds a run unless it is resumed, and removes temporary files a killed save left behind.
"""
from __future__ import annotations

import csv
import glob
import logging
import math
import os
import re
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from common.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from common.config import config_to_dict
from common.tasks import NonFiniteError, TaskBase

CHECKPOINT_NAMES = ("last.safetensors", "best.safetensors")
RUN_FILES = ("metrics.csv",) + CHECKPOINT_NAMES


class TrainingError(RuntimeError):
    """The run cannot continue (non-finite values, unusable resume state); the message says where."""


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed for the framework RNG (dropout, drop path) during ``epoch``; a pure function so resume repeats it."""
    return int(np.random.SeedSequence([seed, epoch, 0x5EED]).generate_state(1)[0])


def get_logger(run_dir: str, name: str, write: bool = True) -> logging.Logger:
    """``<run_dir>/<name>.log`` and the console; ``write`` False (a process other than rank 0): a silent logger."""
    logger = logging.getLogger(f"twinnas.{name}.{os.path.abspath(run_dir)}" + ("" if write else ".quiet"))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not write:
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())
        return logger
    if not logger.handlers:
        fmt = logging.Formatter("%(asctime)s | %(message)s", "%Y-%m-%d %H:%M:%S")
        os.makedirs(run_dir, exist_ok=True)
        file_handler = logging.FileHandler(os.path.join(run_dir, f"{name}.log"))
        file_handler.setFormatter(fmt)
        stream = logging.StreamHandler()
        stream.setFormatter(fmt)
        logger.addHandler(file_handler)
        logger.addHandler(stream)
    return logger


# ---------------------------------------------------------------------------------------------- run folder
def is_temp_file(name: str) -> bool:
    """A temporary file of an interrupted write: ``common/io_utils.atomic_path``'s ``.<name>.<rand>.tmp``, or the
    ``.tmpXXXXXX`` that safetensors itself writes a file through before renaming it."""
    return (name.startswith(".") and name.endswith(".tmp")) or re.fullmatch(r"\.tmp[A-Za-z0-9_]{6}", name) is not None


def holds_run(folder: str) -> List[str]:
    """The run files (checkpoints, ``metrics.csv``) ``folder`` holds; empty when none (or no such folder)."""
    if not os.path.isdir(folder):
        return []
    return sorted(name for name in os.listdir(folder)
                  if name in RUN_FILES or (name.startswith("epoch-") and name.endswith(".safetensors")))


def default_run_dir(base: str, resume: str) -> str:
    """The run folder when none is named (``runs/<config>``): a new run never lands on an old one but in the first
    of ``base``, ``base-2``, ``base-3``, ... that holds no run; ``RESUME auto`` continues the newest of them."""
    def numbered(k: int) -> str:
        return base if k == 1 else f"{base}-{k}"

    k = 1
    while holds_run(numbered(k)):
        k += 1
    if resume == "auto" and k > 1:
        return numbered(k - 1)
    return numbered(k)


def check_run_dir(run_dir: str, resume: str) -> None:
    """Refuse a run folder that cannot hold this run, without touching anything.

    A folder that already holds a run (a checkpoint or ``metrics.csv``) is only trained into again when that run
    is continued (``RESUME auto``, or ``RESUME`` naming a checkpoint inside it): results are never overwritten."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise TrainingError(f"run folder {run_dir} is a file, not a folder: choose another with --output")
    held = holds_run(run_dir)
    continues = resume == "auto" or (
        bool(resume) and os.path.dirname(os.path.abspath(resume)) == os.path.abspath(run_dir))
    if held and not continues:
        raise TrainingError(
            f"run folder {run_dir} already holds a run ({', '.join(held[:3])}{', ...' if len(held) > 3 else ''}): "
            f"continue it with RESUME auto, or train into a new folder with --output")


def prepare_run_dir(run_dir: str, resume: str) -> List[str]:
    """:func:`check_run_dir`, then create the folder and remove the temporary files a killed save left there
    (returned).  Raises :class:`TrainingError` naming the folder."""
    check_run_dir(run_dir, resume)
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as exc:
        raise TrainingError(f"cannot create run folder {run_dir}: {exc.strerror}") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise TrainingError(f"run folder {run_dir} is not writable")
    removed = []
    for name in sorted(os.listdir(run_dir)):
        if is_temp_file(name) and os.path.isfile(os.path.join(run_dir, name)):
            os.remove(os.path.join(run_dir, name))
            removed.append(name)
    return removed


def resume_path(cfg, run_dir: str, kind: str) -> str:
    """The checkpoint ``RESUME`` names (``auto``: the run folder's ``last.safetensors`` when present, else ""),
    checked before any work: readable, a training checkpoint of this family/network and task, not past the end.
    Raises :class:`TrainingError` or ``CheckpointError`` naming the file."""
    from common.checkpoint import read_meta

    path = cfg.RESUME
    if path == "auto":
        candidate = os.path.join(run_dir, "last.safetensors")
        path = candidate if os.path.isfile(candidate) else ""
    if not path:
        return ""
    if not os.path.isfile(path):
        raise TrainingError(f"RESUME = {path!r}: no such checkpoint file")
    meta = read_meta(path)
    if meta.get("family") != cfg.MODEL.FAMILY or meta.get("name") != cfg.MODEL.NAME:
        raise TrainingError(f"{path}: checkpoint of {meta.get('family')}/{meta.get('name')}, "
                            f"but the config trains {cfg.MODEL.FAMILY}/{cfg.MODEL.NAME}")
    if "epoch" not in meta:
        raise TrainingError(f"{path}: no epoch in its metadata; it is not a training checkpoint "
                            "(use MODEL.WEIGHTS to start from its weights)")
    written_by = meta.get("task", kind)
    if written_by != kind:
        raise TrainingError(f"{path}: written by a {written_by!r} run, this run is {kind!r}")
    epochs = int(cfg.TRAIN.EPOCHS)
    if not int(getattr(cfg.TRAIN, "ITERATIONS", 0) or 0) and int(meta["epoch"]) > epochs:
        raise TrainingError(f"{path}: written after epoch {meta['epoch']}, but TRAIN.EPOCHS is {epochs}")
    return path


# ---------------------------------------------------------------------------------------------- metrics
class MetricsFile:
    """``metrics.csv``: one row per finished epoch, the columns the task declares.

    On resume the file is rewritten from the checkpoint's history (every epoch up to and including the resumed
    one, each exactly once); a checkpoint written before histories were kept falls back to the file's own rows
    up to the resumed epoch."""

    def __init__(self, path: str, fields: Sequence[str], history: Optional[List[Dict[str, Any]]] = None,
                 resume_epoch: int = 0, write: bool = True):
        self.path = path
        self.fields = list(fields)
        self.write = write
        if history is None:
            history = []
            if resume_epoch > 0 and os.path.isfile(path):
                with open(path, newline="") as handle:
                    history = [row for row in csv.DictReader(handle)
                               if str(row.get("epoch", "")).isdigit() and int(row["epoch"]) <= resume_epoch]
        self.rows = [row for row in history if int(row["epoch"]) <= resume_epoch]
        self._rewrite(self.rows)

    def _rewrite(self, rows) -> None:
        from common.io_utils import atomic_path

        if not self.write:
            return
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows({k: _fmt(row.get(k)) for k in self.fields} for row in rows)

    def append(self, row: Dict[str, Any]) -> None:
        if not self.write:
            return
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore").writerow(
                {k: _fmt(row.get(k)) for k in self.fields})


# ---------------------------------------------------------------------------------------------- hooks
class Hook:
    """Override what you need; every method receives the :class:`Loop` (``loop.epoch``, ``loop.global_step``,
    ``loop.task``, ``loop.row``...)."""

    def before_train(self, loop: "Loop") -> None: ...

    def before_epoch(self, loop: "Loop") -> None: ...

    def after_step(self, loop: "Loop", stats: Mapping[str, float]) -> None: ...

    def after_epoch(self, loop: "Loop", row: Dict[str, Any]) -> None: ...

    def after_train(self, loop: "Loop") -> None: ...


class ScalarsHook(Hook):
    """TensorBoard event files (and VisualDL when installed) of every logged number, against the global step: the
    training statistics every ``TRAIN.LOG_INTERVAL`` steps, every metrics.csv column at each epoch end.  A resumed
    run drops what the interrupted one wrote after its checkpoint."""

    def before_train(self, loop):
        from common.scalars import ScalarWriter

        self.writer = ScalarWriter(loop.run_dir, log=loop.logger.info,
                                   purge_step=loop.global_step if loop.global_step > 0 else None)

    def after_step(self, loop, stats):
        interval = int(loop.cfg.TRAIN.LOG_INTERVAL)
        if interval and loop.global_step % interval == 0:
            for key in loop.task.train_stats:
                self.writer.add(f"step/train_{key}", stats.get(key), loop.global_step)
            for name, lr in loop.lrs.items():
                self.writer.add(f"step/{'lr' if name == 'weights' else 'lr_' + name}", lr, loop.global_step)

    def after_epoch(self, loop, row):
        for key, value in row.items():
            if not key.startswith("_") and isinstance(value, (int, float)):
                self.writer.add(f"epoch/{key}", value, loop.global_step)
        self.writer.flush()

    def after_train(self, loop):
        self.writer.close()


# ---------------------------------------------------------------------------------------------- the loop
class Loop:
    """Trains ``task`` on ``streams`` (``{name: Loader}``, one per :attr:`TaskBase.streams` entry), evaluating on
    ``val_loader``.  ``schedules`` maps each optimizer name to a schedule (``Schedule.lr_at(epoch)``)."""

    def __init__(self, cfg, backend, task: TaskBase, run_dir: str, streams: Mapping[str, Any],
                 schedules: Mapping[str, Any], val_loader=None, *, label_offset: int = 0,
                 hooks: Iterable[Hook] = (), logger: Optional[logging.Logger] = None):
        missing = [name for name in task.streams if name not in streams]
        if missing:
            raise TrainingError(f"task {task.kind!r} needs data streams {missing}")
        missing = [name for name in task.optimizer_nodes if name not in schedules]
        if missing:
            raise TrainingError(f"task {task.kind!r} needs LR schedules for optimizers {missing}")
        self.cfg, self.backend, self.task, self.run_dir = cfg, backend, task, run_dir
        self.dist = getattr(backend, "dist", None)
        #: only rank 0 writes (log, metrics, checkpoints, scalars, the task's files)
        self.is_main = self.dist is None or self.dist.is_main
        task.run_dir = run_dir if self.is_main else None
        self.streams = {name: streams[name] for name in task.streams}
        self.schedules = dict(schedules)
        self.val_loader = val_loader
        self.label_offset = int(label_offset)
        self.logger = logger or get_logger(run_dir, "train", write=self.is_main)
        self.hooks: List[Hook] = [ScalarsHook(), *hooks] if self.is_main else list(hooks)
        train = cfg.TRAIN
        self.steps_per_epoch = min(len(loader) for loader in self.streams.values())
        if train.MAX_STEPS_PER_EPOCH:
            self.steps_per_epoch = min(self.steps_per_epoch, int(train.MAX_STEPS_PER_EPOCH))
        if self.steps_per_epoch == 0:
            short = min(self.streams, key=lambda n: len(self.streams[n]))
            raise TrainingError(f"the {short!r} data stream gives no full batch of {cfg.DATA.BATCH_SIZE} images "
                                f"({len(self.streams[short].dataset)} samples, DATA.DROP_LAST {cfg.DATA.DROP_LAST})")
        for schedule in self.schedules.values():  # a per-update schedule (one_cycle) counts updates
            bind = getattr(schedule, "bind_steps", None)
            if bind is not None:
                bind(self.steps_per_epoch)
        iterations = int(getattr(train, "ITERATIONS", 0) or 0)
        self.total_steps = iterations if iterations > 0 else int(train.EPOCHS) * self.steps_per_epoch
        self.epochs = -(-self.total_steps // self.steps_per_epoch)
        self.fields = task.metric_fields()
        self.epoch = 0
        self.global_step = 0
        self.lrs: Dict[str, float] = {}
        self.best: Optional[float] = None
        self.history: Optional[List[Dict[str, Any]]] = []
        self.row: Dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------ public
    def run(self) -> Optional[float]:
        """Train from the resume point to the end; returns the best score (None when never evaluated)."""
        start_epoch = self.resume()
        self.metrics = MetricsFile(os.path.join(self.run_dir, "metrics.csv"), self.fields, self.history,
                                   resume_epoch=start_epoch, write=self.is_main)
        self.history = list(self.metrics.rows)
        self.global_step = min(start_epoch * self.steps_per_epoch, self.total_steps)
        self._call("before_train")
        try:
            for epoch in range(start_epoch, self.epochs):
                self.epoch = epoch
                self.row = self.train_epoch(epoch)
                self.evaluate_epoch(epoch, self.row)
                self.save_epoch(epoch, self.row)
                self.metrics.append(self.row)
                self._call("after_epoch", self.row)
                self.logger.info(self.epoch_line(self.row))
        finally:
            self._call("after_train")
        score = self.task.score_key()
        if score is not None:
            shown = "n/a (never evaluated)" if self.best is None else f"{self.best:.2f}"
            self.logger.info(f"done: best {score} {shown}")
        return self.best

    def run_step(self, batches: Mapping[str, Any], lrs: Mapping[str, float], step: int) -> Dict[str, float]:
        """One update; override to change what a step does (the default hands everything to the task)."""
        return self.task.train_step(batches, lrs, step)

    # ------------------------------------------------------------------------------------------ epoch
    def learning_rates(self, epoch: int, step: int) -> Dict[str, float]:
        """LR of each optimizer for step ``step`` of ``epoch`` (per step when ``SCHED.PER_STEP``)."""
        t = epoch + step / self.steps_per_epoch if self.cfg.SCHED.PER_STEP else epoch
        return {name: float(schedule(t)) for name, schedule in self.schedules.items()}

    def momenta(self, epoch: int, step: int) -> Dict[str, float]:
        """The momentum (Adam beta1) of each optimizer whose schedule cycles one (one_cycle), for this step."""
        out = {}
        for name, schedule in self.schedules.items():
            at = getattr(schedule, "momentum_at", None)
            value = at(epoch + step / self.steps_per_epoch) if at is not None else None
            if value is not None:
                out[name] = float(value)
        return out

    def train_epoch(self, epoch: int) -> Dict[str, Any]:
        from tqdm import tqdm

        task, cfg = self.task, self.cfg
        self.backend.seed(epoch_seed(cfg.SEED, epoch))
        for loader in self.streams.values():
            loader.set_epoch(epoch)
        task.start_epoch(epoch)
        self._call("before_epoch")
        steps = min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)
        sums = dict.fromkeys(task.train_stats, 0.0)
        seen = 0.0
        started = time.perf_counter()
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False, dynamic_ncols=True,
                   disable=None if self.is_main else True)
        iterators = {name: iter(loader) for name, loader in self.streams.items()}
        try:
            for step in range(steps):
                batches = {name: next(it) for name, it in iterators.items()}
                self.lrs = self.learning_rates(epoch, step)
                momenta = self.momenta(epoch, step)
                if momenta:
                    task.set_momenta(momenta)
                batches = {name: (images, labels + self.label_offset) for name, (images, labels) in batches.items()}
                try:
                    stats = self.run_step(batches, self.lrs, self.global_step)
                except NonFiniteError as exc:
                    raise TrainingError(
                        f"{exc} at epoch {epoch + 1}, step {step + 1} (global step {self.global_step + 1}, "
                        f"{_lr_text(self.lrs)}): stopping; {self._last_good()}") from None
                n = float(stats["count"])
                for key in sums:
                    sums[key] += float(stats[key]) * n
                seen += n
                self.global_step += 1
                self._call("after_step", stats)
                rate = seen / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(**{k: f"{v / seen:.4g}" for k, v in sums.items()}, lr=_lr_text(self.lrs, short=True),
                                img_s=f"{rate:.0f}", refresh=False)
                bar.update(1)
        finally:
            bar.close()
            for it in iterators.values():
                close = getattr(it, "close", None)
                if close is not None:
                    close()
        if self.dist is not None:  # every rank's samples: the statistics of the global batches
            keys = list(sums)
            totals = self.dist.sum_floats([sums[k] for k in keys] + [seen])
            sums, seen = dict(zip(keys, totals[:-1])), totals[-1]
        elapsed = time.perf_counter() - started
        row: Dict[str, Any] = {"epoch": epoch + 1}
        for name, lr in self.lrs.items():
            row["lr" if name == "weights" else f"lr_{name}"] = lr
        row.update(task.mean_train_stats(sums, seen))
        row.update({"images_per_s": seen / elapsed, "epoch_seconds": elapsed})
        extra = task.epoch_end(epoch)
        row.update({k: v for k, v in extra.items() if k in self.fields})
        for line in extra.get("_log", ()):
            self.logger.info(line)
        bad = task.nonfinite_weights()
        if bad:
            raise TrainingError(f"non-finite weights after epoch {epoch + 1} ({len(bad)} tensors, first {bad[0]}): "
                                f"stopping; {self._last_good()}")
        return row

    def evaluate_epoch(self, epoch: int, row: Dict[str, Any]) -> None:
        every = int(self.cfg.TRAIN.EVAL_EVERY)
        if self.val_loader is None or not ((epoch + 1) % every == 0 or epoch + 1 == self.epochs):
            return
        ready = getattr(self.task, "variant_ready", None)
        for variant in self.task.eval_variants():
            if ready is not None and not ready(variant):  # e.g. the Cream board's path before the board has one
                continue
            metrics = evaluate(self.task, self.val_loader, variant, self.label_offset,
                               where=f"after epoch {epoch + 1}", last_good=self._last_good())
            row.update({f"{variant}_{k}": v for k, v in metrics.items()})

    def save_epoch(self, epoch: int, row: Dict[str, Any]) -> None:
        key = self.task.score_key()
        score = row.get(key) if key else None
        better = (lambda a, b: a < b) if self.task.score_mode == "min" else (lambda a, b: a > b)
        improved = score is not None and (self.best is None or better(score, self.best))
        if improved:
            self.best = score
        row["_best"] = improved
        self.history.append({k: v for k, v in row.items() if not k.startswith("_")})
        ckpt: Checkpoint = self.task.to_checkpoint()
        cfg = self.cfg
        ckpt.meta.update({
            "family": cfg.MODEL.FAMILY, "name": cfg.MODEL.NAME, "task": self.task.kind, "epoch": epoch + 1,
            "global_step": self.global_step, "metrics": self.history[-1], "history": self.history,
            "best": self.best, "backend": self.backend.name, "config": config_to_dict(cfg),
        })
        # last is written last: it is the resume point, so a kill before it repeats this epoch (and rewrites
        # the files before it identically); a kill after it finds every file of this epoch complete.
        if not self.is_main:
            return
        every = max(1, int(getattr(cfg.TRAIN, "CKPT_EVERY", 1)))
        if (epoch + 1) % every == 0 or epoch + 1 == self.epochs:
            save_checkpoint(os.path.join(self.run_dir, f"epoch-{epoch + 1:04d}.safetensors"), ckpt)
        if improved:
            save_checkpoint(os.path.join(self.run_dir, "best.safetensors"), ckpt)
        save_checkpoint(os.path.join(self.run_dir, "last.safetensors"), ckpt)
        keep = int(getattr(cfg.TRAIN, "KEEP_CHECKPOINTS", 3))
        history = sorted(glob.glob(os.path.join(self.run_dir, "epoch-*.safetensors")))
        for old in history[:-keep] if keep > 0 else history:
            os.remove(old)

    # ------------------------------------------------------------------------------------------ resume
    def resume(self) -> int:
        """Load ``RESUME`` (``auto``: the run folder's ``last.safetensors`` when present); returns the epoch."""
        path = resume_path(self.cfg, self.run_dir, self.task.kind)
        if not path:
            return 0
        ckpt = load_checkpoint(path)
        epoch = int(ckpt.meta["epoch"])
        if epoch > self.epochs:
            raise TrainingError(f"{path}: written after epoch {epoch}, but this run has only {self.epochs} "
                                f"(TRAIN.EPOCHS / TRAIN.ITERATIONS)")
        self.task.load_checkpoint(ckpt, source=path)
        self.best = ckpt.meta.get("best")
        history = ckpt.meta.get("history")
        self.history = [dict(row) for row in history] if isinstance(history, list) else None
        # (a checkpoint from before histories were kept: history None, metrics.csv's own rows are the record)
        self.logger.info(f"resumed from {path} (written by {ckpt.meta.get('backend')} after epoch {epoch})")
        return epoch

    # ------------------------------------------------------------------------------------------ helpers
    def _call(self, name: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, name)(self, *args)

    def _last_good(self) -> str:
        last = os.path.join(self.run_dir, "last.safetensors")
        if not os.path.isfile(last):
            return "no checkpoint was written"
        try:
            from common.checkpoint import read_meta

            epoch = read_meta(last).get("epoch")
        except Exception:  # noqa: BLE001 - only for the message
            epoch = "?"
        return f"{last} keeps the last good state (epoch {epoch})"

    def epoch_line(self, row: Dict[str, Any]) -> str:
        parts = [f"epoch {row['epoch']}/{self.epochs}", _lr_text({k: row[k] for k in self.task.lr_fields() if k in row})]
        parts += [f"{k.replace('_', ' ', 1)} {_num(row[k])}" for k in self.fields
                  if k.startswith("train_") and k in row]
        for variant in self.task.eval_variants():
            shown = [f"{k} {_num(row[f'{variant}_{k}'])}" for k in self.task.eval_stats if f"{variant}_{k}" in row]
            if shown:
                parts.append(f"{variant.replace('_', ' ')}: " + " ".join(shown))
        parts += [f"{k.replace('_', ' ')} {_num(row[k])}" for k in self.task.extra_fields()
                  if k in row and not k.startswith("train_")]
        parts.append(f"{row['images_per_s']:.0f} img/s")
        return " | ".join(parts) + ("  *best*" if row.get("_best") else "")


def evaluate(task: TaskBase, loader, variant: str = "val", label_offset: int = 0, where: str = "",
             last_good: str = "") -> Dict[str, float]:
    """The task's metrics of ``variant`` on ``loader``; non-finite outputs are an error, never a score."""
    from tqdm import tqdm

    sums: Dict[str, float] = {}
    for images, labels in tqdm(loader, desc=f"eval ({variant})", leave=False, disable=None):
        out = task.eval_batch(images, labels + label_offset, variant)
        for key, value in out.items():
            sums[key] = sums.get(key, 0.0) + float(value)
    if sums.get("nonfinite"):
        raise TrainingError(
            f"the model's {variant} outputs are NaN or infinite for {int(sums['nonfinite'])} of "
            f"{int(sums['count'])} images{' ' + where if where else ''}: not scored"
            + (f"; stopping; {last_good}" if last_good else ""))
    metrics = task.finish_eval(sums)
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise TrainingError(f"{variant} {', '.join(bad)} is not finite{' ' + where if where else ''}: not scored"
                            + (f"; stopping; {last_good}" if last_good else ""))
    return metrics


# ---------------------------------------------------------------------------------------------- commands
def check_data(cfg, splits=("train", "val"), label_offset: int = 0):
    """Open the splits before any other work, so a missing dataset stops the run at once; check that the
    labels fit the classifier (``label_offset`` leading logits, e.g. TF's background class, come first)."""
    from common.data.build import build_dataset

    datasets = tuple(build_dataset(cfg, split) for split in splits)
    for split, dataset in zip(splits, datasets):
        classes = getattr(dataset, "num_classes", None)
        if classes is not None and classes + label_offset > cfg.MODEL.NUM_CLASSES:
            raise TrainingError(
                f"the {split} split of DATA.DATASET {cfg.DATA.DATASET!r} has {classes} classes"
                + (f" (+{label_offset} leading logit)" if label_offset else "")
                + f", more than MODEL.NUM_CLASSES = {cfg.MODEL.NUM_CLASSES}")
    return datasets


def label_offset_of(spec_module, spec) -> int:
    """How many leading logits precede dataset class 0 (PNASNet's 1001-class TF head: 1)."""
    return int(spec_module.label_offset(spec)) if spec is not None and hasattr(spec_module, "label_offset") else 0


def build_streams(cfg, task: TaskBase, datasets, rank: int = 0, world_size: int = 1):
    """``(streams, val_loader)`` for ``task``.  One ``train`` stream: the train split, evaluated on the val split.
    A task with a ``search`` stream (a differentiable search): the train split cut by ``task.train_portion``
    (:func:`common.data.build.split_for_search`) into the weights' ``train`` stream and the architecture's ``search``
    stream, both with training augmentation (as upstream), evaluated on the search part without augmentation."""
    from common.data.build import build_loader, split_for_search

    train_set = datasets[0]
    if "search" not in task.streams:
        streams = {"train": build_loader(cfg, "train", rank=rank, world_size=world_size, dataset=train_set)}
        return streams, build_loader(cfg, "val", dataset=datasets[1])  # every rank scores the whole split
    weights_part, arch_part = split_for_search(train_set, task.train_portion, cfg.SEED)
    streams = {"train": build_loader(cfg, "train", rank=rank, world_size=world_size, dataset=weights_part),
               "search": build_loader(cfg, "train", rank=rank, world_size=world_size, dataset=arch_part,
                                      seed=stream_seed(cfg.SEED, "search"))}
    return streams, build_loader(cfg, "val", dataset=arch_part)  # every rank scores the whole part


def check_streams(cfg, kind: str, datasets) -> None:
    """Before a run touches its folder: the streams task ``kind`` needs can be cut from ``datasets`` and each gives
    at least one batch (errors are ``TrainingError`` / ``DataError`` naming the key)."""
    import importlib

    base = importlib.import_module(f"common.tasks.{kind}").BASE(cfg)
    streams, _ = build_streams(cfg, base, datasets)
    for name, loader in streams.items():
        if len(loader) == 0:
            raise TrainingError(f"the {name!r} data stream gives no full batch of {cfg.DATA.BATCH_SIZE} images "
                                f"({len(loader.dataset)} samples, DATA.DROP_LAST {cfg.DATA.DROP_LAST})")


def stream_seed(seed: int, name: str) -> int:
    """The shuffling / augmentation seed of a second data stream (independent of the first stream's)."""
    return int(np.random.SeedSequence([int(seed), *name.encode()]).generate_state(1)[0])


def build_schedules(cfg, task: TaskBase) -> Dict[str, Any]:
    """One LR schedule per optimizer: ``SCHED.*`` for the weights, a constant ``<NODE>.LR`` for the others, or, for
    a node with ``FOLLOW_SCHED`` on, the weights' schedule scaled by ``<NODE>.LR / OPTIM.LR``."""
    from common.schedules import ConstantSchedule, ScaledSchedule, build_schedule

    out = {}
    for name, node in task.optimizer_nodes.items():
        if name == "weights":
            out[name] = build_schedule(cfg)
        elif bool(cfg[node].get("FOLLOW_SCHED", False)):
            base = float(cfg.OPTIM.LR)
            if base <= 0:
                raise TrainingError(f"{node}.FOLLOW_SCHED needs OPTIM.LR > 0 (the scale is {node}.LR / OPTIM.LR)")
            out[name] = ScaledSchedule(build_schedule(cfg), float(cfg[node]["LR"]) / base)
        else:
            out[name] = ConstantSchedule(float(cfg[node]["LR"]))
    return out


def train(cfg, backend, spec_module, spec, run_dir: str, datasets=None, initial: Optional[Checkpoint] = None,
          rank: int = 0, world_size: int = 1, hooks: Iterable[Hook] = (), kind: str = "classification",
          model=None) -> int:
    """``tools/main.py train`` and ``search``: the family's network trained by the task ``kind``
    (``common/families.py``) on the streams :func:`build_streams` makes for it.  ``initial`` = MODEL.WEIGHTS already read (any format) by the
    caller; otherwise the spec's numpy initialisation.  ``model``: already built with its initial weights."""
    group = getattr(backend, "dist", None)
    if group is not None:
        rank, world_size = group.rank, group.world_size
    logger = get_logger(run_dir, "train", write=rank == 0)
    logger.info(f"backend: {backend.describe()}")
    if world_size > 1:
        logger.info(f"{world_size} processes ({group.world.launcher}), DATA.BATCH_SIZE {cfg.DATA.BATCH_SIZE} per "
                    f"process: global batch {world_size * int(cfg.DATA.BATCH_SIZE)}; BN statistics "
                    + ("over the global batch (TRAIN.SYNC_BN)" if cfg.TRAIN.SYNC_BN else "per process"))
    logger.info(f"run folder: {os.path.abspath(run_dir)}")

    if model is None:
        model = backend.build_model(cfg.MODEL.FAMILY, spec)
        if initial is not None:
            backend.load_neutral(model, initial.model, source=cfg.MODEL.WEIGHTS or "initial weights")
        else:
            backend.load_neutral(model, spec_module.init_state(spec, np.random.default_rng(cfg.SEED)), "numpy init")
    logger.info(f"initial weights: {cfg.MODEL.WEIGHTS or 'numpy init (SEED ' + str(cfg.SEED) + ')'}")
    logger.info(f"model: {cfg.MODEL.FAMILY}/{cfg.MODEL.NAME}, {backend.count_parameters(model):,} trainable parameters")

    task = backend.make_task(kind, model, cfg, spec)
    offset = label_offset_of(spec_module, spec)
    if datasets is None:
        datasets = check_data(cfg, splits=("train",) if "search" in task.streams else ("train", "val"),
                              label_offset=offset)
    streams, val_loader = build_streams(cfg, task, datasets, rank=rank, world_size=world_size)
    loop = Loop(cfg, backend, task, run_dir, streams, build_schedules(cfg, task), val_loader, label_offset=offset,
                hooks=hooks, logger=logger)
    sizes = " / ".join(f"{len(loader.dataset)} {name}" for name, loader in streams.items())
    logger.info(f"data: {sizes} / {len(val_loader.dataset)} val images, {loop.steps_per_epoch} steps per epoch"
                + (f", labels shifted by {offset}" if offset else ""))
    loop.run()
    return 0


def test(cfg, backend, model, run_dir: str, label_offset: int = 0, dataset=None,
         kind: str = "classification") -> int:
    """The task's metrics of ``model`` on the validation split (top-1/top-5 for a classifier); writes
    ``test_results.json``.  Dataset label k is
    scored against logit k + ``label_offset`` (PNASNet's 1001-class TF head: 1)."""
    import json

    from common.data.build import build_loader
    from common.io_utils import atomic_write_text

    logger = get_logger(run_dir, "test")
    loader = build_loader(cfg, "val", epoch=0, dataset=dataset)
    task = backend.make_task(kind, model, cfg, None, for_eval=True)
    started = time.perf_counter()
    result: Dict[str, Any] = evaluate(task, loader, "val", label_offset=label_offset,
                                      where=f"with MODEL.WEIGHTS {cfg.MODEL.WEIGHTS}")
    result.update({"images": len(loader.dataset), "seconds": time.perf_counter() - started,
                   "backend": backend.describe(), "weights": cfg.MODEL.WEIGHTS,
                   "model": f"{cfg.MODEL.FAMILY}/{cfg.MODEL.NAME}", "image_size": cfg.DATA.IMAGE_SIZE,
                   "label_offset": label_offset, "preprocessing": cfg.DATA.INTERPOLATION,
                   "crop_pct": cfg.DATA.CROP_PCT})
    path = os.path.join(run_dir, "test_results.json")
    atomic_write_text(path, json.dumps(result, indent=2, allow_nan=False))
    if "top1" in result:
        logger.info(f"top-1 {result['top1']:.3f}%  top-5 {result['top5']:.3f}%  on {result['images']} images "
                    f"({result['seconds']:.1f}s) -> {path}")
    else:  # a task with other metrics (the NCP predictor: MAE, Kendall tau, Spearman rho per metric)
        shown = "  ".join(f"{k} {result[k]:.4g}" for k in task.eval_stats if k in result)
        logger.info(f"{shown}  on {result['images']} samples ({result['seconds']:.1f}s) -> {path}")
    return 0


# ---------------------------------------------------------------------------------------------- formatting
def _lr_text(lrs: Mapping[str, float], short: bool = False) -> str:
    parts = []
    for name, lr in lrs.items():
        label = "lr" if name in ("weights", "lr") else (name if name.startswith("lr_") else f"lr_{name}")
        parts.append(f"{lr:.3g}" if short and len(lrs) == 1 else f"{label} {lr:.4g}")
    return " ".join(parts) if not short else ",".join(parts)


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"
    return str(value)


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value
