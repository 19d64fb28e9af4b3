"""A test-only search task for ``common/engine.Loop``: two optimizers, two data streams, ``extra`` state.

The network mixes two linear branches on the flattened 8x8 digit scans with ``softmax(alphas)``: the weights
(``branch0``/``branch1``, SGD from ``OPTIM``) learn on the ``train`` stream, the architecture parameter
(``alphas``, Adam from ``ARCH_OPTIM``) on the ``search`` stream (the validation split), the DARTS alternation in
miniature.  ``extra`` keeps the chosen branch of every epoch (a genotype history) and the number of architecture
steps, and must survive a kill.  Twins for torch and paddle; run as a script, it trains into a run folder with
``RESUME auto`` (the kill test starts and SIGKILLs it):

    python tests/toy_search.py --backend torch --run-dir D [--epochs 8] [--kill-in-save N]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from common.checkpoint import Checkpoint, CheckpointError  # noqa: E402
from common.tasks import NonFiniteError, TaskBase  # noqa: E402

FEATURES = 64  # 8x8 digits, one channel


def toy_config(run_dir: str = "", epochs: int = 8, extra=()):
    from common.config import load_config

    return load_config(None, [
        "MODEL.FAMILY", "cream", "MODEL.NAME", "toy_search", "MODEL.NUM_CLASSES", "10",
        "DATA.DATASET", "builtin_digits", "DATA.IMAGE_SIZE", "8", "DATA.CHANNELS", "1", "DATA.MEAN", "[0.5]",
        "DATA.STD", "[0.5]", "DATA.BATCH_SIZE", "16", "DATA.NUM_VAL", "96", "AUG.HFLIP", "0.0",
        "AUG.INTERPOLATION", "bilinear", "OPTIM.LR", "0.05", "OPTIM.WEIGHT_DECAY", "1e-4", "SCHED.NAME", "cosine",
        "TRAIN.EPOCHS", str(epochs), "TRAIN.MAX_STEPS_PER_EPOCH", "4", "TRAIN.LOG_INTERVAL", "2",
        "TRAIN.KEEP_CHECKPOINTS", "2", "RESUME", "auto", "THREADS", "1", *extra])


class ToySearch(TaskBase):
    kind = "toy_search"
    streams = ("train", "search")
    optimizer_nodes = {"weights": "OPTIM", "arch": "ARCH_OPTIM"}
    train_stats = ("loss", "arch_loss")
    eval_stats = ("loss", "top1")
    stat_scale = {"top1": 100.0}

    def __init__(self):
        self.extra = {"chosen": [], "arch_steps": 0}

    def score_key(self):
        return "val_top1"

    def extra_fields(self):
        return ("alpha0",)

    def epoch_end(self, epoch):
        alphas = self.alphas()
        self.extra["chosen"].append(int(np.argmax(alphas)))
        return {"alpha0": float(alphas[0])}

    def to_checkpoint(self) -> Checkpoint:
        ckpt = super().to_checkpoint()  # the network and both optimizers (common/tasks)
        ckpt.extra = {"chosen": list(self.extra["chosen"]), "arch_steps": int(self.extra["arch_steps"])}
        return ckpt

    def load_checkpoint(self, ckpt: Checkpoint, source: str = "<memory>") -> None:
        if set(ckpt.extra) != {"chosen", "arch_steps"}:
            raise CheckpointError(f"{source}: no toy-search extra state")
        super().load_checkpoint(ckpt, source)
        self.extra = {"chosen": list(ckpt.extra["chosen"]), "arch_steps": int(ckpt.extra["arch_steps"])}


def torch_task(backend, cfg):
    import torch

    from torch_impl import layout, losses, optim

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.branch0 = torch.nn.Linear(FEATURES, 10)
            self.branch1 = torch.nn.Linear(FEATURES, 10)
            self.alphas = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))

        def forward(self, x):
            x = x.reshape(x.shape[0], -1)
            w = torch.softmax(self.alphas, 0).to(x.dtype)
            return w[0] * self.branch0(x) + w[1] * self.branch1(x)

    class Task(ToySearch):
        def __init__(self):
            super().__init__()
            self.net = Net().to(torch.float64)
            init = toy_init(cfg.SEED)
            layout.load_neutral(self.net, init, "toy init")
            named = layout.trainable_named_parameters(self.net)
            self.backend, self.model = backend, self.net
            self.opt = self.optimizers = {
                "weights": optim.build_optimizer(cfg, [(n, p) for n, p in named if n != "alphas"]),
                "arch": optim.build_optimizer(cfg, [(n, p) for n, p in named if n == "alphas"], node="ARCH_OPTIM")}

        def alphas(self):
            return self.net.alphas.detach().numpy().copy()

        def _loss(self, batch):
            x = torch.from_numpy(np.asarray(batch[0], np.float64))
            y = torch.from_numpy(np.asarray(batch[1], np.int64))
            return losses.cross_entropy(self.net(x), y)

        def train_step(self, batches, lrs, step):
            arch_loss = self._loss(batches["search"])  # the architecture step first, on the search stream
            self.opt["arch"].zero_grad()
            arch_loss.backward()
            self.opt["arch"].step(lrs["arch"])
            self.extra["arch_steps"] += 1
            loss = self._loss(batches["train"])
            if not bool(torch.isfinite(loss)):
                raise NonFiniteError(f"non-finite loss ({float(loss)})")
            self.opt["weights"].zero_grad()
            loss.backward()
            self.opt["weights"].step(lrs["weights"])
            return {"loss": float(loss), "arch_loss": float(arch_loss), "count": len(batches["train"][1])}

        def eval_batch(self, images, labels, variant):
            with torch.no_grad():
                logits = self.net(torch.from_numpy(np.asarray(images, np.float64)))
                y = torch.from_numpy(np.asarray(labels, np.int64))
                n = len(labels)
                (top1,) = losses.accuracy_topk(logits, y, ks=(1,))
                return {"loss": float(losses.cross_entropy(logits, y)) * n, "top1": float(top1) * n / 100.0,
                        "count": n, "nonfinite": int((~torch.isfinite(logits).all(dim=1)).sum())}


    return Task()


def paddle_task(backend, cfg):
    import paddle

    from paddle_impl import layout, losses, optim

    class Net(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.branch0 = paddle.nn.Linear(FEATURES, 10)
            self.branch1 = paddle.nn.Linear(FEATURES, 10)
            self.alphas = self.create_parameter([2], dtype="float64",
                                                default_initializer=paddle.nn.initializer.Constant(0.0))

        def forward(self, x):
            x = x.reshape([x.shape[0], -1])
            w = paddle.nn.functional.softmax(self.alphas, 0).astype(x.dtype)
            return w[0] * self.branch0(x) + w[1] * self.branch1(x)

    class Task(ToySearch):
        def __init__(self):
            super().__init__()
            previous = paddle.get_default_dtype()
            paddle.set_default_dtype("float64")
            try:
                self.net = Net()
            finally:
                paddle.set_default_dtype(previous)
            layout.load_neutral(self.net, toy_init(cfg.SEED), "toy init")
            named = layout.trainable_named_parameters(self.net)
            self.backend, self.model = backend, self.net
            self.opt = self.optimizers = {
                "weights": optim.build_optimizer(cfg, [(n, p) for n, p in named if n != "alphas"], model=self.net),
                "arch": optim.build_optimizer(cfg, [(n, p) for n, p in named if n == "alphas"], model=self.net,
                                              node="ARCH_OPTIM")}

        def alphas(self):
            return self.net.alphas.numpy().copy()

        def _loss(self, batch):
            x = paddle.to_tensor(np.asarray(batch[0], np.float64))
            y = paddle.to_tensor(np.asarray(batch[1], np.int64))
            return losses.cross_entropy(self.net(x), y)

        def train_step(self, batches, lrs, step):
            arch_loss = self._loss(batches["search"])
            self.opt["arch"].zero_grad()
            arch_loss.backward()
            self.opt["arch"].step(lrs["arch"])
            self.extra["arch_steps"] += 1
            loss = self._loss(batches["train"])
            if not bool(paddle.isfinite(loss).all()):
                raise NonFiniteError(f"non-finite loss ({float(loss)})")
            self.opt["weights"].zero_grad()
            loss.backward()
            self.opt["weights"].step(lrs["weights"])
            return {"loss": float(loss), "arch_loss": float(arch_loss), "count": len(batches["train"][1])}

        def eval_batch(self, images, labels, variant):
            with paddle.no_grad():
                logits = self.net(paddle.to_tensor(np.asarray(images, np.float64)))
                y = paddle.to_tensor(np.asarray(labels, np.int64))
                n = len(labels)
                (top1,) = losses.accuracy_topk(logits, y, ks=(1,))
                bad = int(paddle.logical_not(paddle.isfinite(logits).all(axis=1)).astype("int64").sum())
                return {"loss": float(losses.cross_entropy(logits, y)) * n, "top1": float(top1) * n / 100.0,
                        "count": n, "nonfinite": bad}


    return Task()


def toy_init(seed: int):
    rng = np.random.default_rng(seed)
    init = {f"branch{i}.{k}": (rng.standard_normal(shape) * 0.05).astype(np.float64)
            for i in range(2) for k, shape in (("weight", (10, FEATURES)), ("bias", (10,)))}
    init["alphas"] = np.zeros(2, np.float64)
    return init


def run(backend_name: str, run_dir: str, epochs: int = 8, extra=()):
    """Train the toy search into ``run_dir`` (resuming what is there); returns the final checkpoint path."""
    import importlib

    from common import engine
    from common.data.build import build_dataset, build_loader

    cfg = toy_config(run_dir, epochs, extra)
    backend = importlib.import_module(f"{backend_name}_impl.backend").Backend(dtype="float64", threads=1)
    task = (torch_task if backend_name == "torch" else paddle_task)(backend, cfg)
    engine.prepare_run_dir(run_dir, cfg.RESUME)
    train_set, search_set = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    streams = {"train": build_loader(cfg, "train", dataset=train_set),
               # the search stream: the validation split, shuffled like a training stream
               "search": build_loader(cfg, "train", dataset=search_set)}
    val = build_loader(cfg, "val", dataset=search_set)
    loop = engine.Loop(cfg, backend, task, run_dir, streams, engine.build_schedules(cfg, task), val,
                       logger=engine.get_logger(run_dir, "train"))
    loop.run()
    return os.path.join(run_dir, "last.safetensors")


def _kill_in_save(count: int) -> None:
    """SIGKILL this process in the middle of its ``count``-th checkpoint write (after part of the bytes)."""
    import signal

    from common import checkpoint as ckpt_mod
    from common import engine

    real = ckpt_mod.save_checkpoint
    calls = {"n": 0}

    def save(path, ckpt):
        calls["n"] += 1
        if calls["n"] == count:
            from common.io_utils import atomic_path

            with atomic_path(path) as tmp:  # half-written temporary files, then the kill
                # safetensors writes through its own ``.tmpXXXXXX`` next to the target, then renames it
                with open(os.path.join(os.path.dirname(tmp), ".tmpK1ll3d"), "wb") as inner:
                    inner.write(b"\0" * 4096)
                with open(tmp, "wb") as handle:
                    handle.write(b"\0" * 4096)
                    handle.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
        return real(path, ckpt)

    engine.save_checkpoint = save


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("torch", "paddle"), required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--kill-in-save", type=int, default=0, help="SIGKILL during the N-th checkpoint write")
    args = parser.parse_args()
    if args.backend == "paddle":
        import paddle  # noqa: F401,F811  (before anything that might pull in TF)
    if args.kill_in_save:
        _kill_in_save(args.kill_in_save)
    run(args.backend, args.run_dir, args.epochs)
