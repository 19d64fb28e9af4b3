"""PNASNet-5 TensorFlow checkpoints <-> the neutral checkpoint (canonical timm names, torch layout).

    import_tf_checkpoint(prefix, net=None, drop_background=False, with_aux=None) -> Checkpoint
    export_tf_checkpoint(ckpt, prefix, dtype=None)
    drop_background(ckpt) -> Checkpoint                      (1001 -> 1000 classes)
    tf_reference_outputs(spec, weights, batches, dtype)     (the TF column of the parity harness)

TensorFlow is never imported into the calling process (importing it before paddle / torchvision segfaults this
stack): checkpoints are read with TF's own checkpoint reader in a subprocess (``python -m
weights_tools.pnasnet_tf_graph dump-ckpt``) and written by this module's CLI in a subprocess
(``python -m weights_tools.pnasnet_convert write-ckpt``), which builds plain variables with the official names and
saves them with ``tf.compat.v1.train.Saver`` (V2), so the result is an ordinary TF-slim checkpoint.  Everything
else is numpy: the name table and the layout transforms live in :mod:`weights_tools.pnasnet_names`.

Import rules (strict, every failure names the variable):

* every variable of the eval graph is used exactly once (1179 for Large, 933 for Mobile) and every checkpoint
  variable is used or explicitly skipped: ``global_step`` (its value is kept in ``meta['tf_global_step']`` so an
  export writes it back) and, unless ``with_aux=True``, the training-only aux head ``aux_<k>/*``
  (``meta['skipped']`` says so); any other variable, a missing one, a wrong shape, or another network's checkpoint
  (Mobile given as Large) is an error that lists the names;
* the network (Large / Mobile) and the class count (1001 / 1000 / other) come from the variables when ``net`` is
  not given; the aux head's kernel tells the input size it was built for;
* a truncated or corrupt checkpoint fails in TF's reader (CRC / size checks) and is reported with TF's message.

Export is the exact inverse (tensor values bitwise equal after TF -> neutral -> TF, ``global_step`` included); the
files are written in a temporary folder next to the target and moved into place data first, index last, so a
failure never leaves a readable partial checkpoint under the target prefix.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

if __package__ in (None, ""):  # ``python weights_tools/pnasnet_convert.py``
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.checkpoint import Checkpoint, CheckpointError, compare_state  # noqa: E402
from common.specs import pnasnet as P  # noqa: E402
from weights_tools import pnasnet_names as N  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILY = "pnasnet"
TF_SUBPROCESS_TIMEOUT = 3600
LogFn = Callable[[str], None]


class PNASNetConvertError(CheckpointError):
    """A TF checkpoint or a neutral state does not fit PNASNet-5; the message names the file and the tensors."""


def _default_log(message: str) -> None:
    print(f"  [pnasnet] {message}", file=sys.stderr, flush=True)


def _log_fn(log: Optional[LogFn]) -> LogFn:
    return _default_log if log is None else log


# ------------------------------------------------------------------------------------------------ subprocesses
def _run_tf(args: List[str], what: str, source: str, env_extra: Optional[Dict[str, str]] = None) -> str:
    """Run a TF CLI in a fresh process; a failure raises with TF's own last error line."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.update(env_extra or {})
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=TF_SUBPROCESS_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise PNASNetConvertError(f"{source}: {what} did not finish in {TF_SUBPROCESS_TIMEOUT} s") from None
    if proc.returncode != 0:
        line = _tf_error_line(proc.stderr)
        if any(t in line for t in ("Read less bytes", "Checksum does not match", "DataLoss", "Data loss", "corrupt",
                                   "truncated", "Unable to open table file", "not an sstable")):
            line += " (the checkpoint is truncated or corrupt)"
        raise PNASNetConvertError(f"{source}: {what} failed: {line}")
    return proc.stdout


def _tf_error_line(stderr: str) -> str:
    """The most telling line of a TF traceback (``...Error: message``), else the last non-empty line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if not lines:
        return "no error output"
    if any("No module named 'tensorflow'" in ln or 'No module named "tensorflow"' in ln for ln in lines):
        return "TensorFlow is not installed (pip install tensorflow-cpu tf-slim); --from/--to tf need it"
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) or head.startswith("tensorflow.") and "Error" in head:
            return ln if len(ln) < 1500 else ln[:1500] + " ..."
    return lines[-1]


# ------------------------------------------------------------------------------------------------ TF checkpoint files
def normalise_prefix(path: str) -> str:
    """``model.ckpt`` from ``model.ckpt``, ``model.ckpt.index`` or ``model.ckpt.data-00000-of-00001``."""
    path = os.fspath(path)
    if path.endswith(".index"):
        return path[: -len(".index")]
    head, dot, tail = path.rpartition(".data-")
    if dot and "-of-" in tail:
        return head
    return path


def tf_checkpoint_files(prefix: str) -> List[str]:
    """The files of the checkpoint ``prefix`` (index first); raises when the index is missing."""
    index = f"{prefix}.index"
    if not os.path.isfile(index):
        hint = ""
        if os.path.isfile(prefix):
            hint = " (this is a single file; a TF checkpoint is a prefix with .index and .data-* files)"
        elif os.path.isdir(prefix):
            found = sorted(glob.glob(os.path.join(prefix, "*.index")))
            if found:
                hint = f" (a folder; did you mean {found[0][: -len('.index')]}?)"
        raise PNASNetConvertError(f"TF checkpoint not found: {index} does not exist{hint}")
    return [index] + sorted(glob.glob(glob.escape(prefix) + ".data-*-of-*"))


def read_tf_checkpoint(prefix: str, log: Optional[LogFn] = None) -> Dict[str, np.ndarray]:
    """Every tensor of a TF checkpoint, read with TF's checkpoint reader in a subprocess."""
    log = _log_fn(log)
    prefix = normalise_prefix(prefix)
    files = tf_checkpoint_files(prefix)
    size = sum(os.path.getsize(f) for f in files)
    log(f"reading {prefix} ({len(files)} files, {size / 2**20:,.1f} MiB) with TensorFlow's checkpoint reader "
        "(subprocess) ...")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pnasnet_tf_dump_") as tmp:
        out = os.path.join(tmp, "dump.npz")
        _run_tf(["weights_tools.pnasnet_tf_graph", "dump-ckpt", "--prefix", os.path.abspath(prefix), "--out", out],
                "TensorFlow's checkpoint reader", prefix)
        with np.load(out, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    log(f"read {len(arrays):,} tensors in {time.perf_counter() - start:.1f} s")
    return arrays


# ------------------------------------------------------------------------------------------------ recognition
def _num_classes(names_shapes: Mapping[str, Tuple[int, ...]]) -> Optional[int]:
    shape = names_shapes.get("final_layer/FC/biases")
    return int(shape[0]) if shape is not None and len(shape) == 1 else None


def aux_image_size(spec: P.PNASNetSpec, kernel: int) -> int:
    """An input size whose aux head has a ``kernel`` x ``kernel`` conv: ``spec.image_size`` when it fits, else the
    smallest size from 32 up (the kernel only fixes the size up to a range)."""
    candidates = [spec.image_size] + list(range(32, 2049))
    for size in candidates:
        try:
            if P.aux_head_shapes(spec, size)["conv_kernel"] == kernel:
                return size
        except ValueError:
            continue
    raise PNASNetConvertError(f"{spec.name}: no input size gives an aux-head conv kernel of {kernel}x{kernel}")


def _spec_candidates(net: Optional[str], classes: Optional[int]) -> List[P.PNASNetSpec]:
    if net:
        try:
            return [P.get_spec(net, classes)]
        except ValueError as exc:
            raise PNASNetConvertError(f"--net {net!r}: {exc}") from None
    return [P.get_spec(name, classes) for name in P.SPECS]


def _aux_info(spec: P.PNASNetSpec, shapes: Mapping[str, Tuple[int, ...]]) -> Tuple[List[str], Optional[int]]:
    """The checkpoint's ``aux_<k>/`` names for this spec and the input size its aux conv kernel implies."""
    prefix = N.aux_tf_prefix(spec)
    names = sorted(n for n in shapes if prefix and n.startswith(prefix))
    conv = shapes.get(f"{prefix}aux_logits/Conv/weights") if prefix else None
    size = None
    if conv is not None and len(conv) == 4 and conv[0] == conv[1]:
        try:
            size = aux_image_size(spec, int(conv[0]))
        except PNASNetConvertError:
            size = None
    return names, size


def tf_to_neutral(tf_arrays: Mapping[str, np.ndarray], net: Optional[str] = None, with_aux: Optional[bool] = None,
                  source: str = "TF checkpoint") -> Tuple[P.PNASNetSpec, Dict[str, np.ndarray], Dict[str, object]]:
    """``(spec, canonical state, info)`` from ``{TF name: array}``: the strict core of :func:`import_tf_checkpoint`."""
    shapes = {N._strip_tf(k): tuple(np.shape(v)) for k, v in tf_arrays.items()}
    classes = _num_classes(shapes)
    failures = []
    for spec in _spec_candidates(net, classes):
        aux_names, aux_size = _aux_info(spec, shapes)
        use_aux = bool(with_aux) and spec.aux_head_cell is not None
        if with_aux and not aux_names:
            failures.append(f"{spec.name}: with_aux=True but the checkpoint has no {N.aux_tf_prefix(spec)}* "
                            "variables (an eval-only export)")
            continue
        try:
            state = N.tf_to_neutral_state(spec, tf_arrays, with_aux=use_aux, image_size=aux_size if use_aux else None,
                                          source=source)
        except N.NameTableError as exc:
            failures.append(str(exc))
            continue
        skipped = []
        if aux_names and not use_aux:
            skipped.append(f"{N.aux_tf_prefix(spec)}* ({len(aux_names)} tensors: the training-only aux head; "
                           "import with with_aux=True to keep it)")
        ignored = sorted(n for n in shapes if N.is_ignored_tf_name(n))
        skipped += ignored
        info = {"skipped": skipped, "with_aux": use_aux, "aux_image_size": aux_size if use_aux else None,
                "used": len(state), "source_tensors": len(shapes)}
        if "global_step" in shapes:
            step = np.asarray(tf_arrays[[k for k in tf_arrays if N._strip_tf(k) == "global_step"][0]])
            info["tf_global_step"] = int(step) if step.ndim == 0 else step.tolist()
            info["tf_global_step_dtype"] = str(step.dtype)
        return spec, state, info
    if classes is None:
        failures.insert(0, f"{source}: no final_layer/FC/biases variable: not a PNASNet-5 TF-slim checkpoint")
    raise PNASNetConvertError("\n".join([f"{source}: the variables fit no PNASNet-5 network"
                                         f"{' named ' + net if net else ''}:"] + failures))


# ------------------------------------------------------------------------------------------------ import
def import_tf_checkpoint(prefix: str, net: Optional[str] = None, drop_background: bool = False,
                         with_aux: Optional[bool] = None, log: Optional[LogFn] = None) -> Checkpoint:
    """A TF-slim PNASNet-5 checkpoint (prefix of ``.index`` / ``.data-*``) as a neutral :class:`Checkpoint`.

    ``net``: ``pnasnet5_large`` / ``pnasnet5_mobile`` (aliases ``large`` / ``mobile``); recognised from the
    variables when None.  ``with_aux``: convert the aux head ``aux_<k>/*`` to ``aux_head.*`` (True; an error when the
    checkpoint has none), or skip it and report it in ``meta['skipped']`` (None / False: the eval model).
    ``drop_background``: 1001 -> 1000 classes (:func:`drop_background`).  Values keep their dtype (float32).
    """
    log = _log_fn(log)
    prefix = normalise_prefix(prefix)
    arrays = read_tf_checkpoint(prefix, log)
    spec, state, info = tf_to_neutral(arrays, net, with_aux, source=prefix)
    log(f"{spec.name} ({spec.num_classes} classes): {info['used']:,} of {info['source_tensors']:,} tensors converted"
        + (f"; skipped {', '.join(info['skipped'])}" if info["skipped"] else ""))
    meta = {"source_format": "tf", "source": prefix, "family": FAMILY, "name": spec.name,
            "num_classes": spec.num_classes, "with_aux": info["with_aux"], "skipped": info["skipped"]}
    if info["with_aux"]:
        meta["image_size"] = info["aux_image_size"]
    for key in ("tf_global_step", "tf_global_step_dtype"):
        if key in info:
            meta[key] = info[key]
    ckpt = Checkpoint(model=state, meta=meta)
    if drop_background:
        ckpt = _drop_background(ckpt)
        log("dropped the background class: 1001 -> 1000 logits")
    return ckpt


# ------------------------------------------------------------------------------------------------ 1001 -> 1000
CLASSIFIERS = ("last_linear", "aux_head.fc")


def drop_background(ckpt: Checkpoint) -> Checkpoint:
    """1001 -> 1000 classes: drop row 0 (TF's background class) of ``last_linear`` (weight row and bias entry), and
    of ``aux_head.fc`` when present; also in the EMA weights.  TF logit k+1 = ImageNet class k afterwards logit k."""
    def drop(model: Dict[str, np.ndarray], where: str) -> Dict[str, np.ndarray]:
        out = dict(model)
        if "last_linear.bias" not in model or "last_linear.weight" not in model:
            raise PNASNetConvertError(f"drop_background: {where} has no last_linear.weight / last_linear.bias")
        for head in CLASSIFIERS:
            w, b = f"{head}.weight", f"{head}.bias"
            if w not in model and b not in model:
                continue
            if w not in model or b not in model:
                raise PNASNetConvertError(f"drop_background: {where} has only one of {w} / {b}")
            weight, bias = np.asarray(model[w]), np.asarray(model[b])
            if weight.ndim != 2 or bias.ndim != 1 or weight.shape[0] != bias.shape[0]:
                raise PNASNetConvertError(f"drop_background: {where}: {w} {list(weight.shape)} and {b} "
                                          f"{list(bias.shape)} are not a [classes, features] / [classes] pair")
            if bias.shape[0] != 1001:
                raise PNASNetConvertError(f"drop_background: {where}: {b} has {bias.shape[0]} classes; only a "
                                          "1001-class head (background + ImageNet-1k) has a background row to drop")
            out[w] = np.ascontiguousarray(weight[1:])
            out[b] = np.ascontiguousarray(bias[1:])
        return out

    meta = dict(ckpt.meta)
    meta["num_classes"] = 1000
    meta["dropped_background"] = True
    return Checkpoint(model=drop(ckpt.model, "model"), meta=meta,
                      ema=drop(ckpt.ema, "EMA") if ckpt.ema is not None else None,
                      optimizer=ckpt.optimizer, rng=ckpt.rng, rng_arrays=dict(ckpt.rng_arrays))


_drop_background = drop_background   # import_tf_checkpoint's argument of the same name hides the function


# ------------------------------------------------------------------------------------------------ export
def spec_of_state(model: Mapping[str, np.ndarray], meta: Optional[Mapping[str, object]] = None,
                  source: str = "checkpoint") -> Tuple[P.PNASNetSpec, bool, Optional[int]]:
    """``(spec, with_aux, image size of the aux head)`` of a canonical PNASNet-5 state (names from ``meta`` or
    recognised from the tensors); strict: every name and shape must fit."""
    meta = dict(meta or {})
    if meta.get("family") not in (None, FAMILY):
        raise PNASNetConvertError(f"{source}: TF export supports PNASNet-5 only; this is {meta.get('family')}/"
                                  f"{meta.get('name')}")
    if "last_linear.bias" not in model:
        raise PNASNetConvertError(f"{source}: no last_linear.bias: not a PNASNet-5 state (canonical timm names)")
    classes = int(np.shape(model["last_linear.bias"])[0])
    names = [str(meta["name"])] if meta.get("name") else list(P.SPECS)
    with_aux = any(k.startswith("aux_head.") for k in model)
    reports = []
    for name in names:
        try:
            spec = P.get_spec(name, classes)
        except ValueError as exc:
            raise PNASNetConvertError(f"{source}: {exc}") from None
        size = None
        if with_aux:
            conv = model.get("aux_head.conv.weight")
            if spec.aux_head_cell is None or conv is None or np.ndim(conv) != 4:
                reports.append(f"{name}: aux_head tensors without a 4-D aux_head.conv.weight")
                continue
            size = int(meta["image_size"]) if meta.get("image_size") else aux_image_size(spec, int(np.shape(conv)[2]))
        report = compare_state(P.expected_state_shapes(spec, with_aux=with_aux, image_size=size), model)
        if report.ok:
            return spec, with_aux, size
        reports.append(report.format(f"{source} as {name}" + (" with the aux head" if with_aux else ""), limit=10))
    raise PNASNetConvertError("\n".join(reports))


def neutral_to_tf_arrays(model: Mapping[str, np.ndarray], spec: P.PNASNetSpec, with_aux: bool = False,
                         image_size: Optional[int] = None, dtype=None) -> Dict[str, np.ndarray]:
    """``{TF name: TF-layout array}`` for a canonical state that fits ``spec`` exactly (values keep their dtype
    unless ``dtype``)."""
    out = {}
    for entry in N.name_entries(spec, with_aux, image_size):
        array = np.asarray(model[entry.canonical])
        if dtype is not None:
            array = array.astype(dtype)
        out[entry.tf_name] = N.neutral_array_to_tf(entry.canonical, array)
        if out[entry.tf_name].shape != entry.tf_shape:
            raise PNASNetConvertError(f"{entry.canonical}: TF shape {list(out[entry.tf_name].shape)} is not "
                                      f"{list(entry.tf_shape)} ({entry.tf_name})")
    return out


@contextlib.contextmanager
def _staging_dir(prefix: str):
    directory = os.path.dirname(os.path.abspath(prefix)) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(prefix)}.", suffix=".tmp", dir=directory)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_tf_checkpoint(ckpt: Checkpoint, prefix: str, dtype=None, log: Optional[LogFn] = None) -> str:
    """Write ``ckpt`` (a neutral PNASNet-5 checkpoint) as a TF-slim checkpoint ``<prefix>.index`` / ``.data-*``.

    Official TF-slim variable names and layouts; the aux head ``aux_<k>/`` when the state has ``aux_head.*``;
    ``global_step`` when ``meta['tf_global_step']`` is known.  Values keep their dtype unless ``dtype`` (e.g.
    ``np.float64`` for a float64 reference graph).  Written through a subprocess; returns the prefix.
    """
    log = _log_fn(log)
    prefix = normalise_prefix(prefix)
    meta = dict(ckpt.meta or {})
    spec, with_aux, size = spec_of_state(ckpt.model, meta, source=str(meta.get("source", "checkpoint")))
    arrays = neutral_to_tf_arrays(ckpt.model, spec, with_aux, size, dtype)
    if meta.get("tf_global_step") is not None:
        arrays["global_step"] = np.asarray(meta["tf_global_step"], dtype=meta.get("tf_global_step_dtype", "int64"))
    total = sum(a.nbytes for a in arrays.values())
    log(f"writing {spec.name} ({spec.num_classes} classes{', aux head' if with_aux else ''}) as a TF checkpoint "
        f"{prefix}: {len(arrays):,} variables, {total / 2**20:,.1f} MiB (TensorFlow subprocess) ...")
    start = time.perf_counter()
    with _staging_dir(prefix) as tmp:
        npz = os.path.join(tmp, "arrays.npz")
        np.savez(npz, **arrays)
        staged = os.path.join(tmp, "model.ckpt")
        _run_tf(["weights_tools.pnasnet_convert", "write-ckpt", "--arrays", npz, "--prefix", staged],
                "writing the TF checkpoint", prefix)
        del arrays
        data = sorted(glob.glob(glob.escape(staged) + ".data-*-of-*"))
        if not os.path.isfile(staged + ".index") or not data:
            raise PNASNetConvertError(f"{prefix}: TensorFlow wrote no checkpoint files")
        # data first, index last: the index is what makes the prefix a readable checkpoint
        for path in data:
            os.replace(path, prefix + path[len(staged):])
        os.replace(staged + ".index", prefix + ".index")
    log(f"wrote {prefix}.index and {len(data)} data file(s) in {time.perf_counter() - start:.1f} s")
    return prefix


def write_checkpoint_tf(arrays: Mapping[str, np.ndarray], prefix: str) -> str:
    """(Runs in the TF subprocess.)  Save ``{name: array}`` as TF variables of the same names and dtypes with a
    V2 ``Saver``: what ``tf.train.load_checkpoint`` / TF-slim restores read."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    v1 = tf.compat.v1
    v1.disable_eager_execution()
    v1.disable_tensor_equality()     # graph building is quadratic in the number of variables otherwise
    graph = tf.Graph()
    with graph.as_default():
        variables, feeds = {}, {}
        for name in sorted(arrays):
            value = np.asarray(arrays[name])
            ph = v1.placeholder(tf.as_dtype(value.dtype), value.shape)
            var = v1.Variable(ph, name=name, trainable=False, use_resource=True)
            if var.op.name != name:
                raise RuntimeError(f"TF renamed variable {name!r} to {var.op.name!r}")
            feeds[ph] = value
            variables[name] = var
        saver = v1.train.Saver(var_list=variables, write_version=v1.train.SaverDef.V2)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.variables_initializer(list(variables.values())), feeds)
            return saver.save(sess, prefix, write_meta_graph=False, write_state=False)


# ------------------------------------------------------------------------------------------------ TF reference
def tf_reference_outputs(spec: P.PNASNetSpec, weights: Mapping[str, np.ndarray], batches: Mapping[str, np.ndarray],
                         dtype: str = "float64", onednn: Optional[bool] = False, endpoints: Iterable[str] = None,
                         log: Optional[LogFn] = None) -> Dict[str, Dict[str, np.ndarray]]:
    """The TF-slim-named reference graph's eval outputs on NCHW ``batches``: ``{key: {module name: NCHW array}}``.

    ``weights`` (canonical) are written with :func:`export_tf_checkpoint` in ``dtype`` and run by
    ``python -m weights_tools.pnasnet_tf_graph run`` in a subprocess (``onednn``: ``TF_ENABLE_ONEDNN_OPTS``; off by
    default: TF 2.21's oneDNN rewrites run this graph 15-20x slower on CPU, bench/pnasnet.py).  Keys:
    ``conv_0`` (TF ``conv0_bn``), ``cell_stem_0`` ... ``cell_<n-1>``, ``global_pool``, ``last_linear`` and
    ``(model)`` (TF ``logits``); ``endpoints`` restricts them (TF endpoint names; default all).
    """
    log = _log_fn(log)
    if spec.in_channels != 3:
        raise PNASNetConvertError(f"{spec.name}: the TF reference takes RGB images, the spec has {spec.in_channels} "
                                  "input channels")
    module_names = P.endpoint_module_names(spec)
    wanted = list(module_names) if endpoints is None else list(endpoints)
    with tempfile.TemporaryDirectory(prefix="pnasnet_tf_ref_") as tmp:
        model = {k: np.asarray(v) for k, v in weights.items()}
        prefix = export_tf_checkpoint(Checkpoint(model=model, meta={"family": FAMILY, "name": spec.name}),
                                      os.path.join(tmp, "model.ckpt"), dtype=np.dtype(dtype), log=log)
        images = os.path.join(tmp, "images.npz")
        np.savez(images, **{k: np.ascontiguousarray(np.asarray(v).transpose(0, 2, 3, 1)) for k, v in batches.items()})
        out = os.path.join(tmp, "out.npz")
        args = ["weights_tools.pnasnet_tf_graph", "run", "--spec", spec.name, "--prefix", prefix, "--images", images,
                "--out", out, "--dtype", dtype, "--endpoints", ",".join(wanted), "--num-classes",
                str(spec.num_classes)]
        if onednn is not None:
            args += ["--onednn", "1" if onednn else "0"]
        start = time.perf_counter()
        log(f"running the TF reference ({dtype}) on {', '.join(f'{k} {list(np.shape(v))}' for k, v in batches.items())}"
            " ...")
        _run_tf(args, "the TF reference run", spec.name)
        log(f"TF reference done in {time.perf_counter() - start:.1f} s")
        results: Dict[str, Dict[str, np.ndarray]] = {}
        with np.load(out, allow_pickle=False) as data:
            for key in batches:
                arrays = {}
                for endpoint in wanted:
                    value = data[f"{key}/{endpoint}"]
                    if value.ndim == 4:
                        value = np.ascontiguousarray(value.transpose(0, 3, 1, 2))
                    for name in module_names[endpoint]:
                        arrays[name] = value
                results[key] = arrays
    return results


# ------------------------------------------------------------------------------------------------ CLI
def main(argv: Optional[Iterable[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m weights_tools.pnasnet_convert", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("write-ckpt", help="(TF) save the arrays of an .npz as a TF V2 checkpoint")
    p.add_argument("--arrays", required=True)
    p.add_argument("--prefix", required=True)
    p = sub.add_parser("import", help="TF checkpoint -> neutral .safetensors (no torch / paddle needed)")
    p.add_argument("--prefix", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--net", default=None)
    p.add_argument("--with-aux", action="store_true", default=None)
    p.add_argument("--drop-background", action="store_true")
    p = sub.add_parser("export", help="neutral .safetensors -> TF checkpoint")
    p.add_argument("--src", required=True)
    p.add_argument("--prefix", required=True)
    args = parser.parse_args(None if argv is None else list(argv))
    if args.command == "write-ckpt":
        with np.load(args.arrays, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        saved = write_checkpoint_tf(arrays, args.prefix)
        print(json.dumps({"prefix": saved, "variables": len(arrays)}))
    elif args.command == "import":
        from common.checkpoint import save_checkpoint

        save_checkpoint(args.out, import_tf_checkpoint(args.prefix, args.net, args.drop_background, args.with_aux))
    elif args.command == "export":
        from common.checkpoint import load_checkpoint

        export_tf_checkpoint(load_checkpoint(args.src), args.prefix)
    return 0


__all__ = ("PNASNetConvertError", "normalise_prefix", "tf_checkpoint_files", "read_tf_checkpoint", "tf_to_neutral",
           "import_tf_checkpoint", "drop_background", "spec_of_state", "neutral_to_tf_arrays", "export_tf_checkpoint",
           "write_checkpoint_tf", "tf_reference_outputs", "aux_image_size")

if __name__ == "__main__":
    sys.exit(main())
