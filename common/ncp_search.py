"""Network Coding Propagation (NCP): gradient steps on a network's code through frozen accuracy predictors.
Framework-free; the gradient comes from the backend twin (``<backend>_impl/tasks/ncp_search.py``: ``Propagator``).
Facts: ``shared/research/ncp.md`` section 5.

The search variable is the z-scored 27-number code ``z = (code - input_mean) / input_std`` of the main predictor
(``MODEL.WEIGHTS``, trained by ``train configs/ncp_predictor_<setting>.yaml``).  Every iteration:

1. the objective ``J(z) = sum_k w_k * pred_k(z)`` over the configured terms (``NCP.OBJECTIVES``: ``metric=weight``;
   a positive weight raises that normalised prediction, a negative one lowers it; ``NCP.EXTRA_PREDICTORS`` add other
   tasks' predictors' main metrics, e.g. seg + video for the paper's inter-task search) and its gradient at ``z``;
   each predictor runs in eval mode (BN statistics, no dropout) on the code in its own normalisation;
2. ``z <- z + NCP.LR * grad J`` (upstream: SGD lr 3 on ``L1(main, main + 0.1) + 0.5 * L1(flops, flops - 0.1)``, i.e.
   ``z + 3 grad(main) - 1.5 grad(flops)``: weights ``main=1, flops=-0.5``);
3. ``z`` is clamped to the search space's box (outside autograd; upstream's in-graph clamp crashes on torch 2);
4. the code is de-normalised and rounded to the nearest valid network (:func:`common.specs.nasbench_mr.
   round_embedding`: widths to multiples of 8, counts to integers), whose FLOPs and parameters are counted with
   the benchmark's rule (:func:`common.specs.nasbench_mr.table_counts`) and whose metrics are predicted.

Beyond upstream: **budgets** (``NCP.MAX_FLOPS`` GMACs, ``NCP.MAX_PARAMS`` millions, the benchmark's counting): while
the rounded code is over a budget, that cost's prediction gets an extra ``-NCP.BUDGET_WEIGHT`` in the objective, and
the returned code is the best *within* the budgets (none found: an error, never an over-budget answer).  The
returned code is the iteration's rounded code with the highest objective (the same weighted sum, predicted on the
rounded code); the whole trajectory is kept (``trajectory.json``, ``trajectory.png``).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from common.specs import nasbench_mr as MR
from common.specs import ncp as P

COST_METRICS = ("flops", "params")


class NCPError(ValueError):
    """A search setting a user can fix (the message names the key)."""


@dataclasses.dataclass(frozen=True)
class Term:
    predictor: int       # 0 = the main predictor (MODEL.WEIGHTS), 1.. = NCP.EXTRA_PREDICTORS
    metric: str
    index: int           # output column of that predictor
    weight: float


@dataclasses.dataclass
class Step:
    iteration: int
    continuous: List[float]
    rounded: List[int]
    code: str
    predicted: Dict[str, float]        # main predictor's metrics of the rounded code (benchmark units)
    extra_predicted: List[Dict[str, float]]
    flops: float                       # GMACs, counted (benchmark rule)
    params: float                      # millions, counted
    objective: float                   # the weighted sum, predicted on the rounded code
    within_budget: bool
    clamped: int                       # coordinates the box clamp moved this iteration


def parse_terms(texts: Sequence[str], specs: Sequence[P.PredictorSpec], key: str = "NCP.OBJECTIVES") -> List[Term]:
    """``["mIoU=1", "flops=-0.5"]`` for the main predictor; every extra predictor adds ``its main metric=weight``
    through :func:`extra_terms`.  Errors name the key and the allowed metrics."""
    main = specs[0]
    terms = []
    for text in texts:
        name, sep, value = str(text).partition("=")
        name = name.strip()
        if not sep or name not in main.metrics:
            raise NCPError(f"{key}: {text!r} must be 'metric=weight' with a metric of the {main.setting!r} predictor "
                           f"({', '.join(main.metrics)})")
        try:
            weight = float(value)
        except ValueError:
            raise NCPError(f"{key}: {text!r}: the weight {value.strip()!r} is not a number") from None
        if not np.isfinite(weight):
            raise NCPError(f"{key}: {text!r}: the weight must be finite")
        terms.append(Term(0, name, main.metrics.index(name), weight))
    if not terms:
        raise NCPError(f"{key} is empty: name at least one 'metric=weight' (e.g. {main.main_metric}=1)")
    return terms


def extra_terms(extras: Sequence[Tuple[str, str, float]], specs: Sequence[P.PredictorSpec]) -> List[Term]:
    """One term per extra predictor (:func:`parse_extra`): its main metric with its weight."""
    return [Term(k, spec.main_metric, 0, weight) for k, ((_, _, weight), spec) in enumerate(zip(extras, specs[1:]), 1)]


def parse_extra(texts: Sequence[str], key: str = "NCP.EXTRA_PREDICTORS") -> List[Tuple[str, str, float]]:
    """``["path/to/best.safetensors@video=0.5", ...]`` -> ``[(path, setting, weight)]``."""
    out = []
    for text in texts:
        left, sep, value = str(text).rpartition("=")
        path, at, setting = left.rpartition("@")
        if not sep or not at or not path or not setting:
            raise NCPError(f"{key}: {text!r} must be 'CHECKPOINT@SETTING=WEIGHT', e.g. "
                           "'runs/ncp_predictor_video/best.safetensors@video=0.5'")
        try:
            weight = float(value)
        except ValueError:
            raise NCPError(f"{key}: {text!r}: the weight {value!r} is not a number") from None
        out.append((path, setting, weight))
    return out


def start_code(value: str) -> Tuple[int, ...]:
    """``NCP.START``: empty = upstream's start (every count 2, every width 64), else a code the config can hold."""
    if not str(value).strip():
        return MR.DEFAULT_START
    return MR.code_from_value(value, "NCP.START").embedding()


def box(spec: P.PredictorSpec) -> Tuple[np.ndarray, np.ndarray]:
    """The search space's bounds in the main predictor's normalised coordinates."""
    lo = np.array([b[0] for b in MR.BOUNDS], dtype=np.float64)
    hi = np.array([b[1] for b in MR.BOUNDS], dtype=np.float64)
    mean, std = np.asarray(spec.input_mean), np.asarray(spec.input_std)
    return (lo - mean) / std, (hi - mean) / std


def _metric_dict(spec: P.PredictorSpec, normalised_row: np.ndarray) -> Dict[str, float]:
    values = P.denormalise(spec, normalised_row[None, :])[0]
    return {m: float(v) for m, v in zip(spec.metrics, values)}


def run(propagator, specs: Sequence[P.PredictorSpec], terms: Sequence[Term], start: Sequence[int], iters: int,
        lr: float, max_flops: float = 0.0, max_params: float = 0.0, budget_weight: float = 1.0,
        progress=None) -> Tuple[List[Step], Optional[Step]]:
    """The trajectory and the best step within the budgets (None when no rounded code met them).

    ``propagator.gradient(z, weights) -> (normalised predictions per predictor at z, dJ/dz)`` where ``weights`` is a
    list (per predictor) of per-output weights; ``propagator.predict(codes) -> normalised predictions per predictor``
    (raw codes, eval mode)."""
    main = specs[0]
    if main.input_dim != MR.EMBEDDING_LENGTH:
        raise NCPError(f"NCP searches NAS-Bench-MR codes ({MR.EMBEDDING_LENGTH} numbers); the {main.setting!r} "
                       f"predictor reads {main.input_dim}")
    mean, std = np.asarray(main.input_mean), np.asarray(main.input_std)
    lo, hi = box(main)
    z = (np.asarray(MR.check_embedding(start, "NCP.START"), dtype=np.float64) - mean) / std
    steps: List[Step] = []
    over = {"flops": False, "params": False}
    for it in range(1, int(iters) + 1):
        weights = [np.zeros(spec.output_dim) for spec in specs]
        for term in terms:
            weights[term.predictor][term.index] += term.weight
        for cost, limit in (("flops", max_flops), ("params", max_params)):
            if limit > 0 and over[cost] and cost in main.metrics:
                weights[0][main.metrics.index(cost)] -= budget_weight
        _, grad = propagator.gradient(z, weights)
        grad = np.asarray(grad, dtype=np.float64)
        if not np.isfinite(grad).all():
            raise NCPError(f"the objective's gradient is not finite at iteration {it}: is MODEL.WEIGHTS a trained "
                           "predictor?")
        moved = z + lr * grad
        z = np.clip(moved, lo, hi)
        clamped = int(np.count_nonzero(z != moved))
        continuous = z * std + mean
        rounded = MR.round_embedding(continuous)
        preds = [np.asarray(p, dtype=np.float64)[0] for p in propagator.predict(np.asarray([rounded], np.float64))]
        if not all(np.isfinite(p).all() for p in preds):
            raise NCPError(f"a predictor's output is not finite for the code of iteration {it} "
                           f"({MR.from_embedding(rounded).code()}): is MODEL.WEIGHTS a trained predictor?")
        flops, params = MR.table_counts(rounded)
        objective = float(sum(term.weight * preds[term.predictor][term.index] for term in terms))
        over = {"flops": max_flops > 0 and flops > max_flops, "params": max_params > 0 and params > max_params}
        steps.append(Step(it, [float(v) for v in continuous], list(rounded), MR.from_embedding(rounded).code(),
                          _metric_dict(main, preds[0]),
                          [_metric_dict(spec, p) for spec, p in zip(specs[1:], preds[1:])],
                          float(flops), float(params), objective, not any(over.values()), clamped))
        if progress is not None:
            progress(steps[-1])
    feasible = [s for s in steps if s.within_budget]
    best = max(feasible, key=lambda s: (s.objective, -s.iteration)) if feasible else None
    return steps, best


def start_step(propagator, specs, terms, start) -> Step:
    """The start code as a step 0 (its predictions and counts), for the record and the plot."""
    preds = [np.asarray(p, dtype=np.float64)[0] for p in propagator.predict(np.asarray([start], np.float64))]
    flops, params = MR.table_counts(start)
    objective = float(sum(t.weight * preds[t.predictor][t.index] for t in terms))
    return Step(0, [float(v) for v in start], list(start), MR.from_embedding(start).code(),
                _metric_dict(specs[0], preds[0]), [_metric_dict(s, p) for s, p in zip(specs[1:], preds[1:])],
                float(flops), float(params), objective, True, 0)


# ---------------------------------------------------------------------------------------------- outputs
def trajectory_json(steps: Sequence[Step], best: Optional[Step], meta: Dict[str, Any]) -> str:
    return json.dumps({**meta, "best_iteration": None if best is None else best.iteration,
                       "steps": [dataclasses.asdict(s) for s in steps]}, indent=1, allow_nan=False)


def plot_trajectory(steps: Sequence[Step], best: Optional[Step], metric: str, path: str, title: str) -> None:
    """Predicted ``metric`` against the counted FLOPs along the path (colour = iteration), start and best marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from common.io_utils import atomic_path

    fig = Figure(figsize=(6.4, 4.6), dpi=110)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = [s.flops for s in steps]
    y = [s.predicted[metric] for s in steps]
    ax.plot(x, y, color="0.75", linewidth=1, zorder=1)
    points = ax.scatter(x, y, c=[s.iteration for s in steps], cmap="viridis", s=18, zorder=2)
    fig.colorbar(points, ax=ax, label="iteration")
    ax.scatter([x[0]], [y[0]], marker="s", s=60, facecolor="none", edgecolor="black", zorder=3, label="start")
    if best is not None:
        ax.scatter([best.flops], [best.predicted[metric]], marker="*", s=160, color="crimson", zorder=4,
                   label=f"returned (iteration {best.iteration})")
    ax.set_xlabel("FLOPs (GMACs, benchmark counting: classification head, 50 classes, 128 px)")
    ax.set_ylabel(f"predicted {metric}")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        canvas.print_png(tmp)


def train_config_text(best: Step, setting: str, source: str) -> str:
    """A config ``train`` accepts for the returned code (the multi-resolution network of ``NASBENCH_MR.CODE``)."""
    task = "segmentation" if setting.startswith("seg") else "classification"
    lines = [
        f"# The code NCP returned ({source}, iteration {best.iteration}): predicted "
        + ", ".join(f"{k} {v:.4g}" for k, v in best.predicted.items())
        + f"; counted {best.flops:.4f} GMACs / {best.params:.4f} M parameters (benchmark counting).",
        "# Train it with: python tools/main.py train <this file> --backend torch (set DATA.* for your dataset).",
        "MODEL:",
        "  FAMILY: nasbench_mr",
        "  NAME: mrnet",
        "NASBENCH_MR:",
        f"  CODE: \"{best.code}\"",
        f"  TASK: {task}",
    ]
    return "\n".join(lines) + "\n"


__all__ = ["NCPError", "Term", "Step", "parse_terms", "extra_terms", "parse_extra", "start_code", "box", "run",
           "start_step", "trajectory_json", "plot_trajectory", "train_config_text", "COST_METRICS"]
