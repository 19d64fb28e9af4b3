"""Dataset readers: CIFAR-10/100 pickles, ImageFolder trees, scikit-learn's digits, seeded synthetic images.

Every dataset has the same small protocol, which is all the loader relies on:

- ``len(ds)``; ``ds[i] -> (image, label)`` with ``image`` a ``uint8`` array of shape ``(H, W, C)``
  (``C`` = ``channels``, 1 or 3, always three dimensions) and ``label`` a Python ``int``;
- ``ds.classes`` (list of class names) and ``ds.num_classes``.

Grayscale is always PIL's ``L`` conversion (ITU-R 601-2 luma, integer-rounded), whether the source is a
file PIL decodes or an array we hold, so a CIFAR image and the same image saved as PNG give the same bytes.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from common.data.safe_pickle import safe_load
from common.errors import one_line

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"

# The built-in digits split: 20% of every class goes to validation (fixed seed, independent of cfg.SEED,
# so the validation set never changes).  Sizes: 1438 train / 359 val; per class (digits 0..9)
# val = 36, 36, 35, 37, 36, 36, 36, 36, 35, 36.
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 20240101
DIGITS_TRAIN_SIZE = 1438
DIGITS_VAL_SIZE = 359


class DataError(ValueError):
    """A dataset file or folder is unusable; the message names it."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """The dataset root (or a file it must hold) does not exist."""


def _missing_root_message(path: str, what: str) -> str:
    return (
        f"{path}: {what} not found. Point DATA.ROOT at a dataset on disk: an ImageFolder root holding "
        f"train/<class>/<image> and val/<class>/<image> (the ImageNet layout, e.g. `DATA.ROOT /data/imagenet`), "
        f"or a folder holding {CIFAR10_DIR}/ for CIFAR. Or train on the digits dataset that ships with "
        f"scikit-learn: add `DATA.DATASET builtin_digits`, or run the quick start "
        f"`python tools/main.py train configs/cream14_digits.yaml`."
    )


# ------------------------------------------------------------------------------------------- channels
def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3) uint8 -> (..., 1) uint8`` with exactly PIL's ``convert('L')`` arithmetic."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    gray = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
    return gray.astype(np.uint8)[..., None]


def convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Return ``image`` (``HxWx1`` or ``HxWx3`` uint8) with ``channels`` channels."""
    have = image.shape[-1]
    if have == channels:
        return image
    if channels == 1 and have == 3:
        return rgb_to_gray(image)
    if channels == 3 and have == 1:
        return np.repeat(image, 3, axis=-1)
    raise DataError(f"cannot convert an image with {have} channels to {channels} channels")


def _check_channels(channels: int) -> int:
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")
    return channels


# ----------------------------------------------------------------------------------------- base classes
class ArrayDataset:
    """Images held in memory as one ``(N, H, W, C) uint8`` array."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], classes: Sequence[str]):
        images = np.asarray(images)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise DataError(f"images must be a uint8 (N, H, W, C) array, got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, int]:
        return self.images[index], int(self.labels[index])


class Subset:
    """``dataset`` restricted to ``indices`` (in that order)."""

    def __init__(self, dataset, indices: Sequence[int]):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.classes = getattr(dataset, "classes", None)  # None: rows without classes (a benchmark table)

    @property
    def num_classes(self) -> Optional[int]:
        return None if self.classes is None else len(self.classes)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[int(self.indices[index])]


# ----------------------------------------------------------------------------------------------- CIFAR
def _cifar_dir(root: str, folder: str) -> str:
    """Accept DATA.ROOT pointing either at the folder holding ``folder`` or at ``folder`` itself."""
    if not os.path.isdir(root):
        raise DatasetNotFoundError(_missing_root_message(root, "dataset root"))
    inside = os.path.join(root, folder)
    if os.path.isdir(inside):
        return inside
    if os.path.basename(os.path.normpath(root)) == folder:
        return root
    raise DatasetNotFoundError(_missing_root_message(inside, f"CIFAR folder '{folder}'"))


def _read_cifar_batch(path: str, label_key: bytes) -> Tuple[np.ndarray, List[int]]:
    if not os.path.isfile(path):
        raise DatasetNotFoundError(f"{path}: CIFAR batch file not found (is the archive fully extracted?)")
    batch = safe_load(path)  # PickleReadError / UnsafePickleError (ValueErrors) name the file
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a dict in a CIFAR batch file, got {type(batch).__name__}")
    for key in (b"data", label_key):
        if key not in batch:
            raise DataError(f"{path}: CIFAR batch has no key {key!r} (keys: {sorted(batch)})")
    data = np.asarray(batch[b"data"])
    try:
        labels = [int(v) for v in batch[label_key]]
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: CIFAR labels {label_key!r} are not a list of integers ({one_line(exc)})") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(
            f"{path}: expected b'data' uint8 of shape (N, 3072) and N labels, got {data.dtype} {data.shape} "
            f"and {len(labels)} labels"
        )
    # Rows are channel-major 3x32x32 (R plane, G plane, B plane); we hold images HWC.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _read_cifar_names(path: str, key: bytes, count: int) -> List[str]:
    """Class names from the ``meta``/``batches.meta`` file when present, else ``'0'..'N-1'``."""
    if os.path.isfile(path):
        meta = safe_load(path)
        if isinstance(meta, dict) and key in meta and len(meta[key]) == count:
            return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta[key]]
    return [str(i) for i in range(count)]


def load_cifar(root: str, name: str, train: bool, channels: int = 3) -> ArrayDataset:
    """CIFAR-10 (``name='cifar10'``) or CIFAR-100 (``'cifar100'``, fine labels) from the python pickles.

    ``root`` holds ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``, ``batches.meta``) or
    ``cifar-100-python/`` (``train``, ``test``, ``meta``), or is that folder.  Files are read with a
    restricted unpickler (:mod:`common.data.safe_pickle`).
    """
    _check_channels(channels)
    if name == "cifar10":
        folder = _cifar_dir(root, CIFAR10_DIR)
        files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        label_key, meta_file, meta_key, count = b"labels", "batches.meta", b"label_names", 10
    elif name == "cifar100":
        folder = _cifar_dir(root, CIFAR100_DIR)
        files = ["train"] if train else ["test"]
        label_key, meta_file, meta_key, count = b"fine_labels", "meta", b"fine_label_names", 100
    else:
        raise DataError(f"unknown CIFAR variant {name!r}; expected 'cifar10' or 'cifar100'")
    images, labels = [], []
    for file in files:
        batch_images, batch_labels = _read_cifar_batch(os.path.join(folder, file), label_key)
        images.append(batch_images)
        labels.extend(batch_labels)
    bad = [v for v in labels if not 0 <= v < count]
    if bad:
        raise DataError(f"{folder}: label {bad[0]} outside [0, {count}) in {name}")
    stacked = np.ascontiguousarray(np.concatenate(images))
    if channels == 1:
        stacked = rgb_to_gray(stacked)
    classes = _read_cifar_names(os.path.join(folder, meta_file), meta_key, count)
    return ArrayDataset(stacked, labels, classes)


# ---------------------------------------------------------------------------------------- ImageFolder
def load_image(path: str, channels: int = 3) -> np.ndarray:
    """Decode ``path`` fully (``img.load()``) to ``uint8 (H, W, channels)``; errors name the file."""
    try:
        with Image.open(path) as img:
            img.load()  # Image.open is lazy: force decoding so a truncated file fails here, named
            img = img.convert("L" if channels == 1 else "RGB")
    except FileNotFoundError:
        raise DatasetNotFoundError(f"{path}: image file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot decode the image ({type(exc).__name__}: {one_line(exc)})") from None
    array = np.asarray(img, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def find_classes(root: str) -> List[str]:
    """Sorted names of the sub-folders of ``root`` (hidden folders skipped)."""
    if not os.path.isdir(root):
        raise DatasetNotFoundError(_missing_root_message(root, "ImageFolder root"))
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


class ImageFolder:
    """``root/<class>/**/<image>`` with classes sorted by name (ImageNet ``train/`` and ``val/`` layout).

    ``classes`` fixes the class list (give the train split's list to the val split, so a class missing from
    val keeps its index); a folder not in it is an error.  Images are decoded lazily in ``__getitem__``, by
    PIL, or by ``decoder(path) -> uint8 (H, W, 3)`` when given (e.g. TF's JPEG decoder for TF-exact eval).
    """

    def __init__(self, root: str, channels: int = 3, classes: Optional[Sequence[str]] = None,
                 decoder: Optional[Callable[[str], np.ndarray]] = None):
        self.root = root
        self.channels = _check_channels(channels)
        self.decoder = decoder
        present = find_classes(root)
        self.classes = list(classes) if classes is not None else present
        index_of = {name: i for i, name in enumerate(self.classes)}
        unknown = [name for name in present if name not in index_of]
        if unknown:
            raise DataError(
                f"{root}: class folder(s) {unknown[:5]} are not among the {len(self.classes)} known classes"
            )
        if not present:
            raise DataError(
                f"{root}: no class folders (expected {root}/<class>/<image>, one sub-folder per class, with "
                f"extensions {', '.join(IMAGE_EXTENSIONS)})"
            )
        self.samples: List[Tuple[str, int]] = []
        empty = []
        for name in present:
            before = len(self.samples)
            for folder, subdirs, files in os.walk(os.path.join(root, name)):
                subdirs.sort()
                for file in sorted(files):
                    if file.lower().endswith(IMAGE_EXTENSIONS):
                        self.samples.append((os.path.join(folder, file), index_of[name]))
            if len(self.samples) == before:
                empty.append(os.path.join(root, name))
        if not self.samples:
            raise DataError(
                f"{root}: no images found (expected {root}/<class>/<image> with extensions "
                f"{', '.join(IMAGE_EXTENSIONS)})"
            )
        if empty:
            listed = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
            if classes is None:
                # The class list comes from the folders: an empty one would still take an index (a head with one
                # class that never occurs), or, if skipped, shift every later class; either way it is a mistake.
                raise DataError(
                    f"{len(empty)} empty class folder(s): {listed} (no file with extensions "
                    f"{', '.join(IMAGE_EXTENSIONS)}); fill or remove it: every class folder of {root} must hold images"
                )
            # The class list is given (a val split indexed like train): an empty folder shifts nothing.
            warnings.warn(f"{len(empty)} empty class folder(s) in {root}: {listed}; those classes have no samples",
                          stacklevel=2)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def verify(self, indices: Optional[Sequence[int]] = None) -> None:
        """Check that every image file (or those of ``indices``) is readable, before any work starts.

        See :func:`verify_image_files`; raises :class:`DataError` naming the bad files.
        """
        chosen = self.samples if indices is None else [self.samples[int(i)] for i in indices]
        verify_image_files([path for path, _ in chosen], self.channels)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, int]:
        path, label = self.samples[index]
        if self.decoder is None:
            return load_image(path, self.channels), label
        try:
            image = np.asarray(self.decoder(path), dtype=np.uint8)
        except DataError:
            raise
        except Exception as exc:  # the decoder's own error may not say which file
            raise DataError(f"{path}: cannot decode the image ({type(exc).__name__}: {one_line(exc)})") from None
        if image.ndim == 2:
            image = image[..., None]
        return convert_channels(image, self.channels), label


# Cheap checks of an image file's first and last bytes: (magic prefix, test on (head, tail, size)).  A file whose
# check fails, or whose format is not listed, is decoded in full; only a failed decode is an error, so a
# check can only cost time, never reject a file PIL reads.
_TAIL_BYTES = 1024


def _riff_complete(head: bytes, tail: bytes, size: int) -> bool:
    return len(head) >= 12 and head[8:12] == b"WEBP" and int.from_bytes(head[4:8], "little") + 8 <= size


def _bmp_complete(head: bytes, tail: bytes, size: int) -> bool:
    return len(head) >= 6 and int.from_bytes(head[2:6], "little") <= size


_SIGNATURES = (
    (b"\xff\xd8\xff", lambda head, tail, size: b"\xff\xd9" in tail),          # JPEG: SOI ... EOI
    (b"\x89PNG\r\n\x1a\n", lambda head, tail, size: b"IEND" in tail),          # PNG: ... IEND chunk
    (b"RIFF", _riff_complete),                                                   # WebP: RIFF size
    (b"BM", _bmp_complete),                                                      # BMP: header file size
)


def _looks_complete(path: str) -> bool:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(16)
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read(_TAIL_BYTES)
    except OSError:
        return False
    for magic, complete in _SIGNATURES:
        if head.startswith(magic):
            return bool(complete(head, tail, size))
    return False  # another format (TIFF, PNM, ...): decode it to know


def _check_image_file(path: str, channels: int) -> Optional[str]:
    """``None`` when ``path`` is a readable image, else a one-line reason naming it."""
    if _looks_complete(path):
        return None
    try:
        load_image(path, channels)
    except DataError as exc:
        return one_line(exc)
    return None


def verify_image_files(paths: Sequence[str], channels: int = 3, threads: int = 8) -> None:
    """Raise :class:`DataError` naming every unreadable file among ``paths`` (the first 3 and a count).

    Each file's first and last bytes are read (JPEG/PNG end markers, WebP/BMP declared sizes); a file that does
    not look complete, or has another format, is decoded in full.  A non-image file named ``.jpg``, an empty or
    a truncated file stops the run here, before any work, instead of in the middle of an epoch.  (A file damaged
    only in the middle still fails when it is decoded, with the same one-line message.)
    """
    paths = list(paths)
    if not paths:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(int(threads), len(paths)))) as pool:
        reasons = [r for r in pool.map(lambda p: _check_image_file(p, channels), paths, chunksize=64) if r]
    if reasons:
        more = f"; and {len(reasons) - 3} more" if len(reasons) > 3 else ""
        raise DataError(f"{len(reasons)} unreadable image file(s): " + "; ".join(reasons[:3]) + more)


# ---------------------------------------------------------------------------------------- built-in digits
def digits_split_indices(targets: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split of the digits: ``(train_indices, val_indices)``, both sorted."""
    rng = np.random.Generator(np.random.PCG64(DIGITS_SPLIT_SEED))
    train, val = [], []
    for label in range(int(targets.max()) + 1):
        members = rng.permutation(np.flatnonzero(targets == label))
        n_val = int(round(len(members) * DIGITS_VAL_FRACTION))
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


class DigitsDataset:
    """scikit-learn's handwritten digits (1797 8x8 images, values 0..16, 10 classes) as uint8 images.

    Values are scaled to 0..255 (``round(v * 255 / 16)``) and upscaled with PIL bilinear to
    ``image_size x image_size`` on access (cheap for 8x8 sources, and no large array is held).
    ``train=True`` gives the 1438-image split, ``False`` the 359-image split (see ``DIGITS_*``).
    """

    def __init__(self, train: bool, image_size: int = 32, channels: int = 3):
        from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

        digits = load_digits()
        train_idx, val_idx = digits_split_indices(digits.target)
        chosen = train_idx if train else val_idx
        small = np.round(digits.images[chosen] * (255.0 / 16.0)).astype(np.uint8)
        self.small_images = small  # (N, 8, 8)
        self.labels = digits.target[chosen].astype(np.int64)
        self.image_size = int(image_size)
        self.channels = _check_channels(channels)
        self.classes = [str(i) for i in range(10)]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, int]:
        small = Image.fromarray(self.small_images[index])
        if self.image_size != small.width:
            small = small.resize((self.image_size, self.image_size), Image.BILINEAR)
        image = np.asarray(small, dtype=np.uint8)[..., None]
        return convert_channels(image, self.channels), int(self.labels[index])


# ------------------------------------------------------------------------------------------ synthetic
class TableDataset:
    """Rows of a NAS-Bench-MR / NAS-Bench-201 table for the NCP predictor: ``(code float32[d], z-scored metrics
    float32[m])``, the metrics normalised with the statistics of the whole table (ddof 0, upstream's).  The split is
    upstream's: the first ``val_fraction`` of ``RandomState(seed).permutation(n)`` are ``val``, the rest ``train``."""

    def __init__(self, setting: str, split: str, root: str = "", seed: int = 233, val_fraction: float = 0.2):
        from common.data import nasbench_mr as tables

        table = tables.load_table(setting, root or None)
        mean, std = tables.zscore_stats(table.targets)
        train_idx, val_idx = tables.split_indices(len(table.features), seed=seed, val_fraction=val_fraction)
        self.indices = np.asarray(train_idx if split == "train" else val_idx)
        self.features = np.ascontiguousarray(table.features[self.indices], dtype=np.float32)
        self.targets = np.ascontiguousarray((table.targets[self.indices] - mean) / std, dtype=np.float32)
        self.setting, self.split = setting, split

    @classmethod
    def from_config(cls, cfg, split: str) -> "TableDataset":
        node = cfg.NCP
        return cls(str(node.SETTING), split, str(node.TABLES), int(node.SPLIT_SEED), float(node.VAL_FRACTION))

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        return self.features[index], self.targets[index]


class SyntheticDataset:
    """Seeded random ``uint8`` images and labels, generated on access (shape-only tests, benchmarks).

    Image ``i`` comes from ``SeedSequence([seed, i])``, so it never depends on access order.
    """

    def __init__(self, num_samples: int, image_size: int, channels: int = 3, num_classes: int = 10, seed: int = 0):
        if num_samples < 1 or num_classes < 1:
            raise DataError(f"synthetic dataset needs num_samples >= 1 and num_classes >= 1, "
                            f"got {num_samples} and {num_classes}")
        self.num_samples = int(num_samples)
        self.image_size = int(image_size)
        self.channels = _check_channels(channels)
        self.seed = int(seed)
        self.classes = [f"class_{i}" for i in range(num_classes)]
        label_rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, 2**31 - 1])))
        self.labels = label_rng.integers(0, num_classes, size=self.num_samples, dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Tuple[np.ndarray, int]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"synthetic index {index} outside [0, {self.num_samples})")
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, int(index)])))
        shape = (self.image_size, self.image_size, self.channels)
        return rng.integers(0, 256, size=shape, dtype=np.uint8), int(self.labels[index])
