"""NAS-Bench-MR: train-step and eval throughput and peak memory of a ``MultiResolutionNet``, torch twin vs paddle twin.

The network is the config's (``NASBENCH_MR.CODE``; ``configs/mrnet_seed.yaml``: the benchmark's seed example, 1000
classes at 224 px, 3,529,880 parameters, 6.15 G conv MACs).  Modes:

* ``train`` -- one step of the real training task (``<backend>_impl.tasks.classification.Task.train_step``: forward,
  the classification head's ``(N, classes, 1, 1)`` output flattened by ``class_logits``, cross-entropy, backward,
  the non-finite check, the twin SGD step (momentum, weight decay off on BN and biases), loss and top-1 to the
  host), at the LR of a real run's first step;
* ``eval``  -- ``Backend.eval_logits`` (numpy in, numpy ``(N, classes)`` logits out).

Contenders (``BENCH.CONTENDERS``): ``torch`` (the twin as the trainer runs it: channels-last weights in float32;
``torch+compile``: ``torch.compile``), ``paddle`` (``paddle+onednn``: ``FLAGS_use_mkldnn``, which dygraph ignores).
Both get the same numpy batch (seeded ``N(0, 1)`` images, uniform labels) and the same initial weights
(``common.specs.nasbench_mr.init_state`` with ``SEED``), so in eval ``max|dOut|`` shows they compute the same function.
The workers are the harness's (``bench/harness.py``): one process per contender, timed steps interleaved.

    python tools/main.py bench configs/mrnet_seed.yaml           # train bs 8, eval bs 1 and 8, 1 thread: ~2 minutes

Goal printed: paddle twin >= 0.8x torch twin (each mode and batch size).  No framework is imported at module level.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from bench import cream
from bench.harness import BenchError, Contender, Runner, contender_from_name

FAMILY = "nasbench_mr"
BASELINE = "torch"
DEFAULT_CONTENDERS = ("torch", "paddle")
DEFAULT_MODES = ("train", "eval")
SUPPORTED_MODES = ("train", "eval")
DEFAULT_WARMUP = 1
DEFAULT_ITERS = 4

#: base name -> (framework, factory, allowed flags)
BASES: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "torch": ("torch", "bench.nasbench_mr:twin_torch", ("compile",)),
    "paddle": ("paddle", "bench.nasbench_mr:twin_paddle", ("onednn",)),
}

GOALS = (("paddle twin >= 0.8x torch twin", "paddle", "torch", 0.8),)


# ------------------------------------------------------------------------------------------------ parent side
def make_contender(name: str, cfg_path: str) -> Contender:
    return contender_from_name(FAMILY, BASES, name, cfg_path)


def header(cfg, spec) -> str:
    from common.specs import nasbench_mr as M

    return (f"NAS-Bench-MR {spec.name} {spec.code.code()} ({spec.task} head) at {spec.image_size} px: "
            f"{M.count_params(spec):,} parameters, {M.count_macs(spec, rule='conv') / 1e9:.2f} G conv MACs "
            f"({M.count_macs(spec) / 1e9:.2f} G thop_2020), {spec.num_classes} classes, optimizer {cfg.OPTIM.NAME} "
            f"lr {cream.first_lr(cfg)}, label smoothing {cfg.TRAIN.LABEL_SMOOTHING}")


def goals(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return cream.goals(rows, GOALS)


# ------------------------------------------------------------------------------------------------ worker side
def _twin(backend_name: str, mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str]) -> Runner:
    from common.config import load_config
    from common.specs import nasbench_mr as M

    spec = M.spec_from_config(load_config(cfg_path))
    if mode == "train" and spec.task != "classification":
        raise BenchError(f"mode train: NASBENCH_MR.TASK is {spec.task!r}; this benchmark times the classification "
                         "task's train_step (the segmentation task's step is not benchmarked yet); eval times both "
                         "heads")
    return cream._twin(backend_name, mode, batch_size, threads, cfg_path, flags, family=FAMILY)


def twin_torch(mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str] = ()) -> Runner:
    return _twin("torch", mode, batch_size, threads, cfg_path, flags)


def twin_paddle(mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str] = ()) -> Runner:
    return _twin("paddle", mode, batch_size, threads, cfg_path, flags)
