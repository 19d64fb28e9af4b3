"""``MODEL.WEIGHTS`` from any file this toolkit writes or imports, recognised by its content (never its name).

    load_weights(path, family="", net="") -> common.checkpoint.Checkpoint

What a file may be (the first bytes decide):
  * a neutral ``.safetensors`` (``twinnas`` metadata): read with :func:`common.checkpoint.load_checkpoint`, as is;
  * any other ``.safetensors`` (e.g. a timm hub file): a bare state dict, torch layout (Paddle layout when its BN
    statistics are named ``_mean``/``_variance``);
  * a ``torch.save`` file, zip (torch >= 1.6) or legacy (torch <= 1.5): ``.pt`` / ``.pth`` state dicts, and
    training checkpoints such as upstream Cream's ``.pth.tar`` (``state_dict`` + ``state_dict_ema``, ``module.``
    prefixes, ``num_batches_tracked``) or what ``convert --to torch`` writes;
  * a pickle: a Paddle ``.pdparams`` (``_mean``/``_variance``, Linear ``[in, out]``), bare or as the dict of state
    dicts the Paddle reproduction (and ``convert --to paddle`` with EMA) writes.

The result is the neutral form: canonical names in torch layout (Paddle's BN names and Linear layout converted,
``module.`` prefixes removed, torch's ``num_batches_tracked`` counters dropped and listed in ``meta['skipped']``),
``model`` = the plain weights (``state_dict``; the EMA weights when the file holds nothing else) and ``ema`` = the
EMA weights when the file has them.  ``meta`` names the family and network when the tensors are one this toolkit
knows (``family``/``net`` are hints; a file of another family is refused), the source format, and the entries of
a training checkpoint that are not weights (optimizer, epoch, args: not read into the result).

Pickles are read with :mod:`weights_tools.safe_unpickle`'s allow-listed unpickler: nothing in a file is executed,
and neither torch nor paddle (nor TensorFlow) is imported, so this works under either backend with the other
framework absent.  Every failure is a :class:`common.checkpoint.CheckpointError` whose one-line message names the
file and what was expected.
"""
from __future__ import annotations

import json
import os
import re
import struct
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from common.checkpoint import Checkpoint, CheckpointError, load_checkpoint

__all__ = ["load_weights", "sniff_format", "read_foreign", "split_state_dicts", "EXPECTED", "PLAIN_KEYS", "EMA_KEYS"]

#: what a weights file may be, for error messages
EXPECTED = ("a neutral .safetensors, a torch .pt/.pth/.pth.tar (torch.save, zip or legacy) or a Paddle .pdparams "
            "pickle")
#: keys under which training checkpoints keep the plain and the EMA state dicts (timm, upstream Cream, this toolkit)
PLAIN_KEYS = ("state_dict", "model", "model_state_dict")
EMA_KEYS = ("state_dict_ema", "model_ema")
_PADDLE_BN_LEAVES = ("_mean", "_variance")
_PADDLE_NAME_TABLE_KEY = "StructuredToParameterName@@"
_MAX_SAFETENSORS_HEADER = 100 * 2**20


# ------------------------------------------------------------------------------------------------ sniffing
def _head(path: str, size: int = 512) -> bytes:
    if os.path.isdir(path):
        if any(name.endswith(".index") for name in os.listdir(path)):
            raise CheckpointError(f"{path}: a folder holding a TensorFlow checkpoint, not a weights file; convert "
                                  "it first: tools/main.py convert --from tf <folder>/model.ckpt --to neutral "
                                  "out.safetensors")
        raise CheckpointError(f"{path}: a folder, not a weights file (expected {EXPECTED})")
    if not os.path.isfile(path):
        if os.path.isfile(path + ".index"):
            raise CheckpointError(f"{path}: a TensorFlow checkpoint prefix, which needs TensorFlow to read; convert "
                                  f"it first: tools/main.py convert --from tf {path} --to neutral out.safetensors")
        raise CheckpointError(f"weights file not found: {path}")
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the weights file ({exc.strerror or exc})") from None


def _safetensors_header(path: str, head: bytes) -> Optional[Dict[str, Any]]:
    """The JSON header when ``head`` starts a safetensors file (u64 little-endian length, then ``{``), else None."""
    if len(head) < 9 or head[8:9] != b"{":
        return None
    (length,) = struct.unpack("<Q", head[:8])
    size = os.path.getsize(path)
    if length > _MAX_SAFETENSORS_HEADER:
        return None
    if 8 + length > size:
        raise CheckpointError(f"{path}: truncated safetensors file (its header needs {8 + length:,} bytes, the file "
                              f"has {size:,})")
    with open(path, "rb") as handle:
        handle.seek(8)
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (a {type(header).__name__}, not an object)")
    try:
        end = max([8 + length] + [8 + length + int(v["data_offsets"][1]) for k, v in header.items()
                                  if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v])
    except (TypeError, ValueError, IndexError, KeyError):
        raise CheckpointError(f"{path}: corrupt safetensors header (bad data_offsets)") from None
    if end > size:
        raise CheckpointError(f"{path}: truncated safetensors file (its tensors need {end:,} bytes, the file has "
                              f"{size:,})")
    return header


def sniff_format(path: str) -> str:
    """``'neutral'``, ``'safetensors'`` (without twinnas metadata), ``'torch_zip'``, ``'torch_legacy'`` or
    ``'pickle'`` (Paddle), from the file's first bytes; :class:`CheckpointError` for anything else."""
    from weights_tools.safe_unpickle import detect_pickle_format  # numpy + stdlib only

    path = os.fspath(path)
    head = _head(path)
    if not head:
        raise CheckpointError(f"{path}: empty file (expected {EXPECTED})")
    header = _safetensors_header(path, head)
    if header is not None:
        meta = header.get("__metadata__") or {}
        return "neutral" if isinstance(meta, dict) and "twinnas" in meta else "safetensors"
    if head[:4] == b"PK\x03\x04":
        return "torch_zip"
    kind = detect_pickle_format(path)
    if kind == "tar":
        raise CheckpointError(f"{path}: a tar archive (the torch < 1.0 format), which is not read; re-save it with "
                              f"torch >= 1.0 (expected {EXPECTED})")
    if kind == "torch_legacy":
        return kind
    # a pickle: protocol 2+ starts with PROTO (0x80); protocol 0/1 with MARK, EMPTY_DICT, EMPTY_LIST or GLOBAL
    if (len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5) or head[:1] in (b"(", b"}", b"]") or (
            re.match(rb"c[A-Za-z_][\w.]*\n[A-Za-z_]\w*\n", head)):  # protocol 0 GLOBAL: 'c<module>\n<name>\n'
        return "pickle"
    shown = head[:8].hex(" ")
    hint = " (an HDF5 file, e.g. a Keras .h5?)" if head[1:4] == b"HDF" else ""
    raise CheckpointError(f"{path}: unknown weights format{hint}: first bytes {shown}; expected {EXPECTED}")


# ------------------------------------------------------------------------------------------------ reading
def read_foreign(path: str, kind: Optional[str] = None) -> Tuple[Any, str, str]:
    """Read a foreign file safely: ``(top-level object, layout, kind)``; layout ``'torch'`` or ``'paddle'``."""
    from weights_tools.safe_unpickle import load_paddle_pickle, load_torch_checkpoint

    path = os.fspath(path)
    kind = kind or sniff_format(path)
    if kind in ("torch_zip", "torch_legacy"):
        return load_torch_checkpoint(path), "torch", kind
    if kind == "pickle":
        return load_paddle_pickle(path), "paddle", kind
    if kind == "safetensors":
        state = _read_safetensors(path)
        paddle = any(name.rpartition(".")[2] in _PADDLE_BN_LEAVES for name in state)
        return state, "paddle" if paddle else "torch", kind
    raise CheckpointError(f"{path}: a {kind} file is not a foreign checkpoint")


def _read_safetensors(path: str) -> Dict[str, np.ndarray]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="numpy") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(
        isinstance(k, str) and (isinstance(v, np.ndarray) or k == _PADDLE_NAME_TABLE_KEY) for k, v in value.items())


def split_state_dicts(obj: Any, path: str) -> Tuple[Optional[Mapping], Optional[Mapping], str, str, List[str]]:
    """A file's top-level object -> ``(plain state dict, EMA state dict, plain key, EMA key, other entries)``.

    A bare state dict is the plain weights; a training checkpoint keeps them under :data:`PLAIN_KEYS` /
    :data:`EMA_KEYS`; every other top-level entry (optimizer, epoch, args, ...) is listed, not read."""
    if _is_state_dict(obj):
        return obj, None, "", "", []
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: the file holds a {type(obj).__name__}, not a state dict or a checkpoint dict "
                              f"(expected {EXPECTED})")
    plain_key = next((k for k in PLAIN_KEYS if k in obj), "")
    ema_key = next((k for k in EMA_KEYS if k in obj), "")
    if not plain_key and not ema_key:
        arrays = sum(isinstance(v, np.ndarray) for v in obj.values())
        keys = sorted(map(str, obj))[:8]
        what = (f"{arrays} arrays among {len(obj)} entries, e.g. {keys}" if arrays else f"top-level keys {keys}")
        raise CheckpointError(f"{path}: neither a state dict of arrays nor a checkpoint dict with "
                              f"{'/'.join(repr(k) for k in PLAIN_KEYS + EMA_KEYS)} ({what})")
    plain, ema = (obj[plain_key] if plain_key else None), (obj[ema_key] if ema_key else None)
    for key, value in ((plain_key, plain), (ema_key, ema)):
        if key and not _is_state_dict(value):
            raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}"
                                  f"{' with non-array values' if isinstance(value, Mapping) else ''}, not a state "
                                  "dict of arrays")
    others = sorted(str(k) for k in obj if k not in (plain_key, ema_key))
    return plain, ema, plain_key, ema_key, others


def _normalise(state: Mapping, layout: str, source: str) -> Tuple[Dict[str, np.ndarray], List[str]]:
    from weights_tools.cream_import import normalise_cream_state  # the one rule: module. prefix, paddle layout

    state = {k: v for k, v in state.items() if k != _PADDLE_NAME_TABLE_KEY}
    return normalise_cream_state(state, layout, source)


def foreign_to_neutral(obj: Any, layout: str, path: str, kind: str) -> Checkpoint:
    """A foreign file's top-level object -> neutral :class:`Checkpoint` (no recognition of the network)."""
    plain_raw, ema_raw, plain_key, ema_key, others = split_state_dicts(obj, path)
    skipped: List[str] = []
    states: List[Optional[Dict[str, np.ndarray]]] = []
    for key, raw in ((plain_key or "state dict", plain_raw), (ema_key, ema_raw)):
        state = None
        if raw is not None:
            state, dropped = _normalise(raw, layout, f"{path} [{key}]")
            if dropped:
                skipped.append(f"{key}: {len(dropped)} num_batches_tracked (torch BN counters)")
        states.append(state)
    plain, ema = states
    if plain is not None and ema is not None and sorted(plain) != sorted(ema):
        only = sorted(set(plain) ^ set(ema))
        raise CheckpointError(f"{path}: {plain_key!r} and {ema_key!r} hold different tensors (e.g. {only[:3]})")
    if others:
        skipped.append("entries not read: " + ", ".join(others))
    model = plain if plain is not None else ema
    meta = {
        "source": path, "source_format": kind, "source_framework": layout,
        "model_weights": plain_key or ("state dict" if ema is None else f"{ema_key} (the file has no plain weights)"),
        "skipped": skipped,
    }
    return Checkpoint(model=model, meta=meta, ema=ema if plain is not None else None)


def _recognise(model: Mapping[str, np.ndarray], net: str, path: str) -> Tuple[str, str]:
    from weights_tools.recognise import recognise_net

    for hint in ((net, "") if net else ("",)):
        try:
            return recognise_net(model, hint, source=path)
        except CheckpointError:
            continue
    return "", ""


# ------------------------------------------------------------------------------------------------ the entry point
def load_weights(path: str, family: str = "", net: str = "") -> Checkpoint:
    """Read weights from ``path`` (any format above, recognised by content) as a neutral :class:`Checkpoint`.

    ``family`` (``MODEL.FAMILY``) refuses a file whose tensors (or metadata) are another family's; ``net``
    (``MODEL.NAME``) helps recognition.  Whether the tensors fit the model is for the strict load that follows
    (``backend.load_neutral``), which names every missing, unexpected or wrong-shape tensor."""
    path = os.fspath(path)
    kind = sniff_format(path)
    if kind == "neutral":
        ckpt = load_checkpoint(path)
        found = str(ckpt.meta.get("family") or "")
        if family and found and found != family:
            raise CheckpointError(f"{path}: a checkpoint of {found}/{ckpt.meta.get('name', '?')}, not of a {family} "
                                  "network (MODEL.FAMILY)")
        return ckpt
    obj, layout, kind = read_foreign(path, kind)
    ckpt = foreign_to_neutral(obj, layout, path, kind)
    found, name = _recognise(ckpt.model, net, path)
    if family and found and found != family:
        raise CheckpointError(f"{path}: the tensors are {found}/{name} weights, not a {family} network "
                              "(MODEL.FAMILY)")
    if found:
        ckpt.meta.update({"family": found, "name": name})
    return ckpt
