"""Losses and metrics, the same formulas as ``paddle_impl/losses.py`` (reference: ``common/optim_reference.py``).

The class axis is 1 (torch convention) in both backends; logits are ``[N, C]`` or ``[N, C, *]``.
"""
from __future__ import annotations

from typing import Iterable, List

import torch
import torch.nn.functional as F

__all__ = ["log_softmax", "softmax", "cross_entropy", "soft_target_cross_entropy", "accuracy_topk"]


def log_softmax(logits: torch.Tensor, axis: int = 1) -> torch.Tensor:
    """``x - max - log(sum(exp(x - max)))`` (torch's own kernel; the paddle twin spells the formula out)."""
    return F.log_softmax(logits, dim=axis)


def softmax(logits: torch.Tensor, axis: int = 1) -> torch.Tensor:
    """``exp(log_softmax(x))``: the same probabilities as the paddle twin's (Paddle's own ``softmax`` clamps
    ``x - max`` at -64 on CPU)."""
    return torch.exp(log_softmax(logits, axis))


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """timm ``LabelSmoothingCrossEntropy``: mean of ``(1-s)*nll + s*mean_c(-log p_c)``; ``s = 0`` is plain CE."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"cross_entropy: label_smoothing = {label_smoothing!r} must be in [0, 1)")
    logp = log_softmax(logits, axis=1)
    nll = -torch.gather(logp, 1, target.long().unsqueeze(1)).squeeze(1)
    if label_smoothing == 0.0:
        return nll.mean()
    smooth = -logp.mean(dim=1)
    return ((1.0 - label_smoothing) * nll + label_smoothing * smooth).mean()


def soft_target_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ``sum_c -t_c * log p_c`` (timm ``SoftTargetCrossEntropy``, class axis 1)."""
    return torch.sum(-target_probs * log_softmax(logits, axis=1), dim=1).mean()


@torch.no_grad()
def accuracy_topk(logits: torch.Tensor, target: torch.Tensor, ks: Iterable[int] = (1, 5)) -> List[torch.Tensor]:
    """Top-k accuracy in percent for each k, as 0-d tensors (no host sync).

    A sample is a top-k hit when its target logit is a number and fewer than k classes have a strictly larger or
    NaN logit, so exact ties count as hits in both backends (``topk`` index order on ties is framework-specific)
    and a NaN output is never a hit (every comparison with NaN is false)."""
    target_logit = torch.gather(logits, 1, target.long().unsqueeze(1))
    greater = ((logits > target_logit) | torch.isnan(logits)).sum(dim=1)
    valid = ~torch.isnan(target_logit.squeeze(1))
    return [((greater < int(k)) & valid).to(logits.dtype).mean() * 100.0 for k in ks]
