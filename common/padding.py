"""TensorFlow ``SAME`` / ``VALID`` padding arithmetic, for any input size.

TF defines ``SAME`` by the output size ``ceil(n / stride)``; the total padding that
achieves it is split with the smaller half first (top/left) and the extra pixel at
bottom/right.  Both backends call these helpers so the rule exists once.
"""
from __future__ import annotations

import math
import numbers
from typing import Tuple

PADDING_MODES = ("SAME", "VALID")


def same_pad_total(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> int:
    """Total padding TF adds along one axis of length ``size`` for ``SAME``."""
    _check_positive("SAME", size=size, kernel=kernel, stride=stride, dilation=dilation)
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    return max((out - 1) * stride + effective - size, 0)


def same_pad_1d(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> Tuple[int, int]:
    """``(before, after)`` padding for one axis; the odd pixel goes after (TF)."""
    total = same_pad_total(size, kernel, stride, dilation)
    return total // 2, total - total // 2


def same_pad_2d(height: int, width: int, kernel, stride=1, dilation=1) -> Tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` SAME padding for an NCHW/NHWC spatial map."""
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    top, bottom = same_pad_1d(height, kh, sh, dh)
    left, right = same_pad_1d(width, kw, sw, dw)
    return top, bottom, left, right


def is_symmetric_same(height: int, width: int, kernel, stride=1, dilation=1) -> bool:
    """True when SAME padding equals a symmetric pad, so a plain ``padding=p`` conv is exact."""
    top, bottom, left, right = same_pad_2d(height, width, kernel, stride, dilation)
    return top == bottom and left == right


def conv_output_size(size: int, kernel: int, stride: int = 1, dilation: int = 1, padding="SAME") -> int:
    """Output length of a conv/pool along one axis. ``padding`` is SAME, VALID or an int (symmetric)."""
    _check_positive("conv_output_size", size=size, kernel=kernel, stride=stride, dilation=dilation)
    if padding == "SAME":
        return math.ceil(size / stride)
    effective = (kernel - 1) * dilation + 1
    if padding == "VALID":
        pad = 0
    elif isinstance(padding, numbers.Integral) and not isinstance(padding, bool) and padding >= 0:
        pad = 2 * padding
    else:
        raise ValueError(f"padding must be 'SAME', 'VALID' or an int >= 0, got {padding!r}")
    out = (size + pad - effective) // stride + 1
    if out < 1:
        raise ValueError(f"input of size {size} is too small for kernel {kernel} (dilation {dilation}, padding {padding!r})")
    return out


def _check_positive(what: str, **values) -> None:
    # A zero stride used to surface as ZeroDivisionError and a zero size as a silent 0; name them instead.
    if any(value < 1 for value in values.values()):
        listed = " ".join(f"{name}={value}" for name, value in values.items())
        raise ValueError(f"bad {what} arguments: {listed} (all must be >= 1)")


def _pair(value) -> Tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"expected an int or a pair, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)
