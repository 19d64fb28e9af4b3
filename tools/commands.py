"""The commands behind ``tools/main.py``.  Each ``run_<name>(args)`` returns an exit code."""
from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np

from common import families
from common.checkpoint import CheckpointError
from common.config import ConfigError, load_config, save_config


class UserError(RuntimeError):
    """Something the user can fix (file, key, value, missing package); printed without a traceback."""


# ------------------------------------------------------------------------------------------ shared
def load_cfg(args):
    try:
        return load_config(args.config, args.overrides)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def load_backend(name: str, cfg=None, dtype: Optional[str] = None):
    """Import ``<name>_impl.backend`` only now; a missing framework is a clear error, not a traceback."""
    framework = {"torch": "torch", "paddle": "paddle"}[name]
    try:
        importlib.import_module(framework)
    except ImportError:
        raise UserError(
            f"--backend {name} needs {'paddlepaddle' if name == 'paddle' else 'torch'}, which is not installed: "
            f"pip install -r requirements-{name}.txt"
        ) from None
    module = importlib.import_module(f"{name}_impl.backend")
    device = cfg.DEVICE if cfg is not None else "cpu"
    return module.Backend(device=device, dtype=dtype or (cfg.DTYPE if cfg is not None else "float32"),
                          threads=cfg.THREADS if cfg is not None else None)


def spec_for(cfg):
    try:
        module = families.spec_module(cfg.MODEL.FAMILY)
    except families.FamilyNotAvailable as exc:
        raise UserError(str(exc)) from None
    try:
        return module, module.spec_from_config(cfg)
    except (ValueError, KeyError) as exc:
        raise UserError(f"{cfg.MODEL.FAMILY}: {exc}") from None


def run_dir_for(args, cfg) -> str:
    if args.output:
        return args.output
    if cfg.OUTPUT_DIR:
        return cfg.OUTPUT_DIR
    stem = os.path.splitext(os.path.basename(args.config or "run"))[0]
    return os.path.join("runs", stem)


def build_with_weights(backend, cfg, spec_module, spec, require_weights: bool):
    """Build the model; load MODEL.WEIGHTS (neutral) or, when allowed, numpy-initialised weights."""
    from common.checkpoint import load_checkpoint

    model = backend.build_model(cfg.MODEL.FAMILY, spec)
    path = cfg.MODEL.WEIGHTS
    if path:
        try:
            ckpt = load_checkpoint(path)
            tensors = ckpt.ema if (ckpt.ema is not None and cfg.TRAIN.EMA_DECAY > 0) else ckpt.model
            backend.load_neutral(model, tensors, source=path)
        except CheckpointError as exc:
            raise UserError(str(exc)) from None
    elif require_weights:
        raise UserError(
            "MODEL.WEIGHTS is empty: this command needs trained weights (a neutral .safetensors written by "
            "`train`, or foreign weights imported with `tools/main.py convert`)"
        )
    else:
        rng = np.random.default_rng(cfg.SEED)
        backend.load_neutral(model, spec_module.init_state(spec, rng), source="numpy init")
    return model


def _need(module_name: str, what: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UserError(f"{what} is not part of this version yet ({module_name} is missing)") from None
        raise


# ------------------------------------------------------------------------------------------ info
def run_info(args) -> int:
    cfg = load_cfg(args)
    module, spec = spec_for(cfg)
    size = cfg.DATA.IMAGE_SIZE
    params = module.count_params(spec)
    macs = module.count_macs(spec, size)
    print(f"family        {cfg.MODEL.FAMILY} ({cfg.MODEL.NAME})")
    print(f"parameters    {params:,} trainable (counted from the spec)")
    backend = load_backend(args.backend, cfg)
    model = backend.build_model(cfg.MODEL.FAMILY, spec)
    built = backend.count_parameters(model)
    status = "matches the spec" if built == params else f"DIFFERS from the spec by {built - params:+,}"
    print(f"built model   {built:,} trainable in {backend.describe()} ({status})")
    rule = module.count_macs.__doc__.strip().splitlines()[0].replace("``", "")
    print(f"MACs          {macs / 1e6:,.2f} M at {size}x{size} ({rule})")
    description = module.describe(spec)
    print("architecture")
    print(json.dumps(description, indent=2, default=str))
    return 0 if built == params else 1


# ------------------------------------------------------------------------------------------ infer
def add_infer_arguments(p) -> None:
    p.add_argument("--inputs", nargs="+", required=True, help="image files (JPEG/PNG) or one .npy NCHW float32 batch")
    p.add_argument("--topk", type=int, default=5)


def run_infer(args) -> int:
    cfg = load_cfg(args)
    module, spec = spec_for(cfg)
    batch, names = _load_inputs(cfg, args.inputs)
    backend = load_backend(args.backend, cfg)
    model = build_with_weights(backend, cfg, module, spec, require_weights=True)
    logits = backend.eval_logits(model, batch)
    out_dir = args.output or os.path.join(run_dir_for(args, cfg), "infer")
    os.makedirs(out_dir, exist_ok=True)
    from common.io_utils import atomic_path

    logits_path = os.path.join(out_dir, "logits.npy")
    with atomic_path(logits_path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, logits)
    class_names = getattr(module, "class_names", lambda _spec: None)(spec)
    if class_names is None and cfg.DATA.DATASET in ("builtin_digits", "cifar10", "cifar100"):
        class_names = _dataset_class_names(cfg)
    results = []
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    for row, name in enumerate(names):
        order = np.argsort(-logits[row], kind="stable")[: args.topk]
        results.append({
            "input": name,
            "top": [
                {"class": int(k), "name": class_names[k] if class_names else str(int(k)),
                 "logit": float(logits[row, k]), "prob": float(probs[row, k])}
                for k in order
            ],
        })
    from common.io_utils import atomic_write_text

    top_path = os.path.join(out_dir, f"top{args.topk}.json")
    atomic_write_text(top_path, json.dumps(results, indent=2))
    for item in results:
        best = item["top"][0]
        print(f"{item['input']}: {best['name']} ({best['prob']:.3f})")
    print(f"wrote {logits_path} {list(logits.shape)} and {top_path}")
    return 0


def _dataset_class_names(cfg):
    """Class names of a small built-in or CIFAR dataset (when its files are there), for a head that fits it."""
    from common.data.build import build_dataset

    try:
        names = list(build_dataset(cfg, "val").classes)
    except (OSError, ValueError):
        return None
    return names if len(names) == cfg.MODEL.NUM_CLASSES else None


def _load_inputs(cfg, inputs: List[str]):
    if len(inputs) == 1 and inputs[0].endswith(".npy"):
        path = inputs[0]
        if not os.path.isfile(path):
            raise UserError(f"input not found: {path}")
        try:
            batch = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise UserError(f"{path}: not a plain numpy array ({exc})") from None
        want = (cfg.DATA.CHANNELS,)
        if batch.ndim != 4 or batch.shape[1:2] != want:
            raise UserError(f"{path}: expected an NCHW batch with {want[0]} channels, got shape {list(batch.shape)}")
        return batch.astype(np.float32, copy=False), [f"{path}[{i}]" for i in range(batch.shape[0])]
    from common.data.build import eval_preprocess

    images = []
    for path in inputs:
        if not os.path.isfile(path):
            raise UserError(f"input not found: {path}")
        try:
            images.append(eval_preprocess(cfg, path))
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: {exc}") from None
    return np.stack(images).astype(np.float32), list(inputs)


# ------------------------------------------------------------------------------------------ train/test/search
def run_train(args) -> int:
    cfg = load_cfg(args)
    engine = _need("common.engine", "training")
    module, spec = spec_for(cfg)
    try:  # a missing dataset stops here, before any folder or model exists
        datasets = engine.check_data(cfg, label_offset=engine.label_offset_of(module, spec))
    except (FileNotFoundError, engine.TrainingError) as exc:
        raise UserError(str(exc)) from None
    backend = load_backend(args.backend, cfg)
    run_dir = run_dir_for(args, cfg)
    os.makedirs(run_dir, exist_ok=True)
    save_config(cfg, os.path.join(run_dir, "config.yaml"))
    try:
        return engine.train(cfg, backend, module, spec, run_dir, datasets=datasets)
    except (CheckpointError, engine.TrainingError) as exc:
        raise UserError(str(exc)) from None
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None


def run_test(args) -> int:
    cfg = load_cfg(args)
    engine = _need("common.engine", "evaluation")
    module, spec = spec_for(cfg)
    offset = engine.label_offset_of(module, spec)
    try:  # the validation data must exist before the model is built
        (val_set,) = engine.check_data(cfg, splits=("val",), label_offset=offset)
    except (FileNotFoundError, engine.TrainingError) as exc:
        raise UserError(str(exc)) from None
    backend = load_backend(args.backend, cfg)
    model = build_with_weights(backend, cfg, module, spec, require_weights=True)
    return engine.test(cfg, backend, model, run_dir_for(args, cfg), label_offset=offset, dataset=val_set)


def run_search(args) -> int:
    cfg = load_cfg(args)
    module, _spec = spec_for(cfg)
    if not hasattr(module, "search"):
        raise UserError(
            f"search: MODEL.FAMILY {cfg.MODEL.FAMILY!r} has no architecture search in this version "
            "(the Cream supernet, PC-DARTS and NCP searches are planned); `train` retrains a given architecture"
        )
    backend = load_backend(args.backend, cfg)
    return module.search(cfg, backend, run_dir_for(args, cfg))


# ------------------------------------------------------------------------------------------ convert / parity / bench
def add_convert_arguments(p) -> None:
    p.add_argument("--from", dest="src_format", required=True,
                   help="source format: tf, neutral, torch, paddle, cream-pth, timm")
    p.add_argument("src", metavar="PATH", help="source checkpoint (TF prefix, file)")
    p.add_argument("--to", dest="dst_format", required=True, help="target format: neutral, torch, paddle, tf")
    p.add_argument("dst", metavar="OUT", help="output file (TF: checkpoint prefix)")
    p.add_argument("--net", default="", help="network name when the source does not say (e.g. cream14, pnasnet5_large)")
    p.add_argument("--drop-background", action="store_true", help="1001 -> 1000 classes (TF ImageNet heads)")
    p.add_argument("--with-aux", action="store_true",
                   help="TF PNASNet: also convert the training-only aux head (aux_<k>/* -> aux_head.*) for "
                        "fine-tuning with PNASNET.AUX_HEAD true; without it the aux head is skipped and reported")


def run_convert(args) -> int:
    convert = _need("weights_tools.convert", "checkpoint conversion")
    try:
        return convert.run(args)
    except CheckpointError as exc:
        raise UserError(str(exc)) from None


def add_parity_arguments(p) -> None:
    p.add_argument("--report", default="", help="folder for parity.json and parity.md (default: <run>/parity)")


def run_parity(args) -> int:
    cfg = load_cfg(args)
    harness = _need("parity_tests.harness", "the parity harness")
    module, spec = spec_for(cfg)
    report_dir = args.report or os.path.join(run_dir_for(args, cfg), "parity")
    return harness.run_from_config(cfg, module, spec, report_dir)


def run_bench(args) -> int:
    cfg = load_cfg(args)
    bench = _need("bench.run", "benchmarking")
    module, spec = spec_for(cfg)
    return bench.run_from_config(cfg, module, spec, run_dir_for(args, cfg))


def add_train_arguments(p) -> None:
    pass
