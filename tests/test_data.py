"""Tests of the framework-free data pipeline (``common/data``): readers, transforms, loader, builders.

Every dataset here is written by the test itself (or ships with scikit-learn).
"""
from __future__ import annotations

import importlib
import io
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

from common.config import get_default_config
from common.data import (
    DataError,
    DatasetNotFoundError,
    DigitsDataset,
    ImageFolder,
    Loader,
    RandAugment,
    RandAugmentConfigError,
    SyntheticDataset,
    UnsafePickleError,
    build_dataset,
    build_loader,
    build_transform,
    load_cifar,
    parse_rand_augment,
    safe_load,
    sample_rng,
)
from common.data import transforms as T
from common.data.datasets import ArrayDataset, rgb_to_gray


def rng(seed=0):
    return np.random.default_rng(seed)


def random_image(shape=(16, 20, 3), seed=0):
    return rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# ------------------------------------------------------------------------------------------- CIFAR files
def _cifar_rows(count, seed):
    """``count`` CIFAR rows (channel-major 3x32x32) and the HWC images they encode."""
    images = random_image((count, 32, 32, 3), seed)
    rows = images.transpose(0, 3, 1, 2).reshape(count, -1)
    return rows, images


def write_cifar10(root, per_batch=4, protocol=2):
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    expected_images, expected_labels = [], []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        rows, images = _cifar_rows(per_batch, seed=i)
        labels = [(i + j) % 10 for j in range(per_batch)]
        with open(os.path.join(folder, name), "wb") as handle:
            pickle.dump({b"batch_label": b"x", b"data": rows, b"labels": labels}, handle, protocol=protocol)
        expected_images.append(images)
        expected_labels.append(labels)
    names = [n.encode() for n in "airplane automobile bird cat deer dog frog horse ship truck".split()]
    with open(os.path.join(folder, "batches.meta"), "wb") as handle:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": per_batch}, handle, protocol=protocol)
    return folder, expected_images, expected_labels


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_reader(tmp_path, protocol):
    _, images, labels = write_cifar10(str(tmp_path), protocol=protocol)
    train = load_cifar(str(tmp_path), "cifar10", train=True)
    test = load_cifar(str(tmp_path), "cifar10", train=False)
    assert len(train) == 20 and len(test) == 4
    assert train.classes[0] == "airplane" and train.num_classes == 10
    image, label = train[5]
    assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
    np.testing.assert_array_equal(image, images[1][1])  # row order: batch 1 then batch 2 ...
    assert label == labels[1][1] and isinstance(label, int)
    np.testing.assert_array_equal(test[3][0], images[5][3])
    gray = load_cifar(str(tmp_path / "cifar-10-batches-py"), "cifar10", train=False, channels=1)  # root = the folder
    assert gray[0][0].shape == (32, 32, 1)
    expected = np.asarray(Image.fromarray(images[5][0]).convert("L"))
    np.testing.assert_array_equal(gray[0][0][..., 0], expected)


def test_cifar_numpy1_module_path_is_allowed(tmp_path):
    """Files written by numpy 1.x name ``numpy.core.multiarray``; they must load under numpy 2."""
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(str(tmp_path), protocol=2)
    for name in os.listdir(folder):
        data = (folder / name).read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / name).write_bytes(data)
    assert b"numpy.core.multiarray" in (folder / "test_batch").read_bytes()
    assert len(load_cifar(str(tmp_path), "cifar10", train=False)) == 4


def test_cifar100_reader(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rows, images = _cifar_rows(6, seed=3)
    for name in ("train", "test"):
        content = {b"data": rows, b"fine_labels": [0, 99, 5, 7, 42, 1], b"coarse_labels": [0] * 6}
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}))
    train = load_cifar(str(tmp_path), "cifar100", train=True)
    assert len(train) == 6 and train.num_classes == 100 and train.classes[99] == "c99"
    assert train[1][1] == 99
    np.testing.assert_array_equal(train[4][0], images[4])


class _RunsShell:
    """What an attacker would put in a 'CIFAR' pickle: unpickling it calls ``os.system``."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    sentinel = tmp_path / "pwned"
    payload = {b"data": _RunsShell(f"touch {sentinel}"), b"labels": [0]}
    (folder / "test_batch").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(UnsafePickleError) as info:
        load_cifar(str(tmp_path), "cifar10", train=False)
    message = str(info.value)
    assert str(folder / "test_batch") in message
    assert "system" in message  # os.system pickles as posix.system / nt.system
    assert not sentinel.exists()
    # positive control: the same payload *is* live under plain pickle (a harmless touch of another file)
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_RunsShell(f"touch {control}"), protocol=2))
    assert control.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("subprocess", "Popen"), ("numpy", "load")])
def test_restricted_unpickler_refuses_other_globals(tmp_path, module, name):
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"q\x00.")
    with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
        safe_load(str(path))


def test_truncated_cifar_batch_names_file(tmp_path):
    folder, _, _ = write_cifar10(str(tmp_path))
    path = os.path.join(folder, "test_batch")
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
    with pytest.raises(pickle.UnpicklingError, match="test_batch"):
        load_cifar(str(tmp_path), "cifar10", train=False)


def test_missing_root_error_names_path_and_alternatives(tmp_path):
    missing = str(tmp_path / "no_such_dir")
    with pytest.raises(DatasetNotFoundError) as info:
        load_cifar(missing, "cifar10", train=True)
    message = str(info.value)
    assert missing in message and "DATA.ROOT" in message and "DATA.DATASET builtin_digits" in message
    cfg = get_default_config()
    cfg.DATA.DATASET, cfg.DATA.ROOT = "imagefolder", missing
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        build_dataset(cfg, "train")
    with pytest.raises(DatasetNotFoundError, match="DATA.ROOT"):
        ImageFolder(missing)


# --------------------------------------------------------------------------------------------- ImageFolder
def write_image_folder(root, sizes=((12, 10), (9, 14))):
    """``root/{cat,ant}/`` with PNGs and a JPEG; returns {path: array written} for the lossless PNGs."""
    written = {}
    for c, name in enumerate(["cat", "ant"]):
        folder = os.path.join(root, name)
        os.makedirs(os.path.join(folder, "nested"))
        for k, (h, w) in enumerate(sizes):
            array = random_image((h, w, 3), seed=10 * c + k)
            path = os.path.join(folder, f"img{k}.png")
            Image.fromarray(array).save(path)
            written[path] = array
        Image.fromarray(random_image((8, 8, 3), seed=99)).save(os.path.join(folder, "nested", "x.JPEG"), quality=90)
        Image.fromarray(random_image((8, 8), seed=98)).save(os.path.join(folder, "gray.png"))  # mode L file
        with open(os.path.join(folder, "notes.txt"), "w") as handle:
            handle.write("not an image")
    return written


def test_image_folder_reader(tmp_path):
    written = write_image_folder(str(tmp_path))
    ds = ImageFolder(str(tmp_path))
    assert ds.classes == ["ant", "cat"] and len(ds) == 8  # 2 PNG + gray PNG + nested JPEG per class
    for index, (path, label) in enumerate(ds.samples):
        image, got_label = ds[index]
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        class_name = os.path.relpath(path, str(tmp_path)).split(os.sep)[0]
        assert got_label == label == ds.classes.index(class_name)
        if path in written:
            np.testing.assert_array_equal(image, written[path])
    gray = ImageFolder(str(tmp_path), channels=1)
    path = next(p for p, _ in gray.samples if p in written)
    image = gray[[p for p, _ in gray.samples].index(path)][0]
    assert image.shape[2] == 1
    np.testing.assert_array_equal(image, rgb_to_gray(written[path]))


def test_image_folder_val_uses_train_classes(tmp_path):
    for split, classes in (("train", ["a", "b", "c"]), ("val", ["a", "c"])):
        for name in classes:
            os.makedirs(tmp_path / split / name)
            Image.fromarray(random_image((8, 8, 3))).save(tmp_path / split / name / "0.png")
    cfg = get_default_config()
    cfg.DATA.DATASET, cfg.DATA.ROOT = "imagefolder", str(tmp_path)
    val = build_dataset(cfg, "val")
    assert val.classes == ["a", "b", "c"] and [label for _, label in val.samples] == [0, 2]


@pytest.mark.parametrize("kind", ["truncated_jpeg", "garbage_png"])
def test_corrupt_image_error_names_file(tmp_path, kind):
    folder = tmp_path / "cls"
    folder.mkdir()
    buffer = io.BytesIO()
    Image.fromarray(random_image((64, 64, 3))).save(buffer, format="JPEG" if kind == "truncated_jpeg" else "PNG")
    data = buffer.getvalue()
    name = "bad.jpg" if kind == "truncated_jpeg" else "bad.png"
    if kind == "truncated_jpeg":
        data = data[: len(data) // 2]  # the header parses; only full decoding notices
    else:
        data = data[:40] + b"\x00garbage" * 20
    (folder / name).write_bytes(data)
    ds = ImageFolder(str(tmp_path))
    with pytest.raises(DataError, match=name):
        ds[0]


# ------------------------------------------------------------------------------------ built-in / synthetic
def test_builtin_digits_dataset():
    train = DigitsDataset(train=True, image_size=16, channels=3)
    val = DigitsDataset(train=False, image_size=16, channels=1)
    assert (len(train), len(val)) == (1438, 359)
    assert train.classes == [str(i) for i in range(10)] and val.num_classes == 10
    image, label = train[0]
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8 and 0 <= label < 10
    assert val[0][0].shape == (16, 16, 1)
    assert train.small_images.min() == 0 and train.small_images.max() == 255
    # stratified: every class in both splits, 20% of each class in val
    np.testing.assert_array_equal(np.bincount(val.labels), [36, 36, 35, 37, 36, 36, 36, 36, 35, 36])
    assert np.bincount(train.labels).min() >= 139
    # deterministic split, disjoint from train
    again = DigitsDataset(train=False, image_size=8, channels=1)
    np.testing.assert_array_equal(again.small_images, val.small_images)
    assert again[3][0].shape == (8, 8, 1)


def test_synthetic_dataset_is_seeded():
    a, b = SyntheticDataset(10, 8, 3, 5, seed=1), SyntheticDataset(10, 8, 3, 5, seed=1)
    np.testing.assert_array_equal(a[7][0], b[7][0])
    assert a[7][1] == b[7][1] and a[7][0].shape == (8, 8, 3)
    assert not np.array_equal(a[7][0], SyntheticDataset(10, 8, 3, 5, seed=2)[7][0])
    assert set(a.labels.tolist()) <= set(range(5))


# ---------------------------------------------------------------------------------------------- transforms
def test_flip_twice_is_identity():
    image = random_image()
    flip = T.HorizontalFlip(p=1.0)
    once = T.as_array(flip(image, rng()))
    np.testing.assert_array_equal(once, image[:, ::-1])
    np.testing.assert_array_equal(T.as_array(flip(once, rng())), image)
    np.testing.assert_array_equal(T.as_array(T.HorizontalFlip(p=0.0)(image, rng())), image)


def test_cutout_zeroes_a_clipped_square():
    cutout = T.Cutout(8)
    for seed in range(50):
        image = np.ones((3, 20, 24), np.float32)
        y0, y1, x0, x1 = T.cutout_box(20, 24, 8, rng(seed))
        out = cutout(image, rng(seed))
        zero = out[0] == 0
        assert zero.sum() == (y1 - y0) * (x1 - x0) <= 64
        assert (out == 0).sum() == 3 * zero.sum()  # every channel
        assert zero[y0:y1, x0:x1].all()
    # a centre away from the borders zeroes exactly L*L pixels
    full = [T.cutout_box(20, 24, 8, rng(s)) for s in range(200)]
    assert any((y1 - y0) * (x1 - x0) == 64 for y0, y1, x0, x1 in full)
    assert any((y1 - y0) * (x1 - x0) < 64 for y0, y1, x0, x1 in full)


def test_pad_random_crop():
    image = random_image((10, 10, 3))
    np.testing.assert_array_equal(T.as_array(T.PadRandomCrop(10, 0)(image, rng())), image)
    offsets = set()
    for seed in range(40):
        out = T.as_array(T.PadRandomCrop(10, 2)(image, rng(seed)))
        assert out.shape == image.shape
        # the crop is the image shifted by (dy, dx) in [-2, 2] with zeros where it left the image
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                padded = np.pad(image, ((2, 2), (2, 2), (0, 0)))
                if np.array_equal(out, padded[2 + dy:12 + dy, 2 + dx:12 + dx]):
                    offsets.add((dy, dx))
    assert len(offsets) > 10


def test_random_resized_crop_shape_and_fallback():
    image = random_image((40, 60, 3))
    for seed in range(20):
        for interpolation in ("bilinear", "bicubic", "random", "nearest"):
            out = T.RandomResizedCrop(24, interpolation=interpolation)(image, rng(seed))
            assert out.size == (24, 24)
        box = T.random_resized_crop_box(40, 60, (0.08, 1.0), (0.75, 4 / 3), rng(seed))
        top, left, h, w = box
        assert 0 <= top <= 40 - h and 0 <= left <= 60 - w
    # impossible area (scale > 1) -> centre crop of the image with the aspect clamped to ratio
    assert T.random_resized_crop_box(40, 60, (2.0, 3.0), (0.75, 4 / 3), rng()) == (0, 3, 40, 53)
    assert T.random_resized_crop_box(40, 30, (2.0, 3.0), (0.75, 4 / 3), rng()) == (0, 0, 40, 30)
    out = T.RandomResizedCrop((12, 20), scale=(2.0, 3.0))(image, rng())
    assert out.size == (20, 12)
    with pytest.raises(ValueError, match="interpolation"):
        T.RandomResizedCrop(8, interpolation="lanczos")


def test_random_interpolation_draws_both_filters():
    picks = {T.pick_resample("random", rng(seed)) for seed in range(30)}
    assert picks == {Image.Resampling.BILINEAR, Image.Resampling.BICUBIC}


def test_resize_center_crop():
    image = random_image((30, 50, 3))
    out = T.ResizeCenterCrop(16, crop_pct=0.875, interpolation="bicubic")(image)
    assert out.size == (16, 16)
    assert T.eval_resize_size(224, 0.875) == 256 and T.eval_resize_size(64, 0.875) == 73
    # crop_pct 1 on an image already at the size: untouched
    same = random_image((16, 16, 3))
    np.testing.assert_array_equal(T.as_array(T.ResizeCenterCrop(16, 1.0)(same)), same)
    # no resize needed when the short side already equals floor(size / crop_pct): a pure centre crop
    tall = random_image((20, 18, 3))
    np.testing.assert_array_equal(T.as_array(T.ResizeCenterCrop(16, 16 / 18)(tall)), tall[2:18, 1:17])


def test_color_jitter_deterministic_and_effective():
    image = random_image((16, 16, 3))
    jitter = T.ColorJitter(0.4, 0.4, 0.4)
    a = T.as_array(jitter(image, rng(3)))
    np.testing.assert_array_equal(a, T.as_array(jitter(image, rng(3))))
    assert not np.array_equal(a, image)
    assert T.as_array(jitter(random_image((16, 16, 1)), rng(3))).shape == (16, 16, 1)


def test_to_normalized_float():
    image = random_image((4, 5, 3))
    out = T.ToNormalizedFloat((0.5, 0.25, 0.0), (0.5, 0.5, 1.0))(image)
    assert out.dtype == np.float32 and out.shape == (3, 4, 5)
    mean = np.array([0.5, 0.25, 0.0], np.float32)[:, None, None]
    std = np.array([0.5, 0.5, 1.0], np.float32)[:, None, None]
    expected = (image.transpose(2, 0, 1).astype(np.float32) / 255 - mean) / std
    np.testing.assert_array_equal(out, expected)
    gray = T.ToNormalizedFloat((0.2, 0.4, 0.6), (1.0, 1.0, 1.0))(random_image((4, 5, 1)))
    assert gray.shape == (1, 4, 5)


def test_random_erasing():
    erase = T.RandomErasing(p=1.0)
    areas = []
    for seed in range(30):
        image = np.full((3, 32, 32), 7.0, np.float32)
        out = erase(image, rng(seed))
        changed = (out != 7.0).any(axis=0)
        areas.append(changed.sum() / changed.size)
        rows, cols = np.nonzero(changed)
        if len(rows):  # a rectangle
            assert changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
    assert 0.0 < np.mean(areas) < 1 / 3 and max(areas) <= 0.4
    image = np.full((3, 8, 8), 7.0, np.float32)
    assert (T.RandomErasing(p=0.0)(image, rng()) == 7.0).all()


def test_rand_augment_parse_and_errors():
    assert parse_rand_augment("rand-m9-mstd0.5") == {"magnitude": 9.0, "num_ops": 2, "magnitude_std": 0.5}
    assert parse_rand_augment("rand-n3-m5") == {"magnitude": 5.0, "num_ops": 3, "magnitude_std": 0.0}
    for bad in ("", "rnd-m9", "rand-mstd0.5", "rand-m11", "rand-m9-x3", "rand-m9-n0", "rand-m9-n1.5", "rand-m9-m8",
                "rand-mnine"):
        with pytest.raises(RandAugmentConfigError) as info:
            parse_rand_augment(bad)
        assert repr(bad) in str(info.value)


def test_rand_augment_deterministic_per_seed_and_changes_image():
    augment = RandAugment.from_string("rand-m9-mstd0.5")
    image = random_image((24, 24, 3), seed=5)
    outs = [T.as_array(augment(image, rng(seed))) for seed in range(12)]
    for seed in range(12):
        np.testing.assert_array_equal(outs[seed], T.as_array(augment(image, rng(seed))))
        assert outs[seed].shape == image.shape
    assert sum(not np.array_equal(o, image) for o in outs) >= 8
    assert len({o.tobytes() for o in outs}) >= 8
    gray = augment(random_image((24, 24, 1)), rng(1))
    assert gray.mode == "L"


def test_every_rand_augment_op_runs():
    from common.data.rand_augment import OP_NAMES, OPS

    assert len(OP_NAMES) == 15 and "Cutout" not in OP_NAMES
    image = T.as_pil(random_image((20, 20, 3)))
    for name in OP_NAMES:
        for fraction in (0.0, 0.9, 1.0):
            out = OPS[name](image, fraction, rng())
            assert out.size == image.size and out.mode == "RGB", name
    # geometric ops fill uncovered pixels with gray 128
    black = T.as_pil(np.zeros((20, 20, 3), np.uint8))
    shifted = T.as_array(OPS["TranslateXRel"](black, 1.0, rng()))
    assert (shifted == 128).any()


def test_tf_bilinear_eval_calls_tf_image_hook(monkeypatch):
    import common

    calls = []

    def inception_eval(image, image_size, crop_pct):
        calls.append((image.shape, image_size, crop_pct))
        return np.zeros((image_size, image_size, image.shape[2]), np.float32)

    fake = types.ModuleType("common.tf_image")
    fake.inception_eval = inception_eval
    monkeypatch.setitem(sys.modules, "common.tf_image", fake)
    monkeypatch.setattr(common, "tf_image", fake, raising=False)
    cfg = get_default_config()
    cfg.DATA.INTERPOLATION, cfg.DATA.IMAGE_SIZE, cfg.DATA.CROP_PCT = "tf_bilinear", 12, 0.875
    out = build_transform(cfg, "val")(random_image((20, 30, 3)), rng())
    assert out.shape == (3, 12, 12) and out.dtype == np.float32
    assert calls == [((20, 30, 3), 12, 0.875)]


def test_tf_bilinear_eval_end_to_end_with_tf_image(tmp_path):
    """ImageFolder val + 'tf_bilinear': TF-like decode, then common.tf_image's Inception eval, as CHW."""
    tf_image = importlib.import_module("common.tf_image")
    for split in ("train", "val"):
        os.makedirs(tmp_path / split / "k")
        Image.fromarray(random_image((30, 26, 3), seed=4)).save(tmp_path / split / "k" / "a.jpg", quality=85)
    cfg = get_default_config()
    cfg.DATA.DATASET, cfg.DATA.ROOT, cfg.DATA.INTERPOLATION, cfg.DATA.IMAGE_SIZE = "imagefolder", str(tmp_path), \
        "tf_bilinear", 16
    loader = build_loader(cfg, "val")
    images, _ = next(iter(loader))
    path = str(tmp_path / "val" / "k" / "a.jpg")
    expected = tf_image.inception_eval(tf_image.decode_image_file(path), 16, cfg.DATA.CROP_PCT).transpose(2, 0, 1)
    np.testing.assert_array_equal(images[0], expected)
    assert images.min() >= -1 and images.max() <= 1
    assert build_dataset(cfg, "train").decoder is None  # training decodes with PIL


# -------------------------------------------------------------------------------------------------- loader
def small_dataset(n=23, size=12):
    images = random_image((n, size, size, 3), seed=1)
    return ArrayDataset(images, [i % 4 for i in range(n)], ["a", "b", "c", "d"])


def random_pipeline(size=10):
    return T.Compose([
        T.RandomResizedCrop(size, interpolation="random"),
        T.HorizontalFlip(),
        RandAugment.from_string("rand-m9-mstd0.5"),
        T.ToNormalizedFloat((0.5,) * 3, (0.25,) * 3),
        T.RandomErasing(p=0.5),
        T.Cutout(4),
    ])


def collect(loader):
    return [(x.copy(), y.copy()) for x, y in loader]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_loader_batches_and_determinism():
    ds = small_dataset()

    def make(**overrides):
        settings = dict(shuffle=True, seed=7)
        settings.update(overrides)
        return Loader(ds, random_pipeline(), 5, **settings)

    first = collect(make())
    assert len(first) == len(make()) == 5 and first[-1][0].shape == (3, 3, 10, 10)
    assert first[0][0].dtype == np.float32 and first[0][1].dtype == np.int64
    assert_same_batches(first, collect(make()))
    assert len(collect(make(drop_last=True))) == len(make(drop_last=True)) == 4
    labels = np.concatenate([y for _, y in first])
    assert sorted(labels.tolist()) == sorted(ds.labels.tolist())
    other_epoch = make(epoch=1)
    assert not np.array_equal(other_epoch.indices(), make().indices())
    assert sorted(other_epoch.indices().tolist()) == list(range(len(ds)))
    assert not np.array_equal(collect(make(seed=8))[0][0], first[0][0])
    unshuffled = Loader(ds, random_pipeline(), 5, shuffle=False)
    np.testing.assert_array_equal(unshuffled.indices(), np.arange(len(ds)))


def test_loader_independent_of_batch_size():
    ds = small_dataset()
    by_5 = np.concatenate([x for x, _ in Loader(ds, random_pipeline(), 5, shuffle=True, seed=3)])
    by_2 = np.concatenate([x for x, _ in Loader(ds, random_pipeline(), 2, shuffle=True, seed=3)])
    np.testing.assert_array_equal(by_5, by_2)


def test_loader_workers_match_single_process():
    ds = small_dataset(n=30)
    single = collect(Loader(ds, random_pipeline(), 4, shuffle=True, seed=11, epoch=2))
    workers = collect(Loader(ds, random_pipeline(), 4, shuffle=True, seed=11, epoch=2, workers=2, prefetch=1))
    assert_same_batches(single, workers)


def _spill_dirs():
    from common.data.loader import _spill_parent

    parent = _spill_parent() or __import__("tempfile").gettempdir()
    return {d for d in os.listdir(parent) if d.startswith("twinnas-batches-")}


def test_worker_spill_folder_is_removed_after_an_early_stop():
    before = _spill_dirs()
    loader = Loader(small_dataset(n=40), random_pipeline(), 2, shuffle=True, workers=2)
    iterator = iter(loader)
    next(iterator)
    assert len(_spill_dirs() - before) == 1
    iterator.close()  # what a `break` out of the loop does once the generator is dropped
    assert _spill_dirs() == before


def test_worker_falls_back_to_the_pipe_when_the_spill_folder_fails(tmp_path):
    from common.data import loader as loader_module

    ds = small_dataset(n=3)
    loader_module._init_worker(ds, random_pipeline(), str(tmp_path / "missing"))
    try:
        images, labels = loader_module._worker_load_batch(1, 2, 0, np.array([0, 2]))
    finally:
        loader_module._init_worker(None, None, None)
    assert isinstance(images, np.ndarray)
    np.testing.assert_array_equal(images, loader_module.load_batch(ds, random_pipeline(), 1, 2, [0, 2])[0])


def test_loader_worker_error_reaches_caller(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "broken.png").write_bytes(b"not a png")
    loader = Loader(ImageFolder(str(tmp_path)), T.ToNormalizedFloat((0.5,), (0.5,)), 1, workers=2)
    with pytest.raises(DataError, match="broken.png"):
        collect(loader)


def test_rank_split_covers_dataset_once_plus_padding():
    ds = small_dataset(n=10)
    world = 3
    shards = [Loader(ds, None, 2, shuffle=True, seed=5, rank=r, world_size=world).indices() for r in range(world)]
    assert [len(s) for s in shards] == [4, 4, 4]
    merged = np.concatenate(shards)
    counts = np.bincount(merged, minlength=10)
    assert (counts >= 1).all() and counts.sum() == 12 and (counts > 1).sum() == 2
    order = Loader(ds, None, 2, shuffle=True, seed=5).indices()
    padded = np.concatenate([order, order[:2]])
    for rank in range(world):
        np.testing.assert_array_equal(shards[rank], padded[rank::world])
    with pytest.raises(ValueError, match="rank"):
        Loader(ds, None, 2, rank=3, world_size=3)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_with_the_same_next_batch(workers):
    ds = small_dataset(n=21)
    reference = collect(Loader(ds, random_pipeline(), 4, shuffle=True, seed=9, epoch=3))
    first = Loader(ds, random_pipeline(), 4, shuffle=True, seed=9, workers=workers)
    first.set_epoch(3)
    iterator = iter(first)
    next(iterator), next(iterator)
    state = first.state_dict()
    del iterator
    assert state["position"] == 2 and state["epoch"] == 3
    resumed = Loader(ds, random_pipeline(), 4, shuffle=True, seed=0, workers=workers)
    resumed.load_state_dict(dict(state))
    resumed.set_epoch(3)  # the training loop's usual call keeps the resume position for the same epoch
    assert_same_batches(collect(resumed), reference[2:])
    assert len(collect(resumed)) == len(reference)  # the next pass starts at the beginning again
    resumed.set_epoch(4)
    assert resumed.state_dict()["position"] == 0
    with pytest.raises(ValueError, match="batch_size"):
        Loader(ds, None, 5, shuffle=True).load_state_dict(state)


def test_loader_rejects_non_float_output():
    with pytest.raises(TypeError, match="ToNormalizedFloat"):
        collect(Loader(small_dataset(n=2), None, 2))


def test_sample_rng_depends_on_all_three_parts():
    draws = {sample_rng(*key).integers(1 << 62) for key in [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]}
    assert len(draws) == 4


# ------------------------------------------------------------------------------------------------ builders
def test_build_train_and_val_pipelines():
    cfg = get_default_config()
    cfg.DATA.DATASET, cfg.DATA.IMAGE_SIZE, cfg.DATA.BATCH_SIZE, cfg.DATA.EVAL_BATCH_SIZE = "builtin_digits", 20, 8, 16
    cfg.DATA.NUM_TRAIN, cfg.DATA.NUM_VAL = 40, 20
    cfg.AUG.RANDOM_RESIZED_CROP, cfg.AUG.RAND_AUGMENT, cfg.AUG.RANDOM_ERASE = True, "rand-m9-mstd0.5", 0.2
    cfg.AUG.COLOR_JITTER = 0.4
    steps = [type(s).__name__ for s in build_transform(cfg, "train").steps]
    assert steps == ["RandomResizedCrop", "HorizontalFlip", "RandAugment", "ToNormalizedFloat", "RandomErasing"]
    train = build_loader(cfg, "train")
    assert len(train.dataset) == 40 and len(train) == 5
    x, y = next(iter(train))
    assert x.shape == (8, 3, 20, 20) and x.dtype == np.float32 and y.dtype == np.int64
    val = build_loader(cfg, "val")
    assert len(val.dataset) == 20 and len(val) == 2 and not val.shuffle
    xv, _ = next(iter(val))
    assert xv.shape == (16, 3, 20, 20)
    assert [type(s).__name__ for s in build_transform(cfg, "val").steps] == ["ResizeCenterCrop", "ToNormalizedFloat"]
    cfg.AUG.RAND_AUGMENT = ""
    assert "ColorJitter" in [type(s).__name__ for s in build_transform(cfg, "train").steps]
    np.testing.assert_array_equal(build_dataset(cfg, "train").indices, build_dataset(cfg, "train").indices)
    cfg.DATA.NUM_TRAIN = 5000
    with pytest.raises(ValueError, match="DATA.NUM_TRAIN"):
        build_dataset(cfg, "train")
    with pytest.raises(ValueError, match="split"):
        build_dataset(cfg, "test")


def test_build_cifar_pipeline(tmp_path):
    write_cifar10(str(tmp_path))
    cfg = get_default_config()
    cfg.DATA.DATASET, cfg.DATA.ROOT, cfg.DATA.IMAGE_SIZE, cfg.DATA.CHANNELS = "cifar10", str(tmp_path), 32, 1
    cfg.DATA.CROP_PCT, cfg.DATA.BATCH_SIZE, cfg.DATA.DROP_LAST = 1.0, 8, True
    cfg.AUG.PAD_CROP, cfg.AUG.CUTOUT = 4, 16
    steps = [type(s).__name__ for s in build_transform(cfg, "train").steps]
    assert steps == ["Resize", "PadRandomCrop", "HorizontalFlip", "ToNormalizedFloat", "Cutout"]
    train = build_loader(cfg, "train", rank=1, world_size=2)
    assert len(train) == 1  # 20 samples / 2 ranks = 10 -> one full batch of 8
    x, y = next(iter(train))
    assert x.shape == (8, 1, 32, 32)
    # eval with crop_pct 1 and no resize is exactly ToTensor + Normalize of the stored image
    val = build_loader(cfg, "val")
    xv, yv = next(iter(val))
    image, label = val.dataset[0]
    np.testing.assert_array_equal(xv[0], T.ToNormalizedFloat(cfg.DATA.MEAN, cfg.DATA.STD)(image))
    assert yv[0] == label


def test_build_synthetic():
    cfg = get_default_config()
    cfg.DATA.DATASET, cfg.DATA.IMAGE_SIZE, cfg.DATA.SYNTHETIC_SAMPLES, cfg.MODEL.NUM_CLASSES = "synthetic", 8, 12, 3
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert len(train) == len(val) == 12 and train.num_classes == 3
    assert not np.array_equal(train[0][0], val[0][0])


def test_common_data_imports_no_framework():
    code = ("import sys, common.data, common.data.build; "
            "bad = [m for m in ('torch', 'paddle', 'tensorflow') if m in sys.modules]; "
            "assert not bad, bad")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


# ------------------------------------------------------------------------------ bad data stops before any work
def _png(path, size=(10, 10), seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(random_image((*size, 3), seed)).save(path)


def test_empty_class_folder_is_an_error_when_folders_define_the_classes(tmp_path):
    _png(str(tmp_path / "a" / "0.png"))
    (tmp_path / "b").mkdir()  # would take index 1 (or shift 'c' to 1): class indices would not mean what they say
    (tmp_path / "b" / "readme.txt").write_text("no images here")
    _png(str(tmp_path / "c" / "0.png"))
    with pytest.raises(DataError, match="empty class folder") as info:
        ImageFolder(str(tmp_path))
    assert str(tmp_path / "b") in str(info.value) and "\n" not in str(info.value)
    # given the class list (a val split indexed like train) an empty folder shifts nothing: a warning, not an error
    with pytest.warns(UserWarning, match=str(tmp_path / "b")):
        val = ImageFolder(str(tmp_path), classes=["a", "b", "c"])
    assert [label for _, label in val.samples] == [0, 2]


def test_image_folder_without_class_folders_is_named(tmp_path):
    with pytest.raises(DataError, match="no class folders"):
        ImageFolder(str(tmp_path))


def test_verify_image_files_accepts_readable_files_and_names_bad_ones(tmp_path):
    from common.data import verify_image_files

    good = []
    for k, fmt in enumerate(["PNG", "JPEG", "BMP", "WEBP", "TIFF"]):
        path = tmp_path / f"good{k}.{fmt.lower()}"
        Image.fromarray(random_image((16, 16, 3), k)).save(path, format=fmt)
        good.append(str(path))
    buffer = io.BytesIO()
    Image.fromarray(random_image((16, 16, 3), 7)).save(buffer, format="JPEG")
    jpeg = buffer.getvalue()
    (tmp_path / "trailing.jpg").write_bytes(jpeg + b"\x00" * 5000)  # bytes after EOI: PIL reads it, so must we
    (tmp_path / "png_named.JPEG").write_bytes((tmp_path / "good0.png").read_bytes())  # ImageNet has one of these
    good += [str(tmp_path / "trailing.jpg"), str(tmp_path / "png_named.JPEG")]
    verify_image_files(good)

    bad = {"cut.jpg": jpeg[: len(jpeg) // 2], "text.jpg": b"just text\n", "empty.png": b"",
           "cut.png": (tmp_path / "good0.png").read_bytes()[:60]}
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(DataError) as info:
        verify_image_files(good + [str(tmp_path / name) for name in bad])
    message = str(info.value)
    assert message.startswith("4 unreadable image file(s): ") and "\n" not in message
    assert all(str(tmp_path / name) in message for name in list(bad)[:3]) and "and 1 more" in message


def test_build_dataset_checks_image_files_before_any_work(tmp_path):
    for split in ("train", "val"):
        _png(str(tmp_path / split / "a" / "0.png"))
    (tmp_path / "train" / "a" / "1.jpg").write_bytes(b"<html>404</html>")
    cfg = get_default_config()
    cfg.DATA.DATASET, cfg.DATA.ROOT = "imagefolder", str(tmp_path)
    with pytest.raises(DataError, match="1.jpg"):
        build_dataset(cfg, "train")
    assert len(build_dataset(cfg, "train", verify=False)) == 2  # the check can be skipped (class names only)
    cfg.DATA.NUM_TRAIN = 1  # only the files a split uses are checked
    picked = build_dataset(cfg, "train", verify=False)
    ok = picked.dataset.samples[int(picked.indices[0])][0].endswith("0.png")
    if ok:
        build_dataset(cfg, "train")
    else:
        with pytest.raises(DataError, match="1.jpg"):
            build_dataset(cfg, "train")


def test_image_damaged_in_the_middle_fails_in_a_worker_with_one_named_line(tmp_path):
    """Head and tail look fine, so only decoding finds it: inside a worker process, mid-epoch."""
    _png(str(tmp_path / "c" / "0.png"), size=(40, 40))
    data = (tmp_path / "c" / "0.png").read_bytes()
    middle = len(data) // 2
    (tmp_path / "c" / "1.png").write_bytes(data[:middle] + bytes(200) + data[middle + 200:])
    ds = ImageFolder(str(tmp_path))
    ds.verify()  # passes: the cheap check only reads the first and last bytes
    loader = Loader(ds, T.ToNormalizedFloat((0.5,), (0.5,)), 1, workers=2)
    with pytest.raises(DataError) as info:
        collect(loader)
    assert str(tmp_path / "c" / "1.png") in str(info.value) and "\n" not in str(info.value)


def test_unreadable_cifar_batches_are_value_errors_naming_the_file(tmp_path):
    from common.data import PickleReadError

    folder, _, _ = write_cifar10(str(tmp_path))
    path = os.path.join(folder, "data_batch_1")
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[:100])
    with pytest.raises(ValueError, match="data_batch_1") as info:
        load_cifar(str(tmp_path), "cifar10", train=True)
    assert isinstance(info.value, PickleReadError) and isinstance(info.value, pickle.UnpicklingError)
    with open(path, "wb") as handle:
        handle.write(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": ["cat"]}, protocol=2))
    with pytest.raises(DataError, match="data_batch_1.*not a list of integers"):
        load_cifar(str(tmp_path), "cifar10", train=True)


def test_more_samples_asked_than_the_split_has_is_a_data_error():
    cfg = get_default_config()
    cfg.DATA.DATASET, cfg.DATA.SYNTHETIC_SAMPLES, cfg.DATA.NUM_VAL = "synthetic", 4, 5
    with pytest.raises(DataError, match="DATA.NUM_VAL = 5"):
        build_dataset(cfg, "val")


class _CrashOn:
    """A transform whose worker dies by SIGSEGV on one sample (as a worker with a corrupted heap would)."""

    def __init__(self, index_value: float):
        self.index_value = index_value

    def __call__(self, image, rng):
        import signal

        if float(np.asarray(image).reshape(-1)[0]) == self.index_value:
            os.kill(os.getpid(), signal.SIGSEGV)
        return T.ToNormalizedFloat((0.5,), (0.5,))(image, rng)


def test_a_worker_that_dies_is_an_error_not_a_hang():
    """A worker killed by a signal (here SIGSEGV, whose default action the worker restores) ends the pass with one
    DataError within about a second; the pool's replacement worker would otherwise leave the batch pending forever."""
    import time

    images = np.zeros((6, 4, 4, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(6) * 10
    ds = ArrayDataset(images, list(range(6)), [str(i) for i in range(6)])
    started = time.perf_counter()
    with pytest.raises(DataError, match="worker process died"):
        collect(Loader(ds, _CrashOn(30.0), 1, workers=2))
    assert time.perf_counter() - started < 30
