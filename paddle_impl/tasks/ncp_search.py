"""NCP's gradient on the code in Paddle: the twin of ``torch_impl/tasks/ncp_search.py``; the search itself
(steps, clamping, rounding, budgets, the record) is ``common/ncp_search.py``."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import paddle


class Propagator:
    """Frozen predictors in eval mode: the first reads the search variable ``z`` (its own normalised code), the
    others the same code in their own normalisation."""

    def __init__(self, backend, models: Sequence[paddle.nn.Layer]):
        self.backend = backend
        self.models = list(models)
        for model in self.models:
            model.eval()
            for p in model.parameters():
                p.stop_gradient = True

    def gradient(self, z: np.ndarray, weights: Sequence[np.ndarray]) -> Tuple[List[np.ndarray], np.ndarray]:
        """Normalised predictions at ``z`` and ``d/dz sum_k <weights[k], predictor_k(z)>``."""
        zt = self.backend.to_tensor(np.asarray(z)[None, :])
        zt.stop_gradient = False
        main = self.models[0]
        code = zt * main.input_std + main.input_mean
        total, outs = 0.0, []
        for model, w in zip(self.models, weights):
            out = model.forward_normalised(zt if model is main else model.normalise(code))
            outs.append(out)
            total = total + (out[0] * self.backend.to_tensor(np.asarray(w))).sum()
        (grad,) = paddle.grad(total, [zt])
        return [o.detach().numpy() for o in outs], grad[0].numpy().astype(np.float64)

    @paddle.no_grad()
    def predict(self, codes: np.ndarray) -> List[np.ndarray]:
        x = self.backend.to_tensor(np.asarray(codes))
        return [model(x).numpy() for model in self.models]
