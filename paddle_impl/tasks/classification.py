"""Image classification in Paddle: one step of the loss, the update, the EMA; evaluation sums.

Twin of ``torch_impl/tasks/classification.py`` (same class, same methods, same formulas); the declarations are
in ``common/tasks/classification.py`` and the loop around it is ``common/engine.py``.
"""
from __future__ import annotations

from typing import Dict, Mapping

import numpy as np
import paddle

from common.random_masks import MaskSource
from common.tasks import Batch, NonFiniteError
from common.tasks.classification import Classification
from paddle_impl import layout, losses, ops, optim


def class_logits(logits: paddle.Tensor) -> paddle.Tensor:
    """``[N, C]`` logits: a head that keeps a trailing 1x1 map (NAS-Bench-MR's pooled 1x1-conv classifier gives
    ``[N, C, 1, 1]``) is flattened; any other shape is returned as it is."""
    if logits.ndim == 4 and logits.shape[2] == 1 and logits.shape[3] == 1:
        return logits.flatten(1)
    return logits


def compose_loss(out, labels: paddle.Tensor, label_smoothing: float = 0.0, aux_weight: float = 0.0):
    """``(loss, logits)`` of a model output: cross-entropy (label smoothing) + ``aux_weight`` x the aux head's;
    ``[N, C, 1, 1]`` logits are flattened to ``[N, C]`` first (:func:`class_logits`)."""
    logits, aux = out if isinstance(out, tuple) else (out, None)
    logits = class_logits(logits)
    loss = losses.cross_entropy(logits, labels, label_smoothing)
    if aux is not None and aux_weight:
        loss = loss + aux_weight * losses.cross_entropy(aux, labels, label_smoothing)
    return loss, logits


def all_finite(tensors) -> paddle.Tensor:
    """A 0-d bool tensor: every element of every tensor is finite (no host sync)."""
    tensors = [t for t in tensors if t is not None]
    with paddle.no_grad():
        if not tensors:
            return paddle.to_tensor(True)
        return paddle.stack([paddle.isfinite(t).all() for t in tensors]).all()



def apply_gradients(optimizer, params, grads, lr: float, grad_clip: float = 0.0) -> None:
    """Give ``params`` the gradients ``grads`` (taken with respect to exactly them), clip their global norm when
    ``grad_clip > 0``, step at ``lr`` and clear: the update of every task whose step takes its gradients itself."""
    for p, g in zip(params, grads):
        p._set_grad_ivar(g)
    if grad_clip > 0:
        optimizer.clip_grad_norm(grad_clip)
    optimizer.step(lr)
    optimizer.zero_grad()

class Task(Classification):
    def __init__(self, backend, model: paddle.nn.Layer, cfg, spec=None, for_eval: bool = False):
        super().__init__(cfg, for_eval=for_eval)
        self.backend = backend
        self.model = model
        self.optimizer = None
        self.ema = None
        self.optimizers = {}
        if not for_eval:
            self.optimizer = optim.build_optimizer(cfg, layout.trainable_named_parameters(model), model=model)
            self.optimizers = {"weights": self.optimizer}
            if self.keeps_ema:
                self.ema = optim.ModelEma(model, cfg.TRAIN.EMA_DECAY)
        # Dropout / drop-path masks come from numpy, so both backends draw the same ones.
        self.masks = MaskSource(cfg.SEED)
        ops.attach_mask_source(model, self.masks)

    # ------------------------------------------------------------------------------------------ training
    def train_step(self, batches: Mapping[str, Batch], lrs: Mapping[str, float], step: int) -> Dict[str, float]:
        images, labels = batches["train"]
        model = self.model
        if not model.training:  # switching modes walks every submodule; do it only when needed
            model.train()
        self.masks.start_step(step)
        if hasattr(model, "set_training_step"):
            model.set_training_step(step)
        x = self.backend.to_tensor(images)
        y = paddle.to_tensor(np.asarray(labels, dtype=np.int64))
        loss, logits = compose_loss(model(x), y, self.label_smoothing, self.aux_weight)
        self.optimizer.zero_grad()
        loss.backward()
        grads = [p.grad for p in self.optimizer._params.values()]
        checks = paddle.stack([paddle.isfinite(loss.detach()).all(), all_finite([logits.detach()]), all_finite(grads)])
        (top1,) = losses.accuracy_topk(logits.detach(), y, ks=(1,))
        finite = checks.numpy()
        if not finite.all():  # the weights are not touched: the last good state stays in memory and on disk
            what = [w for w, ok in zip(("loss", "logits", "gradients"), finite) if not ok]
            raise NonFiniteError(f"non-finite {' and '.join(what)} (loss {float(loss.detach()):.4g})")
        if self.grad_clip > 0:
            self.optimizer.clip_grad_norm(self.grad_clip)
        self.optimizer.step(lrs["weights"])
        if self.ema is not None:
            self.ema.update(model)
        return {"loss": float(loss.detach()), "top1": float(top1) / 100.0, "count": len(labels)}

    # ------------------------------------------------------------------------------------------ evaluation
    def eval_batch(self, images: np.ndarray, labels: np.ndarray, variant: str = "val") -> Dict[str, float]:
        model = self.ema.module if (variant == "ema_val" and self.ema is not None) else self.model
        return eval_sums(self.backend, model, images, labels, self.topk)


def eval_sums(backend, model, images: np.ndarray, labels: np.ndarray, topk: int) -> Dict[str, float]:
    """Evaluation sums of ``model`` (eval mode) on one batch: summed loss, top-1, top-``topk``, ``count`` and
    ``nonfinite`` (samples whose logits are not all finite); every classifying task's ``eval_batch``."""
    if model.training:
        model.eval()
    with paddle.no_grad():
        x = backend.to_tensor(images)
        y = paddle.to_tensor(np.asarray(labels, dtype=np.int64))
        logits = class_logits(model(x))
        n = int(y.shape[0])
        bad = int(paddle.logical_not(paddle.isfinite(logits).all(axis=1)).astype("int64").sum())
        loss = losses.cross_entropy(logits, y)
        top1, top5 = losses.accuracy_topk(logits, y, ks=(1, topk))
    return {"loss": float(loss) * n, "top1": float(top1) * n / 100.0, "top5": float(top5) * n / 100.0,
            "count": n, "nonfinite": bad}


#: the parity harness and older callers build it as a trainer
Trainer = Task
