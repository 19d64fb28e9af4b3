"""pytest bootstrap.

TensorFlow segfaults in this stack when it is imported *before* paddle or torchvision, and pytest
imports every test module into one process.  So paddle and torchvision are imported here first,
when installed, and TensorFlow only ever inside test functions (or in a subprocess).
"""
import importlib
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

for _name in ("paddle", "torch", "torchvision"):
    try:
        importlib.import_module(_name)
    except ImportError:
        pass
