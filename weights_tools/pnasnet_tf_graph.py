"""A TensorFlow reference of PNASNet-5 with the official TF-slim variable names (graph mode, NHWC).

Written from the facts in ``shared/research/pnasnet.md``; it follows TF-slim ``pnasnet.py`` / ``nasnet_utils.py``
semantics: conv0 3x3 stride 2 VALID, every other conv / pool TF ``SAME``, BN eps 1e-3 (inference mode unless the
training graph is asked for), separable convs through ``slim.separable_conv2d(depth_multiplier=1)``, factorized
reduction, global mean pool, ``final_layer/FC``; the training graph adds the aux head ``aux_<k>``, drop path and
dense dropout.  The structure decisions are made like TF (static spatial sizes and channel counts), not read from
:func:`common.specs.pnasnet.cell_structures`, so comparing the variables against
:mod:`weights_tools.pnasnet_names` is a real check.

TensorFlow is imported only inside functions (importing it before paddle/torchvision segfaults this stack); tests
run this module in a subprocess through its CLI::

    python -m weights_tools.pnasnet_tf_graph variables --spec large [--with-aux] [--training] [--image-size N]
                                                       [--out vars.json]
    python -m weights_tools.pnasnet_tf_graph make-ckpt --spec large --prefix DIR/model.ckpt --seed 0 [--with-aux]
                                                       [--global-step N] [--image-size N] [--num-classes N]
    python -m weights_tools.pnasnet_tf_graph dump-ckpt --prefix DIR/model.ckpt --out ckpt.npz
    python -m weights_tools.pnasnet_tf_graph run --spec large --prefix DIR/model.ckpt --images in.npz --out out.npz
                                                 [--dtype float32|float64] [--endpoints all|none|name,name]
                                                 [--onednn 0|1] [--training] [--with-aux | --no-aux]
                                                 [--drop-path-noise noise.npz] [--summary summary.json]

``run`` evaluates every array of ``in.npz`` (NHWC batches of any sizes, built into one graph with shared
variables and restored once) and writes ``<key>/<endpoint>`` arrays (``logits`` always) plus, with ``--summary``,
a JSON with the shape, max-abs and rms of every endpoint, the graph's variables and the run time.

The CLI process turns off TF tensor equality and eager execution (:func:`graph_mode_process`), which halves the
graph-building time; the library functions do not, so they can be called from a process that uses TF otherwise.

oneDNN: TF reads ``TF_ENABLE_ONEDNN_OPTS`` once, when it is first imported, so it must be set before TensorFlow is
imported in the process; ``--onednn`` / ``onednn=`` set it and refuse to run when TF is already loaded with
another setting.

Endpoints (NHWC numpy): ``conv0_bn``, ``cell_stem_0``, ``cell_stem_1``, ``cell_0`` .. ``cell_<n-1>``,
``global_pool``, ``logits`` (and ``aux_logits`` when the aux head is built).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

if __package__ in (None, ""):  # ``python weights_tools/pnasnet_tf_graph.py``
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.specs import pnasnet as P  # noqa: E402
from weights_tools import pnasnet_names as N  # noqa: E402

DTYPES = ("float32", "float64")


# ----------------------------------------------------------------------------------------------------------------
# Random weights (pure numpy, no TF): the values make_random_checkpoint writes.
# ----------------------------------------------------------------------------------------------------------------
def _entry_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def random_tf_variables(spec: P.PNASNetSpec, seed: int, with_aux: bool = False, image_size: Optional[int] = None,
                        names: Optional[Iterable[str]] = None) -> Dict[str, np.ndarray]:
    """``{TF name: float32 array in TF layout}``; each tensor is drawn from its own stream (seed, name), so a
    tensor's value does not depend on ``with_aux`` or on ``names`` (which restricts the output to those names).

    Convs: N(0, gain / fan_in) with fan_in = kh*kw*C_in (depthwise kh*kw); gain 2 for the depthwise convs (they
    follow a ReLU), 1 for the rest (the 1x1 convs see concatenations of sums of branches, so a ReLU gain of 2 there
    makes activations grow ~1.4x per cell).  FC: N(0, 1 / C_in) weights, N(0, 0.1^2) biases.
    BN: gamma ~ U(0.8, 1.2), beta ~ N(0, 0.1^2), moving_mean ~ N(0, 0.1^2), moving_variance ~ U(0.5, 2).  The
    statistics do not match the activations, so a wrong eps or a wrong layout shows in the outputs.
    """
    out: Dict[str, np.ndarray] = {}
    entries = N.name_entries(spec, with_aux, image_size)
    if names is not None:
        wanted = set(names)
        unknown = wanted - {e.tf_name for e in entries}
        if unknown:
            raise KeyError(f"{spec.name}: no TF variables {sorted(unknown)[:5]}")
        entries = [e for e in entries if e.tf_name in wanted]
    for e in entries:
        rng = _entry_rng(seed, e.tf_name)
        shape = e.tf_shape
        leaf = e.tf_name.rsplit("/", 1)[-1]
        if e.kind == "vector":
            if leaf == "gamma":
                value = rng.uniform(0.8, 1.2, shape)
            elif leaf == "moving_variance":
                value = rng.uniform(0.5, 2.0, shape)
            else:  # beta, moving_mean, FC biases
                value = rng.normal(0.0, 0.1, shape)
        elif e.kind == "linear":
            value = rng.normal(0.0, 1.0, shape) / np.sqrt(shape[0])
        else:
            kh, kw, cin = shape[0], shape[1], shape[2]
            fan_in = kh * kw * (1 if e.kind == "depthwise" else cin)
            gain = 2.0 if e.kind == "depthwise" else 1.0
            value = rng.normal(0.0, 1.0, shape) * np.sqrt(gain / fan_in)
        out[e.tf_name] = value.astype(np.float32)
    return out


# ----------------------------------------------------------------------------------------------------------------
# TensorFlow side.
# ----------------------------------------------------------------------------------------------------------------
def _set_onednn(onednn: Optional[bool]) -> None:
    """Set ``TF_ENABLE_ONEDNN_OPTS``; it only takes effect before TensorFlow is first imported."""
    if onednn is None:
        return
    value = "1" if onednn else "0"
    if "tensorflow" in sys.modules:
        if os.environ.get("TF_ENABLE_ONEDNN_OPTS") != value:
            raise RuntimeError(f"TF_ENABLE_ONEDNN_OPTS={value} was asked for, but TensorFlow is already imported with "
                               f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')!r}; set it before "
                               "importing TensorFlow (run this module in a fresh process)")
        return
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = value


def graph_mode_process() -> None:
    """Process-wide settings for a process that only builds TF-1 graphs (the CLI calls this).

    Graph building through ``slim``'s Keras-legacy layers is quadratic in the number of variables when tensor
    equality is on (every ``add_weight`` compares the new variable with all existing ones); turning it off and
    disabling eager execution builds the Large graph ~2x faster.  Not done on import: it changes TF semantics
    for the whole process.
    """
    tf, _ = _import_tf()
    tf.compat.v1.disable_tensor_equality()
    tf.compat.v1.disable_eager_execution()


def _import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import warnings

    import tensorflow as tf
    import tf_slim as slim

    warnings.filterwarnings("ignore", message=".*layer.apply.*")
    return tf, slim


class _PNASNetTF:
    """Builds the graph in the current default graph.  ``dtype``: tf.float32 or tf.float64 (the whole graph)."""

    def __init__(self, spec: P.PNASNetSpec, dtype: str = "float32", is_training: bool = False,
                 with_aux: Optional[bool] = None, current_step=None):
        self.tf, self.slim = _import_tf()
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.spec = spec
        self.dtype = dtype
        self.tf_dtype = {"float32": self.tf.float32, "float64": self.tf.float64}[dtype]
        self.is_training = bool(is_training)
        self.with_aux = (self.is_training and spec.use_aux_head) if with_aux is None else bool(with_aux)
        if self.with_aux and spec.aux_head_cell is None:
            raise ValueError(f"{spec.name} has no aux head")
        # eval forces drop_path_keep_prob = 1.0 (TF _update_hparams)
        self.use_drop_path = self.is_training and spec.drop_path_keep_prob < 1.0
        self.current_step = current_step
        self.drop_path_noise: Dict[str, object] = {}   # feedable uniform noise per drop-path site
        self.endpoints: Dict[str, object] = {}

    # -- layers ---------------------------------------------------------------------------------------------------
    def relu(self, x):
        return self.tf.nn.relu(x)

    def conv(self, x, filters, kernel, stride=1, padding="SAME", scope=None):
        return self.slim.conv2d(x, filters, kernel, stride=stride, padding=padding, scope=scope)

    def batch_norm(self, x, scope):
        """TF-slim ``batch_norm(scale=True, epsilon=eps, decay=0.9997)`` semantics with its variable names.

        (tf_slim 1.1's own ``batch_norm`` no longer runs on TF 2.21: it needs ``ops.Tensor`` / ``tf_keras``.)
        Inference: float32 uses the fused kernel (``FusedBatchNormV3``) like slim's ``fused=True``; float64,
        which the fused kernel does not take, uses ``tf.nn.batch_normalization``.
        """
        tf = self.tf
        v1 = tf.compat.v1
        c = int(x.shape[-1])
        eps = self.spec.bn_eps
        moving_collections = [v1.GraphKeys.GLOBAL_VARIABLES, v1.GraphKeys.MOVING_AVERAGE_VARIABLES]
        with v1.variable_scope(scope):
            beta = v1.get_variable("beta", [c], self.tf_dtype, initializer=v1.zeros_initializer())
            gamma = v1.get_variable("gamma", [c], self.tf_dtype, initializer=v1.ones_initializer())
            mean = v1.get_variable("moving_mean", [c], self.tf_dtype, initializer=v1.zeros_initializer(),
                                   trainable=False, collections=moving_collections)
            var = v1.get_variable("moving_variance", [c], self.tf_dtype, initializer=v1.ones_initializer(),
                                  trainable=False, collections=moving_collections)
            if not self.is_training:
                if self.dtype == "float32":
                    y, _, _ = v1.nn.fused_batch_norm(x, gamma, beta, mean=mean, variance=var, epsilon=eps,
                                                      is_training=False)
                    return y
                return tf.nn.batch_normalization(x, mean, var, beta, gamma, eps)
            batch_mean, batch_var = tf.nn.moments(x, [0, 1, 2])
            y = tf.nn.batch_normalization(x, batch_mean, batch_var, beta, gamma, eps)
            # moving averages get the Bessel-corrected batch variance, like the fused training kernel
            n = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), self.tf_dtype)
            unbiased = batch_var * n / tf.maximum(n - 1, 1)
            decay = self.spec.bn_decay
            for moving, batch in ((mean, batch_mean), (var, unbiased)):
                v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, v1.assign(moving, moving * decay + batch * (1 - decay)))
            return y

    def drop_path(self, x, cell_num: int, site: str):
        """TF ``_apply_drop_path`` (v3): keep scaled by layer and by min(1, step / total_training_steps)."""
        if not self.use_drop_path:
            return x
        tf = self.tf
        v1 = tf.compat.v1
        layer_keep = P.layer_keep_prob(self.spec, cell_num)       # Python double, like TF
        step = self.current_step
        if step is None:
            step = v1.train.get_or_create_global_step()
        step = tf.cast(step, tf.float32)
        ratio = tf.minimum(1.0, step / float(self.spec.total_training_steps))
        keep = 1 - ratio * (1 - layer_keep)
        noise = v1.placeholder_with_default(
            tf.random.uniform(tf.stack([tf.shape(x)[0], 1, 1, 1]), dtype=tf.float32), [None, 1, 1, 1],
            name="drop_path_noise")
        self.drop_path_noise[site] = noise
        mask = tf.cast(tf.floor(keep + noise), x.dtype)
        return x * tf.cast(1.0 / keep, x.dtype) * mask

    def factorized_reduction(self, x, filters: int):
        tf = self.tf
        f1, f2 = P.factorized_split(filters)
        path1 = tf.nn.avg_pool2d(x, 1, 2, "VALID")
        path1 = self.conv(path1, f1, 1, scope="path1_conv")
        path2 = tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]])[:, 1:, 1:, :]
        path2 = tf.nn.avg_pool2d(path2, 1, 2, "VALID")
        path2 = self.conv(path2, f2, 1, scope="path2_conv")
        return self.batch_norm(tf.concat([path1, path2], axis=3), "final_path_bn")

    def operation(self, x, op: str, stride: int, filters: int, cell_num: int, site: str):
        slot = P.OpSlot(block=0, side="left", op=op, input_index=0)
        kind = slot.kind
        in_ch = int(x.shape[3])
        if kind == "separable":
            k = slot.kernel_size
            for layer in range(1, slot.num_layers + 1):
                x = self.relu(x)
                x = self.slim.separable_conv2d(x, filters, k, depth_multiplier=1, stride=stride if layer == 1 else 1,
                                               padding="SAME", scope=f"separable_{k}x{k}_{layer}")
                x = self.batch_norm(x, f"bn_sep_{k}x{k}_{layer}")
        elif kind == "none":
            if stride > 1 or in_ch != filters:
                x = self.relu(x)
                x = self.conv(x, filters, 1, stride=stride, scope="1x1")
                x = self.batch_norm(x, "bn_1")
        else:
            pool = self.slim.max_pool2d if kind == "max_pool" else self.slim.avg_pool2d
            x = pool(x, slot.kernel_size, stride=stride, padding="SAME")
            if in_ch != filters:
                x = self.conv(x, filters, 1, scope="1x1")
                x = self.batch_norm(x, "bn_1")
        if kind != "none":
            x = self.drop_path(x, cell_num, site)
        return x

    def cell(self, net, prev_layer, name: str, filter_scaling: float, stride: int, cell_num: int):
        tf = self.tf
        v1 = tf.compat.v1
        filters = int(self.spec.filters * filter_scaling)
        with v1.variable_scope(name):
            # _reduce_prev_layer: decided on static spatial sizes and channel counts, as in TF
            if prev_layer is None:
                h1 = net
            elif int(prev_layer.shape[2]) != int(net.shape[2]):
                h1 = self.factorized_reduction(self.relu(prev_layer), filters)
            elif int(prev_layer.shape[3]) != filters:
                h1 = self.batch_norm(self.conv(self.relu(prev_layer), filters, 1, scope="prev_1x1"), "prev_bn")
            else:
                h1 = prev_layer
            h0 = self.batch_norm(self.conv(self.relu(net), filters, 1, scope="1x1"), "beginning_bn")
            states = [h0, h1]
            for block in range(P.NUM_BLOCKS):
                with v1.variable_scope(f"comb_iter_{block}"):
                    outs = []
                    for j, side in ((2 * block, "left"), (2 * block + 1, "right")):
                        idx = P.CELL_HIDDENSTATE_INDICES[j]
                        with v1.variable_scope(side):
                            outs.append(self.operation(states[idx], P.CELL_OPERATIONS[j], stride if idx < 2 else 1,
                                                       filters, cell_num, f"{name}/comb_iter_{block}/{side}"))
                    with v1.variable_scope("combine"):
                        states.append(outs[0] + outs[1])
            with v1.variable_scope("cell_output"):
                keep = [states[i] for i, used in enumerate(P.CELL_USED_HIDDENSTATES) if not used]
                final = keep[-1]
                for i, s in zip(P.CELL_CONCAT, keep):
                    if int(s.shape[2]) != int(final.shape[2]) or int(s.shape[3]) != int(final.shape[3]):
                        raise ValueError(f"{name}: hidden state {i} has shape {s.shape}, the last one {final.shape}; "
                                         "TF would insert a 'reduction_<i>' here, which PNASNet-5 never needs")
                return tf.concat(keep, axis=3)

    def aux_head(self, net, scope: str):
        v1 = self.tf.compat.v1
        with v1.variable_scope(scope):
            with v1.variable_scope("aux_logits"):
                x = self.slim.avg_pool2d(net, P.AUX_POOL_KERNEL, stride=P.AUX_POOL_STRIDE, padding="VALID")
                x = self.conv(x, P.AUX_PROJ_FILTERS, 1, scope="proj")
                x = self.relu(self.batch_norm(x, "aux_bn0"))
                kernel = [int(x.shape[1]), int(x.shape[2])]
                x = self.conv(x, P.AUX_CONV_FILTERS, kernel, padding="VALID")   # default scope "Conv"
                x = self.relu(self.batch_norm(x, "aux_bn1"))
                x = self.tf.reshape(x, [-1, P.AUX_CONV_FILTERS])
                return self.slim.fully_connected(x, self.spec.num_classes, activation_fn=None, scope="FC")

    # -- the network ----------------------------------------------------------------------------------------------
    def __call__(self, images):
        tf, slim = self.tf, self.slim
        v1 = tf.compat.v1
        spec = self.spec
        if images.dtype != self.tf_dtype:
            raise ValueError(f"images are {images.dtype.name}, the graph is {self.dtype}")
        ep = self.endpoints
        if self.use_drop_path and self.current_step is None:
            self.current_step = v1.train.get_or_create_global_step()   # top level, named "global_step"
        initializer = v1.variance_scaling_initializer(scale=2.0, mode="fan_out", distribution="truncated_normal")
        with slim.arg_scope([slim.conv2d, slim.separable_conv2d], activation_fn=None, biases_initializer=None,
                            weights_initializer=initializer, data_format="NHWC"), \
                slim.arg_scope([slim.max_pool2d, slim.avg_pool2d], data_format="NHWC"):
            net = self.conv(images, spec.stem_filters, 3, stride=2, padding="VALID", scope="conv0")
            net = self.batch_norm(net, "conv0_bn")
            ep["conv0_bn"] = net
            outputs = [None, net]
            rate = spec.filter_scaling_rate
            scaling = 1.0 / rate ** P.NUM_STEM_CELLS
            for i in range(P.NUM_STEM_CELLS):
                net = self.cell(net, outputs[-2], f"cell_stem_{i}", scaling, 2, i)
                ep[f"cell_stem_{i}"] = net
                outputs.append(net)
                scaling *= rate
            scaling = 1.0
            cell_num = P.NUM_STEM_CELLS
            aux_logits = None
            for i in range(spec.num_cells):
                stride = 2 if i in spec.reduction_indices else 1
                if stride == 2:
                    scaling *= rate
                net = self.cell(net, outputs[-2], f"cell_{i}", scaling, stride, cell_num)   # skip_reduction_layer_input
                cell_num += 1
                ep[f"cell_{i}"] = net
                outputs.append(net)
                if self.with_aux and i == spec.aux_head_cell:
                    aux_logits = self.aux_head(self.relu(net), f"aux_{i}")
            with v1.variable_scope("final_layer"):
                net = tf.reduce_mean(self.relu(net), [1, 2])
                ep["global_pool"] = net
                if self.is_training and spec.dense_dropout_keep_prob < 1.0:
                    net = tf.nn.dropout(net, rate=1.0 - spec.dense_dropout_keep_prob)
                logits = slim.fully_connected(net, spec.num_classes, activation_fn=None, scope="FC")
        ep["logits"] = logits
        if aux_logits is not None:
            ep["aux_logits"] = aux_logits
        return logits


def build_pnasnet_tf(spec: P.PNASNetSpec, images, is_training: bool = False, with_aux: Optional[bool] = None,
                     dtype: Optional[str] = None, current_step=None):
    """Build the network on ``images`` (an NHWC tensor) in the current default graph.

    Returns ``(logits, endpoints, builder)``; ``builder.drop_path_noise`` maps each drop-path site to a feedable
    ``[N,1,1,1]`` uniform-noise tensor (training graph only).
    """
    dtype = dtype or images.dtype.name
    builder = _PNASNetTF(spec, dtype, is_training, with_aux, current_step)
    logits = builder(images)
    return logits, builder.endpoints, builder


def _graph_variables_info(variables, tf) -> List[Dict[str, object]]:
    trainable = {v.name for v in tf.compat.v1.trainable_variables()}
    return [{"name": v.op.name, "shape": [int(d) for d in v.shape], "dtype": v.dtype.base_dtype.name,
             "trainable": v.name in trainable} for v in variables]


def list_graph_variables(spec_name: str, is_training: bool = False, with_aux: Optional[bool] = None,
                         image_size: Optional[int] = None, dtype: str = "float32",
                         num_classes: Optional[int] = None) -> List[Dict[str, object]]:
    """Build the graph on a ``[1, S, S, 3]`` placeholder and list its global variables (name, shape, dtype)."""
    tf, _ = _import_tf()
    spec = P.get_spec(spec_name, num_classes)
    size = image_size or spec.image_size
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.as_dtype(dtype), [1, size, size, spec.in_channels], name="images")
        build_pnasnet_tf(spec, images, is_training=is_training, with_aux=with_aux)
        return _graph_variables_info(tf.compat.v1.global_variables(), tf)


def _assign_all(sess, tf, variables, values: Dict[str, np.ndarray]) -> None:
    """Set every variable from ``values`` (by op name), cast to the variable dtype, in one run."""
    v1 = tf.compat.v1
    feeds, ops = {}, []
    for v in variables:
        name = v.op.name
        value = np.asarray(values[name])
        if tuple(value.shape) != tuple(int(d) for d in v.shape):
            raise ValueError(f"{name}: value shape {list(value.shape)} does not fit the variable "
                             f"{[int(d) for d in v.shape]}")
        ph = v1.placeholder(v.dtype.base_dtype, v.shape, name=f"assign_{name.replace('/', '_')}")
        ops.append(v1.assign(v, ph))
        feeds[ph] = value.astype(v.dtype.base_dtype.as_numpy_dtype)
    sess.run(ops, feeds)


def make_random_checkpoint(spec_name: str, path_prefix: str, seed: int, with_aux: bool = False,
                           global_step: int = 1234, image_size: Optional[int] = None,
                           num_classes: Optional[int] = None) -> Dict[str, object]:
    """Write a TF-1 ``Saver`` (V2) checkpoint ``<path_prefix>.index/.data-*`` with :func:`random_tf_variables`.

    The graph is built (eval graph, plus the aux head with ``with_aux``; its 768-conv kernel is fixed by
    ``image_size``), its variables are checked against the name table, set, and saved with a ``global_step``.
    Returns a JSON-able summary, including ``graph_variables`` (name, shape, dtype, trainable of every variable
    saved, in graph order).
    """
    tf, _ = _import_tf()
    v1 = tf.compat.v1
    spec = P.get_spec(spec_name, num_classes)
    size = image_size or spec.image_size
    values = random_tf_variables(spec, seed, with_aux, size)
    graph = tf.Graph()
    with graph.as_default():
        images = v1.placeholder(tf.float32, [1, size, size, spec.in_channels], name="images")
        build_pnasnet_tf(spec, images, is_training=False, with_aux=with_aux)
        model_vars = v1.global_variables()
        step_var = v1.train.get_or_create_global_step()
        got = {v.op.name: tuple(int(d) for d in v.shape) for v in model_vars}
        want = {k: tuple(a.shape) for k, a in values.items()}
        if got != want:
            missing = sorted(set(want) - set(got))[:10]
            extra = sorted(set(got) - set(want))[:10]
            shape = [k for k in set(got) & set(want) if got[k] != want[k]][:10]
            raise RuntimeError(f"{spec.name}: the TF graph does not match the name table: missing {missing}, "
                               f"extra {extra}, shape {shape}")
        graph_variables = _graph_variables_info(model_vars + [step_var], tf)
        saver = v1.train.Saver(var_list=model_vars + [step_var], write_version=v1.train.SaverDef.V2)
        with v1.Session(graph=graph) as sess:
            _assign_all(sess, tf, model_vars, values)
            sess.run(v1.assign(step_var, int(global_step)))
            os.makedirs(os.path.dirname(os.path.abspath(path_prefix)), exist_ok=True)
            saved = saver.save(sess, path_prefix, write_meta_graph=False, write_state=False)
    return {"prefix": saved, "spec": spec.name, "num_classes": spec.num_classes, "seed": int(seed),
            "with_aux": bool(with_aux), "image_size": size, "num_variables": len(values),
            "global_step": int(global_step), "graph_variables": graph_variables}


def read_checkpoint(path_prefix: str) -> Dict[str, np.ndarray]:
    """Every tensor of a TF checkpoint, via ``tf.train.load_checkpoint``."""
    tf, _ = _import_tf()
    reader = tf.train.load_checkpoint(path_prefix)
    return {name: reader.get_tensor(name) for name in sorted(reader.get_variable_to_shape_map())}


def _checkpoint_classes(tf, path_prefix: str) -> Optional[int]:
    shapes = tf.train.load_checkpoint(path_prefix).get_variable_to_shape_map()
    bias = shapes.get("final_layer/FC/biases")
    return int(bias[0]) if bias else None


EndpointSelection = Union[bool, str, Sequence[str]]


def run_reference(spec_name: str, ckpt_prefix: str, images_nhwc: np.ndarray, dtype: str = "float32",
                  endpoints: EndpointSelection = True, onednn: Optional[bool] = None, is_training: bool = False,
                  with_aux: Optional[bool] = None, num_classes: Optional[int] = None,
                  feed_drop_path_noise: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, np.ndarray]:
    """Run the reference on ``images_nhwc`` (``[N, H, W, 3]``) with the weights of ``ckpt_prefix``.

    Returns ``{"logits": ...}`` plus the endpoints asked for (``True`` = all, ``False`` = none, or names), NHWC.
    ``dtype="float64"`` builds the whole graph in float64 and loads the checkpoint values cast to float64.
    The class count comes from the checkpoint unless ``num_classes`` is given.  Only the eval graph is meant for
    parity; ``is_training=True`` gives the training forward (batch-statistics BN, drop path, dropout, aux head),
    whose drop-path noise can be fixed with ``feed_drop_path_noise`` (``{site: [N,1,1,1] uniform}``, sites named
    ``<cell>/comb_iter_<i>/<side>``).
    """
    return run_reference_many(spec_name, ckpt_prefix, {"x": images_nhwc}, dtype, endpoints, onednn, is_training,
                              with_aux, num_classes, feed_drop_path_noise)["x"]


def run_reference_many(spec_name: str, ckpt_prefix: str, batches: Dict[str, np.ndarray], dtype: str = "float32",
                       endpoints: EndpointSelection = True, onednn: Optional[bool] = None, is_training: bool = False,
                       with_aux: Optional[bool] = None, num_classes: Optional[int] = None,
                       feed_drop_path_noise: Optional[Dict[str, np.ndarray]] = None,
                       variables_out: Optional[list] = None) -> Dict[str, Dict[str, np.ndarray]]:
    """:func:`run_reference` for several batches (any sizes) in one graph with shared variables: one restore.

    The first batch builds the network under the official variable names; the others reuse the variables.
    ``variables_out``, when a list, receives the graph's variables (name, shape, dtype, trainable).
    """
    _set_onednn(onednn)
    tf, _ = _import_tf()
    v1 = tf.compat.v1
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if not batches:
        raise ValueError("no image batches given")
    arrays = {}
    for key, images in batches.items():
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"images {key!r} must be NHWC with 3 channels, got shape {list(images.shape)}")
        arrays[key] = images
    if num_classes is None:
        num_classes = _checkpoint_classes(tf, ckpt_prefix)
    spec = P.get_spec(spec_name, num_classes)
    aux = bool(with_aux) if with_aux is not None else (is_training and spec.use_aux_head)
    sizes = {a.shape[1:3] for a in arrays.values()}
    if aux and len(sizes) > 1:
        raise ValueError(f"the aux head's conv kernel depends on the input size; one size per run, got {sorted(sizes)}")
    for images in arrays.values():
        P.check_image_size(spec, images.shape[1], with_aux=aux)
        if images.shape[1] != images.shape[2]:
            P.check_image_size(spec, images.shape[2], with_aux=aux)
    graph = tf.Graph()
    with graph.as_default():
        fetch, feeds = {}, {}
        builders = {}
        for i, (key, images) in enumerate(arrays.items()):
            x = v1.placeholder(tf.as_dtype(dtype), [None, images.shape[1], images.shape[2], 3], name="images")
            if i == 0:
                logits, eps, builder = build_pnasnet_tf(spec, x, is_training=is_training, with_aux=aux)
            else:
                with v1.variable_scope(v1.get_variable_scope(), reuse=True), tf.name_scope(f"batch_{i}"):
                    logits, eps, builder = build_pnasnet_tf(spec, x, is_training=is_training, with_aux=aux)
            builders[key] = builder
            if endpoints is True:
                wanted = list(eps)
            elif endpoints is False or endpoints is None:
                wanted = []
            else:
                wanted = [endpoints] if isinstance(endpoints, str) else list(endpoints)
                unknown = [n for n in wanted if n not in eps]
                if unknown:
                    raise ValueError(f"unknown endpoints {unknown}; available: {list(eps)}")
            fetch[key] = {name: eps[name] for name in wanted}
            fetch[key]["logits"] = logits
            feeds[key] = {x: images.astype(dtype)}
            for site, noise in (feed_drop_path_noise or {}).items():
                if site not in builder.drop_path_noise:
                    raise ValueError(f"no drop-path site {site!r}; sites: {sorted(builder.drop_path_noise)[:5]} ...")
                feeds[key][builder.drop_path_noise[site]] = np.asarray(noise, np.float32)
        variables = v1.global_variables()
        if variables_out is not None:
            variables_out.extend(_graph_variables_info(variables, tf))
        results = {}
        # Saver.restore into resource variables does not check shapes (an aux kernel made at another input size
        # would load silently), so names and shapes are checked here first.
        reader = tf.train.load_checkpoint(ckpt_prefix)
        stored = reader.get_variable_to_shape_map()
        missing = [v.op.name for v in variables if v.op.name not in stored]
        wrong = [f"{v.op.name}: graph {[int(d) for d in v.shape]}, checkpoint {list(stored[v.op.name])}"
                 for v in variables if v.op.name in stored and list(stored[v.op.name]) != [int(d) for d in v.shape]]
        if missing or wrong:
            raise ValueError(f"{ckpt_prefix} does not fit the {spec.name} graph: {len(missing)} variables missing "
                             f"{missing[:10]}, {len(wrong)} with another shape {wrong[:10]}")
        with v1.Session(graph=graph) as sess:
            if dtype == "float32":
                v1.train.Saver(var_list=variables).restore(sess, ckpt_prefix)
            else:
                _assign_all(sess, tf, variables, {v.op.name: reader.get_tensor(v.op.name) for v in variables})
            for key in arrays:
                out = sess.run(fetch[key], feeds[key])
                results[key] = {k: np.asarray(v) for k, v in out.items()}
    return results


# ----------------------------------------------------------------------------------------------------------------
# CLI.
# ----------------------------------------------------------------------------------------------------------------
def _write_json(path: Optional[str], obj) -> None:
    text = json.dumps(obj, indent=1, sort_keys=True)
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    else:
        print(text)


def _save_npz(path: str, arrays: Dict[str, np.ndarray]) -> None:
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _parse_endpoints(text: str) -> EndpointSelection:
    if text == "all":
        return True
    if text == "none":
        return False
    return [t for t in text.split(",") if t]


def _stats(a: np.ndarray) -> Dict[str, object]:
    a64 = np.asarray(a, np.float64)
    return {"shape": list(a.shape), "dtype": str(a.dtype), "max_abs": float(np.max(np.abs(a64))) if a.size else 0.0,
            "rms": float(np.sqrt(np.mean(a64 ** 2))) if a.size else 0.0, "finite": bool(np.all(np.isfinite(a64)))}


def main(argv: Optional[Iterable[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m weights_tools.pnasnet_tf_graph",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("variables", help="list the global variables of the TF graph as JSON")
    p.add_argument("--spec", default="large")
    p.add_argument("--training", action="store_true")
    p.add_argument("--with-aux", action="store_true", default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--out", default=None)

    p = sub.add_parser("make-ckpt", help="write a random TF checkpoint with the official names")
    p.add_argument("--spec", default="large")
    p.add_argument("--prefix", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--with-aux", action="store_true")
    p.add_argument("--global-step", type=int, default=1234)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--out", default=None, help="JSON summary (stdout if absent)")

    p = sub.add_parser("dump-ckpt", help="every tensor of a TF checkpoint into an .npz")
    p.add_argument("--prefix", required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("run", help="evaluate the reference on the arrays of an .npz")
    p.add_argument("--spec", default="large")
    p.add_argument("--prefix", required=True)
    p.add_argument("--images", required=True, help=".npz of NHWC batches; each key is run separately")
    p.add_argument("--out", default=None, help=".npz of <key>/<endpoint> arrays")
    p.add_argument("--summary", default=None, help="JSON with shapes/statistics of every endpoint and timings")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--endpoints", default="all", help="all | none | comma-separated names (saved in --out)")
    p.add_argument("--onednn", choices=("0", "1"), default="0",
                   help="TF_ENABLE_ONEDNN_OPTS for this process (default 0: the oneDNN rewrites run this graph 15-20x "
                        "slower on CPU)")
    p.add_argument("--training", action="store_true", help="training graph: batch-statistics BN, drop path, dropout")
    p.add_argument("--with-aux", dest="with_aux", action="store_true", default=None,
                   help="build the aux head (default: with --training only)")
    p.add_argument("--no-aux", dest="with_aux", action="store_false", help="no aux head, also with --training")
    p.add_argument("--drop-path-noise", default=None,
                   help=".npz of [N,1,1,1] uniform noise per drop-path site <cell>/comb_iter_<i>/<side> (training)")
    p.add_argument("--num-classes", type=int, default=None)

    args = parser.parse_args(None if argv is None else list(argv))
    if args.command == "run" and args.onednn is not None:
        _set_onednn(args.onednn == "1")   # before TensorFlow is imported by anything below
    graph_mode_process()

    if args.command == "variables":
        info = list_graph_variables(args.spec, args.training, args.with_aux, args.image_size, args.dtype,
                                    args.num_classes)
        _write_json(args.out, info)
    elif args.command == "make-ckpt":
        _write_json(args.out, make_random_checkpoint(args.spec, args.prefix, args.seed, args.with_aux,
                                                     args.global_step, args.image_size, args.num_classes))
    elif args.command == "dump-ckpt":
        _save_npz(args.out, read_checkpoint(args.prefix))
    elif args.command == "run":
        selection = _parse_endpoints(args.endpoints)
        saved: Dict[str, np.ndarray] = {}
        summary: Dict[str, object] = {"dtype": args.dtype, "spec": args.spec,
                                      "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "runs": {}}
        with np.load(args.images) as data:
            batches = {k: data[k] for k in data.files}
        noise = None
        if args.drop_path_noise:
            with np.load(args.drop_path_noise) as data:
                noise = {k: data[k] for k in data.files}
        start = time.perf_counter()
        graph_variables: list = []
        results = run_reference_many(args.spec, args.prefix, batches, args.dtype, endpoints=True,
                                     is_training=args.training, with_aux=args.with_aux, num_classes=args.num_classes,
                                     feed_drop_path_noise=noise, variables_out=graph_variables)
        summary["seconds"] = time.perf_counter() - start
        summary["graph_variables"] = graph_variables
        for key, out in results.items():
            summary["runs"][key] = {"endpoints": {k: _stats(v) for k, v in out.items()}}
            keep = list(out) if selection is True else (["logits"] if selection is False else
                                                         ["logits"] + [n for n in selection if n != "logits"])
            for name in keep:
                if name not in out:
                    raise SystemExit(f"unknown endpoint {name!r}; available: {list(out)}")
                saved[f"{key}/{name}"] = out[name]
        if args.out:
            _save_npz(args.out, saved)
        if args.summary:
            _write_json(args.summary, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
