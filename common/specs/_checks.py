"""Checks every family's ``spec_from_config`` makes on the shared ``MODEL.*`` / ``DATA.*`` keys, written once.

Errors are ``ValueError`` naming the key and the value (``tools/commands.py`` turns them into one-line user
errors), e.g. ``MODEL.DROPOUT = 1.5 must be in [0, 1)``.  Pure Python at import time.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional


def _note(note: str) -> str:
    return f" ({note})" if note else ""


def at_least(value: Any, key: str, minimum: int, note: str = "") -> int:
    """``int(value)``, which must be ``>= minimum``."""
    out = int(value)
    if out < minimum:
        raise ValueError(f"{key} = {out!r} must be >= {minimum}{_note(note)}")
    return out


def fraction(value: Any, key: str, note: str = "") -> float:
    """``float(value)``, which must be in ``[0, 1)`` (a drop rate, a decay)."""
    out = float(value)
    if not 0.0 <= out < 1.0:
        raise ValueError(f"{key} = {out!r} must be in [0, 1){_note(note)}")
    return out


@dataclasses.dataclass(frozen=True)
class ModelKeys:
    num_classes: int
    dropout: float
    drop_path: float
    image_size: int
    channels: int


def model_keys(cfg, dropout_note: str = "", drop_path_note: str = "",
               min_image_size: Optional[int] = 1) -> ModelKeys:
    """The checked ``MODEL.NUM_CLASSES`` (>= 1), ``MODEL.DROPOUT`` and ``MODEL.DROP_PATH`` (in [0, 1)),
    ``DATA.IMAGE_SIZE`` (>= ``min_image_size``; None: the family checks the size itself) and ``DATA.CHANNELS``
    (>= 1), in that order.  ``*_note``: what the value means in the family's own terms, appended to the error."""
    model, data = cfg.MODEL, cfg.DATA
    num_classes = at_least(model.NUM_CLASSES, "MODEL.NUM_CLASSES", 1)
    dropout = fraction(model.DROPOUT, "MODEL.DROPOUT", dropout_note)
    drop_path = fraction(model.DROP_PATH, "MODEL.DROP_PATH", drop_path_note)
    if min_image_size is None:
        size = int(data.IMAGE_SIZE)
    else:
        size = at_least(data.IMAGE_SIZE, "DATA.IMAGE_SIZE", min_image_size)
    channels = at_least(data.CHANNELS, "DATA.CHANNELS", 1)
    return ModelKeys(num_classes, dropout, drop_path, size, channels)


def classifier_width(tensors: Mapping[str, Any], key: str, default: int) -> int:
    """Rows of ``tensors[key]`` (a classifier's bias or weight: the class count), ``default`` when absent.
    Used by the spec modules' ``recognition_candidates`` to size the expected state of a bare state dict."""
    import numpy as np  # only here: the Cream spec module is pure Python at import time

    array = tensors.get(key)
    return int(np.shape(array)[0]) if array is not None and np.ndim(array) >= 1 else default


__all__ = ["at_least", "fraction", "ModelKeys", "model_keys", "classifier_width"]
