"""PC-DARTS: train-step throughput and peak memory of the evaluation networks, and the search step of the search
network, torch twin vs paddle twin (vs upstream's own search network when ``BENCH.UPSTREAM`` points at it).

**Evaluation networks** (``MODEL.NAME`` ``pcdarts_cifar`` / ``pcdarts_imagenet``; modes ``train``, ``eval``):

* ``torch``  -- the torch twin through the real training task (``torch_impl.tasks.classification.Task.train_step``:
  forward with the auxiliary head and drop path, the loss + 0.4 x the auxiliary loss, backward, the non-finite
  check, gradient-norm clip, the twin SGD step, loss and top-1 to the host); ``torch+cl`` channels-last,
  ``torch+compile`` ``torch.compile``;
* ``paddle`` -- the paddle twin, the same calls (``paddle+onednn``: ``FLAGS_use_mkldnn``).

    python tools/main.py bench configs/pcdarts_cifar10.yaml BENCH.TRAIN_BATCH_SIZES "[96]"

Goal printed: paddle twin >= 0.8x torch twin.

**Search network** (``MODEL.NAME`` ``pcdarts_search``; modes ``weight``, ``arch1``, ``arch2``):

* ``weight`` -- one weight step: the search task's ``weight_step`` (forward, cross-entropy, the gradient of the
  weights, the non-finite check, clip 5, the SGD momentum step);
* ``arch1``  -- one first-order architecture step: the task's ``arch_step`` with ``PCDARTS.UNROLLED`` false
  (forward on the search batch, the gradient of alphas / betas only, Adam);
* ``arch2``  -- one second-order architecture step (``PCDARTS.UNROLLED`` true: the unrolled SGD step, the
  validation gradient at w', the two finite-difference forwards and backwards, Adam).  Every contender takes one
  weight step while it is built, so the unrolled step finds the SGD momentum, as it does in a search.

Contenders: ``torch`` (``torch+nchw``: the twin with NCHW weights, what upstream runs; the twin is channels-last
by default on CPU), ``paddle``, and ``upstream``: upstream's own ``model_search.Network`` and
``architect.Architect``, imported in its worker from the local copy of https://github.com/yuhuixu1993/PC-DARTS
that ``BENCH.UPSTREAM`` names (``.cuda()`` made a no-op in that process only; nothing of upstream is copied into
this project), timed the way upstream's ``train_search.py`` runs them: ``architect.step(..., unrolled=False / True)``
then ``optimizer.zero_grad()`` (the loop's next line, which drops the weight gradients the first-order backward
leaves), and the weight step ``optimizer.zero_grad(); loss = criterion(model(x), y); loss.backward();
clip_grad_norm_(model.parameters(), 5); optimizer.step()``.  Upstream's network loads the same initial weights
by name (its state dict holds ``num_batches_tracked`` besides; its alphas / betas are copied into its arch tensors)
and its weight count must equal the twin's (299,578 for C=16, 8 cells).  Every contender gets the same train and
search batches (seeded ``N(0, 1)`` images, uniform labels), the LRs of the first search steps (``OPTIM.LR``,
``ARCH_OPTIM.LR``), and reports at the end its classifier weights (``weight``) or its alphas / betas (``arch1``,
``arch2``), so ``max|dOut|`` shows they all did the same steps.  The issue's workload (batch 64 on 32 px, C=16,
8 cells; one thread per contender: 2 threads on shared cores measure the scheduler, see bench/README.md):

    python tools/main.py bench configs/pcdarts_search_bench.yaml BENCH.UPSTREAM /path/to/PC-DARTS
    python tools/main.py bench configs/pcdarts_search_bench.yaml       # the twins only (no BENCH.UPSTREAM)

Goals printed (per mode): torch twin >= 1.25x upstream; torch twin peak memory <= 0.75x upstream (peak RSS of the
step phase); paddle twin >= 0.8x torch twin.  No framework is imported at module level.
"""
from __future__ import annotations

import functools
import importlib
import os
import sys
import types
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from bench import cream, harness
from bench.harness import BenchError, Contender, Runner, contender_from_name, set_paddle_threads, set_torch_threads

FAMILY = "pcdarts"
BASELINE = "torch"
DEFAULT_CONTENDERS = ("torch", "paddle")
DEFAULT_MODES = ("train",)
SEARCH_MODES = ("weight", "arch1", "arch2")
SUPPORTED_MODES = ("train", "eval") + SEARCH_MODES
DEFAULT_WARMUP = 2
DEFAULT_ITERS = 6

def default_contenders(cfg) -> Tuple[str, ...]:
    """The twins, and upstream's search network when ``BENCH.UPSTREAM`` points at a copy of it."""
    return DEFAULT_CONTENDERS + (("upstream",) if str(cfg.BENCH.UPSTREAM) else ())


#: base name -> (framework, factory, allowed flags)
BASES: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "torch": ("torch", "bench.pcdarts:twin_torch", ("cl", "compile", "nchw")),
    "paddle": ("paddle", "bench.pcdarts:twin_paddle", ("onednn",)),
    "upstream": ("torch", "bench.pcdarts:upstream_search", ()),
}

GOALS = (("paddle twin >= 0.8x torch twin", "paddle", "torch", 0.8),)
SEARCH_GOALS = (
    # (text, numerator, denominator, target): images/s ratio >= target
    ("torch twin >= 1.25x upstream", "torch", "upstream", 1.25),
    ("paddle twin >= 0.8x torch twin", "paddle", "torch", 0.8),
)
#: (text, numerator, denominator, target): peak-memory ratio <= target
MEMORY_GOALS = (("torch twin peak memory <= 0.75x upstream", "torch", "upstream", 0.75),)

#: what upstream's search network needs from its repository (model_search imports operations and genotypes)
UPSTREAM_FILES = ("model_search.py", "architect.py", "operations.py", "genotypes.py")


# ------------------------------------------------------------------------------------------------ parent side
def upstream_folder(cfg) -> str:
    """The folder ``BENCH.UPSTREAM`` names, checked to hold upstream's search code; one-line ``BenchError`` else."""
    raw = str(cfg.BENCH.UPSTREAM).strip()
    if not raw:
        raise BenchError("BENCH.UPSTREAM is empty: the upstream contender runs upstream's own search network from a "
                         "local copy of https://github.com/yuhuixu1993/PC-DARTS (BENCH.UPSTREAM /path/to/PC-DARTS); "
                         "without one, time the twins only: BENCH.CONTENDERS \"[torch, paddle]\"")
    folder = os.path.abspath(os.path.expanduser(raw))
    if not os.path.isdir(folder):
        raise BenchError(f"BENCH.UPSTREAM = {raw!r}: no such folder ({folder})")
    missing = [f for f in UPSTREAM_FILES if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise BenchError(f"BENCH.UPSTREAM = {raw!r}: {folder} is not a copy of the upstream PC-DARTS repository "
                         f"(no {', '.join(missing)})")
    return folder


def make_contender(name: str, cfg_path: str) -> Contender:
    contender = contender_from_name(FAMILY, BASES, name, cfg_path)
    if name.split("+")[0] != "upstream":
        return contender
    from common.config import load_config
    from common.specs import pcdarts as P

    cfg = load_config(cfg_path)
    if str(cfg.MODEL.NAME).strip() != "pcdarts_search":
        raise BenchError(f"BENCH.CONTENDERS: the upstream contender times upstream's CIFAR search network "
                         f"(model_search.py); MODEL.NAME is {cfg.MODEL.NAME!r}, not 'pcdarts_search'")
    folder = upstream_folder(cfg)
    spec = P.spec_from_config(cfg)
    if (spec.k, spec.in_channels, spec.steps, spec.multiplier) != (4, 3, 4, 4):
        raise BenchError(f"BENCH.CONTENDERS: upstream's search network hard-wires K=4, 3 input channels, 4 nodes "
                         f"and multiplier 4; this config has K={spec.k}, {spec.in_channels} channels, {spec.steps} "
                         f"nodes, multiplier {spec.multiplier}")
    kwargs = dict(contender.kwargs, upstream=folder)
    return Contender(name=contender.name, framework=contender.framework, factory=contender.factory, kwargs=kwargs,
                     note=f"upstream from {folder}")


def header(cfg, spec) -> str:
    from common.specs import pcdarts as P

    if isinstance(spec, P.SearchNetSpec):
        arch = sum(int(np.prod(s)) for s in spec.arch_shapes.values())
        return (f"PC-DARTS search network {spec.name} (C={spec.C}, {spec.layers} cells, K={spec.k}) at "
                f"{spec.image_size} px: {P.count_search_params(spec):,} weights + {arch} architecture parameters; "
                f"weight step {cfg.OPTIM.NAME} lr {cfg.OPTIM.LR} momentum {cfg.OPTIM.MOMENTUM} clip "
                f"{cfg.OPTIM.GRAD_CLIP}; architecture step {cfg.ARCH_OPTIM.NAME} lr {cfg.ARCH_OPTIM.LR}; "
                "modes: weight = weight step, arch1 / arch2 = first / second-order architecture step")
    return (f"PC-DARTS {spec.name} ({cfg.PCDARTS.GENOTYPE} cell, C={cfg.PCDARTS.INIT_CHANNELS}, "
            f"{cfg.PCDARTS.LAYERS} cells, auxiliary head {'on' if cfg.PCDARTS.AUXILIARY else 'off'}) at "
            f"{spec.image_size} px: {P.count_params(spec):,} parameters, "
            f"{P.count_macs(spec, spec.image_size) / 1e6:.1f} M MACs (conv+linear), drop path {cfg.MODEL.DROP_PATH}, "
            f"optimizer {cfg.OPTIM.NAME}, grad clip {cfg.OPTIM.GRAD_CLIP}")


def peak_ratio(rows: Sequence[Dict[str, Any]], mode: str, batch: int, num: str, den: str):
    """Peak RSS of contender ``num`` over ``den``'s for one workload; None when either failed."""
    by = {r["contender"]: r for r in rows if r["mode"] == mode and r["batch"] == batch and not r.get("error")}
    if num not in by or den not in by or not by[den].get("peak_mb"):
        return None
    return by[num]["peak_mb"] / by[den]["peak_mb"]


def goals(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per mode and batch size: the speed goals (images/s ratio >= target), then the memory goal (peak ratio <=
    target) of the search modes."""
    out = []
    for mode, batch in sorted({(r["mode"], r["batch"]) for r in rows}, key=lambda k: (_mode_order(k[0]), k[1])):
        part = [r for r in rows if r["mode"] == mode and r["batch"] == batch]
        out.extend(cream.goals(part, SEARCH_GOALS if mode in SEARCH_MODES else GOALS))
        if mode not in SEARCH_MODES:
            continue
        for text, num, den, target in MEMORY_GOALS:
            value = peak_ratio(part, mode, batch, num, den)
            if value is not None:
                out.append({"goal": text, "mode": mode, "batch": batch, "value": value, "target": target,
                            "met": value <= target})
    return out


def _mode_order(mode: str) -> int:
    return SUPPORTED_MODES.index(mode) if mode in SUPPORTED_MODES else len(SUPPORTED_MODES)


# ------------------------------------------------------------------------------------------------ worker side
def _load(cfg_path: str, mode: str):
    """The config (``PCDARTS.UNROLLED`` set by the mode for the search modes) and its spec; a mode that does not fit
    the network is a ``BenchError``."""
    from common.config import load_config
    from common.specs import pcdarts as P

    overrides = ["PCDARTS.UNROLLED", str(mode == "arch2")] if mode in SEARCH_MODES else []
    cfg = load_config(cfg_path, overrides)
    spec = P.spec_from_config(cfg)
    search = isinstance(spec, P.SearchNetSpec)
    if search and mode not in SEARCH_MODES:
        raise BenchError(f"mode {mode!r}: the search network ({cfg.MODEL.NAME}) is timed in the modes "
                         f"{', '.join(SEARCH_MODES)} (BENCH.MODES \"[weight, arch1, arch2]\")")
    if not search and mode in SEARCH_MODES:
        raise BenchError(f"mode {mode!r} times the search network: MODEL.NAME pcdarts_search "
                         f"(configs/pcdarts_search_bench.yaml), not {cfg.MODEL.NAME!r}")
    return cfg, spec


def search_batches(cfg, spec, batch_size: int):
    """The train batch (weights; the unrolled step) and the search batch (architecture), seeded, the same for every
    contender."""
    train = cream.random_batch(spec.in_channels, spec.image_size, spec.num_classes, batch_size, cfg.SEED)
    search = cream.random_batch(spec.in_channels, spec.image_size, spec.num_classes, batch_size, int(cfg.SEED) + 1)
    return train, search


def _search_twin(backend_name: str, mode: str, batch_size: int, threads: int, cfg_path: str,
                 flags: Sequence[str]) -> Runner:
    """A twin on a search workload: the search task's ``weight_step`` or ``arch_step``."""
    from common.specs import pcdarts as P

    cfg, spec = _load(cfg_path, mode)
    bad = [f for f in flags if f != "nchw"]
    if bad:
        raise BenchError(f"flags {bad} are not available in the search modes (torch: +nchw)")
    if backend_name == "torch":
        set_torch_threads(threads)
    else:
        set_paddle_threads(threads)
    backend_module = importlib.import_module(f"{backend_name}_impl.backend")
    be = backend_module.Backend(device=cfg.DEVICE, dtype="float32", threads=threads)
    model = be.build_model("pcdarts", spec)
    notes = []
    if "nchw" in flags:
        import torch

        model = model.to(memory_format=torch.contiguous_format)
        notes.append("NCHW weights")
    be.load_neutral(model, P.init_state(spec, np.random.default_rng(cfg.SEED)), source="numpy init")
    weights = be.count_parameters(model) - sum(int(np.prod(s)) for s in spec.arch_shapes.values())
    task = be.make_task("pcdarts_search", model, cfg, spec)
    task.start_epoch(int(cfg.PCDARTS.ARCH_START_EPOCH))
    train, search = search_batches(cfg, spec, batch_size)
    lrs = {"weights": cream.first_lr(cfg), "arch": float(cfg.ARCH_OPTIM.LR)}
    if mode == "arch2":
        task.weight_step(train, lrs["weights"])  # the SGD momentum the unrolled step reads
    if mode == "weight":
        def step():
            task.weight_step(train, lrs["weights"])

        def output():
            return be.state_to_neutral(model)["classifier.weight"]
    else:
        def step():
            task.arch_step(train, search, lrs)

        def output():
            arrays = task.arch_arrays()
            return np.concatenate([arrays[n].reshape(-1) for n in P.ARCH_NAMES])

    profile = cream.torch_profile if backend_name == "torch" else cream.paddle_profile
    return Runner(step, {"version": backend_module.framework_version(), "params": weights, "note": ", ".join(notes)},
                  output, functools.partial(profile, step))


def _twin(backend_name: str, mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str]) -> Runner:
    if mode in SEARCH_MODES:
        return _search_twin(backend_name, mode, batch_size, threads, cfg_path, flags)
    _load(cfg_path, mode)  # a search config in train / eval: one clear error
    if "nchw" in flags:
        raise BenchError("torch+nchw is a search-mode contender (the evaluation benchmark has torch and torch+cl)")
    return cream._twin(backend_name, mode, batch_size, threads, cfg_path, flags, family=FAMILY)


def twin_torch(mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str] = ()) -> Runner:
    return _twin("torch", mode, batch_size, threads, cfg_path, flags)


def twin_paddle(mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str] = ()) -> Runner:
    return _twin("paddle", mode, batch_size, threads, cfg_path, flags)


def import_upstream(folder: str):
    """``(model_search, architect)`` from upstream's folder, with ``.cuda()`` a no-op (this process only: the
    upstream worker's).  The folder leads ``sys.path`` only while they import."""
    import torch

    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    clash = [m for m in ("model_search", "architect", "operations", "genotypes") if m in sys.modules]
    if clash:
        raise BenchError(f"upstream: modules {clash} are already imported in this worker")
    sys.path.insert(0, folder)
    try:
        return importlib.import_module("model_search"), importlib.import_module("architect")
    finally:
        sys.path.remove(folder)


def load_init_into_upstream(model, spec, seed: int) -> int:
    """``init_state(spec)`` into upstream's ``Network`` by name (the weights and BN statistics; alphas / betas into
    its arch tensors); raise when a name or shape differs or the weight counts differ.  Returns the weight count."""
    import torch

    from common.specs import pcdarts as P

    init = P.init_state(spec, np.random.default_rng(seed))
    weights = {k: v for k, v in init.items() if k not in P.ARCH_NAMES}
    own = model.state_dict()
    wanted = {k for k in own if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(wanted - set(weights)), sorted(set(weights) - wanted)
    shapes = sorted(k for k in weights if k in own and tuple(own[k].shape) != tuple(weights[k].shape))
    if missing or unexpected or shapes:
        raise BenchError(f"upstream's Network does not have the twin's state: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}, shapes differ {shapes[:5]}")
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}, strict=False)
    with torch.no_grad():
        for name in P.ARCH_NAMES:
            getattr(model, name).copy_(torch.from_numpy(np.ascontiguousarray(init[name])))
    count = sum(p.numel() for p in model.parameters())
    if count != P.count_search_params(spec):
        raise BenchError(f"upstream's Network has {count:,} weights, the twin {P.count_search_params(spec):,}")
    return count


def upstream_search(mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str] = (),
                    upstream: str = "") -> Runner:
    """Upstream's ``model_search.Network`` + ``architect.Architect`` on a search workload, as ``train_search.py``."""
    from common.specs import pcdarts as P

    cfg, spec = _load(cfg_path, mode)
    if mode not in SEARCH_MODES:
        raise BenchError(f"the upstream contender times the search modes {', '.join(SEARCH_MODES)}, not {mode!r}")
    folder = upstream or upstream_folder(cfg)
    set_torch_threads(threads)
    import torch
    import torch.nn as nn

    model_search, architect_module = import_upstream(folder)
    criterion = nn.CrossEntropyLoss()
    model = model_search.Network(spec.C, spec.num_classes, spec.layers, criterion)
    params = load_init_into_upstream(model, spec, cfg.SEED)
    lr = cream.first_lr(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr, momentum=float(cfg.OPTIM.MOMENTUM),
                                weight_decay=float(cfg.OPTIM.WEIGHT_DECAY))
    args = types.SimpleNamespace(momentum=float(cfg.OPTIM.MOMENTUM), weight_decay=float(cfg.OPTIM.WEIGHT_DECAY),
                                 arch_learning_rate=float(cfg.ARCH_OPTIM.LR),
                                 arch_weight_decay=float(cfg.ARCH_OPTIM.WEIGHT_DECAY))
    architect = architect_module.Architect(model, args)
    clip = float(cfg.OPTIM.GRAD_CLIP)
    (xt, yt), (xs, ys) = search_batches(cfg, spec, batch_size)
    x, y, x_search, y_search = (torch.from_numpy(a) for a in (xt, yt, xs, ys))
    model.train()

    def weight_step():
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()

    unrolled = mode == "arch2"

    def arch_step():
        architect.step(x, y, x_search, y_search, lr, optimizer, unrolled=unrolled)
        optimizer.zero_grad()

    if mode == "arch2":
        weight_step()  # the SGD momentum the unrolled step reads
    if mode == "weight":
        step = weight_step

        def output():
            return model.classifier.weight.detach().numpy().copy()
    else:
        step = arch_step

        def output():
            return np.concatenate([getattr(model, n).detach().numpy().reshape(-1) for n in P.ARCH_NAMES])

    return Runner(step, {"version": torch.__version__, "params": params,
                         "note": "upstream model_search.Network + architect.Architect (NCHW)"},
                  output, functools.partial(cream.torch_profile, step))
