"""One training / evaluation step in Paddle; ``common/engine.py`` runs the loop around it.

Twin of ``torch_impl/trainer.py``: same class, same methods, same formulas.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import paddle

from common.checkpoint import Checkpoint, CheckpointError
from common.random_masks import MaskSource
from paddle_impl import layout, losses, ops, optim


class Trainer:
    def __init__(self, backend, model: paddle.nn.Layer, cfg, spec=None, for_eval: bool = False):
        self.backend = backend
        self.model = model
        self.label_smoothing = float(cfg.TRAIN.LABEL_SMOOTHING)
        self.aux_weight = float(cfg.TRAIN.AUX_WEIGHT)
        self.grad_clip = float(cfg.OPTIM.GRAD_CLIP)
        self.num_classes = int(cfg.MODEL.NUM_CLASSES)
        self.optimizer = None
        self.ema = None
        if not for_eval:
            self.optimizer = optim.build_optimizer(cfg, layout.trainable_named_parameters(model), model=model,
                                                   unused_grads=cfg.OPTIM.UNUSED_GRADS)
            if cfg.TRAIN.EMA_DECAY > 0:
                self.ema = optim.ModelEma(model, cfg.TRAIN.EMA_DECAY)
        # Dropout / drop-path masks come from numpy, so both backends draw the same ones.
        self.masks = MaskSource(cfg.SEED)
        ops.attach_mask_source(model, self.masks)

    def train_step(self, images: np.ndarray, labels: np.ndarray, lr: float, step: int = 0) -> Dict[str, float]:
        model = self.model
        if not model.training:  # switching modes walks every submodule; do it only when needed
            model.train()
        self.masks.start_step(step)
        if hasattr(model, "set_training_step"):
            model.set_training_step(step)
        x = self.backend.to_tensor(images)
        y = paddle.to_tensor(np.asarray(labels, dtype=np.int64))
        out = model(x)
        logits, aux = out if isinstance(out, tuple) else (out, None)
        loss = losses.cross_entropy(logits, y, self.label_smoothing)
        if aux is not None and self.aux_weight:
            loss = loss + self.aux_weight * losses.cross_entropy(aux, y, self.label_smoothing)
        self.optimizer.zero_grad()
        loss.backward()
        if self.grad_clip > 0:
            self.optimizer.clip_grad_norm(self.grad_clip)
        self.optimizer.step(lr)
        if self.ema is not None:
            self.ema.update(model)
        (top1,) = losses.accuracy_topk(logits.detach(), y, ks=(1,))
        return {"loss": float(loss.detach()), "top1": float(top1) / 100.0}

    def eval_batch(self, images: np.ndarray, labels: np.ndarray, use_ema: bool = False) -> Dict[str, float]:
        model = self.ema.module if (use_ema and self.ema is not None) else self.model
        if model.training:
            model.eval()
        with paddle.no_grad():
            x = self.backend.to_tensor(images)
            y = paddle.to_tensor(np.asarray(labels, dtype=np.int64))
            logits = model(x)
            n = int(y.shape[0])
            loss = losses.cross_entropy(logits, y)
            top1, top5 = losses.accuracy_topk(logits, y, ks=(1, min(5, self.num_classes)))
        return {"loss_sum": float(loss) * n, "correct1": float(top1) * n / 100.0,
                "correct5": float(top5) * n / 100.0, "count": n}

    def to_checkpoint(self) -> Checkpoint:
        return Checkpoint(
            model=layout.state_to_neutral(self.model),
            ema=self.ema.state_to_neutral() if self.ema is not None else None,
            optimizer=self.optimizer.state_to_neutral() if self.optimizer is not None else None,
        )

    def load_checkpoint(self, ckpt: Checkpoint, source: str = "<memory>") -> None:
        layout.load_neutral(self.model, ckpt.model, source)
        if self.ema is not None:
            if ckpt.ema is None:
                raise CheckpointError(f"{source}: the run keeps an EMA (TRAIN.EMA_DECAY > 0) but the checkpoint has none")
            self.ema.load_neutral(ckpt.ema, source)
        if self.optimizer is not None:
            if ckpt.optimizer is None:
                raise CheckpointError(f"{source}: no optimizer state, so training cannot resume from it "
                                      "(use MODEL.WEIGHTS to start from its weights instead)")
            self.optimizer.load_neutral(ckpt.optimizer, source)

    @property
    def ema_model(self) -> Optional[paddle.nn.Layer]:
        return None if self.ema is None else self.ema.module
