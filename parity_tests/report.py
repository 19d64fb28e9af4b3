"""Parity report writers: ``parity.json`` (every figure, for machines), ``parity.md`` (tables, for people) and a
short console summary.  They work on the plain-dict form of a result (``ParityResult.as_dict()``), so a
``parity.json`` read back from disk renders the same markdown.

Markdown layout: title and verdict; the first divergence called out (stage, entry, module, class, figures, and
where it starts); run facts and the tolerance rules; then per dtype a summary table (one line per stage with the
worst entry by max-abs, by max-rel and, for float32, by bound ratio) followed by per-entry tables in stage order:
forward outputs in execution order, loss, output/input/parameter gradients in backward order, then the post-step
tensors.  A failing row has ``FAIL`` in its last column; ``*`` marks the first divergence.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Optional, Tuple

from common.io_utils import atomic_write_text

JSON_NAME = "parity.json"
MD_NAME = "parity.md"

STAGE_TITLES = {
    "eval_forward": "Forward outputs, eval mode (execution order)",
    "forward": "Forward outputs, train mode with numpy dropout / drop-path masks (execution order)",
    "loss": "Loss",
    "output_grad": "Gradients w.r.t. module outputs (backward order)",
    "input_grad": "Gradient w.r.t. the input",
    "grad": "Parameter gradients (backward order of the owning module)",
    "arch_grad": "Architecture-step gradients of a search task (first and second order, from the initial weights)",
    "train_loss": "Loss of each optimizer step",
    "weight": "Parameters after the optimizer steps",
    "update": "Parameter updates (after - initial)",
    "running_stat": "Buffers (BN running statistics) after the optimizer steps",
    "ema": "EMA tensors after the optimizer steps",
    "optimizer_slot": "Optimizer slots after the optimizer steps",
    "derived": "Derived architecture after the steps (a search task's genotype as integer codes)",
}
_EVAL_MODE_FORWARD = ("forward (eval+bwd)", "Forward outputs, eval mode, the pass that is differentiated "
                      "(PARITY.TRAIN_MODE off; execution order)")
SHORT = {
    "eval_forward": "forward (eval)", "forward": "forward (train)", "loss": "loss", "output_grad": "output grad",
    "input_grad": "input grad", "grad": "param grad", "arch_grad": "arch grad", "train_loss": "step loss", "weight": "weight",
    "update": "update", "running_stat": "running stat", "ema": "EMA", "optimizer_slot": "optimizer slot",
    "derived": "derived arch",
}


# ------------------------------------------------------------------------------------------------ JSON
def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return _json_safe(value.item())
    if hasattr(value, "tolist"):
        return _json_safe(value.tolist())
    return value


def to_json(data: Dict[str, Any]) -> str:
    return json.dumps(_json_safe(data), indent=1, allow_nan=False, default=str)


def write_reports(data: Dict[str, Any], report_dir: str) -> Tuple[str, str]:
    """Write ``parity.json`` and ``parity.md`` atomically into ``report_dir``; return both paths."""
    os.makedirs(report_dir, exist_ok=True)
    json_path = os.path.join(report_dir, JSON_NAME)
    md_path = os.path.join(report_dir, MD_NAME)
    atomic_write_text(json_path, to_json(data))
    atomic_write_text(md_path, render_markdown(data))
    return json_path, md_path


# ------------------------------------------------------------------------------------------------ formatting
def _labels(data: Dict[str, Any]) -> Tuple[Dict[str, str], Dict[str, str]]:
    """(short, long) stage labels; the ``forward`` stage runs in eval mode when PARITY.TRAIN_MODE is off."""
    short, titles = dict(SHORT), dict(STAGE_TITLES)
    if data.get("meta", {}).get("train_mode") is False:
        short["forward"], titles["forward"] = _EVAL_MODE_FORWARD
    return short, titles


def _num(value: Any, spec: str = ".2e") -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return format(value, spec)


def _val(value: Any) -> str:
    return _num(value, ".6g")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _verdict(ok: Optional[bool]) -> str:
    return "-" if ok is None else ("pass" if ok else "**FAIL**")


def _table(header: List[str], rows: List[List[Any]]) -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _first_line(data: Dict[str, Any]) -> str:
    short, _ = _labels(data)
    fd = data.get("first_divergence")
    if fd is None:
        return "**First divergence:** none: every entry of every dtype is within its tolerance."
    run = data["runs"][fd["dtype"]]
    e = run["first_divergence"]
    a, b = data["backends"]
    parts = [f"**First divergence ({fd['dtype']}): {short.get(e['stage'], e['stage'])} `{e['name']}`**"]
    if e.get("module"):
        parts.append(f"(module `{e['module']}`, {e.get('type') or '?'})")
    text = " ".join(parts)
    if e.get("max_abs") is not None:
        text += (f": max_abs {_num(e['max_abs'])}, max_rel {_num(e['max_rel'])}, allowed max_abs "
                 f"{_num(e.get('tol_abs'))}; worst element {e.get('worst_index')} ({a} {_val(e.get('value_a'))} vs "
                 f"{b} {_val(e.get('value_b'))}), shape {e.get('shape_a')}")
    elif e.get("note"):
        text += f": {e['note']}"
    loc = fd.get("localisation") or e.get("localisation")
    if loc:
        text += f".\n\n{loc}."
    later = [d for d, r in data["runs"].items() if d != fd["dtype"] and r.get("first_divergence")]
    for d in later:
        o = data["runs"][d]["first_divergence"]
        text += f"\n\nIn {d} the first failing entry is {short.get(o['stage'], o['stage'])} `{o['name']}`."
    return text


def _run_facts(data: Dict[str, Any]) -> List[str]:
    m = data.get("meta", {})
    a, b = data["backends"]
    be = m.get("backends", {})
    lines = [
        f"- backends: {a} {be.get(a, {}).get('version', '?')} (column a), {b} {be.get(b, {}).get('version', '?')} "
        f"(column b, the scale of max_rel); device {m.get('device')}; numpy {m.get('numpy')}, python {m.get('python')}",
        f"- model: family `{m.get('family')}`, name `{m.get('model')}`; {m.get('modules')} modules, "
        f"{m.get('trainable_parameters')} trainable tensors",
        f"- batch {m.get('batch_shape')} (N(0,1) pixels), labels {m.get('labels')}, seed {m.get('seed')}; "
        f"weights: {m.get('weights', 'given')}",
        f"- stages: {', '.join(m.get('stages', []))}; train mode {m.get('train_mode')} "
        f"(random-layer masks drawn from numpy: {m.get('mask_draws')} per forward)",
        f"- {m.get('steps')} optimizer steps: `{m.get('optimizer')}` at LRs {m.get('lrs')}, EMA decay "
        f"{m.get('ema_decay')}, label smoothing {m.get('label_smoothing')}",
        f"- dtypes: {m.get('dtypes')} (run: {m.get('dtypes_run')}); elapsed {_num(m.get('elapsed_s'), '.1f')} s",
    ]
    if m.get("reference"):
        r = m["reference"]
        lines.append(f"- reference column `{r['name']}` on stage {r['stage']} ({r['entries']} arrays, "
                     f"rel_tol {r['rel_tol']}) {r.get('note', '')}")
    return lines


def _summary_table(run: Dict[str, Any], float32: bool, short: Dict[str, str]) -> List[str]:
    header = ["stage", "entries", "failed", "worst max_abs", "entry", "worst max_rel", "entry", "its scale"]
    if float32:
        header += ["worst bound ratio", "entry", "worst own-error ratio", "entry", "goal fails"]
    rows = []
    for stage, s in run["summary"].items():
        row = [short.get(stage, stage), s["entries"], s["failed"] if not s["failed"] else f"**{s['failed']}**",
               _num(s.get("worst_abs")), _code(s.get("worst_abs_entry", "")), _num(s.get("worst_rel")),
               _code(s.get("worst_rel_entry", "")), _num(s.get("worst_rel_scale"))]
        if float32:
            row += [_num(s.get("worst_bound_ratio"), ".3g"), _code(s.get("worst_bound_ratio_entry", "")),
                    _num(s.get("worst_own_ratio"), ".3g"), _code(s.get("worst_own_ratio_entry", "")),
                    s.get("goal_failed", "-")]
        rows.append(row)
    return _table(header, rows)


def _entry_rows(run: Dict[str, Any], stage: str, names: Tuple[str, str], first_key) -> List[str]:
    a, b = names
    float32 = run["dtype"] != "float64"
    forward = stage in ("eval_forward", "forward")
    header = ["#", "entry", "type", "shape", "scale", "max_abs", "max_rel", "worst at", a, b]
    if float32:
        header += [f"{a} 32-vs-64", f"{b} 32-vs-64", "bound", "ratio", "goal 1e-5"]
    else:
        header += ["allowed"]
    if forward:
        header += ["inputs max_rel"]
    has_ref = any(e.get("reference") for e in run["entries"] if e["stage"] == stage)
    if has_ref:
        header += [f"{a} vs ref", f"{b} vs ref"]
    header += ["ok"]
    rows = []
    for e in run["entries"]:
        if e["stage"] != stage:
            continue
        mark = "*" if (e["stage"], e["name"]) == first_key else ""
        shape = e["shape_a"] if e["shape_a"] == e["shape_b"] else f"{e['shape_a']} vs {e['shape_b']}"
        row = [f"{mark}{e['order']}", _code(e["name"]) + (f" ({e['note']})" if e.get("note") else ""),
               e.get("type", ""), shape if shape is not None else "-", _num(e["ref_scale"], ".1e"),
               _num(e["max_abs"]), _num(e["max_rel"]),
               e["worst_index"] if e["worst_index"] is not None else "-", _val(e["value_a"]), _val(e["value_b"])]
        if float32:
            row += [_num(e["own_err_a"]), _num(e["own_err_b"]), _num(e["tol_abs"]), _num(e["bound_ratio"], ".3g"),
                    _verdict(e["goal_passed"])]
        else:
            row += [_num(e["tol_abs"])]
        if forward:
            row += [_num(e.get("input_max_rel"))]
        if has_ref:
            ref = e.get("reference") or {}
            row += [_num(ref.get(a, {}).get("max_rel")), _num(ref.get(b, {}).get("max_rel"))]
        ok = e["passed"] and e.get("ref_passed") is not False
        row += ["ok" if ok else "**FAIL**"]
        rows.append(row)
    return _table(header, rows)


def render_markdown(data: Dict[str, Any]) -> str:
    short, titles = _labels(data)
    m = data.get("meta", {})
    names = tuple(data["backends"])
    lines = [f"# Parity report: {m.get('family')} `{m.get('model')}`, {names[0]} vs {names[1]}", ""]
    verdicts = ", ".join(f"{d}: {'pass' if r['passed'] else 'FAIL'}" for d, r in data["runs"].items())
    goal = [r.get("goal_passed") for r in data["runs"].values() if r.get("goal_passed") is not None]
    goal_text = ""
    if goal:
        goal_text = f"; float32 goal max_rel <= 1e-5 on forward outputs: {'pass' if all(goal) else 'FAIL'}"
    lines += [f"**Verdict: {'PASS' if data['passed'] else 'FAIL'}** ({verdicts}{goal_text})", "", _first_line(data),
              "", "## Run", ""]
    lines += _run_facts(data)
    lines += ["", "Tolerance rules (a = first backend, b = second backend):", ""]
    lines += [f"- {k}: `{v}`" for k, v in data.get("tolerance_rules", {}).items()]
    for dtype, run in data["runs"].items():
        float32 = dtype != "float64"
        fd = run.get("first_divergence")
        first_key = (fd["stage"], fd["name"]) if fd else None
        lines += ["", f"## {dtype}: {'pass' if run['passed'] else 'FAIL'}", ""]
        if fd:
            lines += [f"First failing entry: {short.get(fd['stage'], fd['stage'])} `{fd['name']}`: "
                      f"{fd.get('localisation', '')}", ""]
        lines += _summary_table(run, float32, short)
        if run.get("reference_unmatched"):
            lines += ["", f"Reference arrays with no matching entry: {', '.join(run['reference_unmatched'])}"]
        for stage in titles:
            if not any(e["stage"] == stage for e in run["entries"]):
                continue
            lines += ["", f"### {dtype}: {titles[stage]}", ""]
            lines += _entry_rows(run, stage, names, first_key)
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ console
def console_summary(data: Dict[str, Any]) -> str:
    short, _ = _labels(data)
    names = tuple(data["backends"])
    m = data.get("meta", {})
    out = [f"parity {m.get('family')} {m.get('model')}: {names[0]} vs {names[1]}, batch {m.get('batch_shape')}, "
           f"{m.get('steps')} steps of {m.get('optimizer')}: {'PASS' if data['passed'] else 'FAIL'}"]
    for dtype, run in data["runs"].items():
        float32 = dtype != "float64"
        head = f"  {'stage':<18} {'n':>4} {'fail':>4} {'worst max_abs':>13} {'worst max_rel':>13} {'(its scale)':>11}"
        out.append(f" {dtype}: {'pass' if run['passed'] else 'FAIL'}")
        out.append(head + (f" {'bound ratio':>11} {'goal fails':>10}" if float32 else ""))
        for stage, s in run["summary"].items():
            line = (f"  {short.get(stage, stage):<18} {s['entries']:>4} {s['failed']:>4} "
                    f"{_num(s.get('worst_abs')):>13} {_num(s.get('worst_rel')):>13} "
                    f"{_num(s.get('worst_rel_scale')):>11}")
            if float32:
                line += f" {_num(s.get('worst_bound_ratio'), '.3g'):>11} {str(s.get('goal_failed', '-')):>10}"
            out.append(line)
    fd = data.get("first_divergence")
    if fd:
        out.append(f" first divergence ({fd['dtype']}): {short.get(fd['stage'], fd['stage'])} {fd['name']} "
                   f"[{fd.get('type') or '?'}] max_abs {_num(fd.get('max_abs'))} max_rel {_num(fd.get('max_rel'))}")
        if fd.get("localisation"):
            out.append(f"   {fd['localisation']}")
    else:
        out.append(" first divergence: none")
    return "\n".join(out)
