"""The PyTorch backend object the entry point and the training loop talk to.

``paddle_impl/backend.py`` has the same class with the same methods; nothing outside the two
backend packages needs to know which framework runs.
"""
from __future__ import annotations

import importlib
import os
from typing import Mapping, Optional

import numpy as np
import torch

from torch_impl import layout

NAME = "torch"


class Backend:
    name = NAME

    def __init__(self, device: str = "cpu", dtype: str = "float32", threads: Optional[int] = None):
        if device not in ("cpu", "gpu"):
            from common.config import ConfigError

            raise ConfigError(f"DEVICE = {device!r} is not one of ['cpu', 'gpu']")
        if device == "gpu":
            if not torch.cuda.is_available():
                from common.config import ConfigError

                why = ("this torch is a CPU build" if torch.version.cuda is None
                       else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device")
                raise ConfigError(f"DEVICE = 'gpu' but {why}: set DEVICE cpu, or install a CUDA build of torch "
                                  f"on a machine with an NVIDIA GPU")
            # Parity needs IEEE float32 matmuls/convs, not TF32.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            from common.distributed import world_from_env

            local = world_from_env().local_rank  # torchrun: one GPU per process
            torch.cuda.set_device(local)
            self.device = torch.device("cuda", local)
        else:
            self.device = torch.device("cpu")
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        self.dtype_name = dtype
        # Channels-last runs depthwise and 1x1 convs without per-call layout conversions (bench/README.md:
        # +24-42% on Cream training and PNASNet eval on CPU).  float64 parity runs keep plain NCHW.
        self.channels_last = dtype == "float32"
        if threads:
            torch.set_num_threads(int(threads))

    # ----------------------------------------------------------------------------------- processes
    #: the open process group of a multi-process run (``start_distributed``), None in a world of one
    dist = None

    def start_distributed(self, timeout_s: float = 300.0, sync_bn: bool = False):
        """Join the process group the launcher describes (``common/distributed.py``); a world of one: nothing."""
        from common import distributed
        from torch_impl import distributed as group

        self.dist = group.setup(self.device, timeout_s)
        if self.dist is not None:
            self.dist.sync_bn = bool(sync_bn)
        distributed.set_current(self.dist)
        return self.dist

    # ----------------------------------------------------------------------------------- models
    def build_model(self, family: str, spec):
        builder = importlib.import_module(f"torch_impl.models.{family}")
        model = builder.build(spec).to(device=self.device, dtype=self.dtype)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model.eval()

    def state_to_neutral(self, model) -> dict:
        return layout.state_to_neutral(model)

    def load_neutral(self, model, tensors: Mapping[str, np.ndarray], source: str = "<memory>") -> None:
        layout.load_neutral(model, tensors, source)

    def expected_shapes(self, model) -> dict:
        return layout.expected_shapes(model)

    def count_parameters(self, model, trainable_only: bool = True) -> int:
        return layout.count_parameters(model, trainable_only)

    def make_task(self, kind: str, model, cfg, spec=None, for_eval: bool = False):
        """The task ``kind`` (``torch_impl/tasks/<kind>.py``) around ``model``; see ``common/tasks``."""
        module = importlib.import_module(f"torch_impl.tasks.{kind}")
        return module.Task(self, model, cfg, spec, for_eval=for_eval)

    def make_trainer(self, model, cfg, spec=None, for_eval: bool = False):
        """The image-classification task (what ``train`` runs for a child net)."""
        return self.make_task("classification", model, cfg, spec, for_eval=for_eval)

    # ----------------------------------------------------------------------------------- tensors
    def seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def to_tensor(self, array: np.ndarray, dtype=None):
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if tensor.is_floating_point():
            tensor = tensor.to(self.dtype if dtype is None else dtype)
            if self.channels_last and tensor.dim() == 4:
                tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor.to(self.device)

    @staticmethod
    def to_numpy(tensor) -> np.ndarray:
        return tensor.detach().cpu().numpy()

    def eval_logits(self, model, images: np.ndarray) -> np.ndarray:
        """The model's eval-mode output as numpy; a trailing 1x1 map (``[N, C, 1, 1]``) flattened to ``[N, C]``."""
        from torch_impl.tasks.classification import class_logits

        if model.training:  # switching modes walks every submodule; do it only when needed
            model.eval()
        with torch.no_grad():
            return self.to_numpy(class_logits(model(self.to_tensor(images))))

    def describe(self) -> str:
        return f"torch {torch.__version__} on {self.device} ({self.dtype_name}, {torch.get_num_threads()} threads)"


def framework_version() -> str:
    return torch.__version__


def default_threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads()
