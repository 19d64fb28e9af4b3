"""Training NCP's accuracy predictor in PyTorch: the twin of ``paddle_impl/tasks/ncp_predictor.py``; the
declarations and the evaluation metrics are in ``common/tasks/ncp_predictor.py``."""
from __future__ import annotations

from typing import Dict, Mapping

import numpy as np
import torch

from common.random_masks import MaskSource
from common.tasks import Batch, NonFiniteError
from common.tasks.ncp_predictor import NCPPredictor
from torch_impl import layout, ops, optim
from torch_impl.tasks.classification import all_finite, apply_gradients


def smooth_l1(pred: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Mean smooth-L1 (torch ``SmoothL1Loss()``), written out as in ``common.tasks.ncp_predictor.smooth_l1``."""
    a = (pred - target).abs()
    return torch.where(a < beta, 0.5 * a * a / beta, a - 0.5 * beta).mean()


class Task(NCPPredictor):
    def __init__(self, backend, model: torch.nn.Module, cfg, spec=None, for_eval: bool = False):
        super().__init__(cfg, for_eval=for_eval, spec=spec)
        self.backend = backend
        self.model = model
        self.optimizers = {}
        if not for_eval:
            self.optimizer = optim.build_optimizer(cfg, layout.trainable_named_parameters(model), model=model)
            self.optimizers = {"weights": self.optimizer}
        self.masks = MaskSource(cfg.SEED)   # dropout masks from numpy: the same on both backends
        ops.attach_mask_source(model, self.masks)

    def _tensor(self, array: np.ndarray):
        return self.backend.to_tensor(array)

    def train_step(self, batches: Mapping[str, Batch], lrs: Mapping[str, float], step: int) -> Dict[str, float]:
        codes, targets = batches["train"]
        model = self.model
        if not model.training:
            model.train()
        self.masks.start_step(step)
        pred = model(self._tensor(codes))
        loss = smooth_l1(pred, self._tensor(targets))
        params = list(self.optimizer._params.values())
        grads = torch.autograd.grad(loss, params)
        checks = torch.stack([torch.isfinite(loss.detach()), all_finite([pred.detach()]), all_finite(grads)])
        finite = checks.cpu().numpy()
        if not finite.all():  # the weights are not touched
            what = [w for w, ok in zip(("loss", "predictions", "gradients"), finite) if not ok]
            raise NonFiniteError(f"non-finite {' and '.join(what)} (loss {float(loss.detach()):.4g})")
        apply_gradients(self.optimizer, params, grads, lrs["weights"], self.grad_clip)
        return {"loss": float(loss.detach()), "count": len(codes)}

    @torch.no_grad()
    def predict(self, codes: np.ndarray) -> np.ndarray:
        """Normalised predictions of raw codes, eval mode."""
        if self.model.training:
            self.model.eval()
        return self.model(self._tensor(codes)).cpu().numpy()

    def eval_batch(self, codes: np.ndarray, targets: np.ndarray, variant: str = "val") -> Dict[str, float]:
        return self.collect(self.predict(codes), targets)
