"""Curves: ``common/scalars.ScalarWriter`` writes TensorBoard event files that read back (parsed here from the
TFRecord bytes, checksums included), skips None/NaN/inf, loads no framework; ``tools/main.py plot`` draws
metrics.csv files into a PNG and names what is wrong in one line."""
import glob
import math
import os
import struct
import subprocess
import sys
import textwrap

import pytest

from common.scalars import ScalarWriter
from tools.main import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------- event files, read by hand
def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path):
    """The payloads of a TFRecord file, every length and data checksum verified."""
    with open(path, "rb") as handle:
        blob = handle.read()
    records, pos = [], 0
    while pos < len(blob):
        header = blob[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", blob[pos + 8:pos + 12])
        assert length_crc == masked_crc(header), f"{path}: bad length checksum at byte {pos}"
        data = blob[pos + 12:pos + 12 + length]
        (data_crc,) = struct.unpack("<I", blob[pos + 12 + length:pos + 16 + length])
        assert data_crc == masked_crc(data), f"{path}: bad data checksum at byte {pos}"
        records.append(data)
        pos += 16 + length
    assert pos == len(blob), f"{path}: trailing bytes"
    return records


def read_scalars(logdir):
    """{tag: [(step, value), ...]} from every event file under ``logdir``."""
    from tensorboardX.proto.event_pb2 import Event

    files = sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")))
    assert files, f"no event file in {logdir}"
    scalars = {}
    first = []
    for path in files:
        for index, data in enumerate(read_records(path)):
            event = Event.FromString(data)
            if index == 0:
                first.append(event.file_version)
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    assert all(version.startswith("brain.Event:") for version in first), first
    return scalars


def test_crc32c_reference_vector():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_writer_round_trip_skips_missing_values(tmp_path):
    import numpy as np

    told = []
    with ScalarWriter(str(tmp_path), log=told.append) as writer:
        assert writer.kinds[0] == "tensorboard"
        assert writer.add("train/loss", 2.5, 10) is True
        assert writer.add("train/loss", np.float32(1.25), 20) is True
        assert writer.add("train/loss", None, 30) is False
        assert writer.add("train/loss", float("nan"), 40) is False
        assert writer.add("train/loss", float("inf"), 50) is False
        assert writer.add("train/loss", 0.5, 60) is True
        assert writer.add_many({"val/top1": 81.5, "val/top5": None, "val/loss": float("-inf"), "lr": 3}, step=2) == 2
        writer.flush()
    assert len(told) == 1 and "TensorBoard" in told[0] and str(tmp_path) in told[0], told
    scalars = read_scalars(str(tmp_path / "tensorboard"))
    assert sorted(scalars) == ["lr", "train/loss", "val/top1"]
    assert scalars["train/loss"] == [(10, 2.5), (20, 1.25), (60, 0.5)]
    assert scalars["val/top1"] == [(2, pytest.approx(81.5))]
    assert scalars["lr"] == [(2, 3.0)]
    assert not any(math.isnan(v) for points in scalars.values() for _, v in points)


def test_writer_logger_close_twice_and_bad_value(tmp_path):
    import logging

    class Catch(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    logger = logging.getLogger("twinnas.test_plot")
    logger.setLevel(logging.INFO)
    catch = Catch()
    logger.addHandler(catch)
    try:
        writer = ScalarWriter(str(tmp_path), log=logger)
    finally:
        logger.removeHandler(catch)
    assert len(catch.messages) == 1 and "scalar curves" in catch.messages[0]
    with pytest.raises(ValueError, match="train/loss"):
        writer.add("train/loss", "high", 1)
    writer.add("a", 1.0, 1)
    writer.close()
    writer.close()
    assert writer.add("a", 2.0, 2) is False and writer.kinds == ()  # after close: a no-op, never an error
    assert read_scalars(str(tmp_path / "tensorboard")) == {"a": [(1, 1.0)]}


def test_writer_loads_no_framework(tmp_path):
    """A paddle run must not load torch through tensorboardX (it imports torch when it can)."""
    check = textwrap.dedent(f"""
        import sys
        from common.scalars import ScalarWriter
        with ScalarWriter({str(tmp_path)!r}) as w:
            w.add("x", 1.0, 1)
        print("LOADED", sorted(m for m in ("torch", "paddle", "tensorflow", "torchvision") if m in sys.modules))
        import importlib.util
        print("TORCH_FINDABLE", importlib.util.find_spec("torch") is not None)
    """)
    out = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout
    assert "TORCH_FINDABLE True" in out.stdout, out.stdout  # torch was held out only during the import


def test_visualdl_files_when_installed(tmp_path):
    pytest.importorskip("visualdl")
    with ScalarWriter(str(tmp_path)) as writer:
        assert "visualdl" in writer.kinds
        writer.add("val/top1", 50.0, 1)
    assert os.listdir(tmp_path / "visualdl")


# --------------------------------------------------------------------------------------------------- plot
HEADER = "epoch,lr,train_loss,train_top1,val_loss,val_top1,val_top5,ema_val_top1,images_per_s,epoch_seconds"


def make_run(folder, backend_line=None, config_backend=None, epochs=6, shift=0.0):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [HEADER]
    for epoch in range(1, epochs + 1):
        val = f"{1.0 / epoch + shift:.4f}" if epoch % 2 == 0 else ""  # val measured every other epoch
        rows.append(f"{epoch},{0.1 / epoch:.4f},{2.0 / epoch + shift:.4f},{90 - 40 / epoch - shift:.2f},{val},"
                    f"{80 - 40 / epoch:.2f},{95 - 10 / epoch:.2f},,{500 + epoch},nan")
    (folder / "metrics.csv").write_text("\n".join(rows) + "\n")
    if backend_line:
        (folder / "train.log").write_text("".join(f"2025-01-01 00:00:00 | backend: {b} 1.0 on cpu (float32)\n"
                                                  for b in backend_line))
    if config_backend:
        (folder / "config.yaml").write_text(f"BACKEND: {config_backend}\nSEED: 0\n")
    return folder


def check_png(path, min_size=(400, 300)):
    from PIL import Image

    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1], image.size
        return image.size


def test_plot_two_runs_default_output(tmp_path, capsys):
    a = make_run(tmp_path / "cream14_torch", backend_line=["torch"])
    b = make_run(tmp_path / "cream14_paddle", config_backend="paddle", shift=0.2)
    assert main(["plot", str(a), str(b)]) == 0
    out = a / "curves.png"
    assert str(out) in capsys.readouterr().out
    width, height = check_png(out)
    assert width > height  # 3 columns of subplots
    assert not [p for p in os.listdir(a) if p.endswith(".tmp")]  # the atomic write left nothing behind


def test_plot_selected_metrics_and_out(tmp_path):
    from tools import plot

    a = make_run(tmp_path / "a", backend_line=["torch", "paddle"])  # resumed on the other backend
    b = make_run(tmp_path / "b", epochs=3)
    out = tmp_path / "figs" / "val.png"
    assert main(["plot", str(a), "--metrics", "val_top1, train_loss", "--out", str(out), str(b)]) == 0
    check_png(out, min_size=(300, 200))
    runs = plot.load_runs([str(a), str(b)])
    assert [r.label for r in runs] == ["a (torch→paddle)", "b"]
    # empty columns (ema_val_top1) and all-NaN ones (epoch_seconds) are not drawn by default
    assert plot.choose_metrics(runs, None) == ["lr", "train_loss", "train_top1", "val_loss", "val_top1",
                                               "val_top5", "images_per_s"]
    assert runs[0].series["val_loss"] == [(2.0, 0.5), (4.0, 0.25), (6.0, pytest.approx(1 / 6, abs=1e-4))]


def test_plot_labels_same_folder_names(tmp_path):
    from tools import plot

    a = make_run(tmp_path / "x" / "run")
    b = make_run(tmp_path / "y" / "run")
    labels = [r.label for r in plot.load_runs([str(a), str(b)])]
    assert labels[0] != labels[1] and all(label.endswith("run") for label in labels)


@pytest.mark.parametrize("case, expected", [
    ("missing_folder", "run folder not found"),
    ("no_metrics", "metrics.csv: no such file"),
    ("empty_file", "metrics.csv: empty file"),
    ("header_only", "metrics.csv: no epochs yet"),
    ("unknown_metric", "unknown metric 'val_top9'"),
    ("no_epoch_column", "no 'epoch' column"),
    ("bad_epoch", "line 3: epoch 'two' is not a number"),
    ("bad_out", "--out"),
])
def test_plot_errors_are_one_liners(tmp_path, capsys, case, expected):
    run = tmp_path / "run"
    extra = []
    if case == "missing_folder":
        run = tmp_path / "nowhere"
    elif case == "no_metrics":
        run.mkdir()
    elif case == "empty_file":
        run.mkdir()
        (run / "metrics.csv").write_text("")
    elif case == "header_only":
        run.mkdir()
        (run / "metrics.csv").write_text(HEADER + "\n")
    elif case == "unknown_metric":
        make_run(run)
        extra = ["--metrics", "val_top1,val_top9"]
    elif case == "no_epoch_column":
        run.mkdir()
        (run / "metrics.csv").write_text("step,loss\n1,0.5\n")
    elif case == "bad_epoch":
        run.mkdir()
        (run / "metrics.csv").write_text("epoch,loss\n1,0.5\ntwo,0.4\n")
    elif case == "bad_out":
        make_run(run)
        extra = ["--out", str(tmp_path / "curves.jpeg")]
    assert main(["plot", str(run), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert expected in err, err
    if case not in ("bad_out",):
        assert str(run) in err or case == "unknown_metric"
    if case == "unknown_metric":
        assert "val_top9" in err and "available: lr, train_loss" in err
    assert not (tmp_path / "run" / "curves.png").exists()


def test_plot_cli_help_and_subprocess(tmp_path):
    a = make_run(tmp_path / "a", backend_line=["paddle"])
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "main.py"), "plot", str(a),
                          "--metrics", "val_top1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    check_png(a / "curves.png", min_size=(300, 200))
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "main.py"), "plot", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "RUN_DIR" in out.stdout and "--metrics" in out.stdout
