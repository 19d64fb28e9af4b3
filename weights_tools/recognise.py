"""Which network a bare state dict belongs to: named with ``--net`` or recognised from its shapes.

Foreign state dicts (torch ``.pth``, Paddle ``.pdparams``) carry no metadata; the converter records the
family and network in the neutral file so later commands know what to build.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

import numpy as np

from common import families
from common.checkpoint import CheckpointError, compare_state


def _candidates(tensors: Mapping[str, np.ndarray]) -> List[Tuple[str, str, Dict[str, tuple]]]:
    """(family, name, expected shapes) for every network this toolkit knows, at the state's class count: each
    family's ``recognition_candidates`` hook (the registry in ``common/families.py``)."""
    return families.recognition_candidates(tensors)


def recognise_net(tensors: Mapping[str, np.ndarray], net: str = "", source: str = "<state>") -> Tuple[str, str]:
    """``(family, name)`` of the network whose names and shapes ``tensors`` has exactly."""
    reasons = []
    wanted = net.lower().replace("-", "").replace("_", "")
    candidates = _candidates(tensors)
    for family, name, shapes in candidates:
        short = name.replace("_", "")
        if wanted and wanted not in (short, short.replace(family.replace("_", ""), "")):  # cream14 or 14
            continue
        report = compare_state(shapes, tensors)
        if report.ok:
            return family, name
        reasons.append(f"  {family}/{name}: {len(report.missing)} missing, {len(report.unexpected)} unexpected, "
                       f"{len(report.mismatched)} wrong-shape tensors")
    if wanted and not reasons:
        known = ", ".join(dict.fromkeys(name for _, name, _ in candidates))
        raise CheckpointError(f"{source}: --net {net!r} is not a network this toolkit knows ({known})")
    raise CheckpointError(f"{source}: the tensors fit no known network{' named ' + net if net else ''}:\n"
                          + "\n".join(dict.fromkeys(reasons)))
