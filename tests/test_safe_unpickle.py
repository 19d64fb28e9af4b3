"""weights_tools.safe_unpickle: torch (zip + legacy) and Paddle pickles read bit-exactly with numpy only, and
malicious or broken files refused with the file named, before anything in them runs."""
import argparse
import collections
import importlib
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from weights_tools.safe_unpickle import (
    PADDLE_NAME_TABLE_KEY, PADDLE_UNPACK_KEY, ForeignCheckpointError, PlainConfig, PlainNamespace, UnsafePickleError,
    detect_pickle_format, load_paddle_pickle, load_pdparams, load_torch_checkpoint,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_FORMATS = ("zip", "legacy")


def _torch():
    return importlib.import_module("torch")


def _paddle():
    return importlib.import_module("paddle")


def _torch_save(obj, path, fmt):
    _torch().save(obj, str(path), _use_new_zipfile_serialization=(fmt == "zip"))
    return str(path)


def _same(array, tensor_or_array):
    """bit-exact: dtype, shape and bytes."""
    ref = tensor_or_array.numpy() if hasattr(tensor_or_array, "numpy") else np.asarray(tensor_or_array)
    return (isinstance(array, np.ndarray) and array.dtype == ref.dtype and array.shape == ref.shape
            and array.tobytes() == np.ascontiguousarray(ref).tobytes())


class SystemPayload:
    """Unpickling this runs ``os.system('touch <marker>')``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class OpenPayload:
    """Unpickling this creates the marker file with ``open(marker, 'w')``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


# ------------------------------------------------------------------------------------------------ torch

@pytest.mark.parametrize("fmt", TORCH_FORMATS)
def test_torch_round_trip_bit_exact(tmp_path, fmt):
    torch = _torch()
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=gen)
    tensors = collections.OrderedDict(
        f32=torch.randn(3, 4, 5, generator=gen),
        f64=torch.randn(7, dtype=torch.float64, generator=gen),
        f16=torch.randn(2, 3, generator=gen).half(),
        i64=torch.randint(-2**62, 2**62, (4, 3), dtype=torch.int64, generator=gen),
        i32=torch.randint(-2**30, 2**30, (5,), dtype=torch.int32, generator=gen),
        u8=torch.randint(0, 255, (9,), dtype=torch.uint8, generator=gen),
        i8=torch.randint(-128, 127, (3,), dtype=torch.int8, generator=gen),
        b=torch.tensor([True, False, True]),
        c64=torch.randn(3, dtype=torch.complex64, generator=gen),
        scalar=torch.tensor(3.25),
        empty=torch.zeros(0, 4),
        nan=torch.tensor([float("nan"), float("inf"), -0.0]),
        transposed=base.t(),  # non-contiguous
        offset_slice=base[2:5, 1:7:2],  # storage offset + steps
        row=base[4],
        expanded=torch.arange(3.0).expand(4, 3),  # stride 0
        param=torch.nn.Parameter(torch.randn(2, 2, generator=gen)),
    )
    obj = {"state_dict": tensors, "epoch": 7, "list": [base[0, :3], (base[1, 2:4], "x")], "metric": 51.5,
           "args": argparse.Namespace(lr=0.064, sched="cosine", nested={"a": [1, 2]}),
           "np_scalar": np.float64(2.5), "np_array": np.arange(6, dtype=np.int16).reshape(2, 3)}
    path = _torch_save(obj, tmp_path / f"all.{fmt}.pth", fmt)
    assert detect_pickle_format(path) == f"torch_{fmt}"
    back = load_torch_checkpoint(path)
    assert isinstance(back["state_dict"], collections.OrderedDict)
    assert list(back["state_dict"]) == list(tensors)
    for name, tensor in tensors.items():
        assert _same(back["state_dict"][name], tensor.detach()), name
    assert back["state_dict"]["transposed"].flags.c_contiguous
    assert back["epoch"] == 7 and back["metric"] == 51.5
    assert _same(back["list"][0], base[0, :3]) and _same(back["list"][1][0], base[1, 2:4])
    assert back["list"][1][1] == "x" and isinstance(back["list"][1], tuple)
    args = back["args"]
    assert isinstance(args, PlainNamespace) and args.lr == 0.064 and args["sched"] == "cosine"
    assert args.nested == {"a": [1, 2]}
    assert back["np_scalar"] == 2.5 and back["np_scalar"].dtype == np.float64
    assert _same(back["np_array"], obj["np_array"])


@pytest.mark.parametrize("fmt", TORCH_FORMATS)
def test_torch_bfloat16_widened_exactly(tmp_path, fmt):
    torch = _torch()
    t = torch.randn(5, 3, generator=torch.Generator().manual_seed(1)).bfloat16()
    back = load_torch_checkpoint(_torch_save({"w": t, "v": t[1:, 1]}, tmp_path / "bf.pth", fmt))
    assert _same(back["w"], t.float()) and _same(back["v"], t[1:, 1].float())


@pytest.mark.parametrize("fmt", TORCH_FORMATS)
def test_torch_shared_storage_views(tmp_path, fmt):
    torch = _torch()
    whole = torch.arange(24, dtype=torch.float32)
    obj = {"whole": whole, "a": whole[3:9].view(2, 3), "b": whole.view(4, 6)[:, 2], "c": whole[10:].view(7, 2).t()}
    back = load_torch_checkpoint(_torch_save(obj, tmp_path / "views.pth", fmt))
    for name, tensor in obj.items():
        assert _same(back[name], tensor.contiguous()), name
    back["a"][0, 0] = -1  # arrays are copies: no aliasing between entries
    assert back["whole"][3] == 3


def test_torch_yacs_config(tmp_path):
    torch = _torch()
    yacs = importlib.import_module("yacs.config")
    net = yacs.CfgNode({"SELECTION": 14, "EMA": yacs.CfgNode({"DECAY": 0.9998})})
    cfg = yacs.CfgNode({"MODEL": "cream", "NET": net})
    for fmt in TORCH_FORMATS:
        back = load_torch_checkpoint(_torch_save({"args": cfg, "w": torch.ones(1)}, tmp_path / f"c{fmt}.pth", fmt))
        assert isinstance(back["args"], PlainConfig)
        assert back["args"] == {"MODEL": "cream", "NET": {"SELECTION": 14, "EMA": {"DECAY": 0.9998}}}
        assert back["args"].NET.EMA.DECAY == 0.9998


@pytest.mark.parametrize("fmt", TORCH_FORMATS)
def test_cream_like_pth_tar(tmp_path, fmt):
    torch = _torch()
    gen = torch.Generator().manual_seed(2)
    sd = collections.OrderedDict((f"module.{k}", v) for k, v in {
        "conv_stem.weight": torch.randn(16, 3, 3, 3, generator=gen),
        "bn1.weight": torch.rand(16, generator=gen), "bn1.running_var": torch.rand(16, generator=gen),
        "bn1.num_batches_tracked": torch.tensor(12345),
        "classifier.weight": torch.randn(10, 1280, generator=gen)}.items())
    ema = collections.OrderedDict((k[len("module."):], v * 0.5) for k, v in sd.items())
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=0.1, momentum=0.9)
    obj = {"epoch": 591, "arch": "cream", "state_dict": sd, "optimizer": opt.state_dict(),
           "args": argparse.Namespace(model="cream", lr=0.064), "version": 2, "state_dict_ema": ema,
           "metric": 53.8}
    back = load_torch_checkpoint(_torch_save(obj, tmp_path / "14.pth.tar", fmt))
    assert back["epoch"] == 591 and back["arch"] == "cream" and back["version"] == 2
    for k, v in sd.items():
        assert _same(back["state_dict"][k], v), k
    for k, v in ema.items():
        assert _same(back["state_dict_ema"][k], v), k
    assert back["state_dict"]["module.bn1.num_batches_tracked"].dtype == np.int64
    assert back["args"].model == "cream" and back["optimizer"]["param_groups"][0]["momentum"] == 0.9


# ------------------------------------------------------------------------------------------------ paddle

@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_pdparams_round_trip_bit_exact(tmp_path, protocol):
    paddle = _paddle()
    paddle.seed(0)
    layer = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.BatchNorm2D(4), paddle.nn.Linear(5, 6))
    path = str(tmp_path / f"m{protocol}.pdparams")
    paddle.save(layer.state_dict(), path, protocol=protocol)
    assert detect_pickle_format(path) == "pickle"
    back = load_pdparams(path)
    state = layer.state_dict()
    assert list(back) == list(state)  # the structured names; the name table is dropped
    for name, tensor in state.items():
        assert _same(back[name], tensor.numpy()), name
    table = load_paddle_pickle(path, keep_name_table=True)[PADDLE_NAME_TABLE_KEY]
    assert set(table) == set(state)


def test_pdparams_dtypes_and_nested(tmp_path):
    paddle = _paddle()
    arrays = {"h": np.arange(6, dtype=np.float16).reshape(2, 3), "l": np.array([2**40, -5], dtype=np.int64),
              "d": np.linspace(0, 1, 5), "b": np.array([True, False])}
    path = str(tmp_path / "dtypes.pdparams")
    paddle.save({k: paddle.to_tensor(v) for k, v in arrays.items()}, path)
    back = load_pdparams(path)
    for k, v in arrays.items():
        assert _same(back[k], v), k
    # a nested checkpoint (tensors pickled as (name, ndarray) tuples), like the Paddle reproduction's saver
    nested = {"epoch": 0, "arch": "cream", "state_dict": {"w": paddle.to_tensor(arrays["d"])},
              "state_dict_ema": {"w": paddle.to_tensor(arrays["d"] * 2)}, "metric": 53.764}
    path2 = str(tmp_path / "nested.pdparams")
    paddle.save(nested, path2)
    ours = load_paddle_pickle(path2)
    theirs = paddle.load(path2, return_numpy=True)
    assert ours["epoch"] == theirs["epoch"] == 0 and ours["metric"] == 53.764
    for key in ("state_dict", "state_dict_ema"):
        assert _same(ours[key]["w"], theirs[key]["w"])
    with pytest.raises(ForeignCheckpointError, match="'epoch'.*load_paddle_pickle"):
        load_pdparams(path2)


@pytest.mark.parametrize("protocol", [2, 4])
def test_pdparams_split_big_param_form(tmp_path, protocol):
    """paddle.save (protocol 2/3) splits arrays over 2**30 bytes into flat '<name>@@.<i>' slices listed under
    'UnpackBigParamInfor@@'.  Built here at small size in that exact layout; paddle.load reassembles it and so
    must we."""
    paddle = _paddle()
    big = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5) * 0.5
    flat = big.reshape(-1)
    saved = {"small": np.ones(3, np.float32), "big@@.0": flat[:13], "big@@.1": flat[13:26], "big@@.2": flat[26:],
             PADDLE_UNPACK_KEY: {"big": {"OriginShape": big.shape, "slices": ["big@@.0", "big@@.1", "big@@.2"]}},
             PADDLE_NAME_TABLE_KEY: {"small": "p_0", "big": "p_1"}}
    path = str(tmp_path / "split.pdparams")
    with open(path, "wb") as handle:
        pickle.dump(saved, handle, protocol=protocol)
    ours = load_pdparams(path)
    theirs = paddle.load(path, return_numpy=True)
    assert sorted(ours) == sorted(theirs) == ["big", "small"]
    assert _same(ours["big"], big) and _same(ours["big"], theirs["big"])
    saved[PADDLE_UNPACK_KEY]["big"]["slices"].append("big@@.3")
    with open(path, "wb") as handle:
        pickle.dump(saved, handle, protocol=protocol)
    with pytest.raises(ForeignCheckpointError, match="slice 'big@@.3' of split array 'big' is missing"):
        load_pdparams(path)


# ------------------------------------------------------------------------------------------------ malicious files

def _malicious(tmp_path, fmt, payload_cls):
    marker = tmp_path / f"PWNED_{fmt}_{payload_cls.__name__}"
    payload = payload_cls(marker)
    weights = {"conv.weight": np.ones((2, 2), np.float32)}
    path = tmp_path / f"evil_{fmt}_{payload_cls.__name__}"
    if fmt in TORCH_FORMATS:
        torch = _torch()
        obj = {"state_dict": {"conv.weight": torch.ones(2, 2)}, "hook": payload}
        _torch_save(obj, path, fmt)
    else:
        with open(path, "wb") as handle:  # what paddle.save of {..., 'hook': payload} writes
            pickle.dump({**weights, "hook": payload}, handle, protocol=4)
    assert not marker.exists()
    return str(path), marker


@pytest.mark.parametrize("payload_cls", [SystemPayload, OpenPayload])
@pytest.mark.parametrize("fmt", TORCH_FORMATS + ("pdparams",))
def test_malicious_pickles_refused(tmp_path, fmt, payload_cls):
    path, marker = _malicious(tmp_path, fmt, payload_cls)
    loader = load_pdparams if fmt == "pdparams" else load_torch_checkpoint
    with pytest.raises(UnsafePickleError) as err:
        loader(path)
    message = str(err.value)
    refused = ("posix.system",) if payload_cls is SystemPayload else ("io.open", "builtins.open")
    assert path in message and "nothing in it was executed" in message
    assert err.value.global_name in refused and err.value.global_name in message
    assert not marker.exists()


def test_malicious_global_before_any_data_refused(tmp_path):
    # a hand-written protocol-0 pickle: the dangerous global is the first opcode
    marker = tmp_path / "PWNED_raw"
    path = tmp_path / "raw.pdparams"
    path.write_bytes(f"cos\nsystem\n(Vtouch {marker}\ntR.".encode())
    for loader in (load_pdparams, load_paddle_pickle):
        with pytest.raises(UnsafePickleError, match="os.system"):
            loader(str(path))
    assert not marker.exists()


def test_disallowed_but_harmless_globals_are_refused_too(tmp_path):
    path = tmp_path / "fraction.pdparams"
    import fractions
    with open(path, "wb") as handle:
        pickle.dump({"w": np.zeros(2), "f": fractions.Fraction(1, 3)}, handle)
    with pytest.raises(UnsafePickleError, match="fractions.Fraction"):
        load_pdparams(str(path))


def test_object_arrays_refused(tmp_path):
    path = tmp_path / "obj.pdparams"
    with open(path, "wb") as handle:
        pickle.dump({"w": np.array([1, "a"], dtype=object)}, handle)
    with pytest.raises(ForeignCheckpointError, match="not numeric") as err:
        load_pdparams(str(path))
    assert str(path) in str(err.value)


# ------------------------------------------------------------------------------------------------ broken files

@pytest.mark.parametrize("fmt", TORCH_FORMATS + ("pdparams",))
@pytest.mark.parametrize("keep", [0.02, 0.5, 0.97])
def test_truncated_files_name_the_file(tmp_path, fmt, keep):
    rng = np.random.default_rng(0)
    weights = {"a": rng.standard_normal((64, 64)).astype(np.float32), "b": rng.integers(0, 9, 100)}
    full = tmp_path / f"full_{fmt}"
    if fmt == "pdparams":
        with open(full, "wb") as handle:
            pickle.dump(weights, handle, protocol=4)
    else:
        torch = _torch()
        _torch_save({k: torch.from_numpy(v) for k, v in weights.items()}, full, fmt)
    data = full.read_bytes()
    cut = tmp_path / f"cut_{fmt}_{keep}"
    cut.write_bytes(data[: int(len(data) * keep)])
    loader = load_pdparams if fmt == "pdparams" else load_torch_checkpoint
    with pytest.raises(ForeignCheckpointError) as err:
        loader(str(cut))
    assert str(cut) in str(err.value)
    assert not isinstance(err.value, UnsafePickleError)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ForeignCheckpointError, match="not found"):
        load_torch_checkpoint(str(tmp_path / "nope.pth"))
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ForeignCheckpointError, match="empty"):
        load_torch_checkpoint(str(tmp_path / "empty.pth"))
    (tmp_path / "text.pdparams").write_bytes(b"hello world, not a pickle")
    with pytest.raises(ForeignCheckpointError, match="text.pdparams"):
        load_pdparams(str(tmp_path / "text.pdparams"))
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"w": np.zeros(1)}, protocol=2))
    with pytest.raises(ForeignCheckpointError, match="plain pickle, not a torch checkpoint"):
        load_torch_checkpoint(str(plain))


def test_tensor_outside_its_storage_is_an_error(tmp_path):
    """A tampered legacy file whose tensor claims more elements than its storage holds."""
    torch = _torch()
    path = _torch_save({"w": torch.arange(6.0)}, tmp_path / "t.pth", "legacy")
    data = open(path, "rb").read()
    # the main pickle stores size (6,) as BININT1 6 followed by TUPLE1: enlarge it to 9
    patched = data.replace(b"K\x06\x85", b"K\x09\x85", 1)
    assert patched != data
    bad = tmp_path / "bad.pth"
    bad.write_bytes(patched)
    with pytest.raises(ForeignCheckpointError, match=r"reaches element 8 of storage .* 6 elements"):
        load_torch_checkpoint(str(bad))


def test_loaders_import_neither_torch_nor_paddle(tmp_path):
    """Conversion must work with either backend absent: block both imports and read all three formats."""
    torch = _torch()
    _torch_save({"w": torch.arange(4.0)}, tmp_path / "z.pth", "zip")
    _torch_save({"w": torch.arange(4.0)}, tmp_path / "l.pth", "legacy")
    with open(tmp_path / "p.pdparams", "wb") as handle:
        pickle.dump({"w": np.arange(4.0, dtype=np.float32), PADDLE_NAME_TABLE_KEY: {"w": "x"}}, handle, protocol=4)
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch', 'paddle', 'tensorflow'):
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {ROOT!r})
        from weights_tools.safe_unpickle import load_torch_checkpoint, load_pdparams
        import weights_tools.cream_import
        for name in ('z.pth', 'l.pth'):
            assert list(load_torch_checkpoint({str(tmp_path)!r} + '/' + name)['w']) == [0.0, 1.0, 2.0, 3.0]
        assert list(load_pdparams({str(tmp_path)!r} + '/p.pdparams')['w']) == [0.0, 1.0, 2.0, 3.0]
        assert not any(m.split('.')[0] in ('torch', 'paddle', 'tensorflow') for m in sys.modules)
        print('ok')
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_build_cannot_reconfigure_allowed_objects(tmp_path):
    """BUILD (set state) on an allowed class, function or singleton would poison later loads: refused."""
    from weights_tools import safe_unpickle

    original = PlainNamespace.__doc__
    for target in (b"cargparse\nNamespace\n", b"ctorch._utils\n_rebuild_tensor_v2\n", b"ctorch\nFloatStorage\n"):
        for attr in (b"__doc__", b"__defaults__", b"dtype"):
            path = tmp_path / "build.pkl"
            path.write_bytes(target + b"(N}V" + attr + b"\nVpwned\nstb.")  # GLOBAL; (None, {attr: 'pwned'}); BUILD
            with open(path, "rb") as handle, pytest.raises(ForeignCheckpointError) as err:
                safe_unpickle._unpickle(handle, str(path), safe_unpickle._torch_allowed())
            assert "BUILD" in str(err.value) and str(path) in str(err.value)
    assert PlainNamespace.__doc__ == original
    assert safe_unpickle._rebuild_tensor_v2.__defaults__ == (False, None, None)
