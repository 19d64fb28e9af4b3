"""The TensorFlow PNASNet-5 reference (weights_tools/pnasnet_tf_graph.py), always run in a subprocess.

TensorFlow must never be imported into the pytest process (it segfaults when imported before paddle/torchvision),
so every TF step goes through ``python -m weights_tools.pnasnet_tf_graph`` with files in a temporary folder.
Large runs once per step (batch 1-2): one random checkpoint (with the aux head), one float32 run at 331/323/224,
one float64 run at 331, one dump, one timm float64 run (torch-only subprocess), two small training-graph runs
(96x96) for drop path.  Mobile covers its own variable table with the aux head and an aux-head forward.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from common.specs import pnasnet as P
from weights_tools import pnasnet_names as N
from weights_tools.pnasnet_tf_graph import random_tf_variables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LARGE, MOBILE = P.PNASNET5_LARGE, P.PNASNET5_MOBILE
SEED = 7

pytestmark = [
    pytest.mark.slow,
]


def tf_cli(*args, timeout=900):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "weights_tools.pnasnet_tf_graph", *map(str, args)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args} failed\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
    print(f"\n[tf subprocess] {args[0]} {args[1:4]}... {time.perf_counter() - start:.1f} s")
    return out


def images(seed, **shapes):
    rng = np.random.default_rng(seed)
    return {key: rng.uniform(-1.0, 1.0, shape).astype(np.float32) for key, shape in shapes.items()}


def run(tmp, name, spec, prefix, batches, *extra):
    inp, out, summary = tmp / f"{name}_in.npz", tmp / f"{name}_out.npz", tmp / f"{name}_summary.json"
    np.savez(inp, **batches)
    tf_cli("run", "--spec", spec, "--prefix", prefix, "--images", inp, "--out", out, "--summary", summary, *extra)
    with np.load(out) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays, json.loads(summary.read_text())


def check_variables(graph_variables, spec, with_aux, image_size=None):
    table = {e.tf_name: e for e in N.name_entries(spec, with_aux=with_aux, image_size=image_size)}
    got = {v["name"]: v for v in graph_variables if v["name"] != "global_step"}
    assert len(got) == len(table)
    assert sorted(got) == sorted(table), (sorted(set(got) - set(table))[:5], sorted(set(table) - set(got))[:5])
    for name, v in got.items():
        assert tuple(v["shape"]) == table[name].tf_shape, name
        assert v["trainable"] == table[name].trainable, name


# ---------------------------------------------------------------------------------------------------------------
# fixtures: one Large checkpoint, one float32 run at three sizes, one float64 run
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def large(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pnasnet_large_tf")
    prefix = tmp / "model.ckpt"
    tf_cli("make-ckpt", "--spec", "large", "--prefix", prefix, "--seed", SEED, "--with-aux", "--out", tmp / "make.json")
    yield SimpleNamespace(tmp=tmp, prefix=str(prefix), summary=json.loads((tmp / "make.json").read_text()))
    shutil.rmtree(tmp, ignore_errors=True)     # ~1 GB of checkpoint, dump and endpoints


@pytest.fixture(scope="module")
def large_images():
    return images(11, x331=(2, 331, 331, 3), x323=(1, 323, 323, 3), x224=(1, 224, 224, 3))


@pytest.fixture(scope="module")
def large_f32(large, large_images):
    return run(large.tmp, "f32", "large", large.prefix, large_images, "--endpoints", "all")


@pytest.fixture(scope="module")
def large_f64(large, large_images):
    return run(large.tmp, "f64", "large", large.prefix, {"x331": large_images["x331"][:1]}, "--dtype", "float64",
               "--endpoints", "all")


@pytest.fixture(scope="module")
def large_dump(large):
    path = large.tmp / "dump.npz"
    tf_cli("dump-ckpt", "--prefix", large.prefix, "--out", path)
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


# ---------------------------------------------------------------------------------------------------------------
# Large
# ---------------------------------------------------------------------------------------------------------------
def test_large_eval_graph_has_the_table_variables(large_f32):
    """The eval graph of the float32 run: exactly the 1179 variables of the name table (the checkpoint's aux_7/*
    and global_step are left unused by the restore)."""
    variables = large_f32[1]["graph_variables"]
    assert len(variables) == 1179
    assert all(v["dtype"] == "float32" for v in variables)
    check_variables(variables, LARGE, with_aux=False)


def test_large_checkpoint_graph_with_aux_head(large):
    """make-ckpt builds the eval graph plus the aux head aux_7 (kernel 6x6 at 331) and adds global_step."""
    variables = large.summary["graph_variables"]
    assert len(variables) == 1179 + 12 + 1
    check_variables(variables, LARGE, with_aux=True)
    shapes = {v["name"]: tuple(v["shape"]) for v in variables}
    assert shapes["aux_7/aux_logits/Conv/weights"] == (6, 6, 128, 768)
    assert shapes["aux_7/aux_logits/proj/weights"] == (1, 1, 2160, 128)
    step = [v for v in variables if v["name"] == "global_step"]
    assert step[0]["dtype"] == "int64" and not step[0]["trainable"] and shapes["global_step"] == ()
    assert large.summary["num_variables"] == 1191


def test_random_checkpoint_round_trips(large, large_dump):
    written = random_tf_variables(LARGE, SEED, with_aux=True)
    assert sorted(large_dump) == sorted(list(written) + ["global_step"])
    assert int(large_dump["global_step"]) == 1234
    for name, value in written.items():
        assert large_dump[name].dtype == np.float32, name
        np.testing.assert_array_equal(large_dump[name], value, err_msg=name)
    # eval weights do not depend on whether the aux head was drawn too
    names = ("conv0/weights", "cell_11/comb_iter_4/left/separable_3x3_2/pointwise_weights", "final_layer/FC/biases")
    eval_only = random_tf_variables(LARGE, SEED, names=names)
    for name in names:
        np.testing.assert_array_equal(eval_only[name], written[name])
    # the statistics are non-trivial, so a wrong eps or layout cannot hide
    var = large_dump["cell_4/beginning_bn/moving_variance"]
    assert 0.5 <= var.min() < 0.6 and 1.9 < var.max() <= 2.0
    assert 0.05 < np.std(large_dump["cell_4/beginning_bn/moving_mean"]) < 0.15


@pytest.mark.parametrize("key", ["x331", "x323", "x224"])
def test_large_endpoint_sizes_and_scale(large_f32, large_images, key):
    arrays, summary = large_f32
    batch = large_images[key].shape[0]
    size = large_images[key].shape[1]
    stats = summary["runs"][key]["endpoints"]
    expected = P.endpoint_shapes(LARGE, size)
    assert sorted(stats) == sorted(expected)
    lines = []
    for name, chw in expected.items():
        nhwc = (batch,) + (chw[1:] + chw[:1] if len(chw) == 3 else chw)
        assert tuple(stats[name]["shape"]) == nhwc, name
        assert arrays[f"{key}/{name}"].shape == nhwc, name
        assert stats[name]["finite"], name
        lines.append(f"{name}:{nhwc[1:]} rms={stats[name]['rms']:.3f}")
        if name != "logits":
            assert 0.05 < stats[name]["rms"] < 10, (name, stats[name])    # O(1) through all 14 cells
    logits = arrays[f"{key}/logits"]
    print(f"\n{key}: max|logits| = {np.abs(logits).max():.3f}; " + ", ".join(lines))
    assert np.isfinite(logits).all() and 0.1 < np.abs(logits).max() <= 10.0


def test_float64_against_float32(large_f32, large_f64):
    a32, _ = large_f32
    a64, summary = large_f64
    assert summary["dtype"] == "float64" and a64["x331/logits"].dtype == np.float64
    worst = 0.0
    rows = []
    for name in P.endpoint_names(LARGE):
        ref = a64[f"x331/{name}"][0]
        err = float(np.abs(a32[f"x331/{name}"][0].astype(np.float64) - ref).max())
        rel = err / float(np.abs(ref).max())
        worst = max(worst, rel)
        rows.append(f"{name}: {err:.2e} ({rel:.2e})")
    err_logits = float(np.abs(a32["x331/logits"][0] - a64["x331/logits"][0]).max())
    print("\nTF float32 vs float64 at 331, max |diff| (relative to max |value|): " + "; ".join(rows))
    print(f"logits: max |f32 - f64| = {err_logits:.3e}, max |logits| = {np.abs(a64['x331/logits']).max():.3f}")
    # float32 rounding through 14 cells: measured ~1.6e-6 absolute / ~5e-7 relative on this stack
    assert 0.0 < err_logits
    assert worst < 1e-5


TIMM_FLOAT64 = """
import sys
import numpy as np
import torch
import timm
from common.specs import pnasnet as P
from weights_tools import pnasnet_names as N

dump, images, out = sys.argv[1:4]
with np.load(dump) as data:
    state = N.tf_to_neutral_state(P.PNASNET5_LARGE, {k: data[k] for k in data.files}, source=dump)
model = timm.create_model("pnasnet5large", pretrained=False, num_classes=1001).eval().double()
missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
x = np.load(images)["x331"].transpose(0, 3, 1, 2).astype(np.float64)
with torch.no_grad():
    np.save(out, model(torch.from_numpy(x)).numpy())
"""


def test_tf_reference_matches_timm_in_float64(large, large_dump, large_f64):
    """Independent check of the TF builder, the name table and the layouts: timm's TF-SAME PNASNet-5 Large with
    the converted random checkpoint gives the TF float64 logits to ~1e-14.  Run in a torch-only subprocess:
    with paddle imported first (conftest) torch's float64 convolutions run ~3x slower on this machine."""
    out = large.tmp / "timm_logits.npy"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", TIMM_FLOAT64, large.tmp / "dump.npz", large.tmp / "f64_in.npz", out],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    logits = np.load(out)
    err = float(np.abs(logits - large_f64[0]["x331/logits"]).max())
    print(f"\ntimm float64 vs TF float64 at 331: max |diff| = {err:.3e} ({time.perf_counter() - start:.1f} s)")
    assert logits.shape == (1, 1001) and err < 1e-10


# ---------------------------------------------------------------------------------------------------------------
# Mobile
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mobile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pnasnet_mobile_tf")
    prefix = tmp / "model.ckpt"
    tf_cli("make-ckpt", "--spec", "mobile", "--prefix", prefix, "--seed", 3, "--with-aux", "--out", tmp / "make.json")
    yield SimpleNamespace(tmp=tmp, prefix=str(prefix), summary=json.loads((tmp / "make.json").read_text()))
    shutil.rmtree(tmp, ignore_errors=True)


def test_mobile_graph_with_aux_has_the_table_variables(mobile):
    variables = mobile.summary["graph_variables"]
    assert len(variables) == 933 + 12 + 1
    check_variables(variables, MOBILE, with_aux=True)
    shapes = {v["name"]: tuple(v["shape"]) for v in variables}
    assert shapes["cell_stem_1/path1_conv/weights"] == (1, 1, 32, 13)
    assert shapes["cell_stem_1/path2_conv/weights"] == (1, 1, 32, 14)
    assert shapes["aux_5/aux_logits/Conv/weights"] == (4, 4, 128, 768)


def test_mobile_eval_with_aux_head(mobile):
    batches = images(5, x224=(2, 224, 224, 3))
    arrays, summary = run(mobile.tmp, "aux", "mobile", mobile.prefix, batches, "--with-aux", "--endpoints",
                          "aux_logits,cell_8")
    check_variables(summary["graph_variables"], MOBILE, with_aux=True)
    stats = summary["runs"]["x224"]["endpoints"]
    for name, chw in P.endpoint_shapes(MOBILE, 224).items():
        nhwc = (2,) + (chw[1:] + chw[:1] if len(chw) == 3 else chw)
        assert tuple(stats[name]["shape"]) == nhwc, name
        assert stats[name]["finite"] and (name == "logits" or 0.05 < stats[name]["rms"] < 10), name
    assert arrays["x224/aux_logits"].shape == (2, 1001) and arrays["x224/cell_8"].shape == (2, 7, 7, 1080)
    for name in ("logits", "aux_logits"):
        assert np.isfinite(arrays[f"x224/{name}"]).all() and 0.1 < np.abs(arrays[f"x224/{name}"]).max() <= 10.0


# ---------------------------------------------------------------------------------------------------------------
# the training graph (Large: Mobile has drop_path_keep_prob 1.0, so no drop path)
# ---------------------------------------------------------------------------------------------------------------
def test_large_training_graph_drop_path(large):
    """Training graph (batch-statistics BN, drop path on every op but ``none``, dropout) at 96x96 without the aux
    head, with TF_ENABLE_ONEDNN_OPTS=0 set before TF is imported.  The drop-path noise is fed per sample: 0 for
    sample 0 drops every path (mask = floor(keep + 0) = 0), so blocks 0-3 of every cell are exactly 0 and only
    comb_iter_4's ``none`` input survives; 0.9999 for sample 1 keeps every path."""
    sites = [op.tf_scope for cell in P.cell_structures(LARGE) for op in cell.ops if op.slot.kind != "none"]
    assert len(sites) == 14 * 9
    batches = images(8, x96=(2, 96, 96, 3))
    noise = large.tmp / "noise.npz"
    per_sample = np.array([0.0, 0.9999], np.float32).reshape(2, 1, 1, 1)
    np.savez(noise, **{site: per_sample for site in sites})
    arrays, summary = run(large.tmp, "train", "large", large.prefix, batches, "--training", "--no-aux",
                          "--onednn", "0", "--drop-path-noise", noise, "--endpoints", "cell_stem_0,cell_0,cell_11")
    assert summary["onednn"] == "0"
    names = sorted(v["name"] for v in summary["graph_variables"])
    assert names == sorted(list(N.tf_to_canonical_table(LARGE)) + ["global_step"])   # drop path reads global_step
    for cell, f in (("cell_stem_0", 54), ("cell_0", 216), ("cell_11", 864)):
        out = arrays[f"x96/{cell}"]
        assert out.shape[-1] == 5 * f
        assert not out[0, ..., :4 * f].any() and np.abs(out[0, ..., 4 * f:]).max() > 0, cell
        assert np.abs(out[1, ..., :4 * f]).max() > 0, cell
    assert np.isfinite(arrays["x96/logits"]).all()
