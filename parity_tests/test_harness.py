"""The parity harness (``parity_tests/harness.py``, ``report.py``, ``*_impl/capture.py``).

Part 1 tests the comparison, verdict, ordering and report logic on hand-made captures (arrays only).
Part 2 runs the real Cream child net (a tiny custom path, 32 px) in both backends:
  * float64 and float32 parity pass for forward (eval and train mode with numpy dropout / drop-path masks),
    gradients and 3 RMSpropTF + EMA steps; every module appears in the reports; the figures are printed;
  * sabotage: one layer changed in one backend is named as the first divergence, with the right stage;
  * ``python tools/main.py parity <config>`` end to end.

The batch is 8 images of 32 px: the last stage runs at 1x1, so train-mode BatchNorm there normalises over the batch
only.  With 2 images (2 values per channel) that BN amplifies rounding ~1e6x (measured: float64 train-mode
outputs part by 1.9e-10 at ``blocks.6.0.bn1`` whose inputs agree to 6.5e-13, gradients by up to 7.7e-7), which
the harness reports as a failure; with 8 images float64 agrees to ~1e-13.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from parity_tests import harness, report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_ARCH = "[[0], [3], [3, 3], [3], [3], [3], [0]]"   # stage 2 has two blocks: its second one gets a DropPath


# ================================================================================ part 1: arrays only
def _rec(key, arr, module=None, cls="Conv2d"):
    module = module or key.split("[", 1)[0].split("#", 1)[0]
    return {"key": key, "module": module, "call": 1, "type": cls, "array": np.asarray(arr, dtype=np.float64)}


def _cap(forward=(), inputs=None, grads=(), weights=None, modules=None):
    cap = {"forward": [_rec(*f) for f in forward], "forward_inputs": inputs or {}}
    cap["modules"] = modules or [(r["module"], r["type"]) for r in cap["forward"]]
    if grads:
        cap["grad"] = [(k, None if v is None else np.asarray(v, np.float64)) for k, v in grads]
    if weights is not None:
        cap["weight"] = {k: np.asarray(v, np.float64) for k, v in weights.items()}
        cap["state_names"] = list(weights)
    return cap


def test_float64_rule_is_absolute_below_scale_one_and_relative_above():
    big = np.full(4, 1e6)
    small = np.full(4, 0.5)
    a = _cap([("big", big + 1e-5), ("small", small + 2e-10), ("mid", np.full(3, 1e3) + 2e-7), ("same", small)])
    b = _cap([("big", big), ("small", small), ("mid", np.full(3, 1e3)), ("same", small)])
    run = harness.compare_captures("float64", ("torch", "paddle"), a, b)
    by = {e.name: e for e in run.entries}
    assert by["big"].passed and by["big"].tol_abs == pytest.approx(1e-4)       # 1e-11 relative
    assert not by["small"].passed and by["small"].tol_abs == pytest.approx(1e-10)  # 2e-10 absolute at scale 0.5
    assert not by["mid"].passed                                                  # 2e-10 relative at scale 1e3
    assert by["same"].passed and by["same"].max_abs == 0.0
    assert run.first_divergence.name == "small"
    assert not run.passed


def test_missing_shape_and_nonfinite_entries_fail_and_are_named():
    x = np.arange(6.0).reshape(2, 3)
    a = _cap([("stem", x), ("extra", x), ("head", x), ("nan", np.array([1.0, np.nan]))])
    b = _cap([("stem", x), ("head", x.reshape(3, 2)), ("nan", np.array([1.0, 2.0]))])
    run = harness.compare_captures("float64", ("torch", "paddle"), a, b)
    by = {e.name: e for e in run.entries}
    assert by["extra"].status == "missing:paddle" and not by["extra"].passed and "only in torch" in by["extra"].note
    assert by["head"].status == "shape" and not by["head"].passed
    assert by["nan"].diff.nonfinite == 1 and not by["nan"].passed
    assert by["stem"].passed
    assert run.first_divergence.name == "extra"
    assert "structure" in run.localisation


def test_first_divergence_names_the_module_whose_inputs_agree():
    x = np.linspace(-1, 1, 8)
    a = _cap([("conv", x), ("bn", 2 * x), ("act", 3 * x)], inputs={"conv": [x], "bn": [x], "act": [2 * x]})
    b = _cap([("conv", x), ("bn", 2 * x + 1e-6), ("act", 3 * x + 2e-6)],
             inputs={"conv": [x], "bn": [x], "act": [2 * x + 1e-6]})
    run = harness.compare_captures("float64", ("torch", "paddle"), a, b)
    assert run.first_divergence.name == "bn"
    assert run.first_divergence.input_passed is True
    assert "itself computes differently" in run.localisation
    act = [e for e in run.entries if e.name == "act"][0]
    assert act.input_passed is False and act.input_max_rel == pytest.approx(1e-6 / 2, rel=1e-5)
    # a divergence that starts between modules (the inputs already differ) is told apart
    b2 = _cap([("conv", x), ("bn", 2 * x + 1e-6)], inputs={"conv": [x], "bn": [x + 1e-6]})
    a2 = _cap([("conv", x), ("bn", 2 * x)], inputs={"conv": [x], "bn": [x]})
    run2 = harness.compare_captures("float64", ("torch", "paddle"), a2, b2)
    assert "between modules" in run2.localisation


def test_stage_order_and_backward_order_of_gradients():
    x = np.ones(3)
    fwd = [("conv_stem", x), ("blocks.0", x), ("head", x)]
    grads = [("conv_stem.weight", x), ("blocks.0.weight", x), ("blocks.0.bias", x), ("head.weight", x),
             ("unused.weight", None)]
    a = _cap(fwd, grads=grads, weights={"conv_stem.weight": x, "head.weight": x, "blocks.0.weight": x})
    b_grads = [(k, (v + 1e-3) if (v is not None and k == "conv_stem.weight") else v) for k, v in grads]
    b = _cap(fwd, grads=b_grads, weights={"conv_stem.weight": x, "head.weight": x + 1.0, "blocks.0.weight": x})
    run = harness.compare_captures("float64", ("torch", "paddle"), a, b)
    grad_names = [e.name for e in run.stage_entries("grad")]
    # backward order: the module that ran last first; definition order inside a module; unused at the end
    assert grad_names == ["head.weight", "blocks.0.weight", "blocks.0.bias", "conv_stem.weight", "unused.weight"]
    assert [e.name for e in run.stage_entries("weight")] == ["conv_stem.weight", "blocks.0.weight", "head.weight"]
    unused = run.stage_entries("grad")[-1]
    assert unused.status == "no_grad" and unused.passed
    # grads come before post-step weights in stage order
    assert run.first_divergence.stage == "grad" and run.first_divergence.name == "conv_stem.weight"


def test_float32_bound_is_derived_from_each_backends_own_float64_error():
    rng = np.random.default_rng(0)
    t64 = rng.standard_normal(50)
    p64 = t64 + 1e-15
    t32 = t64 + 1e-7            # torch's own float32 error: 1e-7
    p32_ok = t64 + 4e-7         # |t32 - p32| = 3e-7 <= 4 * max(1e-7, 4e-7)
    base = lambda arr: _cap([("layer", arr)])
    ok = harness.compare_captures("float32", ("torch", "paddle"), base(t32), base(p32_ok), base(t64), base(p64))
    e = ok.entries[0]
    assert e.own_err_a == pytest.approx(1e-7, rel=1e-6) and e.own_err_b == pytest.approx(4e-7, rel=1e-3)
    assert e.tol_abs == pytest.approx(4 * e.own_err_b) and e.passed
    assert e.goal_passed == (e.max_rel <= harness.F32_GOAL_REL)
    assert e.own_ratio == pytest.approx(4.0, rel=1e-3)
    # an entry whose float64 values already part by more than 2x the own errors fails (triangle inequality:
    # |t32 - p32| <= err_t + |t64 - p64| + err_p, so with c = 4 nothing else can fail)
    p64_bad = p64.copy()
    p64_bad[7] += 1e-5
    p32_bad = p64_bad + 4e-7
    bad = harness.compare_captures("float32", ("torch", "paddle"), base(t32), base(p32_bad), base(t64),
                                   base(p64_bad))
    assert not bad.entries[0].passed and bad.entries[0].bound_ratio > 1
    assert bad.entries[0].diff.worst_index == (7,)
    # a float32-only precision loss in one backend raises its own error and the bound with it: the bound passes,
    # the goal column and the own-error ratio show it
    p32_lossy = p64 + 1e-4
    lossy = harness.compare_captures("float32", ("torch", "paddle"), base(t32), base(p32_lossy), base(t64),
                                     base(p64))
    assert lossy.entries[0].passed and lossy.entries[0].goal_passed is False
    assert lossy.entries[0].own_ratio == pytest.approx(1000, rel=1e-3)
    assert lossy.summary()["forward"]["goal_failed"] == 1
    assert lossy.summary()["forward"]["worst_own_ratio"] == pytest.approx(1000, rel=1e-3)
    # both backends exact in float32 -> bound 0 -> must be equal
    exact = np.array([0.5, 0.25])
    z = harness.compare_captures("float32", ("torch", "paddle"), base(exact), base(exact + 1e-9), base(exact),
                                 base(exact + 1e-9))
    assert z.entries[0].tol_abs == 0.0 and not z.entries[0].passed
    # no float64 counterpart: no bound, the entry fails with a note
    none = harness.compare_captures("float32", ("torch", "paddle"), base(t32), base(t32), None, None)
    assert not none.entries[0].passed and "float64" in none.entries[0].note


def test_reference_column_is_compared_against_both_backends():
    x = np.linspace(0.1, 1, 5)
    a, b = _cap([("stem", x), ("head", 2 * x)]), _cap([("stem", x), ("head", 2 * x)])
    ref = harness.Reference(name="tensorflow", arrays={"stem": x + 1e-7, "head": 2 * x + 1e-3, "tf_only": x},
                            stage="forward", rel_tol=1e-5)
    run = harness.compare_captures("float64", ("torch", "paddle"), a, b, reference=ref)
    by = {e.name: e for e in run.entries}
    assert by["stem"].ref_passed is True and by["stem"].reference["paddle"].max_abs == pytest.approx(1e-7)
    assert by["head"].ref_passed is False and by["head"].passed   # the backends agree; the reference parts
    assert run.reference_unmatched == ["tf_only"]
    assert run.first_divergence.name == "head" and "reference" in run.localisation
    figures_only = harness.compare_captures("float64", ("torch", "paddle"), a, b,
                                            reference={"name": "tf", "stage": "forward",
                                                       "arrays": {"head": 2 * x + 1e-3}})
    assert figures_only.passed and figures_only.entries[1].reference["torch"].max_abs == pytest.approx(1e-3)


def test_stage_groups_are_checked():
    assert harness._resolve_groups(None) == harness.DEFAULT_GROUPS
    assert harness._resolve_groups(["grad", "forward"]) == ("backward", "forward")
    with pytest.raises(harness.ParityError, match="bogus"):
        harness._resolve_groups(["bogus"])


def test_reports_render_every_entry_mark_failures_and_write_atomically(tmp_path):
    x = np.linspace(-1, 1, 6)
    a = _cap([("conv_stem", x), ("blocks.0|odd", x), ("head", x)])
    b = _cap([("conv_stem", x), ("blocks.0|odd", x + 1e-3), ("head", x)])
    run = harness.compare_captures("float64", ("torch", "paddle"), a, b)
    result = harness.ParityResult(("torch", "paddle"), {"float64": run},
                                  {"family": "demo", "model": "m", "batch_shape": [2, 3, 8, 8], "steps": 0,
                                   "elapsed_s": math.inf})
    data = result.as_dict()
    json_path, md_path = report.write_reports(data, str(tmp_path / "rep"))
    assert sorted(os.listdir(tmp_path / "rep")) == ["parity.json", "parity.md"]   # no temp files left behind
    loaded = json.load(open(json_path))                                            # strict JSON (inf -> "inf")
    assert loaded["meta"]["elapsed_s"] == "inf" and loaded["passed"] is False
    assert loaded["first_divergence"]["name"] == "blocks.0|odd"
    assert [e["name"] for e in loaded["runs"]["float64"]["entries"]] == ["conv_stem", "blocks.0|odd", "head"]
    md = open(md_path).read()
    assert "**Verdict: FAIL**" in md and "First divergence (float64)" in md
    assert md.count("**FAIL**") == 1 and "blocks.0\\|odd" in md          # the pipe is escaped in the table
    assert report.render_markdown(loaded) == md                           # the JSON alone renders the same report
    assert "first divergence (float64)" in report.console_summary(data)


# ================================================================================ part 2: the real Cream net
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: tiny tensors, one torch thread


def _cream():
    from common.specs import cream

    return cream


TINY_KEYS = {
    "MODEL": {"FAMILY": "cream", "NAME": "cream_tiny", "NUM_CLASSES": 10, "DROPOUT": 0.2, "DROP_PATH": 0.2},
    "CREAM": {"ARCH": TINY_ARCH},
    "DATA": {"IMAGE_SIZE": 32},
    "OPTIM": {"NAME": "rmsprop_tf", "LR": 0.01, "EPS": 0.001, "MOMENTUM": 0.9, "ALPHA": 0.9, "WEIGHT_DECAY": 1e-5},
    "SCHED": {"NAME": "constant"},
    "TRAIN": {"EMA_DECAY": 0.9, "LABEL_SMOOTHING": 0.1},
    "PARITY": {"BATCH_SIZE": 8, "STEPS": 3, "DTYPES": ["float64", "float32"], "TRAIN_MODE": True},
}


def _tiny_cfg():
    from common.config import get_default_config

    cfg = get_default_config()
    for section, values in TINY_KEYS.items():
        for key, value in values.items():
            cfg[section][key] = tuple(value) if isinstance(value, list) else value
    return cfg


@pytest.fixture(scope="module")
def tiny():
    cream = _cream()
    cfg = _tiny_cfg()
    return cfg, cream, cream.spec_from_config(cfg)


@pytest.fixture(scope="module")
def full_result(tiny):
    cfg, cream, spec = tiny
    t0 = time.perf_counter()
    result = harness.compare_backends(cfg, cream, spec)
    result.meta["test_wall_s"] = time.perf_counter() - t0
    return result


def _sub(model, name):
    if hasattr(model, "get_submodule"):
        return model.get_submodule(name)
    return dict(model.named_sublayers())[name]


def test_tiny_cream_float64_and_float32_parity_pass(full_result, capsys):
    r = full_result
    data = r.as_dict()
    with capsys.disabled():
        print(f"\n{report.console_summary(data)}\n  (wall {r.meta['test_wall_s']:.1f} s)")
    assert r.meta["steps"] == 3 and r.meta["optimizer"] == "rmsprop_tf" and r.meta["ema_decay"] == 0.9
    assert r.meta["mask_draws"] >= 2            # the classifier dropout and the DropPath both drew numpy masks
    for dtype in ("float64", "float32"):
        run = r.runs[dtype]
        stages = {e.stage for e in run.entries}
        search_only = {"arch_grad", "derived"}  # the stages of a search task (parity_tests/test_pcdarts_search_parity)
        assert stages == set(harness.STAGES) - search_only, sorted(set(harness.STAGES) - search_only - stages)
        assert run.passed, run.localisation
        assert run.first_divergence is None
        assert all(e.status in ("compared", "no_grad") for e in run.entries)
    # float64 proves the structure: every forward output and loss within 1e-10 (relative to max(1, scale))
    assert max(e.max_abs / max(1.0, e.diff.ref_scale) for e in r.runs["float64"].entries if e.diff) <= 1e-10
    # float32: the forward-output goal holds too on this net
    assert all(e.goal_passed for e in r.runs["float32"].entries if e.goal_passed is not None)
    # train mode really drops: the dropout output differs from its input, identically in both backends
    fwd = {e.name: e for e in r.runs["float64"].stage_entries("forward")}
    assert "dropout" in fwd and "blocks.2.1.drop_path" in fwd
    assert fwd["dropout"].passed and fwd["blocks.2.1.drop_path"].passed
    ev = {e.name for e in r.runs["float64"].stage_entries("eval_forward")}
    assert "dropout" in ev


def test_spilled_captures_give_the_same_report(full_result, tiny, monkeypatch):
    """``spill=True`` keeps each finished run on disk (memory-mapped): every figure of the report is the same."""
    cfg, cream, spec = tiny
    monkeypatch.setattr(harness, "SPILL_MIN_BYTES", 0)   # spill every array, however small
    spilled = harness.compare_backends(cfg, cream, spec, spill=True)
    for dtype in ("float64", "float32"):
        want = [(e.stage, e.name, e.status, e.max_abs, e.passed) for e in full_result.runs[dtype].entries]
        got = [(e.stage, e.name, e.status, e.max_abs, e.passed) for e in spilled.runs[dtype].entries]
        assert got == want, dtype
    assert spilled.as_dict()["runs"] == full_result.as_dict()["runs"]


def test_reports_contain_every_module_and_every_figure(full_result, tiny, tmp_path):
    cfg, cream, spec = tiny
    from torch_impl import capture as tcap
    from torch_impl.backend import Backend

    model = Backend(dtype="float64").build_model("cream", spec)
    modules = [name for name, _ in tcap.module_table(model)]
    data = full_result.as_dict()
    json_path, md_path = report.write_reports(data, str(tmp_path))
    md = open(md_path).read()
    loaded = json.load(open(json_path))
    for dtype in ("float64", "float32"):
        entries = loaded["runs"][dtype]["entries"]
        fwd = [e["name"] for e in entries if e["stage"] == "forward"]
        assert set(modules) <= set(fwd), sorted(set(modules) - set(fwd))
        for e in entries:
            if e["status"] == "compared":
                assert {"max_abs", "max_rel", "worst_index", "value_a", "value_b", "shape_a", "tol_abs",
                        "passed"} <= set(e) and e["max_abs"] is not None
        assert loaded["runs"][dtype]["summary"]["forward"]["entries"] == len(fwd)
    for name in modules:
        assert f"`{name}`" in md, name
    assert md.startswith("# Parity report: cream `cream_tiny`, torch vs paddle")
    assert "**Verdict: PASS**" in md and "First divergence:** none" in md
    assert loaded["meta"]["batch_shape"] == [8, 3, 32, 32] and loaded["meta"]["seed"] == cfg.SEED
    import paddle
    import torch

    assert loaded["meta"]["backends"]["paddle"]["version"] == paddle.__version__
    assert loaded["meta"]["backends"]["torch"]["version"] == torch.__version__
    assert loaded["meta"]["config"]["CREAM"]["ARCH"] == TINY_ARCH


def _sabotaged(tiny, after_load, stages):
    cfg, cream, spec = tiny
    return harness.compare_backends(cfg, cream, spec, dtypes=["float64"], stages=stages, after_load=after_load)


def test_sabotage_conv_weight_in_paddle_is_the_first_divergence(tiny):
    def plus_1e3(backend, dtype, model):
        if backend == "paddle":
            w = _sub(model, "blocks.2.0.conv_pw").weight
            w.set_value(w.numpy() + 1e-3)

    r = _sabotaged(tiny, plus_1e3, ["eval_forward", "forward"])
    dtype, first = r.first_divergence
    assert (dtype, first.stage, first.name, first.type) == ("float64", "eval_forward", "blocks.2.0.conv_pw", "Conv2d")
    assert first.input_passed and "itself computes differently" in r.runs["float64"].localisation
    earlier = [e for e in r.runs["float64"].stage_entries("eval_forward") if e.order < first.order]
    assert earlier and all(e.passed for e in earlier)


def test_sabotage_bn_eps_in_torch_is_the_first_divergence(tiny):
    def eps(backend, dtype, model):
        if backend == "torch":
            _sub(model, "blocks.3.0.bn2").eps = 1e-3

    r = _sabotaged(tiny, eps, ["eval_forward", "forward", "backward"])
    _, first = r.first_divergence
    assert (first.stage, first.name, first.type) == ("eval_forward", "blocks.3.0.bn2", "BatchNorm2d")
    assert not r.passed


def test_sabotage_bn_momentum_in_paddle_shows_first_in_the_running_stats(tiny):
    """Forward, gradients and weights are untouched by the BN momentum (train-mode BN uses batch statistics):
    the first divergence is that BN's running mean after the steps."""
    def momentum(backend, dtype, model):
        if backend == "paddle":
            _sub(model, "blocks.4.0.bn2").momentum = 0.2

    r = _sabotaged(tiny, momentum, None)
    _, first = r.first_divergence
    assert (first.stage, first.name, first.module) == ("running_stat", "blocks.4.0.bn2.running_mean",
                                                       "blocks.4.0.bn2")
    run = r.runs["float64"]
    for stage in ("eval_forward", "forward", "loss", "output_grad", "input_grad", "grad", "train_loss", "weight",
                  "update", "optimizer_slot"):
        assert all(e.passed for e in run.stage_entries(stage)), stage
    failed_stats = {e.name for e in run.stage_entries("running_stat") if not e.passed}
    assert failed_stats == {"blocks.4.0.bn2.running_mean", "blocks.4.0.bn2.running_var"}
    assert "running statistics of `blocks.4.0.bn2`" in run.localisation


def test_repeated_calls_and_tuple_outputs_are_keyed_and_compared(tiny):
    """The real net, patched the same way in both backends: the stem's ``act1`` runs a second time on the features
    (-> ``act1#2``) and the model returns ``(logits, logits / 2)`` (-> ``(model)[0]``, ``(model)[1]``; the second
    is an auxiliary head for the loss, TRAIN.AUX_WEIGHT 0.4)."""
    cfg, cream, spec = tiny
    cfg = cfg.clone()
    cfg.TRAIN.AUX_WEIGHT = 0.4

    def patch(backend, dtype, model):
        features, forward = model.forward_features, model.forward
        model.forward_features = lambda x: model.act1(features(x))
        model.forward = lambda x: (lambda y: (y, y * 0.5))(forward(x))

    r = harness.compare_backends(cfg, cream, spec, dtypes=["float64"], steps=1, after_load=patch)
    run = r.runs["float64"]
    assert run.passed, run.localisation
    for stage in ("eval_forward", "forward"):
        names = [e.name for e in run.stage_entries(stage)]
        assert {"act1", "act1#2", "(model)[0]", "(model)[1]"} <= set(names)
        assert names.index("act1#2") > names.index("blocks")      # execution order
        second = run.entries[[i for i, e in enumerate(run.entries) if e.stage == stage and e.name == "act1#2"][0]]
        assert second.module == "act1" and second.input_passed
    assert "(model)[1]" in {e.name for e in run.stage_entries("output_grad")}


def test_run_from_config_exit_code_1_and_reports_on_a_divergence(tiny, tmp_path, monkeypatch, capsys):
    cfg, cream, spec = tiny
    from torch_impl.backend import Backend

    cfg = cfg.clone()
    cfg.PARITY.DTYPES = ("float64",)
    cfg.PARITY.STEPS = 1
    build = Backend.build_model

    def sabotaged_build(self, family, spec_):
        model = build(self, family, spec_)
        model.get_submodule("blocks.5.0.bn1").eps = 1e-2
        return model

    monkeypatch.setattr(Backend, "build_model", sabotaged_build)
    code = harness.run_from_config(cfg, cream, spec, str(tmp_path), stages=["eval_forward"], verbose=False)
    out = capsys.readouterr().out
    assert code == 1
    assert "first divergence (float64): forward (eval) blocks.5.0.bn1" in out
    assert str(tmp_path / "parity.md") in out
    md = open(tmp_path / "parity.md").read()
    assert "**First divergence (float64): forward (eval) `blocks.5.0.bn1`**" in md


def _tiny_yaml(tmp_path, steps=2):
    import yaml

    keys = {k: dict(v) for k, v in TINY_KEYS.items()}
    keys["PARITY"] = dict(keys["PARITY"], STEPS=steps)
    config = tmp_path / "tiny_cream.yaml"
    config.write_text(yaml.safe_dump(keys))
    return config


def _check_cli_report(report_dir, steps):
    data = json.load(open(report_dir / "parity.json"))
    assert data["passed"] and data["meta"]["steps"] == steps and set(data["runs"]) == {"float64", "float32"}
    assert data["meta"]["model"] == "cream_tiny" and data["meta"]["batch_shape"] == [8, 3, 32, 32]
    assert (report_dir / "parity.md").read_text().startswith("# Parity report: cream `cream_tiny`")


def test_parity_command_from_a_yaml_config(tmp_path, capsys):
    """``tools.commands.run_parity`` (what ``tools/main.py parity`` calls) on a config file written here."""
    _cream()
    import argparse

    from tools import commands

    config = _tiny_yaml(tmp_path, steps=1)
    report_dir = tmp_path / "report"
    args = argparse.Namespace(config=str(config), overrides=["PARITY.DTYPES", "[float64, float32]"],
                              report=str(report_dir), output="")
    assert commands.run_parity(args) == 0
    assert str(report_dir / "parity.md") in capsys.readouterr().out
    _check_cli_report(report_dir, 1)


def test_cli_parity_end_to_end(tmp_path):
    _cream()
    config = _tiny_yaml(tmp_path)
    report_dir = tmp_path / "report"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "main.py"), "parity", str(config),
                           "--report", str(report_dir)], cwd=str(tmp_path), env=env, capture_output=True,
                          text=True, timeout=600)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PASS" in proc.stdout and str(report_dir / "parity.json") in proc.stdout
    _check_cli_report(report_dir, 2)
    print(f"\ntools/main.py parity: exit 0 in {wall:.1f} s")
