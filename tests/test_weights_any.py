"""weights_tools.load_any.load_weights: every file the toolkit writes or imports (neutral safetensors, torch zip and
legacy ``.pt``, Paddle ``.pdparams``, upstream Cream ``.pth.tar``) is recognised by its content and read as the same
neutral arrays; malicious pickles are refused before anything in them runs; broken files are one-line errors naming
the file; and reading imports no framework."""
from __future__ import annotations

import collections
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from common.checkpoint import Checkpoint, CheckpointError, OptimizerState, save_checkpoint
from common.specs import cream
from weights_tools.convert import neutral_to_paddle_state
from weights_tools.load_any import load_weights, sniff_format

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = cream.released_net_spec("cream14", num_classes=10)


def _torch():
    import torch

    return torch


def _paddle():
    import paddle

    return paddle


@pytest.fixture(scope="module")
def states():
    """Cream-14 (10 classes): plain weights from the numpy init rule, EMA weights a perturbed copy (every tensor
    differs, so a swapped or dropped EMA shows)."""
    rng = np.random.default_rng(7)
    model = cream.init_state(SPEC, np.random.default_rng(0))
    for name, array in model.items():  # init leaves biases 0 and BN stats 0/1: make every tensor distinct
        model[name] = (array + rng.uniform(0.1, 0.2, array.shape)).astype(np.float32)
    ema = {k: (v + rng.standard_normal(v.shape) * 0.01).astype(np.float32) for k, v in model.items()}
    return model, ema


def _same(got, want, what):
    assert sorted(got) == sorted(want), what
    for name, array in want.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape, (what, name)
        assert got[name].tobytes() == np.ascontiguousarray(array).tobytes(), (what, name)


def _torch_state(state, prefix="", counters=False):
    torch = _torch()
    out = collections.OrderedDict()
    for name, array in state.items():
        out[prefix + name] = torch.from_numpy(array.copy())
        if counters and name.endswith("running_var"):
            out[prefix + name[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(591, dtype=torch.int64)
    return out


def _paddle_state(state):
    paddle = _paddle()
    return {k: paddle.to_tensor(v) for k, v in neutral_to_paddle_state(state).items()}


def write_all(states, folder):
    """Every format, written by the framework that owns it: {label: (path, has EMA)}."""
    torch, paddle = _torch(), _paddle()
    model, ema = states
    folder = str(folder)
    files = {}
    path = os.path.join(folder, "neutral.safetensors")
    save_checkpoint(path, Checkpoint(model=model, ema=ema, meta={"family": "cream", "name": "cream14", "epoch": 3},
                                     optimizer=OptimizerState("sgd", 5, {"momentum": dict(model)})))
    files["neutral"] = (path, True)
    for fmt in ("zip", "legacy"):
        path = os.path.join(folder, f"plain_{fmt}.pt")
        torch.save(_torch_state(model), path, _use_new_zipfile_serialization=(fmt == "zip"))
        files[f"torch_{fmt}"] = (path, False)
        # upstream Cream training checkpoint: DataParallel prefixes, BN counters, epoch/args/optimizer entries
        path = os.path.join(folder, f"cream_{fmt}.pth.tar")
        torch.save({"epoch": 591, "arch": "cream", "version": 2, "metric": 53.8,
                    "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
                    "state_dict": _torch_state(model, "module.", counters=True),
                    "state_dict_ema": _torch_state(ema, "module.", counters=True)},
                   path, _use_new_zipfile_serialization=(fmt == "zip"))
        files[f"cream_{fmt}"] = (path, True)
    path = os.path.join(folder, "paddle.pdparams")
    paddle.save(_paddle_state(model), path)
    files["pdparams"] = (path, False)
    path = os.path.join(folder, "paddle_ema.pdparams")  # the Paddle reproduction's checkpoint dict
    paddle.save({"epoch": 3, "state_dict": _paddle_state(model), "state_dict_ema": _paddle_state(ema)}, path)
    files["pdparams_ema"] = (path, True)
    return files


@pytest.fixture(scope="module")
def files(states, tmp_path_factory):
    return write_all(states, tmp_path_factory.mktemp("weights"))


FORMATS = ("neutral", "torch_zip", "torch_legacy", "cream_zip", "cream_legacy", "pdparams", "pdparams_ema")


@pytest.mark.parametrize("label", FORMATS)
def test_every_format_reads_as_the_same_arrays(states, files, label):
    model, ema = states
    path, has_ema = files[label]
    ckpt = load_weights(path, family="cream", net="cream14")
    _same(ckpt.model, model, f"{label} model")
    if has_ema:
        _same(ckpt.ema, ema, f"{label} EMA")
    else:
        assert ckpt.ema is None
    assert ckpt.meta["family"] == "cream" and ckpt.meta["name"] == "cream14"
    if label.startswith("cream"):
        counters = sum(name.endswith("running_var") for name in model)  # one per BN
        assert f"state_dict: {counters} num_batches_tracked (torch BN counters)" in ckpt.meta["skipped"]
        assert f"state_dict_ema: {counters} num_batches_tracked (torch BN counters)" in ckpt.meta["skipped"]
        assert "entries not read: arch, epoch, metric, optimizer, version" in ckpt.meta["skipped"]
    # the extension does not matter: the same bytes under a misleading name read the same
    renamed = path + ".safetensors" if label != "neutral" else path + ".pdparams"
    os.link(path, renamed)
    try:
        _same(load_weights(renamed).model, model, f"{label} renamed")
    finally:
        os.remove(renamed)


def test_sniffed_kinds(files):
    kinds = {label: sniff_format(path) for label, (path, _) in files.items()}
    assert kinds == {"neutral": "neutral", "torch_zip": "torch_zip", "torch_legacy": "torch_legacy",
                     "cream_zip": "torch_zip", "cream_legacy": "torch_legacy", "pdparams": "pickle",
                     "pdparams_ema": "pickle"}


def test_the_twins_own_state_dicts(states, tmp_path):
    """What each framework's model writes itself (torch with num_batches_tracked, paddle with its name table)."""
    from paddle_impl.backend import Backend as PaddleBackend
    from torch_impl.backend import Backend as TorchBackend

    model, _ = states
    torch_backend = TorchBackend()
    net = torch_backend.build_model("cream", SPEC)
    torch_backend.load_neutral(net, model, source="test")
    _torch().save(net.state_dict(), str(tmp_path / "twin.pth"))
    _same(load_weights(str(tmp_path / "twin.pth")).model, model, "torch twin")
    paddle_backend = PaddleBackend()
    layer = paddle_backend.build_model("cream", SPEC)
    paddle_backend.load_neutral(layer, model, source="test")
    _paddle().save(layer.state_dict(), str(tmp_path / "twin.pdparams"))
    _same(load_weights(str(tmp_path / "twin.pdparams")).model, model, "paddle twin")


def test_foreign_safetensors_is_a_bare_state_dict(states, tmp_path):
    from safetensors.numpy import save_file

    model, _ = states
    save_file(dict(model), str(tmp_path / "hub.safetensors"))
    ckpt = load_weights(str(tmp_path / "hub.safetensors"))
    _same(ckpt.model, model, "foreign safetensors")
    assert ckpt.meta["name"] == "cream14" and ckpt.meta["source_format"] == "safetensors"


def test_another_family_is_refused(files):
    path, _ = files["torch_zip"]
    with pytest.raises(CheckpointError) as info:
        load_weights(path, family="pnasnet")
    assert str(info.value) == f"{path}: the tensors are cream/cream14 weights, not a pnasnet network (MODEL.FAMILY)"
    path, _ = files["neutral"]
    with pytest.raises(CheckpointError, match="a checkpoint of cream/cream14, not of a pnasnet network"):
        load_weights(path, family="pnasnet")


# ------------------------------------------------------------------------------------------------ malicious files
class SystemPayload:
    """Unpickling this runs ``os.system('touch <marker>')``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


REFUSED = f"refused to unpickle global '{os.system.__module__}.system'"


def _malicious_files(states, folder, marker):
    torch = _torch()
    model, ema = states
    payload = SystemPayload(marker)
    out = {}
    for fmt in ("zip", "legacy"):
        state = _torch_state(model)
        state["conv_stem.weight"] = payload  # in place of one tensor of a plain state dict
        out[f"pt_{fmt}"] = str(folder / f"evil_{fmt}.pt")
        torch.save(state, out[f"pt_{fmt}"], _use_new_zipfile_serialization=(fmt == "zip"))
        out[f"cream_{fmt}"] = str(folder / f"evil_{fmt}.pth.tar")
        torch.save({"epoch": 1, "args": payload, "state_dict": _torch_state(model, "module."),
                    "state_dict_ema": _torch_state(ema, "module.")}, out[f"cream_{fmt}"],
                   _use_new_zipfile_serialization=(fmt == "zip"))
    state = neutral_to_paddle_state(model)
    state["evil"] = payload
    out["pdparams"] = str(folder / "evil.pdparams")
    with open(out["pdparams"], "wb") as handle:
        pickle.dump(state, handle, protocol=4)
    out["pdparams_p0"] = str(folder / "evil_p0.pdparams")  # protocol 0 starts with the GLOBAL opcode itself
    with open(out["pdparams_p0"], "wb") as handle:
        pickle.dump(payload, handle, protocol=0)
    return out


def test_malicious_pickles_do_not_run_and_name_the_file(states, tmp_path):
    marker = tmp_path / "PWNED"
    evil = _malicious_files(states, tmp_path, marker)
    for label, path in evil.items():
        with pytest.raises(CheckpointError) as info:
            load_weights(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and REFUSED in message and "\n" not in message, (label, message)
        assert not marker.exists(), label
    # the payload is real: an ordinary unpickler (in a child process) does run it
    code = f"import pickle; pickle.load(open({evil['pdparams']!r}, 'rb'))"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert marker.exists()


# ------------------------------------------------------------------------------------------------ broken files
def test_broken_files_are_one_line_errors_naming_the_file(files, tmp_path):
    cases = {}
    for label in ("neutral", "torch_zip", "torch_legacy", "cream_zip", "pdparams"):
        data = open(files[label][0], "rb").read()
        path = str(tmp_path / f"truncated_{label}")
        with open(path, "wb") as handle:
            handle.write(data[: len(data) // 2])
        cases[path] = "truncat" if label != "pdparams" else "unreadable Paddle pickle"
    junk = str(tmp_path / "junk.pt")
    with open(junk, "wb") as handle:
        handle.write(b"GIF89a not weights at all")
    cases[junk] = "unknown weights format: first bytes 47 49 46 38 39 61 20 6e; expected a neutral .safetensors"
    empty = str(tmp_path / "empty.pth")
    open(empty, "wb").close()
    cases[empty] = "empty file (expected a neutral .safetensors"
    npz = str(tmp_path / "arrays.npz")
    np.savez(npz, a=np.zeros(3))
    cases[npz] = "not a torch.save file"
    listed = str(tmp_path / "list.pt")
    _torch().save([_torch().zeros(2)], listed)
    cases[listed] = "the file holds a list, not a state dict or a checkpoint dict"
    config = str(tmp_path / "config.pdparams")
    with open(config, "wb") as handle:
        pickle.dump({"lr": 0.1, "epochs": 3}, handle, protocol=4)
    cases[config] = "neither a state dict of arrays nor a checkpoint dict with 'state_dict'"
    missing = str(tmp_path / "missing.pt")
    cases[missing] = "weights file not found"
    tf_prefix = str(tmp_path / "model.ckpt")
    open(tf_prefix + ".index", "wb").close()
    cases[tf_prefix] = "a TensorFlow checkpoint prefix"
    for path, expected in cases.items():
        with pytest.raises(CheckpointError) as info:
            load_weights(path)
        message = str(info.value)
        assert path in message and expected in message and "\n" not in message, (path, message)


def test_a_zip_that_only_looks_like_torch(tmp_path):
    path = str(tmp_path / "odd.pt")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2) + b"")
    with pytest.raises(CheckpointError, match="odd.pt: the file holds|odd.pt: neither a state dict"):
        load_weights(path)


# ------------------------------------------------------------------------------------------------ no framework
def test_reading_imports_no_framework(states, files, tmp_path):
    """With torch and paddle unimportable (shadow packages that raise) every format still reads, bit for bit, and
    no framework module is loaded."""
    shadow = tmp_path / "shadow"
    for name in ("torch", "paddle", "tensorflow"):
        (shadow / name).mkdir(parents=True)
        (shadow / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked for this test')\n")
    model, ema = states
    reference = str(tmp_path / "reference.npz")
    np.savez(reference, **{"m/" + k: v for k, v in model.items()}, **{"e/" + k: v for k, v in ema.items()})
    listing = {label: [path, has_ema] for label, (path, has_ema) in files.items()}
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from weights_tools.load_any import load_weights
        ref = np.load({reference!r})
        for label, (path, has_ema) in {listing!r}.items():
            ckpt = load_weights(path, family="cream")
            for key in ckpt.model:
                assert ckpt.model[key].tobytes() == ref["m/" + key].tobytes(), (label, key)
            assert (ckpt.ema is not None) == has_ema, label
            if has_ema:
                assert all(ckpt.ema[k].tobytes() == ref["e/" + k].tobytes() for k in ckpt.ema), label
            print("OK", label, len(ckpt.model))
        print("LOADED", sorted(m for m in ("torch", "paddle", "tensorflow", "torchvision", "tf_slim", "timm")
                               if m in sys.modules))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shadow), ROOT]))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("OK ") == len(files) and "LOADED []" in out.stdout, out.stdout


def test_weights_tools_modules_import_no_framework():
    code = textwrap.dedent("""
        import importlib, pkgutil, sys
        import weights_tools
        for info in pkgutil.walk_packages(weights_tools.__path__, "weights_tools."):
            importlib.import_module(info.name)
        print("LOADED", sorted(m for m in ("torch", "paddle", "tensorflow", "torchvision", "tf_slim", "timm")
                               if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout


# ------------------------------------------------------------------------------------------ through the commands
@pytest.fixture(scope="module")
def batch_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("batch") / "x.npy"
    np.save(path, np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32))
    return str(path)


@pytest.mark.parametrize("backend", ["torch", "paddle"])
def test_infer_and_test_take_every_format_on_both_backends(files, batch_file, backend, tmp_path, capsys):
    """MODEL.WEIGHTS takes what convert and the frameworks write: every format gives the same logits as the
    neutral file on each backend (the model weights, or the EMA when the config keeps one and the file has it),
    and `test` scores a .pt / .pdparams exactly like the .safetensors."""
    from tools.main import main

    def infer(label, ema):
        out = tmp_path / f"{label}-{ema}"
        code = main(["infer", "configs/cream14_digits.yaml", "--backend", backend, "TRAIN.EMA_DECAY", ema,
                     "MODEL.WEIGHTS", files[label][0], "--output", str(out), "--inputs", batch_file])
        assert code == 0, capsys.readouterr().err
        return np.load(out / "logits.npy")

    reference = {ema: infer("neutral", ema) for ema in ("0", "0.98")}
    assert not np.array_equal(reference["0"], reference["0.98"])  # the EMA really is other weights
    for label in FORMATS:
        for ema in ("0", "0.98"):
            want = reference[ema if files[label][1] else "0"]
            assert np.array_equal(infer(label, ema), want), (label, ema)

    def test(label):
        out = tmp_path / f"test-{label}"
        code = main(["test", "configs/cream14_digits.yaml", "--backend", backend, "TRAIN.EMA_DECAY", "0",
                     "DATA.NUM_VAL", "24", "MODEL.WEIGHTS", files[label][0], "--output", str(out)])
        assert code == 0, capsys.readouterr().err
        result = json.load(open(out / "test_results.json"))
        return {k: result[k] for k in ("top1", "top5", "loss")}

    assert test("torch_zip") == test("pdparams") == test("neutral")
