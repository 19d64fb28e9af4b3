"""NAS-Bench-MR networks with the segmentation head, trained through the real commands on a tiny Cityscapes-layout
folder made here (three classes as coloured regions, some ignored pixels): the paired transforms, the per-pixel loss
with the ignore label, mIoU / mAcc / aAcc from a confusion matrix, `test`, both backends; and the metric formulas."""
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from common.data import segmentation as S
from tools.main import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "mrnet_cityscapes.yaml")
COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]], dtype=np.uint8)


def make_cityscapes(root, counts=(("train", 12), ("val", 4)), size=(48, 96), seed=0):
    """``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` + ``gtFine/.../*_gtFine_labelTrainIds.png``: each image is
    three vertical bands at random boundaries in the classes' colours (with noise); a few label pixels are 255."""
    rng = np.random.default_rng(seed)
    h, w = size
    for split, n in counts:
        for k in range(n):
            city = "aachen" if k % 2 else "bremen"
            a, b = sorted(rng.integers(10, w - 10, size=2))
            label = np.zeros((h, w), np.uint8)
            label[:, a:] = 1
            label[:, b:] = 2
            image = COLOURS[label].astype(np.int16) + rng.integers(-30, 30, size=(h, w, 3))
            label[rng.random((h, w)) < 0.02] = 255
            for tree, suffix, array in ((S.IMAGE_DIR, S.IMAGE_SUFFIX, np.clip(image, 0, 255).astype(np.uint8)),
                                        (S.LABEL_DIR, S.LABEL_SUFFIX, label)):
                folder = os.path.join(root, tree, split, city)
                os.makedirs(folder, exist_ok=True)
                Image.fromarray(array).save(os.path.join(folder, f"{city}_{k:06d}_000019{suffix}"))
    return str(root)


TINY = ["NASBENCH_MR.CODE", "8_16-1_1_1_16-1_2_1_1_16_32-1_3_1_1_1_16_32_32-1_4_1_1_1_1_16_32_32_32-32",
        "MODEL.NUM_CLASSES", "3", "SEG.CROP", "[32, 64]", "SEG.BASE_SIZE", "96", "SEG.SCALE", "[0.75, 1.25]",
        "DATA.BATCH_SIZE", "4", "DATA.EVAL_BATCH_SIZE", "4", "DATA.WORKERS", "0", "OPTIM.LR", "0.1",
        "TRAIN.EPOCHS", "15", "TRAIN.EVAL_EVERY", "1", "THREADS", "1", "DATA.IMAGE_SIZE", "64"]


def test_metrics_from_a_confusion_matrix():
    label = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 1]])
    conf = S.confusion(pred, label, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 3, 0], [1, 0, 1]]
    miou, macc, aacc = S.seg_metrics(conf)
    assert aacc == pytest.approx(100 * 5 / 7)
    assert macc == pytest.approx(100 * (1 / 2 + 1 + 1 / 2) / 3)
    assert miou == pytest.approx(100 * (1 / 3 + 3 / 4 + 1 / 2) / 3)


def test_paired_transform_moves_the_label_with_the_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(40, 80, 3), dtype=np.uint8)
    label = (np.arange(80)[None, :].repeat(40, 0) // 20).astype(np.uint8)
    t = S.SegTransform(True, (32, 48), (1.0, 1.0), 80, 1.0, (0, 0), (0.5,) * 3, (0.5,) * 3)
    x, y = t(image, label, np.random.default_rng(3))
    assert x.shape == (3, 32, 48) and x.dtype == np.float32 and y.shape == (32, 48) and y.dtype == np.int64
    assert (np.diff(y, axis=1) <= 0).all()  # flipped: the band order runs right to left
    big = S.SegTransform(True, (64, 128), (1.0, 1.0), 80, 0.0, (0, 0), (0.5,) * 3, (0.5,) * 3)
    _, y = big(image, label, np.random.default_rng(1))
    assert (y == 255).any() and set(np.unique(y)) <= {0, 1, 2, 3, 255}  # padding is ignored


def test_a_bad_label_value_is_named(tmp_path):
    root = make_cityscapes(tmp_path / "cs", counts=(("train", 1),))
    folder = S.CityscapesFolder(root, "train", num_classes=2)
    with pytest.raises(S.DataError, match=r"gtFine_labelTrainIds.png: label value 2 is neither a class"):
        folder[0]


@pytest.mark.parametrize("backend", ["torch", "paddle"])
def test_segmentation_trains_and_tests(backend, tmp_path):
    root = make_cityscapes(tmp_path / "cs")
    run_dir = str(tmp_path / "run")
    assert main(["train", CONFIG, "--backend", backend, "DATA.ROOT", root, *TINY, "--output", run_dir]) == 0
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    first, last = float(rows[0]["val_mIoU"]), max(float(r["val_mIoU"]) for r in rows)
    assert last > 50.0 and last > first, (first, last)
    out = str(tmp_path / "test")
    assert main(["test", CONFIG, "--backend", backend, "DATA.ROOT", root, *TINY, "MODEL.WEIGHTS",
                 os.path.join(run_dir, "best.safetensors"), "--output", out]) == 0
    result = json.load(open(os.path.join(out, "test_results.json")))
    assert result["mIoU"] == pytest.approx(last, abs=1e-3)  # metrics.csv keeps 6 significant digits
    assert 0 <= result["mAcc"] <= 100 and result["aAcc"] >= result["mIoU"] - 1e-9
    print(f"\n{backend}: val mIoU {first:.1f} -> {last:.1f} in {len(rows)} epochs on the tiny set")


def test_infer_is_refused_for_segmentation(tmp_path, capsys):
    assert main(["infer", CONFIG, "--backend", "torch", "--inputs", "x.npy"]) == 2
    assert "is for train / test, not infer" in capsys.readouterr().err


def test_images_of_several_sizes_in_one_batch_are_one_clear_error(tmp_path):
    from common.data.datasets import DataError
    from common.data.loader import Loader

    root = make_cityscapes(tmp_path / "a", counts=(("val", 2),), size=(48, 96))
    make_cityscapes(tmp_path / "a", counts=(("val", 1),), size=(32, 64), seed=1)  # the first pair, smaller
    folder = S.CityscapesFolder(root, "val", num_classes=3)
    t = S.SegTransform(False, (32, 64), (1, 1), 96, 0.0, (0, 0), (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(DataError, match=r"different shapes .*SEG.EVAL_SIZE"):
        list(Loader(folder, t, 2))
    assert len(list(Loader(folder, t, 1))) == len(folder)  # a batch of 1 evaluates whole images of any size
