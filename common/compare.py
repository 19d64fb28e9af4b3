"""Element-wise comparison of two arrays: the figures every parity check reports.

``max_abs``  = max |a - b|
``max_rel``  = max_abs / max |b|        (relative to the reference tensor's scale; robust near zeros)
``max_elem_rel`` = max |a - b| / (|b| + tiny) over elements with |b| >= 1e-3 * max|b|  (element-wise view)
plus the index of the worst element and both values there.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Tuple

import numpy as np


@dataclasses.dataclass
class Diff:
    name: str
    shape: Tuple[int, ...]
    max_abs: float
    max_rel: float
    max_elem_rel: float
    worst_index: Tuple[int, ...]
    value_a: float
    value_b: float
    ref_scale: float
    nonfinite: int = 0

    def passes(self, abs_tol: Optional[float] = None, rel_tol: Optional[float] = None) -> bool:
        if self.nonfinite:
            return False
        ok = True
        if abs_tol is not None:
            ok &= self.max_abs <= abs_tol
        if rel_tol is not None:
            ok &= self.max_rel <= rel_tol
        return bool(ok)

    def as_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["shape"] = list(self.shape)
        out["worst_index"] = list(self.worst_index)
        return out

    def __str__(self) -> str:
        return (
            f"{self.name} {list(self.shape)}: max_abs={self.max_abs:.3e} max_rel={self.max_rel:.3e} "
            f"at {list(self.worst_index)} ({self.value_a!r} vs {self.value_b!r})"
        )


def compare(a: Any, b: Any, name: str = "") -> Diff:
    """Compare ``a`` against the reference ``b`` (same shape) in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"{name}: shapes differ: {list(a.shape)} vs {list(b.shape)}")
    if a.size == 0:
        return Diff(name, a.shape, 0.0, 0.0, 0.0, (), 0.0, 0.0, 0.0)
    finite = np.isfinite(a) & np.isfinite(b)
    nonfinite = int(a.size - finite.sum())
    diff = np.where(finite, np.abs(a - b), 0.0)
    # Equal non-finite values (inf == inf) are fine; different ones count as non-finite mismatches.
    same_nonfinite = (~finite) & ((a == b) | (np.isnan(a) & np.isnan(b)))
    nonfinite -= int(same_nonfinite.sum())
    flat = int(np.argmax(diff))
    index = tuple(int(i) for i in np.unravel_index(flat, a.shape))
    max_abs = float(diff.reshape(-1)[flat])
    scale = float(np.max(np.abs(np.where(finite, b, 0.0))))
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    significant = finite & (np.abs(b) >= 1e-3 * scale) & (np.abs(b) > 0)
    if significant.any():
        elem_rel = float(np.max(diff[significant] / np.abs(b[significant])))
    else:
        elem_rel = 0.0
    return Diff(
        name=name,
        shape=tuple(a.shape),
        max_abs=max_abs,
        max_rel=max_rel,
        max_elem_rel=elem_rel,
        worst_index=index,
        value_a=float(a[index]),
        value_b=float(b[index]),
        ref_scale=scale,
        nonfinite=nonfinite,
    )
