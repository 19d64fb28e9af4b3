"""Cream child nets: train-step and eval throughput and peak memory of the twins against timm.

Contenders (a base name, optionally with ``+flag`` variants; ``BENCH.CONTENDERS``):

* ``torch``  -- the torch twin through the real trainer (``torch_impl.tasks.classification.Task.train_step``: forward, loss with
  label smoothing, backward, the twin ``RMSpropTF`` step over the weight-decay/no-decay groups, the ``ModelEma``
  update, loss and top-1 to the host) or, in eval, ``Backend.eval_logits`` (numpy in, numpy out);
* ``paddle`` -- the paddle twin, the same calls;
* ``timm``   -- timm's own ``MobileNetV3`` class built from the same block strings with timm's ``decode_arch_def``
  (the blocks upstream Cream used come from timm): Swish, SE with ReLU and a hard-sigmoid gate whose reduced width
  is ``make_divisible(mid * 0.25, 8)``, average pool before ``conv_head`` (1x1 with bias), dropout before the
  classifier.  Its parameter count must equal the twin's and it loads the twin's very initial weights by name (both
  checked; a mismatch stops the contender).  Train: ``timm.optim.create_optimizer_v2(model, 'rmsproptf', ...)``
  (timm's RMSpropTF, bias/BN excluded from weight decay, as timm's train.py), ``LabelSmoothingCrossEntropy`` and
  ``timm.utils.ModelEmaV3``; eval: ``torch.no_grad`` forward, logits to numpy.

Flags: ``torch+cl`` / ``timm+cl`` (channels-last weights and input), ``torch+compile`` / ``timm+compile``
(``torch.compile``, inductor), ``timm+torchrms`` (``torch.optim.RMSprop(foreach=True)`` instead of timm's RMSpropTF),
``paddle+onednn`` (``FLAGS_use_mkldnn``), ``paddle+static`` (``paddle.jit.to_static``, eval only), ``paddle+infer``
(a Paddle Inference predictor on the ``paddle.jit.save``-d model, eval only; ``paddle+infer+onednn`` with oneDNN).

Every contender gets the same numpy batch (``N(0, 1)`` images, uniform labels, seeded) and the same initial weights
(``common.specs.cream.init_state`` with ``SEED``).  The learning rate is the one the first steps of a real run use
(``SCHED.WARMUP_LR`` when there is a warmup, else ``OPTIM.LR``); it does not change the work done.

Goals printed: torch twin >= 1.0x timm; paddle twin >= 0.8x torch twin (each mode and batch size).

**The supernet search** (``MODEL.NAME cream_supernet``, ``configs/cream_search_bench.yaml``): contenders ``torch`` and
``paddle`` (default; baseline torch; timm has no supernet), each building the task exactly as ``search`` does
(``backend.make_task("cream_search", model, cfg, spec)`` on the ``init_state`` weights of ``SEED``), put at epoch
``CREAM.META_START_EPOCH + 1`` (distillation on) with the board filled before timing: ``CREAM.POOL_SIZE`` entries
through the board's own insertion rule, their paths drawn by ``common.specs.cream.sample_path`` from
``path_seed(SEED, j, "bench_board")``, their ``SLICE`` images and soft targets (a softmax of ``N(0, 1)`` logits)
seeded numpy, the same for both backends.  LRs: the search's own schedules (``engine.build_schedules``) at that epoch.
Modes:

* ``train`` -- one search iteration, the search task's ``train_step`` as the loop calls it: the student path of that
  global step (``sample_path`` / ``path_seed(SEED, step)``: the same sequence of paths in both twins), the meta
  matching network's score of every board entry (a student forward on each entry's images), the teacher path's
  forward, label-smoothed CE + KD, the gradient of the path's weights, the SGD step, the board's update.  No meta
  update (``epoch_step`` is pinned to 1 before each step, so ``UPDATE_ITER`` never falls on one unless it is 1);
  output: ``classifier.weight`` after all steps;
* ``meta``  -- one meta matching update, the task's ``meta_update(batch, path, lrs)`` (the real student step on the
  board slice, the validation gradient, the meta gradient, the meta step); a search runs one every
  ``CREAM.UPDATE_ITER`` iterations; output: the meta layer after all updates;
* ``eval``  -- the search's per-epoch evaluation forward: the ``val`` path of that epoch, ``Backend.eval_logits``.

Batches: seeded ``N(0, 1)`` images and uniform labels (the child-net benchmark's), the same for both twins.
No framework is imported at module level.
"""
from __future__ import annotations

import functools
import importlib
import io
import itertools
import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from bench.harness import (BenchError, Contender, Runner, contender_from_name, ratio_of, set_paddle_threads,
                           set_torch_threads)

FAMILY = "cream"
BASELINE = "timm"
DEFAULT_CONTENDERS = ("timm", "torch", "paddle")
DEFAULT_MODES = ("train", "eval")
DEFAULT_WARMUP = 3
DEFAULT_ITERS = 10
#: child nets: train / eval; the supernet search: train (a search iteration), meta (a meta update), eval
SUPPORTED_MODES = ("train", "eval", "meta")
SUPERNET_CONTENDERS = ("torch", "paddle")
#: the stream of the seeded paths of the board the supernet benchmark fills before timing
BOARD_STREAM = "bench_board"


def default_contenders(cfg) -> Tuple[str, ...]:
    """The twins and timm for a child net; the twins for the supernet search (timm has no supernet)."""
    return SUPERNET_CONTENDERS if is_supernet(cfg) else DEFAULT_CONTENDERS


def is_supernet(cfg) -> bool:
    from common.specs import cream as C

    return str(cfg.MODEL.NAME).strip() in C.SUPERNET_NAMES

#: base name -> (framework, factory, allowed flags)
BASES: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "torch": ("torch", "bench.cream:twin_torch", ("cl", "compile")),
    "paddle": ("paddle", "bench.cream:twin_paddle", ("onednn", "static", "infer")),
    "timm": ("torch", "bench.cream:timm_model", ("cl", "compile", "torchrms")),
}

GOALS = (
    # (text, numerator, denominator, target)
    ("torch twin >= 1.0x timm", "torch", "timm", 1.0),
    ("paddle twin >= 0.8x torch twin", "paddle", "torch", 0.8),
)


# ------------------------------------------------------------------------------------------------ parent side
def make_contender(name: str, cfg_path: str) -> Contender:
    contender = contender_from_name(FAMILY, BASES, name, cfg_path)
    base, *flags = name.split("+")
    if (base not in SUPERNET_CONTENDERS or flags) and os.path.isfile(cfg_path):
        from common.config import load_config

        cfg = load_config(cfg_path)
        if is_supernet(cfg):
            raise BenchError(f"BENCH.CONTENDERS: {name!r} has no supernet search; MODEL.NAME {cfg.MODEL.NAME!r} is "
                             f"benchmarked with the twins as the search runs them: "
                             f"{', '.join(SUPERNET_CONTENDERS)}")
    return contender


def header(cfg, spec) -> str:
    from common.specs import cream as C

    if isinstance(spec, C.CreamSupernetSpec):
        return supernet_header(cfg, spec)
    return (f"Cream {spec.name} at {spec.image_size} px: {C.count_params(spec):,} parameters, "
            f"{C.count_macs(spec, spec.image_size) / 1e6:.1f} M MACs (conv_fc rule), {spec.num_classes} classes, "
            f"optimizer {cfg.OPTIM.NAME}, EMA decay {cfg.TRAIN.EMA_DECAY}, label smoothing {cfg.TRAIN.LABEL_SMOOTHING}")


def supernet_header(cfg, spec) -> str:
    from common.specs import cream as C

    size = spec.image_size or int(cfg.DATA.IMAGE_SIZE)
    table = C.flops_table(spec, size)
    lo = table.fixed + sum(min(row) for stage in table.choices for row in stage)
    hi = table.fixed + sum(max(row) for stage in table.choices for row in stage)
    layers = sum(spec.sta_num)
    node = cfg.CREAM
    return (f"Cream supernet search ({spec.name}, sta_num {list(spec.sta_num)}: {layers} searched layers x "
            f"{C.NUM_CHOICES} choices) at {size} px: {C.count_params(spec):,} parameters, a path {lo:.1f}-{hi:.1f} "
            f"MFLOPs ({table.rule}); board {int(node.POOL_SIZE)} paths x {spec.slice} images (filled before timing), "
            f"teacher {node.PICK_METHOD}, distillation on (0-based epoch {int(node.META_START_EPOCH) + 1}), meta layer "
            f"{node.META_DTYPE}; {cfg.OPTIM.NAME} lr {cfg.OPTIM.LR}, label smoothing {cfg.TRAIN.LABEL_SMOOTHING}.  "
            f"Modes: train = one search iteration (student path + the board's meta scoring + teacher forward, no meta "
            f"update), meta = one meta matching update (one per {int(node.UPDATE_ITER)} iterations in a search), "
            f"eval = one path's evaluation forward; search iterations/s = 1000 / ms/step = img/s / batch")


def goals(rows: Sequence[Dict[str, Any]], table=GOALS) -> List[Dict[str, Any]]:
    """Each goal of ``table`` ((text, numerator, denominator, target)) per mode and batch size that has both."""
    out = []
    for mode, batch in sorted({(r["mode"], r["batch"]) for r in rows}):
        for text, num, den, target in table:
            value = ratio_of(rows, mode, batch, num, den)
            if value is None:
                continue
            out.append({"goal": text, "mode": mode, "batch": batch, "value": value, "target": target,
                        "met": value >= target})
    return out


# ------------------------------------------------------------------------------------------------ worker side
def _load(cfg_path: str):
    from common.config import load_config
    from common.specs import cream as C

    cfg = load_config(cfg_path)
    return cfg, C.spec_from_config(cfg)


def make_batch(spec, batch_size: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    return random_batch(spec.in_chans, spec.image_size, spec.num_classes, batch_size, seed)


def random_batch(channels: int, size: int, classes: int, batch_size: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """``N(0, 1)`` images and uniform labels, seeded by (seed, batch size): every contender gets the same batch."""
    rng = np.random.default_rng([int(seed), 7, int(batch_size)])
    images = rng.standard_normal((batch_size, channels, size, size)).astype(np.float32)
    labels = rng.integers(0, classes, size=batch_size).astype(np.int64)
    return images, labels


def first_lr(cfg) -> float:
    """The LR of the first steps of a real run: the warmup LR when there is a warmup."""
    return float(cfg.SCHED.WARMUP_LR) if float(cfg.SCHED.WARMUP_EPOCHS) > 0 else float(cfg.OPTIM.LR)


def torch_profile(step, n: int, path: str) -> None:
    """``torch.profiler`` table (self CPU time) of ``n`` steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=45)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"torch.profiler, {n} steps, sorted by self CPU time\n{table}\n")


def paddle_profile(step, n: int, path: str) -> None:
    """``paddle.profiler`` operator summary of ``n`` steps (its printout is captured into ``path``)."""
    import contextlib

    import paddle.profiler as profiler

    # the chrome trace goes next to the summary (paddle's default is ./profiler_log in the working directory)
    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU],
                             on_trace_ready=profiler.export_chrome_tracing(os.path.dirname(os.path.abspath(path))))
    prof.start()
    for _ in range(n):
        step()
        prof.step()
    prof.stop()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        prof.summary(sorted_by=profiler.SortedKeys.CPUTotal, op_detail=True, thread_sep=False, time_unit="ms")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"paddle.profiler, {n} steps\n{buf.getvalue()}\n")


def paddle_eval_step(be, model, images: np.ndarray, threads: int, flags: Sequence[str], holder: Dict[str, Any],
                     notes: List[str]):
    """The eval step of a paddle contender: dygraph ``Backend.eval_logits`` (default), ``paddle.jit.to_static``
    (``static``), or a Paddle Inference predictor on the ``paddle.jit.save``-d model (``infer``; with ``onednn``
    the predictor runs oneDNN kernels).  Writes the logits into ``holder['out']``."""
    import paddle

    input_spec = [paddle.static.InputSpec(list(images.shape), "float32", name="x")]
    if "infer" in flags:
        import tempfile

        import paddle.inference as paddle_infer

        folder = tempfile.mkdtemp(prefix="bench_paddle_infer_")
        paddle.jit.save(paddle.jit.to_static(model, input_spec=input_spec, full_graph=True),
                        os.path.join(folder, "model"))
        model_file = next(os.path.join(folder, f) for f in sorted(os.listdir(folder))
                          if f.endswith((".json", ".pdmodel")))
        config = paddle_infer.Config(model_file, os.path.join(folder, "model.pdiparams"))
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(int(threads))
        config.switch_ir_optim(True)
        if "onednn" in flags:
            config.enable_mkldnn()
            notes.append("Paddle Inference + oneDNN")
        else:
            config.disable_mkldnn()
            notes.append("Paddle Inference (IR optimised, no oneDNN)")
        predictor = paddle_infer.create_predictor(config)
        in_handle = predictor.get_input_handle(predictor.get_input_names()[0])
        out_handle = predictor.get_output_handle(predictor.get_output_names()[0])

        def step():
            in_handle.copy_from_cpu(images)
            predictor.run()
            holder["out"] = out_handle.copy_to_cpu()

        return step
    if "static" in flags:
        static = paddle.jit.to_static(model, input_spec=input_spec, full_graph=True)
        static.eval()
        notes.append("paddle.jit.to_static")

        def step():
            with paddle.no_grad():
                holder["out"] = static(paddle.to_tensor(images)).numpy()

        return step
    if "onednn" in flags:
        paddle.set_flags({"FLAGS_use_mkldnn": True})
        notes.append("FLAGS_use_mkldnn (no effect on dygraph kernels in paddle 3.3)")

    def step():
        holder["out"] = be.eval_logits(model, images)

    return step


def _twin(backend_name: str, mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str],
          family: str = FAMILY) -> Runner:
    """A twin contender of any family (the config's spec module, ``init_state`` weights, the classification task's
    ``train_step``); ``bench/pcdarts.py`` uses it too."""
    from common import families
    from common.config import load_config

    cfg = load_config(cfg_path)
    C = families.spec_module(family)
    spec = C.spec_from_config(cfg)
    if backend_name == "torch":
        set_torch_threads(threads)
    else:
        set_paddle_threads(threads)
        if mode == "train" and ("static" in flags or "infer" in flags):
            raise BenchError("paddle+static / paddle+infer are eval-only contenders "
                             "(the trainer runs the dygraph model)")
    backend_module = importlib.import_module(f"{backend_name}_impl.backend")
    be = backend_module.Backend(device=cfg.DEVICE, dtype="float32", threads=threads)
    model = be.build_model(family, spec)
    be.load_neutral(model, C.init_state(spec, np.random.default_rng(cfg.SEED)), source="numpy init")
    params = be.count_parameters(model)
    images, labels = random_batch(cfg.DATA.CHANNELS, cfg.DATA.IMAGE_SIZE, cfg.MODEL.NUM_CLASSES, batch_size, cfg.SEED)
    notes = []
    if backend_name == "torch" and "cl" in flags:
        import torch

        model = model.to(memory_format=torch.channels_last)
        notes.append("channels-last weights (the NCHW input is converted by the first conv)")
    if backend_name == "torch" and "compile" in flags:
        import torch

        model = torch.compile(model)
        notes.append("torch.compile (inductor)")
    holder: Dict[str, Any] = {}
    if mode == "train":
        if backend_name == "paddle" and "onednn" in flags:
            import paddle

            paddle.set_flags({"FLAGS_use_mkldnn": True})
            notes.append("FLAGS_use_mkldnn (no effect on dygraph kernels in paddle 3.3)")
        trainer = be.make_trainer(model, cfg, spec)
        lr = first_lr(cfg)
        counter = itertools.count()

        def step():
            holder["metrics"] = trainer.train_step({"train": (images, labels)}, {"weights": lr}, next(counter))

        output = None
    else:
        if backend_name == "paddle":
            step = paddle_eval_step(be, model, images, threads, flags, holder, notes)
        else:
            def step():
                holder["out"] = be.eval_logits(model, images)

        def output():
            return holder.get("out")

    profile = torch_profile if backend_name == "torch" else paddle_profile
    version = backend_module.framework_version()
    return Runner(step, {"version": version, "params": params, "note": ", ".join(notes)}, output,
                  functools.partial(profile, step),
                  min_warmup=3 if any(f in flags for f in ("compile", "static", "infer")) else 0)


def twin_torch(mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str] = ()) -> Runner:
    return _family_twin("torch", mode, batch_size, threads, cfg_path, flags)


def twin_paddle(mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str] = ()) -> Runner:
    return _family_twin("paddle", mode, batch_size, threads, cfg_path, flags)


def _family_twin(backend_name: str, mode: str, batch_size: int, threads: int, cfg_path: str,
                 flags: Sequence[str]) -> Runner:
    """A Cream twin: the supernet search's workloads for a ``cream_supernet`` config, else the child net's."""
    from common.config import load_config

    cfg = load_config(cfg_path)
    if is_supernet(cfg):
        return supernet_twin(backend_name, mode, batch_size, threads, cfg, flags)
    if mode not in ("train", "eval"):
        raise BenchError(f"mode {mode!r} times the supernet search (MODEL.NAME cream_supernet, "
                         f"configs/cream_search_bench.yaml); a child net has the modes train and eval")
    return _twin(backend_name, mode, batch_size, threads, cfg_path, flags)


# ------------------------------------------------------------------------------------------------ supernet search
def softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fill_board(task, cfg, spec) -> None:
    """Fill ``task.board`` (``CREAM.POOL_SIZE`` entries) through its insertion rule with seeded entries: paths from
    ``sample_path(spec, path_seed(SEED, j, BOARD_STREAM), <the board's probabilities>)``, ``N(0, 1)`` images and the
    softmax of ``N(0, 1)`` logits as soft targets, batch top-1 descending from 100 (distinct, so the order is the
    insertion order).  The same arrays for every backend.  ``task.epoch`` must be after ``META_START_EPOCH``."""
    from common.specs import cream as C

    seed = int(cfg.SEED)
    rng = np.random.default_rng([seed, 11])
    size = spec.image_size or int(cfg.DATA.IMAGE_SIZE)
    pool = task.board.pool_size
    prob = task.board.probabilities(task.how_to_prob, task.pre_prob)
    for j in range(pool):
        path = C.sample_path(spec, C.path_seed(seed, j, BOARD_STREAM), prob, task.upstream_sampling)
        images = rng.standard_normal((spec.slice, spec.in_chans, size, size)).astype(np.float32)
        soft = softmax_rows(rng.standard_normal((spec.slice, spec.num_classes))).astype(np.float32)
        task.enter_board(-1 - j, 100.0 * (pool - j) / pool, path, images, soft)
    if len(task.board) != pool:
        raise BenchError(f"the board took {len(task.board)} of {pool} seeded entries (epoch {task.epoch}, "
                         f"CREAM.META_START_EPOCH {task.start_epoch_meta})")


def supernet_twin(backend_name: str, mode: str, batch_size: int, threads: int, cfg, flags: Sequence[str]) -> Runner:
    """A twin on a supernet-search workload (module docstring): the search task as ``search`` builds it, at the
    epoch after ``META_START_EPOCH`` with a full board."""
    from common import engine
    from common.specs import cream as C

    if mode not in SUPPORTED_MODES:
        raise BenchError(f"mode {mode!r}: the supernet search is timed in the modes {', '.join(SUPPORTED_MODES)}")
    if flags:
        raise BenchError(f"flags {list(flags)} are not available for the supernet search (contenders: "
                         f"{', '.join(SUPERNET_CONTENDERS)})")
    spec = C.spec_from_config(cfg)
    if mode == "meta":
        if str(cfg.CREAM.PICK_METHOD) != "meta":
            raise BenchError(f"mode 'meta': CREAM.PICK_METHOD is {cfg.CREAM.PICK_METHOD!r}; the search runs meta "
                             "updates only with PICK_METHOD meta")
        if batch_size < 2 * spec.slice:
            raise BenchError(f"mode 'meta': the meta update takes 2 x CREAM.SLICE = {2 * spec.slice} images of a "
                             f"batch; batch {batch_size} is smaller")
    if backend_name == "torch":
        set_torch_threads(threads)
    else:
        set_paddle_threads(threads)
    backend_module = importlib.import_module(f"{backend_name}_impl.backend")
    be = backend_module.Backend(device=cfg.DEVICE, dtype="float32", threads=threads)
    model = be.build_model(FAMILY, spec)
    be.load_neutral(model, C.init_state(spec, np.random.default_rng(cfg.SEED)), source="numpy init")
    params = be.count_parameters(model)
    task = be.make_task("cream_search", model, cfg, spec)
    epoch = int(cfg.CREAM.META_START_EPOCH) + 1
    task.start_epoch(epoch)
    fill_board(task, cfg, spec)
    if not task.distilling():
        raise BenchError(f"the search task does not distil at epoch {epoch} with a full board")
    lrs = {name: float(s.lr_at(epoch)) for name, s in engine.build_schedules(cfg, task).items()}
    size = spec.image_size or int(cfg.DATA.IMAGE_SIZE)
    images, labels = random_batch(spec.in_chans, size, spec.num_classes, batch_size, cfg.SEED)
    counter = itertools.count()
    holder: Dict[str, Any] = {}
    notes = [f"board {len(task.board)}/{task.board.pool_size}", f"epoch {epoch}",
             "lrs " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(lrs.items()))]
    if mode == "train":
        notes.append("distillation on, no meta update in the step")

        def step():
            task.epoch_step = 1  # no meta update falls on this step (the meta mode times it)
            holder["metrics"] = task.train_step({"train": (images, labels)}, lrs, next(counter))

        def output():
            return be.state_to_neutral(model)["classifier.weight"]
    elif mode == "meta":
        def step():
            path = task.sample_path(next(counter))
            holder["meta"] = task.meta_update((images, labels), path, lrs)

        def output():
            state = be.state_to_neutral(model)
            return np.concatenate([np.asarray(state[n], dtype=np.float64).reshape(-1) for n in C.META_PARAMETERS])
    else:
        path = task.val_path(epoch)
        notes.append("the val path " + "".join(str(c) if c >= 0 else "s" for stage in path[1:-1] for c in stage))

        def step():
            model.set_path(path)
            holder["out"] = be.eval_logits(model, images)

        def output():
            return holder.get("out")

    profile = torch_profile if backend_name == "torch" else paddle_profile
    return Runner(step, {"version": backend_module.framework_version(), "params": params, "note": ", ".join(notes)},
                  output, functools.partial(profile, step))


def build_timm_cream(spec):
    """timm's ``MobileNetV3`` with the Cream child net's blocks (timm's own classes and block-string decoder)."""
    import torch.nn as nn
    from timm.layers import get_act_layer, make_divisible
    from timm.models._efficientnet_blocks import SqueezeExcite
    from timm.models._efficientnet_builder import decode_arch_def
    from timm.models.mobilenetv3 import MobileNetV3

    if (spec.act, spec.se_act, spec.se_gate) != ("swish", "relu", "hard_sigmoid") or not spec.pool_before_head:
        raise BenchError(f"{spec.name}: the timm contender is written for Swish / SE(ReLU, hard_sigmoid) / pool before "
                         f"conv_head; the spec has {spec.act} / {spec.se_act} / {spec.se_gate}")
    se_layer = functools.partial(SqueezeExcite, gate_layer="hard_sigmoid", force_act_layer=nn.ReLU,
                                 rd_round_fn=functools.partial(make_divisible, divisor=spec.se_divisor))
    return MobileNetV3(decode_arch_def(spec.arch_def), num_classes=spec.num_classes, in_chans=spec.in_chans,
                       stem_size=spec.stem_ch, num_features=spec.num_features, head_bias=spec.head_bias,
                       act_layer=get_act_layer("swish"), se_layer=se_layer, se_from_exp=spec.se_reduce_mid,
                       drop_rate=spec.drop_rate, drop_path_rate=spec.drop_path_rate)


def load_twin_weights_into_timm(model, spec, seed: int) -> int:
    """Load ``init_state(spec)`` into timm's model by name; raise when a name or shape differs.  Returns the
    number of trainable parameters (checked against ``count_params(spec)``)."""
    import torch

    from common.specs import cream as C

    init = C.init_state(spec, np.random.default_rng(seed))
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in init.items()}
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(k for k in state if k in own and tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        raise BenchError(f"{spec.name}: timm's MobileNetV3 does not have the twin's state: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, shapes differ {shapes[:5]}")
    model.load_state_dict(state, strict=False)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    want = C.count_params(spec)
    if params != want:
        raise BenchError(f"{spec.name}: timm's model has {params:,} trainable parameters, the twin {want:,}")
    return params


def timm_model(mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str] = ()) -> Runner:
    cfg, spec = _load(cfg_path)
    set_torch_threads(threads)
    import timm
    import timm.optim
    import torch

    model = build_timm_cream(spec)
    params = load_twin_weights_into_timm(model, spec, cfg.SEED)
    images, labels = make_batch(spec, batch_size, cfg.SEED)
    channels_last = "cl" in flags
    notes = [f"timm {timm.__version__} MobileNetV3 from decode_arch_def"]
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        notes.append("channels-last")
    fmodel = torch.compile(model) if "compile" in flags else model
    if "compile" in flags:
        notes.append("torch.compile (inductor)")

    def batch():
        x = torch.from_numpy(images)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    holder: Dict[str, Any] = {}
    output = None
    if mode == "train":
        from timm.loss import LabelSmoothingCrossEntropy

        lr = first_lr(cfg)
        wd = float(cfg.OPTIM.WEIGHT_DECAY)
        if cfg.OPTIM.NAME != "rmsprop_tf":
            notes.append(f"OPTIM.NAME is {cfg.OPTIM.NAME}; the timm contender always runs RMSpropTF")
        if "torchrms" in flags:
            from timm.optim import param_groups_weight_decay

            optimizer = torch.optim.RMSprop(param_groups_weight_decay(model, wd), lr=lr, alpha=float(cfg.OPTIM.ALPHA),
                                            eps=float(cfg.OPTIM.EPS), momentum=float(cfg.OPTIM.MOMENTUM), foreach=True)
            notes.append("torch.optim.RMSprop(foreach)")
        else:
            optimizer = timm.optim.create_optimizer_v2(model, "rmsproptf", lr=lr, weight_decay=wd,
                                                       momentum=float(cfg.OPTIM.MOMENTUM), eps=float(cfg.OPTIM.EPS),
                                                       alpha=float(cfg.OPTIM.ALPHA))
            notes.append("timm RMSpropTF")
        smoothing = float(cfg.TRAIN.LABEL_SMOOTHING)
        loss_fn = LabelSmoothingCrossEntropy(smoothing) if smoothing > 0 else torch.nn.CrossEntropyLoss()
        ema = None
        if float(cfg.TRAIN.EMA_DECAY) > 0:
            from timm.utils import ModelEmaV3

            ema = ModelEmaV3(model, decay=float(cfg.TRAIN.EMA_DECAY))
            notes.append("ModelEmaV3")
        counter = itertools.count()
        target = torch.from_numpy(labels)

        def step():
            model.train()
            out = fmodel(batch())
            loss = loss_fn(out, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update(model, step=next(counter))
            holder["loss"] = loss.detach()
    else:
        model.eval()

        def step():
            with torch.no_grad():
                holder["out"] = fmodel(batch()).numpy()

        def output():
            return holder.get("out")

    return Runner(step, {"version": torch.__version__, "params": params, "note": ", ".join(notes)}, output,
                  functools.partial(torch_profile, step),
                  min_warmup=3 if "compile" in flags else 0)
