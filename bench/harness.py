"""Timing and peak-memory measurement with one child process per contender.

A *contender* is a named way of running one step (a train step or an eval forward) of a network: the torch
twin, the paddle twin, timm's model, the TF graph, or a variant of one of them (``torch+cl`` = channels-last).
A *workload* is a mode (``train`` / ``eval``) and a batch size.  For each workload :func:`measure`

1. starts one worker process per contender (``python -m bench.harness --worker``); the worker sets its thread
   count (the same for every contender: ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` in its environment and the
   framework's own setting), imports only its framework, builds the model through the contender's *factory*
   and reports ``ready``.  Then it resets the process's peak-RSS mark (``/proc/self/clear_refs``), so the peak
   it reports later (``getrusage(RUSAGE_SELF).ru_maxrss``) is the peak of the steps, not of model building;
2. runs the warmup steps of each contender, one contender at a time;
3. runs the timed steps in ``rounds`` interleaved rounds (contender order rotated every round), only one
   contender working at any moment, so a burst of load from elsewhere on the machine hits all of them;
4. collects per-step times, the peak memory and (eval) the output of the last step, and ends the workers.

Per contender and workload it reports images/s (median over all timed steps, and the 25th-75th percentile
range), ms/step, the ratio of its images/s to the baseline's (the ratio of medians, and the range of the
per-round ratios), the peak RSS of the step phase, what the steps added over the built model, and the
first-step time (lazy initialisation, compilation).

A factory is ``module:function``; it runs inside the worker as ``function(mode=, batch_size=, threads=,
**kwargs)`` and returns a :class:`Runner`.  Its step must return only when the work is done (CPU eager
frameworks are synchronous; a GPU step must synchronise).

Worker protocol: the parent writes one JSON request line, then one JSON command per line; the worker answers
one JSON line per message on a private copy of its stdout (its fd 1 is pointed at stderr, so whatever the
frameworks print lands in the contender's log file, never in the protocol).

No framework is imported by this module.
"""
from __future__ import annotations

import csv
import dataclasses
import gc
import importlib
import io
import json
import math
import os
import platform
import queue
import resource
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: every workload mode a family benchmark may offer (each family lists its own in ``SUPPORTED_MODES``): a training
#: step, an evaluation forward, the PC-DARTS search steps (weight step, first- / second-order architecture step)
#: and the Cream supernet's meta matching update
MODES = ("train", "eval", "weight", "arch1", "arch2", "meta")


class BenchError(RuntimeError):
    """A benchmark cannot run as asked (bad contender name, bad setting); the message says which."""


# ------------------------------------------------------------------------------------------------ data types
@dataclasses.dataclass(frozen=True)
class Contender:
    name: str                                  # e.g. "torch", "torch+cl", "paddle", "timm", "tf"
    framework: str                             # torch | paddle | tensorflow (what the worker imports)
    factory: str                               # "module:function", run in the worker
    kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)   # JSON-able
    note: str = ""


def contender_from_name(family: str, bases: Dict[str, tuple], name: str, cfg_path: str) -> Contender:
    """``"base+flag+flag"`` -> a :class:`Contender`; ``bases``: base -> ``(framework, factory, allowed flags)``."""
    base, *flags = name.split("+")
    if base not in bases:
        raise BenchError(f"BENCH.CONTENDERS: unknown {family} contender {name!r}; bases: {sorted(bases)} "
                         f"with flags {', '.join(f'{b}: ' + '/'.join(v[2]) for b, v in bases.items())}")
    framework, factory, allowed = bases[base]
    bad = [f for f in flags if f not in allowed]
    if bad:
        raise BenchError(f"BENCH.CONTENDERS: {name!r}: unknown flag(s) {bad} for {base} (allowed: {list(allowed)})")
    return Contender(name=name, framework=framework, factory=factory,
                     kwargs={"cfg_path": cfg_path, "flags": list(flags)})


@dataclasses.dataclass(frozen=True)
class Workload:
    mode: str
    batch_size: int

    def __post_init__(self):
        if self.mode not in MODES:
            raise BenchError(f"mode {self.mode!r} is not one of {MODES}")
        if self.batch_size < 1:
            raise BenchError(f"batch size {self.batch_size} must be >= 1")

    @property
    def label(self) -> str:
        return f"{self.mode} bs{self.batch_size}"


@dataclasses.dataclass
class Settings:
    warmup: int = 3
    iters: int = 10
    rounds: int = 2
    threads: int = 0                     # 0 = os.cpu_count()
    setup_timeout_s: float = 1800.0      # build (+ TF graph construction) of one worker
    step_timeout_s: float = 1800.0       # one batch of steps (warmup includes compilation)
    profile_steps: int = 0               # > 0: after timing, profile this many steps per contender
    log_dir: str = ""                    # worker logs (stderr) and profiles; "" = a temporary folder
    quiet: bool = False

    def resolved_threads(self) -> int:
        return int(self.threads) if self.threads and self.threads > 0 else (os.cpu_count() or 1)

    def round_sizes(self) -> List[int]:
        """How many timed steps each round runs (``iters`` split over ``rounds``, earlier rounds get the extra)."""
        rounds = max(1, min(int(self.rounds), int(self.iters)))
        base, extra = divmod(int(self.iters), rounds)
        return [base + (1 if r < extra else 0) for r in range(rounds)]


class Runner:
    """What a factory returns: ``step()`` runs one iteration; ``info`` (JSON-able) describes the contender
    (``version``, ``params``, notes); ``output()`` returns the last eval output as numpy (optional, for the
    output-agreement column); ``profile(n, path)`` profiles ``n`` steps with the framework's profiler and writes
    a text table to ``path`` (optional; cProfile is used otherwise).  ``min_warmup``: the fewest warmup steps the
    contender needs (a compiled model compiles in its first call and may recompile in its second)."""

    def __init__(self, step: Callable[[], Any], info: Optional[Dict[str, Any]] = None,
                 output: Optional[Callable[[], np.ndarray]] = None,
                 profile: Optional[Callable[[int, str], None]] = None, min_warmup: int = 0):
        self.step = step
        self.info = dict(info or {})
        self.output = output
        self.profile = profile
        self.min_warmup = int(min_warmup)


# ------------------------------------------------------------------------------------------------ memory
def maxrss_mb() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in MiB (Linux reports KiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 1024.0 / 1024.0


def current_rss_mb() -> float:
    try:
        with open("/proc/self/status", "r", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset the peak-RSS mark to the current RSS (Linux >= 4.0, ``clear_refs`` 5); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------------ threads
def thread_env(threads: int) -> Dict[str, str]:
    """Environment that pins every math library of a worker to ``threads`` threads."""
    n = str(int(threads))
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "NUMEXPR_NUM_THREADS": n,
            "CPU_NUM": "1",                       # paddle static executors: one CPU 'device'
            "TF_NUM_INTRAOP_THREADS": n, "TF_NUM_INTEROP_THREADS": "1"}


def set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(int(threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (parallel work ran)
        pass


def set_paddle_threads(threads: int) -> None:
    import paddle  # noqa: F401  (loads the core)
    from paddle.base import core

    if hasattr(core, "set_num_threads"):
        core.set_num_threads(int(threads))


# ------------------------------------------------------------------------------------------------ worker
def worker_main() -> int:
    """Entry point of a worker process (``python -m bench.harness --worker``)."""
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # anything printed by the frameworks goes to the log, not into the protocol

    def send(obj: Dict[str, Any]) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    line = sys.stdin.readline()
    if not line:
        return 2
    request = json.loads(line)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    try:
        start = time.perf_counter()
        module_name, func_name = request["factory"].split(":")
        factory = getattr(importlib.import_module(module_name), func_name)
        runner = factory(mode=request["mode"], batch_size=int(request["batch_size"]),
                         threads=int(request["threads"]), **request.get("kwargs", {}))
        setup_s = time.perf_counter() - start
        gc.collect()
        build_peak = maxrss_mb()
        reset = reset_peak_rss()
        base = current_rss_mb()
        send({"event": "ready", "setup_s": setup_s, "build_peak_mb": build_peak, "base_mb": base,
              "peak_reset": reset, "info": runner.info, "min_warmup": runner.min_warmup, "pid": os.getpid()})
    except BaseException:  # noqa: BLE001 - reported to the parent, which names the contender
        print(traceback.format_exc(), file=sys.stderr, flush=True)
        send({"event": "error", "stage": "setup", "error": traceback.format_exc()})
        return 1
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if cmd["cmd"] == "steps":
                gc.collect()
                times = []
                for _ in range(int(cmd["n"])):
                    t0 = time.perf_counter()
                    runner.step()
                    times.append(time.perf_counter() - t0)
                send({"event": "times", "times": times})
            elif cmd["cmd"] == "mem":
                send({"event": "mem", "peak_mb": maxrss_mb(), "rss_mb": current_rss_mb()})
            elif cmd["cmd"] == "profile":
                path = cmd["path"]
                if runner.profile is not None:
                    runner.profile(int(cmd["n"]), path)
                else:
                    _cprofile(runner.step, int(cmd["n"]), path)
                send({"event": "profiled", "path": path})
            elif cmd["cmd"] == "finish":
                out = None
                if runner.output is not None:
                    array = runner.output()
                    if array is not None:
                        out = np.asarray(array, dtype=np.float64).reshape(-1)[:4096].tolist()
                send({"event": "finished", "peak_mb": maxrss_mb(), "rss_mb": current_rss_mb(), "output": out})
                return 0
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except BaseException:  # noqa: BLE001
            print(traceback.format_exc(), file=sys.stderr, flush=True)
            send({"event": "error", "stage": cmd.get("cmd", "?"), "error": traceback.format_exc()})
            return 1
    return 0


def _cprofile(step: Callable[[], Any], n: int, path: str) -> None:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        step()
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(25)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"cProfile of {n} steps\n" + buf.getvalue())


# ------------------------------------------------------------------------------------------------ parent side
class _Worker:
    """One worker process seen from the parent: send a JSON command, wait (with a timeout) for the answer."""

    def __init__(self, contender: Contender, workload: Workload, threads: int, log_path: str):
        self.contender = contender
        self.log_path = log_path
        env = dict(os.environ)
        env.update(thread_env(threads))
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env.setdefault("GLOG_minloglevel", "2")
        self._log = open(log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.harness", "--worker"], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     bufsize=1)
        self._answers: "queue.Queue[Optional[str]]" = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        request = {"factory": contender.factory, "kwargs": contender.kwargs, "mode": workload.mode,
                   "batch_size": workload.batch_size, "threads": threads}
        self._send(request)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._answers.put(line)
        self._answers.put(None)

    def _send(self, obj: Dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def receive(self, timeout: float) -> Dict[str, Any]:
        try:
            line = self._answers.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise BenchError(f"{self.contender.name}: no answer within {timeout:.0f} s (killed; log: {self.log_path})")
        if line is None:
            code = self.proc.wait()
            raise BenchError(f"{self.contender.name}: the worker exited with code {code} "
                             f"(log: {self.log_path}){self._log_tail()}")
        answer = json.loads(line)
        if answer.get("event") == "error":
            raise BenchError(f"{self.contender.name}: failed in {answer.get('stage')}:\n{answer.get('error')}")
        return answer

    def command(self, obj: Dict[str, Any], timeout: float) -> Dict[str, Any]:
        try:
            self._send(obj)
        except (BrokenPipeError, OSError):
            pass  # the reader reports the exit
        return self.receive(timeout)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            self._log.flush()
            with open(self.log_path, "r", encoding="utf-8", errors="replace") as handle:
                tail = handle.readlines()[-lines:]
        except OSError:
            return ""
        return ("\n" + "".join(tail).rstrip()) if tail else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
        self._log.close()


def _q(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def measure(contenders: Sequence[Contender], workloads: Sequence[Workload], settings: Settings,
            baseline: str, extra: Optional[Dict[str, Any]] = None,
            progress: Optional[Callable[[str], None]] = None) -> List[Dict[str, Any]]:
    """Run every contender on every workload (see the module docstring); one row (a dict) per pair.

    ``baseline`` names the contender the ratios are taken against.  A contender that fails (setup, a step, a
    timeout) gets a row with ``error`` set and no figures; the others go on.  ``extra`` is copied into every row.
    """
    names = [c.name for c in contenders]
    if len(set(names)) != len(names):
        raise BenchError(f"contender names repeat: {names}")
    if baseline not in names:
        raise BenchError(f"baseline {baseline!r} is not among the contenders {names}")
    say = progress or (lambda text: None if settings.quiet else print(text, flush=True))
    threads = settings.resolved_threads()
    log_dir = settings.log_dir or os.path.join(ROOT, "runs", "bench_logs")
    os.makedirs(log_dir, exist_ok=True)
    rows: List[Dict[str, Any]] = []
    for workload in workloads:
        say(f"[{workload.label}] starting {len(contenders)} workers ({threads} threads each)")
        workers: Dict[str, _Worker] = {}
        state: Dict[str, Dict[str, Any]] = {}
        for c in contenders:
            log = os.path.join(log_dir, f"{_safe_name(c.name)}_{workload.mode}_bs{workload.batch_size}.log")
            workers[c.name] = _Worker(c, workload, threads, log)
            state[c.name] = {"error": None, "times": [], "rounds": [], "warm": []}
        try:
            for c in contenders:  # builds ran in parallel; collect them in order
                st = state[c.name]
                try:
                    st["ready"] = workers[c.name].receive(settings.setup_timeout_s)
                    say(f"[{workload.label}] {c.name}: built in {st['ready']['setup_s']:.1f} s")
                except BenchError as exc:
                    st["error"] = str(exc)
                    say(f"[{workload.label}] {c.name}: FAILED to build: {_first_line(exc)}")
            live = [c for c in contenders if state[c.name]["error"] is None]
            for c in live:
                warmup = max(settings.warmup, int(state[c.name]["ready"].get("min_warmup", 0)))
                if warmup <= 0:
                    continue
                try:
                    ans = workers[c.name].command({"cmd": "steps", "n": warmup}, settings.step_timeout_s)
                    state[c.name]["warm"] = ans["times"]
                    say(f"[{workload.label}] {c.name}: warmup {len(ans['times'])} steps, first "
                        f"{ans['times'][0] * 1e3:.0f} ms, last {ans['times'][-1] * 1e3:.0f} ms")
                except BenchError as exc:
                    state[c.name]["error"] = str(exc)
                    say(f"[{workload.label}] {c.name}: FAILED in warmup: {_first_line(exc)}")
            sizes = settings.round_sizes()
            for r, size in enumerate(sizes):
                live = [c for c in contenders if state[c.name]["error"] is None]
                if not live:
                    break
                shift = r % len(live)
                for c in live[shift:] + live[:shift]:
                    if state[c.name]["error"] is not None:
                        continue
                    try:
                        ans = workers[c.name].command({"cmd": "steps", "n": size}, settings.step_timeout_s)
                        state[c.name]["times"].extend(ans["times"])
                        state[c.name]["rounds"].append(float(np.median(ans["times"])))
                    except BenchError as exc:
                        state[c.name]["error"] = str(exc)
                        say(f"[{workload.label}] {c.name}: FAILED while timing: {_first_line(exc)}")
                done = [f"{c.name} {batch_ips(workload.batch_size, state[c.name]['rounds'][-1]):.2f}"
                        for c in live if state[c.name]["error"] is None and state[c.name]["rounds"]]
                say(f"[{workload.label}] round {r + 1}/{len(sizes)} img/s: " + ", ".join(done))
            if settings.profile_steps > 0:
                for c in contenders:
                    if state[c.name]["error"] is not None:
                        continue
                    try:  # the peak of the timed steps, before the profiler adds its own memory
                        state[c.name]["mem"] = workers[c.name].command({"cmd": "mem"}, settings.step_timeout_s)
                    except BenchError as exc:
                        state[c.name]["error"] = str(exc)
                        continue
                    path = os.path.join(log_dir, f"profile_{_safe_name(c.name)}_{workload.mode}_"
                                                 f"bs{workload.batch_size}.txt")
                    try:
                        workers[c.name].command({"cmd": "profile", "n": settings.profile_steps, "path": path},
                                                settings.step_timeout_s)
                        state[c.name]["profile"] = path
                        say(f"[{workload.label}] {c.name}: profile -> {path}")
                    except BenchError as exc:
                        say(f"[{workload.label}] {c.name}: profiling failed: {_first_line(exc)}")
            for c in contenders:
                if state[c.name]["error"] is not None:
                    continue
                try:
                    state[c.name]["finish"] = workers[c.name].command({"cmd": "finish"}, settings.step_timeout_s)
                except BenchError as exc:
                    state[c.name]["error"] = str(exc)
        finally:
            for w in workers.values():
                w.close()
        rows.extend(_rows_for(workload, contenders, state, baseline, threads, extra or {}))
    return rows


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    last = [t for t in text if t.strip()]
    return (text[0] + (" ... " + last[-1].strip() if len(last) > 1 else "")) if text else type(exc).__name__


def batch_ips(batch_size: int, seconds: float) -> float:
    return batch_size / seconds if seconds > 0 else float("nan")


def _rows_for(workload: Workload, contenders: Sequence[Contender], state: Dict[str, Dict[str, Any]], baseline: str,
              threads: int, extra: Dict[str, Any]) -> List[Dict[str, Any]]:
    bs = workload.batch_size
    base = state[baseline]
    base_ok = base["error"] is None and base["times"]
    base_ips = batch_ips(bs, float(np.median(base["times"]))) if base_ok else float("nan")
    base_out = np.asarray(base.get("finish", {}).get("output") or [], dtype=np.float64) if base_ok else None
    rows = []
    for c in contenders:
        st = state[c.name]
        ready = st.get("ready", {})
        info = ready.get("info", {})
        row: Dict[str, Any] = dict(extra)
        row.update({
            "mode": workload.mode, "batch": bs, "contender": c.name, "framework": c.framework,
            "version": info.get("version", ""), "threads": threads, "baseline": baseline,
            "params": info.get("params"), "note": "; ".join(x for x in (c.note, info.get("note", "")) if x),
        })
        if st["error"] is not None or not st["times"]:
            row["error"] = st["error"] or "no timed steps"
            rows.append(row)
            continue
        times = np.asarray(st["times"], dtype=np.float64)
        med = float(np.median(times))
        finish = st.get("finish", {})
        peak = st.get("mem", finish).get("peak_mb", float("nan"))
        row.update({
            "iters": int(times.size), "rounds": len(st["rounds"]),
            "img_s": bs / med, "img_s_p25": bs / _q(times, 75), "img_s_p75": bs / _q(times, 25),
            "ms_step": med * 1e3, "ms_p25": _q(times, 25) * 1e3, "ms_p75": _q(times, 75) * 1e3,
            "ms_min": float(times.min()) * 1e3,
            "first_ms": (st["warm"][0] * 1e3) if st["warm"] else float("nan"),
            "setup_s": ready.get("setup_s", float("nan")),
            "peak_mb": peak, "step_mb": peak - ready.get("base_mb", float("nan")),
            "build_peak_mb": ready.get("build_peak_mb", float("nan")), "peak_reset": ready.get("peak_reset"),
            "error": "", "ratio": None, "ratio_lo": None, "ratio_hi": None, "out_max_abs": None, "out_max_rel": None,
        })
        if base_ok:
            row["ratio"] = row["img_s"] / base_ips
            per_round = [b / s for b, s in zip(base["rounds"], st["rounds"]) if s > 0]
            row["ratio_lo"] = min(per_round) if per_round else float("nan")
            row["ratio_hi"] = max(per_round) if per_round else float("nan")
            out = finish.get("output")
            if out is not None and base_out is not None and base_out.size and len(out) == base_out.size:
                diff = np.abs(np.asarray(out, dtype=np.float64) - base_out)
                row["out_max_abs"] = float(diff.max())
                row["out_max_rel"] = float(diff.max() / max(np.abs(base_out).max(), 1e-30))
        if "profile" in st:
            row["profile"] = st["profile"]
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ reporting
CSV_COLUMNS = ("family", "net", "image_size", "mode", "batch", "contender", "framework", "version", "threads",
               "iters", "rounds", "img_s", "img_s_p25", "img_s_p75", "ms_step", "ms_p25", "ms_p75", "ms_min",
               "first_ms", "baseline", "ratio", "ratio_lo", "ratio_hi", "peak_mb", "step_mb", "build_peak_mb",
               "params", "out_max_abs", "out_max_rel", "setup_s", "note", "error")


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
    """A fixed-width table of ``rows`` (one line per contender and workload)."""
    head = ("mode", "batch", "contender", "img/s", "(p25-p75)", "ms/step", "ratio", "(rounds)", "peak MB",
            "step MB", "first ms", "max|dOut|")
    lines = []
    for r in rows:
        if r.get("error"):
            lines.append((r["mode"], str(r["batch"]), r["contender"], "FAILED", "", "", "", "", "", "", "", ""))
            continue
        base = r["contender"] == r.get("baseline")
        lines.append((
            r["mode"], str(r["batch"]), r["contender"], _fmt(r["img_s"], ".2f"),
            f"({_fmt(r['img_s_p25'], '.2f')}-{_fmt(r['img_s_p75'], '.2f')})", _fmt(r["ms_step"], ".1f"),
            "1.00x base" if base else (_fmt(r.get("ratio"), ".2f") + "x" if r.get("ratio") is not None else "-"),
            "" if base or r.get("ratio_lo") is None else f"({_fmt(r['ratio_lo'], '.2f')}-{_fmt(r['ratio_hi'], '.2f')})",
            _fmt(r["peak_mb"], ".0f"), _fmt(r["step_mb"], ".0f"), _fmt(r["first_ms"], ".0f"),
            "" if base else _fmt(r.get("out_max_abs"), ".1e"),
        ))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    previous = None
    for line, r in zip(lines, rows):
        key = (r["mode"], r["batch"])
        if previous is not None and key != previous:
            out.append("")
        previous = key
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    failed = [r for r in rows if r.get("error")]
    if failed:
        out.append("")
        out.append("failures (full tracebacks in bench.json and the worker logs):")
        for r in failed:
            out.append(f"  {r['contender']} ({r['mode']} bs{r['batch']}): {_first_line_text(r['error'])}")
    return "\n".join(out)


def _first_line_text(text: str) -> str:
    lines = [t.strip() for t in str(text).splitlines() if t.strip()]
    if not lines:
        return ""
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"[:160]


def rows_to_csv(rows: Sequence[Dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        clean = {k: ("" if v is None else (_first_line_text(v) if k == "error" else v)) for k, v in r.items()}
        writer.writerow(clean)
    return buf.getvalue()


def machine_info() -> Dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "loadavg": [round(x, 2) for x in load],
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def ratio_of(rows: Sequence[Dict[str, Any]], mode: str, batch: int, num: str, den: str) -> Optional[float]:
    """images/s of contender ``num`` over ``den`` for one workload (ratio of medians); None when either failed."""
    by = {r["contender"]: r for r in rows if r["mode"] == mode and r["batch"] == batch and not r.get("error")}
    if num not in by or den not in by:
        return None
    return by[num]["img_s"] / by[den]["img_s"]


def numpy_selftest(mode: str, batch_size: int, threads: int, size: int = 64, fail: str = "") -> Runner:
    """A numpy-only contender (a chain of ``tanh(x @ a)``) for the harness's own tests and for calibration.

    ``fail='setup'`` raises while building, ``fail='step'`` in the second step: the harness must report such a
    contender as failed and go on with the others."""
    if fail == "setup":
        raise RuntimeError("numpy_selftest: asked to fail in setup")
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
    x = rng.standard_normal((batch_size, size)).astype(np.float32)
    state: Dict[str, Any] = {"n": 0}

    def step():
        state["n"] += 1
        if fail == "step" and state["n"] > 1:
            raise RuntimeError("numpy_selftest: asked to fail in a step")
        y = x
        for _ in range(8):
            y = np.tanh(y @ a)
        state["out"] = y

    return Runner(step, {"version": np.__version__, "params": size * size, "note": f"mode {mode}"},
                  lambda: state.get("out"))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(worker_main())
    print("bench.harness: run `python tools/main.py bench <config.yaml>` (this module is the worker)", file=sys.stderr)
    sys.exit(2)
