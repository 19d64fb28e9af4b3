"""The NAS families the toolkit knows, and where each one's spec and twin builders live.

A family is available once its spec module (``common/specs/<family>.py``) and both model builders
(``torch_impl/models/<family>.py``, ``paddle_impl/models/<family>.py``) exist.  Asking for a family
that is not built yet stops with a message that says so; nothing is silently skipped.

Each spec module provides:
  ``spec_from_config(cfg) -> spec``            the network as data, from MODEL.* / DATA.* keys
  ``describe(spec) -> dict``                    genotype / path / code and headline numbers, JSON-able
  ``count_params(spec) -> int``                 trainable parameters, counted from the spec
  ``count_macs(spec, image_size) -> int``       multiply-accumulates at an input size (rule in its docstring)
  ``init_state(spec, rng) -> dict``             initial weights (canonical names, torch layout) from numpy
Each backend model module provides ``build(spec)`` returning a module/layer in eval mode.
"""
from __future__ import annotations

import importlib
from typing import Any

FAMILIES = {
    "cream": ("Cream of the Crop child nets", "common.specs.cream"),
    "pnasnet": ("PNASNet-5 Large / Mobile", "common.specs.pnasnet"),
    "pcdarts": ("PC-DARTS search and evaluation networks", "common.specs.pcdarts"),
    "nasbench_mr": ("NAS-Bench-MR multi-resolution networks and NCP", "common.specs.nasbench_mr"),
}


class FamilyNotAvailable(RuntimeError):
    pass


def spec_module(family: str) -> Any:
    if family not in FAMILIES:
        raise FamilyNotAvailable(f"MODEL.FAMILY {family!r} is unknown; known families: {sorted(FAMILIES)}")
    title, module = FAMILIES[family]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise FamilyNotAvailable(
            f"MODEL.FAMILY {family!r} ({title}) is not built yet in this version; "
            f"available: {', '.join(available_families())}"
        ) from None
    if not hasattr(mod, "spec_from_config"):
        raise FamilyNotAvailable(
            f"MODEL.FAMILY {family!r} ({title}): its spec exists but the model builders are not wired to the "
            f"entry point yet; available: {', '.join(available_families())}"
        )
    return mod


def available_families():
    out = []
    for family, (_, module) in FAMILIES.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        if hasattr(mod, "spec_from_config"):
            out.append(family)
    return out
