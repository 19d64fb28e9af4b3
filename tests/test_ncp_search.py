"""NCP (``search`` with the predictor family): gradient steps on the code through a trained predictor, rounded to
valid networks each iteration, on both backends with the same rounded trajectory; budgets respected; several
predictors in one objective; the returned code is a config `train` reads; mistakes are one line."""
import json
import os

import numpy as np
import pytest
import yaml

from common import ncp_search as N
from common.config import load_config
from common.specs import nasbench_mr as MR
from common.specs import ncp as P
from tools.main import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "ncp_predictor_seg.yaml")
VIDEO = os.path.join(ROOT, "configs", "ncp_predictor_video.yaml")
QUICK = ["TRAIN.EPOCHS", "30", "THREADS", "1"]


@pytest.fixture(scope="module")
def predictors(tmp_path_factory):
    """A seg and a video predictor, trained briefly (30 epochs of the recipe's one cycle, ~6 s each) with the real command."""
    base = tmp_path_factory.mktemp("predictors")
    out = {}
    for name, config in (("seg", CONFIG), ("video", VIDEO)):
        run_dir = str(base / name)
        assert main(["train", config, "--backend", "torch", *QUICK, "--output", run_dir]) == 0
        out[name] = os.path.join(run_dir, "best.safetensors")
    return out


def search(tmp_path, backend, weights, *extra, name="ncp"):
    run_dir = str(tmp_path / f"{name}_{backend}")
    code = main(["search", CONFIG, "--backend", backend, "MODEL.WEIGHTS", weights, "THREADS", "1", *extra,
                 "--output", run_dir])
    return code, run_dir


def test_rounding_and_the_box():
    lows = tuple(b[0] for b in MR.BOUNDS)
    assert MR.round_embedding([0.2] * 27) == lows  # clamped to the box (widths 8, counts 1)
    assert MR.round_embedding([200.0] * 27) == tuple(b[1] for b in MR.BOUNDS)
    # upstream's rounding: max(d, int(v + d/2) // d * d): 12.0 -> 16, 11.9 -> 8, 2.5 -> 3, 2.4 -> 2
    assert MR.round_embedding([12.0, 11.9, 2.5, 2.4] + list(lows[4:]))[:4] == (16, 8, 3, 2)
    spec = P.predictor_spec("seg")
    lo, hi = N.box(spec)
    raw_lo = lo * np.asarray(spec.input_std) + np.asarray(spec.input_mean)
    raw_hi = hi * np.asarray(spec.input_std) + np.asarray(spec.input_mean)
    np.testing.assert_allclose(raw_lo, [b[0] for b in MR.BOUNDS])
    np.testing.assert_allclose(raw_hi, [b[1] for b in MR.BOUNDS])


@pytest.mark.parametrize("backend", ["torch", "paddle"])
def test_ncp_raises_the_prediction_while_flops_fall_and_exports_a_train_config(backend, predictors, tmp_path):
    code, run_dir = search(tmp_path, backend, predictors["seg"])
    assert code == 0
    traj = json.load(open(os.path.join(run_dir, "trajectory.json")))
    start, steps = traj["start"], traj["steps"]
    assert len(steps) == 70 and start["rounded"] == list(MR.DEFAULT_START)
    best = steps[traj["best_iteration"] - 1]
    gain = best["predicted"]["mIoU"] - start["predicted"]["mIoU"]
    assert gain >= 1.0 and best["flops"] < start["flops"], (gain, best["flops"], start["flops"])
    for step in steps:  # every rounded code is a network of the space, counted with the benchmark's rule
        MR.check_embedding(step["rounded"])
        assert (step["flops"], step["params"]) == pytest.approx(MR.table_counts(step["rounded"]), rel=1e-12)
    saved = MR.load_code(os.path.join(run_dir, "best_code.json"))
    assert list(saved.embedding()) == best["rounded"]
    assert os.path.getsize(os.path.join(run_dir, "trajectory.png")) > 10_000
    text = open(os.path.join(run_dir, "best_config.yaml")).read()
    data = yaml.safe_load(text)
    assert data["NASBENCH_MR"]["CODE"] == saved.code()
    cfg = load_config(os.path.join(run_dir, "best_config.yaml"), ["NASBENCH_MR.TASK", "classification",
                                                                  "MODEL.NUM_CLASSES", "10", "DATA.IMAGE_SIZE", "64"])
    assert MR.spec_from_config(cfg).code == saved
    print(f"\n{backend}: predicted mIoU {start['predicted']['mIoU']:.2f} -> {best['predicted']['mIoU']:.2f}, "
          f"{start['flops']:.3f} -> {best['flops']:.3f} GMACs (iteration {best['iteration']})")


def test_both_backends_walk_the_same_rounded_codes(predictors, tmp_path):
    runs = {b: json.load(open(os.path.join(search(tmp_path, b, predictors["seg"])[1], "trajectory.json")))
            for b in ("torch", "paddle")}
    t, p = runs["torch"]["steps"], runs["paddle"]["steps"]
    assert [s["rounded"] for s in t] == [s["rounded"] for s in p]
    worst = max(np.max(np.abs(np.subtract(a["continuous"], b["continuous"]))) for a, b in zip(t, p))
    assert worst < 1e-3, worst  # float32 predictors: the continuous codes agree to rounding
    assert runs["torch"]["best_iteration"] == runs["paddle"]["best_iteration"]


def test_a_flops_budget_is_respected(predictors, tmp_path):
    code, run_dir = search(tmp_path, "torch", predictors["seg"], "NCP.MAX_FLOPS", "1.0", "NCP.OBJECTIVES",
                           "['mIoU=1']", name="budget")
    assert code == 0
    best = json.load(open(os.path.join(run_dir, "best_code.json")))
    assert best["flops_gmacs"] <= 1.0
    code, run_dir = search(tmp_path, "torch", predictors["seg"], "NCP.MAX_FLOPS", "0.001", "NCP.ITERS", "3",
                           name="impossible")
    assert code == 2 and not os.path.exists(os.path.join(run_dir, "best_code.json"))
    assert os.path.exists(os.path.join(run_dir, "trajectory.json"))  # the record of what was tried stays


def test_two_predictors_in_one_objective(predictors, tmp_path):
    code, run_dir = search(tmp_path, "torch", predictors["seg"], "NCP.EXTRA_PREDICTORS",
                           f"['{predictors['video']}@video=1.0']", name="inter")
    assert code == 0
    traj = json.load(open(os.path.join(run_dir, "trajectory.json")))
    assert [t["predictor"] for t in traj["objective"]] == ["seg", "seg", "video"]
    first, best = traj["start"], traj["steps"][traj["best_iteration"] - 1]
    assert best["extra_predicted"][0]["top1"] > first["extra_predicted"][0]["top1"]
    assert best["predicted"]["mIoU"] > first["predicted"]["mIoU"]


@pytest.mark.parametrize("overrides,message", [
    (["MODEL.WEIGHTS", ""], "MODEL.WEIGHTS is empty"),
    (["NCP.OBJECTIVES", "['top1=1']"], "NCP.OBJECTIVES: 'top1=1' must be 'metric=weight'"),
    (["NCP.OBJECTIVES", "['mIoU=high']"], "the weight 'high' is not a number"),
    (["NCP.EXTRA_PREDICTORS", "['video.safetensors']"], "must be 'CHECKPOINT@SETTING=WEIGHT'"),
    (["NCP.START", "16_64-1_1_3"], "NCP.START '16_64-1_1_3': expected 6"),
    (["NCP.START", "[8, 8, 9]"], "expected 27 integers, got 3"),
])
def test_mistakes_are_one_line_before_any_work(overrides, message, predictors, tmp_path, capsys):
    run_dir = tmp_path / "bad"
    args = ["search", CONFIG, "--backend", "torch", "MODEL.WEIGHTS", predictors["seg"], *overrides,
            "--output", str(run_dir)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not run_dir.exists()


def test_a_predictor_of_another_table_is_refused(predictors, tmp_path, capsys):
    code, run_dir = search(tmp_path, "torch", predictors["video"], name="wrong")
    assert code == 2
    assert "its output_mean holds 4 values, the 'seg' predictor (NCP.SETTING) 5" in capsys.readouterr().err


def test_the_search_configs_read_the_predictors_train_writes():
    """`train configs/ncp_predictor_<s>.yaml` writes runs/ncp_predictor_<s>/best.safetensors on a fresh clone; the
    search configs read exactly those files (the README's flow)."""
    from tools.commands import run_dir_for

    class Args:
        output = ""

    for setting in ("seg", "video"):
        Args.config = os.path.join(ROOT, "configs", f"ncp_predictor_{setting}.yaml")
        train_dir = run_dir_for(Args, load_config(Args.config))
        assert train_dir == os.path.join("runs", f"ncp_predictor_{setting}")
    seg = load_config(os.path.join(ROOT, "configs", "ncp_search_seg.yaml"))
    assert seg.MODEL.WEIGHTS == os.path.join("runs", "ncp_predictor_seg", "best.safetensors")
    both = load_config(os.path.join(ROOT, "configs", "ncp_search_seg_video.yaml"))
    assert N.parse_extra(both.NCP.EXTRA_PREDICTORS) == [(os.path.join("runs", "ncp_predictor_video",
                                                                        "best.safetensors"), "video", 1.0)]


def test_a_predictor_giving_nan_stops_the_search_instead_of_ranking_it():
    """NaN predictions must never be compared into a 'best' code."""
    spec = P.predictor_spec("seg")

    class NaNPredictor:
        def gradient(self, z, weights):
            return [np.zeros((1, 5))], np.ones(27)

        def predict(self, codes):
            return [np.full((len(codes), 5), np.nan)]

    terms = N.parse_terms(["mIoU=1"], [spec])
    with pytest.raises(N.NCPError, match="not finite for the code of iteration 1"):
        N.run(NaNPredictor(), [spec], terms, MR.DEFAULT_START, 3, 3.0)
