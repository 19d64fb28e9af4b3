"""Scalar curves (loss, accuracy, LR) written the same way on both backends.

``ScalarWriter(run_dir)`` always writes TensorBoard event files under ``<run_dir>/tensorboard/`` through
``tensorboardX`` (pure Python + protobuf, no framework), and also VisualDL files under ``<run_dir>/visualdl/``
when the ``visualdl`` package happens to be installed.  ``None`` and non-finite values are skipped, never
written as NaN.  ``metrics.csv`` stays the source of truth; these files are for looking at curves.

    with ScalarWriter(run_dir, log=logger) as scalars:
        scalars.add("train/loss", 0.71, step=120)
        scalars.add_many({"val/top1": 81.2, "val/top5": None}, step=3)   # val/top5 is skipped

Nothing here imports a framework: the writer packages are imported only when a writer is created, and
tensorboardX (which imports torch at package import when torch is installed, only to recognise torch
tensors) is imported with torch held out of reach unless torch is already loaded, so a paddle run does not
load torch.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
from typing import Any, Callable, Iterator, List, Mapping, Optional, Tuple, Union

TENSORBOARD_DIR = "tensorboard"
VISUALDL_DIR = "visualdl"
FLUSH_SECONDS = 30


@contextlib.contextmanager
def _held_out(module: str) -> Iterator[None]:
    """Make ``import <module>`` raise ImportError inside the block, unless the module is already loaded."""
    if module in sys.modules:
        yield
        return
    sys.modules[module] = None  # type: ignore[assignment]  (the import system's "blocked" marker)
    try:
        yield
    finally:
        if sys.modules.get(module, 0) is None:
            del sys.modules[module]


def _open_tensorboard(run_dir: str, purge_step: Optional[int] = None):
    try:
        with _held_out("torch"):
            from tensorboardX import SummaryWriter
    except ImportError as exc:
        return None, f"tensorboardX not installed ({exc}): pip install -r requirements-common.txt"
    logdir = os.path.join(run_dir, TENSORBOARD_DIR)
    return SummaryWriter(logdir=logdir, flush_secs=FLUSH_SECONDS, purge_step=purge_step), logdir


def _open_visualdl(run_dir: str):
    try:
        from visualdl import LogWriter
    except ImportError:
        return None, None
    logdir = os.path.join(run_dir, VISUALDL_DIR)
    return LogWriter(logdir=logdir), logdir


def _tell(log, message: str) -> None:
    if log is None:
        return
    info = getattr(log, "info", None)
    (info if callable(info) else log)(message)


def _finite(tag: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"scalar {tag!r}: {value!r} is not a number") from None
    return number if math.isfinite(number) else None


class ScalarWriter:
    """TensorBoard event files (always) and VisualDL files (when installed) for one run folder.

    ``log`` is an optional ``logging.Logger`` (its ``info`` is used) or any callable taking one string; it is
    told once, at construction, which writers are active and where they write.  ``purge_step``: a resumed run
    passes the step it resumes at, and TensorBoard drops the points at or after it that the interrupted run had
    written (they are written again).
    """

    def __init__(self, run_dir: str, log: Union[Callable[[str], Any], Any, None] = None,
                 purge_step: Optional[int] = None):
        self.run_dir = run_dir
        self._writers: List[Tuple[str, Any]] = []
        notes = []
        tensorboard, where = _open_tensorboard(run_dir, purge_step)
        if tensorboard is None:
            notes.append(where)
        else:
            self._writers.append(("tensorboard", tensorboard))
            notes.append(f"TensorBoard: {where}")
        visualdl, where = _open_visualdl(run_dir)
        if visualdl is not None:
            self._writers.append(("visualdl", visualdl))
            notes.append(f"VisualDL: {where}")
        if not self._writers:
            notes.append("metrics go to metrics.csv only")
        _tell(log, "scalar curves: " + "; ".join(notes))

    @property
    def kinds(self) -> Tuple[str, ...]:
        """The active writers, e.g. ``("tensorboard",)`` or ``("tensorboard", "visualdl")``."""
        return tuple(kind for kind, _ in self._writers)

    def add(self, tag: str, value: Any, step: int) -> bool:
        """Write one point; ``None``, NaN and +-inf are skipped.  Returns whether the point was written."""
        number = _finite(tag, value)
        if number is None or not self._writers:
            return False
        step = int(step)
        for kind, writer in self._writers:
            if kind == "visualdl":
                writer.add_scalar(tag=tag, value=number, step=step)
            else:
                writer.add_scalar(tag, number, global_step=step)
        return True

    def add_many(self, values: Mapping[str, Any], step: int) -> int:
        """``add`` for every ``tag: value`` pair; returns how many points were written."""
        return sum(self.add(tag, value, step) for tag, value in values.items())

    def flush(self) -> None:
        for _, writer in self._writers:
            writer.flush()

    def close(self) -> None:
        """Flush and close every writer; later calls (and later ``add``s) do nothing."""
        writers, self._writers = self._writers, []
        for _, writer in writers:
            writer.close()

    def __enter__(self) -> "ScalarWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ScalarWriter({self.run_dir!r}, writers={list(self.kinds)})"

