"""The training and evaluation loops, written once for both backends.

Everything here is framework-free: the backend supplies a *trainer* (``backend.make_trainer``) with
``train_step(images, labels, lr)``, ``eval_batch(images, labels, use_ema)``, ``to_checkpoint()`` and
``load_checkpoint(ckpt)``; batches come from the numpy loader in ``common/data``; the LR comes from
``common/schedules``.  A run folder holds ``config.yaml``, ``train.log``, ``metrics.csv``,
``last.safetensors``, ``best.safetensors`` and the last few ``epoch-NNNN.safetensors``.

Resume: checkpoints are written at epoch ends and carry the model, the EMA, the optimizer slots and the
epoch; data order and augmentation are functions of (seed, epoch, sample), and framework RNGs are
re-seeded from (seed, epoch) at every epoch start, so a resumed run repeats the uninterrupted one.
"""
from __future__ import annotations

import csv
import glob
import logging
import math
import os
import time
from typing import Any, Dict, Optional

import numpy as np

from common.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from common.config import config_to_dict

KEEP_HISTORY = 3
METRIC_FIELDS = [
    "epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5",
    "ema_val_loss", "ema_val_top1", "ema_val_top5", "images_per_s", "epoch_seconds",
]


class TrainingError(RuntimeError):
    """The run cannot continue (non-finite loss, unusable resume state); the message says where."""


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed for the framework RNG (dropout, drop path) during ``epoch``; a pure function so resume repeats it."""
    return int(np.random.SeedSequence([seed, epoch, 0x5EED]).generate_state(1)[0])


def get_logger(run_dir: str, name: str) -> logging.Logger:
    logger = logging.getLogger(f"twinnas.{name}.{os.path.abspath(run_dir)}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
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


class MetricsFile:
    """``metrics.csv`` with one row per epoch; rows past the resume point are dropped on resume."""

    def __init__(self, path: str, resume_epoch: int):
        self.path = path
        rows = []
        if resume_epoch > 0 and os.path.isfile(path):
            with open(path, newline="") as handle:
                rows = [row for row in csv.DictReader(handle) if int(row["epoch"]) < resume_epoch]
        self._rewrite(rows)

    def _rewrite(self, rows):
        from common.io_utils import atomic_path

        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=METRIC_FIELDS)
                writer.writeheader()
                writer.writerows(rows)

    def append(self, row: Dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=METRIC_FIELDS).writerow({k: _fmt(row.get(k)) for k in METRIC_FIELDS})


class ScalarWriter:
    """TensorBoard (torch backend) or VisualDL (paddle backend) when installed; metrics.csv always."""

    def __init__(self, run_dir: str, backend, logger: logging.Logger):
        self.writer, self.kind = backend.scalar_writer(run_dir)
        if self.writer is None:
            logger.info("TensorBoard/VisualDL not installed: metrics go to metrics.csv only")
        else:
            logger.info(f"scalars also written for {self.kind}")

    def add(self, tag: str, value: Optional[float], step: int) -> None:
        if self.writer is None or value is None:
            return
        if self.kind == "visualdl":
            self.writer.add_scalar(tag=tag, value=float(value), step=step)
        else:
            self.writer.add_scalar(tag, float(value), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ---------------------------------------------------------------------------------------------- train
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


def train(cfg, backend, spec_module, spec, run_dir: str, datasets=None) -> int:
    from tqdm import tqdm

    from common.data.build import build_loader
    from common.schedules import build_schedule

    logger = get_logger(run_dir, "train")
    logger.info(f"backend: {backend.describe()}")
    logger.info(f"run folder: {os.path.abspath(run_dir)}")

    model = backend.build_model(cfg.MODEL.FAMILY, spec)
    if cfg.MODEL.WEIGHTS:
        start = load_checkpoint(cfg.MODEL.WEIGHTS)
        backend.load_neutral(model, start.model, source=cfg.MODEL.WEIGHTS)
        logger.info(f"initial weights: {cfg.MODEL.WEIGHTS}")
    else:
        backend.load_neutral(model, spec_module.init_state(spec, np.random.default_rng(cfg.SEED)), "numpy init")
    logger.info(f"model: {cfg.MODEL.FAMILY}/{cfg.MODEL.NAME}, {backend.count_parameters(model):,} trainable parameters")

    trainer = backend.make_trainer(model, cfg, spec)
    schedule = build_schedule(cfg)
    offset = label_offset_of(spec_module, spec)
    train_set, val_set = datasets if datasets is not None else check_data(cfg, label_offset=offset)
    train_loader = build_loader(cfg, "train", epoch=0, dataset=train_set)
    val_loader = build_loader(cfg, "val", epoch=0, dataset=val_set)
    steps_per_epoch = len(train_loader)
    if cfg.TRAIN.MAX_STEPS_PER_EPOCH:
        steps_per_epoch = min(steps_per_epoch, cfg.TRAIN.MAX_STEPS_PER_EPOCH)
    if steps_per_epoch == 0:
        raise TrainingError(f"the training set gives no full batch of {cfg.DATA.BATCH_SIZE} images")
    logger.info(f"data: {len(train_loader.dataset)} train / {len(val_loader.dataset)} val images, "
                f"{steps_per_epoch} steps per epoch" + (f", labels shifted by {offset}" if offset else ""))

    start_epoch, best = _maybe_resume(cfg, run_dir, trainer, logger)
    metrics = MetricsFile(os.path.join(run_dir, "metrics.csv"), start_epoch)
    scalars = ScalarWriter(run_dir, backend, logger)
    global_step = start_epoch * steps_per_epoch
    use_ema = cfg.TRAIN.EMA_DECAY > 0

    for epoch in range(start_epoch, cfg.TRAIN.EPOCHS):
        backend.seed(epoch_seed(cfg.SEED, epoch))
        train_loader.set_epoch(epoch)
        started = time.perf_counter()
        loss_sum = top1_sum = seen = 0.0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.TRAIN.EPOCHS}", leave=False,
                   dynamic_ncols=True, disable=None)
        lr = schedule(epoch)
        for step, (images, labels) in enumerate(train_loader):
            if step >= steps_per_epoch:
                break
            if cfg.SCHED.PER_STEP:
                lr = schedule(epoch + step / steps_per_epoch)
            stats = trainer.train_step(images, labels + offset, lr, step=global_step)
            if not math.isfinite(stats["loss"]):
                raise TrainingError(f"loss is {stats['loss']} at epoch {epoch + 1}, step {step + 1} "
                                    f"(global step {global_step + 1}, lr {lr:.3g}): stopping")
            n = len(labels)
            loss_sum += stats["loss"] * n
            top1_sum += stats["top1"] * n
            seen += n
            global_step += 1
            rate = seen / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100 * top1_sum / seen:.1f}%", lr=f"{lr:.3g}",
                            img_s=f"{rate:.0f}", refresh=False)
            bar.update(1)
            if cfg.TRAIN.LOG_INTERVAL and (step + 1) % cfg.TRAIN.LOG_INTERVAL == 0:
                scalars.add("train/loss", stats["loss"], global_step)
                scalars.add("train/lr", lr, global_step)
        bar.close()
        elapsed = time.perf_counter() - started
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / seen, "train_top1": 100 * top1_sum / seen,
               "images_per_s": seen / elapsed, "epoch_seconds": elapsed}

        if (epoch + 1) % cfg.TRAIN.EVAL_EVERY == 0 or epoch + 1 == cfg.TRAIN.EPOCHS:
            row.update(_prefixed("val_", evaluate(trainer, val_loader, use_ema=False, label_offset=offset)))
            if use_ema:
                row.update(_prefixed("ema_val_", evaluate(trainer, val_loader, use_ema=True, label_offset=offset)))
        score = row.get("ema_val_top1" if use_ema else "val_top1")
        improved = score is not None and (best is None or score > best)
        if improved:
            best = score
        _save_epoch(cfg, run_dir, trainer, backend, epoch, row, best, improved)
        metrics.append(row)
        for key in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "ema_val_top1"):
            scalars.add(key.replace("_", "/", 1), row.get(key), epoch + 1)
        logger.info(_epoch_line(row, use_ema) + ("  *best*" if improved else ""))
    scalars.close()
    logger.info(f"done: best {'EMA ' if use_ema else ''}val top-1 {best if best is not None else float('nan'):.2f}%")
    return 0


def evaluate(trainer, loader, use_ema: bool, label_offset: int = 0) -> Dict[str, float]:
    from tqdm import tqdm

    loss_sum = correct1 = correct5 = count = 0.0
    for images, labels in tqdm(loader, desc="eval (EMA)" if use_ema else "eval", leave=False, disable=None):
        out = trainer.eval_batch(images, labels + label_offset, use_ema=use_ema)
        loss_sum += out["loss_sum"]
        correct1 += out["correct1"]
        correct5 += out["correct5"]
        count += out["count"]
    if count == 0:
        return {}
    return {"loss": loss_sum / count, "top1": 100 * correct1 / count, "top5": 100 * correct5 / count}


def test(cfg, backend, model, run_dir: str, label_offset: int = 0, dataset=None) -> int:
    """Top-1/top-5 of ``model`` on the validation split; writes ``test_results.json``.  Dataset label k is
    scored against logit k + ``label_offset`` (PNASNet's 1001-class TF head: 1)."""
    import json

    from common.data.build import build_loader
    from common.io_utils import atomic_write_text

    logger = get_logger(run_dir, "test")
    loader = build_loader(cfg, "val", epoch=0, dataset=dataset)
    trainer = backend.make_trainer(model, cfg, None, for_eval=True)
    started = time.perf_counter()
    result = evaluate(trainer, loader, use_ema=False, label_offset=label_offset)
    result.update({"images": len(loader.dataset), "seconds": time.perf_counter() - started,
                   "backend": backend.describe(), "weights": cfg.MODEL.WEIGHTS,
                   "model": f"{cfg.MODEL.FAMILY}/{cfg.MODEL.NAME}", "image_size": cfg.DATA.IMAGE_SIZE,
                   "label_offset": label_offset, "preprocessing": cfg.DATA.INTERPOLATION,
                   "crop_pct": cfg.DATA.CROP_PCT})
    path = os.path.join(run_dir, "test_results.json")
    atomic_write_text(path, json.dumps(result, indent=2))
    logger.info(f"top-1 {result['top1']:.3f}%  top-5 {result['top5']:.3f}%  on {result['images']} images "
                f"({result['seconds']:.1f}s) -> {path}")
    return 0


# ---------------------------------------------------------------------------------------------- helpers
def _maybe_resume(cfg, run_dir, trainer, logger):
    path = cfg.RESUME
    if path == "auto":
        candidate = os.path.join(run_dir, "last.safetensors")
        path = candidate if os.path.isfile(candidate) else ""
    if not path:
        return 0, None
    ckpt = load_checkpoint(path)
    if ckpt.meta.get("family") != cfg.MODEL.FAMILY or ckpt.meta.get("name") != cfg.MODEL.NAME:
        raise TrainingError(f"{path}: checkpoint of {ckpt.meta.get('family')}/{ckpt.meta.get('name')}, "
                            f"but the config trains {cfg.MODEL.FAMILY}/{cfg.MODEL.NAME}")
    if "epoch" not in ckpt.meta:
        raise TrainingError(f"{path}: no epoch in its metadata; it is not a training checkpoint")
    trainer.load_checkpoint(ckpt, source=path)
    epoch = int(ckpt.meta["epoch"])
    logger.info(f"resumed from {path} (written by {ckpt.meta.get('backend')} after epoch {epoch})")
    return epoch, ckpt.meta.get("best")


def _save_epoch(cfg, run_dir, trainer, backend, epoch, row, best, improved) -> None:
    ckpt: Checkpoint = trainer.to_checkpoint()
    ckpt.meta.update({
        "family": cfg.MODEL.FAMILY, "name": cfg.MODEL.NAME, "epoch": epoch + 1, "metrics": row, "best": best,
        "backend": backend.name, "config": config_to_dict(cfg),
    })
    last = os.path.join(run_dir, "last.safetensors")
    save_checkpoint(last, ckpt)
    if improved:
        save_checkpoint(os.path.join(run_dir, "best.safetensors"), ckpt)
    save_checkpoint(os.path.join(run_dir, f"epoch-{epoch + 1:04d}.safetensors"), ckpt)
    for old in sorted(glob.glob(os.path.join(run_dir, "epoch-*.safetensors")))[:-KEEP_HISTORY]:
        os.remove(old)


def _prefixed(prefix: str, values: Dict[str, float]) -> Dict[str, float]:
    return {prefix + k: v for k, v in values.items()}


def _epoch_line(row: Dict[str, Any], use_ema: bool) -> str:
    parts = [f"epoch {row['epoch']}", f"lr {row['lr']:.4g}", f"train loss {row['train_loss']:.4f}",
             f"train top-1 {row['train_top1']:.2f}%"]
    if "val_top1" in row:
        parts.append(f"val top-1 {row['val_top1']:.2f}% top-5 {row['val_top5']:.2f}%")
    if use_ema and "ema_val_top1" in row:
        parts.append(f"EMA val top-1 {row['ema_val_top1']:.2f}%")
    parts.append(f"{row['images_per_s']:.0f} img/s")
    return " | ".join(parts)


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value
