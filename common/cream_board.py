"""The Cream of the Crop prioritized path board, framework-free (``shared/research/cream.md`` §2.2).

The board keeps the best paths the supernet search has met (``CREAM.POOL_SIZE``, upstream 10), each with the
batch top-1 it scored, its FLOPs (``common.specs.cream.FlopsTable``), the first ``CREAM.SLICE`` images of that
batch and soft targets on them (what the meta matching network compares a student against).  Both backends hand it
numpy arrays and read its decisions; nothing here touches a framework.

Rules (upstream ``PrioritizedBoard``):
  * a path enters only after ``CREAM.META_START_EPOCH`` and when the board is not full, or its top-1 beats the
    last entry's by more than ``CREAM.ACC_GAP`` points, or beats it at all with fewer FLOPs;
  * order: top-1 descending; equal top-1: fewer FLOPs first (``TIE_BREAK fewer_flops``, the paper's intent) or more
    FLOPs first (``upstream``: Python's descending tuple sort); then the path, then insertion order (a full tie,
    where upstream would compare tensors and fail, keeps the older entry first);
  * after an insertion the board is trimmed to its size by dropping the last entry;
  * the teacher: 'top1' = the first entry (meta value 0.5); 'meta' = the entry whose matching score ``w_j`` is
    largest (the first of equal ones, scores that are NaN never win), with meta value ``sigmoid(-w)`` of that entry
    (``META_VALUE_OF teacher``) or of the board's last entry (``last``: upstream, issue #25);
  * the sampling probabilities: 'even', 'pre_prob' (``CREAM.PRE_PROB``), 'teacher' (op frequencies of the board's
    paths, uniform while it is empty).

The board is saved with the search's checkpoints: :meth:`PrioritizedBoard.state` gives its JSON part and its arrays
(images, soft targets), :meth:`PrioritizedBoard.load_state` restores them exactly.  :func:`plot_board` draws the
board's history (top-1 against FLOPs, one colour per epoch).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from common.specs.cream import NUM_CHOICES, SKIP, Path

TIE_BREAKS = ("fewer_flops", "upstream")
PICK_METHODS = ("meta", "top1")
PROB_METHODS = ("even", "pre_prob", "teacher")


class BoardError(RuntimeError):
    """The board cannot answer (no teacher: every matching score is NaN); the message says why."""


@dataclasses.dataclass
class BoardEntry:
    """One prioritized path: its batch top-1 (percent), FLOPs (MFLOPs), the path, the images it keeps
    (``[SLICE, C, H, W]`` float32) and the soft targets on them (``[SLICE, classes]``), when it entered."""

    prec1: float
    flops: float
    path: Path
    images: np.ndarray
    soft: np.ndarray
    epoch: int = 0
    step: int = 0

    def summary(self) -> Dict[str, Any]:
        return {"prec1": self.prec1, "flops": self.flops, "path": [list(s) for s in self.path],
                "epoch": self.epoch, "step": self.step}


class PrioritizedBoard:
    def __init__(self, pool_size: int = 10, acc_gap: float = 5.0, start_epoch: int = 20,
                 tie_break: str = "fewer_flops"):
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"CREAM.TIE_BREAK = {tie_break!r} is not one of {list(TIE_BREAKS)}")
        self.pool_size = int(pool_size)
        self.acc_gap = float(acc_gap)
        self.start_epoch = int(start_epoch)
        self.tie_break = tie_break
        self.entries: List[BoardEntry] = []
        #: per finished epoch: ``{"epoch": e, "entries": [summary, ...]}`` (the board log and its picture)
        self.history: List[Dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.entries)

    # ------------------------------------------------------------------------------------------ rules
    def would_enter(self, epoch: int, prec1: float, flops: float) -> bool:
        """Upstream ``isUpdate`` (``epoch`` 0-based)."""
        if epoch <= self.start_epoch or not math.isfinite(prec1):
            return False
        if len(self.entries) < self.pool_size:
            return True
        worst = self.entries[-1]
        return prec1 > worst.prec1 + self.acc_gap or (prec1 > worst.prec1 and flops < worst.flops)

    def _key(self, entry: BoardEntry):
        flops = entry.flops if self.tie_break == "fewer_flops" else -entry.flops
        return (-entry.prec1, flops, tuple(tuple(-c for c in s) for s in entry.path))

    def update(self, epoch: int, prec1: float, flops: float, path: Path, images: np.ndarray, soft: np.ndarray,
               step: int = 0) -> bool:
        """Insert the path when :meth:`would_enter` says so, re-sort and trim; returns whether it entered."""
        entered = self.would_enter(epoch, prec1, flops)
        if entered:
            self.entries.append(BoardEntry(float(prec1), float(flops), tuple(tuple(int(c) for c in s) for s in path),
                                           np.array(images, copy=True), np.array(soft, copy=True), int(epoch),
                                           int(step)))
            self.entries.sort(key=self._key)  # stable: a full tie keeps the older entry first
        del self.entries[self.pool_size:]
        return entered

    # ------------------------------------------------------------------------------------------ teacher
    def top1(self) -> BoardEntry:
        if not self.entries:
            raise BoardError("the board is empty: no teacher yet")
        return self.entries[0]

    def choose_teacher(self, scores: Sequence[float]) -> int:
        """The index of the entry with the largest matching score (the first of equal ones); NaN never wins.
        Raises :class:`BoardError` when no score is a number (upstream's ``assert teacher_cand is not None``: a
        diverged matching network)."""
        if len(scores) != len(self.entries):
            raise ValueError(f"{len(scores)} matching scores for {len(self.entries)} board entries")
        best, index = -math.inf, -1
        for j, w in enumerate(scores):
            if w > best:  # NaN compares False
                best, index = float(w), j
        if index < 0:
            raise BoardError(f"no teacher: the matching scores of the board's {len(scores)} entries are "
                             f"{[float(w) for w in scores]} (a diverged meta matching network: lower META_OPTIM.LR)")
        return index

    # ------------------------------------------------------------------------------------------ sampling
    def probabilities(self, method: str, pre_prob: Sequence[float] = ()) -> Optional[List[float]]:
        """Choice probabilities for the next path (None = uniform)."""
        if method not in PROB_METHODS:
            raise ValueError(f"CREAM.HOW_TO_PROB = {method!r} is not one of {list(PROB_METHODS)}")
        if method == "even" or (method == "teacher" and not self.entries):
            return None
        if method == "pre_prob":
            return [float(p) for p in pre_prob]
        counts = np.zeros(NUM_CHOICES)
        for entry in self.entries:
            for stage in entry.path:
                for c in stage:
                    if c != SKIP:
                        counts[c] += 1
        return list(counts / counts.sum())

    # ------------------------------------------------------------------------------------------ log, state
    def end_epoch(self, epoch: int) -> List[str]:
        """Record the board after ``epoch`` (0-based) in :attr:`history`; returns the log lines."""
        self.history = [h for h in self.history if h["epoch"] < epoch + 1]  # a repeated epoch replaces its record
        self.history.append({"epoch": epoch + 1, "entries": [e.summary() for e in self.entries]})
        if not self.entries:
            return [f"board after epoch {epoch + 1}: empty (paths enter after epoch {self.start_epoch + 1})"]
        lines = [f"board after epoch {epoch + 1} ({len(self.entries)}/{self.pool_size} paths):"]
        for j, e in enumerate(self.entries):
            lines.append(f"  No.{j} top-1 {e.prec1:6.2f}  {e.flops:8.2f} MFLOPs  {format_path(e.path)}")
        return lines

    def state(self) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
        """``(JSON part, arrays)`` of the board (for ``Checkpoint.extra`` and its tensors)."""
        arrays: Dict[str, np.ndarray] = {}
        for j, e in enumerate(self.entries):
            arrays[f"board/{j}/images"] = e.images
            arrays[f"board/{j}/soft"] = e.soft
        return {"entries": [e.summary() for e in self.entries], "history": self.history}, arrays

    def load_state(self, data: Mapping[str, Any], arrays: Mapping[str, np.ndarray], source: str = "<memory>") -> None:
        from common.checkpoint import CheckpointError

        entries = []
        for j, item in enumerate(data.get("entries", [])):
            try:
                images, soft = arrays[f"board/{j}/images"], arrays[f"board/{j}/soft"]
            except KeyError:
                raise CheckpointError(f"{source}: board entry {j} has no images / soft targets") from None
            path = tuple(tuple(int(c) for c in s) for s in item["path"])
            entries.append(BoardEntry(float(item["prec1"]), float(item["flops"]), path, np.array(images),
                                      np.array(soft), int(item.get("epoch", 0)), int(item.get("step", 0))))
        if len(entries) > self.pool_size:
            raise CheckpointError(f"{source}: the board holds {len(entries)} paths, more than CREAM.POOL_SIZE = "
                                  f"{self.pool_size}")
        self.entries = entries
        self.history = list(data.get("history", []))


def format_path(path: Path) -> str:
    """``[[0], [3, 4], ...]`` (the form ``CREAM.ARCH`` takes)."""
    return "[" + ", ".join("[" + ", ".join(str(int(c)) for c in s) + "]" for s in path) + "]"


def plot_board(history: Sequence[Mapping[str, Any]], path: str, title: str = "prioritized board") -> None:
    """Top-1 against FLOPs of the board's paths after each epoch (one colour per epoch, the last epoch's paths
    circled), written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.io_utils import atomic_path

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    rows = [h for h in history if h["entries"]]
    cmap = plt.get_cmap("viridis")
    for k, h in enumerate(rows):
        xs = [e["flops"] for e in h["entries"]]
        ys = [e["prec1"] for e in h["entries"]]
        last = k == len(rows) - 1
        ax.scatter(xs, ys, s=36 if last else 14, color=cmap(k / max(1, len(rows) - 1)),
                   edgecolors="black" if last else "none", label=f"epoch {h['epoch']}" if (last or k == 0) else None,
                   zorder=3 if last else 2)
    ax.set_xlabel("MFLOPs of the path")
    ax.set_ylabel("batch top-1 (%)")
    ax.set_title(title if rows else f"{title}: empty")
    ax.grid(alpha=0.3)
    if rows:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
