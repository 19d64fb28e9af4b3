"""Which network a bare state dict belongs to: named with ``--net`` or recognised from its shapes.

Foreign state dicts (torch ``.pth``, Paddle ``.pdparams``) carry no metadata; the converter records the
family and network in the neutral file so later commands know what to build.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

import numpy as np

from common.checkpoint import CheckpointError, compare_state


def _classifier_width(tensors: Mapping[str, np.ndarray], key: str, default: int) -> int:
    array = tensors.get(key)
    return int(np.shape(array)[0]) if array is not None and np.ndim(array) >= 1 else default


def _candidates(tensors: Mapping[str, np.ndarray]) -> List[Tuple[str, str, Dict[str, tuple]]]:
    """(family, name, expected shapes) for every network this toolkit knows, at the state's class count."""
    out = []
    from common.specs import cream, pnasnet

    classes = _classifier_width(tensors, "classifier.bias", 1000)
    for name in cream.RELEASED_NETS:
        for honour in (False, True):
            spec = cream.released_net_spec(name, honour_single_block_choices=honour, num_classes=classes)
            out.append(("cream", name, cream.expected_state_shapes(spec)))
    classes = _classifier_width(tensors, "last_linear.bias", 1001)
    for name in pnasnet.SPECS:
        spec = pnasnet.get_spec(name, num_classes=classes)
        for with_aux in (False, True):
            out.append(("pnasnet", name, pnasnet.expected_state_shapes(spec, with_aux=with_aux)))
    return out


def recognise_net(tensors: Mapping[str, np.ndarray], net: str = "", source: str = "<state>") -> Tuple[str, str]:
    """``(family, name)`` of the network whose names and shapes ``tensors`` has exactly."""
    reasons = []
    wanted = net.lower().replace("-", "").replace("_", "")
    for family, name, shapes in _candidates(tensors):
        if wanted and wanted not in (name.replace("_", ""), name.replace("_", "").replace("cream", "")):
            continue
        report = compare_state(shapes, tensors)
        if report.ok:
            return family, name
        reasons.append(f"  {family}/{name}: {len(report.missing)} missing, {len(report.unexpected)} unexpected, "
                       f"{len(report.mismatched)} wrong-shape tensors")
    if wanted and not reasons:
        raise CheckpointError(f"{source}: --net {net!r} is not a network this toolkit knows "
                              "(cream14 ... cream604, pnasnet5_large, pnasnet5_mobile)")
    raise CheckpointError(f"{source}: the tensors fit no known network{' named ' + net if net else ''}:\n"
                          + "\n".join(dict.fromkeys(reasons)))
