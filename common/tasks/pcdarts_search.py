"""The PC-DARTS search, the framework-free half (twins: ``torch_impl/tasks/pcdarts_search.py``,
``paddle_impl/tasks/pcdarts_search.py``).

Two data streams: ``train`` (the first ``PCDARTS.TRAIN_PORTION`` of the training set) trains the weights,
``search`` (the rest) the architecture.  Two optimizers: ``weights`` (``OPTIM``: SGD momentum 0.9, weight decay
3e-4, clip 5) and ``arch`` (``ARCH_OPTIM``: Adam 6e-4, betas (0.5, 0.999), weight decay 1e-3) over the four
architecture parameters.  A step (upstream ``train_search.py``), from epoch ``PCDARTS.ARCH_START_EPOCH`` on:

  1. the architecture step on the search batch: the gradient of the validation loss with respect to alphas and
     betas only (first order), or, with ``PCDARTS.UNROLLED``, the DARTS second-order gradient
     ``dL_val(w', a)/da - eta * (dL_train(w+, a)/da - dL_train(w-, a)/da) / 2R`` with ``w'`` one momentum-SGD step
     of the weights on the training loss and ``w+- = w +- R v``, ``v = dL_val(w')/dw'``, ``R = HVP_R / ||v||``;
  2. the weight step on the train batch: the training-loss gradient only, clipped, SGD.

Validation-loss gradients never reach the weights: the architecture step differentiates with respect to the
architecture parameters alone, so no weight holds a gradient from it (tested).  After every epoch: the genotype
(:func:`common.specs.pcdarts.derive_genotype`), the alpha / beta softmaxes and their entropies in the log, in
``arch/epoch-NNNN.json`` and ``genotype.json`` (what ``PCDARTS.GENOTYPE`` takes), and pictures of both cells in
``arch/``.  The checkpoint keeps the weights, the architecture parameters, both optimizers and the genotype history.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import numpy as np

from common.checkpoint import Checkpoint, CheckpointError
from common.specs import pcdarts as P
from common.tasks import TaskBase


class PCDartsSearch(TaskBase):
    kind = "pcdarts_search"
    streams = ("train", "search")
    optimizer_nodes = {"weights": "OPTIM", "arch": "ARCH_OPTIM"}
    train_stats = ("loss", "top1")
    eval_stats = ("loss", "top1", "top5")
    stat_scale = {"top1": 100.0, "top5": 100.0}
    #: the architecture parameters, in the order :meth:`arch_gradient` returns their gradients
    arch_names = P.ARCH_NAMES

    def __init__(self, cfg, for_eval: bool = False):
        node = cfg.PCDARTS
        self.unrolled = bool(node.UNROLLED)
        self.hvp = str(node.HVP)
        self.hvp_r = float(node.HVP_R)
        self.arch_start = int(node.ARCH_START_EPOCH)
        self.train_portion = float(node.TRAIN_PORTION)
        self.grad_clip = float(cfg.OPTIM.GRAD_CLIP)
        self.arch_grad_clip = float(cfg.ARCH_OPTIM.GRAD_CLIP)
        self.num_classes = int(cfg.MODEL.NUM_CLASSES)
        self.topk = min(5, self.num_classes)
        self.draw = bool(node.PLOT_CELLS)
        self.arch_active = False
        self.extra: Dict[str, Any] = {"genotypes": [], "arch_steps": 0}
        self._epoch_arch: Dict[str, float] = {}

    # ------------------------------------------------------------------------------------------ declarations
    def score_key(self) -> Optional[str]:
        return "val_top1"

    def extra_fields(self):
        return ("train_arch_loss", "train_arch_top1", "arch_steps", "entropy_normal", "entropy_reduce",
                "genotype_changed")

    def start_epoch(self, epoch: int) -> None:
        """Architecture steps run from ``PCDARTS.ARCH_START_EPOCH`` on (upstream: ``if epoch >= 15``)."""
        self.arch_active = epoch >= self.arch_start
        self._epoch_arch = {"loss": 0.0, "top1": 0.0, "count": 0.0, "steps": 0}

    def parity_epoch(self) -> int:
        """The epoch the parity harness's search steps run in: architecture steps on."""
        return self.arch_start

    def record_arch(self, loss: float, top1: float, count: int) -> None:
        """Called by the backend's step after each architecture update (its validation loss and accuracy)."""
        acc = self._epoch_arch
        acc["loss"] += loss * count
        acc["top1"] += top1 * count
        acc["count"] += count
        acc["steps"] += 1
        self.extra["arch_steps"] += 1

    # ------------------------------------------------------------------------------------------ architecture
    def arch_arrays(self) -> Dict[str, np.ndarray]:
        """The architecture parameters as float64 numpy arrays (backend: :meth:`arch_tensors`)."""
        return {name: np.asarray(self.backend.to_numpy(t), dtype=np.float64)
                for name, t in zip(P.ARCH_NAMES, self.arch_tensors())}

    def arch_tensors(self) -> List[Any]:
        return self.model.arch_parameters()

    def genotype(self) -> P.Genotype:
        return P.derive_genotype(self.arch_arrays(), self.model.spec.steps, self.model.spec.multiplier)

    def parity_derived(self) -> Dict[str, np.ndarray]:
        """The genotype as integer arrays (the parity harness's ``derived`` stage): per cell type, one row per kept
        edge ``[PRIMITIVES index, input state]``, in the genotype's order."""
        genotype = self.genotype()
        return {f"genotype {cell}": np.array([[P.PRIMITIVES.index(op), j] for op, j in genotype.edges(cell == "reduce")],
                                             dtype=np.int64) for cell in ("normal", "reduce")}

    def epoch_end(self, epoch: int) -> Dict[str, Any]:
        arch = self.arch_arrays()
        genotype = P.derive_genotype(arch, self.model.spec.steps, self.model.spec.multiplier)
        summary = P.arch_summary(arch, self.model.spec.steps)
        history = self.extra["genotypes"]
        changed = bool(history) and history[-1]["genotype"] != genotype.as_dict()
        history[:] = [h for h in history if h["epoch"] < epoch + 1]  # a repeated epoch (resume) replaces its entry
        history.append({"epoch": epoch + 1, "genotype": genotype.as_dict()})
        acc = self._epoch_arch
        group = getattr(self.backend, "dist", None)
        if group is not None and acc.get("count") is not None:  # each rank's search batches
            loss, top1, count = group.sum_floats([acc["loss"], acc["top1"], acc["count"]])
            acc = dict(acc, loss=loss, top1=top1, count=count)
        out: Dict[str, Any] = {
            "arch_steps": int(acc.get("steps", 0)),
            "entropy_normal": summary["entropy_normal"],
            "entropy_reduce": summary["entropy_reduce"],
            "genotype_changed": int(changed),
        }
        if acc.get("count"):
            out["train_arch_loss"] = acc["loss"] / acc["count"]
            out["train_arch_top1"] = 100.0 * acc["top1"] / acc["count"]
        log = [f"genotype after epoch {epoch + 1}: {genotype.to_upstream()}"]
        for cell in ("normal", "reduce"):
            log.append(f"softmax(alphas_{cell}) per edge [{', '.join(P.PRIMITIVES)}]:\n"
                       + "\n".join("  " + " ".join(f"{v:.3f}" for v in row) for row in summary[f"alphas_{cell}_softmax"]))
            log.append(f"normalised betas_{cell}: " + " ".join(f"{v:.3f}" for v in summary[f"betas_{cell}_normalised"]))
        if self.run_dir:
            self.write_arch_files(epoch, genotype, summary)
            log.append(f"genotype written to {os.path.join(self.run_dir, 'genotype.json')}")
        out["_log"] = log
        return out

    def write_arch_files(self, epoch: int, genotype: P.Genotype, summary: Dict[str, Any]) -> None:
        """``arch/epoch-NNNN.json`` (genotype + softmaxes), ``genotype.json`` (the latest: the search's result) and
        the cell pictures ``arch/epoch-NNNN-{normal,reduce}.png``; every file written atomically."""
        from common.io_utils import atomic_write_text

        folder = os.path.join(self.run_dir, "arch")
        os.makedirs(folder, exist_ok=True)
        record = {"epoch": epoch + 1, "genotype": genotype.as_dict(), "genotype_upstream": genotype.to_upstream(),
                  **summary}
        atomic_write_text(os.path.join(folder, f"epoch-{epoch + 1:04d}.json"), json.dumps(record, indent=1) + "\n")
        if self.draw:
            from common.cell_pictures import draw_genotype

            draw_genotype(genotype, folder, prefix=f"epoch-{epoch + 1:04d}-")
        P.save_genotype(genotype, os.path.join(self.run_dir, "genotype.json"))

    # ------------------------------------------------------------------------------------------ state
    def to_checkpoint(self) -> Checkpoint:
        ckpt = super().to_checkpoint()  # weights + alphas/betas (module parameters) and both optimizers
        ckpt.extra = {"genotypes": list(self.extra["genotypes"]), "arch_steps": int(self.extra["arch_steps"])}
        return ckpt

    def load_checkpoint(self, ckpt: Checkpoint, source: str = "<memory>") -> None:
        extra = ckpt.extra or {}
        if not {"genotypes", "arch_steps"} <= set(extra):
            raise CheckpointError(f"{source}: not a PC-DARTS search checkpoint (no genotype history); to start a "
                                  "search from its weights use MODEL.WEIGHTS")
        super().load_checkpoint(ckpt, source)
        self.extra = {"genotypes": list(extra["genotypes"]), "arch_steps": int(extra["arch_steps"])}

    # ------------------------------------------------------------------------------------------ helpers
    def finite_difference_step(self, v_norm: float) -> float:
        """``R = HVP_R / ||v||`` (upstream ``r / concat(vector).norm()``)."""
        if not np.isfinite(v_norm) or v_norm <= 0.0:
            from common.tasks import NonFiniteError

            raise NonFiniteError(f"the validation-gradient norm for the Hessian-vector product is {v_norm!r}")
        return self.hvp_r / v_norm


#: the framework-free task of this kind (``engine.check_streams`` builds it from the config alone)
BASE = PCDartsSearch
