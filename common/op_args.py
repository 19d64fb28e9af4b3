"""The framework-free half of the op library: argument parsing and injected-mask handling, written once.

``torch_impl/ops.py`` and ``paddle_impl/ops.py`` import these (under their old private names ``_pair``,
``_parse_padding``, ``_valid_counts_1d``, ``_check_mask``), and their ``DropPath`` / ``Dropout`` take the
``set_next_mask`` contract from :class:`DropPathMasks` / :class:`DropoutMasks`, so both twins accept and reject
exactly the same arguments with the same messages.  numpy and the standard library only.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np

PadArg = Union[int, Tuple[int, int], str]


# ---------------------------------------------------------------------------------------------------------
# padding / window arguments
# ---------------------------------------------------------------------------------------------------------
def pair(value, what: str) -> Tuple[int, int]:
    """An int or a 2-sequence -> ``(a, b)``; anything else names ``what``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{what} must be an int or a pair, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def parse_padding(padding: PadArg) -> Tuple[str, Tuple[int, int]]:
    """``(mode, symmetric pair)`` with mode ``'SAME'``, ``'VALID'`` (pair (0, 0)) or ``'EXPLICIT'``."""
    if isinstance(padding, str):
        mode = padding.upper()
        if mode in ("SAME", "VALID"):
            return mode, (0, 0)
        raise ValueError(f"padding must be an int, a pair, 'SAME' or 'VALID', got {padding!r}")
    out = pair(padding, "padding")
    if min(out) < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    return "EXPLICIT", out


def valid_counts_1d(size: int, kernel: int, stride: int, before: int, after: int) -> np.ndarray:
    """Number of in-image elements under each window of a padded axis (TF / count_include_pad=False)."""
    out = (size + before + after - kernel) // stride + 1
    start = np.arange(out) * stride - before
    return np.minimum(start + kernel, size) - np.maximum(start, 0)


# ---------------------------------------------------------------------------------------------------------
# injected 0/1 masks of the stochastic ops
# ---------------------------------------------------------------------------------------------------------
def check_mask(mask, what: str) -> np.ndarray:
    """``mask`` as a numeric array of 0 (drop) and 1 (keep); booleans become float64."""
    array = np.asarray(mask)
    if array.dtype == np.bool_:
        array = array.astype(np.float64)
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{what}: the mask must be numeric or boolean, got dtype {array.dtype}")
    if not np.all((array == 0) | (array == 1)):
        raise ValueError(f"{what}: the mask must hold only 0 (drop) and 1 (keep)")
    return array


class DropPathMasks:
    """``set_next_mask`` of the twins' ``DropPath`` (a mixin placed before ``nn.Module`` / ``nn.Layer``).

    The layer's ``__init__`` sets ``drop_prob``, ``_next_mask = None`` and ``mask_source = None``."""

    drop_prob: float
    _next_mask: Optional[np.ndarray]

    def set_next_mask(self, mask) -> None:
        array = check_mask(mask, "DropPath.set_next_mask")
        if array.ndim != 1 and not (array.ndim >= 2 and all(s == 1 for s in array.shape[1:])):
            raise ValueError(f"DropPath.set_next_mask: expected shape [N] or [N, 1, 1, 1], got {list(array.shape)}")
        self._next_mask = array.reshape(-1)

    def _take_next_mask(self, batch: int) -> Optional[np.ndarray]:
        """The pending per-sample mask (consumed), checked against the batch size; None when none is pending."""
        mask = self._next_mask
        if mask is not None:
            self._next_mask = None
            if mask.shape[0] != batch:
                raise ValueError(f"DropPath: injected mask has {mask.shape[0]} samples, input has {batch}")
        return mask

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class DropoutMasks:
    """``set_next_mask`` of the twins' ``Dropout`` (a mixin placed before ``nn.Module`` / ``nn.Layer``).

    The layer's ``__init__`` checks ``p`` with :func:`dropout_p` and sets ``_next_mask = None``,
    ``mask_source = None``."""

    p: float
    _next_mask: Optional[np.ndarray]

    def set_next_mask(self, mask) -> None:
        self._next_mask = check_mask(mask, "Dropout.set_next_mask")

    def _take_next_mask(self, shape: Sequence[int]) -> Optional[np.ndarray]:
        """The pending element mask (consumed), checked against the input shape; None when none is pending."""
        mask = self._next_mask
        if mask is not None:
            self._next_mask = None
            if tuple(mask.shape) != tuple(shape):
                raise ValueError(f"Dropout: injected mask shape {list(mask.shape)} != input shape {list(shape)}")
        return mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


def dropout_p(p) -> float:
    """The dropout probability as a float in ``[0, 1)``."""
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"Dropout p must be in [0, 1), got {p!r}")
    return float(p)


__all__ = ["PadArg", "pair", "parse_padding", "valid_counts_1d", "check_mask", "DropPathMasks", "DropoutMasks",
           "dropout_p"]
