"""Optimizers built from any config node (``OPTIM``, ``ARCH_OPTIM``, ...) and ``LR_GROUPS`` parameter groups.

* ``build_optimizer(cfg, named, node="ARCH_OPTIM")`` gives the PC-DARTS architecture optimizer (Adam, lr 6e-4,
  betas (0.5, 0.999), weight decay 1e-3 on every parameter) on both backends; without ``node`` it is today's OPTIM.
* ``LR_GROUPS`` ("regex=scale", first matching rule wins) puts the same names in the same groups with the same LR
  scale in torch, paddle and the numpy reference; the groups are written once in ``common/optim_reference.py``.
* K steps in float64 of optimizers built from config nodes with LR groups: torch vs numpy, paddle vs numpy and
  torch vs paddle all <= 1e-10 (``F64_TOL`` of ``test_optim_parity.py``).  The numpy column is built from hand-written
  groups (names, scales, decay), not from the grouping function under test.
* A rule that gets no parameter, a malformed rule and a bad regex are ConfigErrors naming ``<NODE>.LR_GROUPS[i]``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import paddle
import pytest
import torch

from common import optim_reference as ref
from conftest import paddle_default_dtype
from common import schedules as S
from common.compare import compare
from common.config import ConfigError, get_default_config, load_config, merge_overrides
from paddle_impl import layout as playout
from paddle_impl import losses as plosses
from paddle_impl import optim as popt
from parity_tests.test_optim_parity import (F64_TOL, K, STEPS_PER_EPOCH, PaddleNet, TorchNet, branch_of,
                                            initial_weights, make_batches, numpy_forward_backward)
from torch_impl import layout as tlayout
from torch_impl import losses as tlosses
from torch_impl import optim as topt

ALL_NAMES = ["conv.weight", "conv.bias", "fc1.weight", "fc1.bias", "head_a.weight", "head_a.bias", "head_b.weight",
             "head_b.bias", "unused.weight", "unused.bias", "gain"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(overrides: Sequence[str] = ()):
    cfg = get_default_config()
    if overrides:
        merge_overrides(cfg, list(overrides))
    return cfg


def _models(dtype: str = "float64"):
    weights = initial_weights()
    t_model = TorchNet().to(torch.float64 if dtype == "float64" else torch.float32)
    tlayout.load_neutral(t_model, weights)
    with paddle_default_dtype(dtype):
        p_model = PaddleNet()
    playout.load_neutral(p_model, weights)
    return t_model, p_model


def _build_both(cfg, node: Any = "OPTIM", unused: str = "skip"):
    t_model, p_model = _models()
    ot = topt.build_optimizer(cfg, tlayout.trainable_named_parameters(t_model), model=t_model, unused_grads=unused,
                              node=node)
    op = popt.build_optimizer(cfg, playout.trainable_named_parameters(p_model), model=p_model, unused_grads=unused,
                              node=node)
    return (t_model, ot), (p_model, op)


def _groups(opt) -> List[Tuple[str, float, float, List[str]]]:
    return [(g["name"], g["lr_scale"], g["weight_decay"], sorted(n for n, _ in g["params"])) for g in opt.param_groups]


# ----------------------------------------------------------------------------------------------- config nodes
def test_optim_defaults_unchanged_and_arch_optim_has_pc_darts_defaults():
    cfg = get_default_config()
    assert dict(cfg.OPTIM) == {"NAME": "sgd", "LR": 0.1, "MOMENTUM": 0.9, "NESTEROV": False, "WEIGHT_DECAY": 0.0,
                               "NO_DECAY_1D": True, "EPS": 1e-8, "ALPHA": 0.9, "BETAS": (0.9, 0.999),
                               "GRAD_CLIP": 0.0, "UNUSED_GRADS": "skip", "LR_GROUPS": ()}
    assert dict(cfg.ARCH_OPTIM) == {"NAME": "adam", "LR": 6e-4, "MOMENTUM": 0.9, "NESTEROV": False,
                                    "WEIGHT_DECAY": 1e-3, "NO_DECAY_1D": False, "EPS": 1e-8, "ALPHA": 0.9,
                                    "BETAS": (0.5, 0.999), "GRAD_CLIP": 0.0, "UNUSED_GRADS": "skip", "LR_GROUPS": ()}
    assert sorted(cfg.ARCH_OPTIM) == sorted(cfg.OPTIM)  # one definition (common.config.optimizer_node)


def test_build_from_arch_optim_gives_pc_darts_adam_on_both_backends():
    cfg = _cfg()
    for node in ("ARCH_OPTIM", cfg.ARCH_OPTIM):  # a node name or the node itself
        (_, ot), (_, op) = _build_both(cfg, node)
        for opt in (ot, op):
            assert type(opt).__name__ == "Adam"
            assert opt.hyper == {"betas": (0.5, 0.999), "eps": 1e-8, "weight_decay": 0.0}  # decay lives in groups
            assert (opt.node_name, opt.base_lr, opt.grad_clip) == ("ARCH_OPTIM", 6e-4, 0.0)
        # NO_DECAY_1D False: one group, weight decay 1e-3 on every parameter (biases too), LR scale 1
        assert _groups(ot) == _groups(op) == [("group0", 1.0, 1e-3, sorted(ALL_NAMES))]
    # the weight optimizer next to it is untouched
    (_, wt), (_, wp) = _build_both(cfg)
    assert type(wt).__name__ == type(wp).__name__ == "SGD" and wt.node_name == "OPTIM" and wt.base_lr == 0.1


def test_build_without_node_is_todays_optim():
    cfg = _cfg(["OPTIM.NAME", "rmsprop_tf", "OPTIM.EPS", "0.001", "OPTIM.WEIGHT_DECAY", "0.00001",
                "ARCH_OPTIM.WEIGHT_DECAY", "0.5", "ARCH_OPTIM.LR_GROUPS", "['^nothing=2']"])  # other node: no effect
    t_model, p_model = _models()
    plain_t = topt.build_optimizer(cfg, tlayout.trainable_named_parameters(t_model), model=t_model)
    plain_p = popt.build_optimizer(cfg, playout.trainable_named_parameters(p_model), model=p_model)
    (_, named_t), (_, named_p) = _build_both(cfg, "OPTIM")
    for opt in (plain_t, plain_p, named_t, named_p):
        assert type(opt).__name__ == "RMSpropTF"
        assert opt.hyper == {"alpha": 0.9, "eps": 1e-3, "momentum": 0.9, "weight_decay": 0.0}
    todays = ref.split_decay(tlayout.trainable_named_parameters(t_model),
                             [p.dim() for _, p in tlayout.trainable_named_parameters(t_model)], 1e-5, True)
    want = [(f"group{i}", g["lr_scale"], g["weight_decay"], sorted(n for n, _ in g["params"]))
            for i, g in enumerate(todays)]
    assert _groups(plain_t) == _groups(plain_p) == _groups(named_t) == _groups(named_p) == want
    assert [w[2] for w in want] == [0.0, 1e-5]


def test_config_files_and_overrides_reach_the_new_node(tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text('ARCH_OPTIM:\n  LR: 3.0e-4\n  LR_GROUPS: ["^head_a\\\\.=10", "bias$=0.5"]\n', encoding="utf-8")
    cfg = load_config(str(path), ["ARCH_OPTIM.BETAS", "[0.6, 0.99]"])
    assert cfg.ARCH_OPTIM.LR_GROUPS == ("^head_a\\.=10", "bias$=0.5")
    spec = ref.optimizer_spec(cfg, "ARCH_OPTIM")
    assert (spec.lr, spec.kwargs["betas"]) == (3e-4, (0.6, 0.99))
    assert [(r.regex, r.scale) for r in spec.lr_groups] == [("^head_a\\.", 10.0), ("bias$", 0.5)]
    with pytest.raises(ConfigError, match="ARCH_OPTIM.NAME"):
        load_config(None, ["ARCH_OPTIM.NAME", "lamb"])
    with pytest.raises(ConfigError, match="ARCH_OPTIM.UNUSED_GRADS"):
        load_config(None, ["ARCH_OPTIM.UNUSED_GRADS", "none"])


# ----------------------------------------------------------------------------------------------- LR groups
# Each case: overrides of one node, the node to build from, and the groups it must give, written out by hand
# (name, LR scale, weight decay, parameters).  The numpy reference runs on these hand-written groups.
BIASES = ["conv.bias", "fc1.bias", "unused.bias"]
CASES: Dict[str, Dict[str, Any]] = {
    # PC-DARTS-like architecture Adam (decay on everything), first-match-wins rules, clipping from the node
    "arch_adam_first_match_wins": dict(
        node="ARCH_OPTIM",
        overrides=["ARCH_OPTIM.LR_GROUPS", "['^head_a\\.=10', '^head_=3', '\\.bias$=0.5']",
                   "ARCH_OPTIM.GRAD_CLIP", "0.5", "ARCH_OPTIM.LR", "0.01"],
        groups=[("default", 1.0, 1e-3, ["conv.weight", "fc1.weight", "unused.weight", "gain"]),
                ("LR_GROUPS[0]", 10.0, 1e-3, ["head_a.weight", "head_a.bias"]),
                ("LR_GROUPS[1]", 3.0, 1e-3, ["head_b.weight", "head_b.bias"]),
                ("LR_GROUPS[2]", 0.5, 1e-3, BIASES)],
        opt=("adam", dict(betas=(0.5, 0.999), eps=1e-8)), lr=0.01, clip=0.5),
    # weight SGD with nesterov, the no-decay split inside every rule group, a fractional-scale 1-D parameter
    "weights_sgd_nesterov_no_decay_1d": dict(
        node="OPTIM",
        overrides=["OPTIM.NESTEROV", "True", "OPTIM.WEIGHT_DECAY", "0.05",
                   "OPTIM.LR_GROUPS", "['^head_(a|b)\\.=10', '^gain$=0.25']"],
        groups=[("default_no_decay", 1.0, 0.0, BIASES),
                ("default", 1.0, 0.05, ["conv.weight", "fc1.weight", "unused.weight"]),
                ("LR_GROUPS[0]_no_decay", 10.0, 0.0, ["head_a.bias", "head_b.bias"]),
                ("LR_GROUPS[0]", 10.0, 0.05, ["head_a.weight", "head_b.weight"]),
                ("LR_GROUPS[1]_no_decay", 0.25, 0.0, ["gain"])],
        opt=("sgd", dict(momentum=0.9, nesterov=True)), lr=0.1, clip=0.0),
    # Cream-like RMSpropTF given as a node object, a '=' inside the regex (lookahead): the scale is after the last '='
    "rmsproptf_node_object_regex_with_equals": dict(
        node="node_object",
        overrides=["OPTIM.NAME", "rmsprop_tf", "OPTIM.EPS", "0.001", "OPTIM.WEIGHT_DECAY", "0.00001",
                   "OPTIM.LR", "0.02", "OPTIM.LR_GROUPS", "['^fc1\\.(?=weight)=2']"],
        groups=[("default_no_decay", 1.0, 0.0, BIASES + ["head_a.bias", "head_b.bias", "gain"]),
                ("default", 1.0, 1e-5, ["conv.weight", "head_a.weight", "head_b.weight", "unused.weight"]),
                ("LR_GROUPS[0]", 2.0, 1e-5, ["fc1.weight"])],
        opt=("rmsprop_tf", dict(alpha=0.9, eps=1e-3, momentum=0.9)), lr=0.02, clip=0.0),
}


def _case_cfg(case):
    cfg = _cfg(case["overrides"])
    node = cfg.OPTIM if case["node"] == "node_object" else case["node"]
    return cfg, node


def _want_groups(case):
    return [(name, scale, wd, sorted(params)) for name, scale, wd, params in case["groups"]]


@pytest.mark.parametrize("case_name", list(CASES))
def test_lr_groups_are_the_same_in_torch_paddle_and_numpy(case_name):
    case = CASES[case_name]
    cfg, node = _case_cfg(case)
    (_, ot), (_, op) = _build_both(cfg, node)
    np_opt = ref.reference_optimizer_from_config(cfg, list(initial_weights().items()), node)
    want = _want_groups(case)
    assert _groups(ot) == want
    assert _groups(op) == want
    assert [(g["name"], g["lr_scale"], g["weight_decay"], sorted(n for n, _ in g["params"]))
            for g in np_opt.groups] == want
    # the neutral record in checkpoints carries the same groups on both backends
    assert ot.state_to_neutral().hyper["groups"] == op.state_to_neutral().hyper["groups"]


def _schedule(lr: float):
    return S.CosineSchedule(lr, t_initial=K / STEPS_PER_EPOCH, lr_min=lr * 0.05, per_step=True)


def _lr(lr: float, step: int) -> float:
    return _schedule(lr).lr_for(step // STEPS_PER_EPOCH, step % STEPS_PER_EPOCH, STEPS_PER_EPOCH)


def _run_torch(cfg, node, unused, batches):
    model, _ = _models()
    opt = topt.build_optimizer(cfg, tlayout.trainable_named_parameters(model), model=model, unused_grads=unused,
                               node=node)
    for k, (x, y) in enumerate(batches):
        opt.zero_grad()
        loss = tlosses.cross_entropy(model(torch.from_numpy(x), branch_of(k)), torch.from_numpy(y), 0.0)
        loss.backward()
        if opt.grad_clip > 0:
            opt.clip_grad_norm(opt.grad_clip)
        opt.step(_lr(opt.base_lr, k))
    return tlayout.state_to_neutral(model), opt.state_to_neutral()


def _run_paddle(cfg, node, unused, batches):
    _, model = _models()
    opt = popt.build_optimizer(cfg, playout.trainable_named_parameters(model), model=model, unused_grads=unused,
                               node=node)
    for k, (x, y) in enumerate(batches):
        opt.zero_grad()
        loss = plosses.cross_entropy(model(paddle.to_tensor(x), branch_of(k)), paddle.to_tensor(y), 0.0)
        loss.backward()
        if opt.grad_clip > 0:
            opt.clip_grad_norm(opt.grad_clip)
        opt.step(_lr(opt.base_lr, k))
    return playout.state_to_neutral(model), opt.state_to_neutral()


def _run_numpy(case, unused, batches):
    """The reference on the hand-written groups of the case (independent of ``build_param_groups``)."""
    params = {k: v.copy() for k, v in initial_weights().items()}
    groups = [{"params": [(n, params[n]) for n in names], "lr_scale": scale, "weight_decay": wd, "name": name}
              for name, scale, wd, names in case["groups"]]
    assert sorted(n for g in groups for n, _ in g["params"]) == sorted(ALL_NAMES)
    name, kw = case["opt"]
    opt = ref.ReferenceOptimizer(name, groups, unused_grads=unused, **kw)
    for k, (x, y) in enumerate(batches):
        _, grads = numpy_forward_backward(params, x, y, branch_of(k), 0.0)
        if case["clip"] > 0:
            grads, _ = ref.clip_grad_norm_ref(grads, case["clip"])
        opt.step(_lr(case["lr"], k), grads)
    return params, opt.slots(), opt.step_count


CASE_IDS = [(c, u) for c in CASES for u in ("skip", "zero")]


@pytest.mark.parametrize("case_name,unused", CASE_IDS, ids=[f"{c}-{u}" for c, u in CASE_IDS])
def test_lr_groups_k_steps_float64_match_the_reference(case_name, unused):
    case = CASES[case_name]
    cfg, node = _case_cfg(case)
    spec = ref.optimizer_spec(cfg, node)
    assert (spec.lr, spec.grad_clip) == (case["lr"], case["clip"])  # the loop takes LR and GRAD_CLIP from the node
    batches = make_batches(K)
    t_params, t_state = _run_torch(cfg, node, unused, batches)
    p_params, p_state = _run_paddle(cfg, node, unused, batches)
    n_params, n_slots, n_steps = _run_numpy(case, unused, batches)
    assert t_state.step == p_state.step == n_steps == K

    columns = {"torch": (t_params, t_state.slots), "paddle": (p_params, p_state.slots)}
    want = {f"param/{k}": v for k, v in n_params.items()}
    want.update({f"slot/{s}/{k}": v for s, per in n_slots.items() for k, v in per.items()})
    got = {b: {**{f"param/{k}": v for k, v in params.items()},
               **{f"slot/{s}/{k}": v for s, per in slots.items() for k, v in per.items()}}
           for b, (params, slots) in columns.items()}
    assert sorted(got["torch"]) == sorted(got["paddle"]) == sorted(want), "state names differ"
    worst, failures = 0.0, []
    for name in sorted(want):
        if name.startswith("slot/step/"):
            assert int(got["torch"][name]) == int(got["paddle"][name]) == int(want[name]), name
            continue
        d = max(compare(got["torch"][name], want[name]).max_abs, compare(got["paddle"][name], want[name]).max_abs,
                compare(got["torch"][name], got["paddle"][name]).max_abs)
        worst = max(worst, d)
        if d > F64_TOL:
            failures.append(f"{name}: float64 {d:.3e} > {F64_TOL}")
    # the groups are not vacuous: every group's parameters moved away from their start where they had gradients
    start = initial_weights()
    moved = {n for n in ALL_NAMES if not np.array_equal(n_params[n], start[n])}
    assert moved >= set(ALL_NAMES) - {"unused.weight", "unused.bias"}
    print(f"\n[optim nodes] {case_name} unused={unused}: worst float64 (t-np, p-np, t-p) {worst:.2e} over "
          f"{len(want)} tensors, {len(case['groups'])} groups")
    assert not failures, "\n".join(failures)


def test_lr_scale_changes_the_update():
    """A scaled group really trains at scale x LR: one SGD step without momentum moves it scale times as far."""
    cfg = _cfg(["OPTIM.MOMENTUM", "0.0", "OPTIM.LR_GROUPS", "['^head_a\\.=10']"])
    base = _cfg(["OPTIM.MOMENTUM", "0.0"])
    x, y = make_batches(1)[0]
    for mod, build in (("torch", _run_torch), ("paddle", _run_paddle)):
        scaled, _ = build(cfg, "OPTIM", "skip", [(x, y)])
        plain, _ = build(base, "OPTIM", "skip", [(x, y)])
        start = initial_weights()
        for name in ("head_a.weight", "head_a.bias"):
            step_scaled, step_plain = scaled[name] - start[name], plain[name] - start[name]
            assert np.any(step_plain != 0), (mod, name)
            assert np.allclose(step_scaled, 10.0 * step_plain, rtol=1e-10, atol=1e-15), (mod, name)
        assert np.array_equal(scaled["conv.weight"], plain["conv.weight"]), mod


# ----------------------------------------------------------------------------------------------- errors
def _all_builders(cfg, node):
    """Build from ``node`` with torch, paddle and the numpy reference: each must raise the same error."""
    t_model, p_model = _models()
    yield lambda: topt.build_optimizer(cfg, tlayout.trainable_named_parameters(t_model), model=t_model, node=node)
    yield lambda: popt.build_optimizer(cfg, playout.trainable_named_parameters(p_model), model=p_model, node=node)
    yield lambda: ref.reference_optimizer_from_config(cfg, list(initial_weights().items()), node)


@pytest.mark.parametrize("rules,match", [
    (["^classifer\\.=10"], r"ARCH_OPTIM\.LR_GROUPS\[0\] = '\^classifer\\\\\.=10' matches no trainable parameter"),
    (["^head_a=2", "^head_b=3", "^head_a\\.bias=4"], r"ARCH_OPTIM\.LR_GROUPS\[2\] .*taken by an earlier rule"),
    (["^head_(a=2"], r"ARCH_OPTIM\.LR_GROUPS\[0\] = '\^head_\(a=2': .*not a valid regular expression"),
    (["^head_a"], r"ARCH_OPTIM\.LR_GROUPS\[0\] = '\^head_a' is not \"regex=scale\""),
    (["=2"], r"ARCH_OPTIM\.LR_GROUPS\[0\] = '=2' is not \"regex=scale\""),
    (["^head_a=ten"], r"ARCH_OPTIM\.LR_GROUPS\[0\] .*LR scale 'ten' is not a number"),
    (["^head_a=-1"], r"ARCH_OPTIM\.LR_GROUPS\[0\] .*must be a finite number >= 0"),
    (["^head_a=2", "^head_b=nan"], r"ARCH_OPTIM\.LR_GROUPS\[1\] .*must be a finite number >= 0"),
])
def test_bad_lr_groups_are_config_errors_naming_the_key(rules, match):
    cfg = _cfg()
    cfg.ARCH_OPTIM.LR_GROUPS = tuple(rules)
    for build in _all_builders(cfg, "ARCH_OPTIM"):
        with pytest.raises(ConfigError, match=match):
            build()


def test_lr_groups_from_yaml_must_be_strings(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("OPTIM:\n  LR_GROUPS: [{'^head_a': 10}]\n", encoding="utf-8")
    # the rules' form is checked when the config loads, naming the file (before any work) ...
    with pytest.raises(ConfigError, match=r"bad\.yaml: OPTIM\.LR_GROUPS\[0\] .*must be a \"regex=scale\" string"):
        load_config(str(path))
    # ... and again by every builder, for a config that skipped validation
    cfg = get_default_config()
    merge_overrides(cfg, ["OPTIM.LR_GROUPS", "[{'^head_a': 10}]"])
    for build in _all_builders(cfg, "OPTIM"):
        with pytest.raises(ConfigError, match=r"OPTIM\.LR_GROUPS\[0\] .*must be a \"regex=scale\" string"):
            build()


def test_bad_nodes_are_config_errors():
    cfg = _cfg()
    for node, match in (("NO_SUCH_OPTIM", r"no config node 'NO_SUCH_OPTIM' \(optimizer nodes in this config: "
                                          r"\[.*'OPTIM', 'META_OPTIM', 'ARCH_OPTIM'.*\]\)"),
                        ("DATA", r"DATA\.NAME is missing: DATA is not an optimizer node"),
                        ("SEED", r"SEED = 42 is a value, not an optimizer node")):
        for build in _all_builders(cfg, node):
            with pytest.raises(ConfigError, match=match):
                build()
    node = cfg.ARCH_OPTIM.clone()  # a node object that is not in cfg: errors still name its keys
    node.NAME = "lamb"
    for build in _all_builders(cfg, node):
        with pytest.raises(ConfigError, match=r"<optimizer node>\.NAME = 'lamb'"):
            build()
    cfg.ARCH_OPTIM.NAME = "lamb"
    for build in _all_builders(cfg, cfg.ARCH_OPTIM):
        with pytest.raises(ConfigError, match=r"ARCH_OPTIM\.NAME = 'lamb' is not one of"):
            build()


def test_the_nodes_unused_grads_is_used_when_the_caller_gives_none():
    """ARCH_OPTIM.UNUSED_GRADS must not be a key that is silently ignored: without an explicit argument the
    optimizer follows its node, in both trees and the numpy reference."""
    cfg = _cfg(["ARCH_OPTIM.UNUSED_GRADS", "zero"])
    t_model, p_model = TorchNet(), PaddleNet()
    assert topt.build_optimizer(cfg, tlayout.trainable_named_parameters(t_model), node="ARCH_OPTIM").unused_grads == "zero"
    assert popt.build_optimizer(cfg, playout.trainable_named_parameters(p_model), model=p_model,
                                node="ARCH_OPTIM").unused_grads == "zero"
    assert topt.build_optimizer(cfg, tlayout.trainable_named_parameters(t_model)).unused_grads == "skip"
    assert topt.build_optimizer(cfg, tlayout.trainable_named_parameters(t_model), node="ARCH_OPTIM",
                                unused_grads="skip").unused_grads == "skip"
