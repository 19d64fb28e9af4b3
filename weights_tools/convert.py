"""``tools/main.py convert``: any supported checkpoint format -> neutral -> any other.

    python tools/main.py convert --from tf model.ckpt --to paddle pnasnet.pdparams --net pnasnet5_large
    python tools/main.py convert --from cream-pth 14.pth.tar --to neutral cream14.safetensors

Every conversion goes through the neutral form (:class:`common.checkpoint.Checkpoint`, canonical names in
torch layout), so each foreign format needs one importer and one exporter, not one per pair.

Formats
  neutral    ``.safetensors`` written by this toolkit (model, EMA, optimizer, metadata)
  torch      a plain PyTorch state dict (``.pth``), canonical (= timm / upstream) names; read without torch
  timm       alias of ``torch`` (timm's and Cadene's PNASNet files use the canonical names)
  paddle     a Paddle ``.pdparams`` state dict (``_mean``/``_variance``, Linear ``[in, out]``); read and
             written with numpy only
  cream-pth  upstream Cream ``*.pth.tar`` (``state_dict`` + ``state_dict_ema``, ``module.`` prefixes)
  tf         a TensorFlow checkpoint prefix (PNASNet-5 official layout); needs tensorflow
Nothing is ever unpickled without an allow-list; outputs are written atomically.
"""
from __future__ import annotations

import importlib
import os
import pickle
import time
from typing import Callable, Dict, Optional

import numpy as np

from common.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from common.io_utils import atomic_path

IMPORT_FORMATS = ("neutral", "torch", "timm", "paddle", "cream-pth", "tf")
EXPORT_FORMATS = ("neutral", "torch", "paddle", "tf")

# Paddle names its BatchNorm statistics differently; everything else keeps the canonical name.
_PADDLE_BN = {"running_mean": "_mean", "running_var": "_variance"}
_TORCH_ONLY = ("num_batches_tracked",)


class ConversionError(CheckpointError):
    pass


# ------------------------------------------------------------------------------------------- importers
def import_neutral(path: str, net: str = "", **_) -> Checkpoint:
    return load_checkpoint(path)


def import_torch(path: str, net: str = "", **_) -> Checkpoint:
    from weights_tools.safe_unpickle import load_torch_checkpoint

    raw = load_torch_checkpoint(path)
    state = _unwrap_state_dict(raw, path)
    model = {k: np.asarray(v) for k, v in state.items() if not k.endswith(_TORCH_ONLY)}
    return _with_family(Checkpoint(model=model, meta={"source_format": "torch", "source": path}), net, path)


def import_paddle(path: str, net: str = "", **_) -> Checkpoint:
    from weights_tools.safe_unpickle import load_pdparams

    state = load_pdparams(path)
    return _with_family(Checkpoint(model=paddle_state_to_neutral(state),
                                   meta={"source_format": "paddle", "source": path}), net, path)


def import_cream_pth(path: str, net: str = "", **_) -> Checkpoint:
    from weights_tools.cream_import import import_cream_checkpoint

    ckpt = import_cream_checkpoint(path, net=net or None)
    ckpt.meta.update({"family": "cream", "name": ckpt.meta["spec"]})
    return ckpt


def import_tf(path: str, net: str = "", drop_background: bool = False, with_aux: bool = False, **_) -> Checkpoint:
    pnasnet = importlib.import_module("weights_tools.pnasnet_convert")
    return pnasnet.import_tf_checkpoint(path, net=net or None, drop_background=drop_background,
                                        with_aux=with_aux or None)


IMPORTERS: Dict[str, Callable[..., Checkpoint]] = {
    "neutral": import_neutral, "torch": import_torch, "timm": import_torch, "paddle": import_paddle,
    "cream-pth": import_cream_pth, "tf": import_tf,
}


# ------------------------------------------------------------------------------------------- exporters
def export_neutral(ckpt: Checkpoint, path: str) -> None:
    save_checkpoint(path, ckpt)


def export_torch(ckpt: Checkpoint, path: str) -> None:
    try:
        import torch
    except ImportError:
        raise ConversionError("--to torch writes a torch state dict and needs torch installed "
                              "(pip install -r requirements-torch.txt); --to neutral needs no framework") from None
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ckpt.model.items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def export_paddle(ckpt: Checkpoint, path: str) -> None:
    """A ``.pdparams`` that ``paddle.load`` + ``set_state_dict`` accept, written with numpy and pickle only."""
    state = neutral_to_paddle_state(ckpt.model)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            pickle.dump(state, handle, protocol=4)


def export_tf(ckpt: Checkpoint, path: str) -> None:
    pnasnet = importlib.import_module("weights_tools.pnasnet_convert")
    pnasnet.export_tf_checkpoint(ckpt, path)


EXPORTERS: Dict[str, Callable[[Checkpoint, str], None]] = {
    "neutral": export_neutral, "torch": export_torch, "paddle": export_paddle, "tf": export_tf,
}


# ------------------------------------------------------------------------------------------- layout rules
def paddle_state_to_neutral(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Paddle names/layout -> canonical torch layout.

    Rule (true for every network in this toolkit, whose convolutions are 4-D): a 2-D ``*.weight`` is a
    Linear weight stored ``[in, out]`` and is transposed; ``_mean`` / ``_variance`` are BN statistics."""
    out = {}
    back = {v: k for k, v in _PADDLE_BN.items()}
    for name, array in state.items():
        head, _, leaf = name.rpartition(".")
        array = np.asarray(array)
        if leaf in back:
            name = f"{head}.{back[leaf]}" if head else back[leaf]
        elif leaf == "weight" and array.ndim == 2:
            array = np.ascontiguousarray(array.T)
        out[name] = array
    return out


def neutral_to_paddle_state(model: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    out = {}
    for name, array in model.items():
        head, _, leaf = name.rpartition(".")
        array = np.asarray(array)
        if leaf in _PADDLE_BN:
            name = f"{head}.{_PADDLE_BN[leaf]}" if head else _PADDLE_BN[leaf]
        elif leaf == "weight" and array.ndim == 2:
            array = np.ascontiguousarray(array.T)
        out[name] = np.ascontiguousarray(array)
    return out


# ------------------------------------------------------------------------------------------- driver
def convert(src_format: str, src: str, dst_format: str, dst: str, net: str = "",
            drop_background: bool = False, with_aux: bool = False, log: Callable[[str], None] = print) -> Checkpoint:
    if src_format not in IMPORTERS:
        raise ConversionError(f"--from {src_format!r}: not one of {list(IMPORT_FORMATS)}")
    if with_aux and src_format != "tf":
        raise ConversionError(f"--with-aux: only TF checkpoints carry the aux head apart (--from tf, not "
                              f"{src_format!r}); other formats convert whatever tensors they hold")
    if dst_format not in EXPORTERS:
        raise ConversionError(f"--to {dst_format!r}: not one of {list(EXPORT_FORMATS)}")
    if src_format != "tf" and not os.path.isfile(src):
        raise ConversionError(f"source checkpoint not found: {src}")
    started = time.perf_counter()
    log(f"reading {src_format} checkpoint {src} ...")
    ckpt = IMPORTERS[src_format](src, net=net, drop_background=drop_background, with_aux=with_aux)
    if drop_background and src_format != "tf":
        ckpt = drop_background_class(ckpt)
    log(f"writing {dst_format} checkpoint {dst} ...")
    EXPORTERS[dst_format](ckpt, dst)
    _summary(ckpt, src_format, src, dst_format, dst, time.perf_counter() - started, log)
    return ckpt


def drop_background_class(ckpt: Checkpoint) -> Checkpoint:
    """1001 -> 1000 classes: drop row 0 (TF ImageNet's background class) of the classifier."""
    from weights_tools.pnasnet_convert import drop_background as _drop

    return _drop(ckpt)


def run(args) -> int:
    convert(args.src_format, args.src, args.dst_format, args.dst, net=args.net, drop_background=args.drop_background,
            with_aux=args.with_aux)
    return 0


def _unwrap_state_dict(raw, path: str) -> Dict[str, np.ndarray]:
    if isinstance(raw, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in raw and isinstance(raw[key], dict):
                raw = raw[key]
                break
        arrays = {k: v for k, v in raw.items() if isinstance(v, np.ndarray)}
        if arrays and len(arrays) == len(raw):
            return {k[len("module."):] if k.startswith("module.") else k: v for k, v in arrays.items()}
    raise ConversionError(f"{path}: not a state dict of tensors (top-level keys: "
                          f"{sorted(raw)[:8] if isinstance(raw, dict) else type(raw).__name__})")


def _with_family(ckpt: Checkpoint, net: str, path: str) -> Checkpoint:
    """Record which network the tensors belong to: ``--net`` or recognised from the shapes."""
    from weights_tools.recognise import recognise_net

    family, name = recognise_net(ckpt.model, net, source=path)
    ckpt.meta.update({"family": family, "name": name})
    return ckpt


def _summary(ckpt: Checkpoint, src_format, src, dst_format, dst, seconds, log) -> None:
    n_params = sum(int(np.prod(a.shape)) for a in ckpt.model.values())
    skipped = ckpt.meta.get("skipped", [])
    rows = [
        ("network", f"{ckpt.meta.get('family', '?')}/{ckpt.meta.get('name', '?')}"),
        ("from", f"{src_format}: {src}"),
        ("to", f"{dst_format}: {dst}"),
        ("tensors", f"{len(ckpt.model):,} ({n_params:,} values)"),
        ("EMA tensors", f"{len(ckpt.ema):,}" if ckpt.ema else "none"),
        ("skipped", ", ".join(skipped) if skipped else "none"),
        ("time", f"{seconds:.1f}s"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        log(f"  {key.ljust(width)}  {value}")
