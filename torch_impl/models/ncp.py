"""NCP's accuracy predictor in PyTorch: the twin of ``paddle_impl/models/ncp.py``.

``build(spec)`` turns a :class:`common.specs.ncp.PredictorSpec` into upstream's ``MLP`` (names ``fc.{0,1,2}``,
``nets.{g}.{0,1,4}``) plus the four statistics buffers.  ``forward(codes)`` takes raw codes (embeddings), z-scores them
with ``input_mean`` / ``input_std`` and returns the normalised predictions ``[N, metrics]`` (group order);
``forward_normalised(z)`` starts from an already normalised code (NCP's search variable).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from common.specs.ncp import HEAD_HIDDEN, HIDDEN, STAT_NAMES, TRUNK_DROPOUT, PredictorSpec
from torch_impl import ops

__all__ = ["Predictor", "build"]


class Predictor(nn.Module):
    def __init__(self, spec: PredictorSpec):
        super().__init__()
        if not isinstance(spec, PredictorSpec):
            raise TypeError(f"build(spec) needs a PredictorSpec, got {type(spec).__name__}")
        self.spec = spec
        self.fc = nn.Sequential(ops.BatchNorm1d(spec.input_dim), ops.Linear(spec.input_dim, HIDDEN),
                                ops.BatchNorm1d(HIDDEN), ops.Swish(), ops.Dropout(TRUNK_DROPOUT))
        self.nets = nn.ModuleList([
            nn.Sequential(ops.Linear(HIDDEN, HEAD_HIDDEN), ops.BatchNorm1d(HEAD_HIDDEN), ops.Swish(),
                          ops.Dropout(p), ops.Linear(HEAD_HIDDEN, len(group)))
            for group, p in zip(spec.groups, spec.dropouts)])
        for name in STAT_NAMES:
            self.register_buffer(name, torch.tensor(getattr(spec, name), dtype=torch.float32))

    def normalise(self, codes: torch.Tensor) -> torch.Tensor:
        return (codes - self.input_mean) / self.input_std

    def forward_normalised(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z)
        return torch.cat([net(h) for net in self.nets], dim=1)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.forward_normalised(self.normalise(codes))


def build(spec: PredictorSpec) -> nn.Module:
    """The predictor of ``spec`` in eval mode (load weights with ``layout.load_neutral``)."""
    return Predictor(spec).eval()
