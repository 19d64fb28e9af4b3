"""PNASNet-5 TF checkpoints <-> neutral <-> torch / paddle (weights_tools/pnasnet_convert.py, weights_tools/convert.py).

TensorFlow never enters the pytest process: checkpoints are made, read and written by subprocesses (the
``pnasnet_tf_graph`` / ``pnasnet_convert`` CLIs).  Mobile (28 MiB) carries most of the file-level checks; Large is
read once and written once (1179 eval tensors + the 12 aux tensors, byte-identical round trip).  The strict-import
rules are also checked on the numpy core (``tf_to_neutral``) with the random TF variables, without TF.
"""
import dataclasses
import filecmp
import os
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from common.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from common.specs import pnasnet as P
from weights_tools import convert as CV
from weights_tools import pnasnet_convert as C
from weights_tools import pnasnet_names as N
from weights_tools.pnasnet_tf_graph import random_tf_variables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LARGE, MOBILE = P.PNASNET5_LARGE, P.PNASNET5_MOBILE
QUIET = (lambda message: None)


def cli(module, *args, timeout=900, ok=True):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, *module.split(), *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=timeout)
    if ok:
        assert out.returncode == 0, f"{module} {args} failed\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    print(f"\n[subprocess] {module.split()[-1]} {[str(a)[:40] for a in args[:2]]} {time.perf_counter() - start:.1f} s")
    return out


def make_ckpt(spec_name, prefix, seed, *extra):
    cli("-m weights_tools.pnasnet_tf_graph", "make-ckpt", "--spec", spec_name, "--prefix", prefix, "--seed", seed,
        *extra, "--out", f"{prefix}.json")
    return str(prefix)


def expected_neutral(spec, seed, with_aux=False, image_size=None):
    """What an import must give: the random TF variables make-ckpt wrote, through the name table (numpy only)."""
    return N.tf_to_neutral_state(spec, random_tf_variables(spec, seed, with_aux, image_size), with_aux, image_size)


def assert_same_state(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), k


# ---------------------------------------------------------------------------------------------------------------
# the numpy core: strict rules without TF
# ---------------------------------------------------------------------------------------------------------------
def test_core_counts_recognition_and_skips():
    tf_vars = random_tf_variables(MOBILE, 1, with_aux=True)
    tf_vars["global_step"] = np.asarray(99, np.int64)
    spec, state, info = C.tf_to_neutral(tf_vars)
    assert spec.name == "pnasnet5_mobile" and spec.num_classes == 1001 and len(state) == 933
    assert info["skipped"][0].startswith("aux_5/* (12 tensors") and info["skipped"][1] == "global_step"
    assert info["tf_global_step"] == 99 and not info["with_aux"]
    spec, state, info = C.tf_to_neutral(tf_vars, with_aux=True)
    assert len(state) == 945 and info["skipped"] == ["global_step"] and info["aux_image_size"] == 224
    assert state["aux_head.conv.weight"].shape == (768, 128, 4, 4)
    large = random_tf_variables(LARGE.with_classes(1000), 2)
    spec, state, _ = C.tf_to_neutral(large, net="large")
    assert spec.name == "pnasnet5_large" and spec.num_classes == 1000 and len(state) == 1179


def test_core_errors_name_the_variable():
    good = random_tf_variables(MOBILE, 1)
    missing = dict(good)
    del missing["cell_3/comb_iter_1/left/bn_sep_7x7_2/gamma"]
    with pytest.raises(C.PNASNetConvertError, match=r"missing \(1\): cell_3/comb_iter_1/left/bn_sep_7x7_2/gamma"):
        C.tf_to_neutral(missing, net="mobile", source="ckpt")
    wrong = dict(good)
    wrong["cell_0/1x1/weights"] = np.zeros((1, 1, 135, 55), np.float32)
    with pytest.raises(C.PNASNetConvertError, match=r"cell_0/1x1/weights: expected TF shape \[1, 1, 135, 54\], "
                                                    r"found \[1, 1, 135, 55\]"):
        C.tf_to_neutral(wrong, source="ckpt")
    extra = dict(good, **{"cell_0/comb_iter_0/left/ExponentialMovingAverage": np.zeros(3, np.float32)})
    with pytest.raises(C.PNASNetConvertError, match=r"unused \(1\): cell_0/comb_iter_0/left/ExponentialMovingAverage"):
        C.tf_to_neutral(extra, net="mobile")
    other = (r"(?s)mobile.ckpt: does not fit pnasnet5_large \(1001 classes\)\n"
             r"  missing \(273\): cell_4/prev_1x1/weights, "
             r".*conv0/weights: expected TF shape \[3, 3, 3, 96\], found \[3, 3, 3, 32\]")
    with pytest.raises(C.PNASNetConvertError, match=other):
        C.tf_to_neutral(good, net="large", source="mobile.ckpt")
    with pytest.raises(C.PNASNetConvertError, match=r"with_aux=True but the checkpoint has no aux_5/\*"):
        C.tf_to_neutral(good, with_aux=True)
    with pytest.raises(C.PNASNetConvertError, match="no final_layer/FC/biases"):
        C.tf_to_neutral({"conv0/weights": good["conv0/weights"]})


def test_drop_background():
    state = expected_neutral(dataclasses.replace(MOBILE, build_aux_head=True), 4, with_aux=True)
    ckpt = Checkpoint(model=state, meta={"family": "pnasnet", "name": "pnasnet5_mobile", "num_classes": 1001},
                      ema={k: v + 1 for k, v in state.items()})
    out = C.drop_background(ckpt)
    for head in ("last_linear", "aux_head.fc"):
        assert np.array_equal(out.model[f"{head}.weight"], state[f"{head}.weight"][1:])
        assert np.array_equal(out.model[f"{head}.bias"], state[f"{head}.bias"][1:])
        assert out.ema[f"{head}.bias"].shape == (1000,)
    assert out.meta["num_classes"] == 1000 and out.meta["dropped_background"]
    assert np.array_equal(out.model["conv_0.conv.weight"], state["conv_0.conv.weight"])
    assert ckpt.model["last_linear.bias"].shape == (1001,)            # the input is not modified
    with pytest.raises(C.PNASNetConvertError, match="last_linear.bias has 1000 classes"):
        C.drop_background(out)
    assert CV.drop_background_class(ckpt).model["last_linear.weight"].shape == (1000, 1080)


def test_export_is_strict_before_any_write(tmp_path):
    state = expected_neutral(MOBILE, 4)
    del state["cell_2.conv_1x1.bn.weight"]
    with pytest.raises(C.PNASNetConvertError, match=r"missing \(1\): cell_2.conv_1x1.bn.weight"):
        C.export_tf_checkpoint(Checkpoint(model=state), str(tmp_path / "out" / "model.ckpt"), log=QUIET)
    with pytest.raises(C.PNASNetConvertError, match="PNASNet-5 only; this is cream/cream14"):
        C.export_tf_checkpoint(Checkpoint(model=state, meta={"family": "cream", "name": "cream14"}),
                               str(tmp_path / "out" / "model.ckpt"), log=QUIET)
    assert not os.path.exists(tmp_path / "out") or not os.listdir(tmp_path / "out")


def test_prefix_forms(tmp_path):
    assert C.normalise_prefix("a/model.ckpt.index") == "a/model.ckpt"
    assert C.normalise_prefix("a/model.ckpt.data-00000-of-00001") == "a/model.ckpt"
    assert C.normalise_prefix("a/model.ckpt") == "a/model.ckpt"
    (tmp_path / "m.ckpt.index").write_bytes(b"")
    with pytest.raises(C.PNASNetConvertError, match=r"did you mean .*m\.ckpt\?"):
        C.tf_checkpoint_files(str(tmp_path))
    with pytest.raises(C.PNASNetConvertError, match=r"TF checkpoint not found: .*nothere.ckpt.index does not exist"):
        C.import_tf_checkpoint(str(tmp_path / "nothere.ckpt"), log=QUIET)


# ---------------------------------------------------------------------------------------------------------------
# Mobile through real TF files
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mobile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pnasnet_mobile_convert")
    prefix = make_ckpt("mobile", tmp / "model.ckpt", 3, "--with-aux")
    lines = []
    ckpt = C.import_tf_checkpoint(prefix, log=lines.append)
    yield SimpleNamespace(tmp=tmp, prefix=prefix, ckpt=ckpt, log=lines)
    shutil.rmtree(tmp, ignore_errors=True)


def test_mobile_import(mobile):
    ckpt = mobile.ckpt
    assert_same_state(ckpt.model, expected_neutral(MOBILE, 3))
    assert ckpt.meta["name"] == "pnasnet5_mobile" and ckpt.meta["num_classes"] == 1001
    assert ckpt.meta["skipped"] == ["aux_5/* (12 tensors: the training-only aux head; import with with_aux=True to "
                                    "keep it)", "global_step"]
    assert ckpt.meta["tf_global_step"] == 1234
    assert any("read 946 tensors" in line for line in mobile.log)
    assert any("933 of 946 tensors converted" in line for line in mobile.log)


def test_tf_conversion_needs_no_framework_in_process(mobile, tmp_path):
    """TF -> neutral -> TF in a process that never imports torch, paddle or tensorflow itself (TF runs in the
    subprocesses), as the isolation rules ask of weights_tools/pnasnet_convert.py."""
    code = (
        "import sys\n"
        "from common.checkpoint import save_checkpoint, load_checkpoint\n"
        "from weights_tools import pnasnet_convert as C\n"
        f"ckpt = C.import_tf_checkpoint({mobile.prefix!r}, log=lambda m: None)\n"
        f"save_checkpoint({str(tmp_path / 'm.safetensors')!r}, ckpt)\n"
        f"C.export_tf_checkpoint(load_checkpoint({str(tmp_path / 'm.safetensors')!r}), "
        f"{str(tmp_path / 'tf' / 'model.ckpt')!r}, log=lambda m: None)\n"
        "print('LOADED', sorted(m for m in ('torch', 'paddle', 'tensorflow', 'torchvision') if m in sys.modules))\n"
    )
    proc = cli("-c", code)
    assert "LOADED []" in proc.stdout
    assert os.path.isfile(tmp_path / "tf" / "model.ckpt.index")


def test_mobile_round_trips_to_torch_and_paddle_are_bit_exact(mobile, tmp_path):
    import paddle
    import torch

    from paddle_impl.backend import Backend as PaddleBackend
    from torch_impl.backend import Backend as TorchBackend

    state = mobile.ckpt.model
    for backend in (TorchBackend(), PaddleBackend()):
        model = backend.build_model("pnasnet", MOBILE)
        backend.load_neutral(model, state, source="mobile")
        assert_same_state(backend.state_to_neutral(model), state)
    # files: neutral .safetensors, torch .pth, paddle .pdparams, each read back (without torch / paddle) and by
    # the framework itself
    save_checkpoint(str(tmp_path / "m.safetensors"), mobile.ckpt)
    back = load_checkpoint(str(tmp_path / "m.safetensors"))
    assert_same_state(back.model, state) and back.meta["skipped"] == mobile.ckpt.meta["skipped"]
    CV.export_torch(mobile.ckpt, str(tmp_path / "m.pth"))
    assert_same_state(CV.import_torch(str(tmp_path / "m.pth")).model, state)
    loaded = torch.load(str(tmp_path / "m.pth"), weights_only=True)
    assert_same_state({k: v.numpy() for k, v in loaded.items()}, state)
    CV.export_paddle(mobile.ckpt, str(tmp_path / "m.pdparams"))
    assert_same_state(CV.import_paddle(str(tmp_path / "m.pdparams")).model, state)
    pd_backend = PaddleBackend()
    model = pd_backend.build_model("pnasnet", MOBILE)
    model.set_state_dict(paddle.load(str(tmp_path / "m.pdparams")))
    assert_same_state(pd_backend.state_to_neutral(model), state)


def test_mobile_tf_neutral_tf_is_bitwise_identical(mobile, tmp_path):
    """With the aux head imported, the exported checkpoint's files equal make-ckpt's byte for byte; the eval-only
    import exports the same eval tensors (aux_5 left out) and reads back bit for bit."""
    with_aux = C.import_tf_checkpoint(mobile.prefix, with_aux=True, log=QUIET)
    assert len(with_aux.model) == 945 and with_aux.meta["skipped"] == ["global_step"]
    out = C.export_tf_checkpoint(with_aux, str(tmp_path / "full" / "model.ckpt"), log=QUIET)
    for suffix in (".index", ".data-00000-of-00001"):
        assert filecmp.cmp(mobile.prefix + suffix, out + suffix, shallow=False), suffix
    eval_only = C.export_tf_checkpoint(mobile.ckpt, str(tmp_path / "eval" / "model.ckpt"), log=QUIET)
    arrays = C.read_tf_checkpoint(eval_only, log=QUIET)
    assert len(arrays) == 934 and int(arrays["global_step"]) == 1234
    full = random_tf_variables(MOBILE, 3)
    assert sorted(arrays) == sorted(list(full) + ["global_step"])
    for name, value in full.items():
        assert arrays[name].dtype == value.dtype and np.array_equal(arrays[name], value), name
    assert sorted(os.listdir(tmp_path / "eval")) == ["model.ckpt.data-00000-of-00001", "model.ckpt.index"]


def test_convert_every_pair(mobile, tmp_path):
    """``convert`` from each of neutral / torch / paddle / tf to each of them: the same tensors every time."""
    state = mobile.ckpt.model
    sources = {"tf": mobile.prefix}
    for fmt, name in (("neutral", "m.safetensors"), ("torch", "m.pth"), ("paddle", "m.pdparams")):
        sources[fmt] = str(tmp_path / f"src_{name}")
        CV.EXPORTERS[fmt](mobile.ckpt, sources[fmt])
    suffix = {"neutral": ".safetensors", "torch": ".pth", "paddle": ".pdparams", "tf": ".ckpt"}
    for src_fmt, src in sources.items():
        for dst_fmt in ("neutral", "torch", "paddle", "tf"):
            dst = str(tmp_path / f"{src_fmt}_to_{dst_fmt}{suffix[dst_fmt]}")
            lines = []
            ckpt = CV.convert(src_fmt, src, dst_fmt, dst, log=lines.append)
            assert ckpt.meta["family"] == "pnasnet" and ckpt.meta["name"] == "pnasnet5_mobile"
            text = "\n".join(lines)
            assert f"reading {src_fmt} checkpoint" in text and f"writing {dst_fmt} checkpoint" in text
            assert "network      pnasnet/pnasnet5_mobile" in text and "tensors      933 (" in text
            if src_fmt == "tf":
                assert "skipped      aux_5/* (12 tensors" in text and "global_step" in text
            back = (C.import_tf_checkpoint(dst, log=QUIET) if dst_fmt == "tf" else CV.IMPORTERS[dst_fmt](dst))
            assert_same_state(back.model, state)
            print(f"{src_fmt:>7} -> {dst_fmt:<7} ok")


def test_cli_tf_to_paddle_with_drop_background(mobile, tmp_path):
    out = tmp_path / "m1000.pdparams"
    proc = cli("tools/main.py", "convert", "--from", "tf", mobile.prefix, "--to", "paddle", out, "--drop-background")
    assert "skipped      aux_5/* (12 tensors" in proc.stdout and "tensors      933 (" in proc.stdout
    assert "reading tf checkpoint" in proc.stdout and "[pnasnet] read 946 tensors" in proc.stderr
    state = CV.import_paddle(str(out)).model
    assert state["last_linear.bias"].shape == (1000,)
    assert np.array_equal(state["last_linear.weight"], mobile.ckpt.model["last_linear.weight"][1:])


def test_cli_tf_with_aux_keeps_the_aux_head(mobile, tmp_path):
    out = tmp_path / "aux.safetensors"
    proc = cli("tools/main.py", "convert", "--from", "tf", mobile.prefix, "--to", "neutral", out, "--with-aux")
    assert "tensors      945 (" in proc.stdout and "aux_5" not in proc.stdout
    ckpt = CV.import_neutral(str(out))
    assert ckpt.meta["with_aux"] and ckpt.model["aux_head.conv.weight"].shape[0] == 768
    refused = cli("tools/main.py", "convert", "--from", "neutral", out, "--to", "paddle", tmp_path / "x.pdparams",
                  "--with-aux", ok=False)
    assert refused.returncode == 2 and "--with-aux" in refused.stderr and not (tmp_path / "x.pdparams").exists()


def test_cli_errors_name_the_variable_and_leave_no_output(mobile, tmp_path):
    # another network's checkpoint
    proc = cli("tools/main.py", "convert", "--from", "tf", mobile.prefix, "--to", "neutral", tmp_path / "x.safetensors",
               "--net", "pnasnet5_large", ok=False)
    assert proc.returncode != 0 and "does not fit pnasnet5_large" in proc.stderr
    assert "missing (273): cell_4/prev_1x1/weights" in proc.stderr
    assert "unused (39): aux_5/aux_logits/Conv/weights" in proc.stderr      # Mobile's aux head is not Large's
    assert "conv0/weights: expected TF shape [3, 3, 3, 96], found [3, 3, 3, 32]" in proc.stderr
    # a checkpoint that lacks one variable
    arrays = random_tf_variables(MOBILE, 3)
    del arrays["cell_8/comb_iter_2/right/bn_sep_3x3_1/moving_variance"]
    np.savez(tmp_path / "missing.npz", **arrays)
    cli("-m weights_tools.pnasnet_convert", "write-ckpt", "--arrays", tmp_path / "missing.npz", "--prefix",
        tmp_path / "missing" / "model.ckpt")
    with pytest.raises(C.PNASNetConvertError,
                       match=r"missing \(1\): cell_8/comb_iter_2/right/bn_sep_3x3_1/moving_variance"):
        C.import_tf_checkpoint(str(tmp_path / "missing" / "model.ckpt"), log=QUIET)
    # truncated data file: TF's reader fails, nothing is written (no output, no temporary file left)
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(mobile.prefix + ".index", bad / "model.ckpt.index")
    data = open(mobile.prefix + ".data-00000-of-00001", "rb").read()
    (bad / "model.ckpt.data-00000-of-00001").write_bytes(data[: len(data) // 2])
    outdir = tmp_path / "outputs"
    outdir.mkdir()
    for fmt, name in (("paddle", "x.pdparams"), ("neutral", "x.safetensors"), ("tf", "x.ckpt")):
        proc = cli("tools/main.py", "convert", "--from", "tf", bad / "model.ckpt", "--to", fmt, outdir / name, ok=False)
        assert proc.returncode != 0
        assert "error:" in proc.stderr and "the checkpoint is truncated or corrupt" in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
    assert os.listdir(outdir) == []
    # a flipped byte: TF's CRC check
    corrupt = bytearray(data)
    corrupt[len(data) // 3] ^= 0xFF
    (bad / "model.ckpt.data-00000-of-00001").write_bytes(bytes(corrupt))
    with pytest.raises(C.PNASNetConvertError, match="Checksum does not match.*truncated or corrupt"):
        C.import_tf_checkpoint(str(bad / "model.ckpt"), log=QUIET)


# ---------------------------------------------------------------------------------------------------------------
# Large: 1179 eval tensors, byte-identical round trip with the aux head
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_large_import_counts_and_bitwise_round_trip(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pnasnet_large_convert")
    try:
        prefix = make_ckpt("large", tmp / "model.ckpt", 7, "--with-aux")
        arrays = C.read_tf_checkpoint(prefix, log=QUIET)
        assert len(arrays) == 1179 + 12 + 1
        spec, state, info = C.tf_to_neutral(arrays, source=prefix)
        assert spec == LARGE and len(state) == 1179 and info["used"] == 1179
        assert info["skipped"] == ["aux_7/* (12 tensors: the training-only aux head; import with with_aux=True to "
                                   "keep it)", "global_step"]
        assert_same_state(state, expected_neutral(LARGE, 7))
        spec, full, info = C.tf_to_neutral(arrays, with_aux=True, source=prefix)
        assert len(full) == 1191 and info["aux_image_size"] == 331 and full["aux_head.conv.weight"].shape[-1] == 6
        del arrays
        meta = {"family": "pnasnet", "name": spec.name, "tf_global_step": info["tf_global_step"],
                "tf_global_step_dtype": info["tf_global_step_dtype"]}
        out = C.export_tf_checkpoint(Checkpoint(model=full, meta=meta), str(tmp / "rt" / "model.ckpt"), log=QUIET)
        for suffix in (".index", ".data-00000-of-00001"):
            assert filecmp.cmp(prefix + suffix, out + suffix, shallow=False), suffix
        print(f"\nLarge TF -> neutral -> TF: {os.path.getsize(out + '.data-00000-of-00001'):,} bytes identical")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
