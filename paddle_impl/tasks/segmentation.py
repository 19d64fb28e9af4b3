"""Semantic segmentation in Paddle: the twin of ``torch_impl/tasks/segmentation.py``; the declarations and the
metrics are in ``common/tasks/segmentation.py``."""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import numpy as np
import paddle

from common.tasks import Batch, NonFiniteError
from common.tasks.segmentation import Segmentation
from paddle_impl import layout, losses, ops, optim
from paddle_impl.tasks.classification import all_finite, apply_gradients


def pixel_losses(logits: paddle.Tensor, labels: paddle.Tensor, ignore_label: int) -> Tuple[paddle.Tensor,
                                                                                           paddle.Tensor,
                                                                                           paddle.Tensor]:
    """``(summed cross-entropy over valid pixels, valid pixel count, upsampled logits)``: the logits resized
    bilinearly to the label map, log-softmax over classes (``losses.log_softmax``), the labelled class's negative log-probability."""
    up = ops.resize_bilinear(logits, labels.shape[-2:])
    logp = losses.log_softmax(up, axis=1)  # paddle's own clamps x - max at -64
    valid = labels != ignore_label
    index = paddle.where(valid, labels, paddle.zeros_like(labels)).unsqueeze(1)
    picked = paddle.take_along_axis(logp, index, axis=1).squeeze(1)
    return -(picked * valid.astype(picked.dtype)).sum(), valid.astype("int64").sum(), up


class Task(Segmentation):
    def __init__(self, backend, model: paddle.nn.Layer, cfg, spec=None, for_eval: bool = False):
        super().__init__(cfg, for_eval=for_eval)
        self.backend = backend
        self.model = model
        self.optimizers = {}
        if not for_eval:
            self.optimizer = optim.build_optimizer(cfg, layout.trainable_named_parameters(model), model=model)
            self.optimizers = {"weights": self.optimizer}

    def _labels(self, labels: np.ndarray) -> paddle.Tensor:
        return paddle.to_tensor(np.ascontiguousarray(labels, dtype=np.int64))

    def train_step(self, batches: Mapping[str, Batch], lrs: Mapping[str, float], step: int) -> Dict[str, float]:
        images, labels = batches["train"]
        model = self.model
        if not model.training:
            model.train()
        y = self._labels(labels)
        total, pixels, up = pixel_losses(model(self.backend.to_tensor(images)), y, self.ignore_label)
        loss = total / paddle.clip(pixels, min=1).astype(total.dtype)
        params = list(self.optimizer._params.values())
        grads = paddle.grad(loss, params)
        finite = paddle.stack([paddle.isfinite(loss.detach()).all(), all_finite(grads)]).numpy()
        if not finite.all():  # the weights are not touched
            what = [w for w, ok in zip(("loss", "gradients"), finite) if not ok]
            raise NonFiniteError(f"non-finite {' and '.join(what)} (loss {float(loss.detach()):.4g})")
        apply_gradients(self.optimizer, params, grads, lrs["weights"], self.grad_clip)
        with paddle.no_grad():
            valid = y != self.ignore_label
            hits = paddle.logical_and(up.argmax(axis=1) == y, valid).astype("int64").sum()
            acc = float(hits) / max(int(valid.astype("int64").sum()), 1)
        return {"loss": float(loss.detach()), "pixel_acc": acc, "count": len(labels)}

    @paddle.no_grad()
    def eval_batch(self, images: np.ndarray, labels: np.ndarray, variant: str = "val") -> Dict[str, float]:
        if self.model.training:
            self.model.eval()
        y = self._labels(labels)
        total, pixels, up = pixel_losses(self.model(self.backend.to_tensor(images)), y, self.ignore_label)
        bad = int(paddle.logical_not(paddle.isfinite(up).flatten(1).all(axis=1)).astype("int64").sum())
        pred = up.argmax(axis=1).numpy()
        return self.collect(pred, labels, float(total), int(pixels), bad)
