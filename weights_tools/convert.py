"""``tools/main.py convert``: any supported checkpoint format -> neutral -> any other.

    python tools/main.py convert --from tf model.ckpt --to paddle pnasnet.pdparams --net pnasnet5_large
    python tools/main.py convert --from cream-pth 14.pth.tar --to neutral cream14.safetensors

Every conversion goes through the neutral form (:class:`common.checkpoint.Checkpoint`, canonical names in
torch layout), so each foreign format needs one importer and one exporter, not one per pair.

Formats
  neutral    ``.safetensors`` written by this toolkit (model, EMA, optimizer, metadata)
  torch      a PyTorch ``torch.save`` file, canonical (= timm / upstream) names; read without torch (a state dict,
             or a training-checkpoint dict: ``state_dict`` + ``state_dict_ema``, ``module.`` prefixes)
  timm       alias of ``torch`` (timm's and Cadene's PNASNet files use the canonical names)
  paddle     a Paddle ``.pdparams`` (``_mean``/``_variance``, Linear ``[in, out]``), a state dict or a dict of them;
             read and written with numpy and pickle only
  cream-pth  upstream Cream ``*.pth.tar`` (``state_dict`` + ``state_dict_ema``, ``module.`` prefixes)
  tf         a TensorFlow checkpoint prefix (PNASNet-5 official layout); needs tensorflow

What each output carries (the summary counts what was written and lists the rest on its ``not written`` line)
  neutral    everything: model, EMA, optimizer states, RNG state, task state, metadata
  torch      the model as a plain state dict; with EMA ``{'state_dict': model, 'state_dict_ema': EMA}`` (the
             timm / upstream Cream training-checkpoint layout, which ``--from torch`` reads back whole).  Written
             with ``torch.save`` through ``torch_impl/serialization.py`` (the only step that needs torch)
  paddle     the same two layouts in Paddle names and layout, written with numpy + pickle (``paddle.load`` reads it)
  tf         the model as TF-slim variables (+ ``global_step`` when known); no EMA
  Optimizer, RNG, task state and metadata go only into neutral files.
Nothing is ever unpickled without an allow-list; outputs are written atomically.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import pickle
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from common import families
from common.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from common.io_utils import atomic_path

# The generic formats; each family brings its own (cream-pth, tf, ...): the registry in common/families.py.
GENERIC_IMPORT_FORMATS = ("neutral", "torch", "timm", "paddle")
IMPORT_FORMATS = GENERIC_IMPORT_FORMATS + families.import_formats()
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
    """A torch state dict, or a training checkpoint (``state_dict`` + ``state_dict_ema``, ``module.`` prefixes):
    model = the plain weights, EMA = ``state_dict_ema`` (what :func:`export_torch` writes reads back whole)."""
    return _import_foreign(path, net, "torch", ("torch_zip", "torch_legacy", "safetensors"))


def import_paddle(path: str, net: str = "", **_) -> Checkpoint:
    """A Paddle ``.pdparams`` state dict, or a dict of them (``state_dict`` + ``state_dict_ema``)."""
    return _import_foreign(path, net, "paddle", ("pickle",))


_KIND_TEXT = {"neutral": "neutral .safetensors", "safetensors": "safetensors file", "torch_zip": "torch.save zip file",
              "torch_legacy": "legacy torch.save file", "pickle": "plain pickle (a Paddle .pdparams)"}
_KIND_FLAG = {"neutral": "neutral", "safetensors": "torch", "torch_zip": "torch", "torch_legacy": "torch",
              "pickle": "paddle"}


def _import_foreign(path: str, net: str, fmt: str, kinds) -> Checkpoint:
    from weights_tools.load_any import foreign_to_neutral, read_foreign, sniff_format

    kind = sniff_format(path)
    if kind not in kinds:
        raise ConversionError(f"{path}: --from {fmt} expects a {' or '.join(_KIND_TEXT[k] for k in kinds)}; the "
                              f"file is a {_KIND_TEXT.get(kind, kind)} (--from {_KIND_FLAG.get(kind, '?')})")
    obj, layout, kind = read_foreign(path, kind)
    ckpt = foreign_to_neutral(obj, layout, path, kind)
    ckpt.meta.update({"source_format": fmt, "source_container": kind})
    return _with_family(ckpt, net, path)


def import_cream_pth(path: str, net: str = "", **_) -> Checkpoint:
    from weights_tools.cream_import import import_cream_checkpoint

    ckpt = import_cream_checkpoint(path, net=net or None)
    ckpt.meta.update({"family": "cream", "name": ckpt.meta["spec"]})
    return ckpt


def import_tf(path: str, net: str = "", drop_background: bool = False, with_aux: bool = False, **_) -> Checkpoint:
    pnasnet = importlib.import_module("weights_tools.pnasnet_convert")
    return pnasnet.import_tf_checkpoint(path, net=net or None, drop_background=drop_background,
                                        with_aux=with_aux or None)


def _family_importer(fmt: str) -> Callable[..., Checkpoint]:
    """The importer a family brings for ``fmt`` (``common/families.py``: ``"module:function"``), looked up when
    called, so that importing this module imports no family's converter."""
    def run(path: str, **kwargs) -> Checkpoint:
        return families.resolve(families.importer_target(fmt))(path, **kwargs)

    run.__name__ = run.__qualname__ = f"import_{fmt.replace('-', '_')}"
    return run


IMPORTERS: Dict[str, Callable[..., Checkpoint]] = {
    "neutral": import_neutral, "torch": import_torch, "timm": import_torch, "paddle": import_paddle,
    **{fmt: _family_importer(fmt) for fmt in families.import_formats()},
}


# ------------------------------------------------------------------------------------------- exporters
@dataclasses.dataclass
class Written:
    """What an exporter put in the file, counted from the object it wrote (not from the source)."""

    model: int                      # model tensors
    values: int                     # numbers in them
    ema: int = 0                    # EMA tensors
    ema_where: str = ""             # where the EMA went, e.g. "'state_dict_ema'"
    layout: str = ""                # the file's top level, e.g. "a plain state dict"
    dropped: List[str] = dataclasses.field(default_factory=list)   # what the source had and the file lacks


def _values(state) -> int:
    return sum(int(np.prod(np.shape(a))) for a in state.values())


def _not_written(ckpt: Checkpoint, ema: bool, meta_keys=()) -> List[str]:
    """What a weights-only file leaves out of ``ckpt``: EMA (unless ``ema``), optimizer, RNG, task state, metadata
    (except ``meta_keys``, which the file carries)."""
    out = []
    if ckpt.ema and not ema:
        out.append(f"EMA ({len(ckpt.ema):,} tensors)")
    for key, opt in sorted(ckpt.optimizers.items()):
        slots = sum(len(per) for per in opt.slots.values())
        out.append(f"optimizer state '{key}' ({opt.name}, step {opt.step}, {slots:,} slot tensors)")
    if ckpt.rng or ckpt.rng_arrays:
        parts = sorted(map(str, ckpt.rng or {})) + ([f"{len(ckpt.rng_arrays)} arrays"] if ckpt.rng_arrays else [])
        out.append(f"RNG state ({', '.join(parts)})")
    if ckpt.extra:
        out.append(f"task state ({', '.join(sorted(map(str, ckpt.extra)))})")
    meta = sorted(str(k) for k in ckpt.meta if k not in meta_keys)
    if meta:
        out.append(f"metadata ({', '.join(meta)})")
    return out


def export_neutral(ckpt: Checkpoint, path: str) -> Written:
    """Everything: model, EMA, optimizer states, RNG, task state, metadata."""
    save_checkpoint(path, ckpt)
    ema = len(ckpt.ema) if ckpt.ema is not None else 0
    return Written(model=len(ckpt.model), values=_values(ckpt.model), ema=ema, ema_where="'__ema__/*'",
                   layout="a neutral checkpoint")


def _state_dicts(model: Dict[str, np.ndarray], ema: Optional[Dict[str, np.ndarray]]):
    """A plain state dict, or with EMA the timm / upstream Cream training-checkpoint layout."""
    if ema is None:
        return dict(model)
    return {"state_dict": dict(model), "state_dict_ema": dict(ema)}


def _written_state_dicts(obj: Dict[str, Any], ckpt: Checkpoint) -> Written:
    if "state_dict_ema" in obj:
        model, ema = obj["state_dict"], obj["state_dict_ema"]
        layout = "{'state_dict', 'state_dict_ema'}: a training-checkpoint dict"
    else:
        model, ema, layout = obj, {}, "a plain state dict"
    return Written(model=len(model), values=_values(model), ema=len(ema), ema_where="'state_dict_ema'",
                   layout=layout, dropped=_not_written(ckpt, ema=bool(ema)))


def export_torch(ckpt: Checkpoint, path: str) -> Written:
    """A ``torch.save`` file (through ``torch_impl/serialization.py``): a plain state dict, or with EMA
    ``{'state_dict': ..., 'state_dict_ema': ...}``.  Optimizer, RNG and metadata are not written (reported)."""
    try:
        from torch_impl.serialization import save_state_dict
    except ImportError as exc:  # torch missing (name 'torch...') or failing on import (name None)
        if exc.name is not None and exc.name.split(".")[0] != "torch":
            raise
        raise ConversionError(f"--to torch writes a torch state dict and needs torch installed "
                              f"(pip install -r requirements-torch.txt; importing it failed: {exc}); --to neutral "
                              "and --to paddle need no framework") from None
    obj = _state_dicts(ckpt.model, ckpt.ema)
    save_state_dict(path, obj)
    return _written_state_dicts(obj, ckpt)


def export_paddle(ckpt: Checkpoint, path: str) -> Written:
    """A ``.pdparams`` that ``paddle.load`` + ``set_state_dict`` accept (paddle names, Linear ``[in, out]``), written
    with numpy and pickle only (no paddle): a plain state dict, or with EMA ``{'state_dict': ..., 'state_dict_ema':
    ...}`` (the Paddle reproduction's layout).  Optimizer, RNG and metadata are not written (reported)."""
    obj = _state_dicts(neutral_to_paddle_state(ckpt.model),
                       neutral_to_paddle_state(ckpt.ema) if ckpt.ema is not None else None)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            pickle.dump(obj, handle, protocol=4)
    return _written_state_dicts(obj, ckpt)


def export_tf(ckpt: Checkpoint, path: str) -> Written:
    """The model as TF-slim variables (one per tensor) and ``global_step`` when the metadata knows it."""
    pnasnet = importlib.import_module("weights_tools.pnasnet_convert")
    pnasnet.export_tf_checkpoint(ckpt, path)
    return Written(model=len(ckpt.model), values=_values(ckpt.model), layout="TF-slim variables",
                   dropped=_not_written(ckpt, ema=False, meta_keys=("tf_global_step", "tf_global_step_dtype")))


EXPORTERS: Dict[str, Callable[[Checkpoint, str], Written]] = {
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
    written = EXPORTERS[dst_format](ckpt, dst)
    _summary(ckpt, written, src_format, src, dst_format, dst, time.perf_counter() - started, log)
    return ckpt


def drop_background_class(ckpt: Checkpoint) -> Checkpoint:
    """1001 -> 1000 classes: drop row 0 (TF ImageNet's background class) of the classifier."""
    from weights_tools.pnasnet_convert import drop_background as _drop

    return _drop(ckpt)


def run(args) -> int:
    convert(args.src_format, args.src, args.dst_format, args.dst, net=args.net, drop_background=args.drop_background,
            with_aux=args.with_aux)
    return 0


def _with_family(ckpt: Checkpoint, net: str, path: str) -> Checkpoint:
    """Record which network the tensors belong to: ``--net`` or recognised from the shapes."""
    from weights_tools.recognise import recognise_net

    family, name = recognise_net(ckpt.model, net, source=path)
    ckpt.meta.update({"family": family, "name": name})
    return ckpt


def _summary(ckpt: Checkpoint, written: Optional[Written], src_format, src, dst_format, dst, seconds, log) -> None:
    """What the output holds, counted from what the exporter wrote, and what it left out."""
    if written is None:  # an exporter that does not report: say so rather than count the source
        written = Written(model=0, values=0, dropped=["unknown (the exporter did not report what it wrote)"])
    skipped = list(ckpt.meta.get("skipped", []))
    if ckpt.meta.get("ignored_tensors"):
        skipped.append(f"{len(ckpt.meta['ignored_tensors'])} num_batches_tracked (torch BN counters)")
    if ckpt.meta.get("ignored_entries"):
        skipped.append("entries not read: " + ", ".join(map(str, ckpt.meta["ignored_entries"])))
    if written.ema:
        ema = f"{written.ema:,} (as {written.ema_where})"
    elif ckpt.ema:
        ema = f"none written (the source has {len(ckpt.ema):,}: see 'not written')"
    else:
        ema = "none"
    rows = [
        ("network", f"{ckpt.meta.get('family', '?')}/{ckpt.meta.get('name', '?')}"),
        ("from", f"{src_format}: {src}"),
        ("to", f"{dst_format}: {dst}" + (f" ({written.layout})" if written.layout else "")),
        ("tensors", f"{written.model:,} ({written.values:,} values)"),
        ("EMA tensors", ema),
        ("skipped", ", ".join(skipped) if skipped else "none"),
        ("not written", ", ".join(written.dropped) if written.dropped else "none"),
        ("time", f"{seconds:.1f}s"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        log(f"  {key.ljust(width)}  {value}")
