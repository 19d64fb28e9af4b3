"""Dropout and drop-path masks drawn from numpy, so both backends see the same randomness.

A :class:`MaskSource` is attached to every random layer of a model (``DropPath``, ``Dropout``) by the
trainer or the parity harness.  Layers ask it for a keep-mask in forward order; the source is re-seeded
from (seed, step) before each step, so a resumed run and the other backend draw the same masks.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


class MaskSource:
    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self._rng = np.random.default_rng(np.random.SeedSequence([self.seed]))
        self.draws = 0

    def start_step(self, step: int) -> None:
        """Re-seed for training step ``step`` (a pure function of seed and step)."""
        self._rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(step), 0xD509]))
        self.draws = 0

    def keep_mask(self, shape: Sequence[int], keep_prob: float, dtype=np.float32) -> np.ndarray:
        """Bernoulli(keep_prob) mask of 0/1 values (the layer divides by keep_prob itself)."""
        if not 0.0 < keep_prob <= 1.0:
            raise ValueError(f"keep probability must be in (0, 1], got {keep_prob}")
        self.draws += 1
        return (self._rng.random(tuple(int(s) for s in shape)) < keep_prob).astype(dtype)
