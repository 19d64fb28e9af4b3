"""Third columns of ``tools/main.py parity``: a reference implementation's outputs, per family.

The parity harness (:func:`parity_tests.harness.run_from_config`) compares both backends with each other and, when
the config's family has an entry in :data:`REFERENCES`, with a third column: ``reference(cfg, spec, weights, images)``
returns ``{"name", "arrays", "stage", "rel_tol", "note"}`` (see :class:`parity_tests.harness.Reference`) or None (no
column, with a printed note).  They live here, next to the harness, because they reach into ``weights_tools`` and
foreign frameworks, which ``common/`` never imports.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Callable, Dict, Optional

import numpy as np


def pnasnet_tf_reference(cfg, spec, weights, images):
    """The TensorFlow column of ``tools/main.py parity``: the official-name TF graph's eval outputs on ``images``.

    ``weights`` (canonical float64 arrays) are written as a float64 TF checkpoint by
    ``weights_tools.pnasnet_convert.export_tf_checkpoint`` and run in a float64 TF subprocess (TensorFlow is never
    imported here); the outputs (``conv0_bn``, every cell, ``global_pool``, ``logits``) come back NCHW, keyed by the
    module names.  Compared in both dtype runs with ``max_rel <= 1e-5`` (float64 runs land near 1e-13;
    ``parity_tests/test_pnasnet_parity.py`` holds the strict float64 / float32 bounds).  ``PNASNET.PARITY_TF False``
    or a missing TensorFlow leaves the column out (returns None, with a note).
    """
    section = cfg.PNASNET if "PNASNET" in cfg else None
    if section is not None and not bool(section.PARITY_TF):
        return None
    if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("tf_slim") is None:
        print("parity: tensorflow / tf_slim not installed: no TensorFlow column")
        return None
    if spec.in_channels != 3:
        print(f"parity: the TF reference takes RGB input, DATA.CHANNELS is {spec.in_channels}: no TensorFlow column")
        return None
    from weights_tools import pnasnet_convert  # numpy + a TF subprocess (TF is never imported here)

    arrays = pnasnet_convert.tf_reference_outputs(spec, weights, {"x": np.asarray(images)}, dtype="float64")["x"]
    return {"name": "tensorflow", "arrays": arrays, "stage": "eval_forward", "rel_tol": 1e-5,
            "note": "(TF-slim-named float64 graph in a subprocess, weights via export_tf_checkpoint)"}


#: MODEL.FAMILY -> reference column
REFERENCES: Dict[str, Callable[..., Any]] = {
    "pnasnet": pnasnet_tf_reference,
}


def reference_for(family: str) -> Optional[Callable[..., Any]]:
    """The reference column of ``family``, or None when it has none."""
    return REFERENCES.get(family)
