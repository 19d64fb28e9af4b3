"""The bad-input table: every mistake a user can make is one clear line, exit code 2, and nothing written.

Each row runs the real entry point in this process (``tools.main.main(argv)``) and checks, for the error the row
provokes:

- exit code 2;
- stderr is exactly one line, ``error: ...``, holding the row's fragment(s) (which name the file, key or value);
- no traceback anywhere in the output;
- nothing new under the test's folder (no run/output folder, no ``*.tmp``): every check runs before any work.

The rows use a tiny config (``configs/cream14_digits.yaml`` + ``TINY``: synthetic 32 px data, one step), so a row
whose check is missing starts a short run and fails on the "nothing written" check instead of hanging.

To add a row: append a ``Case`` to ``CASES`` (or to the section your area owns).  ``argv(t)`` builds the command
line from the test's folder ``t`` (a ``pathlib.Path``); ``setup(t, monkeypatch)`` writes input files before the
snapshot is taken; fragments may use ``{t}`` for that folder.
"""
from __future__ import annotations

import io
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import pytest
from PIL import Image

from tools import commands
from tools.main import main

ROOT = Path(__file__).resolve().parents[1]
CFG = str(ROOT / "configs" / "cream14_digits.yaml")
SEARCH_CFG = str(ROOT / "configs" / "pcdarts_search_digits.yaml")
CREAM_SEARCH_CFG = str(ROOT / "configs" / "cream_search_digits.yaml")
MR_CFG = str(ROOT / "configs" / "mrnet_digits.yaml")
NCP_CFG = str(ROOT / "configs" / "ncp_predictor_seg.yaml")
SEG_CFG = str(ROOT / "configs" / "mrnet_cityscapes.yaml")
TINY = ["DATA.DATASET", "synthetic", "DATA.IMAGE_SIZE", "32", "DATA.SYNTHETIC_SAMPLES", "8", "DATA.BATCH_SIZE", "4",
        "DATA.EVAL_BATCH_SIZE", "4", "TRAIN.EPOCHS", "1", "TRAIN.MAX_STEPS_PER_EPOCH", "1"]


@dataclass(frozen=True)
class Case:
    name: str
    argv: Callable[[Path], List[str]]
    fragments: Sequence[str]                      # all must appear in the error line ({t} = the test folder)
    setup: Optional[Callable[[Path, pytest.MonkeyPatch], None]] = None

    def __str__(self) -> str:
        return self.name


# --------------------------------------------------------------------------------------------- argv builders
def out(t: Path) -> str:
    return str(t / "out")


def train(*overrides: str, config: str = CFG, backend: str = "torch") -> Callable[[Path], List[str]]:
    """``train <config> <TINY> <overrides>``; ``{t}`` in an override is the test folder."""
    return lambda t: ["train", config.format(t=t), "--backend", backend, "--output", out(t), *TINY,
                      *[o.format(t=t) for o in overrides]]


def search(*overrides: str, backend: str = "torch") -> Callable[[Path], List[str]]:
    """``search`` of the digits PC-DARTS search config, tiny, with ``overrides``."""
    return lambda t: ["search", SEARCH_CFG, "--backend", backend, "--output", out(t), "TRAIN.EPOCHS", "1",
                      "TRAIN.MAX_STEPS_PER_EPOCH", "1", *[o.format(t=t) for o in overrides]]


def cream_search(*overrides: str, command: str = "search") -> Callable[[Path], List[str]]:
    """``search`` of the digits Cream supernet config, tiny, with ``overrides``."""
    return lambda t: [command, CREAM_SEARCH_CFG, "--backend", "torch", "--output", out(t), "TRAIN.EPOCHS", "1",
                      "TRAIN.MAX_STEPS_PER_EPOCH", "1", "CREAM.STA_NUM", "[1, 1, 1, 1, 1]",
                      *[o.format(t=t) for o in overrides]]


def evaluate_cmd(*overrides: str) -> Callable[[Path], List[str]]:
    return lambda t: ["test", CFG, "--backend", "torch", "--output", out(t), *TINY, *[o.format(t=t) for o in overrides]]


def infer(*inputs: str, extra: Sequence[str] = ()) -> Callable[[Path], List[str]]:
    # the overrides come before --inputs, which takes every following word
    return lambda t: ["infer", CFG, *TINY, *extra, "--backend", "torch", "--output", out(t),
                      "--inputs", *[i.format(t=t) for i in inputs]]


def imagefolder(split_root: str = "{t}/data") -> List[str]:
    return ["DATA.DATASET", "imagefolder", "DATA.ROOT", split_root]


# ------------------------------------------------------------------------------------------------ file makers
def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def png_bytes(size=(12, 12), seed=0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_bytes(size=(64, 64), seed=0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def folder_tree(classes_per_split=None, bad=None):
    """setup: ``{t}/data/<split>/<class>/0.png`` (two classes per split unless given); ``bad``: {relpath: bytes}."""
    classes_per_split = classes_per_split or {"train": ["a", "b"], "val": ["a", "b"]}

    def setup(t: Path, _mp) -> None:
        for split, classes in classes_per_split.items():
            (t / "data" / split).mkdir(parents=True, exist_ok=True)
            for name in classes:
                write(t / "data" / split / name / "0.png", png_bytes())
        for rel, data in (bad or {}).items():
            path = t / "data" / rel
            if data is None:
                path.mkdir(parents=True, exist_ok=True)
            else:
                write(path, data)
    return setup


def cifar_tree(damage: Optional[Callable[[Path], None]] = None):
    """setup: a valid ``{t}/data/cifar-10-batches-py`` (4 images per batch), then ``damage(folder)``."""
    def setup(t: Path, _mp) -> None:
        folder = t / "data" / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
            (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        if damage is not None:
            damage(folder)
    return setup


def truncate(name: str):
    def damage(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
    return damage


class _RunsShell:
    def __reduce__(self):
        return os.system, ("echo pwned",)


def npy(name: str, array_fn: Callable[[], np.ndarray], allow_pickle: bool = False):
    def setup(t: Path, _mp) -> None:
        np.save(t / name, array_fn(), allow_pickle=allow_pickle)
    return setup


def raw(name: str, data: bytes):
    def setup(t: Path, _mp) -> None:
        write(t / name, data)
    return setup


def nan_batch():
    batch = np.zeros((2, 3, 32, 32), np.float32)
    batch[1, 0, :3, 0] = np.nan
    return batch


def inf_batch():
    batch = np.zeros((1, 3, 32, 32), np.float32)
    batch[0, 2, 5, 5] = -np.inf
    return batch


def no_cuda_torch(_t, mp) -> None:
    import torch

    mp.setattr(torch.cuda, "is_available", lambda: False)


def no_cuda_paddle(_t, mp) -> None:
    import paddle

    mp.setattr(paddle.device, "is_compiled_with_cuda", lambda: False)


def missing_module(name: str):
    def setup(_t, mp) -> None:
        mp.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    return setup


class _NaNBackend:
    def eval_logits(self, model, batch):
        logits = np.zeros((len(batch), 10), np.float32)
        logits[0, 3] = np.nan
        return logits


def nan_logits(t: Path, mp) -> None:
    """A model whose logits hold a NaN (e.g. corrupt weights): nothing may be written."""
    np.save(t / "ok.npy", np.zeros((2, 3, 32, 32), np.float32))
    mp.setattr(commands, "load_backend", lambda *a, **k: _NaNBackend())
    mp.setattr(commands, "build_with_weights", lambda *a, **k: None)


def both(*setups):
    def setup(t, mp):
        for s in setups:
            s(t, mp)
    return setup


# ------------------------------------------------------------------------------- checkpoints, pickles, run folders
def neutral_ckpt(name: str, net: str = "cream14", family: str = "cream", **meta):
    """setup: ``{t}/<name>``, a neutral checkpoint of ``family/net`` (Cream-14 digits weights) with ``meta``."""
    def setup(t: Path, _mp) -> None:
        from common.checkpoint import Checkpoint, save_checkpoint
        from common.config import load_config
        from common.specs import cream

        cfg = load_config(CFG, TINY + ["MODEL.NAME", net if family == "cream" else "cream14"])
        state = cream.init_state(cream.spec_from_config(cfg), np.random.default_rng(0))
        save_checkpoint(str(t / name), Checkpoint(model=state, meta={"family": family, "name": net, **meta}))
    return setup


class _Payload:
    """A pickle whose loading would create ``{t}/pwned`` if anything ever executed it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious(name: str):
    def setup(t: Path, _mp) -> None:
        write(t / name, pickle.dumps({"conv_stem.weight": _Payload(t / "pwned")}, protocol=2))
    return setup


def read_only(name: str):
    """setup: an empty ``{t}/<name>`` folder that this (root) process is told it may not write (os.access)."""
    def setup(t: Path, mp) -> None:
        folder = t / name
        folder.mkdir()
        real = os.access
        mp.setattr(os, "access", lambda path, mode, *a, **k:
                   False if Path(path).resolve() == folder.resolve() else real(path, mode, *a, **k))
    return setup


def folder(name: str):
    def setup(t: Path, _mp) -> None:
        (t / name).mkdir()
    return setup


def convert(src: str, to: str, dst: str) -> Callable[[Path], List[str]]:
    return lambda t: ["convert", "--from", "neutral", src.format(t=t), "--to", to, dst.format(t=t)]


def run_folder(*names: str):
    """setup: ``{t}/out`` already holds a run (these files)."""
    def setup(t: Path, _mp) -> None:
        for name in names:
            write(t / "out" / name, b"epoch,lr\n1,0.1\n")
    return setup


# ------------------------------------------------------------------------------------------------------ table
CASES: List[Case] = [
    # ---- config files
    Case("config-missing", lambda t: ["train", str(t / "nope.yaml"), "--output", out(t)],
         ["config file not found", "nope.yaml"]),
    Case("config-bad-yaml", train(config="{t}/bad.yaml"), ["not valid YAML", "bad.yaml"],
         raw("bad.yaml", b"MODEL:\n  NAME: [cream14\n")),
    Case("config-not-a-mapping", train(config="{t}/list.yaml"), ["top level must be a mapping", "list.yaml"],
         raw("list.yaml", b"- 1\n- 2\n")),
    Case("config-unknown-key-in-file", train(config="{t}/k.yaml"), ["unknown key DATA.BATCH_SZE", "k.yaml"],
         raw("k.yaml", f"_BASE_: {CFG}\nDATA:\n  BATCH_SZE: 4\n".encode())),
    Case("config-wrong-type-in-file", train(config="{t}/w.yaml"), ["TRAIN.EPOCHS", "'three'", "w.yaml"],
         raw("w.yaml", f"_BASE_: {CFG}\nTRAIN:\n  EPOCHS: three\n".encode())),
    Case("config-base-cycle", train(config="{t}/a.yaml"), ["_BASE_ cycle", "a.yaml", "b.yaml"],
         both(raw("a.yaml", b"_BASE_: b.yaml\n"), raw("b.yaml", b"_BASE_: a.yaml\n"))),
    Case("config-base-missing", train(config="{t}/c.yaml"), ["config file not found", "gone.yaml", "c.yaml"],
         raw("c.yaml", b"_BASE_: gone.yaml\n")),
    Case("override-unknown-key", train("TRAIN.EPOCH", "3"), ["unknown key TRAIN.EPOCH", "did you mean EPOCHS"]),
    Case("override-wrong-type", train("DATA.BATCH_SIZE", "abc"), ["DATA.BATCH_SIZE", "'abc'", "expected int"]),
    Case("override-section", train("DATA", "3"), ["DATA is a section"]),
    Case("override-no-value", train("TRAIN.EPOCHS"), ["KEY VALUE pairs", "TRAIN.EPOCHS"]),
    Case("enum-device", train("DEVICE", "tpu"), ["DEVICE = 'tpu'", "is not one of"]),
    Case("enum-dataset", train("DATA.DATASET", "mnist"), ["DATA.DATASET = 'mnist'"]),
    # ---- config values (common/config.py validate())
    Case("eval-every-0", train("TRAIN.EVAL_EVERY", "0"), ["TRAIN.EVAL_EVERY = 0", ">= 1"]),
    Case("eval-every-negative", train("TRAIN.EVAL_EVERY", "-2"), ["TRAIN.EVAL_EVERY = -2"]),
    Case("log-interval-negative", train("TRAIN.LOG_INTERVAL", "-5"), ["TRAIN.LOG_INTERVAL = -5", ">= 0"]),
    Case("max-steps-negative", train("TRAIN.MAX_STEPS_PER_EPOCH", "-1"), ["TRAIN.MAX_STEPS_PER_EPOCH = -1"]),
    Case("epochs-negative", train("TRAIN.EPOCHS", "-1"), ["TRAIN.EPOCHS = -1"]),
    Case("num-train-negative", train("DATA.NUM_TRAIN", "-1"), ["DATA.NUM_TRAIN = -1", ">= 0"]),
    Case("num-val-negative", train("DATA.NUM_VAL", "-3"), ["DATA.NUM_VAL = -3"]),
    Case("synthetic-samples-negative", train("DATA.SYNTHETIC_SAMPLES", "-4"), ["DATA.SYNTHETIC_SAMPLES = -4"]),
    Case("synthetic-samples-zero", train("DATA.SYNTHETIC_SAMPLES", "0"), ["DATA.SYNTHETIC_SAMPLES = 0", ">= 1"]),
    Case("eval-batch-negative", train("DATA.EVAL_BATCH_SIZE", "-1"), ["DATA.EVAL_BATCH_SIZE = -1"]),
    Case("batch-zero", train("DATA.BATCH_SIZE", "0"), ["DATA.BATCH_SIZE = 0"]),
    Case("num-train-too-many", train("DATA.NUM_TRAIN", "9"), ["DATA.NUM_TRAIN = 9", "only 8 samples"]),
    Case("image-size-zero", train("DATA.IMAGE_SIZE", "0"), ["DATA.IMAGE_SIZE = 0"]),
    Case("channels-2", train("DATA.CHANNELS", "2"), ["DATA.CHANNELS = 2", "1 or 3"]),
    Case("workers-negative", train("DATA.WORKERS", "-1"), ["DATA.WORKERS = -1"]),
    Case("seed-negative", train("SEED", "-1"), ["SEED = -1"]),
    Case("lr-negative", train("OPTIM.LR", "-0.1"), ["OPTIM.LR = -0.1"]),
    Case("lr-nan", train("OPTIM.LR", "nan"), ["OPTIM.LR = nan", "finite"]),
    Case("lr-inf", train("OPTIM.LR", "inf"), ["OPTIM.LR = inf", "finite"]),
    Case("arch-optim-lr-negative", train("ARCH_OPTIM.LR", "-1"), ["ARCH_OPTIM.LR = -1.0"]),
    Case("momentum-above-1", train("OPTIM.MOMENTUM", "1.5"), ["OPTIM.MOMENTUM = 1.5", "[0, 1)"]),
    Case("weight-decay-negative", train("OPTIM.WEIGHT_DECAY", "-1e-4"), ["OPTIM.WEIGHT_DECAY = -0.0001"]),
    Case("eps-zero", train("OPTIM.EPS", "0"), ["OPTIM.EPS = 0.0", "> 0"]),
    Case("alpha-1", train("OPTIM.ALPHA", "1.0"), ["OPTIM.ALPHA = 1.0"]),
    Case("betas-1", train("OPTIM.BETAS", "[0.9, 1.0]"), ["OPTIM.BETAS = (0.9, 1.0)"]),
    Case("betas-3-values", train("OPTIM.BETAS", "[0.9, 0.99, 0.999]"), ["OPTIM.BETAS", "two values"]),
    Case("grad-clip-negative", train("OPTIM.GRAD_CLIP", "-1"), ["OPTIM.GRAD_CLIP = -1.0"]),
    Case("label-smoothing-1", train("TRAIN.LABEL_SMOOTHING", "1.0"), ["TRAIN.LABEL_SMOOTHING = 1.0", "[0, 1)"]),
    Case("label-smoothing-negative", train("TRAIN.LABEL_SMOOTHING", "-0.1"), ["TRAIN.LABEL_SMOOTHING = -0.1"]),
    Case("aux-weight-negative", train("TRAIN.AUX_WEIGHT", "-0.4"), ["TRAIN.AUX_WEIGHT = -0.4"]),
    Case("ema-decay-1", train("TRAIN.EMA_DECAY", "1.0"), ["TRAIN.EMA_DECAY = 1.0"]),
    Case("dropout-1", train("MODEL.DROPOUT", "1.0"), ["MODEL.DROPOUT = 1.0"]),
    Case("warmup-epochs-negative", train("SCHED.WARMUP_EPOCHS", "-1"), ["SCHED.WARMUP_EPOCHS = -1.0"]),
    Case("warmup-lr-negative", train("SCHED.WARMUP_LR", "-1e-4"), ["SCHED.WARMUP_LR = -0.0001"]),
    Case("decay-epochs-zero", train("SCHED.DECAY_EPOCHS", "0"), ["SCHED.DECAY_EPOCHS = 0.0", "> 0"]),
    Case("decay-rate-zero", train("SCHED.DECAY_RATE", "0"), ["SCHED.DECAY_RATE = 0.0"]),
    Case("min-lr-above-lr", train("SCHED.MIN_LR", "1.0"), ["SCHED.MIN_LR = 1.0", "OPTIM.LR"]),
    Case("cooldown-covers-run", train("SCHED.COOLDOWN_EPOCHS", "1"), ["SCHED.COOLDOWN_EPOCHS = 1.0", "TRAIN.EPOCHS"]),
    Case("milestones-unsorted", train("SCHED.MILESTONES", "[60, 30]"), ["SCHED.MILESTONES", "increasing"]),
    Case("crop-pct-zero", train("DATA.CROP_PCT", "0"), ["DATA.CROP_PCT = 0.0", "(0, 1]"]),
    Case("crop-pct-above-1", train("DATA.CROP_PCT", "1.5"), ["DATA.CROP_PCT = 1.5"]),
    Case("mean-length", train("DATA.MEAN", "[0.5, 0.5]"), ["DATA.MEAN = (0.5, 0.5)", "DATA.CHANNELS"]),
    Case("std-zero", train("DATA.STD", "[0.2, 0, 0.2]"), ["DATA.STD = (0.2, 0.0, 0.2)", "> 0"]),
    Case("pad-crop-negative", train("AUG.PAD_CROP", "-2"), ["AUG.PAD_CROP = -2"]),
    Case("hflip-above-1", train("AUG.HFLIP", "1.5"), ["AUG.HFLIP = 1.5", "probability"]),
    Case("random-erase-negative", train("AUG.RANDOM_ERASE", "-0.1"), ["AUG.RANDOM_ERASE = -0.1"]),
    Case("cutout-negative", train("AUG.CUTOUT", "-8"), ["AUG.CUTOUT = -8"]),
    Case("rrc-scale-reversed", train("AUG.RRC_SCALE", "[0.9, 0.1]"), ["AUG.RRC_SCALE = (0.9, 0.1)"]),
    Case("rand-augment-garbage", train("AUG.RAND_AUGMENT", "rand-x"), ["AUG.RAND_AUGMENT = 'rand-x'"]),
    Case("color-jitter-negative", train("AUG.COLOR_JITTER", "-0.4"), ["AUG.COLOR_JITTER = -0.4"]),
    Case("bn-decay-1", train("PNASNET.BN_DECAY", "1.0"), ["PNASNET.BN_DECAY = 1.0"]),
    # ---- data: ImageFolder
    Case("imagefolder-root-missing", train(*imagefolder("{t}/nowhere")), ["{t}/nowhere", "DATA.ROOT"]),
    Case("imagefolder-root-empty-string", train("DATA.DATASET", "imagefolder"), ["DATA.ROOT ''"]),  # config: ROOT ''
    Case("imagefolder-no-train-split", train(*imagefolder()), ["{t}/data/train", "split folder not found"],
         folder_tree({"val": ["a"]})),
    Case("imagefolder-empty-train-folder", train(*imagefolder()), ["{t}/data/train", "no class folders"],
         folder_tree({"train": [], "val": ["a"]})),
    Case("imagefolder-empty-class-folder", train(*imagefolder()), ["empty class folder", "{t}/data/train/c"],
         folder_tree(bad={"train/c": None})),
    Case("imagefolder-only-non-images", train(*imagefolder()), ["{t}/data/train", "no images found"],
         folder_tree({"train": [], "val": ["a"]}, bad={"train/a/notes.txt": b"hello"})),
    Case("imagefolder-truncated-jpeg-train", train(*imagefolder()), ["{t}/data/train/b/bad.jpg", "cannot decode"],
         folder_tree(bad={"train/b/bad.jpg": jpeg_bytes()[:400]})),
    Case("imagefolder-text-as-jpeg-train", train(*imagefolder()), ["{t}/data/train/a/notes.jpg", "cannot decode"],
         folder_tree(bad={"train/a/notes.jpg": b"this is not an image\n" * 10})),
    Case("imagefolder-empty-file-train", train(*imagefolder(), "DATA.WORKERS", "2"),
         ["{t}/data/train/a/zero.png"], folder_tree(bad={"train/a/zero.png": b""})),
    Case("imagefolder-truncated-jpeg-test", evaluate_cmd(*imagefolder()), ["{t}/data/val/a/bad.jpg", "cannot decode"],
         folder_tree(bad={"val/a/bad.jpg": jpeg_bytes()[:400]})),
    Case("imagefolder-text-as-png-test", evaluate_cmd(*imagefolder()), ["{t}/data/val/b/x.png", "cannot decode"],
         folder_tree(bad={"val/b/x.png": b"<html>not found</html>"})),
    Case("imagefolder-val-class-unknown", evaluate_cmd(*imagefolder()), ["{t}/data/val", "'z'", "known classes"],
         folder_tree({"train": ["a", "b"], "val": ["a", "z"]})),
    # ---- data: CIFAR
    Case("cifar-root-missing", train("DATA.DATASET", "cifar10", "DATA.ROOT", "{t}/nowhere"), ["{t}/nowhere"]),
    Case("cifar-folder-missing", train("DATA.DATASET", "cifar10", "DATA.ROOT", "{t}"), ["cifar-10-batches-py"]),
    Case("cifar-batch-missing", train("DATA.DATASET", "cifar10", "DATA.ROOT", "{t}/data"),
         ["data_batch_3", "not found"], cifar_tree(lambda f: (f / "data_batch_3").unlink())),
    Case("cifar-batch-truncated", train("DATA.DATASET", "cifar10", "DATA.ROOT", "{t}/data"),
         ["{t}/data/cifar-10-batches-py/data_batch_2", "truncated"], cifar_tree(truncate("data_batch_2"))),
    Case("cifar-test-batch-truncated", evaluate_cmd("DATA.DATASET", "cifar10", "DATA.ROOT", "{t}/data"),
         ["{t}/data/cifar-10-batches-py/test_batch"], cifar_tree(truncate("test_batch"))),
    Case("cifar-batch-unsafe-pickle", train("DATA.DATASET", "cifar10", "DATA.ROOT", "{t}/data"),
         ["{t}/data/cifar-10-batches-py/data_batch_1", "refusing to unpickle", "system"],
         cifar_tree(lambda f: (f / "data_batch_1").write_bytes(
             pickle.dumps({b"data": _RunsShell(), b"labels": [0]}, protocol=2)))),
    Case("cifar-batch-not-a-dict", train("DATA.DATASET", "cifar10", "DATA.ROOT", "{t}/data"),
         ["data_batch_1", "expected a dict"],
         cifar_tree(lambda f: (f / "data_batch_1").write_bytes(pickle.dumps([1, 2, 3], protocol=2)))),
    # ---- infer inputs (checked before the backend or the weights are touched)
    Case("infer-npy-missing", infer("{t}/none.npy"), ["input not found", "{t}/none.npy"]),
    Case("infer-image-missing", infer("{t}/none.jpg"), ["input not found", "{t}/none.jpg"]),
    Case("infer-input-is-folder", infer("{t}"), ["is a folder", "{t}"]),
    Case("infer-text-as-jpeg", infer("{t}/cat.jpg"), ["{t}/cat.jpg", "cannot decode"],
         raw("cat.jpg", b"GIF? no, text\n")),
    Case("infer-truncated-jpeg", infer("{t}/cut.jpg"), ["{t}/cut.jpg", "cannot decode"],
         raw("cut.jpg", jpeg_bytes()[:500])),
    Case("infer-npy-garbage", infer("{t}/x.npy"), ["{t}/x.npy", "not a"], raw("x.npy", b"hello world, not numpy")),
    Case("infer-npy-truncated", infer("{t}/x.npy"), ["{t}/x.npy"],
         lambda t, mp: (np.save(t / "full.npy", np.zeros((2, 3, 32, 32), np.float32)),
                        (t / "x.npy").write_bytes((t / "full.npy").read_bytes()[:200]))),
    Case("infer-npy-object-array", infer("{t}/obj.npy"), ["{t}/obj.npy", "pickled"],
         npy("obj.npy", lambda: np.array([{"a": 1}, None], dtype=object), allow_pickle=True)),
    Case("infer-npy-3d", infer("{t}/x.npy"), ["{t}/x.npy", "[3, 32, 32]", "NCHW"],
         npy("x.npy", lambda: np.zeros((3, 32, 32), np.float32))),
    Case("infer-npy-wrong-channels", infer("{t}/x.npy"), ["{t}/x.npy", "[2, 1, 32, 32]", "DATA.CHANNELS = 3"],
         npy("x.npy", lambda: np.zeros((2, 1, 32, 32), np.float32))),
    Case("infer-npy-tiny", infer("{t}/x.npy"), ["{t}/x.npy", "4x4", "DATA.IMAGE_SIZE is 32"],
         npy("x.npy", lambda: np.zeros((2, 3, 4, 4), np.float32))),
    Case("infer-npy-tiny-224", infer("{t}/x.npy", extra=["DATA.IMAGE_SIZE", "224"]),
         ["{t}/x.npy", "4x4", "DATA.IMAGE_SIZE is 224"], npy("x.npy", lambda: np.zeros((1, 3, 4, 4), np.float32))),
    Case("infer-npy-not-square", infer("{t}/x.npy"), ["{t}/x.npy", "32x40"],
         npy("x.npy", lambda: np.zeros((1, 3, 32, 40), np.float32))),
    Case("infer-npy-empty-batch", infer("{t}/x.npy"), ["{t}/x.npy", "no images"],
         npy("x.npy", lambda: np.zeros((0, 3, 32, 32), np.float32))),
    Case("infer-npy-nan", infer("{t}/x.npy"), ["{t}/x.npy", "3 of 6144", "not finite"], npy("x.npy", nan_batch)),
    Case("infer-npy-inf", infer("{t}/x.npy"), ["{t}/x.npy", "1 of 3072", "not finite"], npy("x.npy", inf_batch)),
    Case("infer-npy-strings", infer("{t}/x.npy"), ["{t}/x.npy", "dtype <U"],
         npy("x.npy", lambda: np.full((1, 3, 32, 32), "a"))),
    Case("infer-two-npy", infer("{t}/a.npy", "{t}/b.npy"), ["one .npy batch", "{t}/a.npy"],
         both(npy("a.npy", lambda: np.zeros((1, 3, 32, 32), np.float32)),
              npy("b.npy", lambda: np.zeros((1, 3, 32, 32), np.float32)))),
    Case("infer-topk-zero", lambda t: infer("{t}/a.npy")(t) + ["--topk", "0"], ["--topk 0"],
         npy("a.npy", lambda: np.zeros((1, 3, 32, 32), np.float32))),
    Case("infer-topk-above-classes", lambda t: infer("{t}/a.npy")(t) + ["--topk", "11"],
         ["--topk 11", "MODEL.NUM_CLASSES = 10"], npy("a.npy", lambda: np.zeros((1, 3, 32, 32), np.float32))),
    Case("infer-nan-logits-write-nothing", infer("{t}/ok.npy"), ["non-finite logits", "nothing was written"],
         nan_logits),
    # ---- device / backend
    Case("device-gpu-without-cuda-torch", train("DEVICE", "gpu"), ["DEVICE = 'gpu'", "DEVICE cpu"], no_cuda_torch),
    Case("device-gpu-without-cuda-paddle", train("DEVICE", "gpu", backend="paddle"), ["DEVICE = 'gpu'", "paddle"],
         no_cuda_paddle),
    Case("backend-torch-missing", train(), ["--backend torch", "not installed"], missing_module("torch")),
    Case("backend-paddle-missing", train(backend="paddle"), ["--backend paddle", "not installed"],
         missing_module("paddle")),
    Case("optim-lr-groups-bad-scale", train("ARCH_OPTIM.LR_GROUPS", "['^alphas=abc']"),
         ["ARCH_OPTIM.LR_GROUPS[0]", "'abc' is not a number"]),
    # ---- resume checkpoints
    Case("resume-missing", train("RESUME", "{t}/none.safetensors"), ["RESUME = ", "{t}/none.safetensors",
                                                                     "no such checkpoint"]),
    Case("resume-garbage", train("RESUME", "{t}/g.safetensors"), ["{t}/g.safetensors", "no readable twinnas metadata"],
         raw("g.safetensors", b"\x00garbage" * 10)),
    Case("resume-other-network", train("RESUME", "{t}/m.safetensors"),
         ["{t}/m.safetensors", "checkpoint of pnasnet/pnasnet5_mobile", "cream/cream14"],
         neutral_ckpt("m.safetensors", net="pnasnet5_mobile", family="pnasnet", epoch=1)),
    Case("resume-not-a-training-checkpoint", train("RESUME", "{t}/w.safetensors"),
         ["{t}/w.safetensors", "not a training checkpoint", "MODEL.WEIGHTS"], neutral_ckpt("w.safetensors")),
    Case("resume-past-the-end", train("RESUME", "{t}/e.safetensors"),
         ["{t}/e.safetensors", "after epoch 5", "TRAIN.EPOCHS is 1"], neutral_ckpt("e.safetensors", epoch=5)),
    Case("resume-other-task", train("RESUME", "{t}/s.safetensors"),
         ["{t}/s.safetensors", "'supernet_search' run", "'classification'"],
         neutral_ckpt("s.safetensors", epoch=1, task="supernet_search")),
    # ---- weights files (MODEL.WEIGHTS): formats, damage, pickles that must never run
    Case("weights-missing", train("MODEL.WEIGHTS", "{t}/none.pt"), ["{t}/none.pt", "not found"]),
    Case("weights-garbage", train("MODEL.WEIGHTS", "{t}/g.pt"), ["{t}/g.pt", "unknown weights format"],
         raw("g.pt", b"GIF89a" + bytes(200))),
    Case("weights-empty-file", train("MODEL.WEIGHTS", "{t}/e.pdparams"), ["{t}/e.pdparams", "empty file"],
         raw("e.pdparams", b"")),
    Case("weights-malicious-pickle-train", train("MODEL.WEIGHTS", "{t}/evil.pt"),
         ["{t}/evil.pt", "refused to unpickle global", "system"], malicious("evil.pt")),
    Case("weights-malicious-pickle-test", evaluate_cmd("MODEL.WEIGHTS", "{t}/evil.pdparams"),
         ["{t}/evil.pdparams", "refused to unpickle global"], malicious("evil.pdparams")),
    Case("weights-malicious-pickle-infer", lambda t: infer("{t}/x.npy", extra=["MODEL.WEIGHTS", str(t / "evil.pth.tar")])(t),
         ["{t}/evil.pth.tar", "refused to unpickle global"],
         both(malicious("evil.pth.tar"), npy("x.npy", lambda: np.zeros((1, 3, 32, 32), np.float32)))),
    Case("weights-of-another-network", train("MODEL.WEIGHTS", "{t}/p.safetensors"),
         ["{t}/p.safetensors", "does not fit the model", "unexpected (57)", "wrong shape (3): blocks.2.1"],
         neutral_ckpt("p.safetensors", net="cream43")),
    Case("test-without-weights", evaluate_cmd(), ["MODEL.WEIGHTS is empty"]),
    # ---- run folders and output paths
    Case("run-folder-holds-a-run", train(), ["{t}/out", "already holds a run", "RESUME auto", "--output"],
         run_folder("metrics.csv", "last.safetensors")),
    Case("run-folder-holds-epoch-checkpoints", train(), ["already holds a run", "epoch-0003.safetensors"],
         run_folder("epoch-0003.safetensors")),
    Case("resume-from-elsewhere-into-a-run", train("RESUME", "{t}/r.safetensors"), ["already holds a run"],
         both(run_folder("metrics.csv"), neutral_ckpt("r.safetensors", epoch=1))),
    Case("output-is-a-file", train(), ["{t}/out", "is a file, not a folder"], raw("out", b"x")),
    Case("output-under-a-file", lambda t: train()(t)[:-len(TINY)] and
         ["train", CFG, "--backend", "torch", "--output", str(t / "f" / "run"), *TINY],
         ["{t}/f/run", "cannot create run folder"], raw("f", b"x")),
    Case("infer-output-is-a-file", infer("{t}/x.npy"), ["{t}/out"],
         both(raw("out", b"x"), npy("x.npy", lambda: np.zeros((1, 3, 32, 32), np.float32)))),
    Case("run-folder-read-only", train(), ["run folder {t}/out is not writable"], read_only("out")),
    # ---- convert paths
    Case("convert-out-is-a-folder", convert("{t}/w.safetensors", "torch", "{t}/d"), ["OUT {t}/d is a folder"],
         both(neutral_ckpt("w.safetensors"), folder("d"))),
    Case("convert-out-under-a-file", convert("{t}/w.safetensors", "paddle", "{t}/f/x.pdparams"),
         ["OUT {t}/f/x.pdparams", "{t}/f is a file"], both(neutral_ckpt("w.safetensors"), raw("f", b"x"))),
    Case("convert-source-missing", convert("{t}/none.safetensors", "torch", "{t}/w.pt"), ["{t}/none.safetensors"]),
    # PC-DARTS search settings
    Case("search-hvp-unknown", search("PCDARTS.HVP", "exact"), ["PCDARTS.HVP", "exact", "finite_difference"]),
    Case("search-train-portion-1", search("PCDARTS.TRAIN_PORTION", "1.0"), ["PCDARTS.TRAIN_PORTION", "(0, 1)"]),
    Case("search-partial-k-not-dividing", search("PCDARTS.PARTIAL_K", "3"), ["PCDARTS.PARTIAL_K = 3", "divisible"]),
    Case("search-hvp-r-zero", search("PCDARTS.HVP_R", "0"), ["PCDARTS.HVP_R", "> 0"]),
    Case("search-an-evaluation-network", search("MODEL.NAME", "pcdarts_cifar"),
         ["MODEL.NAME 'pcdarts_cifar' is for train / test / infer, not search"]),
    Case("train-the-search-network", train(config=SEARCH_CFG), ["it is the search network"]),
    Case("search-a-cream-child-net", lambda t: ["search", CFG, "--backend", "torch", "--output", out(t), *TINY],
         ["search: MODEL.NAME", "is for train / test / infer, not search", "MODEL.NAME cream_supernet"]),
    Case("search-split-leaves-a-part-empty", search("DATA.NUM_TRAIN", "1"),
         ["PCDARTS.TRAIN_PORTION = 0.5 of 1 training samples leaves a part empty"]),
    Case("search-stream-without-a-batch", search("DATA.NUM_TRAIN", "40", "DATA.DROP_LAST", "True"),
         ["'train' data stream gives no full batch of 32 images (20 samples"]),
    Case("search-warmup-style", search("SCHED.WARMUP_STYLE", "cosine"), ["SCHED.WARMUP_STYLE", "cosine"]),
    # Cream supernet search settings
    Case("cream-flops-window-too-small", cream_search("CREAM.STA_NUM", "[]", "CREAM.FLOPS_MAXIMUM", "1.0"),
         ["CREAM.FLOPS_MINIMUM / FLOPS_MAXIMUM", "[0.0, 1.0]", "64 px"]),
    Case("cream-sta-num", cream_search("CREAM.STA_NUM", "[1, 2, 3]"), ["CREAM.STA_NUM", "5 layer counts"]),
    Case("cream-slice-over-the-batch", cream_search("CREAM.SLICE", "20"),
         ["CREAM.SLICE = 20", "2 x SLICE", "DATA.BATCH_SIZE = 32"]),
    Case("cream-pick-method", cream_search("CREAM.PICK_METHOD", "best"), ["CREAM.PICK_METHOD", "best", "top1"]),
    Case("cream-pre-prob", cream_search("CREAM.PRE_PROB", "[0.5, 0.5]"), ["CREAM.PRE_PROB", "6 probabilities"]),
    Case("cream-export-base-missing", cream_search("CREAM.EXPORT_BASE", "nothing.yaml"),
         ["CREAM.EXPORT_BASE = 'nothing.yaml'", "no such config"]),
    Case("cream-supernet-drop-path", cream_search("MODEL.DROP_PATH", "0.1"), ["MODEL.DROP_PATH = 0.1", "no drop path"]),
    Case("cream-train-the-supernet", cream_search(command="train"),
         ["MODEL.NAME 'cream_supernet' is for search, not train", "child.yaml"]),
    # NAS-Bench-MR networks, the NCP predictor and search, segmentation
    Case("mrnet-code-out-of-space", (lambda t: ["train", MR_CFG, "--backend", "torch", "--output", out(t), "NASBENCH_MR.CODE",
                     "8_16-1_1_1_16-1_2_1_1_16_32-1_3_1_1_1_16_32_64-1_4_1_1_1_5_16_32_64_64-64"]),
         ["NASBENCH_MR.CODE", "position 21 (block 4 branch 3 blocks) = 5", "allowed 1..4"]),
    Case("mrnet-code-width-not-on-the-grid", lambda t: ["train", MR_CFG, "--backend", "torch", "--output", out(t),
                                                        "NASBENCH_MR.CODE", "[8, 20, 1, 1, 16, 1, 1, 1, 16, 32, 1, 1,"
                                                        " 1, 1, 16, 32, 64, 1, 1, 1, 1, 1, 16, 32, 64, 64, 64]"],
         ["position 1 (stem1 width) = 20", "8..128 in steps of 8"]),
    Case("mrnet-dropout", lambda t: ["train", MR_CFG, "--backend", "torch", "--output", out(t), "MODEL.DROPOUT", "0.2"],
         ["MODEL.DROPOUT = 0.2", "no dropout"]),
    Case("predictor-setting", lambda t: ["train", NCP_CFG, "--backend", "torch", "--output", out(t), "NCP.SETTING",
                                         "3ddet"], ["NCP.SETTING = '3ddet'", "nas-bench-201"]),
    Case("predictor-tables-missing", lambda t: ["train", NCP_CFG, "--backend", "torch", "--output", out(t),
                                                "NCP.TABLES", "{t}/none".format(t=t)], ["{t}/none", "seg"]),
    Case("predictor-one-cycle-pct", lambda t: ["train", NCP_CFG, "--backend", "torch", "--output", out(t),
                                               "SCHED.PCT_START", "1.5"], ["SCHED.PCT_START", "(0, 1)"]),
    Case("predictor-one-cycle-with-warmup", lambda t: ["train", NCP_CFG, "--backend", "torch", "--output", out(t),
                                                       "SCHED.WARMUP_EPOCHS", "2"], ["SCHED.WARMUP_EPOCHS 0"]),
    Case("ncp-iters-zero", lambda t: ["search", NCP_CFG, "--backend", "torch", "--output", out(t), "NCP.ITERS", "0"],
         ["NCP.ITERS = 0", ">= 1"]),
    Case("ncp-no-weights", lambda t: ["search", NCP_CFG, "--backend", "torch", "--output", out(t)],
         ["MODEL.WEIGHTS is empty", "ncp_predictor_seg.yaml"]),
    Case("ncp-extra-predictor-of-another-space",
         lambda t: ["search", NCP_CFG, "--backend", "torch", "--output", out(t), "MODEL.WEIGHTS", "{t}/w.safetensors".format(t=t),
                    "NCP.EXTRA_PREDICTORS", "['{t}/w.safetensors@nas-bench-201=1']".format(t=t)],
         ["@nas-bench-201 reads 30-number codes", "'seg' predictor 27"]),
    Case("seg-root-missing", lambda t: ["train", SEG_CFG, "--backend", "torch", "--output", out(t), "DATA.ROOT",
                                        "{t}/cs".format(t=t)], ["{t}/cs/leftImg8bit/train"]),
    Case("seg-crop", lambda t: ["train", SEG_CFG, "--backend", "torch", "--output", out(t), "SEG.CROP", "[0, 64]"],
         ["SEG.CROP", "(height, width) >= 1"]),
    Case("seg-infer", lambda t: ["infer", SEG_CFG, "--backend", "torch", "--output", out(t), "--inputs", "x.npy"],
         ["MODEL.NAME 'mrnet' is for train / test, not infer"]),
    Case("convert-malicious-source", lambda t: ["convert", "--from", "paddle", str(t / "evil.pt"), "--to", "neutral",
                                                str(t / "w.safetensors")],
         ["{t}/evil.pt", "refused to unpickle global"], malicious("evil.pt")),
]


# ----------------------------------------------------------------------------------------------------- runner
def _tree(root: Path):
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_is_one_clear_line(case: Case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a stray default folder (runs/...) would land here and be seen
    if case.setup is not None:
        case.setup(tmp_path, monkeypatch)
    before = _tree(tmp_path)
    capsys.readouterr()
    code = main(case.argv(tmp_path))
    captured = capsys.readouterr()
    err_lines = captured.err.strip().splitlines()
    assert code == 2, f"exit code {code}; stderr: {captured.err!r}"
    assert "Traceback" not in captured.err + captured.out
    assert len(err_lines) == 1, f"stderr must be one line, got {len(err_lines)}: {captured.err!r}"
    line = err_lines[0]
    assert line.startswith("error: "), line
    for fragment in case.fragments:
        assert fragment.format(t=tmp_path) in line, f"{fragment.format(t=tmp_path)!r} not in {line!r}"
    new = _tree(tmp_path) - before
    assert not new, f"left behind: {sorted(new)}"
    assert not (tmp_path / "pwned").exists(), "a pickle executed code"
    assert not list(tmp_path.rglob("*.tmp"))


def test_the_table_is_big_and_its_names_unique():
    names = [case.name for case in CASES]
    assert len(names) >= 50 and len(set(names)) == len(names)


def test_the_tiny_config_itself_is_valid():
    """Control: every row fails because of its own bad value, not because TINY is broken."""
    from common.config import load_config

    cfg = load_config(CFG, TINY)
    assert cfg.DATA.DATASET == "synthetic" and cfg.TRAIN.MAX_STEPS_PER_EPOCH == 1


def test_good_npy_infer_writes_standard_json(tmp_path, capsys, monkeypatch):
    """Control for the infer rows: a finite batch of the right shape runs, and top<k>.json is strict JSON."""
    import json

    real = commands.build_with_weights
    monkeypatch.setattr(commands, "build_with_weights",
                        lambda backend, cfg, module, spec, require_weights, **kw:
                        real(backend, cfg, module, spec, require_weights=False, **kw))
    np.save(tmp_path / "ok.npy", np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    code = main(infer(str(tmp_path / "ok.npy"))(tmp_path) + ["--topk", "3"])
    assert code == 0, capsys.readouterr().err
    text = (tmp_path / "out" / "top3.json").read_text()

    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    results = json.loads(text, parse_constant=refuse)
    assert [r["input"] for r in results] == [f"{tmp_path / 'ok.npy'}[0]", f"{tmp_path / 'ok.npy'}[1]"]
    assert all(len(r["top"]) == 3 for r in results)
    assert np.load(tmp_path / "out" / "logits.npy").shape == (2, 10)
