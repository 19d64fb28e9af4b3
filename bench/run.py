"""The ``bench`` command: ``python tools/main.py bench <config.yaml> [KEY VALUE ...]``.

Runs the benchmark of the config's family (``bench/<family>.py``) with the ``BENCH.*`` keys of
``common/config.py``, prints a table (images/s, ms/step, ratio to the baseline, peak memory) and the family's
goals, and writes ``bench.csv`` and ``bench.json`` (rows, goals, settings, machine) into ``<run folder>/bench``
next to the worker logs.  Exit code 0 when every contender ran, 1 when one failed (its row says why); the goals
are reported, never turned into an exit code.
"""
from __future__ import annotations

import importlib
import json
import math
import os
from typing import Any, Dict, List

from bench import harness
from common import families
from common.errors import UserError


def _user_error(message: str) -> Exception:
    return UserError(message)


def family_module(family: str):
    """The benchmark module of ``family`` (the registry's ``bench`` entry, ``common/families.py``)."""
    try:
        path = families.bench_module_path(family)
    except families.FamilyNotAvailable as exc:
        raise _user_error(f"bench: {exc}") from None
    if path is None:
        raise _user_error(f"bench: no benchmark for MODEL.FAMILY {family!r} yet (available: "
                          f"{', '.join(sorted(families.bench_families()))})")
    return importlib.import_module(path)


def settings_from_config(cfg, module, log_dir: str) -> harness.Settings:
    b = cfg.BENCH
    warmup = int(b.WARMUP) if int(b.WARMUP) > 0 else module.DEFAULT_WARMUP
    iters = int(b.ITERS) if int(b.ITERS) > 0 else module.DEFAULT_ITERS
    rounds = int(b.ROUNDS)
    if bool(b.QUICK):
        warmup, iters, rounds = 1, 2, 1
    if warmup < 0 or iters < 1 or rounds < 1:
        raise _user_error(f"BENCH: WARMUP {warmup} must be >= 0, ITERS {iters} and ROUNDS {rounds} >= 1")
    threads = int(b.THREADS) or int(cfg.get("THREADS", 0) or 0)  # BENCH.THREADS, else THREADS, else all cores
    return harness.Settings(warmup=warmup, iters=iters, rounds=rounds, threads=threads,
                            setup_timeout_s=float(b.TIMEOUT_S), step_timeout_s=float(b.TIMEOUT_S),
                            profile_steps=int(b.PROFILE_STEPS), log_dir=log_dir)


def workloads_from_config(cfg, module) -> List[harness.Workload]:
    b = cfg.BENCH
    modes = tuple(b.MODES) or module.DEFAULT_MODES
    bad = [m for m in modes if m not in harness.MODES]
    if bad:
        raise _user_error(f"BENCH.MODES: {bad} not among {list(harness.MODES)}")
    unsupported = [m for m in modes if m not in getattr(module, "SUPPORTED_MODES", harness.MODES)]
    if unsupported:
        raise _user_error(f"BENCH.MODES: the {module.FAMILY} benchmark has no {unsupported} mode "
                          f"(supported: {list(module.SUPPORTED_MODES)})")
    eval_sizes = [int(s) for s in b.BATCH_SIZES]
    train_sizes = [int(s) for s in b.TRAIN_BATCH_SIZES] or eval_sizes
    if bool(b.QUICK):
        eval_sizes, train_sizes = eval_sizes[:1], train_sizes[:1]
    out = []
    for mode in modes:
        for size in (eval_sizes if mode == "eval" else train_sizes):  # every step with a backward: train sizes
            if size < 1:
                raise _user_error(f"BENCH batch sizes must be >= 1, got {size}")
            out.append(harness.Workload(mode, size))
    if not out:
        raise _user_error("BENCH: no workload (BENCH.MODES or the batch sizes are empty)")
    return out


def contenders_from_config(cfg, module, cfg_path: str) -> List[harness.Contender]:
    default = module.default_contenders(cfg) if hasattr(module, "default_contenders") else module.DEFAULT_CONTENDERS
    names = tuple(cfg.BENCH.CONTENDERS) or tuple(default)
    try:
        return [module.make_contender(str(n), cfg_path) for n in names]
    except harness.BenchError as exc:
        raise _user_error(str(exc)) from None


def _fmt_goal(g: Dict[str, Any]) -> str:
    mark = "met" if g["met"] else "NOT met"
    return f"  {g['goal']:<40} {g['mode']:>5} bs{g['batch']:<4} {g['value']:.3f}x (target {g['target']:.2f}x)  {mark}"


def run_from_config(cfg, spec_module, spec, run_dir: str) -> int:
    from common.config import config_to_dict, save_config
    from common.io_utils import atomic_write_text

    module = family_module(cfg.MODEL.FAMILY)
    out_dir = os.path.join(run_dir, "bench")
    os.makedirs(out_dir, exist_ok=True)
    cfg_path = os.path.abspath(os.path.join(out_dir, "config.yaml"))
    save_config(cfg, cfg_path)  # the workers load the resolved config from here
    settings = settings_from_config(cfg, module, os.path.join(out_dir, "logs"))
    workloads = workloads_from_config(cfg, module)
    contenders = contenders_from_config(cfg, module, cfg_path)
    names = [c.name for c in contenders]
    baseline = str(cfg.BENCH.BASELINE) or (module.BASELINE if module.BASELINE in names else names[0])
    if baseline not in names:
        raise _user_error(f"BENCH.BASELINE {baseline!r} is not among the contenders {names}")
    machine = harness.machine_info()
    threads = settings.resolved_threads()
    print(module.header(cfg, spec))
    print(f"contenders {', '.join(names)} (baseline {baseline}); workloads "
          f"{', '.join(w.label for w in workloads)}; {settings.warmup} warmup + {settings.iters} timed steps in "
          f"{len(settings.round_sizes())} interleaved rounds; {threads} threads per contender; DEVICE {cfg.DEVICE}")
    print(f"machine: {machine['cpu']}, {machine['cpu_count']} cores, load average {machine['loadavg']} "
          "(shared machines are noisy: compare ratios, not absolute figures)", flush=True)
    busy = machine["loadavg"][0] if machine["loadavg"] else 0.0
    if threads > 1 and busy + threads > (machine["cpu_count"] or 1) + 0.5:
        print(f"warning: load average {busy:.1f} on {machine['cpu_count']} cores: with {threads} threads per contender "
              "every parallel region waits for a descheduled thread, which can slow a step 10x; BENCH.THREADS 1 "
              "gives steadier figures on a busy machine")
    if cfg.DEVICE != "cpu":
        print("note: the contenders' steps do not synchronise a GPU; figures are meant for DEVICE cpu")
    # on every CSV row (a network that reads codes, the NCP predictor, has no image size: an empty column)
    extra = {"family": module.FAMILY, "net": spec.name, "image_size": getattr(spec, "image_size", None)}
    try:
        rows = harness.measure(contenders, workloads, settings, baseline, extra=extra)
    except harness.BenchError as exc:
        raise _user_error(str(exc)) from None
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results_goals = module.goals(rows)
    print()
    print(harness.format_table(rows))
    print("img/s: median over the timed steps (25th-75th percentile); ratio: img/s over the baseline's (median "
          "ratio, range of the per-round ratios); peak MB: the process's peak RSS during the steps; step MB: what the "
          "steps added over the built model; max|dOut|: eval logits vs the baseline (same weights, same batch)")
    if results_goals:
        print("goals")
        for g in results_goals:
            print(_fmt_goal(g))
    print(f"load average at the end {machine['loadavg_end']}")
    csv_path = os.path.join(out_dir, "bench.csv")
    json_path = os.path.join(out_dir, "bench.json")
    atomic_write_text(csv_path, harness.rows_to_csv(rows))
    report = {"family": module.FAMILY, "header": module.header(cfg, spec), "baseline": baseline,
              "settings": {"warmup": settings.warmup, "iters": settings.iters, "rounds": len(settings.round_sizes()),
                           "threads": threads, "workloads": [w.label for w in workloads]},
              "machine": machine, "rows": [_jsonable(r) for r in rows], "goals": results_goals,
              "config": config_to_dict(cfg)}
    atomic_write_text(json_path, json.dumps(report, indent=1, sort_keys=True, default=str))
    print(f"wrote {csv_path} and {json_path} (worker logs in {settings.log_dir})")
    return 1 if any(r.get("error") for r in rows) else 0


def _jsonable(row: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for k, v in row.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out
