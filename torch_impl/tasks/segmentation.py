"""Semantic segmentation in PyTorch: the twin of ``paddle_impl/tasks/segmentation.py``; the declarations and the
metrics are in ``common/tasks/segmentation.py``."""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import numpy as np
import torch

from common.tasks import Batch, NonFiniteError
from common.tasks.segmentation import Segmentation
from torch_impl import layout, losses, ops, optim
from torch_impl.tasks.classification import all_finite, apply_gradients


def pixel_losses(logits: torch.Tensor, labels: torch.Tensor, ignore_label: int) -> Tuple[torch.Tensor, torch.Tensor,
                                                                                          torch.Tensor]:
    """``(summed cross-entropy over valid pixels, valid pixel count, upsampled logits)``: the logits resized
    bilinearly to the label map, log-softmax over classes (``losses.log_softmax``), the labelled class's negative log-probability."""
    up = ops.resize_bilinear(logits, labels.shape[-2:])
    logp = losses.log_softmax(up, 1)
    valid = labels != ignore_label
    picked = logp.gather(1, torch.where(valid, labels, torch.zeros_like(labels)).unsqueeze(1)).squeeze(1)
    return -(picked * valid).sum(), valid.sum(), up


class Task(Segmentation):
    def __init__(self, backend, model: torch.nn.Module, cfg, spec=None, for_eval: bool = False):
        super().__init__(cfg, for_eval=for_eval)
        self.backend = backend
        self.model = model
        self.optimizers = {}
        if not for_eval:
            self.optimizer = optim.build_optimizer(cfg, layout.trainable_named_parameters(model), model=model)
            self.optimizers = {"weights": self.optimizer}

    def _labels(self, labels: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)).to(self.backend.device)

    def train_step(self, batches: Mapping[str, Batch], lrs: Mapping[str, float], step: int) -> Dict[str, float]:
        images, labels = batches["train"]
        model = self.model
        if not model.training:
            model.train()
        y = self._labels(labels)
        total, pixels, up = pixel_losses(model(self.backend.to_tensor(images)), y, self.ignore_label)
        loss = total / pixels.clamp(min=1)
        params = list(self.optimizer._params.values())
        grads = torch.autograd.grad(loss, params)
        finite = torch.stack([torch.isfinite(loss.detach()), all_finite(grads)]).cpu().numpy()
        if not finite.all():  # the weights are not touched
            what = [w for w, ok in zip(("loss", "gradients"), finite) if not ok]
            raise NonFiniteError(f"non-finite {' and '.join(what)} (loss {float(loss.detach()):.4g})")
        apply_gradients(self.optimizer, params, grads, lrs["weights"], self.grad_clip)
        with torch.no_grad():
            valid = y != self.ignore_label
            hits = ((up.argmax(dim=1) == y) & valid).sum()
            acc = float(hits) / max(int(valid.sum()), 1)
        return {"loss": float(loss.detach()), "pixel_acc": acc, "count": len(labels)}

    @torch.no_grad()
    def eval_batch(self, images: np.ndarray, labels: np.ndarray, variant: str = "val") -> Dict[str, float]:
        if self.model.training:
            self.model.eval()
        y = self._labels(labels)
        total, pixels, up = pixel_losses(self.model(self.backend.to_tensor(images)), y, self.ignore_label)
        bad = int((~torch.isfinite(up).flatten(1).all(dim=1)).sum())
        pred = up.argmax(dim=1).cpu().numpy()
        return self.collect(pred, labels, float(total), int(pixels), bad)
