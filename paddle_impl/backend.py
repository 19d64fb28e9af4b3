"""The PaddlePaddle backend object the entry point and the training loop talk to.

Twin of ``torch_impl/backend.py``: same class, same methods.
"""
from __future__ import annotations

import importlib
import os
from typing import Mapping, Optional

import numpy as np
import paddle

from paddle_impl import layout

NAME = "paddle"


class Backend:
    name = NAME

    def __init__(self, device: str = "cpu", dtype: str = "float32", threads: Optional[int] = None):
        if device not in ("cpu", "gpu"):
            from common.config import ConfigError

            raise ConfigError(f"DEVICE = {device!r} is not one of ['cpu', 'gpu']")
        if device == "gpu":
            from common.config import ConfigError

            if not paddle.device.is_compiled_with_cuda():
                raise ConfigError("DEVICE = 'gpu' but this paddle is a CPU build: set DEVICE cpu, or install "
                                  "paddlepaddle-gpu on a machine with an NVIDIA GPU")
            if paddle.device.cuda.device_count() < 1:
                raise ConfigError("DEVICE = 'gpu' but paddle sees no CUDA device: set DEVICE cpu, or run on a "
                                  "machine with an NVIDIA GPU")
            paddle.set_device("gpu")
        else:
            paddle.set_device("cpu")
        self.device = paddle.get_device()
        self.dtype_name = dtype
        self.dtype = {"float32": paddle.float32, "float64": paddle.float64}[dtype]
        if threads:
            paddle.base.core.set_num_threads(int(threads))  # CPU math threads (oneDNN / OpenMP)

    # ----------------------------------------------------------------------------------- processes
    #: the open process group of a multi-process run (``start_distributed``), None in a world of one
    dist = None

    def start_distributed(self, timeout_s: float = 300.0, sync_bn: bool = False):
        """Join the process group the launcher describes (``common/distributed.py``); a world of one: nothing."""
        from common import distributed
        from paddle_impl import distributed as group

        self.dist = group.setup(self.device, timeout_s)
        if self.dist is not None:
            self.dist.sync_bn = bool(sync_bn)
        distributed.set_current(self.dist)
        return self.dist

    # ----------------------------------------------------------------------------------- models
    def build_model(self, family: str, spec):
        builder = importlib.import_module(f"paddle_impl.models.{family}")
        previous = paddle.get_default_dtype()
        paddle.set_default_dtype(self.dtype_name)  # parameters are created in the run's dtype
        try:
            model = builder.build(spec)
        finally:
            paddle.set_default_dtype(previous)
        model.eval()
        return model

    def state_to_neutral(self, model) -> dict:
        return layout.state_to_neutral(model)

    def load_neutral(self, model, tensors: Mapping[str, np.ndarray], source: str = "<memory>") -> None:
        layout.load_neutral(model, tensors, source)

    def expected_shapes(self, model) -> dict:
        return layout.expected_shapes(model)

    def count_parameters(self, model, trainable_only: bool = True) -> int:
        return layout.count_parameters(model, trainable_only)

    def make_task(self, kind: str, model, cfg, spec=None, for_eval: bool = False):
        """The task ``kind`` (``paddle_impl/tasks/<kind>.py``) around ``model``; see ``common/tasks``."""
        module = importlib.import_module(f"paddle_impl.tasks.{kind}")
        return module.Task(self, model, cfg, spec, for_eval=for_eval)

    def make_trainer(self, model, cfg, spec=None, for_eval: bool = False):
        """The image-classification task (what ``train`` runs for a child net)."""
        return self.make_task("classification", model, cfg, spec, for_eval=for_eval)

    # ----------------------------------------------------------------------------------- tensors
    def seed(self, seed: int) -> None:
        paddle.seed(seed)

    def to_tensor(self, array: np.ndarray, dtype=None):
        array = np.ascontiguousarray(array)
        if np.issubdtype(array.dtype, np.floating):
            array = array.astype(self.dtype_name if dtype is None else dtype, copy=False)
        return paddle.to_tensor(array)

    @staticmethod
    def to_numpy(tensor) -> np.ndarray:
        return tensor.numpy()

    def eval_logits(self, model, images: np.ndarray) -> np.ndarray:
        """The model's eval-mode output as numpy; a trailing 1x1 map (``[N, C, 1, 1]``) flattened to ``[N, C]``."""
        from paddle_impl.tasks.classification import class_logits

        if model.training:  # switching modes walks every submodule; do it only when needed
            model.eval()
        with paddle.no_grad():
            return self.to_numpy(class_logits(model(self.to_tensor(images))))

    def describe(self) -> str:
        return f"paddle {paddle.__version__} on {self.device} ({self.dtype_name})"


def framework_version() -> str:
    return paddle.__version__


def default_threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS", "0")) or (os.cpu_count() or 1)
