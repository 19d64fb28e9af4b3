"""Semantic segmentation data in numpy and PIL: Cityscapes-layout folders and paired image/label transforms.

Layout (Cityscapes' own, ``DATA.DATASET cityscapes`` with ``DATA.ROOT`` at the folder holding both trees)::

    leftImg8bit/<split>/<city>/<name>_leftImg8bit.png
    gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png      (train ids 0..C-1, 255 = ignore)

``split`` is ``train`` or ``val``.  A sample is ``(image uint8 (H, W, 3), label uint8 (H, W))``; a label value that is
neither a class (``< MODEL.NUM_CLASSES``) nor the ignore label stops the run with a message naming the file.

:class:`SegTransform` is a *paired* transform (``paired = True``: the loader calls ``t(image, label, rng)``).
Training (the HRNet/NAS-Bench-MR recipe's kind): resize so the long side is ``SEG.BASE_SIZE`` times a random scale in
``SEG.SCALE`` (image bilinear, label nearest), pad to at least ``SEG.CROP`` (image 0, label ignore), a random
``SEG.CROP`` crop, a horizontal flip with probability ``SEG.FLIP``, then normalise.  Evaluation: the whole image
(resized to ``SEG.EVAL_SIZE`` when it is set, the label by nearest), normalised.  All randomness comes from ``rng``.
"""
from __future__ import annotations

import os
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image

from common.data.datasets import DataError, DatasetNotFoundError, _missing_root_message, load_image

IMAGE_DIR, LABEL_DIR = "leftImg8bit", "gtFine"
IMAGE_SUFFIX, LABEL_SUFFIX = "_leftImg8bit.png", "_gtFine_labelTrainIds.png"


class CityscapesFolder:
    """Image/label pairs of one split of a Cityscapes-layout folder, sorted by path."""

    def __init__(self, root: str, split: str, num_classes: int, ignore_label: int = 255, channels: int = 3):
        self.root, self.split = root, split
        self.num_classes, self.ignore_label, self.channels = int(num_classes), int(ignore_label), int(channels)
        image_root = os.path.join(root, IMAGE_DIR, split)
        if not os.path.isdir(image_root):
            raise DatasetNotFoundError(_missing_root_message(image_root, f"Cityscapes-layout {split} images "
                                                             f"({IMAGE_DIR}/{split}/<city>/*{IMAGE_SUFFIX})"))
        self.samples: List[Tuple[str, str]] = []
        for city in sorted(os.listdir(image_root)):
            folder = os.path.join(image_root, city)
            if not os.path.isdir(folder):
                continue
            for name in sorted(os.listdir(folder)):
                if not name.endswith(IMAGE_SUFFIX):
                    continue
                stem = name[:-len(IMAGE_SUFFIX)]
                label = os.path.join(root, LABEL_DIR, split, city, stem + LABEL_SUFFIX)
                if not os.path.isfile(label):
                    raise DataError(f"{os.path.join(folder, name)} has no label map: {label} is missing")
                self.samples.append((os.path.join(folder, name), label))
        if not self.samples:
            raise DataError(f"{image_root} holds no <city>/*{IMAGE_SUFFIX} images")
        self.classes = None  # per-pixel labels: the class count is MODEL.NUM_CLASSES

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.samples[index]
        image = load_image(image_path, self.channels)
        try:
            with Image.open(label_path) as f:
                label = np.asarray(f.convert("L") if f.mode not in ("L", "P") else f, dtype=np.uint8)
        except OSError as exc:
            raise DataError(f"{label_path}: cannot read the label map ({exc})") from None
        if label.shape != image.shape[:2]:
            raise DataError(f"{label_path}: label map {label.shape[1]}x{label.shape[0]} differs from its image "
                            f"{image.shape[1]}x{image.shape[0]}")
        bad = (label >= self.num_classes) & (label != self.ignore_label)
        if bad.any():
            raise DataError(f"{label_path}: label value {int(label[bad][0])} is neither a class (< MODEL.NUM_CLASSES "
                            f"= {self.num_classes}) nor the ignore label {self.ignore_label}")
        return image, label


def _resize(image: np.ndarray, size_hw: Tuple[int, int], resample) -> np.ndarray:
    h, w = size_hw
    if image.shape[:2] == (h, w):
        return image
    pil = Image.fromarray(image)
    return np.asarray(pil.resize((w, h), resample))


class SegTransform:
    """Paired transform ``(image uint8 HWC, label uint8 HW, rng) -> (float32 CHW, int64 HW)``."""

    paired = True

    def __init__(self, train: bool, crop_hw: Sequence[int], scale: Sequence[float], base_size: int, flip: float,
                 eval_hw: Sequence[int], mean: Sequence[float], std: Sequence[float], ignore_label: int = 255):
        self.train = bool(train)
        self.crop_hw = (int(crop_hw[0]), int(crop_hw[1]))
        self.scale = (float(scale[0]), float(scale[1]))
        self.base_size = int(base_size)
        self.flip = float(flip)
        self.eval_hw = (int(eval_hw[0]), int(eval_hw[1]))
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.ignore_label = int(ignore_label)

    def _normalise(self, image: np.ndarray) -> np.ndarray:
        x = image.astype(np.float32) / 255.0
        if x.ndim == 2:
            x = x[:, :, None]
        mean = self.mean if self.mean.size == x.shape[2] else np.full(x.shape[2], self.mean.mean(), np.float32)
        std = self.std if self.std.size == x.shape[2] else np.full(x.shape[2], self.std.mean(), np.float32)
        return np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1), dtype=np.float32)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        if not self.train:
            if self.eval_hw != (0, 0):
                image = _resize(image, self.eval_hw, Image.Resampling.BILINEAR)
                label = _resize(label, self.eval_hw, Image.Resampling.NEAREST)
            return self._normalise(image), label.astype(np.int64)
        h, w = label.shape
        s = rng.uniform(*self.scale)
        long_side = max(1, int(self.base_size * s + 0.5))
        new_h, new_w = (long_side, max(1, int(w * long_side / h + 0.5))) if h >= w else \
            (max(1, int(h * long_side / w + 0.5)), long_side)
        image = _resize(image, (new_h, new_w), Image.Resampling.BILINEAR)
        label = _resize(label, (new_h, new_w), Image.Resampling.NEAREST)
        ch, cw = self.crop_hw
        pad_h, pad_w = max(ch - new_h, 0), max(cw - new_w, 0)
        if pad_h or pad_w:
            pads = ((0, pad_h), (0, pad_w)) + (((0, 0),) if image.ndim == 3 else ())
            image = np.pad(image, pads, constant_values=0)
            label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=self.ignore_label)
        top = int(rng.integers(0, label.shape[0] - ch + 1))
        left = int(rng.integers(0, label.shape[1] - cw + 1))
        image = image[top:top + ch, left:left + cw]
        label = label[top:top + ch, left:left + cw]
        if self.flip > 0 and rng.random() < self.flip:
            image, label = image[:, ::-1], label[:, ::-1]
        return self._normalise(np.ascontiguousarray(image)), np.ascontiguousarray(label, dtype=np.int64)


def build_seg_dataset(cfg, split: str) -> CityscapesFolder:
    if not cfg.DATA.ROOT:
        raise DatasetNotFoundError(_missing_root_message("DATA.ROOT ''", "Cityscapes-layout root"))
    return CityscapesFolder(cfg.DATA.ROOT, split, int(cfg.MODEL.NUM_CLASSES), int(cfg.SEG.IGNORE_LABEL),
                            int(cfg.DATA.CHANNELS))


def build_seg_transform(cfg, split: str) -> SegTransform:
    seg = cfg.SEG
    return SegTransform(split == "train", seg.CROP, seg.SCALE, seg.BASE_SIZE, seg.FLIP, seg.EVAL_SIZE,
                        cfg.DATA.MEAN, cfg.DATA.STD, seg.IGNORE_LABEL)


# ---------------------------------------------------------------------------------------------- metrics
def confusion(pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_label: int = 255) -> np.ndarray:
    """``[true, predicted]`` pixel counts over the pixels whose label is not ``ignore_label``."""
    valid = label != ignore_label
    index = label[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def seg_metrics(conf: np.ndarray) -> Tuple[float, float, float]:
    """``(mIoU, mAcc, aAcc)`` in percent from a confusion matrix: IoU and accuracy averaged over the classes present
    in the labels or the predictions (mIoU) / in the labels (mAcc), as mmseg / HRNet report them; aAcc = pixel
    accuracy."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    gt = conf.sum(axis=1)
    pred = conf.sum(axis=0)
    union = gt + pred - tp
    present = union > 0
    iou = tp[present] / union[present]
    acc = tp[gt > 0] / gt[gt > 0]
    total = conf.sum()
    return (100.0 * float(iou.mean()) if iou.size else 0.0, 100.0 * float(acc.mean()) if acc.size else 0.0,
            100.0 * float(tp.sum() / total) if total else 0.0)


__all__ = ["CityscapesFolder", "SegTransform", "build_seg_dataset", "build_seg_transform", "confusion",
           "seg_metrics", "IMAGE_DIR", "LABEL_DIR", "IMAGE_SUFFIX", "LABEL_SUFFIX"]
