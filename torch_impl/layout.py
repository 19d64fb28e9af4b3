"""Torch <-> neutral state: torch layout *is* the neutral layout, so this only moves arrays."""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import numpy as np
import torch

from common.checkpoint import check_state

# Buffers that exist only in torch and carry no model state we use (momentum=None is never set).
TORCH_ONLY_SUFFIXES = ("num_batches_tracked",)


def _keep(name: str) -> bool:
    return not name.endswith(TORCH_ONLY_SUFFIXES)


def expected_shapes(module: torch.nn.Module) -> Dict[str, Tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in module.state_dict().items() if _keep(name)}


def state_to_neutral(module: torch.nn.Module) -> Dict[str, np.ndarray]:
    """Every parameter and buffer under its canonical name, copied to host numpy."""
    return {name: t.detach().cpu().numpy().copy() for name, t in module.state_dict().items() if _keep(name)}


def load_neutral(module: torch.nn.Module, tensors: Mapping[str, np.ndarray], source: str = "<memory>") -> None:
    """Strictly load ``tensors``: every name present once with the right shape, cast to the module's dtype."""
    check_state(expected_shapes(module), tensors, source)
    own = module.state_dict()
    with torch.no_grad():
        for name, array in tensors.items():
            target = own[name]
            target.copy_(torch.from_numpy(np.ascontiguousarray(array)).to(dtype=target.dtype, device=target.device))


def trainable_named_parameters(module: torch.nn.Module):
    return [(name, p) for name, p in module.named_parameters() if p.requires_grad]


def count_parameters(module: torch.nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for _, p in module.named_parameters() if p.requires_grad or not trainable_only)
