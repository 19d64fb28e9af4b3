"""``tools/main.py convert`` carries everything it reports, and names what it leaves out.

A neutral training checkpoint (model, EMA, optimizer state, RNG state, metadata) -> torch / paddle -> neutral keeps
the model and the EMA bit for bit; the summary counts what was written to the file and lists, on its ``not written``
line, exactly what the target format does not hold (optimizer state, RNG state, metadata)."""
from __future__ import annotations

import contextlib
import io
import os

import numpy as np
import pytest

from common.checkpoint import Checkpoint, OptimizerState, load_checkpoint, save_checkpoint
from common.specs import cream
from tools import main as cli_main

SPEC = cream.released_net_spec("cream14", num_classes=10)
META = {"family": "cream", "name": "cream14", "epoch": 6, "backend": "torch", "best": 93.5,
        "metrics": {"val_top1": 93.5}, "config": {"MODEL": {"NAME": "cream14"}}}


def _training_checkpoint(ema=True):
    rng = np.random.default_rng(3)
    model = cream.init_state(SPEC, np.random.default_rng(0))
    for name, array in model.items():  # every tensor distinct from its EMA and from zero
        model[name] = (array + rng.uniform(0.1, 0.2, array.shape)).astype(np.float32)
    averaged = {k: (v + rng.standard_normal(v.shape) * 0.05).astype(np.float32) for k, v in model.items()}
    slots = {"square_avg": {k: np.abs(rng.standard_normal(v.shape)).astype(np.float32) for k, v in model.items()
                            if not k.endswith(("running_mean", "running_var"))}}
    return Checkpoint(model=model, meta=dict(META), ema=averaged if ema else None,
                      optimizer=OptimizerState("rmsproptf", 270, slots, {"alpha": 0.9}),
                      rng={"numpy": {"bit_generator": "PCG64", "state": {"state": 1, "inc": 3}}})


def convert(*args):
    """``tools/main.py convert ...`` in this process; returns (exit code, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main.main(["convert", *map(str, args)])
    return code, out.getvalue()


def row(text, key):
    """The value of one summary row (``  key  value``)."""
    lines = [line.strip()[len(key):].strip() for line in text.splitlines() if line.strip().startswith(key + "  ")]
    assert len(lines) == 1, (key, text)
    return lines[0]


def _same(got, want, what):
    assert sorted(got) == sorted(want), what
    for name, array in want.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape, (what, name)
        assert got[name].tobytes() == array.tobytes(), (what, name)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("carry")
    ckpt = _training_checkpoint()
    path = str(folder / "last.safetensors")
    save_checkpoint(path, ckpt)
    return folder, path, ckpt


DROPPED = ("optimizer state 'weights' (rmsproptf, step 270, {slots} slot tensors), RNG state (numpy), "
           "metadata (backend, best, config, epoch, family, metrics, name)")


@pytest.mark.parametrize("fmt, suffix", [("torch", ".pt"), ("paddle", ".pdparams")])
def test_neutral_with_ema_round_trips_bit_exactly(source, fmt, suffix):
    folder, path, ckpt = source
    out = str(folder / f"c14{suffix}")
    code, text = convert("--from", "neutral", path, "--to", fmt, out)
    assert code == 0, text
    values = sum(a.size for a in ckpt.model.values())
    assert row(text, "tensors") == f"161 ({values:,} values)"
    assert row(text, "EMA tensors") == "161 (as 'state_dict_ema')"
    slots = sum(len(v) for v in ckpt.optimizer.slots.values())
    assert row(text, "not written") == DROPPED.format(slots=f"{slots:,}")
    assert "{'state_dict', 'state_dict_ema'}" in row(text, "to")

    back = str(folder / f"back_from_{fmt}.safetensors")
    code, text = convert("--from", fmt, out, "--to", "neutral", back)
    assert code == 0, text
    assert row(text, "EMA tensors") == "161 (as '__ema__/*')" and row(text, "not written") == "none"
    again = load_checkpoint(back)
    _same(again.model, ckpt.model, f"{fmt} model")
    _same(again.ema, ckpt.ema, f"{fmt} EMA")
    assert again.meta["family"] == "cream" and again.meta["name"] == "cream14"
    assert again.optimizer is None  # reported as not written on the way out


def test_torch_to_paddle_keeps_the_ema(source):
    folder, path, ckpt = source
    pt, pd, back = (str(folder / name) for name in ("chain.pt", "chain.pdparams", "chain.safetensors"))
    assert convert("--from", "neutral", path, "--to", "torch", pt)[0] == 0
    code, text = convert("--from", "torch", pt, "--to", "paddle", pd)
    assert code == 0 and row(text, "EMA tensors") == "161 (as 'state_dict_ema')", text
    assert convert("--from", "paddle", pd, "--to", "neutral", back)[0] == 0
    again = load_checkpoint(back)
    _same(again.model, ckpt.model, "chain model")
    _same(again.ema, ckpt.ema, "chain EMA")


def test_neutral_to_neutral_carries_everything(source):
    folder, path, ckpt = source
    out = str(folder / "copy.safetensors")
    code, text = convert("--from", "neutral", path, "--to", "neutral", out)
    assert code == 0 and row(text, "not written") == "none", text
    again = load_checkpoint(out)
    _same(again.model, ckpt.model, "model")
    _same(again.ema, ckpt.ema, "EMA")
    assert again.optimizer.step == 270 and again.rng == ckpt.rng and again.meta["epoch"] == 6


def test_without_ema_a_plain_state_dict(tmp_path):
    ckpt = _training_checkpoint(ema=False)
    ckpt.optimizer = None
    ckpt.rng = None
    src = str(tmp_path / "plain.safetensors")
    save_checkpoint(src, ckpt)
    for fmt, suffix in (("torch", ".pth"), ("paddle", ".pdparams")):
        out = str(tmp_path / f"plain{suffix}")
        code, text = convert("--from", "neutral", src, "--to", fmt, out)
        assert code == 0, text
        assert row(text, "EMA tensors") == "none" and "(a plain state dict)" in row(text, "to")
        assert row(text, "not written") == "metadata (backend, best, config, epoch, family, metrics, name)"
        code, text = convert("--from", fmt, out, "--to", "neutral", str(tmp_path / f"back_{fmt}.safetensors"))
        assert code == 0, text
        again = load_checkpoint(str(tmp_path / f"back_{fmt}.safetensors"))
        _same(again.model, ckpt.model, fmt)
        assert again.ema is None


def test_the_frameworks_read_what_convert_writes(source):
    """torch.load(weights_only=True) and paddle.load give the EMA back; the EMA logits equal the source's."""
    import paddle
    import torch

    from paddle_impl.backend import Backend as PaddleBackend
    from torch_impl.backend import Backend as TorchBackend

    folder, path, ckpt = source
    pt, pd = str(folder / "fw.pt"), str(folder / "fw.pdparams")
    assert convert("--from", "neutral", path, "--to", "torch", pt)[0] == 0
    assert convert("--from", "neutral", path, "--to", "paddle", pd)[0] == 0
    loaded = torch.load(pt, weights_only=True)
    assert sorted(loaded) == ["state_dict", "state_dict_ema"]
    _same({k: v.numpy() for k, v in loaded["state_dict_ema"].items()}, ckpt.ema, "torch.load EMA")
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    torch_backend = TorchBackend()
    net = torch_backend.build_model("cream", SPEC)
    missing, unexpected = net.load_state_dict(loaded["state_dict_ema"], strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    from_file = torch_backend.eval_logits(net, x)
    torch_backend.load_neutral(net, ckpt.ema, source="source EMA")
    assert np.array_equal(from_file, torch_backend.eval_logits(net, x))

    paddle_backend = PaddleBackend()
    layer = paddle_backend.build_model("cream", SPEC)
    layer.set_state_dict(paddle.load(pd)["state_dict_ema"])
    _same(paddle_backend.state_to_neutral(layer), ckpt.ema, "paddle.load EMA")


def test_convert_needs_no_framework_but_torch_for_writing_torch(source, tmp_path):
    """torch and paddle unimportable: neutral -> paddle -> neutral still works (paddle files are written with numpy
    and pickle); --to torch stops with a one-line error and leaves no file."""
    import subprocess
    import sys

    folder, path, ckpt = source
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shadow = tmp_path / "shadow"
    for name in ("torch", "paddle"):
        (shadow / name).mkdir(parents=True)
        (shadow / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked for this test')\n")
    env = dict(os.environ, PYTHONPATH=str(shadow))
    main = os.path.join(root, "tools", "main.py")

    def run(*args):
        return subprocess.run([sys.executable, main, "convert", *map(str, args)], cwd=root, env=env,
                              capture_output=True, text=True, timeout=300)

    pd, back = tmp_path / "x.pdparams", tmp_path / "x.safetensors"
    for args in (("--from", "neutral", path, "--to", "paddle", pd), ("--from", "paddle", pd, "--to", "neutral", back)):
        proc = run(*args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    again = load_checkpoint(str(back))
    _same(again.model, ckpt.model, "no-framework model")
    _same(again.ema, ckpt.ema, "no-framework EMA")
    proc = run("--from", "neutral", path, "--to", "torch", tmp_path / "x.pt")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "--to torch writes a torch state dict and needs torch installed" in proc.stderr
    assert not (tmp_path / "x.pt").exists()


def test_the_wrong_from_format_names_the_right_one(source, tmp_path):
    folder, path, _ = source
    pd = tmp_path / "w.pdparams"
    assert convert("--from", "neutral", path, "--to", "paddle", pd)[0] == 0
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code, _ = convert("--from", "torch", pd, "--to", "neutral", tmp_path / "w.safetensors")
    assert code == 2
    assert (f"{pd}: --from torch expects a torch.save zip file or legacy torch.save file or safetensors file; the "
            "file is a plain pickle (a Paddle .pdparams) (--from paddle)") in err.getvalue()
    assert not (tmp_path / "w.safetensors").exists()
