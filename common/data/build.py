"""Datasets, transform pipelines and loaders from a config's ``DATA.*`` and ``AUG.*`` keys.

Train pipeline (each step only when its key turns it on)::

    RandomResizedCrop (AUG.RANDOM_RESIZED_CROP) | Resize + PadRandomCrop (AUG.PAD_CROP) | Resize
    -> HorizontalFlip (AUG.HFLIP) -> ColorJitter (AUG.COLOR_JITTER, only when RandAugment is off, as timm)
    -> RandAugment (AUG.RAND_AUGMENT) -> ToNormalizedFloat (DATA.MEAN/STD)
    -> RandomErasing (AUG.RANDOM_ERASE, 'pixel') -> Cutout (AUG.CUTOUT)

Eval pipeline: ResizeCenterCrop(DATA.IMAGE_SIZE, DATA.CROP_PCT, DATA.INTERPOLATION) -> ToNormalizedFloat, or
TF1-exact Inception preprocessing when DATA.INTERPOLATION is 'tf_bilinear' (then an ImageFolder val split is
also decoded like ``tf.io.decode_image``, and DATA.MEAN/STD are not used: TF fixes them to 0.5).
Training crops resample with AUG.INTERPOLATION ('random' = bilinear or bicubic per image, as Cream/timm).
"""
from __future__ import annotations

import os

from typing import Optional

import numpy as np

from common.data import datasets as ds
from common.data.loader import Loader
from common.data.rand_augment import RandAugment
from common.data.transforms import (
    ColorJitter,
    Compose,
    Cutout,
    HorizontalFlip,
    PadRandomCrop,
    RandomErasing,
    RandomResizedCrop,
    Resize,
    ResizeCenterCrop,
    TFInceptionEval,
    ToNormalizedFloat,
)

SPLITS = ("train", "val")
_SPLIT_CODE = {"train": 0, "val": 1}  # mixed into seeds so the two splits draw independent streams


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")


def _split_seed(seed: int, split: str, purpose: int) -> int:
    """A 32-bit seed for ``(cfg.SEED, split, purpose)``, independent across the three."""
    return int(np.random.SeedSequence([int(seed), _SPLIT_CODE[split], purpose]).generate_state(1)[0])


def _imagefolder_split_dir(root: str, split: str) -> str:
    path = os.path.join(root, split)
    if not os.path.isdir(root):
        raise ds.DatasetNotFoundError(ds._missing_root_message(root, "DATA.ROOT"))
    if not os.path.isdir(path):
        raise ds.DatasetNotFoundError(
            f"{path}: ImageFolder split folder not found; DATA.ROOT ({root}) must hold train/<class>/<image> "
            f"and val/<class>/<image> (ImageNet layout)"
        )
    return path


def decode_like_tensorflow(path: str) -> np.ndarray:
    """``tf.io.decode_image(channels=3)``-exact decoding (``common.tf_image``, imported when first used)."""
    from common import tf_image

    return tf_image.decode_image_file(path)


def _full_dataset(cfg, split: str):
    data = cfg.DATA
    train = split == "train"
    name = data.DATASET
    if name == "builtin_digits":
        return ds.DigitsDataset(train=train, image_size=data.IMAGE_SIZE, channels=data.CHANNELS)
    if name in ("cifar10", "cifar100"):
        if not data.ROOT:
            raise ds.DatasetNotFoundError(ds._missing_root_message("DATA.ROOT ''", f"{name} root"))
        return ds.load_cifar(data.ROOT, name, train=train, channels=data.CHANNELS)
    if name == "imagefolder":
        if not data.ROOT:
            raise ds.DatasetNotFoundError(ds._missing_root_message("DATA.ROOT ''", "ImageFolder root"))
        path = _imagefolder_split_dir(data.ROOT, split)
        train_dir = os.path.join(data.ROOT, "train")
        # The val split takes the train split's class list so labels agree even if val lacks a class.
        classes = ds.find_classes(train_dir) if not train and os.path.isdir(train_dir) else None
        # TF-exact evaluation (PNASNet) needs TF's JPEG decoder too, not only its resize.
        tf_eval = not train and data.INTERPOLATION == "tf_bilinear"
        return ds.ImageFolder(path, channels=data.CHANNELS, classes=classes,
                              decoder=decode_like_tensorflow if tf_eval else None)
    if name == "cityscapes":  # label maps (common/data/segmentation.py)
        from common.data.segmentation import build_seg_dataset

        return build_seg_dataset(cfg, split)
    if name == "nasbench_mr":  # the predictor's rows: (code, z-scored metrics) of the NCP.SETTING table
        return ds.TableDataset.from_config(cfg, split)
    if name == "synthetic":
        return ds.SyntheticDataset(
            num_samples=data.SYNTHETIC_SAMPLES,
            image_size=data.IMAGE_SIZE,
            channels=data.CHANNELS,
            num_classes=cfg.MODEL.NUM_CLASSES,
            seed=_split_seed(cfg.SEED, split, purpose=1),
        )
    raise ds.DataError(
        f"DATA.DATASET = {name!r} is not one of builtin_digits, cifar10, cifar100, imagefolder, synthetic, "
        "nasbench_mr, cityscapes")


def build_dataset(cfg, split: str, verify: Optional[bool] = None):
    """The ``split`` ('train' or 'val') dataset, limited to DATA.NUM_TRAIN / DATA.NUM_VAL samples when > 0.

    The limit keeps a seeded random subset (the first N of a permutation seeded by ``(SEED, split)``), in
    dataset order.  ``verify`` (default ``DATA.VERIFY_FILES``): an ImageFolder's files that the split uses are checked now
    (:func:`common.data.datasets.verify_image_files`), so an unreadable image stops the command before any work.
    Every error is a ``ValueError`` (``DataError``; ``DatasetNotFoundError`` is also a ``FileNotFoundError``)
    whose one-line message names the file, folder or key.
    """
    _check_split(split)
    dataset = _full_dataset(cfg, split)
    key = "NUM_TRAIN" if split == "train" else "NUM_VAL"
    limit = int(cfg.DATA[key])
    if limit < 0:
        raise ds.DataError(f"DATA.{key} = {limit} must be >= 0 (0 = every sample)")
    if limit > len(dataset):
        raise ds.DataError(
            f"DATA.{key} = {limit} but the {cfg.DATA.DATASET} {split} split has only {len(dataset)} samples"
        )
    if limit not in (0, len(dataset)):
        rng = np.random.Generator(np.random.PCG64(_split_seed(cfg.SEED, split, purpose=2)))
        dataset = ds.Subset(dataset, np.sort(rng.permutation(len(dataset))[:limit]))
    if verify if verify is not None else bool(getattr(cfg.DATA, "VERIFY_FILES", True)):
        inner = dataset.dataset if isinstance(dataset, ds.Subset) else dataset
        if isinstance(inner, ds.ImageFolder):
            inner.verify(dataset.indices if isinstance(dataset, ds.Subset) else None)
    return dataset


def build_transform(cfg, split: str) -> Compose:
    """The per-sample pipeline ``(uint8 HWC, rng) -> float32 CHW`` for ``split``."""
    _check_split(split)
    data, aug = cfg.DATA, cfg.AUG
    if data.DATASET == "nasbench_mr":  # table rows are numbers, not images
        return None
    if data.DATASET == "cityscapes":  # image and label map transformed together
        from common.data.segmentation import build_seg_transform

        return build_seg_transform(cfg, split)
    size = int(data.IMAGE_SIZE)
    if split == "val":
        if data.INTERPOLATION == "tf_bilinear":
            return Compose([TFInceptionEval(size, data.CROP_PCT)])
        return Compose([ResizeCenterCrop(size, data.CROP_PCT, data.INTERPOLATION),
                        ToNormalizedFloat(data.MEAN, data.STD)])

    steps = []
    if aug.RANDOM_RESIZED_CROP:
        steps.append(RandomResizedCrop(size, tuple(aug.RRC_SCALE), tuple(aug.RRC_RATIO), aug.INTERPOLATION))
    else:
        steps.append(Resize(size, aug.INTERPOLATION))  # a no-op when the image already has the size
        if aug.PAD_CROP > 0:
            steps.append(PadRandomCrop(size, aug.PAD_CROP))
    if aug.HFLIP > 0:
        steps.append(HorizontalFlip(aug.HFLIP))
    if aug.COLOR_JITTER > 0 and not aug.RAND_AUGMENT:
        steps.append(ColorJitter(aug.COLOR_JITTER, aug.COLOR_JITTER, aug.COLOR_JITTER))
    if aug.RAND_AUGMENT:
        steps.append(RandAugment.from_string(aug.RAND_AUGMENT))
    steps.append(ToNormalizedFloat(data.MEAN, data.STD))
    if aug.RANDOM_ERASE > 0:
        steps.append(RandomErasing(p=aug.RANDOM_ERASE, mode="pixel"))
    if aug.CUTOUT > 0:
        steps.append(Cutout(aug.CUTOUT))
    return Compose(steps)


def eval_preprocess(cfg, path: str) -> np.ndarray:
    """One image file -> the float32 CHW network input, exactly as the validation split prepares its images
    (TF-exact decoding and Inception preprocessing when DATA.INTERPOLATION is 'tf_bilinear')."""
    if cfg.DATA.INTERPOLATION == "tf_bilinear":
        image = ds.convert_channels(decode_like_tensorflow(path), cfg.DATA.CHANNELS)
    else:
        image = ds.load_image(path, channels=cfg.DATA.CHANNELS)
    # The eval pipeline draws no random numbers; the generator only satisfies the transform signature.
    return build_transform(cfg, "val")(image, np.random.default_rng(0))


def split_for_search(dataset, portion: float, seed: int):
    """``(weights part, architecture part)`` of a training set for a differentiable search: a permutation seeded by
    ``seed``, its first ``floor(portion * N)`` samples train the weights, the rest the architecture (each part in
    dataset order).  Upstream PC-DARTS cuts CIFAR in dataset order; the permutation keeps both parts class-balanced
    on any dataset (an ImageFolder is sorted by class)."""
    n = len(dataset)
    cut = int(np.floor(float(portion) * n))
    if not 0 < cut < n:
        raise ds.DataError(f"PCDARTS.TRAIN_PORTION = {portion!r} of {n} training samples leaves a part empty")
    order = np.random.Generator(np.random.PCG64(_split_seed(seed, "train", purpose=3))).permutation(n)
    return ds.Subset(dataset, np.sort(order[:cut])), ds.Subset(dataset, np.sort(order[cut:]))


def build_loader(cfg, split: str, epoch: int = 0, rank: int = 0, world_size: int = 1, dataset=None,
                 seed: Optional[int] = None) -> Loader:
    """A :class:`Loader` over ``build_dataset(cfg, split)`` (or ``dataset``) with ``build_transform(cfg, split)``.

    Train: shuffled with ``cfg.SEED`` (or ``seed``), DATA.BATCH_SIZE, DATA.DROP_LAST.  Val: dataset order,
    DATA.EVAL_BATCH_SIZE (0 -> BATCH_SIZE), every sample kept.  Both use DATA.WORKERS processes.
    """
    _check_split(split)
    train = split == "train"
    data = cfg.DATA
    return Loader(
        build_dataset(cfg, split) if dataset is None else dataset,
        build_transform(cfg, split),
        batch_size=data.BATCH_SIZE if train or data.EVAL_BATCH_SIZE <= 0 else data.EVAL_BATCH_SIZE,
        shuffle=train,
        seed=cfg.SEED if seed is None else int(seed),
        epoch=epoch,
        drop_last=bool(data.DROP_LAST) if train else False,
        workers=data.WORKERS,
        rank=rank,
        world_size=world_size,
    )
