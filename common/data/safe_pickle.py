"""A restricted unpickler for the CIFAR ``*-python`` batch files (and other data pickles).

The CIFAR archives ship Python pickles.  ``pickle.load`` on an untrusted file runs whatever callable the
file names (``os.system`` included), so we read them with an allow-list: the file may rebuild numpy arrays
and dtypes and use builtin containers, nothing else.  Any other global is refused *before* it is looked up,
so nothing named by the file is imported or called.

Other readers pass their own allow-list (possibly empty: a pickle of builtin lists, dicts, numbers and
strings needs no global at all) and their own description of what the file should be, which the refusal
message quotes (:func:`safe_load` ``allowed=`` / ``expected=``).  The defaults are the CIFAR ones.
"""
from __future__ import annotations

import io
import os
import pickle
from typing import AbstractSet, Any, FrozenSet, Optional, Tuple

# (module, name) pairs a genuine CIFAR batch needs.  numpy moved ``numpy.core`` to ``numpy._core`` in 2.0,
# and a file records the path of the numpy that wrote it, so both spellings are allowed.
_NUMPY_GLOBALS = frozenset(
    (module, name)
    for core in ("numpy.core", "numpy._core")
    for module, name in (
        (f"{core}.multiarray", "_reconstruct"),  # ndarray.__reduce__ (protocols 0-4)
        (f"{core}.multiarray", "scalar"),        # numpy scalars (e.g. an int64 label)
        (f"{core}.numeric", "_frombuffer"),      # ndarray.__reduce_ex__ with protocol 5
    )
) | {("numpy", "ndarray"), ("numpy", "dtype")}

# Builtin containers, and the one pure function Python 3 uses to write ``bytes`` in protocol 2
# (``_codecs.encode(str, 'latin1')``): a batch re-saved by a Python 3 script needs it.
_BUILTIN_GLOBALS = frozenset(
    ("builtins", name) for name in ("list", "dict", "tuple", "set", "frozenset", "bytearray", "bytes")
) | {("_codecs", "encode")}

ALLOWED_GLOBALS: FrozenSet[Tuple[str, str]] = _NUMPY_GLOBALS | _BUILTIN_GLOBALS


class PickleReadError(pickle.UnpicklingError, ValueError):
    """A pickle file cannot be read (truncated, not a pickle, or refused); the message names the file.

    A ``ValueError`` too, so the commands report it as a user error (one line, exit code 2)."""


class UnsafePickleError(PickleReadError):
    """The pickle asked for a global outside the allow-list; nothing it named was imported or run."""


# What the refusal message says a CIFAR batch should be (the default of ``expected``).
CIFAR_EXPECTED = (
    "a CIFAR batch file may only hold numpy arrays and builtin containers; this file is not a genuine CIFAR batch"
)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only resolves ``allowed`` (default :data:`ALLOWED_GLOBALS`).

    ``expected`` says what the file may hold and what it therefore is not; the refusal message quotes it.
    """

    def __init__(self, file, source: str, allowed: Optional[AbstractSet[Tuple[str, str]]] = None,
                 expected: str = CIFAR_EXPECTED, **kwargs):
        super().__init__(file, **kwargs)
        self.source = source
        self.allowed = ALLOWED_GLOBALS if allowed is None else frozenset(allowed)
        self.expected = expected

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise UnsafePickleError(
                f"{self.source}: refusing to unpickle the global '{module}.{name}': {self.expected} "
                f"(it may be malicious), so it was not loaded"
            )
        return super().find_class(module, name)


def safe_load(path: str, encoding: str = "bytes", allowed: Optional[AbstractSet[Tuple[str, str]]] = None,
              expected: str = CIFAR_EXPECTED) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`.

    ``encoding='bytes'`` reads the Python 2 strings of the original CIFAR files as ``bytes`` (their keys are
    ``b'data'``, ``b'labels'``).  ``allowed`` is the set of ``(module, name)`` globals the file may name
    (default :data:`ALLOWED_GLOBALS`; an empty set allows none) and ``expected`` what the refusal message says
    the file should be (default: a CIFAR batch).  Errors name the file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=path, allowed=allowed, expected=expected,
                                   encoding=encoding).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated or not a pickle at all
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
        raise PickleReadError(f"{path}: not a readable pickle, the file is truncated or corrupt ({detail})") from None
