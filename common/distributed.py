"""Multi-process runs, the framework-free half: who this process is, read from the launcher's environment.

``torchrun`` sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; ``python -m paddle.distributed.launch`` sets
``PADDLE_TRAINER_ID`` / ``PADDLE_TRAINERS_NUM`` (and ``PADDLE_LOCAL_RANK`` / ``FLAGS_selected_gpus``).  A process
started by neither is a world of one, and nothing distributed happens.  The backends
(``torch_impl/distributed.py``, ``paddle_impl/distributed.py``) open the process group (gloo on CPU, NCCL on GPU)
and provide the collectives; the rules of a distributed run are written once here and in ``common/engine.py``:

  * the numpy loader gives rank ``r`` every ``world_size``-th sample of the epoch's order (``common/data/loader``),
    so ``DATA.BATCH_SIZE`` is per process (2 x 16 = 1 x 32, as in timm and PaddleClas);
  * every optimizer averages the gradients over the ranks before clipping and stepping, so the weights stay equal
    on every rank (replicated, never per rank: the PC-DARTS alphas / betas and the Cream meta layer too);
  * ``TRAIN.SYNC_BN``: BatchNorm statistics over the global batch (what makes 2 x 16 equal 1 x 32);
  * the training statistics of an epoch are summed over the ranks; evaluation runs on the whole validation split
    in every process (unsharded: no sample counted twice, every rank reports the same numbers);
  * only rank 0 writes (log, metrics, checkpoints, TensorBoard, a search's files); every rank resumes from the
    same checkpoint, whatever the world size that wrote it;
  * a collective that waits longer than ``DIST_TIMEOUT_S`` fails that process, and the launcher stops the others.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Optional


@dataclasses.dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = ""   # "torchrun" | "paddle.distributed.launch" | ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _int(env: Mapping[str, str], key: str) -> Optional[int]:
    value = env.get(key)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {key} = {value!r} is not an integer") from None


def world_from_env(env: Optional[Mapping[str, str]] = None) -> World:
    """The :class:`World` the launcher describes (a world of one without a launcher)."""
    env = os.environ if env is None else env
    paddle_size = _int(env, "PADDLE_TRAINERS_NUM")
    if paddle_size is not None:
        rank = _int(env, "PADDLE_TRAINER_ID") or 0
        local = _int(env, "PADDLE_LOCAL_RANK")
        world = World(rank, paddle_size, rank if local is None else local, "paddle.distributed.launch")
    else:
        size = _int(env, "WORLD_SIZE")
        if size is None:
            return World()
        world = World(_int(env, "RANK") or 0, size, _int(env, "LOCAL_RANK") or 0, "torchrun")
    if world.world_size < 1 or not 0 <= world.rank < world.world_size:
        raise ValueError(f"the launcher's environment gives rank {world.rank} of world size {world.world_size}")
    return world


def launcher_for(backend: str) -> str:
    return {"torch": "torchrun", "paddle": "paddle.distributed.launch"}[backend]


_CURRENT = None


def set_current(dist) -> None:
    """The backend's open process group (``None``: a world of one); the optimizers and BN layers read it."""
    global _CURRENT
    _CURRENT = dist


def current():
    return _CURRENT
