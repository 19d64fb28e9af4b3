"""The neutral checkpoint: round trips, strict shape checks, atomic writes, corrupt files."""
import os

import numpy as np
import pytest

from common.checkpoint import (
    Checkpoint, CheckpointError, OptimizerState, check_state, load_checkpoint, numpy_rng_state,
    restore_numpy_rng, save_checkpoint,
)


def sample_checkpoint():
    rng = np.random.default_rng(0)
    model = {"conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
             "bn.running_var": rng.random(4).astype(np.float64),
             "fc.weight": rng.standard_normal((10, 4)).astype(np.float32)}
    ema = {k: v * 0.5 for k, v in model.items()}
    opt = OptimizerState(name="rmsprop_tf", step=7,
                         slots={"square_avg": {"conv.weight": np.ones((4, 3, 3, 3), np.float32)},
                                "momentum": {"fc.weight": np.full((10, 4), 0.25, np.float32)}},
                         hyper={"alpha": 0.9, "eps": 1e-3})
    gen = np.random.default_rng(123)
    gen.random(5)
    return Checkpoint(model=model, meta={"family": "cream", "epoch": 3, "metrics": {"top1": 51.5}}, ema=ema,
                      optimizer=opt, rng={"numpy": numpy_rng_state(gen)}, rng_arrays={"torch": np.arange(5, dtype=np.uint8)})


def test_round_trip_is_bit_exact(tmp_path):
    ckpt = sample_checkpoint()
    path = str(tmp_path / "a.safetensors")
    save_checkpoint(path, ckpt)
    back = load_checkpoint(path)
    for name, array in ckpt.model.items():
        assert back.model[name].dtype == array.dtype and np.array_equal(back.model[name], array)
        assert np.array_equal(back.ema[name], ckpt.ema[name])
    assert back.optimizer.name == "rmsprop_tf" and back.optimizer.step == 7
    assert back.optimizer.hyper == {"alpha": 0.9, "eps": 1e-3}
    assert np.array_equal(back.optimizer.slots["momentum"]["fc.weight"], ckpt.optimizer.slots["momentum"]["fc.weight"])
    assert back.meta == ckpt.meta
    assert np.array_equal(back.rng_arrays["torch"], np.arange(5, dtype=np.uint8))
    # The restored numpy generator continues exactly where the saved one was.
    gen = np.random.default_rng(123)
    gen.random(5)
    assert np.array_equal(restore_numpy_rng(back.rng["numpy"]).random(4), gen.random(4))


def test_strict_shape_report_names_tensors():
    expected = {"a": (2, 3), "b": (4,), "c": (1,)}
    provided = {"a": np.zeros((3, 2)), "b": np.zeros(4), "d": np.zeros(1)}
    with pytest.raises(CheckpointError) as err:
        check_state(expected, provided, source="x.safetensors")
    msg = str(err.value)
    assert "x.safetensors" in msg
    assert "missing (1): c" in msg and "unexpected (1): d" in msg
    assert "a: model expects [2, 3], checkpoint has [3, 2]" in msg


def test_truncated_file_is_a_clear_error(tmp_path):
    path = str(tmp_path / "t.safetensors")
    save_checkpoint(path, sample_checkpoint())
    data = open(path, "rb").read()
    cut = str(tmp_path / "cut.safetensors")
    with open(cut, "wb") as handle:
        handle.write(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(cut)
    assert "cut.safetensors" in str(err.value)
    with open(cut, "wb") as handle:
        handle.write(b"\x00" * 3)
    with pytest.raises(CheckpointError):
        load_checkpoint(cut)


def test_missing_file_and_foreign_safetensors(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(str(tmp_path / "none.safetensors"))
    assert "none.safetensors" in str(err.value)
    from safetensors.numpy import save_file

    plain = str(tmp_path / "plain.safetensors")
    save_file({"w": np.zeros(3, np.float32)}, plain)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(plain)
    assert "convert" in str(err.value)


def test_failed_write_leaves_nothing_behind(tmp_path):
    path = str(tmp_path / "out.safetensors")
    bad = Checkpoint(model={"ok": np.zeros(2), "bad": np.array([object()], dtype=object)})
    with pytest.raises(CheckpointError):
        save_checkpoint(path, bad)
    assert os.listdir(tmp_path) == []


def test_interrupted_write_keeps_previous_file(tmp_path, monkeypatch):
    path = str(tmp_path / "last.safetensors")
    save_checkpoint(path, sample_checkpoint())
    before = open(path, "rb").read()
    import safetensors.numpy

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, sample_checkpoint())
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["last.safetensors"]


def test_reserved_prefix_rejected(tmp_path):
    with pytest.raises(CheckpointError) as err:
        save_checkpoint(str(tmp_path / "r.safetensors"), Checkpoint(model={"__ema__/x": np.zeros(1)}))
    assert "reserved" in str(err.value)


def test_atomic_writes_get_the_permissions_open_would_give(tmp_path):
    """mkstemp's 0600 must not leak into results: run folders are often read by others."""
    from common.io_utils import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(str(tmp_path / "a.txt"), "x")
        save_checkpoint(str(tmp_path / "c.safetensors"), sample_checkpoint())
    finally:
        os.umask(old)
    assert oct(os.stat(tmp_path / "a.txt").st_mode & 0o777) == oct(0o644)
    assert oct(os.stat(tmp_path / "c.safetensors").st_mode & 0o777) == oct(0o644)
