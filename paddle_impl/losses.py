"""Losses and metrics, the same formulas as ``torch_impl/losses.py`` (reference: ``common/optim_reference.py``).

The class axis is 1 (torch convention) in both backends; logits are ``[N, C]`` or ``[N, C, *]``.  (Paddle's own
``F.cross_entropy`` uses ``axis=-1`` by default, anchors.md §3.3 row 23.)
"""
from __future__ import annotations

from typing import Iterable, List

import paddle

__all__ = ["log_softmax", "softmax", "cross_entropy", "soft_target_cross_entropy", "accuracy_topk"]


def log_softmax(logits: paddle.Tensor, axis: int = 1) -> paddle.Tensor:
    """``x - max - log(sum(exp(x - max)))``, torch's formula.  Paddle's own ``F.log_softmax`` (and ``softmax``,
    ``cross_entropy``) clamps ``x - max`` at -64 on CPU, so a logit more than 64 below the row's largest gets
    log-probability -64 instead of its true value (tests/test_framework_differences_layers.py)."""
    shifted = logits - paddle.max(logits, axis=axis, keepdim=True).detach()  # the max cancels in the gradient
    return shifted - paddle.log(paddle.sum(paddle.exp(shifted), axis=axis, keepdim=True))


def softmax(logits: paddle.Tensor, axis: int = 1) -> paddle.Tensor:
    """``exp(log_softmax(x))``: Paddle's own ``softmax`` clamps ``x - max`` at -64 on CPU (see :func:`log_softmax`)."""
    return paddle.exp(log_softmax(logits, axis))


def cross_entropy(logits: paddle.Tensor, target: paddle.Tensor, label_smoothing: float = 0.0) -> paddle.Tensor:
    """timm ``LabelSmoothingCrossEntropy``: mean of ``(1-s)*nll + s*mean_c(-log p_c)``; ``s = 0`` is plain CE."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"cross_entropy: label_smoothing = {label_smoothing!r} must be in [0, 1)")
    logp = log_softmax(logits, axis=1)
    index = paddle.unsqueeze(target.astype("int64"), 1)
    nll = -paddle.squeeze(paddle.take_along_axis(logp, index, axis=1), 1)
    if label_smoothing == 0.0:
        return nll.mean()
    smooth = -logp.mean(axis=1)
    return ((1.0 - label_smoothing) * nll + label_smoothing * smooth).mean()


def soft_target_cross_entropy(logits: paddle.Tensor, target_probs: paddle.Tensor) -> paddle.Tensor:
    """Mean over samples of ``sum_c -t_c * log p_c`` (timm ``SoftTargetCrossEntropy``, class axis 1)."""
    return paddle.sum(-target_probs * log_softmax(logits, axis=1), axis=1).mean()


def accuracy_topk(logits: paddle.Tensor, target: paddle.Tensor, ks: Iterable[int] = (1, 5)) -> List[paddle.Tensor]:
    """Top-k accuracy in percent for each k, as 0-d tensors (no host sync).

    A sample is a top-k hit when its target logit is a number and fewer than k classes have a strictly larger or
    NaN logit, so exact ties count as hits in both backends (``topk`` index order on ties is framework-specific)
    and a NaN output is never a hit (every comparison with NaN is false)."""
    with paddle.no_grad():
        index = paddle.unsqueeze(target.astype("int64"), 1)
        target_logit = paddle.take_along_axis(logits, index, axis=1)
        greater = paddle.sum(paddle.logical_or(logits > target_logit, paddle.isnan(logits)).astype("int64"), axis=1)
        valid = paddle.logical_not(paddle.isnan(paddle.squeeze(target_logit, 1)))
        return [paddle.logical_and(greater < int(k), valid).astype(logits.dtype).mean() * 100.0 for k in ks]
