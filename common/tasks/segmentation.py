"""Semantic segmentation, the framework-free half (twins: ``torch_impl/tasks/segmentation.py``,
``paddle_impl/tasks/segmentation.py``).

One stream (``train``: ``(images, label maps)``, ``common/data/segmentation.py``), one optimizer (``weights``).  The
network's logits (1/4 resolution for the NAS-Bench-MR head) are resized bilinearly (``align_corners=False``) to the
label map and scored by per-pixel cross-entropy averaged over the pixels whose label is not ``SEG.IGNORE_LABEL``
(written out identically in both twins).  Evaluation accumulates a confusion matrix over the whole split: mIoU,
mAcc and aAcc in percent (``common.data.segmentation.seg_metrics``); ``best`` is the highest mIoU.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np

from common.tasks import TaskBase


class Segmentation(TaskBase):
    kind = "segmentation"
    streams = ("train",)
    optimizer_nodes = {"weights": "OPTIM"}
    train_stats = ("loss", "pixel_acc")
    eval_stats = ("loss", "mIoU", "mAcc", "aAcc")
    stat_scale = {"pixel_acc": 100.0}

    def __init__(self, cfg, for_eval: bool = False):
        self.num_classes = int(cfg.MODEL.NUM_CLASSES)
        self.ignore_label = int(cfg.SEG.IGNORE_LABEL)
        self.grad_clip = float(cfg.OPTIM.GRAD_CLIP)
        self._conf = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def score_key(self) -> Optional[str]:
        return "val_mIoU"

    def collect(self, pred: np.ndarray, labels: np.ndarray, loss_sum: float, pixels: int,
                nonfinite: int) -> Dict[str, float]:
        """Accumulate one batch's confusion; the sums the loop adds up (the loss per valid pixel)."""
        from common.data.segmentation import confusion

        self._conf += confusion(pred, labels, self.num_classes, self.ignore_label)
        return {"loss": loss_sum, "pixels": pixels, "count": len(labels), "nonfinite": nonfinite}

    def finish_eval(self, sums: Mapping[str, float]) -> Dict[str, float]:
        from common.data.segmentation import seg_metrics

        conf, self._conf = self._conf, np.zeros_like(self._conf)
        if not sums.get("count"):
            return {}
        miou, macc, aacc = seg_metrics(conf)
        return {"loss": sums["loss"] / max(sums["pixels"], 1.0), "mIoU": miou, "mAcc": macc, "aAcc": aacc}


#: the framework-free task of this kind (``engine.check_streams`` builds it from the config alone)
BASE = Segmentation
