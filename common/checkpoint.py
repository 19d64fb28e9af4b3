"""The neutral checkpoint: one safetensors file that both backends read and write.

Layout of one file
  * model tensors under their canonical names, in torch layout (Linear ``[out, in]``, BN
    ``running_mean`` / ``running_var``), as numpy arrays;
  * EMA weights (when the run keeps an EMA) under ``__ema__/<name>``;
  * the slots of each named optimizer (``weights``, ``arch``, ``meta``, ...) under
    ``__optim__/<optimizer>/<slot>/<param name>`` (e.g. ``__optim__/weights/momentum/conv_stem.weight``);
  * extra numpy arrays of RNG state under ``__rng__/<name>``;
  * a task's arrays (the Cream board's images and soft targets) under ``__extra__/<name>``;
  * JSON metadata in the safetensors header: format version, family, spec, config, epoch/step, metrics,
    source framework, the scalar parts of the optimizers and RNG state, and a task's JSON-able ``extra`` state
    (a search's board, a sampler position, a genotype history).

Format version 1 (one optimizer, ``__optim__/<slot>/<param>``) is still read: its optimizer becomes ``weights``.

Writing goes through a temporary file, fsync and rename, so a killed run never leaves a partial file.
Reading uses safetensors only: nothing in a checkpoint can execute code.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from common.io_utils import atomic_path

FORMAT_NAME = "twinnas-neutral"
FORMAT_VERSION = 2
EMA_PREFIX = "__ema__/"
OPTIM_PREFIX = "__optim__/"
RNG_PREFIX = "__rng__/"
EXTRA_PREFIX = "__extra__/"
RESERVED_PREFIXES = (EMA_PREFIX, OPTIM_PREFIX, RNG_PREFIX, EXTRA_PREFIX)
#: the name of the optimizer of the network weights (format version 1 files had only this one)
WEIGHTS_OPTIMIZER = "weights"
SUFFIX = ".safetensors"


class CheckpointError(ValueError):
    """A checkpoint is unreadable or does not fit the model; the message names the file and tensors."""


@dataclasses.dataclass
class OptimizerState:
    """Backend-independent optimizer state: per-parameter slots keyed by canonical parameter name."""

    name: str
    step: int = 0
    slots: Dict[str, Dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    hyper: Dict[str, Any] = dataclasses.field(default_factory=dict)


class Checkpoint:
    """Model tensors, EMA, named optimizer states, RNG state, metadata, a task's JSON-able ``extra`` and its arrays
    (``extra_arrays``).

    ``optimizer=`` (one optimizer, the weights') is accepted for the common case and stored as ``weights``;
    ``optimizers={name: state}`` holds several (a search's ``weights`` + ``arch``, Cream's ``meta``).
    """

    def __init__(self, model: Dict[str, np.ndarray], meta: Optional[Dict[str, Any]] = None,
                 ema: Optional[Dict[str, np.ndarray]] = None, optimizer: Optional[OptimizerState] = None,
                 rng: Optional[Dict[str, Any]] = None, rng_arrays: Optional[Dict[str, np.ndarray]] = None,
                 optimizers: Optional[Dict[str, OptimizerState]] = None, extra: Optional[Dict[str, Any]] = None,
                 extra_arrays: Optional[Dict[str, np.ndarray]] = None):
        self.model = model
        self.meta = {} if meta is None else meta
        self.ema = ema
        self.optimizers: Dict[str, OptimizerState] = dict(optimizers or {})
        if optimizer is not None:
            if WEIGHTS_OPTIMIZER in self.optimizers:
                raise ValueError("Checkpoint: pass the weights optimizer as optimizer= or in optimizers=, not both")
            self.optimizers[WEIGHTS_OPTIMIZER] = optimizer
        self.rng = rng
        self.rng_arrays = {} if rng_arrays is None else rng_arrays
        self.extra: Dict[str, Any] = {} if extra is None else extra
        self.extra_arrays: Dict[str, np.ndarray] = {} if extra_arrays is None else extra_arrays

    @property
    def optimizer(self) -> Optional[OptimizerState]:
        """The weights' optimizer (``optimizers["weights"]``), or None."""
        return self.optimizers.get(WEIGHTS_OPTIMIZER)

    @optimizer.setter
    def optimizer(self, state: Optional[OptimizerState]) -> None:
        if state is None:
            self.optimizers.pop(WEIGHTS_OPTIMIZER, None)
        else:
            self.optimizers[WEIGHTS_OPTIMIZER] = state

    def __repr__(self) -> str:
        return (f"Checkpoint({len(self.model)} model tensors, ema={self.ema is not None}, "
                f"optimizers={sorted(self.optimizers)}, extra={sorted(self.extra)}, meta={sorted(self.meta)})")


def save_checkpoint(path: str, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path`` atomically."""
    from safetensors.numpy import save_file

    tensors: Dict[str, np.ndarray] = {}
    for name, array in ckpt.model.items():
        _check_name(name, path)
        tensors[name] = _as_array(array, name)
    if ckpt.ema is not None:
        for name, array in ckpt.ema.items():
            tensors[EMA_PREFIX + name] = _as_array(array, name)
    optim_meta = {}
    for opt_name, opt in ckpt.optimizers.items():
        for what, value in (("optimizer name", opt_name), *(("optimizer slot name", slot) for slot in opt.slots)):
            if not value or "/" in value:
                raise CheckpointError(f"{path}: {what} {value!r} must be non-empty and may not contain '/'")
        for slot, per_param in opt.slots.items():
            for name, array in per_param.items():
                tensors[f"{OPTIM_PREFIX}{opt_name}/{slot}/{name}"] = _as_array(array, name)
        optim_meta[opt_name] = {"name": opt.name, "step": int(opt.step), "hyper": opt.hyper,
                                "slots": sorted(opt.slots)}
    for name, array in ckpt.rng_arrays.items():
        tensors[RNG_PREFIX + name] = _as_array(array, name)
    for name, array in ckpt.extra_arrays.items():
        tensors[EXTRA_PREFIX + name] = _as_array(array, name)
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "meta": ckpt.meta,
        "optimizers": optim_meta,
        "rng": ckpt.rng,
        "has_ema": ckpt.ema is not None,
        "extra": ckpt.extra,
    }
    try:
        metadata = {"twinnas": json.dumps(header, default=_json_default, sort_keys=True, allow_nan=False)}
    except ValueError as exc:  # NaN / inf in metrics or extra: never written as non-standard JSON
        raise CheckpointError(f"{path}: metadata holds a non-finite number ({exc})") from None
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)


def load_checkpoint(path: str) -> Checkpoint:
    """Read a neutral checkpoint; every failure names ``path``."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(path, framework="numpy") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    if "twinnas" not in metadata:
        raise CheckpointError(
            f"{path}: safetensors file without twinnas metadata; import foreign weights with "
            "`tools/main.py convert` first"
        )
    try:
        header = json.loads(metadata["twinnas"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt metadata header ({exc})") from None
    if header.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: format {header.get('format')!r} is not {FORMAT_NAME!r}")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {version!r} is newer than this code reads ({FORMAT_VERSION})")

    model: Dict[str, np.ndarray] = {}
    ema: Dict[str, np.ndarray] = {}
    rng_arrays: Dict[str, np.ndarray] = {}
    extra_arrays: Dict[str, np.ndarray] = {}
    slots: Dict[str, Dict[str, Dict[str, np.ndarray]]] = {}  # optimizer -> slot -> param -> array
    for name, array in tensors.items():
        if name.startswith(EMA_PREFIX):
            ema[name[len(EMA_PREFIX):]] = array
        elif name.startswith(OPTIM_PREFIX):
            rest = name[len(OPTIM_PREFIX):]
            opt_name = WEIGHTS_OPTIMIZER if version < 2 else rest.partition("/")[0]
            if version >= 2:
                rest = rest.partition("/")[2]
            slot, _, param = rest.partition("/")
            if not slot or not param:
                raise CheckpointError(f"{path}: malformed optimizer tensor name {name!r}")
            slots.setdefault(opt_name, {}).setdefault(slot, {})[param] = array
        elif name.startswith(RNG_PREFIX):
            rng_arrays[name[len(RNG_PREFIX):]] = array
        elif name.startswith(EXTRA_PREFIX):
            extra_arrays[name[len(EXTRA_PREFIX):]] = array
        else:
            model[name] = array
    described = header.get("optimizers") or {}
    if version < 2 and header.get("optimizer"):
        described = {WEIGHTS_OPTIMIZER: header["optimizer"]}
    stray = sorted(set(slots) - set(described))
    if stray:
        raise CheckpointError(f"{path}: optimizer tensors for {stray} without their description in the header")
    optimizers = {}
    for opt_name, opt in described.items():
        per_slot = slots.get(opt_name, {})
        for slot in opt.get("slots", []):
            per_slot.setdefault(slot, {})
        optimizers[opt_name] = OptimizerState(name=opt["name"], step=int(opt["step"]), slots=per_slot,
                                              hyper=opt.get("hyper", {}))
    return Checkpoint(
        model=model,
        meta=header.get("meta", {}),
        ema=ema if header.get("has_ema") else None,
        optimizers=optimizers,
        rng=header.get("rng"),
        rng_arrays=rng_arrays,
        extra=header.get("extra") or {},
        extra_arrays=extra_arrays,
    )


def read_meta(path: str) -> Dict[str, Any]:
    """The metadata (``meta``) of a neutral checkpoint without reading its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="numpy") as handle:
            header = json.loads((handle.metadata() or {})["twinnas"])
    except Exception as exc:  # noqa: BLE001 - any unreadable header is the same error for the caller
        raise CheckpointError(f"{path}: no readable twinnas metadata ({type(exc).__name__}: {exc})") from None
    return header.get("meta", {})


@dataclasses.dataclass
class StateReport:
    """What a strict load found: names missing, unexpected, or with the wrong shape."""

    missing: List[str]
    unexpected: List[str]
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]  # name, expected shape, found shape

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def format(self, source: str, limit: int = 20) -> str:
        lines = [f"{source}: the checkpoint does not fit the model"]
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                shown = ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")
                lines.append(f"  {title} ({len(items)}): {shown}")
        if self.mismatched:
            lines.append(f"  wrong shape ({len(self.mismatched)}):")
            for name, want, got in self.mismatched[:limit]:
                lines.append(f"    {name}: model expects {list(want)}, checkpoint has {list(got)}")
        return "\n".join(lines)


def compare_state(expected: Mapping[str, Tuple[int, ...]], provided: Mapping[str, Any]) -> StateReport:
    """Compare the model's ``{name: shape}`` with the checkpoint's tensors."""
    missing = sorted(set(expected) - set(provided))
    unexpected = sorted(set(provided) - set(expected))
    mismatched = []
    for name in sorted(set(expected) & set(provided)):
        got = tuple(np.shape(provided[name]))
        want = tuple(expected[name])
        if got != want:
            mismatched.append((name, want, got))
    return StateReport(missing, unexpected, mismatched)


def check_state(expected: Mapping[str, Tuple[int, ...]], provided: Mapping[str, Any], source: str) -> None:
    """Raise :class:`CheckpointError` unless ``provided`` has exactly the expected names and shapes."""
    report = compare_state(expected, provided)
    if not report.ok:
        raise CheckpointError(report.format(source))


def numpy_rng_state(rng: np.random.Generator) -> Dict[str, Any]:
    return rng.bit_generator.state


def restore_numpy_rng(state: Dict[str, Any]) -> np.random.Generator:
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def _as_array(array: Any, name: str) -> np.ndarray:
    out = np.asarray(array, order="C")  # keeps 0-d arrays 0-d (ascontiguousarray would make them 1-d)
    if out.dtype == object:
        raise CheckpointError(f"tensor {name!r} is not numeric")
    return out.copy() if not out.flags.owndata else out


def _check_name(name: str, path: str) -> None:
    if any(name.startswith(prefix) for prefix in RESERVED_PREFIXES):
        raise CheckpointError(f"{path}: model tensor name {name!r} uses a reserved prefix")


def _json_default(value: Any):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in checkpoint metadata")


def iter_model_names(ckpt: Checkpoint) -> Iterable[str]:
    return iter(sorted(ckpt.model))
