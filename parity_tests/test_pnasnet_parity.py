"""PNASNet-5: TensorFlow vs PyTorch vs Paddle, per cell, from a TF checkpoint, at 331, 323 and 224 (and Mobile at 224).

The chain under test is the real one: a TF-slim checkpoint with the official variable names (random, non-trivial
weights and BN statistics: ``make_random_checkpoint``) -> ``import_tf_checkpoint`` (TF's own reader, strict) ->
neutral -> the torch and paddle twins.  The TF column is the TF-slim-named reference graph
(``weights_tools/pnasnet_tf_graph.py``), one subprocess per dtype computing every input size at once (TensorFlow
never enters the pytest process).

Verdicts (measured, never chosen to pass):

* float64 (TF graph, torch and paddle all in float64, the checkpoint's float32 values widened): logits max-abs
  <= 1e-9 and every endpoint max-abs <= 1e-10 * max(1, max|TF|), pairwise among the three.  Measured ~1e-14.
* float32: TF's own noise floor is measured here, per input batch: ``floor = max|TF32 - TF64|`` on the logits
  (TF_ENABLE_ONEDNN_OPTS=0 vs 1 was measured too while writing this test: bit-identical on this stack, so it adds
  nothing to the floor).  torch and paddle float32 logits must be within ``2 * floor`` of TF float32, and every
  endpoint within ``4 * floor(endpoint)`` (the c <= 4 of docs/CONVENTIONS.md).
* image file -> logits: JPEGs of scikit-image's sample photos, decoded and preprocessed in numpy
  (``common.data.build`` eval transform, DATA.INTERPOLATION tf_bilinear) must equal TF's own
  decode_jpeg -> convert_image_dtype -> central_crop(0.875) -> resize_bilinear -> (x - 0.5) * 2 bit for bit, and
  the logits obey the float32 rule above.

Every measured figure is printed as a per-cell table (run with ``-s`` to see it).
"""
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from common.config import load_config
from common.specs import pnasnet as P
from weights_tools import pnasnet_convert as C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_LARGE, SEED_MOBILE = 7, 3
PHOTOS = ("astronaut", "chelsea", "coffee")
F64_LOGITS_ABS = 1e-9
F64_REL = 1e-10
F32_C_LOGITS = 2.0
F32_C_CELLS = 4.0

pytestmark = [
    pytest.mark.slow,
]

# One TF process per dtype: TF-slim's Inception eval preprocessing of the photos (TF's JPEG decoder and resize), then
# the reference graph on every batch (one graph per input size, shared variables, one restore).
TF_SCRIPT = r"""
import json, os, sys, time
import numpy as np
spec_name, prefix, images_npz, photos_json, out, dtype = sys.argv[1:7]
from weights_tools import pnasnet_tf_graph as G
G.graph_mode_process()
tf, _ = G._import_tf()
v1 = tf.compat.v1
start = time.perf_counter()
with np.load(images_npz) as data:
    batches = {k: data[k] for k in data.files}
photos = json.loads(open(photos_json).read())
saved = {}
if photos["paths"]:
    graph = tf.Graph()
    with graph.as_default():
        path = v1.placeholder(tf.string, [])
        image = tf.image.decode_jpeg(tf.io.read_file(path), channels=3)
        image = tf.image.convert_image_dtype(image, tf.float32)
        image = tf.image.central_crop(image, central_fraction=photos["crop"])
        image = v1.image.resize_bilinear(tf.expand_dims(image, 0), [photos["size"], photos["size"]],
                                         align_corners=False)
        image = tf.multiply(tf.subtract(image, 0.5), 2.0)
        with v1.Session(graph=graph) as sess:
            batches["photos"] = saved["photos/input"] = np.concatenate([sess.run(image, {path: p})
                                                                        for p in photos["paths"]])
results = G.run_reference_many(spec_name, prefix, batches, dtype, endpoints=True)
for key, endpoints in results.items():
    for name, array in endpoints.items():
        saved[f"{key}/{name}"] = array
np.savez(out, **saved)
print(json.dumps({"seconds": time.perf_counter() - start, "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}))
"""


def run_cli(args, timeout=1800):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args[:3]} failed\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc, time.perf_counter() - start


def tf_outputs(tmp, spec_name, prefix, batches, photo_paths, dtype, size):
    """{key: {endpoint: NHWC array}} from one TF subprocess (+ 'photos/input': TF's preprocessed photos)."""
    images, photos, out = tmp / f"in_{dtype}.npz", tmp / f"photos_{dtype}.json", tmp / f"tf_{dtype}.npz"
    np.savez(images, **batches)
    photos.write_text(json.dumps({"paths": [str(p) for p in photo_paths], "size": size, "crop": 0.875}))
    proc, seconds = run_cli(["-c", TF_SCRIPT, spec_name, prefix, images, photos, out, dtype])
    print(f"\n[TF {dtype}] {spec_name}: {', '.join(f'{k} {list(v.shape)}' for k, v in batches.items())}"
          f"{f' + {len(photo_paths)} photos' if photo_paths else ''}: {seconds:.1f} s")
    with np.load(out) as data:
        flat = {k: data[k] for k in data.files}
    result = {}
    for name, array in flat.items():
        key, endpoint = name.split("/", 1)
        result.setdefault(key, {})[endpoint] = array
    return result


def backend_outputs(name, dtype, spec, weights, batches):
    """{key: {endpoint: NHWC array}} of one backend: forward hooks on the modules of each TF endpoint."""
    endpoints = {ep: mods[0] for ep, mods in P.endpoint_module_names(spec).items()}
    start = time.perf_counter()
    out = {}
    if name == "torch":
        import torch

        from torch_impl.backend import Backend

        backend = Backend(dtype=dtype)
        model = backend.build_model("pnasnet", spec)
        backend.load_neutral(model, weights, source="converted TF checkpoint")
        captured = {}
        for ep, module in endpoints.items():
            model.get_submodule(module).register_forward_hook(
                lambda m, a, o, ep=ep: captured.__setitem__(ep, o.detach().numpy().copy()))
        for key, x in batches.items():
            captured.clear()
            with torch.no_grad():
                model(backend.to_tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
            out[key] = dict(captured)
    else:
        import paddle

        from paddle_impl.backend import Backend

        backend = Backend(dtype=dtype)
        model = backend.build_model("pnasnet", spec)
        backend.load_neutral(model, weights, source="converted TF checkpoint")
        layers = dict(model.named_sublayers())
        captured = {}
        for ep, module in endpoints.items():
            layers[module].register_forward_post_hook(
                lambda m, a, o, ep=ep: captured.__setitem__(ep, o.numpy().copy()))
        for key, x in batches.items():
            captured.clear()
            with paddle.no_grad():
                model(backend.to_tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
            out[key] = dict(captured)
    for arrays in out.values():
        for ep, array in arrays.items():
            if array.ndim == 4:
                arrays[ep] = np.ascontiguousarray(array.transpose(0, 2, 3, 1))
    print(f"[{name} {dtype}] {', '.join(batches)}: {time.perf_counter() - start:.1f} s")
    return out


def max_abs(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def photo_files(tmp):
    from PIL import Image

    skdata = importlib.import_module("skimage.data")
    paths = []
    for name in PHOTOS:
        path = tmp / f"{name}.jpg"
        Image.fromarray(getattr(skdata, name)()).convert("RGB").save(path, quality=90)
        paths.append(path)
    return paths


def numpy_preprocess(paths, config):
    """The repository's eval path: TF-exact JPEG decode + the DATA.INTERPOLATION tf_bilinear transform (NHWC)."""
    from common.data.build import build_transform, decode_like_tensorflow

    cfg = load_config(os.path.join(ROOT, config))
    transform = build_transform(cfg, "val")
    rng = np.random.default_rng(0)        # the eval transform draws nothing
    return np.stack([transform(decode_like_tensorflow(str(p)), rng).transpose(1, 2, 0) for p in paths])


# ---------------------------------------------------------------------------------------------------------------
# fixtures: one checkpoint per network, one TF run per dtype, one run per backend and dtype
# ---------------------------------------------------------------------------------------------------------------
def _network(tmp, spec_name, seed, batches, photos, size, f64_keys):
    prefix = tmp / "model.ckpt"
    run_cli(["-m", "weights_tools.pnasnet_tf_graph", "make-ckpt", "--spec", spec_name, "--prefix", prefix, "--seed",
             seed, "--with-aux", "--out", tmp / "make.json"])
    ckpt = C.import_tf_checkpoint(str(prefix), log=lambda m: None)
    spec = P.get_spec(ckpt.meta["name"], ckpt.meta["num_classes"])
    assert spec.name == P.get_spec(spec_name).name and len(ckpt.model) == len(P.expected_state_shapes(spec))
    assert ckpt.meta["skipped"][0].startswith(f"aux_{spec.aux_head_cell}/* (12 tensors")
    tf32 = tf_outputs(tmp, spec_name, prefix, batches, photos, "float32", size)
    tf64 = tf_outputs(tmp, spec_name, prefix, {k: batches[k] for k in f64_keys}, photos, "float64", size)
    ours = {}
    photo_batch = {}
    if photos:
        photo_batch["photos"] = tf32["photos"]["input"]
    for backend in ("torch", "paddle"):
        ours[(backend, "float64")] = backend_outputs(backend, "float64", spec, ckpt.model,
                                                     {k: batches[k] for k in f64_keys})
        ours[(backend, "float32")] = backend_outputs(backend, "float32", spec, ckpt.model, {**batches, **photo_batch})
    return SimpleNamespace(spec=spec, ckpt=ckpt, tf32=tf32, tf64=tf64, ours=ours, batches=batches, photos=photos)


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pnasnet_large_parity")
    rng = np.random.default_rng(11)
    batches = {"x331": rng.uniform(-1, 1, (2, 331, 331, 3)).astype(np.float32),
               "x323": rng.uniform(-1, 1, (1, 323, 323, 3)).astype(np.float32),
               "x224": rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)}
    photos = photo_files(tmp)
    net = _network(tmp, "large", SEED_LARGE, batches, photos, 331, ("x331", "x323", "x224"))
    yield net
    shutil.rmtree(tmp, ignore_errors=True)      # ~0.6 GB of checkpoint and endpoints


@pytest.fixture(scope="module")
def mobile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pnasnet_mobile_parity")
    rng = np.random.default_rng(12)
    batches = {"x224": rng.uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)}
    net = _network(tmp, "mobile", SEED_MOBILE, batches, [], 224, ("x224",))
    yield net
    shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------------------------------
def table(net, key):
    """Per-endpoint figures of one batch: float64 pairwise max-abs, TF's float32 floor, float32 vs TF32."""
    rows = []
    t64, t32 = net.tf64.get(key), net.tf32[key]
    for ep in P.endpoint_names(net.spec):
        row = {"endpoint": ep, "shape": list(t32[ep].shape[1:]), "scale": float(np.abs(t32[ep]).max())}
        if t64 is not None:
            row["floor"] = max_abs(t32[ep], t64[ep])
        if t64 is not None and key in net.ours[("torch", "float64")]:
            th64, pd64 = net.ours[("torch", "float64")][key][ep], net.ours[("paddle", "float64")][key][ep]
            row.update(tf_torch64=max_abs(th64, t64[ep]), tf_paddle64=max_abs(pd64, t64[ep]),
                       torch_paddle64=max_abs(th64, pd64))
        row.update(torch32=max_abs(net.ours[("torch", "float32")][key][ep], t32[ep]),
                   paddle32=max_abs(net.ours[("paddle", "float32")][key][ep], t32[ep]))
        rows.append(row)
    return rows


def print_table(title, rows):
    print(f"\n{title}")
    print(f"{'endpoint':12s} {'shape (HWC)':>16s} {'max|TF|':>8s} | {'TF-torch64':>10s} {'TF-paddle64':>11s} "
          f"{'torch-pd64':>10s} | {'TF32-TF64':>10s} {'torch32-TF32':>12s} {'paddle32-TF32':>13s} {'ratio':>6s}")
    for r in rows:
        f64 = (f"{r['tf_torch64']:10.2e} {r['tf_paddle64']:11.2e} {r['torch_paddle64']:10.2e}" if "tf_torch64" in r
               else f"{'-':>10s} {'-':>11s} {'-':>10s}")
        floor = r.get("floor")
        ratio = max(r["torch32"], r["paddle32"]) / floor if floor else float("nan")
        print(f"{r['endpoint']:12s} {str(r['shape']):>16s} {r['scale']:8.2f} | {f64} | "
              f"{floor if floor is not None else float('nan'):10.2e} {r['torch32']:12.2e} {r['paddle32']:13.2e} "
              f"{ratio:6.2f}")


def check_batch(net, key):
    rows = table(net, key)
    spec = net.spec
    print_table(f"{spec.name} {key} {list(net.tf32[key]['logits'].shape)}: max-abs differences "
                "(float64 pairwise; float32 vs TF float32, ratio = worse / TF's own float32 error)", rows)
    failures = []
    for r in rows:
        tol = F64_LOGITS_ABS if r["endpoint"] == "logits" else F64_REL * max(1.0, r["scale"])
        for col in ("tf_torch64", "tf_paddle64", "torch_paddle64"):
            if col in r and not r[col] <= tol:
                failures.append(f"float64 {r['endpoint']} {col} {r[col]:.2e} > {tol:.1e}")
        c = F32_C_LOGITS if r["endpoint"] == "logits" else F32_C_CELLS
        for col in ("torch32", "paddle32"):
            if not r[col] <= c * r["floor"]:
                failures.append(f"float32 {r['endpoint']} {col} {r[col]:.2e} > {c:g} x TF floor {r['floor']:.2e}")
    assert not failures, "\n".join(failures)
    return rows


@pytest.mark.parametrize("key", ["x331", "x323", "x224"])
def test_large_tf_torch_paddle_per_cell(large, key):
    rows = check_batch(large, key)
    logits = rows[-1]
    assert logits["endpoint"] == "logits" and logits["floor"] > 0
    # the shapes follow TF SAME at this size (331: cell_4 sees 42, even; 323: all odd; 224: 56, 28, 14)
    size = int(key[1:])
    sizes = {r["endpoint"]: r["shape"][0] for r in rows if len(r["shape"]) == 3}
    assert sizes == P.cell_spatial_sizes(P.PNASNET5_LARGE, size)


def test_large_photos_image_file_to_logits(large):
    """numpy preprocessing == TF preprocessing bit for bit; then converted model (float32) vs TF graph (float32)
    within 2x TF's own float32 error on the same photos (measured with the TF float64 graph on TF's input)."""
    ours = numpy_preprocess(large.photos, "configs/pnasnet5_large.yaml")
    tf_input = large.tf32["photos"]["input"]
    assert ours.shape == tf_input.shape == (len(PHOTOS), 331, 331, 3) and ours.dtype == np.float32
    assert np.array_equal(ours, tf_input)
    assert np.array_equal(large.tf64["photos"]["input"], tf_input)
    rows = check_batch(large, "photos")           # float32 only in the backends: the float32 rules
    assert "tf_torch64" not in rows[-1]
    t32, t64 = large.tf32["photos"]["logits"], large.tf64["photos"]["logits"]
    floor = max_abs(t32, t64)
    for backend in ("torch", "paddle"):
        got = large.ours[(backend, "float32")]["photos"]["logits"]
        err = max_abs(got, t32)
        print(f"photos: {backend} float32 vs TF float32 logits {err:.2e} = {err / floor:.2f} x TF floor {floor:.2e}; "
              f"top-1 {got.argmax(1).tolist()} (TF {t32.argmax(1).tolist()})")
        assert err <= F32_C_LOGITS * floor
        assert got.argmax(1).tolist() == t32.argmax(1).tolist()


def test_mobile_tf_torch_paddle_per_cell(mobile):
    rows = check_batch(mobile, "x224")
    assert len(rows) == 2 + 2 + 9 + 1 and rows[-1]["floor"] > 0
