"""PC-DARTS evaluation networks: train-step throughput and peak memory of the torch and paddle twins.

Contenders (``BENCH.CONTENDERS``; ``+flag`` variants as in ``bench/cream.py``):

* ``torch``  -- the torch twin through the real training task (``torch_impl.tasks.classification.Task.train_step``:
  forward with the auxiliary head and drop path, the loss + 0.4 x the auxiliary loss, backward, the non-finite
  check, gradient-norm clip, the twin SGD step, loss and top-1 to the host); ``torch+cl`` channels-last,
  ``torch+compile`` ``torch.compile``;
* ``paddle`` -- the paddle twin, the same calls (``paddle+onednn``: ``FLAGS_use_mkldnn``).

Every contender gets the same numpy batch and the same initial weights (``common.specs.pcdarts.init_state`` with
``SEED``).  The issue's workload is the CIFAR network of ``configs/pcdarts_cifar10.yaml`` at batch 96:

    python tools/main.py bench configs/pcdarts_cifar10.yaml BENCH.TRAIN_BATCH_SIZES "[96]"

Goal printed: paddle twin >= 0.8x torch twin.  No framework is imported at module level.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from bench import cream
from bench.harness import Contender, Runner, contender_from_name

FAMILY = "pcdarts"
BASELINE = "torch"
DEFAULT_CONTENDERS = ("torch", "paddle")
DEFAULT_MODES = ("train",)
SUPPORTED_MODES = ("train", "eval")
DEFAULT_WARMUP = 2
DEFAULT_ITERS = 6

#: base name -> (framework, factory, allowed flags)
BASES: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "torch": ("torch", "bench.pcdarts:twin_torch", ("cl", "compile")),
    "paddle": ("paddle", "bench.pcdarts:twin_paddle", ("onednn",)),
}

GOALS = (("paddle twin >= 0.8x torch twin", "paddle", "torch", 0.8),)


def make_contender(name: str, cfg_path: str) -> Contender:
    return contender_from_name(FAMILY, BASES, name, cfg_path)


def header(cfg, spec) -> str:
    from common.specs import pcdarts as P

    return (f"PC-DARTS {spec.name} ({cfg.PCDARTS.GENOTYPE} cell, C={cfg.PCDARTS.INIT_CHANNELS}, "
            f"{cfg.PCDARTS.LAYERS} cells, auxiliary head {'on' if cfg.PCDARTS.AUXILIARY else 'off'}) at "
            f"{spec.image_size} px: {P.count_params(spec):,} parameters, "
            f"{P.count_macs(spec, spec.image_size) / 1e6:.1f} M MACs (conv+linear), drop path {cfg.MODEL.DROP_PATH}, "
            f"optimizer {cfg.OPTIM.NAME}, grad clip {cfg.OPTIM.GRAD_CLIP}")


def goals(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return cream.goals(rows, GOALS)


def twin_torch(mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str] = ()) -> Runner:
    return cream._twin("torch", mode, batch_size, threads, cfg_path, flags, family=FAMILY)


def twin_paddle(mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str] = ()) -> Runner:
    return cream._twin("paddle", mode, batch_size, threads, cfg_path, flags, family=FAMILY)
