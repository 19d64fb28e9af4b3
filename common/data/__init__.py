"""The framework-free data pipeline: readers, numpy/PIL transforms, a seeded loader, config builders.

Both backends consume the same numpy batches (``float32 NCHW`` images, ``int64`` labels); nothing here
imports torch, paddle or tensorflow.  Typical use::

    from common.data import build_loader
    loader = build_loader(cfg, "train", rank=rank, world_size=world_size)
    for epoch in range(start, cfg.TRAIN.EPOCHS):
        loader.set_epoch(epoch)
        for images, labels in loader:        # numpy arrays
            ...
    checkpoint_meta["loader"] = loader.state_dict()   # JSON-safe; load_state_dict() resumes mid-epoch
"""
from common.data.build import build_dataset, build_loader, build_transform
from common.data.datasets import (
    ArrayDataset,
    DataError,
    DatasetNotFoundError,
    DigitsDataset,
    ImageFolder,
    Subset,
    SyntheticDataset,
    load_cifar,
    load_image,
    verify_image_files,
)
from common.data.loader import Loader, epoch_order, load_batch, sample_rng, shard_indices
from common.data.rand_augment import RandAugment, RandAugmentConfigError, parse_rand_augment
from common.data.safe_pickle import PickleReadError, UnsafePickleError, safe_load

__all__ = [
    "ArrayDataset",
    "DataError",
    "DatasetNotFoundError",
    "DigitsDataset",
    "ImageFolder",
    "Loader",
    "PickleReadError",
    "RandAugment",
    "RandAugmentConfigError",
    "Subset",
    "SyntheticDataset",
    "UnsafePickleError",
    "build_dataset",
    "build_loader",
    "build_transform",
    "epoch_order",
    "load_batch",
    "load_cifar",
    "load_image",
    "verify_image_files",
    "parse_rand_augment",
    "safe_load",
    "sample_rng",
    "shard_indices",
]
