"""Read pickled checkpoints (torch ``.pth``/``.pth.tar``, Paddle ``.pdparams``) without torch, without paddle and
without running any code from the file.

A pickle is a small program: its ``GLOBAL``/``STACK_GLOBAL`` opcodes name any importable callable and ``REDUCE``
calls it, which is how a crafted checkpoint runs ``os.system``.  Here every global the file names is looked up
in an allow-list that maps the few names genuine checkpoints use to *our own* functions and stand-in classes
(never the real torch/numpy callables); any other name raises :class:`UnsafePickleError` at the opcode that names
it, so nothing the file asks for ever runs.  Tensors come back as numpy arrays.

Formats
  * torch zip (torch >= 1.6): ``<record>/data.pkl`` + ``<record>/data/<key>`` raw storages, persistent ids
    ``('storage', storage_type, key, location, numel)``, ``<record>/byteorder`` (little when absent);
  * torch legacy (``_use_new_zipfile_serialization=False``, torch <= 1.5, e.g. upstream Cream's torch 1.2
    files): pickles of the magic number, the protocol version and the system info, then the main pickle with
    persistent ids ``('storage', storage_type, key, location, numel, view_metadata)``, a pickled list of storage
    keys, and each storage's bytes preceded by its element count (int64);
  * Paddle ``.pdparams`` / ``paddle.save`` pickles: ``{name: numpy.ndarray, 'StructuredToParameterName@@': {...}}``
    (numpy 1.x ``numpy.core`` and 2.x ``numpy._core`` paths), nested objects with tensors saved as
    ``(name, ndarray)`` tuples, and the ``'UnpackBigParamInfor@@'`` split-array form of protocol 2/3 files.

bfloat16 tensors come back as float32 (an exact widening: numpy has no bfloat16).
"""
from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import sys
import zipfile
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from common.checkpoint import CheckpointError

__all__ = [
    "ForeignCheckpointError", "UnsafePickleError", "PlainNamespace", "PlainConfig",
    "load_torch_checkpoint", "load_pdparams", "load_paddle_pickle", "detect_pickle_format",
    "PADDLE_NAME_TABLE_KEY", "PADDLE_UNPACK_KEY",
]

PADDLE_NAME_TABLE_KEY = "StructuredToParameterName@@"
PADDLE_UNPACK_KEY = "UnpackBigParamInfor@@"  # sic: Paddle's spelling
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
TORCH_LEGACY_PROTOCOL = 1001
_MAX_DEPTH = 10_000


class ForeignCheckpointError(CheckpointError):
    """A foreign checkpoint file is unreadable (truncated, corrupt, not the expected format); names the file."""


class UnsafePickleError(ForeignCheckpointError):
    """The file's pickle names a global that genuine checkpoints never need; nothing from the file was run."""

    def __init__(self, path: str, global_name: str, why: str = ""):
        self.path = path
        self.global_name = global_name
        detail = f" ({why})" if why else ""
        super().__init__(
            f"{path}: refused to unpickle global {global_name!r}{detail}: it is not on the allow-list of data "
            "types found in weight checkpoints, so the file was not loaded and nothing in it was executed")


# ----------------------------------------------------------------------------------------------------------------
# Stand-ins for the classes checkpoints pickle
# ----------------------------------------------------------------------------------------------------------------

class PlainNamespace(dict):
    """What an ``argparse.Namespace`` in a checkpoint becomes: a dict that also allows attribute access."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = state[0]
        if state is None:
            return
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"argparse.Namespace state is a {type(state).__name__}, not a dict")
        self.update(state)


class PlainConfig(dict):
    """What a yacs ``CfgNode`` in a checkpoint becomes: a plain dict of its keys (yacs' bookkeeping attributes
    such as ``__immutable__`` are dropped)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setstate__(self, state: Any) -> None:
        pass


class _NDArrayType:
    """Marker standing for ``numpy.ndarray`` in ``_reconstruct(numpy.ndarray, ...)``."""


class _ArrayStub:
    """Result of numpy's ``_reconstruct``; ``__setstate__`` records the array state, resolved later."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _DTypeStub:
    __slots__ = ("spec", "state")

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.state = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _TorchStorageType:
    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str) -> None:
        self.name = name
        self.dtype = dtype


class _TorchDType:
    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str) -> None:
        self.name = name
        self.dtype = dtype


class _StorageRef:
    """One storage from the file (not read yet): root key, dtype, element offset and count within the root."""

    __slots__ = ("key", "dtype", "offset", "numel")

    def __init__(self, key: str, dtype: str, offset: int, numel: int) -> None:
        self.key, self.dtype, self.offset, self.numel = key, dtype, offset, numel


class _LazyTensor:
    __slots__ = ("storage", "offset", "size", "stride", "dtype")

    def __init__(self, storage: _StorageRef, offset: int, size: Tuple[int, ...], stride: Tuple[int, ...],
                 dtype: Optional[str] = None) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.dtype = dtype or storage.dtype


# numpy dtype strings per torch storage / dtype name.  'bfloat16' is widened to float32 when read.
_TORCH_STORAGES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8",
}
_TORCH_DTYPES = {
    "float32": "float32", "float": "float32", "float64": "float64", "double": "float64", "float16": "float16",
    "half": "float16", "bfloat16": "bfloat16", "int64": "int64", "long": "int64", "int32": "int32", "int": "int32",
    "int16": "int16", "short": "int16", "int8": "int8", "uint8": "uint8", "bool": "bool",
    "complex64": "complex64", "cfloat": "complex64", "complex128": "complex128", "cdouble": "complex128",
    "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
}
_ITEMSIZE = {"bfloat16": 2}

# py2 module names that protocol <= 2 pickles may carry (what pickle's fix_imports maps)
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _itemsize(dtype: str) -> int:
    return _ITEMSIZE.get(dtype) or np.dtype(dtype).itemsize


# ----------------------------------------------------------------------------------------------------------------
# Allowed callables: our own functions, validating their arguments
# ----------------------------------------------------------------------------------------------------------------

def _rebuild_tensor(storage, storage_offset, size, stride):
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    return _LazyTensor(storage, _as_int(storage_offset), _int_tuple(size), _int_tuple(stride))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    tensor = _rebuild_tensor(storage, storage_offset, size, stride)
    if not isinstance(dtype, _TorchDType):
        raise pickle.UnpicklingError("_rebuild_tensor_v3 without a torch dtype")
    tensor.dtype = dtype.dtype
    return tensor


def _rebuild_parameter(data, requires_grad=True, backward_hooks=None):
    if not isinstance(data, _LazyTensor):
        raise pickle.UnpicklingError("a parameter rebuilt from something that is not a tensor")
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return _rebuild_parameter(data)


def _as_int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise pickle.UnpicklingError(f"expected an int, got {type(value).__name__}")
    return value


def _int_tuple(values) -> Tuple[int, ...]:
    if not isinstance(values, (tuple, list)):
        raise pickle.UnpicklingError(f"expected a tuple of ints, got {type(values).__name__}")
    return tuple(_as_int(v) for v in values)


def _numpy_reconstruct(subtype, shape, typecode):
    if subtype is not _NDArrayType:
        raise pickle.UnpicklingError("numpy _reconstruct of a class other than numpy.ndarray")
    return _ArrayStub()


def _numpy_dtype(spec, align=False, copy=False):
    if not isinstance(spec, str):
        raise pickle.UnpicklingError(f"numpy dtype spec must be a string, got {type(spec).__name__}")
    return _DTypeStub(spec)


def _numpy_scalar(dtype, data=None):
    resolved = _resolve_dtype(dtype)
    raw = _raw_bytes(data)
    if len(raw) != resolved.itemsize:
        raise pickle.UnpicklingError(f"numpy scalar of dtype {resolved} with {len(raw)} bytes")
    return np.frombuffer(raw, dtype=resolved)[0].copy()


def _numpy_frombuffer(buffer, dtype, shape, order="C"):
    stub = _ArrayStub()
    stub.state = (1, tuple(shape), dtype, order == "F", bytes(buffer))
    return stub


def _codecs_encode(text, encoding="utf-8", errors="strict"):
    # protocol-2 pickles carry ``bytes`` as _codecs.encode(<latin-1 text>, 'latin1')
    if not isinstance(text, str) or str(encoding).lower().replace("-", "").replace("_", "") not in ("latin1",
                                                                                                   "iso88591"):
        raise pickle.UnpicklingError("_codecs.encode is allowed only for latin-1 text (protocol-2 bytes)")
    return text.encode("latin-1")


def _reconstructor(cls, base, state):
    # protocol 0/1 form of ``object.__reduce_ex__``; only our stand-in classes may come back this way
    if cls not in (PlainNamespace, PlainConfig, collections.OrderedDict) or base not in (object, dict):
        raise pickle.UnpicklingError("copyreg._reconstructor of a class that is not allowed")
    return cls()


def _resolve_dtype(stub) -> np.dtype:
    if isinstance(stub, np.dtype):
        dtype = stub
    elif isinstance(stub, _DTypeStub):
        try:
            dtype = np.dtype(stub.spec)
        except TypeError:
            raise pickle.UnpicklingError(f"unknown numpy dtype {stub.spec!r}") from None
        state = stub.state
        if isinstance(state, tuple) and len(state) >= 2:
            if len(state) >= 5 and (state[3] is not None or state[4] is not None):
                raise pickle.UnpicklingError("structured numpy dtypes are not weights")
            if state[1] in ("<", ">"):
                dtype = dtype.newbyteorder(state[1])
    else:
        raise pickle.UnpicklingError(f"expected a numpy dtype, got {type(stub).__name__}")
    if dtype.kind not in "biufc":
        raise pickle.UnpicklingError(f"numpy dtype {dtype} is not numeric (object, string and structured arrays are "
                                     "not weights)")
    return dtype


def _raw_bytes(data) -> bytes:
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str):  # py2 str or protocol-2 latin-1 text
        return data.encode("latin-1")
    raise pickle.UnpicklingError(f"array data is a {type(data).__name__}, not raw bytes")


def _array_from_state(state) -> np.ndarray:
    if not isinstance(state, tuple):
        raise pickle.UnpicklingError("numpy array state is not a tuple")
    if len(state) == 5:
        _, shape, dtype, fortran, data = state
    elif len(state) == 4:
        shape, dtype, fortran, data = state
    else:
        raise pickle.UnpicklingError(f"numpy array state has {len(state)} fields")
    shape = _int_tuple(shape)
    if any(d < 0 for d in shape):
        raise pickle.UnpicklingError(f"negative dimension in array shape {shape}")
    dtype = _resolve_dtype(dtype)
    raw = _raw_bytes(data)
    count = math.prod(shape)
    if len(raw) != count * dtype.itemsize:
        raise pickle.UnpicklingError(f"array of shape {shape} and dtype {dtype} has {len(raw)} bytes, "
                                     f"expected {count * dtype.itemsize}")
    array = np.frombuffer(raw, dtype=dtype, count=count)
    array = array.reshape(shape, order="F" if fortran else "C")
    return np.ascontiguousarray(array.astype(dtype.newbyteorder("="), copy=True))


_NUMPY_ALLOWED: Dict[Tuple[str, str], Any] = {}
for _core in ("numpy.core", "numpy._core"):
    _NUMPY_ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _numpy_reconstruct
    _NUMPY_ALLOWED[(f"{_core}.multiarray", "scalar")] = _numpy_scalar
    _NUMPY_ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _numpy_frombuffer
    _NUMPY_ALLOWED[(f"{_core}.multiarray", "ndarray")] = _NDArrayType
_NUMPY_ALLOWED[("numpy", "ndarray")] = _NDArrayType
_NUMPY_ALLOWED[("numpy", "dtype")] = _numpy_dtype

_CONTAINERS_ALLOWED: Dict[Tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
    ("builtins", "tuple"): tuple,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("builtins", "object"): object,
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("argparse", "Namespace"): PlainNamespace,
    ("yacs.config", "CfgNode"): PlainConfig,
}

_TORCH_ALLOWED: Dict[Tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
}
for _name, _dtype in _TORCH_STORAGES.items():
    for _module in ("torch", "torch.cuda", "torch.storage"):
        _TORCH_ALLOWED[(_module, _name)] = _TorchStorageType(_name, _dtype)
for _name, _dtype in _TORCH_DTYPES.items():
    _TORCH_ALLOWED[("torch", _name)] = _TorchDType(_name, _dtype)


# ----------------------------------------------------------------------------------------------------------------
# The restricted unpickler
# ----------------------------------------------------------------------------------------------------------------

class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with two gates: ``find_class`` (every global the file names) and ``BUILD`` (the
    only opcode that sets state on an existing object), which is allowed only on our own stand-in instances, so a
    file cannot re-configure the allowed functions, classes or singletons (e.g. set ``__defaults__`` on a
    function or attributes on a class) and poison later loads in the same process."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, path: str, allowed: Mapping[Tuple[str, str], Any],
                 persistent: Optional[Callable[[Any], Any]] = None, encoding: str = "utf-8"):
        super().__init__(file, encoding=encoding)
        self._path = path
        self._allowed = allowed
        self._persistent = persistent

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
            raise UnsafePickleError(self._path, f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise pickle.UnpicklingError(f"persistent id {_short(pid)} in a pickle that should have none")
        return self._persistent(pid)

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        kind = type(inst)
        if kind in (_ArrayStub, _DTypeStub, PlainNamespace, PlainConfig):
            inst.__setstate__(state)
        elif kind is collections.OrderedDict:
            pass  # instance attributes of a state dict (torch's ``_metadata`` version table) are not weights
        else:
            raise pickle.UnpicklingError(f"BUILD (set state) on a {kind.__name__} is refused")

    dispatch[pickle.BUILD[0]] = _load_build


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _unpickle(stream, path: str, allowed, persistent=None, encoding: str = "utf-8", what: str = "pickle") -> Any:
    try:
        return _RestrictedUnpickler(stream, path, allowed, persistent, encoding).load()
    except ForeignCheckpointError:
        raise
    except RecursionError:
        raise ForeignCheckpointError(f"{path}: {what} is nested too deeply to read") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            struct.error, OverflowError, UnicodeDecodeError, MemoryError) as exc:
        raise ForeignCheckpointError(f"{path}: unreadable {what}: truncated, corrupt or not a checkpoint "
                                     f"({type(exc).__name__}: {exc})") from None


def _read_bytes(path: str) -> bytes:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ForeignCheckpointError(f"checkpoint not found: {path}")
    with open(path, "rb") as handle:
        return handle.read()


# ----------------------------------------------------------------------------------------------------------------
# Turning stand-ins into arrays
# ----------------------------------------------------------------------------------------------------------------

def _materialize(obj: Any, path: str, tensor_fn: Optional[Callable[[_LazyTensor], np.ndarray]]) -> Any:
    """Replace array stand-ins and lazy tensors by numpy arrays, everywhere in a container tree (cycles and
    shared references are kept)."""
    memo: Dict[int, Any] = {}
    sys_limit = sys.getrecursionlimit()

    def walk(value: Any, depth: int) -> Any:
        if depth > min(_MAX_DEPTH, sys_limit - 100):
            raise ForeignCheckpointError(f"{path}: the pickled object is nested too deeply")
        if isinstance(value, _ArrayStub):
            key = id(value)
            if key not in memo:
                try:
                    memo[key] = _array_from_state(value.state)
                except pickle.UnpicklingError as exc:
                    raise ForeignCheckpointError(f"{path}: bad numpy array ({exc})") from None
            return memo[key]
        if isinstance(value, _LazyTensor):
            if tensor_fn is None:
                raise ForeignCheckpointError(f"{path}: torch tensor in a file that is not a torch checkpoint")
            key = id(value)
            if key not in memo:
                memo[key] = tensor_fn(value)
            return memo[key]
        if isinstance(value, (_DTypeStub, np.dtype)):
            try:
                return _resolve_dtype(value)
            except pickle.UnpicklingError as exc:
                raise ForeignCheckpointError(f"{path}: {exc}") from None
        if isinstance(value, (_TorchDType, _TorchStorageType, _StorageRef)) or value is _NDArrayType:
            raise ForeignCheckpointError(f"{path}: a bare torch storage/dtype or numpy class in the checkpoint "
                                         "(only tensors, arrays and containers are read)")
        if isinstance(value, dict):
            key = id(value)
            if key in memo:
                return memo[key]
            memo[key] = value
            for k in list(value.keys()):
                value[k] = walk(value[k], depth + 1)
            return value
        if isinstance(value, list):
            key = id(value)
            if key in memo:
                return memo[key]
            memo[key] = value
            for i, item in enumerate(value):
                value[i] = walk(item, depth + 1)
            return value
        if isinstance(value, (tuple, set, frozenset)):
            key = id(value)
            if key in memo:
                return memo[key]
            try:
                out = type(value)(walk(item, depth + 1) for item in value)
            except TypeError:  # an array inside a set
                raise ForeignCheckpointError(f"{path}: an array inside a set (unhashable)") from None
            memo[key] = out
            return out
        return value

    return walk(obj, 0)


def _storage_array(raw: bytes, dtype: str, byteorder: str) -> np.ndarray:
    order = "<" if byteorder == "little" else ">"
    if dtype == "bfloat16":
        bits = np.frombuffer(raw, dtype=order + "u2").astype(np.uint32) << 16
        return bits.view(np.float32)
    if dtype == "bool" or np.dtype(dtype).itemsize == 1:
        return np.frombuffer(raw, dtype=dtype)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder(order)).astype(dtype)


def _tensor_from_storage(tensor: _LazyTensor, storage: np.ndarray, path: str, name: str) -> np.ndarray:
    size, stride, offset = tensor.size, tensor.stride, tensor.offset
    if len(size) != len(stride):
        raise ForeignCheckpointError(f"{path}: tensor on storage {name} has size {size} but stride {stride}")
    if any(d < 0 for d in size) or any(s < 0 for s in stride) or offset < 0:
        raise ForeignCheckpointError(f"{path}: tensor on storage {name} has a negative size/stride/offset "
                                     f"(size {size}, stride {stride}, offset {offset})")
    if math.prod(size) == 0:
        return np.zeros(size, dtype=storage.dtype)
    last = offset + sum((d - 1) * s for d, s in zip(size, stride))
    if last >= storage.shape[0]:
        raise ForeignCheckpointError(
            f"{path}: tensor (size {list(size)}, stride {list(stride)}, offset {offset}) reaches element {last} "
            f"of storage {name}, which has {storage.shape[0]} elements")
    base = storage[offset:]
    itemsize = base.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(base, shape=size, strides=tuple(s * itemsize for s in stride),
                                           writeable=False)
    return np.array(view, copy=True, order="C")


# ----------------------------------------------------------------------------------------------------------------
# torch
# ----------------------------------------------------------------------------------------------------------------

def detect_pickle_format(path: str) -> str:
    """``'torch_zip'``, ``'torch_legacy'`` or ``'pickle'`` (a plain pickle such as ``.pdparams``), from the
    first bytes; ``'tar'`` for the pre-1.0 torch tar format; raises for anything else."""
    data = _read_head(path, 64)
    if data[:4] == b"PK\x03\x04":
        return "torch_zip"
    if len(data) >= 262 and data[257:262] == b"ustar":
        return "tar"
    if data[:1] == b"\x80" and _LEGACY_MAGIC_PICKLE_BODY in data[:32]:
        return "torch_legacy"
    return "pickle"  # anything else is tried as a pickle; a non-pickle fails there with the file named


def _read_head(path: str, size: int) -> bytes:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ForeignCheckpointError(f"checkpoint not found: {path}")
    with open(path, "rb") as handle:
        head = handle.read(max(size, 262))
    if not head:
        raise ForeignCheckpointError(f"{path}: empty file")
    return head


# protocol-2 pickle of the legacy magic number, minus the PROTO header: LONG1, 10 bytes, STOP
_LEGACY_MAGIC_PICKLE_BODY = pickle.dumps(TORCH_LEGACY_MAGIC, protocol=2)[2:]


def load_torch_checkpoint(path: str) -> Any:
    """Read a ``torch.save`` file (zip or legacy format) into plain containers with numpy arrays, without torch
    and without executing anything from the file.

    Tensors and parameters become numpy arrays (views come back with their own offset/size/stride, bfloat16 as
    float32), ``OrderedDict`` stays an OrderedDict, ``argparse.Namespace`` becomes :class:`PlainNamespace` and a
    yacs ``CfgNode`` :class:`PlainConfig`.  Raises :class:`UnsafePickleError` for any other global and
    :class:`ForeignCheckpointError` for truncated/corrupt files, both naming ``path``.
    """
    kind = detect_pickle_format(path)
    if kind == "torch_zip":
        return _load_torch_zip(os.fspath(path))
    if kind == "torch_legacy":
        return _load_torch_legacy(os.fspath(path))
    if kind == "tar":
        raise ForeignCheckpointError(f"{path}: the pre-1.0 torch tar format is not supported; re-save it with "
                                     "torch >= 1.0 first")
    raise ForeignCheckpointError(f"{path}: a plain pickle, not a torch checkpoint (no zip archive and no torch "
                                 "magic number); for a Paddle file use load_pdparams / load_paddle_pickle")


def _torch_allowed() -> Dict[Tuple[str, str], Any]:
    allowed = dict(_CONTAINERS_ALLOWED)
    allowed.update(_NUMPY_ALLOWED)
    allowed.update(_TORCH_ALLOWED)
    return allowed


def _storage_pid(path: str, pid: Any, legacy: bool) -> _StorageRef:
    if not isinstance(pid, tuple) or not pid:
        raise pickle.UnpicklingError(f"persistent id {_short(pid)} is not a storage tuple")
    if pid[0] == "module":
        raise UnsafePickleError(path, "a whole nn.Module", "the file pickles model source code/classes")
    want = 6 if legacy else 5
    if pid[0] != "storage" or len(pid) != want:
        raise pickle.UnpicklingError(f"persistent id {_short(pid)} is not a {want}-field storage record")
    storage_type, key, location, numel = pid[1], pid[2], pid[3], pid[4]
    if not isinstance(storage_type, _TorchStorageType):
        raise pickle.UnpicklingError(f"storage {_short(key)} has no torch storage type")
    if not isinstance(key, str) or not key or "/" in key or "\\" in key or key in (".", ".."):
        raise pickle.UnpicklingError(f"bad storage key {_short(key)}")
    numel = _as_int(numel)
    if numel < 0:
        raise pickle.UnpicklingError(f"storage {key} has a negative size")
    ref = _StorageRef(key, storage_type.dtype, 0, numel)
    if legacy and pid[5] is not None:  # (view key, element offset, element count) into the root storage
        view = pid[5]
        if not (isinstance(view, tuple) and len(view) == 3):
            raise pickle.UnpicklingError(f"bad storage view metadata {_short(view)}")
        _, view_offset, view_size = view
        return _StorageRef(key, storage_type.dtype, _as_int(view_offset), _as_int(view_size))
    return ref


def _load_torch_zip(path: str) -> Any:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ForeignCheckpointError(f"{path}: truncated or corrupt torch zip archive ({exc})") from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)]
        if len(pickles) != 1:
            raise ForeignCheckpointError(f"{path}: zip archive without exactly one '<record>/data.pkl' "
                                         f"(found {pickles or 'none'}); not a torch.save file")
        prefix = pickles[0][: -len("data.pkl")]
        if any(n.startswith(prefix + "code/") or n.endswith("constants.pkl") for n in names):
            raise ForeignCheckpointError(f"{path}: a TorchScript archive, not a torch.save checkpoint")
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = _zip_read(archive, path, prefix + "byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise ForeignCheckpointError(f"{path}: unknown byte order {byteorder!r} in {prefix}byteorder")
        refs: Dict[str, str] = {}

        def persistent(pid: Any) -> _StorageRef:
            ref = _storage_pid(path, pid, legacy=False)
            if refs.setdefault(ref.key, ref.dtype) != ref.dtype:
                raise pickle.UnpicklingError(f"storage {ref.key} is used with two dtypes")
            return ref

        obj = _unpickle(io.BytesIO(_zip_read(archive, path, pickles[0])), path, _torch_allowed(), persistent,
                        what=f"pickle {pickles[0]}")
        storages: Dict[str, np.ndarray] = {}

        def tensor_fn(tensor: _LazyTensor) -> np.ndarray:
            ref = tensor.storage
            if ref.key not in storages:
                member = f"{prefix}data/{ref.key}"
                if member not in names:
                    raise ForeignCheckpointError(f"{path}: storage {member} is missing from the archive")
                raw = _zip_read(archive, path, member)
                need = ref.numel * _itemsize(ref.dtype)
                if len(raw) < need:
                    raise ForeignCheckpointError(f"{path}: storage {member} has {len(raw)} bytes, expected {need} "
                                                 f"({ref.numel} x {ref.dtype}); the file is truncated")
                storages[ref.key] = _storage_array(raw[:need], ref.dtype, byteorder)
            return _typed_tensor(tensor, storages[ref.key], path, f"{prefix}data/{ref.key}", byteorder)

        return _materialize(obj, path, tensor_fn)


def _typed_tensor(tensor: _LazyTensor, storage: np.ndarray, path: str, name: str, byteorder: str) -> np.ndarray:
    ref = tensor.storage
    if ref.offset or ref.numel != storage.shape[0]:  # a legacy storage view
        if ref.offset + ref.numel > storage.shape[0]:
            raise ForeignCheckpointError(f"{path}: storage view {name}[{ref.offset}:{ref.offset + ref.numel}] "
                                         f"outside its storage of {storage.shape[0]} elements")
        storage = storage[ref.offset: ref.offset + ref.numel]
    if tensor.dtype != ref.dtype:  # _rebuild_tensor_v3 on an untyped (byte) storage
        if ref.dtype != "uint8":
            raise ForeignCheckpointError(f"{path}: tensor of dtype {tensor.dtype} on a {ref.dtype} storage {name}")
        raw = storage.tobytes()
        usable = len(raw) - len(raw) % _itemsize(tensor.dtype)
        storage = _storage_array(raw[:usable], tensor.dtype, byteorder)
    return _tensor_from_storage(tensor, storage, path, name)


def _zip_read(archive: zipfile.ZipFile, path: str, member: str) -> bytes:
    try:
        return archive.read(member)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, NotImplementedError) as exc:
        raise ForeignCheckpointError(f"{path}: cannot read {member} from the archive; the file is truncated or "
                                     f"corrupt ({type(exc).__name__}: {exc})") from None


def _load_torch_legacy(path: str) -> Any:
    data = _read_bytes(path)
    stream = io.BytesIO(data)
    plain = dict(_CONTAINERS_ALLOWED)
    magic = _unpickle(stream, path, plain, what="legacy header (magic number)")
    if magic != TORCH_LEGACY_MAGIC:
        raise ForeignCheckpointError(f"{path}: not a torch legacy file (magic number {magic!r})")
    protocol = _unpickle(stream, path, plain, what="legacy header (protocol version)")
    if protocol != TORCH_LEGACY_PROTOCOL:
        raise ForeignCheckpointError(f"{path}: unsupported torch legacy protocol version {protocol!r}")
    sys_info = _unpickle(stream, path, plain, what="legacy header (system info)")
    if not isinstance(sys_info, dict):
        raise ForeignCheckpointError(f"{path}: corrupt legacy header (system info is {type(sys_info).__name__})")
    byteorder = "little" if sys_info.get("little_endian", True) else "big"
    roots: Dict[str, _StorageRef] = {}

    def persistent(pid: Any) -> _StorageRef:
        ref = _storage_pid(path, pid, legacy=True)  # pid[4] is the numel of the root storage
        known = roots.setdefault(ref.key, _StorageRef(ref.key, ref.dtype, 0, pid[4]))
        if known.dtype != ref.dtype:
            raise pickle.UnpicklingError(f"storage {ref.key} is used with two dtypes")
        return ref

    obj = _unpickle(stream, path, _torch_allowed(), persistent, what="main pickle")
    keys = _unpickle(stream, path, plain, what="storage key list")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ForeignCheckpointError(f"{path}: corrupt storage key list")
    storages: Dict[str, np.ndarray] = {}
    fmt = "<q" if byteorder == "little" else ">q"
    for key in keys:
        root = roots.get(key)
        if root is None:
            raise ForeignCheckpointError(f"{path}: storage {key} is listed but no tensor uses it")
        header = stream.read(8)
        if len(header) != 8:
            raise ForeignCheckpointError(f"{path}: truncated before the data of storage {key}")
        (numel,) = struct.unpack(fmt, header)
        nbytes = numel * _itemsize(root.dtype)
        if numel < 0 or numel < root.numel:
            raise ForeignCheckpointError(f"{path}: storage {key} records {numel} elements, the pickle says "
                                         f"{root.numel}")
        raw = stream.read(nbytes)
        if len(raw) != nbytes:
            raise ForeignCheckpointError(f"{path}: truncated in the data of storage {key} (read {len(raw)} of "
                                         f"{nbytes} bytes)")
        storages[key] = _storage_array(raw, root.dtype, byteorder)
    missing = sorted(set(roots) - set(storages))
    if missing:
        raise ForeignCheckpointError(f"{path}: storages {missing[:5]} are used by tensors but have no data")

    def tensor_fn(tensor: _LazyTensor) -> np.ndarray:
        return _typed_tensor(tensor, storages[tensor.storage.key], path, f"storage {tensor.storage.key}",
                             byteorder)

    return _materialize(obj, path, tensor_fn)


# ----------------------------------------------------------------------------------------------------------------
# Paddle
# ----------------------------------------------------------------------------------------------------------------

def _paddle_allowed() -> Dict[Tuple[str, str], Any]:
    allowed = dict(_CONTAINERS_ALLOWED)
    allowed.update(_NUMPY_ALLOWED)
    return allowed


def load_paddle_pickle(path: str, keep_name_table: bool = False) -> Any:
    """Read any ``paddle.save`` pickle (a ``.pdparams`` state dict, a ``.pdopt``, a nested checkpoint dict)
    without paddle and without executing anything from the file.

    Arrays come back as numpy arrays; tensors inside nested objects (pickled by Paddle as ``(name, ndarray)``
    tuples) come back as arrays; the ``'UnpackBigParamInfor@@'`` split form is reassembled; the
    ``'StructuredToParameterName@@'`` table is dropped unless ``keep_name_table``.
    """
    path = os.fspath(path)
    kind = detect_pickle_format(path)
    if kind != "pickle":
        raise ForeignCheckpointError(f"{path}: a {kind.replace('_', ' ')} file, not a Paddle pickle; use "
                                     "load_torch_checkpoint")
    obj = _unpickle(io.BytesIO(_read_bytes(path)), path, _paddle_allowed(), encoding="latin1",
                    what="Paddle pickle")
    obj = _materialize(obj, path, None)
    if isinstance(obj, dict):
        obj = _pack_big_params(obj, path)
        if not keep_name_table:
            obj.pop(PADDLE_NAME_TABLE_KEY, None)
    return _tensor_tuples_to_arrays(obj)


def load_pdparams(path: str) -> Dict[str, np.ndarray]:
    """Read a Paddle state dict (``paddle.save(layer.state_dict(), 'x.pdparams')``) as ``{name: ndarray}``.

    The structured names are the keys; the internal-name table ``'StructuredToParameterName@@'`` is dropped.
    A file whose values are not all arrays (a nested checkpoint) raises, naming the first such key.
    """
    obj = load_paddle_pickle(path)
    if not isinstance(obj, dict):
        raise ForeignCheckpointError(f"{path}: a Paddle pickle of a {type(obj).__name__}, not a state dict")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise ForeignCheckpointError(f"{path}: state dict key {key!r} is not a string")
        if not isinstance(value, np.ndarray):
            raise ForeignCheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, not an array; "
                                         "a nested checkpoint is read with load_paddle_pickle")
    return dict(obj)


def _is_tensor_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and isinstance(
        value[1], np.ndarray)


def _tensor_tuples_to_arrays(obj: Any) -> Any:
    """paddle.save pickles a Tensor inside a nested object as ``(tensor.name, ndarray)``; paddle.load turns every
    such pair back into a Tensor, and so do we (into the array)."""
    seen: Dict[int, Any] = {}

    def walk(value: Any) -> Any:
        if _is_tensor_tuple(value):
            return value[1]
        key = id(value)
        if key in seen:
            return seen[key]
        if isinstance(value, dict):
            seen[key] = value
            for k in list(value):
                value[k] = walk(value[k])
        elif isinstance(value, list):
            seen[key] = value
            for i, item in enumerate(value):
                value[i] = walk(item)
        elif isinstance(value, tuple):
            seen[key] = value = tuple(walk(item) for item in value)
        return value

    return walk(obj)


def _pack_big_params(obj: dict, path: str) -> dict:
    """Reassemble arrays that ``paddle.save`` (protocol 2/3) split into ``<name>@@.<i>`` flat slices."""
    info = obj.get(PADDLE_UNPACK_KEY)
    if info is None:
        return obj
    if not isinstance(info, dict):
        raise ForeignCheckpointError(f"{path}: {PADDLE_UNPACK_KEY!r} is not a dict")
    used: List[str] = []
    for name, entry in info.items():
        try:
            shape = tuple(int(d) for d in entry["OriginShape"])
            parts = list(entry["slices"])
        except (TypeError, KeyError, ValueError):
            raise ForeignCheckpointError(f"{path}: bad {PADDLE_UNPACK_KEY!r} entry for {name!r}") from None
        arrays = []
        for part in parts:
            if part not in obj or not isinstance(obj[part], np.ndarray):
                raise ForeignCheckpointError(f"{path}: slice {part!r} of split array {name!r} is missing")
            arrays.append(obj[part].reshape(-1))
        joined = np.concatenate(arrays) if arrays else np.zeros(0)
        if joined.size != math.prod(shape):
            raise ForeignCheckpointError(f"{path}: split array {name!r} has {joined.size} elements in its slices, "
                                         f"its shape {list(shape)} needs {math.prod(shape)}")
        obj[name] = joined.reshape(shape)
        used.extend(parts)
    for part in used:
        obj.pop(part, None)
    obj.pop(PADDLE_UNPACK_KEY)
    return obj
