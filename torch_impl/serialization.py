"""Writing ``.pt`` / ``.pth`` files with ``torch.save``: the one place the converter touches torch.

``weights_tools/convert.py`` imports this module lazily (only for ``--to torch``), so the rest of the converter and
every reader stay framework-free.  Reading never comes here: torch files are read without torch by
``weights_tools.safe_unpickle``.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from common.io_utils import atomic_path

__all__ = ["save_state_dict"]


def _to_torch(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _to_torch(v, f"{where}/{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        # a copy: the file must not alias caller memory, and torch.from_numpy needs a writeable C array
        return torch.from_numpy(np.array(value, order="C", copy=True))
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"{where}: a {type(value).__name__} cannot go into a state dict file (arrays, dicts, scalars)")


def save_state_dict(path: str, obj: Mapping[str, Any]) -> None:
    """``torch.save`` ``obj`` atomically (temporary file + rename), numpy arrays as CPU tensors.

    ``obj`` is a state dict ``{name: ndarray}`` or a dict of them (``{"state_dict": {...}, "state_dict_ema": {...}}``,
    the layout of timm / upstream Cream training checkpoints); what ``torch.load(path, weights_only=True)`` reads."""
    state = _to_torch(obj, "")
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
