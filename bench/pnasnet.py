"""PNASNet-5: eval throughput and peak memory of the twins against the TF graph (the baseline) and timm.

Contenders (a base name, optionally with ``+flag`` variants; ``BENCH.CONTENDERS``):

* ``tf``     -- ``weights_tools.pnasnet_tf_graph.build_pnasnet_tf`` eval graph (NHWC, TF-slim names) in its own
  process (TensorFlow is never imported next to torch or paddle), timed as ``session.run(logits)`` with the batch
  fed as NHWC numpy (the transpose is not timed: NHWC is TF's native input layout).  Session threads:
  ``intra_op = threads``, ``inter_op = 1``.  The baseline runs TF's Eigen kernels (``TF_ENABLE_ONEDNN_OPTS=0``):
  with TF 2.21's oneDNN rewrites on, this graph runs 15-20x slower on CPU (``tf+onednn`` measures that);
  ``tf+interop`` sets ``inter_op = threads`` (independent cell branches may run side by side);
* ``torch``  -- the torch twin through ``Backend.eval_logits`` (numpy NCHW in, numpy logits out); flags
  ``torch+cl`` (channels-last weights and input), ``torch+jit`` (``torch.jit.trace`` -> ``freeze`` ->
  ``optimize_for_inference``), ``torch+compile`` (``torch.compile``, inductor; compilation happens in the warmup);
* ``paddle`` -- the paddle twin through ``Backend.eval_logits``; flags ``paddle+static`` (``paddle.jit.to_static``
  with a fixed ``InputSpec``), ``paddle+onednn`` (``FLAGS_use_mkldnn``), ``paddle+infer`` (the model saved with
  ``paddle.jit.save`` and run by a Paddle Inference predictor, IR optimisation on; ``paddle+infer+onednn`` enables
  oneDNN in the predictor);
* ``timm``   -- ``timm.create_model('pnasnet5large')`` (eager, NCHW); flags ``timm+cl``, ``timm+compile``.

All contenders get the same weights (``pnasnet_tf_graph.random_tf_variables`` with ``SEED``: activations stay in a
sane range through 12 cells; the twins and timm load them through ``pnasnet_names.tf_to_neutral_state``) and the
same ``N(0, 1)`` batch, so the ``max|dOut|`` column checks that every contender computes the same logits.

Goals printed: torch twin >= 1.0x TF and paddle twin >= 1.0x TF (and the best variant of each).
No framework is imported at module level.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from bench.harness import (BenchError, Contender, Runner, contender_from_name, ratio_of, set_paddle_threads,
                           set_torch_threads)
from bench.cream import paddle_eval_step, paddle_profile, torch_profile

FAMILY = "pnasnet"
BASELINE = "tf"
DEFAULT_CONTENDERS = ("tf", "torch", "torch+cl", "paddle", "timm")
DEFAULT_MODES = ("eval",)
SUPPORTED_MODES = ("eval",)
DEFAULT_WARMUP = 1
DEFAULT_ITERS = 4

BASES: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "tf": ("tensorflow", "bench.pnasnet:tf_graph", ("interop", "onednn")),
    "torch": ("torch", "bench.pnasnet:twin_torch", ("cl", "jit", "compile")),
    "paddle": ("paddle", "bench.pnasnet:twin_paddle", ("static", "onednn", "infer")),
    "timm": ("torch", "bench.pnasnet:timm_model", ("cl", "compile")),
}


# ------------------------------------------------------------------------------------------------ parent side
def make_contender(name: str, cfg_path: str) -> Contender:
    return contender_from_name(FAMILY, BASES, name, cfg_path)


def header(cfg, spec) -> str:
    from common.specs import pnasnet as P

    return (f"PNASNet {spec.name} at {spec.image_size} px: {P.count_params(spec):,} parameters, "
            f"{P.count_macs(spec, spec.image_size) / 1e9:.2f} G MACs, {spec.num_classes} classes, eval forward "
            f"(float32, batch -> logits)")


def goals(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    for mode, batch in sorted({(r["mode"], r["batch"]) for r in rows}):
        ok = {r["contender"]: r for r in rows if r["mode"] == mode and r["batch"] == batch and not r.get("error")}
        if "tf" not in ok:
            continue
        for base in ("torch", "paddle"):
            if base in ok:
                value = ratio_of(rows, mode, batch, base, "tf")
                out.append({"goal": f"{base} twin >= 1.0x TF", "mode": mode, "batch": batch, "value": value,
                            "target": 1.0, "met": value >= 1.0})
            variants = [n for n in ok if n.split("+")[0] == base and n != base]
            if variants:
                best = max(variants, key=lambda n: ok[n]["img_s"])
                value = ratio_of(rows, mode, batch, best, "tf")
                out.append({"goal": f"{base} best variant ({best}) >= 1.0x TF", "mode": mode, "batch": batch,
                            "value": value, "target": 1.0, "met": value >= 1.0})
    return out


# ------------------------------------------------------------------------------------------------ worker side
def _load(cfg_path: str):
    from common.config import load_config
    from common.specs import pnasnet as P

    cfg = load_config(cfg_path)
    return cfg, P.spec_from_config(cfg)


def make_batch(spec, batch_size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([int(seed), 11, int(batch_size)])
    return rng.standard_normal((batch_size, spec.in_channels, spec.image_size, spec.image_size)).astype(np.float32)


def tf_weights(spec, seed: int) -> Dict[str, np.ndarray]:
    """``{TF name: float32 array}`` of the eval graph (no aux head), the same values in every contender."""
    from weights_tools import pnasnet_tf_graph as G

    return G.random_tf_variables(spec, int(seed), with_aux=False, image_size=spec.image_size)


def neutral_weights(spec, seed: int) -> Dict[str, np.ndarray]:
    from weights_tools import pnasnet_names as N

    return N.tf_to_neutral_state(spec, tf_weights(spec, seed), with_aux=False, image_size=spec.image_size,
                                 source="bench random weights")


def _info(version: str, params: int, notes: Sequence[str]) -> Dict[str, Any]:
    return {"version": version, "params": params, "note": ", ".join(n for n in notes if n)}


def tf_graph(mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str] = ()) -> Runner:
    """The TF-slim-named eval graph, random weights assigned, ``session.run`` timed."""
    if mode != "eval":
        raise BenchError("the PNASNet benchmark times the eval forward only")
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if "onednn" in flags else "0"  # read once, at TF's import
    cfg, spec = _load(cfg_path)
    values = tf_weights(spec, cfg.SEED)
    from weights_tools import pnasnet_tf_graph as G

    G.graph_mode_process()
    import tensorflow as tf

    v1 = tf.compat.v1
    images = make_batch(spec, batch_size, cfg.SEED).transpose(0, 2, 3, 1).copy()  # NHWC, TF's layout
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, list(images.shape), name="images")
        logits, _, _ = G.build_pnasnet_tf(spec, x, is_training=False, with_aux=False)
        variables = v1.global_variables()
        assigns, feeds = [], {}
        for v in variables:
            value = values[v.op.name]
            ph = v1.placeholder(tf.float32, value.shape)
            assigns.append(v1.assign(v, ph))
            feeds[ph] = value
    inter = threads if "interop" in flags else 1
    config = v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=inter)
    sess = v1.Session(graph=graph, config=config)
    sess.run(assigns, feeds)
    del feeds, assigns, values
    params = sum(int(np.prod(v.shape)) for v in graph.get_collection(v1.GraphKeys.TRAINABLE_VARIABLES))
    holder: Dict[str, Any] = {}
    feed = {x: images}

    def step():
        holder["out"] = sess.run(logits, feed)

    notes = [f"intra_op {threads}, inter_op {inter}",
             f"oneDNN {'on' if 'onednn' in flags else 'off'}", "input fed NHWC"]
    return Runner(step, _info(tf.__version__, params, notes), lambda: holder.get("out"))


def _twin(backend_cls, cfg, spec, batch_size: int, threads: int):
    """Either twin in float32 with the bench weights: ``(backend, model, trainable parameters, NCHW batch)``."""
    be = backend_cls(device=cfg.DEVICE, dtype="float32", threads=threads)
    model = be.build_model("pnasnet", spec)
    be.load_neutral(model, neutral_weights(spec, cfg.SEED), source="bench random weights")
    return be, model, be.count_parameters(model), make_batch(spec, batch_size, cfg.SEED)


def twin_torch(mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str] = ()) -> Runner:
    if mode != "eval":
        raise BenchError("the PNASNet benchmark times the eval forward only")
    cfg, spec = _load(cfg_path)
    set_torch_threads(threads)
    import torch

    from torch_impl.backend import Backend, framework_version

    be, model, params, images = _twin(Backend, cfg, spec, batch_size, threads)
    notes = []
    channels_last = "cl" in flags
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        notes.append("channels-last (input converted in the step)")
    fmodel = model
    if "jit" in flags:
        example = torch.from_numpy(images)
        if channels_last:
            example = example.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            fmodel = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, example)))
        notes.append("torch.jit trace+freeze+optimize_for_inference")
    if "compile" in flags:
        fmodel = torch.compile(model)
        notes.append("torch.compile (inductor)")
    holder: Dict[str, Any] = {}

    if fmodel is model and not channels_last:
        def step():
            holder["out"] = be.eval_logits(model, images)
    else:
        def step():
            with torch.no_grad():
                x = torch.from_numpy(images)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                holder["out"] = fmodel(x).numpy()

    return Runner(step, _info(framework_version(), params, notes), lambda: holder.get("out"),
                  functools.partial(torch_profile, step),
                  min_warmup=3 if "compile" in flags else 0)


def twin_paddle(mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str] = ()) -> Runner:
    if mode != "eval":
        raise BenchError("the PNASNet benchmark times the eval forward only")
    cfg, spec = _load(cfg_path)
    set_paddle_threads(threads)
    from paddle_impl.backend import Backend, framework_version

    be, model, params, images = _twin(Backend, cfg, spec, batch_size, threads)
    notes = []
    holder: Dict[str, Any] = {}
    step = paddle_eval_step(be, model, images, threads, flags, holder, notes)
    return Runner(step, _info(framework_version(), params, notes), lambda: holder.get("out"),
                  functools.partial(paddle_profile, step),
                  min_warmup=2 if ("static" in flags or "infer" in flags) else 0)


def timm_model(mode: str, batch_size: int, threads: int, cfg_path: str, flags: Sequence[str] = ()) -> Runner:
    if mode != "eval":
        raise BenchError("the PNASNet benchmark times the eval forward only")
    cfg, spec = _load(cfg_path)
    set_torch_threads(threads)
    import timm
    import torch

    if spec.name != "pnasnet5_large":
        raise BenchError(f"timm has no {spec.name} (only pnasnet5large)")
    model = timm.create_model("pnasnet5large", pretrained=False, num_classes=spec.num_classes,
                              in_chans=spec.in_channels).eval()
    state = {k: torch.from_numpy(v) for k, v in neutral_weights(spec, cfg.SEED).items()}
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    if missing or unexpected:
        raise BenchError(f"timm pnasnet5large does not have the twin's state: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    model.load_state_dict(state, strict=False)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    images = make_batch(spec, batch_size, cfg.SEED)
    channels_last = "cl" in flags
    notes = [f"timm {timm.__version__} pnasnet5large"]
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        notes.append("channels-last")
    fmodel = torch.compile(model) if "compile" in flags else model
    if "compile" in flags:
        notes.append("torch.compile (inductor)")
    holder: Dict[str, Any] = {}

    def step():
        with torch.no_grad():
            x = torch.from_numpy(images)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            holder["out"] = fmodel(x).numpy()

    return Runner(step, _info(torch.__version__, params, notes), lambda: holder.get("out"),
                  functools.partial(torch_profile, step),
                  min_warmup=3 if "compile" in flags else 0)
