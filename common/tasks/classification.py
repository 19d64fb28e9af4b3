"""Image classification, the framework-free half (twins: ``torch_impl/tasks/classification.py``,
``paddle_impl/tasks/classification.py``).

One stream (``train``), one optimizer (``weights``, from ``OPTIM``), cross-entropy with label smoothing plus
``TRAIN.AUX_WEIGHT`` times an auxiliary head's loss, top-1 / top-5, an optional EMA of the weights evaluated as
``ema_val_*`` and used as the score.  The loss is composed once per backend in :func:`compose_loss` of the twin
module, which the parity harness's capture uses too.
"""
from __future__ import annotations

from typing import List, Optional

from common.tasks import TaskBase


class Classification(TaskBase):
    kind = "classification"
    streams = ("train",)
    optimizer_nodes = {"weights": "OPTIM"}
    train_stats = ("loss", "top1")
    eval_stats = ("loss", "top1", "top5")
    stat_scale = {"top1": 100.0, "top5": 100.0}

    def __init__(self, cfg, for_eval: bool = False):
        self.label_smoothing = float(cfg.TRAIN.LABEL_SMOOTHING)
        self.aux_weight = float(cfg.TRAIN.AUX_WEIGHT)
        self.grad_clip = float(cfg.OPTIM.GRAD_CLIP)
        self.num_classes = int(cfg.MODEL.NUM_CLASSES)
        self.topk = min(5, self.num_classes)
        self.keeps_ema = (not for_eval) and cfg.TRAIN.EMA_DECAY > 0
        self.epochs = int(cfg.TRAIN.EPOCHS)

    def start_epoch(self, epoch: int) -> None:
        """A network whose regularisation follows the epoch (PC-DARTS: drop path ``MODEL.DROP_PATH * epoch /
        TRAIN.EPOCHS``) is told the epoch before its first step."""
        set_epoch = getattr(self.model, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch, self.epochs)

    def eval_variants(self) -> List[str]:
        return ["val", "ema_val"] if self.keeps_ema else ["val"]

    def score_key(self) -> Optional[str]:
        return "ema_val_top1" if self.keeps_ema else "val_top1"


#: the framework-free task of this kind (``engine.check_streams`` builds it from the config alone)
BASE = Classification
