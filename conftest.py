"""pytest bootstrap.

TensorFlow segfaults in this stack when it is imported *before* paddle or torchvision, and pytest
imports every test module into one process.  So paddle and torchvision are imported here first,
when installed, and TensorFlow only ever inside test functions (or in a subprocess).

Shared test helpers (one definition for every test module):
  ``one_torch_thread``         module-scoped fixture: torch runs with one intra-op thread for the module, then the
                               previous count is restored; a module asks for it with
                               ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
  ``paddle_default_dtype(d)``  context manager: paddle's default dtype is ``d`` inside, the previous one after.
                               ``from conftest import paddle_default_dtype`` (a plain helper, also called from
                               non-test functions).
"""
import contextlib
import importlib
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

for _name in ("paddle", "torch", "torchvision"):
    try:
        importlib.import_module(_name)
    except ImportError:
        pass


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors on a shared 2-core machine: torch's second intra-op thread spin-waits against the other
    processes and only adds contention (measured 8-19 s per backend-dtype run of the tiny Cream net with 2
    threads, 0.9 s with 1).  One thread for the module, then the previous count again."""
    try:
        import torch
    except ImportError:  # a paddle-only install: nothing to pin
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def paddle_default_dtype(dtype: str):
    """Paddle layers and tensors created inside get ``dtype`` (e.g. ``"float64"``); the previous default after."""
    import paddle

    old = paddle.get_default_dtype()
    paddle.set_default_dtype(dtype)
    try:
        yield
    finally:
        paddle.set_default_dtype(old)
