"""``tools/main.py parity --all``: one parity report for the whole toolkit.

Every family's networks (and its search network) go through the parity harness (``harness.compare_backends``):
the same float64 weights and numpy batches in both backends, every module output, the loss, every gradient and K
real training (or search) steps, in float64 and float32, with the harness's verdicts (never loosened).  PNASNet-5
adds TensorFlow's column when TensorFlow is installed (``PNASNET.PARITY_TF``).  The default is the *tiny* suite
(small images and networks, seconds each: what CI runs); ``--full`` runs the published sizes (minutes each, lots of
memory).  Output: ``parity_report.md`` (a summary table per family and dtype, then each family's full report) and
``parity_report.json`` (every family's report as the single-config ``parity`` writes it).  The exit code is 1 when
any verdict fails.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Dict, List, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Entry:
    label: str                  # the row's name in the report
    config: str                 # configs/<file>
    tiny: Tuple[str, ...] = ()  # overrides of the tiny suite
    full: Tuple[str, ...] = ()  # overrides of the full-size suite


#: one network per family and search space; the tiny overrides keep every run to seconds on a CPU
SUITE: Tuple[Entry, ...] = (
    Entry("Cream-14 (child net, the retrain recipe)", "cream14.yaml", ("PARITY.BATCH_SIZE", "6"),
          ("PARITY.BATCH_SIZE", "8")),
    Entry("Cream supernet (search steps)", "cream_search_digits.yaml", ("DATA.IMAGE_SIZE", "48"),
          ("CREAM.STA_NUM", "[]", "MODEL.NUM_CLASSES", "1000", "DATA.IMAGE_SIZE", "224")),
    Entry("PNASNet-5 Mobile (TF column when TF is installed)", "pnasnet5_mobile_digits.yaml",
          ("PNASNET.AUX_HEAD", "False", "DATA.IMAGE_SIZE", "48"),
          ("MODEL.NUM_CLASSES", "1001", "DATA.IMAGE_SIZE", "224")),
    Entry("PC-DARTS NetworkCIFAR", "pcdarts_cifar_digits.yaml",
          ("PCDARTS.INIT_CHANNELS", "8", "PCDARTS.LAYERS", "5", "PARITY.BATCH_SIZE", "4"),
          ("PCDARTS.INIT_CHANNELS", "36", "PCDARTS.LAYERS", "20", "PARITY.BATCH_SIZE", "4")),
    Entry("PC-DARTS search network", "pcdarts_search_digits.yaml",
          ("PCDARTS.INIT_CHANNELS", "4", "PCDARTS.LAYERS", "3", "DATA.IMAGE_SIZE", "16", "PARITY.BATCH_SIZE", "4"),
          ("PCDARTS.INIT_CHANNELS", "16", "PCDARTS.LAYERS", "8", "PARITY.BATCH_SIZE", "4")),
    Entry("NAS-Bench-MR MultiResolutionNet", "mrnet_digits.yaml",
          ("NASBENCH_MR.CODE", "8_16-2_1_2_8-2_2_1_2_8_16-1_3_2_1_1_8_16_24-2_4_1_1_2_1_8_16_24_32-16",
           "DATA.IMAGE_SIZE", "65"), ("DATA.IMAGE_SIZE", "224")),
)


def run_all(report_dir: str, full: bool = False, entries: Sequence[Entry] = SUITE, verbose: bool = False) -> int:
    """Run ``entries`` (tiny or full overrides), write ``parity_report.md`` / ``.json`` in ``report_dir``; 0 when
    every verdict passes, else 1."""
    from common import families
    from common.config import load_config
    from common.io_utils import atomic_write_text
    from parity_tests import harness, report

    results: List[Dict[str, Any]] = []
    for entry in entries:
        cfg = load_config(os.path.join(ROOT, "configs", entry.config), list(entry.full if full else entry.tiny))
        module = families.spec_module(cfg.MODEL.FAMILY)
        spec = module.spec_from_config(cfg)
        started = time.perf_counter()
        data = harness.compute_from_config(cfg, module, spec, verbose=verbose).as_dict()
        data["suite"] = {"label": entry.label, "config": f"configs/{entry.config}",
                         "overrides": list(entry.full if full else entry.tiny), "seconds": time.perf_counter() - started}
        results.append(data)
        print(f"{entry.label}: {'PASS' if data['passed'] else 'FAIL'} ({data['suite']['seconds']:.1f} s)", flush=True)
    os.makedirs(report_dir, exist_ok=True)
    passed = all(r["passed"] for r in results)
    json_path = os.path.join(report_dir, "parity_report.json")
    md_path = os.path.join(report_dir, "parity_report.md")
    atomic_write_text(json_path, json.dumps({"format": "twinnas-parity-suite-1", "size": "full" if full else "tiny",
                                             "passed": passed, "families": results}, indent=1, default=str,
                                            allow_nan=False) + "\n")
    text = summary_markdown(results, full) + "\n\n" + "\n\n".join(
        f"## {r['suite']['label']}\n\n" + report.render_markdown(r) for r in results) + "\n"
    atomic_write_text(md_path, text)
    print(summary_markdown(results, full))
    print(f"parity reports: {json_path}\n                {md_path}")
    return 0 if passed else 1


def summary_rows(results: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per family and dtype: the verdict, the worst max-abs / max-rel over the stages (and where), the
    worst float32 bound ratio, the TensorFlow column's worst difference when there is one, the first divergence."""
    rows = []
    for r in results:
        for dtype, run in r["runs"].items():
            stages = run["summary"]
            # the float64 verdict's quantity: max_abs / max(1, scale), worst over the stages
            worst_abs = max((((s.get("worst_abs") or 0.0) / max(1.0, s.get("worst_abs_scale") or 0.0), k)
                             for k, s in stages.items()), default=(0.0, ""))
            forward = stages.get("forward") or stages.get("eval_forward") or {}
            worst_rel = (forward.get("worst_rel"), "forward" if "forward" in stages else "eval_forward")
            ratio = max((s.get("worst_bound_ratio") or 0.0 for s in stages.values()), default=0.0)
            refs = [e["reference"] for e in run["entries"] if e.get("reference")]
            # the reference column (TensorFlow for PNASNet-5): its worst max-rel against either twin
            tf = max((d.get("max_rel", 0.0) for x in refs for d in x.values() if isinstance(d, dict)),
                     default=None) if refs else None
            fd = run.get("first_divergence")
            float64 = dtype == "float64"  # float32 entries are judged by their bound ratio, not a fixed scale
            rows.append({"family": r["suite"]["label"], "dtype": dtype, "passed": run["passed"],
                         "worst_abs": worst_abs[0] if float64 else None, "worst_abs_stage": worst_abs[1], "worst_rel": worst_rel[0],
                         "worst_rel_stage": worst_rel[1], "bound_ratio": None if float64 else ratio,
                         "tf_max_abs": tf, "first_divergence": fd["name"] if isinstance(fd, dict) else fd,
                         "seconds": r["suite"]["seconds"]})
    return rows


def _num(v, fmt: str = ".2e") -> str:
    return "-" if v is None else format(float(v), fmt)


def summary_markdown(results: Sequence[Dict[str, Any]], full: bool) -> str:
    lines = [f"# Parity of the whole toolkit ({'full size' if full else 'tiny'} suite): torch vs paddle", "",
             "Per family and dtype, over every stage (forward eval/train, loss, output/input/parameter gradients, "
             "K optimizer or search steps, weights, BN statistics, optimizer slots, architecture gradients): the "
             "worst max-abs relative to max(1, scale) (the float64 verdict's quantity), the module outputs' worst "
             "max-rel (train-mode forward), the float32 entries' worst ratio to their bound (4 x each backend's own "
             "float32-vs-float64 error; < 1 passes), TensorFlow's worst difference from both twins where it is a "
             "column, the first diverging entry, the time for both dtypes.", "",
             "| family | dtype | verdict | worst max_abs / max(1, scale) (stage) | module outputs max_rel | float32 bound ratio | TF column | "
             "first divergence | s |", "|---|---|---|---|---|---|---|---|---|"]
    for row in summary_rows(results):
        lines.append(f"| {row['family']} | {row['dtype']} | {'pass' if row['passed'] else '**FAIL**'} | "
                     f"{_num(row['worst_abs'])}{' (' + row['worst_abs_stage'] + ')' if row['worst_abs'] is not None else ''} | "
                     f"{_num(row['worst_rel'])} | {_num(row['bound_ratio'], '.3g')} | {_num(row['tf_max_abs'])} | "
                     f"{row['first_divergence'] or 'none'} | {row['seconds']:.0f} |")
    return "\n".join(lines)
