"""Import upstream Cream of the Crop checkpoints into the neutral checkpoint.

Sources
  * upstream torch files (``14.pth.tar`` ... ``604.pth.tar``, timm 0.1.20 ``CheckpointSaver`` layout): a dict with
    ``state_dict`` and ``state_dict_ema`` (keys possibly prefixed ``module.``), ``epoch``, ``arch``,
    ``optimizer``, ``args`` (the yacs config), ``version``, ``metric``; zip or legacy ``torch.save`` format;
  * the Paddle reproduction's ``.pdparams`` (the same dict saved with ``paddle.save``, or a bare state dict):
    BatchNorm statistics named ``_mean`` / ``_variance`` and Linear weights stored ``[in, out]``;
  * a bare state dict in either framework.

Files are read with :mod:`weights_tools.safe_unpickle` (numpy + standard library: no torch, no paddle, nothing from
the file is executed).  The tensors are checked strictly against ``expected_state_shapes`` of the child net:
every target tensor filled, every source tensor used once or explicitly ignored (``num_batches_tracked``), shapes
equal; errors name the tensor.  The result is written atomically, so a failed import leaves no output file.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from common.checkpoint import Checkpoint, CheckpointError, check_state, compare_state, save_checkpoint
from common.specs.cream import (
    NET_NAMES, RELEASED_NETS, CreamNetSpec, expected_state_shapes, net_name, released_net_spec,
)
from weights_tools.safe_unpickle import detect_pickle_format, load_paddle_pickle, load_torch_checkpoint

__all__ = ["CreamImportError", "import_cream_checkpoint", "detect_cream_net", "normalise_cream_state",
           "read_cream_file", "IGNORED_SUFFIXES"]

#: source tensors that are dropped on purpose (torch BN's step counter has no role in Cream: momentum is fixed)
IGNORED_SUFFIXES = ("num_batches_tracked",)
_PADDLE_BN = {"_mean": "running_mean", "_variance": "running_var"}
_MODEL_KEYS = ("state_dict", "state_dict_ema")


class CreamImportError(CheckpointError):
    """The file is not a Cream checkpoint that fits the requested child net; the message names file and tensor."""


def read_cream_file(path: str) -> Tuple[Dict[str, Any], str, str]:
    """Read ``path`` safely: returns ``(top-level object, framework, format)`` with framework ``'torch'`` or
    ``'paddle'`` and format ``'torch_zip'``, ``'torch_legacy'`` or ``'pickle'``."""
    fmt = detect_pickle_format(path)
    if fmt in ("torch_zip", "torch_legacy", "tar"):
        return load_torch_checkpoint(path), "torch", fmt
    return load_paddle_pickle(path), "paddle", fmt


def normalise_cream_state(state: Mapping[str, Any], framework: str, source: str) -> Tuple[Dict[str, np.ndarray],
                                                                                          List[str]]:
    """Source state dict -> canonical torch-layout names.  Returns ``(state, ignored names)``.

    ``module.`` prefixes (DataParallel/DDP) are removed, ``num_batches_tracked`` is ignored, and for Paddle files
    BN ``_mean``/``_variance`` become ``running_mean``/``running_var`` and 2-D ``.weight`` arrays (Linear, the
    only 2-D weights in Cream's nets) are transposed from ``[in, out]`` to ``[out, in]``.
    """
    if not isinstance(state, Mapping):
        raise CreamImportError(f"{source}: expected a state dict, got a {type(state).__name__}")
    out: Dict[str, np.ndarray] = {}
    origin: Dict[str, str] = {}
    ignored: List[str] = []
    for name, value in state.items():
        if not isinstance(name, str):
            raise CreamImportError(f"{source}: state dict key {name!r} is not a string")
        if name.rsplit(".", 1)[-1] in IGNORED_SUFFIXES:
            ignored.append(name)
            continue
        if not isinstance(value, np.ndarray):
            raise CreamImportError(f"{source}: tensor {name!r} is a {type(value).__name__}, not an array")
        target = name[len("module."):] if name.startswith("module.") else name
        if framework == "paddle":
            head, _, leaf = target.rpartition(".")
            if leaf in _PADDLE_BN:
                target = f"{head}.{_PADDLE_BN[leaf]}" if head else _PADDLE_BN[leaf]
            if leaf == "weight" and value.ndim == 2:
                value = np.ascontiguousarray(value.T)
        if target in out:
            raise CreamImportError(f"{source}: tensors {origin[target]!r} and {name!r} both map to {target!r}")
        out[target] = value
        origin[target] = name
    return out, ignored


def _num_classes(state: Mapping[str, np.ndarray]) -> int:
    bias = state.get("classifier.bias")
    return int(bias.shape[0]) if isinstance(bias, np.ndarray) and bias.ndim == 1 and bias.shape[0] > 0 else 1000


def detect_cream_net(state: Mapping[str, Any], framework: str = "torch", source: str = "<state>") -> str:
    """Which released child net (``'cream14'`` ... ``'cream604'``, official-builder shapes) ``state`` is.

    ``state`` may carry ``module.`` prefixes, ``num_batches_tracked`` entries or Paddle names/layout.  The
    classifier width is taken from the state (any number of classes).  Raises :class:`CreamImportError` listing
    every candidate and why it does not fit.
    """
    neutral, _ = normalise_cream_state(state, framework, source)
    classes = _num_classes(neutral)
    reasons = []
    for name in NET_NAMES:
        report = compare_state(expected_state_shapes(released_net_spec(name, num_classes=classes)), neutral)
        if report.ok:
            return name
        first = (report.missing or report.unexpected or [m[0] for m in report.mismatched])[0]
        reasons.append(f"  {name}: {len(report.missing)} missing, {len(report.unexpected)} unexpected, "
                       f"{len(report.mismatched)} wrong shape (first: {first})")
    raise CreamImportError(f"{source}: the state dict ({len(neutral)} tensors) is none of the released Cream child "
                           "nets (official builder); candidates:\n" + "\n".join(reasons))


def _split_checkpoint(obj: Any, source: str) -> Tuple[Optional[Mapping], Optional[Mapping], Dict[str, Any]]:
    """-> (plain state dict, EMA state dict, other top-level entries)."""
    if not isinstance(obj, Mapping):
        raise CreamImportError(f"{source}: the file holds a {type(obj).__name__}, not a checkpoint dict")
    if any(key in obj for key in _MODEL_KEYS):
        plain, ema = obj.get("state_dict"), obj.get("state_dict_ema")
        for key, value in (("state_dict", plain), ("state_dict_ema", ema)):
            if value is not None and not isinstance(value, Mapping):
                raise CreamImportError(f"{source}: {key!r} is a {type(value).__name__}, not a state dict")
        others = {k: v for k, v in obj.items() if k not in _MODEL_KEYS}
        return plain, ema, others
    if obj and all(isinstance(v, np.ndarray) for v in obj.values()):
        return obj, None, {}  # a bare state dict
    raise CreamImportError(f"{source}: neither a checkpoint dict with 'state_dict'/'state_dict_ema' nor a bare state "
                           f"dict (top-level keys: {sorted(map(str, obj))[:10]})")


def _scalar(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def import_cream_checkpoint(src: str, dst: Optional[str] = None, net: Optional[str] = None, use_ema: bool = True,
                            honour_single_block_choices: bool = False,
                            spec: Optional[CreamNetSpec] = None) -> Checkpoint:
    """Import an upstream Cream checkpoint (torch ``.pth.tar``/``.pth`` or Paddle ``.pdparams``) as a neutral
    :class:`~common.checkpoint.Checkpoint`, and write it to ``dst`` (atomically) when given.

    ``net`` names the child net (``'cream14'``, ``'14'``, ...); ``None`` detects it with :func:`detect_cream_net`.
    ``spec`` overrides both (any path built with ``build_child_spec``).  ``model`` holds the EMA weights
    (``use_ema=True``, what upstream evaluates; the plain weights when the file has no EMA) or the plain weights
    (``use_ema=False``); ``ema`` holds the EMA weights when the file has them.  Both are checked strictly
    against ``expected_state_shapes(spec)``.
    """
    src = os.fspath(src)
    source = src
    obj, framework, fmt = read_cream_file(src)  # ForeignCheckpointError / UnsafePickleError name the file
    plain_raw, ema_raw, others = _split_checkpoint(obj, source)
    ignored: List[str] = []
    plain = ema = None
    if plain_raw is not None:
        plain, dropped = normalise_cream_state(plain_raw, framework, f"{source} [state_dict]")
        ignored += [f"state_dict/{n}" for n in dropped]
    if ema_raw is not None:
        ema, dropped = normalise_cream_state(ema_raw, framework, f"{source} [state_dict_ema]")
        ignored += [f"state_dict_ema/{n}" for n in dropped]
    reference = ema if ema is not None else plain
    if reference is None:
        raise CreamImportError(f"{source}: the checkpoint has neither 'state_dict' nor 'state_dict_ema'")

    if spec is None:
        if net is None:
            name = detect_cream_net(reference, "torch", source)  # already normalised
        else:
            try:
                name = net_name(net)
            except KeyError as exc:
                raise CreamImportError(f"{source}: {exc.args[0]}") from None
        spec = released_net_spec(name, honour_single_block_choices=honour_single_block_choices,
                                 num_classes=_num_classes(reference))
    expected = expected_state_shapes(spec)
    if plain is not None:
        check_state(expected, plain, f"{source} [state_dict]")
    if ema is not None:
        check_state(expected, ema, f"{source} [state_dict_ema]")

    if use_ema and ema is not None:
        model, model_weights = ema, "state_dict_ema"
    elif plain is not None:
        model, model_weights = plain, "state_dict" + (" (the file has no EMA)" if use_ema else "")
    else:
        raise CreamImportError(f"{source}: plain weights requested (use_ema=False) but the file has only "
                               "'state_dict_ema'")
    model = {name: model[name] for name in expected}  # canonical order
    ema_out = {name: ema[name] for name in expected} if ema is not None else None
    meta = {
        "family": "cream",
        "spec": spec.name or "custom",
        "arch_list": [list(stage) for stage in spec.arch_list],
        "honour_single_block_choices": spec.honour_single_block_choices,
        "num_classes": spec.num_classes,
        "image_size": spec.image_size,
        "source_file": os.path.abspath(src),
        "source_framework": framework,
        "source_format": fmt,
        "source_epoch": _scalar(others.get("epoch")),
        "source_arch": _scalar(others.get("arch")),
        "model_weights": model_weights,
        "ignored_tensors": ignored,
        "ignored_entries": sorted(str(k) for k in others if k not in ("epoch", "arch")),
    }
    checkpoint = Checkpoint(model=model, meta=meta, ema=ema_out)
    if dst is not None:
        save_checkpoint(os.fspath(dst), checkpoint)
    return checkpoint


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Import an upstream Cream checkpoint into the neutral format.")
    parser.add_argument("src", help="upstream .pth.tar / .pth / .pdparams")
    parser.add_argument("dst", help="neutral .safetensors output")
    parser.add_argument("--net", choices=NET_NAMES + tuple(n[len("cream"):] for n in RELEASED_NETS),
                        help="child net (default: detected from the shapes)")
    parser.add_argument("--plain", action="store_true", help="use state_dict instead of state_dict_ema as the model")
    args = parser.parse_args(argv)
    try:
        ckpt = import_cream_checkpoint(args.src, args.dst, net=args.net, use_ema=not args.plain)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.dst}: {ckpt.meta['spec']} ({len(ckpt.model)} tensors, model = {ckpt.meta['model_weights']}, "
          f"epoch {ckpt.meta['source_epoch']})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
