"""Checkpoint loading safety, torch vs Paddle (anchors §3.3 row 28, §6), and the Cream import end to end.

``paddle.load`` is a plain ``pickle.load``: a crafted file runs code.  ``torch.load`` (weights_only by default
since torch 2.6) refuses it.  Our loaders refuse it in every format without importing either framework, and the
Cream importer turns upstream-layout files into the neutral checkpoint bit-exactly, strictly checked.
"""
import argparse
import collections
import importlib
import os
import pickle

import numpy as np
import pytest

from common.checkpoint import CheckpointError, load_checkpoint
from common.specs.cream import expected_state_shapes, released_net_spec
from weights_tools.cream_import import CreamImportError, detect_cream_net, import_cream_checkpoint
from weights_tools.safe_unpickle import UnsafePickleError, load_paddle_pickle, load_pdparams, load_torch_checkpoint


class MarkerPayload:
    """Unpickling this creates ``marker`` (``open(marker, 'w')``): harmless proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


# ------------------------------------------------------------------------------------------------ row 28

def test_paddle_load_executes_code_from_a_crafted_pickle(tmp_path):
    paddle = importlib.import_module("paddle")
    marker = tmp_path / "paddle_ran_the_payload"
    path = tmp_path / "crafted.pdparams"
    with open(path, "wb") as handle:
        pickle.dump({"linear.weight": np.ones((2, 2), np.float32), "x": MarkerPayload(marker)}, handle, protocol=4)
    try:
        paddle.load(str(path))
    except Exception:  # whatever paddle makes of the result afterwards, the payload already ran
        pass
    assert marker.exists(), "paddle.load did not run the payload (has paddle changed to a restricted unpickler?)"
    # ours refuses the same file, and nothing runs
    marker.unlink()
    for loader in (load_pdparams, load_paddle_pickle):
        with pytest.raises(UnsafePickleError, match="open"):
            loader(str(path))
    assert not marker.exists()


def test_torch_load_weights_only_refuses_a_crafted_pickle(tmp_path):
    torch = importlib.import_module("torch")
    for fmt in ("zip", "legacy"):
        marker = tmp_path / f"torch_ran_the_payload_{fmt}"
        path = tmp_path / f"crafted_{fmt}.pth"
        torch.save({"w": torch.ones(2), "x": MarkerPayload(marker)}, str(path),
                   _use_new_zipfile_serialization=(fmt == "zip"))
        with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only load failed"):
            torch.load(str(path))  # weights_only=True is the default
        assert not marker.exists()
        with pytest.raises(UnsafePickleError, match="open"):
            load_torch_checkpoint(str(path))
        assert not marker.exists()


# ------------------------------------------------------------------------------------------------ Cream import

def _random_state(spec, seed):
    rng = np.random.default_rng(seed)
    state = collections.OrderedDict()
    for name, shape in expected_state_shapes(spec).items():
        if name.endswith("running_var"):
            state[name] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        else:
            state[name] = rng.standard_normal(shape).astype(np.float32)
    return state


def _upstream_dict(torch, plain, ema, prefix="module."):
    """timm 0.1.20 CheckpointSaver layout (upstream Cream): unwrapped-by-hand keys may still carry module."""
    def to_torch(state, with_prefix):
        out = collections.OrderedDict()
        for name, array in state.items():
            out[(prefix if with_prefix else "") + name] = torch.from_numpy(array.copy())
            if name.endswith("running_var"):
                out[(prefix if with_prefix else "") + name[: -len("running_var")] + "num_batches_tracked"] = \
                    torch.tensor(591 * 1251)
        return out

    return {"epoch": 591, "arch": "cream", "state_dict": to_torch(plain, True),
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.064, "params": [0, 1]}]},
            "args": argparse.Namespace(model="cream", lr=0.064, opt="rmsproptf"), "version": 2,
            "state_dict_ema": to_torch(ema, False), "metric": 53.8}


@pytest.fixture(scope="module")
def cream14():
    spec = released_net_spec("cream14")
    return spec, _random_state(spec, 0), _random_state(spec, 1)


@pytest.mark.parametrize("fmt", ["legacy", "zip"])  # upstream's torch 1.2 wrote the legacy format
def test_cream14_pth_tar_imports_bit_exactly(tmp_path, cream14, fmt):
    torch = importlib.import_module("torch")
    spec, plain, ema = cream14
    src = tmp_path / "14.pth.tar"
    torch.save(_upstream_dict(torch, plain, ema), str(src), _use_new_zipfile_serialization=(fmt == "zip"))
    dst = tmp_path / "out" / "cream14.safetensors"
    ckpt = import_cream_checkpoint(str(src), str(dst))  # net detected from the shapes
    assert list(ckpt.model) == list(expected_state_shapes(spec))  # canonical (module) order
    for result in (ckpt, load_checkpoint(str(dst))):
        assert sorted(result.model) == sorted(expected_state_shapes(spec))
        for name in plain:
            assert result.model[name].dtype == np.float32
            assert result.model[name].tobytes() == ema[name].tobytes(), name  # model = EMA weights
            assert result.ema[name].tobytes() == ema[name].tobytes(), name
        meta = result.meta
        assert (meta["family"], meta["spec"], meta["source_epoch"], meta["source_framework"]) == (
            "cream", "cream14", 591, "torch")
        assert meta["source_file"] == os.path.abspath(src) and meta["source_format"] == f"torch_{fmt}"
        assert meta["model_weights"] == "state_dict_ema"
        assert len(meta["ignored_tensors"]) == 2 * sum(n.endswith("running_var") for n in plain)
        assert set(meta["ignored_entries"]) == {"args", "metric", "optimizer", "version"}
    plain_ckpt = import_cream_checkpoint(str(src), net="14", use_ema=False)
    for name in plain:
        assert plain_ckpt.model[name].tobytes() == plain[name].tobytes(), name


def test_cream_pdparams_imports_bit_exactly(tmp_path, cream14):
    """The Paddle reproduction's layout: BN _mean/_variance, Linear [in, out], nested saver dict or bare."""
    paddle = importlib.import_module("paddle")
    spec, plain, ema = cream14

    def to_paddle(state):
        out = collections.OrderedDict()
        for name, array in state.items():
            name = name.replace("running_mean", "_mean").replace("running_var", "_variance")
            out[name] = paddle.to_tensor(array.T.copy() if array.ndim == 2 else array)
        return out

    src = tmp_path / "14.pdparams"
    paddle.save({"epoch": 0, "arch": "cream", "state_dict": to_paddle(plain), "state_dict_ema": to_paddle(ema)},
                str(src))
    ckpt = import_cream_checkpoint(str(src), str(tmp_path / "p.safetensors"), net="cream14")
    assert ckpt.meta["source_framework"] == "paddle" and ckpt.meta["source_epoch"] == 0
    for name in plain:
        assert ckpt.model[name].tobytes() == ema[name].tobytes(), name
    bare = tmp_path / "bare.pdparams"
    paddle.save(to_paddle(plain), str(bare))  # a Layer.state_dict()-style file
    ckpt = import_cream_checkpoint(str(bare))
    assert ckpt.meta["spec"] == "cream14" and ckpt.ema is None
    assert ckpt.meta["model_weights"].startswith("state_dict")
    for name in plain:
        assert ckpt.model[name].tobytes() == plain[name].tobytes(), name


def _break(state, how):
    state = collections.OrderedDict(state)
    if how == "wrong_shape":
        state["blocks.2.1.conv_dw.weight"] = np.zeros((144, 1, 3, 3), np.float32)
    elif how == "missing":
        del state["blocks.3.0.se.conv_expand.bias"]
    elif how == "extra":
        state["blocks.6.0.se.conv_reduce.weight"] = np.zeros((80, 320, 1, 1), np.float32)
    return state


@pytest.mark.parametrize("how, tensor", [("wrong_shape", "blocks.2.1.conv_dw.weight"),
                                         ("missing", "blocks.3.0.se.conv_expand.bias"),
                                         ("extra", "blocks.6.0.se.conv_reduce.weight")])
def test_bad_cream_file_names_the_tensor_and_writes_nothing(tmp_path, cream14, how, tensor):
    torch = importlib.import_module("torch")
    spec, plain, ema = cream14
    src = tmp_path / "bad.pth.tar"
    torch.save(_upstream_dict(torch, plain, _break(ema, how)), str(src))
    dst = tmp_path / "out.safetensors"
    with pytest.raises(CheckpointError) as err:
        import_cream_checkpoint(str(src), str(dst), net="cream14")
    message = str(err.value)
    assert tensor in message and str(src) in message and "state_dict_ema" in message
    if how == "wrong_shape":
        assert "[240, 1, 5, 5]" in message and "[144, 1, 3, 3]" in message
    assert not dst.exists() and os.listdir(tmp_path) == ["bad.pth.tar"]
    with pytest.raises(CreamImportError, match="none of the released Cream child nets") as err:
        import_cream_checkpoint(str(src), str(dst))  # detection lists every candidate
    assert all(name in str(err.value) for name in ("cream14", "cream43", "cream604"))
    assert not dst.exists()


def test_malicious_cream_file_is_refused_and_writes_nothing(tmp_path, cream14):
    torch = importlib.import_module("torch")
    spec, plain, ema = cream14
    marker = tmp_path / "ran"
    obj = _upstream_dict(torch, plain, ema)
    obj["args"] = MarkerPayload(marker)
    src = tmp_path / "evil.pth.tar"
    torch.save(obj, str(src), _use_new_zipfile_serialization=False)
    dst = tmp_path / "out.safetensors"
    with pytest.raises(UnsafePickleError):
        import_cream_checkpoint(str(src), str(dst))
    assert not marker.exists() and not dst.exists()


def test_detect_cream_net_all_six():
    for name in ("cream14", "cream43", "cream114", "cream287", "cream481", "cream604"):
        shapes = expected_state_shapes(released_net_spec(name))
        state = {("module." + k): np.zeros(s, np.float32) for k, s in shapes.items()}
        assert detect_cream_net(state) == name
    honoured = expected_state_shapes(released_net_spec("cream14", honour_single_block_choices=True))
    with pytest.raises(CreamImportError, match="cream14: .*wrong shape"):
        detect_cream_net({k: np.zeros(s, np.float32) for k, s in honoured.items()})
