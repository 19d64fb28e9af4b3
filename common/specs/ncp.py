"""NCP's accuracy predictor, as data (no framework here).  Facts: ``shared/research/ncp.md`` section 4.

The predictor maps a network's code (the 27-integer NAS-Bench-MR embedding, or NAS-Bench-201's 30-number one-hot)
to its benchmark metrics.  An MLP: a shared trunk ``fc`` = BatchNorm1d(d), Linear(d, 256), BatchNorm1d(256), swish,
Dropout(0.5); then one head per metric group ``nets.{g}`` = Linear(256, 128), BatchNorm1d(128), swish, Dropout(p_g),
Linear(128, |group|); the outputs are concatenated in group order (upstream ``models/mlp.py`` names).

Inputs and outputs are z-scored with statistics over **all** entries of the benchmark table (numpy std, ddof 0),
as upstream.  Those statistics are part of the model here: four buffers (``input_mean``, ``input_std``,
``output_mean``, ``output_std``) the network applies to its raw input, saved in every checkpoint, so a predictor
file is self-contained (upstream keeps them outside its ``best_model.pth``).  The network's output stays
normalised (the loss is taken there, as upstream); :func:`denormalise` maps it back.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Dict, List, Mapping, Optional, Sequence, Tuple


Shape = Tuple[int, ...]

NET_NAMES = ("ncp_predictor",)
HIDDEN = 256
HEAD_HIDDEN = 128
TRUNK_DROPOUT = 0.5
ACTIVATION = "swish"
#: dropout before each head's last Linear, per group (upstream configs: 0.5 for the metric groups, 0 for the costs)
HEAD_DROPOUT = 0.5
STAT_NAMES = ("input_mean", "input_std", "output_mean", "output_std")


@dataclasses.dataclass(frozen=True)
class PredictorSpec:
    setting: str
    input_dim: int
    groups: Tuple[Tuple[str, ...], ...]
    dropouts: Tuple[float, ...]          # one per group
    input_mean: Tuple[float, ...]
    input_std: Tuple[float, ...]
    output_mean: Tuple[float, ...]
    output_std: Tuple[float, ...]
    name: str = "ncp_predictor"

    @property
    def metrics(self) -> Tuple[str, ...]:
        return tuple(m for group in self.groups for m in group)

    @property
    def main_metric(self) -> str:
        return self.groups[0][0]

    @property
    def output_dim(self) -> int:
        return len(self.metrics)


def head_dropouts(groups: Sequence[Sequence[str]]) -> Tuple[float, ...]:
    """Upstream's ``layer2_drop_ratio``: 0.5 for every metric group, 0 for the cost group (flops / params)."""
    return tuple(0.0 if {m.lower() for m in g} <= {"flops", "params"} else HEAD_DROPOUT for g in groups)


@functools.lru_cache(maxsize=16)
def _table_stats(setting: str, root: str):
    from common.data import nasbench_mr as tables

    table = tables.load_table(setting, root or None)
    in_mean, in_std = tables.zscore_stats(table.features)
    out_mean, out_std = tables.zscore_stats(table.targets)
    return (table.features.shape[1], tables.METRIC_GROUPS[setting],
            tuple(map(float, in_mean)), tuple(map(float, in_std)), tuple(map(float, out_mean)),
            tuple(map(float, out_std)))


def predictor_spec(setting: str, root: str = "") -> PredictorSpec:
    """The predictor of a benchmark setting (``seg``, ``cls-50-1000``, ..., ``nas-bench-201``), its statistics
    computed from that table (``root``: the tables' folder; default the project's ``data/nasbench_mr``)."""
    dim, groups, in_mean, in_std, out_mean, out_std = _table_stats(str(setting), str(root or ""))
    groups = tuple(tuple(g) for g in groups)
    return PredictorSpec(str(setting), int(dim), groups, head_dropouts(groups), in_mean, in_std, out_mean, out_std)


# ---- state rows: name -> (kind, shape, groups, weight shape or None)
_Row = Tuple[str, Shape, int, Optional[Shape]]


def _linear(rows: Dict[str, _Row], prefix: str, c_in: int, c_out: int) -> None:
    rows[f"{prefix}.weight"] = ("linear.weight", (c_out, c_in), 1, (c_out, c_in))
    rows[f"{prefix}.bias"] = ("linear.bias", (c_out,), 1, (c_out, c_in))


def _bn(rows: Dict[str, _Row], prefix: str, c: int) -> None:
    for leaf, kind in (("weight", "bn.weight"), ("bias", "bn.bias"), ("running_mean", "bn.running_mean"),
                       ("running_var", "bn.running_var")):
        rows[f"{prefix}.{leaf}"] = (kind, (c,), 1, None)


def _state_rows(spec: PredictorSpec) -> Dict[str, _Row]:
    rows: Dict[str, _Row] = {}
    _bn(rows, "fc.0", spec.input_dim)
    _linear(rows, "fc.1", spec.input_dim, HIDDEN)
    _bn(rows, "fc.2", HIDDEN)
    for g, group in enumerate(spec.groups):
        _linear(rows, f"nets.{g}.0", HIDDEN, HEAD_HIDDEN)
        _bn(rows, f"nets.{g}.1", HEAD_HIDDEN)
        _linear(rows, f"nets.{g}.4", HEAD_HIDDEN, len(group))
    for name, n in zip(STAT_NAMES, (spec.input_dim, spec.input_dim, spec.output_dim, spec.output_dim)):
        rows[name] = ("stat", (n,), 1, None)
    return rows


def expected_state_shapes(spec: PredictorSpec) -> Dict[str, Shape]:
    """Upstream ``MLP`` names (``fc.{0,1,2}``, ``nets.{g}.{0,1,4}``) plus the four statistics buffers."""
    return {name: row[1] for name, row in _state_rows(spec).items()}


def param_kinds(spec: PredictorSpec) -> Dict[str, "object"]:
    from common import init as I

    return {name: I.ParamSpec(kind, shape, groups, wshape)
            for name, (kind, shape, groups, wshape) in _state_rows(spec).items() if kind != "stat"}


def count_params(spec: PredictorSpec) -> int:
    """Trainable parameters (Linear weights and biases, BN weight and bias): 107,706 for a classification / video
    setting, 107,835 for segmentation (upstream's count)."""
    total = 0
    for kind, shape, _, _ in _state_rows(spec).values():
        if kind in ("linear.weight", "linear.bias", "bn.weight", "bn.bias"):
            n = 1
            for d in shape:
                n *= d
            total += n
    return total


def count_macs(spec: PredictorSpec, image_size=None) -> int:
    """Multiply-adds of one prediction (the Linear layers)."""
    return spec.input_dim * HIDDEN + sum(HIDDEN * HEAD_HIDDEN + HEAD_HIDDEN * len(g) for g in spec.groups)


INIT_RULE = "torch_default"


def stats_state(spec: PredictorSpec, dtype=None) -> Dict[str, "object"]:
    import numpy as np

    dt = np.float32 if dtype is None else dtype
    return {name: np.asarray(getattr(spec, name), dtype=dt) for name in STAT_NAMES}


def init_state(spec: PredictorSpec, rng, dtype=None) -> Dict[str, "object"]:
    """PyTorch's default initialisers (upstream sets none), BN 1 / 0, and the table's statistics."""
    import numpy as np

    from common import init as I

    out = I.init_state(param_kinds(spec), INIT_RULE, rng, dtype=np.float32 if dtype is None else dtype)
    out.update(stats_state(spec, dtype))
    return out


def optional_state(spec: PredictorSpec) -> Tuple[str, ...]:
    """An upstream ``best_model.pth`` has no statistics: they come from the table (:func:`init_state`)."""
    return STAT_NAMES


def denormalise(spec: PredictorSpec, outputs):
    """Normalised predictions ``[n, metrics]`` -> the benchmark's units."""
    import numpy as np

    return np.asarray(outputs, dtype=np.float64) * np.asarray(spec.output_std) + np.asarray(spec.output_mean)


def normalise_targets(spec: PredictorSpec, targets):
    import numpy as np

    return (np.asarray(targets, dtype=np.float64) - np.asarray(spec.output_mean)) / np.asarray(spec.output_std)


def check_weights(spec: PredictorSpec, tensors: Mapping[str, object], source: str) -> None:
    """A predictor checkpoint's statistics must be the table's: a predictor trained on another setting (or another
    table) would read codes on the wrong scale; the error names the file and the buffer.  ``build_with_weights``
    calls it for every MODEL.WEIGHTS it loads."""
    import numpy as np

    for name in STAT_NAMES:
        if name not in tensors:
            continue
        have, want = np.asarray(tensors[name], dtype=np.float64), np.asarray(getattr(spec, name))
        if have.shape != want.shape:
            raise ValueError(f"{source}: its {name} holds {have.size} values, the {spec.setting!r} predictor "
                             f"(NCP.SETTING) {want.size}: it predicts another setting's metrics")
        if not np.allclose(have, want, rtol=1e-6, atol=1e-9):
            raise ValueError(f"{source}: its {name} differs from the statistics of the {spec.setting!r} table "
                             f"(NCP.SETTING); was it trained on another setting?")


def spec_from_config(cfg) -> PredictorSpec:
    """``MODEL.NAME ncp_predictor``: the predictor of ``NCP.SETTING`` (a benchmark table of ``NCP.TABLES``, default
    the project's ``data/nasbench_mr``); ``DATA.DATASET`` must be ``nasbench_mr``."""
    raw = str(cfg.MODEL.NAME).strip()
    if raw not in NET_NAMES:
        raise ValueError(f"MODEL.NAME = {raw!r} is not an NCP network; expected one of {', '.join(NET_NAMES)}")
    from common.data import nasbench_mr as tables

    setting = str(cfg.NCP.SETTING)
    if setting not in tables.SETTINGS:
        raise ValueError(f"NCP.SETTING = {setting!r} is not a benchmark setting; expected one of "
                         f"{', '.join(tables.SETTINGS)}")
    if str(cfg.DATA.DATASET) != "nasbench_mr":
        raise ValueError(f"DATA.DATASET = {cfg.DATA.DATASET!r}: the predictor learns from the benchmark tables; "
                         "set DATA.DATASET nasbench_mr")
    return predictor_spec(setting, str(cfg.NCP.TABLES))


def describe(spec: PredictorSpec) -> Dict[str, object]:
    return {
        "name": spec.name,
        "setting": spec.setting,
        "input_dim": spec.input_dim,
        "groups": [list(g) for g in spec.groups],
        "main_metric": spec.main_metric,
        "layers": (f"fc: BN({spec.input_dim}) Linear({spec.input_dim},{HIDDEN}) BN({HIDDEN}) {ACTIVATION} "
                   f"Dropout({TRUNK_DROPOUT}); per group: Linear({HIDDEN},{HEAD_HIDDEN}) BN({HEAD_HIDDEN}) "
                   f"{ACTIVATION} Dropout(p) Linear({HEAD_HIDDEN},|group|)"),
        "head_dropouts": list(spec.dropouts),
        "params": count_params(spec),
        "macs": {"rule": "linear multiply-adds", "linear": count_macs(spec)},
    }


def commands_for(spec: PredictorSpec) -> Tuple[str, ...]:
    return ("train", "test", "search")


def command_hint(spec: PredictorSpec, command: str) -> str:
    return "(train it with `train`, score it with `test`, propagate codes through it with `search`)"


def recognition_candidates(tensors: Mapping[str, object]) -> List[Tuple[str, Dict[str, Shape]]]:
    """Every setting's predictor whose shapes ``tensors`` could be (with and without the statistics buffers)."""
    from common.data import nasbench_mr as tables

    if "fc.1.weight" not in tensors or "nets.0.0.weight" not in tensors:
        return []
    out = []
    for setting in tables.SETTINGS:
        try:
            spec = predictor_spec(setting)
        except (OSError, ValueError):
            continue
        shapes = expected_state_shapes(spec)
        out.append((f"ncp_predictor {setting}", shapes))
        out.append((f"ncp_predictor {setting} (upstream, no statistics)",
                    {n: s for n, s in shapes.items() if n not in STAT_NAMES}))
    return out


__all__ = ["PredictorSpec", "predictor_spec", "head_dropouts", "expected_state_shapes", "param_kinds",
           "count_params", "count_macs", "init_state", "stats_state", "optional_state", "denormalise",
           "normalise_targets", "check_weights", "spec_from_config", "describe", "commands_for", "recognition_candidates"]
