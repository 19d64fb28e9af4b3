"""The Cream of the Crop supernet search, the framework-free half (twins: ``torch_impl/tasks/cream_search.py``,
``paddle_impl/tasks/cream_search.py``).  Facts: ``shared/research/cream.md`` §1.5, §2.

One data stream (``train``), two optimizers: ``weights`` (``OPTIM``: SGD nesterov momentum 0.9, weight decay 1e-4
off biases and 1-D parameters, LR 1.0 decaying linearly to 0 per step) over the supernet, and ``meta``
(``META_OPTIM``: SGD nesterov, LR 1e-4 following the same decay, no weight decay, clip 1) over the meta matching
network (``meta_layer``, kept in float64 by default: ``CREAM.META_DTYPE``).  A step (upstream ``train_epoch``):

  1. the student path: drawn from seeded numpy (:func:`common.specs.cream.sample_path`, a function of SEED and
     the global step, so every rank and a resumed run draw the same one) with the board's probabilities;
  2. every ``CREAM.UPDATE_ITER`` steps of an epoch after ``CREAM.META_START_EPOCH``, with a non-empty board: the
     meta matching network update (backend ``meta_update``; see the twin's docstring for the formula);
  3. the teacher from the board ('meta': the entry the matching network scores highest; 'top1': the first) and
     the meta value ``sigmoid(-w)``;
  4. the loss: label-smoothed CE of the student path, and after ``META_START_EPOCH`` with a teacher
     ``(m * KD + (2 - m) * CE) / 2`` (KD: cross-entropy against the teacher path's softmax on the same batch,
     teacher forward without gradients, in training mode as upstream: its BN statistics move);
  5. one weights step; the path enters the board by its batch top-1 and FLOPs (:mod:`common.cream_board`).

After every epoch: the board in the log, ``board/epoch-NNNN.json``, ``board.png`` (top-1 against FLOPs of the
board's paths over the epochs), ``best_path.json`` and ``child.yaml`` (a child-net config of the board's best path
that ``train`` takes; starts from ``CREAM.EXPORT_BASE``).  Evaluation: ``val`` on one uniformly drawn path per
epoch (upstream), ``board_val`` on the board's best path once the board holds one.  The checkpoint keeps the
supernet, both optimizers, the board (images and soft targets as arrays) and the step counters.

Upstream quirks are switches (``common/config.py`` ``CREAM.*``; ``configs/cream_search_upstream.yaml`` turns all of
them on): uniform sampling whatever the probabilities (``UPSTREAM_SAMPLING``), the teacher's soft targets stored
in new board entries (``BOARD_STORES_TEACHER``), the meta value of the board's last entry (``META_VALUE_OF last``),
the one-tensor meta gradient (``META_TENSORS first``), gradients from the main loss into the matching network
through a live meta value (``META_VALUE_GRAD``), the simulated step at the meta LR (``SIMULATE_LR meta``), equal
top-1 ordered by more FLOPs first (``TIE_BREAK upstream``).  Parameters of choices a step does not use get no
gradient: with ``OPTIM.UNUSED_GRADS skip`` (default, torch 2) they do not move; ``zero`` moves them by momentum and
weight decay (torch 1.x, which upstream ran, and paddle's default).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import numpy as np

from common.checkpoint import Checkpoint, CheckpointError
from common.cream_board import PrioritizedBoard, format_path, plot_board
from common.specs import cream as C
from common.tasks import TaskBase


class CreamSearch(TaskBase):
    kind = "cream_search"
    streams = ("train",)
    optimizer_nodes = {"weights": "OPTIM", "meta": "META_OPTIM"}
    train_stats = ("loss", "top1")
    eval_stats = ("loss", "top1", "top5")
    stat_scale = {"top1": 100.0, "top5": 100.0}

    def __init__(self, cfg, for_eval: bool = False, spec: Optional[C.CreamSupernetSpec] = None):
        node = cfg.CREAM
        self.cfg = cfg
        self.seed = int(cfg.SEED)
        self.spec = spec if spec is not None else C.supernet_spec_from_config(cfg)
        self.slice = int(self.spec.slice)
        self.start_epoch_meta = int(node.META_START_EPOCH)
        self.update_iter = int(node.UPDATE_ITER)
        self.pick = str(node.PICK_METHOD)
        self.how_to_prob = str(node.HOW_TO_PROB)
        self.pre_prob = [float(p) for p in node.PRE_PROB]
        self.smoothing = float(cfg.TRAIN.LABEL_SMOOTHING)
        self.meta_dtype = str(node.META_DTYPE)
        self.meta_grad_at = str(node.META_GRAD_AT)
        self.upstream_sampling = bool(node.UPSTREAM_SAMPLING)
        self.board_stores_teacher = bool(node.BOARD_STORES_TEACHER)
        self.meta_value_of = str(node.META_VALUE_OF)
        self.meta_tensors = str(node.META_TENSORS)
        self.meta_value_grad = bool(node.META_VALUE_GRAD)
        self.simulate_lr = str(node.SIMULATE_LR)
        self.plot = bool(node.PLOT_BOARD)
        self.export_base = str(node.EXPORT_BASE)
        self.meta_clip = float(cfg.META_OPTIM.GRAD_CLIP)
        self.grad_clip = float(cfg.OPTIM.GRAD_CLIP)
        self.num_classes = int(cfg.MODEL.NUM_CLASSES)
        self.topk = min(5, self.num_classes)
        if 2 * self.slice > int(cfg.DATA.BATCH_SIZE):
            from common.config import ConfigError

            raise ConfigError(f"CREAM.SLICE = {self.slice}: the meta update takes 2 x SLICE images of a batch, more "
                              f"than DATA.BATCH_SIZE = {cfg.DATA.BATCH_SIZE}")
        if not for_eval and not os.path.isfile(self.export_base_path()):
            from common.config import ConfigError

            raise ConfigError(f"CREAM.EXPORT_BASE = {self.export_base!r}: no such config "
                              f"({self.export_base_path()}); child.yaml starts from it")
        image_size = self.spec.image_size or int(cfg.DATA.IMAGE_SIZE)
        self.flops = C.flops_table(self.spec, image_size)
        self.board = PrioritizedBoard(int(node.POOL_SIZE), float(node.ACC_GAP), self.start_epoch_meta,
                                      str(node.TIE_BREAK))
        self.epoch = 0
        self.epoch_step = 0
        self.counters = {"meta_updates": 0, "entered": 0}
        self._acc: Dict[str, float] = {}
        #: when a list: one record per step (path, teacher, meta value, whether the path entered the board, meta
        #: updates so far), for the parity tests
        self.trace: Optional[List[Dict[str, Any]]] = None

    # ------------------------------------------------------------------------------------------ declarations
    def eval_variants(self) -> List[str]:
        return ["val", "board_val"]

    def variant_ready(self, variant: str) -> bool:
        """``board_val`` needs a path on the board."""
        return variant != "board_val" or len(self.board) > 0

    def extra_fields(self):
        return ("train_kd_loss", "meta_value", "meta_updates", "board_size", "board_entered", "board_best_top1",
                "board_best_mflops")

    def start_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.epoch_step = 0
        self._acc = {"kd": 0.0, "kd_count": 0.0, "meta_value": 0.0, "mv_count": 0.0, "meta_updates": 0,
                     "entered": 0}

    def parity_epoch(self) -> int:
        """The epoch the parity harness's search steps run in: the board, distillation and meta updates on."""
        return self.start_epoch_meta + 1

    # ------------------------------------------------------------------------------------------ the step's decisions
    def distilling(self) -> bool:
        """KD from a teacher path (and the board) from the epoch after ``META_START_EPOCH`` on."""
        return self.epoch > self.start_epoch_meta and len(self.board) > 0

    def sample_path(self, step: int) -> C.Path:
        prob = self.board.probabilities(self.how_to_prob, self.pre_prob)
        return C.sample_path(self.spec, C.path_seed(self.seed, step), prob, self.upstream_sampling)

    def meta_update_due(self, batch_size: int) -> bool:
        """Upstream ``MetaMatchingNetwork.isUpdate`` (``epoch_step`` = the batch index in the epoch); a batch of
        fewer than 2 x SLICE images (a short last batch) has no validation slice and skips it."""
        return (self.pick == "meta" and self.epoch > self.start_epoch_meta and self.epoch_step > 0
                and self.epoch_step % self.update_iter == 0 and len(self.board) > 0
                and batch_size >= 2 * self.slice)

    def meta_value_index(self, teacher: int) -> int:
        return len(self.board) - 1 if self.meta_value_of == "last" else teacher

    def meta_tensor_count(self, n: int) -> int:
        return 1 if self.meta_tensors == "first" else n

    #: the central-difference step of the live scores' JVP, relative to ||W|| / ||v|| (float64; the research's
    #: measurement: 1e-6 relative matched create_graph to 3e-9, 1e-4 crossed a ReLU kink)
    score_jvp_eps: float = 1e-6

    def live_score_terms(self, u: np.ndarray, m: float, ce: float, dm_theta: List[np.ndarray], lr: float):
        """The meta gradient's terms through a live score graph (``CREAM.META_VALUE_GRAD``, upstream): with
        ``m = sigmoid(-w_k)``, ``w_k = theta_w . f_k(W) + theta_b`` the student step is ``g = m h + CE dm/dW`` and
        ``d <gv, W - lr g> / d theta`` adds ``-lr CE d <gv, dm/dW> / d theta`` = ``-lr CE [-(theta_w . u)(1 - 2m)
        dm/dtheta - m (1 - m) (u, 0)]`` to ``-lr <gv, h> dm/dtheta``, where ``u = J_f gv`` (:meth:`score_jvp`).
        ``dm_theta``: ``[dm/dweight, dm/dbias]`` (float64, backend layout); returns the added terms, same layout."""
        weight = np.asarray(self.meta_weight(), dtype=np.float64).reshape(-1)
        tu = float(weight @ u)
        dw, db = dm_theta
        return [-lr * ce * (-tu * (1 - 2 * m) * dw - m * (1 - m) * u.reshape(dw.shape)),
                -lr * ce * (-tu * (1 - 2 * m) * db)]

    def meta_weight(self) -> np.ndarray:
        return self.backend.to_numpy(self.meta_params[0])

    def simulated_lr(self, lrs) -> float:
        return float(lrs["meta"] if self.simulate_lr == "meta" else lrs["weights"])

    def val_path(self, epoch: int) -> C.Path:
        """The evaluation path of ``epoch``: one uniform draw (upstream ``validate``)."""
        return C.sample_path(self.spec, C.path_seed(self.seed, epoch, "val"))

    def eval_path(self, variant: str) -> C.Path:
        return self.board.top1().path if variant == "board_val" else self.val_path(self.epoch)

    def record(self, kd: Optional[float], meta_value: Optional[float], entered: bool, path: C.Path = (),
               teacher: Optional[int] = None) -> None:
        if self.trace is not None:
            self.trace.append({"epoch": self.epoch, "step": self.epoch_step, "path": path, "teacher": teacher,
                               "meta_value": meta_value, "entered": entered,
                               "meta_updates": self.counters["meta_updates"]})
        acc = self._acc
        if kd is not None:
            acc["kd"] += kd
            acc["kd_count"] += 1
        if meta_value is not None:
            acc["meta_value"] += meta_value
            acc["mv_count"] += 1
        if entered:
            acc["entered"] += 1
            self.counters["entered"] += 1
        self.epoch_step += 1

    def record_meta_update(self) -> None:
        self._acc["meta_updates"] += 1
        self.counters["meta_updates"] += 1

    def enter_board(self, step: int, prec1: float, path: C.Path, images: np.ndarray, soft: np.ndarray) -> bool:
        """The path's turn on the board; a batch of fewer than SLICE images (a short last batch) cannot fill an
        entry and does not try."""
        if len(images) < self.slice:
            return False
        return self.board.update(self.epoch, prec1, self.flops.path_mflops(path), path, images, soft, step)

    # ------------------------------------------------------------------------------------------ epoch end
    def epoch_end(self, epoch: int) -> Dict[str, Any]:
        acc = self._acc
        group = getattr(self.backend, "dist", None)
        if group is not None and acc.get("kd_count"):  # each rank's KD on its share of the batches
            kd, count = group.sum_floats([acc["kd"], acc["kd_count"]])
            acc = dict(acc, kd=kd, kd_count=count)
        out: Dict[str, Any] = {"meta_updates": int(acc.get("meta_updates", 0)), "board_size": len(self.board),
                               "board_entered": int(acc.get("entered", 0))}
        if acc.get("kd_count"):
            out["train_kd_loss"] = acc["kd"] / acc["kd_count"]
        if acc.get("mv_count"):
            out["meta_value"] = acc["meta_value"] / acc["mv_count"]
        if len(self.board):
            best = self.board.top1()
            out["board_best_top1"] = best.prec1
            out["board_best_mflops"] = best.flops
        log = self.board.end_epoch(epoch)
        if self.run_dir:
            log += self.write_files(epoch)
        out["_log"] = log
        return out

    def best_path(self) -> C.Path:
        """The board's first path, or (empty board) the evaluation path of the current epoch."""
        return self.board.top1().path if len(self.board) else self.val_path(self.epoch)

    def write_files(self, epoch: int) -> List[str]:
        """``board/epoch-NNNN.json``, ``board.png``, ``best_path.json`` and ``child.yaml`` (atomically)."""
        from common.io_utils import atomic_write_text

        folder = os.path.join(self.run_dir, "board")
        os.makedirs(folder, exist_ok=True)
        record = self.board.history[-1]
        atomic_write_text(os.path.join(folder, f"epoch-{epoch + 1:04d}.json"), json.dumps(record, indent=1) + "\n")
        lines = []
        if self.plot:
            plot_board(self.board.history, os.path.join(self.run_dir, "board.png"),
                       title=f"prioritized board after epoch {epoch + 1}")
        if not len(self.board):
            return lines
        best = self.board.top1()
        arch = C.child_arch_from_path(best.path)
        info = {"epoch": epoch + 1, "path": [list(s) for s in best.path], "arch_list": C.format_arch_list(arch),
                "batch_top1": best.prec1, "mflops_in_search": best.flops, "image_size": self.flops.image_size}
        atomic_write_text(os.path.join(self.run_dir, "best_path.json"), json.dumps(info, indent=1) + "\n")
        child = os.path.join(self.run_dir, "child.yaml")
        atomic_write_text(child, self.child_config_text(arch, best))
        lines.append(f"best path {format_path(best.path)} (batch top-1 {best.prec1:.2f}, {best.flops:.1f} MFLOPs) "
                     f"-> {child}")
        return lines

    def child_config_text(self, arch, entry) -> str:
        """A child-net config of ``arch`` that ``train`` takes: the recipe of ``CREAM.EXPORT_BASE``, the search's
        data, the path (every choice honoured: the supernet trained the single-block stages' choices too)."""
        base = self.export_base_path()
        data = self.cfg.DATA
        lines = [
            f"# The board's best path after the supernet search (batch top-1 {entry.prec1:.2f}, {entry.flops:.1f} "
            f"MFLOPs at {self.flops.image_size} px), written by `search`.",
            "# Train it from scratch:  python tools/main.py train <this file> --backend torch|paddle",
            f"_BASE_: {json.dumps(base)}",
            "MODEL:",
            "  FAMILY: cream",
            "  NAME: cream_searched",
            f"  NUM_CLASSES: {self.num_classes}",
            "CREAM:",
            f"  ARCH: {json.dumps([list(s) for s in arch])}",
            "  HONOUR_SINGLE_BLOCK_CHOICES: true",
            "DATA:",
            f"  DATASET: {json.dumps(str(data.DATASET))}",
            f"  ROOT: {json.dumps(str(data.ROOT))}",
            f"  IMAGE_SIZE: {int(data.IMAGE_SIZE)}",
            f"  CHANNELS: {int(data.CHANNELS)}",
        ]
        return "\n".join(lines) + "\n"

    def export_base_path(self) -> str:
        """``CREAM.EXPORT_BASE`` as an absolute path (a relative one is in the project's ``configs/``)."""
        if os.path.isabs(self.export_base):
            return self.export_base
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        return os.path.join(root, "configs", self.export_base)

    # ------------------------------------------------------------------------------------------ state
    def to_checkpoint(self) -> Checkpoint:
        ckpt = super().to_checkpoint()
        board, arrays = self.board.state()
        ckpt.extra = {"board": board, "counters": dict(self.counters)}
        ckpt.extra_arrays = arrays
        return ckpt

    def load_checkpoint(self, ckpt: Checkpoint, source: str = "<memory>") -> None:
        extra = ckpt.extra or {}
        if "board" not in extra:
            raise CheckpointError(f"{source}: not a Cream supernet search checkpoint (no board); to start a search "
                                  "from its weights use MODEL.WEIGHTS")
        super().load_checkpoint(ckpt, source)
        self.board.load_state(extra["board"], ckpt.extra_arrays, source)
        self.counters = {k: int(v) for k, v in extra.get("counters", {}).items()}


#: the framework-free task of this kind (``engine.check_streams`` builds it from the config alone)
BASE = CreamSearch
