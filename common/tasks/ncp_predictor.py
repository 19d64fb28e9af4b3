"""Training NCP's accuracy predictor, the framework-free half (twins: ``torch_impl/tasks/ncp_predictor.py``,
``paddle_impl/tasks/ncp_predictor.py``).  Facts: ``shared/research/ncp.md`` section 4.

One stream (``train``: table rows ``(code, z-scored metrics)``), one optimizer (``weights``: upstream Adam 1e-2,
weight decay 1e-7, one-cycle LR per update), the smooth-L1 loss (beta 1, mean over every metric of the batch) on the
normalised outputs.  Evaluation on the held-out rows, in the benchmark's units: per metric the mean absolute error
over all held-out rows (``mae_<metric>``; upstream averages per-batch means, which weights a short last batch more),
Kendall's tau-b and Spearman's rho (``tau_<metric>``, ``rho_<metric>``).  ``best`` is the lowest main-metric MAE,
upstream's choice.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional

import numpy as np

from common.tasks import TaskBase


def smooth_l1(diff: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """Elementwise smooth-L1 of ``pred - target`` (the formula both twins write with their own ops)."""
    a = np.abs(diff)
    return np.where(a < beta, 0.5 * a * a / beta, a - 0.5 * beta)


class NCPPredictor(TaskBase):
    kind = "ncp_predictor"
    streams = ("train",)
    optimizer_nodes = {"weights": "OPTIM"}
    train_stats = ("loss",)
    score_mode = "min"

    def __init__(self, cfg, for_eval: bool = False, spec=None):
        if spec is None:
            from common.specs import ncp

            spec = ncp.spec_from_config(cfg)
        self.spec = spec
        self.metrics = spec.metrics
        self.grad_clip = float(cfg.OPTIM.GRAD_CLIP)
        self.eval_stats = ("loss", *(f"{k}_{m}" for m in self.metrics for k in ("mae", "tau", "rho")))
        self._pred: List[np.ndarray] = []
        self._true: List[np.ndarray] = []

    def score_key(self) -> Optional[str]:
        return f"val_mae_{self.spec.main_metric}"

    # ---- evaluation: the twins' eval_batch hands normalised predictions and targets to collect()
    def collect(self, pred: np.ndarray, target: np.ndarray) -> Dict[str, float]:
        pred = np.asarray(pred, dtype=np.float64)
        target = np.asarray(target, dtype=np.float64)
        bad = int((~np.isfinite(pred).all(axis=1)).sum())
        self._pred.append(pred)
        self._true.append(target)
        return {"loss": float(smooth_l1(pred - target).mean()) * len(pred), "count": len(pred), "nonfinite": bad}

    def finish_eval(self, sums: Mapping[str, float]) -> Dict[str, float]:
        from common.data.nasbench_mr import kendall_tau_b, mae, spearman_rho
        from common.specs.ncp import denormalise

        if not self._pred:
            return {}
        pred = denormalise(self.spec, np.concatenate(self._pred))
        true = denormalise(self.spec, np.concatenate(self._true))
        self._pred, self._true = [], []
        out = {"loss": sums["loss"] / sums["count"]}
        for j, m in enumerate(self.metrics):
            out[f"mae_{m}"] = float(mae(pred[:, j], true[:, j]))
            out[f"tau_{m}"] = float(kendall_tau_b(pred[:, j], true[:, j]))
            out[f"rho_{m}"] = float(spearman_rho(pred[:, j], true[:, j]))
        return out


#: the framework-free task of this kind (``engine.check_streams`` builds it from the config alone)
BASE = NCPPredictor
