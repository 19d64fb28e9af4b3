"""The commands behind ``tools/main.py``.  Each ``run_<name>(args)`` returns an exit code."""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
from typing import List, Optional

import numpy as np

from common import families
from common.checkpoint import CheckpointError
from common.config import ConfigError, load_config, save_config
from common.data import DataError
from common.errors import UserError  # tools/main.py catches commands.UserError


# ------------------------------------------------------------------------------------------ shared
def load_cfg(args):
    try:
        return load_config(args.config, args.overrides)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def load_backend(name: str, cfg=None, dtype: Optional[str] = None):
    """Import ``<name>_impl.backend`` only now; a missing framework is a clear error, not a traceback."""
    framework = {"torch": "torch", "paddle": "paddle"}[name]
    try:
        importlib.import_module(framework)
    except ImportError:
        raise UserError(
            f"--backend {name} needs {'paddlepaddle' if name == 'paddle' else 'torch'}, which is not installed: "
            f"pip install -r requirements-{name}.txt"
        ) from None
    try:
        module = importlib.import_module(f"{name}_impl.backend")
    except ModuleNotFoundError as exc:  # a package the backend needs besides the framework (e.g. torchvision)
        ours = ("common", "tools", "torch_impl", "paddle_impl", "weights_tools")
        if exc.name and exc.name.split(".")[0] not in ours:
            raise UserError(f"--backend {name} needs the Python package '{exc.name}', which is not installed: "
                            f"pip install -r requirements-{name}.txt") from None
        raise
    device = cfg.DEVICE if cfg is not None else "cpu"
    try:
        return module.Backend(device=device, dtype=dtype or (cfg.DTYPE if cfg is not None else "float32"),
                              threads=cfg.THREADS if cfg is not None else None)
    except ConfigError as exc:  # DEVICE gpu without a GPU, ...: the backend names the key
        raise UserError(str(exc)) from None


def spec_for(cfg, command: str = ""):
    """``(spec module, spec)`` of the config; with ``command``, the spec must be one that command runs (the spec
    module's optional ``commands_for(spec)``: a search network is for ``search``, an evaluation network for
    ``train``)."""
    try:
        module = families.spec_module(cfg.MODEL.FAMILY)
    except families.FamilyNotAvailable as exc:
        raise UserError(str(exc)) from None
    try:
        spec = module.spec_from_config(cfg)
    except (ValueError, KeyError) as exc:
        raise UserError(f"{cfg.MODEL.FAMILY}: {exc}") from None
    allowed = module.commands_for(spec) if command and hasattr(module, "commands_for") else None
    if allowed is not None and command not in allowed:
        what = f"is for {' / '.join(allowed)}, not {command}" if allowed else "cannot be run by this command"
        raise UserError(f"{command}: MODEL.NAME {cfg.MODEL.NAME!r} {what} " + module.command_hint(spec, command))
    return module, spec


def run_dir_for(args, cfg) -> str:
    if args.output:
        return args.output
    if cfg.OUTPUT_DIR:
        return cfg.OUTPUT_DIR
    stem = os.path.splitext(os.path.basename(args.config or "run"))[0]
    return os.path.join("runs", stem)


def read_weights(cfg, path: str = ""):
    """MODEL.WEIGHTS (or ``path``) as a neutral :class:`Checkpoint`, whatever the file: a neutral ``.safetensors``,
    a torch ``.pt``/``.pth``, a Paddle ``.pdparams`` or an official Cream ``.pth.tar``, recognised by content and
    read without executing any pickle (``weights_tools/load_any.py``)."""
    load_any = _need("weights_tools.load_any", "reading weights")
    path = path or cfg.MODEL.WEIGHTS
    try:
        return load_any.load_weights(path, family=cfg.MODEL.FAMILY, net=cfg.MODEL.NAME)
    except CheckpointError as exc:
        raise UserError(str(exc)) from None


def build_with_weights(backend, cfg, spec_module, spec, require_weights: bool, weights=None):
    """Build the model; load MODEL.WEIGHTS (any format :func:`read_weights` takes; its EMA when the config keeps
    one) or, when allowed, numpy-initialised weights.  ``weights``: the checkpoint, when already read."""
    path = cfg.MODEL.WEIGHTS
    if path and weights is None:
        weights = read_weights(cfg)
    elif not path and require_weights:
        raise UserError(
            "MODEL.WEIGHTS is empty: this command needs trained weights (a .safetensors written by `train`, or a "
            ".pt / .pth / .pdparams / .pth.tar state dict)"
        )
    model = backend.build_model(cfg.MODEL.FAMILY, spec)
    if weights is not None:
        tensors = weights.ema if (weights.ema is not None and cfg.TRAIN.EMA_DECAY > 0) else weights.model
        optional = getattr(spec_module, "optional_state", None)
        missing = [n for n in (optional(spec) if optional else ()) if n not in tensors]
        if missing:  # e.g. an upstream PC-DARTS search weights.pt: no alphas / betas
            init = spec_module.init_state(spec, np.random.default_rng(cfg.SEED))
            tensors = {**tensors, **{n: init[n] for n in missing}}
            print(f"MODEL.WEIGHTS {path} holds no {', '.join(missing)}: they start from the numpy init "
                  f"(SEED {cfg.SEED})", file=sys.stderr)
        try:
            check = getattr(spec_module, "check_weights", None)  # e.g. a predictor's table statistics
            if check is not None:
                check(spec, tensors, path)
            backend.load_neutral(model, tensors, source=path)
        except (CheckpointError, ValueError) as exc:
            raise UserError(str(exc)) from None
    else:
        rng = np.random.default_rng(cfg.SEED)
        backend.load_neutral(model, spec_module.init_state(spec, rng), source="numpy init")
    return model


def _need(module_name: str, what: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UserError(f"{what} is not part of this version yet ({module_name} is missing)") from None
        raise


# ------------------------------------------------------------------------------------------ info
def run_info(args) -> int:
    cfg = load_cfg(args)
    module, spec = spec_for(cfg)
    size = cfg.DATA.IMAGE_SIZE
    params = module.count_params(spec)
    macs = module.count_macs(spec, size)
    print(f"family        {cfg.MODEL.FAMILY} ({cfg.MODEL.NAME})")
    import inspect

    without_aux = ""
    if "include_aux" in inspect.signature(module.count_params).parameters:
        trunk = module.count_params(spec, include_aux=False)
        if trunk != params:
            without_aux = f"; {trunk:,} without the auxiliary head (+{params - trunk:,})"
    print(f"parameters    {params:,} trainable (counted from the spec){without_aux}")
    backend = load_backend(args.backend, cfg)
    model = backend.build_model(cfg.MODEL.FAMILY, spec)
    built = backend.count_parameters(model)
    status = "matches the spec" if built == params else f"DIFFERS from the spec by {built - params:+,}"
    print(f"built model   {built:,} trainable in {backend.describe()} ({status})")
    rule_of = getattr(module, "macs_rule", None)
    rule = rule_of(spec) if rule_of else module.count_macs.__doc__.strip().splitlines()[0].replace("``", "")
    print(f"MACs          {macs / 1e6:,.2f} M at {size}x{size} ({rule})")
    description = module.describe(spec)
    print("architecture")
    print(json.dumps(description, indent=2, default=str))
    return 0 if built == params else 1


# ------------------------------------------------------------------------------------------ infer
def add_infer_arguments(p) -> None:
    p.add_argument("--inputs", nargs="+", required=True, help="image files (JPEG/PNG) or one .npy NCHW float32 batch")
    p.add_argument("--topk", type=int, default=5)


def run_infer(args) -> int:
    """Every input, the output folder and --topk are checked before the model is built; nothing is written unless
    every logit is finite; ``logits.npy`` and ``top<k>.json`` (standard JSON) are written atomically."""
    cfg = load_cfg(args)
    module, spec = spec_for(cfg, "infer")
    if args.topk < 1 or args.topk > cfg.MODEL.NUM_CLASSES:
        raise UserError(f"--topk {args.topk} must be in [1, MODEL.NUM_CLASSES = {cfg.MODEL.NUM_CLASSES}]")
    out_dir = args.output or os.path.join(run_dir_for(args, cfg), "infer")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"output folder {out_dir} is a file, not a folder")
    batch, names = _load_inputs(cfg, args.inputs)
    backend = load_backend(args.backend, cfg)
    model = build_with_weights(backend, cfg, module, spec, require_weights=True)
    logits = np.asarray(backend.eval_logits(model, batch))
    if logits.ndim != 2 or logits.shape[0] != len(names):
        raise UserError(f"the model gave logits of shape {list(logits.shape)} for {len(names)} inputs; "
                        f"expected [{len(names)}, classes]")
    bad = ~np.isfinite(logits)
    if bad.any():
        rows = [names[i] for i in np.flatnonzero(bad.any(axis=1))]
        raise UserError(
            f"the model gave {int(bad.sum())} non-finite logits (NaN or infinity) for {len(rows)} of {len(names)} "
            f"inputs (first: {rows[0]}); nothing was written. The weights MODEL.WEIGHTS = {cfg.MODEL.WEIGHTS!r} "
            f"or the inputs are not usable (DTYPE {cfg.DTYPE})"
        )
    class_names = getattr(module, "class_names", lambda _spec: None)(spec)
    if class_names is None and cfg.DATA.DATASET in ("builtin_digits", "cifar10", "cifar100"):
        class_names = _dataset_class_names(cfg)
    if class_names is not None and len(class_names) != logits.shape[1]:
        class_names = None  # names for another head: numbers are honest, shifted names are not
    topk = min(args.topk, logits.shape[1])
    wide = logits.astype(np.float64)
    shifted = np.exp(wide - wide.max(axis=1, keepdims=True))
    probs = shifted / shifted.sum(axis=1, keepdims=True)
    results = []
    for row, name in enumerate(names):
        order = np.argsort(-logits[row], kind="stable")[:topk]
        results.append({
            "input": name,
            "top": [
                {"class": int(k), "name": str(class_names[k]) if class_names else str(int(k)),
                 "logit": float(logits[row, k]), "prob": float(probs[row, k])}
                for k in order
            ],
        })
    text = json.dumps(results, indent=2, allow_nan=False)  # standard JSON: no NaN / Infinity tokens
    from common.io_utils import atomic_path, atomic_write_text

    os.makedirs(out_dir, exist_ok=True)
    logits_path = os.path.join(out_dir, "logits.npy")
    top_path = os.path.join(out_dir, f"top{args.topk}.json")
    with atomic_path(logits_path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, logits)
    atomic_write_text(top_path, text)
    for item in results:
        best = item["top"][0]
        print(f"{item['input']}: {best['name']} ({best['prob']:.3f})")
    print(f"wrote {logits_path} {list(logits.shape)} and {top_path}")
    return 0


def _dataset_class_names(cfg):
    """Class names of a small built-in or CIFAR dataset (when its files are there), for a head that fits it."""
    from common.data.build import build_dataset

    try:
        names = list(build_dataset(cfg, "val", verify=False).classes)
    except (OSError, ValueError):  # no dataset on this machine (DataError, PickleReadError are ValueErrors)
        return None
    return names if len(names) == cfg.MODEL.NUM_CLASSES else None


def _load_inputs(cfg, inputs: List[str]):
    """``(float32 NCHW batch, names)`` from image files or one ``.npy`` batch; every error names the file.

    An ``.npy`` batch goes to the network as it is, so it must already be what the eval pipeline makes: a real
    (float or integer) ``(N, DATA.CHANNELS, DATA.IMAGE_SIZE, DATA.IMAGE_SIZE)`` array, N >= 1, every value finite.
    Image files are decoded, resized and centre-cropped to DATA.IMAGE_SIZE like the validation split.
    """
    from common.errors import one_line

    for path in inputs:
        if not os.path.exists(path):
            raise UserError(f"input not found: {path}")
        if not os.path.isfile(path):
            raise UserError(f"input {path} is a folder, not a file; give image files or one .npy batch")
    npy = [p for p in inputs if p.lower().endswith(".npy")]
    if npy and len(inputs) > 1:
        raise UserError(f"--inputs: give one .npy batch or image files, not both or several .npy files "
                        f"({len(npy)} .npy among {len(inputs)} inputs, e.g. {npy[0]})")
    size, channels = cfg.DATA.IMAGE_SIZE, cfg.DATA.CHANNELS
    if npy:
        path = npy[0]
        try:
            batch = np.load(path, allow_pickle=False)
        except ValueError as exc:
            why = ("it holds pickled Python objects, which are never loaded" if "pickle" in str(exc).lower()
                   else one_line(exc))
            raise UserError(f"{path}: not a plain numpy array ({why})") from None
        except (OSError, EOFError) as exc:
            raise UserError(f"{path}: not a readable .npy file ({type(exc).__name__}: {one_line(exc)})") from None
        if not isinstance(batch, np.ndarray):  # e.g. an .npz archive named .npy
            raise UserError(f"{path}: not a plain numpy array (a {type(batch).__name__})")
        if batch.dtype.kind not in "fiu":
            raise UserError(f"{path}: dtype {batch.dtype} is not a real number type; expected a float32 NCHW batch")
        if batch.ndim != 4 or batch.shape[1] != channels:
            raise UserError(f"{path}: expected an NCHW batch (N, {channels}, {size}, {size}) with DATA.CHANNELS = "
                            f"{channels} channels, got shape {list(batch.shape)}")
        if batch.shape[0] < 1:
            raise UserError(f"{path}: the batch holds no images (shape {list(batch.shape)})")
        height, width = batch.shape[2:]
        if (height, width) != (size, size):
            hint = f", or set DATA.IMAGE_SIZE {height} if the network is meant for that size" if height == width else ""
            raise UserError(
                f"{path}: images are {height}x{width} (shape {list(batch.shape)}) but DATA.IMAGE_SIZE is {size}: an "
                f".npy batch goes to the network as it is, so it must be {size}x{size}, the size the validation "
                f"pipeline makes; resize it, or give image files (they are resized and cropped for you){hint}"
            )
        batch = batch.astype(np.float32, copy=False)
        names = [f"{path}[{i}]" for i in range(batch.shape[0])]
        source = path
    else:
        from common.data.build import eval_preprocess

        images = []
        for path in inputs:
            try:
                images.append(eval_preprocess(cfg, path))
            except (OSError, ValueError) as exc:
                text = one_line(exc)
                raise UserError(text if path in text else f"{path}: {text}") from None
        batch, names, source = np.stack(images).astype(np.float32), list(inputs), ", ".join(inputs)
    bad = int(batch.size - np.count_nonzero(np.isfinite(batch)))
    if bad:
        raise UserError(f"{source}: {bad} of {batch.size} input values are not finite (NaN or infinity); "
                        f"the network needs finite inputs")
    return batch, names


# ------------------------------------------------------------------------------------------ train/test/search
def run_train(args) -> int:
    return _run_task(args, "train")


def _run_task(args, command: str) -> int:
    """``train`` and ``search``: the same run (one loop) with the task the family registers for ``command``."""
    cfg = load_cfg(args)
    engine = _need("common.engine", "training")
    module, spec = spec_for(cfg, command)
    kind = families.task_kind_for_spec(cfg.MODEL.FAMILY, command, module, spec)
    if kind is None:
        raise UserError(
            f"{command}: MODEL.FAMILY {cfg.MODEL.FAMILY!r} has no architecture search in this version "
            "(PC-DARTS, Cream and NCP have one); `train` retrains a given architecture")
    run_dir = args.output or cfg.OUTPUT_DIR or engine.default_run_dir(run_dir_for(args, cfg), cfg.RESUME)
    try:  # everything is checked before the run folder is touched
        engine.check_run_dir(run_dir, cfg.RESUME)
        engine.resume_path(cfg, run_dir, kind)
        # a search with its own search stream scores on a part of the train split; any other task on the val split
        streams = importlib.import_module(f"common.tasks.{kind}").BASE.streams
        splits = ("train",) if "search" in streams else ("train", "val")
        datasets = engine.check_data(cfg, splits=splits, label_offset=engine.label_offset_of(module, spec))
        engine.check_streams(cfg, kind, datasets)
        from common.schedules import build_schedule

        build_schedule(cfg)
    except (FileNotFoundError, ValueError, engine.TrainingError) as exc:  # CheckpointError is a ValueError
        raise UserError(str(exc)) from None
    initial = read_weights(cfg) if cfg.MODEL.WEIGHTS else None
    backend = load_backend(args.backend, cfg)
    group = _start_distributed(backend, cfg)
    model = build_with_weights(backend, cfg, module, spec, require_weights=False, weights=initial)
    removed = []
    try:
        if group is None or group.is_main:  # only rank 0 writes
            removed = engine.prepare_run_dir(run_dir, cfg.RESUME)
            save_config(cfg, os.path.join(run_dir, "config.yaml"))
    except engine.TrainingError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"run folder {run_dir}: {exc.strerror or exc}") from None
    if group is not None:
        group.barrier()
    if removed:
        print(f"removed {len(removed)} temporary file(s) an interrupted save left in {run_dir}: "
              + ", ".join(removed), file=sys.stderr)
    try:
        return engine.train(cfg, backend, module, spec, run_dir, datasets=datasets, model=model, kind=kind)
    except (CheckpointError, engine.TrainingError, FileNotFoundError, DataError) as exc:
        raise UserError(str(exc)) from None
    finally:
        if group is not None:  # torch: a gloo group left open can abort the process at exit
            group.close()


def _start_distributed(backend, cfg):
    """Join the process group when a launcher (torchrun, paddle.distributed.launch) started this process."""
    from common.distributed import launcher_for, world_from_env

    try:
        world = world_from_env()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if not world.distributed:
        return None
    if world.launcher != launcher_for(backend.name):
        raise UserError(f"--backend {backend.name} was started by {world.launcher}: launch it with "
                        f"{launcher_for(backend.name)}")
    return backend.start_distributed(float(cfg.DIST_TIMEOUT_S), bool(cfg.TRAIN.SYNC_BN))


def run_test(args) -> int:
    cfg = load_cfg(args)
    engine = _need("common.engine", "evaluation")
    module, spec = spec_for(cfg, "test")
    offset = engine.label_offset_of(module, spec)
    try:  # the validation data must exist before the model is built
        (val_set,) = engine.check_data(cfg, splits=("val",), label_offset=offset)
    except (FileNotFoundError, ValueError, engine.TrainingError) as exc:
        raise UserError(str(exc)) from None
    weights = read_weights(cfg) if cfg.MODEL.WEIGHTS else None
    backend = load_backend(args.backend, cfg)
    model = build_with_weights(backend, cfg, module, spec, require_weights=True, weights=weights)
    try:
        return engine.test(cfg, backend, model, run_dir_for(args, cfg), label_offset=offset, dataset=val_set,
                           kind=families.task_kind_for_spec(cfg.MODEL.FAMILY, "test", module, spec))
    except (engine.TrainingError, DataError) as exc:
        raise UserError(str(exc)) from None


def run_search(args) -> int:
    """``search``: the family's architecture search in the same loop as ``train`` (PC-DARTS), or NCP's code
    propagation through a trained predictor (no training loop: :func:`_run_ncp_search`)."""
    cfg = load_cfg(args)
    if families.task_kind(cfg.MODEL.FAMILY, "search") == "ncp_search":
        return _run_ncp_search(args, cfg)
    return _run_task(args, "search")


def _run_ncp_search(args, cfg) -> int:
    """NCP (``common/ncp_search.py``): gradient steps on a code through the predictor of MODEL.WEIGHTS (and the
    extra predictors), rounded to valid networks; writes the trajectory (JSON + PNG), ``best_code.json`` and a
    ``best_config.yaml`` that ``train`` takes.  Every setting is checked before the run folder is touched."""
    import time

    from common import ncp_search as N
    from common.io_utils import atomic_write_text
    from common.specs import ncp as P

    engine = _need("common.engine", "the NCP search")
    module, spec = spec_for(cfg, "search")
    run_dir = args.output or cfg.OUTPUT_DIR or engine.default_run_dir(run_dir_for(args, cfg), cfg.RESUME)
    node = cfg.NCP
    if not cfg.MODEL.WEIGHTS:
        raise UserError("MODEL.WEIGHTS is empty: NCP propagates codes through a trained predictor (train one with "
                        f"`python tools/main.py train configs/ncp_predictor_{spec.setting}.yaml`)")
    if cfg.RESUME:
        raise UserError(f"RESUME {cfg.RESUME!r}: an NCP search takes seconds and keeps no checkpoint; run it again")
    try:
        extras = N.parse_extra(node.EXTRA_PREDICTORS)
        specs = [spec] + [P.predictor_spec(setting, str(node.TABLES)) for _, setting, _ in extras]
        for (path, setting, _), extra in zip(extras, specs[1:]):
            if extra.input_dim != spec.input_dim:
                raise N.NCPError(f"NCP.EXTRA_PREDICTORS: {path}@{setting} reads {extra.input_dim}-number codes, the "
                                 f"{spec.setting!r} predictor {spec.input_dim}: they cannot share one code")
        texts = list(node.OBJECTIVES) or [f"{spec.main_metric}=1", "flops=-0.5"]
        terms = N.parse_terms(texts, specs) + N.extra_terms(extras, specs)
        start = N.start_code(node.START)
        engine.check_run_dir(run_dir, "")
    except (ValueError, engine.TrainingError) as exc:
        raise UserError(str(exc)) from None
    weights = [read_weights(cfg)] + [read_weights(cfg, path) for path, _, _ in extras]
    backend = load_backend(args.backend, cfg)
    models = [build_with_weights(backend, cfg, module, spec, require_weights=True, weights=weights[0])]
    for (path, _, _), extra_spec, ckpt in zip(extras, specs[1:], weights[1:]):
        model = backend.build_model("ncp", extra_spec)
        try:
            P.check_weights(extra_spec, ckpt.model, path)
            backend.load_neutral(model, ckpt.model, source=path)
        except (CheckpointError, ValueError) as exc:
            raise UserError(str(exc)) from None
        models.append(model)
    propagator = importlib.import_module(f"{backend.name}_impl.tasks.ncp_search").Propagator(backend, models)
    try:
        engine.prepare_run_dir(run_dir, "")
        save_config(cfg, os.path.join(run_dir, "config.yaml"))
    except engine.TrainingError as exc:
        raise UserError(str(exc)) from None
    logger = engine.get_logger(run_dir, "search")
    logger.info(f"backend: {backend.describe()}")
    logger.info(f"predictors: {cfg.MODEL.WEIGHTS} ({spec.setting})"
                + "".join(f", {path} ({setting}, weight {w:g})" for path, setting, w in extras))
    logger.info("objective: " + " ".join(f"{'-' if t.weight < 0 else '+'} {abs(t.weight):g} x {t.metric}"
                                          + (f" [{specs[t.predictor].setting}]" if t.predictor else "") for t in terms)
                + (f"; budgets: {node.MAX_FLOPS:g} GMACs" if node.MAX_FLOPS else "")
                + (f"; {node.MAX_PARAMS:g} M params" if node.MAX_PARAMS else ""))
    first = N.start_step(propagator, specs, terms, start)
    main = spec.main_metric

    def line(step):
        return (f"iteration {step.iteration:3d} | {step.code} | predicted {main} {step.predicted[main]:.3f} | "
                f"{step.flops:.3f} GMACs {step.params:.3f} M | objective {step.objective:+.4f}"
                + ("" if step.within_budget else " | over budget") + (f" | {step.clamped} clamped" if step.clamped
                                                                     else ""))

    logger.info(line(first).replace("iteration   0", "start        "))
    started = time.perf_counter()
    try:
        steps, best = N.run(propagator, specs, terms, start, int(node.ITERS), float(node.LR),
                            float(node.MAX_FLOPS), float(node.MAX_PARAMS), float(node.BUDGET_WEIGHT),
                            progress=lambda step: logger.info(line(step)))
    except N.NCPError as exc:
        raise UserError(str(exc)) from None
    seconds = time.perf_counter() - started
    meta = {"setting": spec.setting, "weights": cfg.MODEL.WEIGHTS, "backend": backend.name,
            "objective": [dict(predictor=specs[t.predictor].setting, metric=t.metric, weight=t.weight) for t in terms],
            "lr": float(node.LR), "iterations": int(node.ITERS), "max_flops": float(node.MAX_FLOPS),
            "max_params": float(node.MAX_PARAMS), "seconds": seconds, "start": dataclasses.asdict(first)}
    atomic_write_text(os.path.join(run_dir, "trajectory.json"), N.trajectory_json(steps, best, meta))
    N.plot_trajectory([first] + steps, best, main, os.path.join(run_dir, "trajectory.png"),
                      f"NCP on {spec.setting}: {len(steps)} iterations ({backend.name})")
    if best is None:
        raise UserError(f"no rounded code of the {len(steps)} iterations met the budgets (NCP.MAX_FLOPS "
                        f"{node.MAX_FLOPS:g}, NCP.MAX_PARAMS {node.MAX_PARAMS:g}); the trajectory is in {run_dir}: "
                        "raise NCP.BUDGET_WEIGHT or NCP.ITERS, or start from a smaller NCP.START")
    MR = importlib.import_module("common.specs.nasbench_mr")
    MR.save_code(MR.from_embedding(best.rounded), os.path.join(run_dir, "best_code.json"),
                 extra={"iteration": best.iteration, "predicted": best.predicted, "flops_gmacs": best.flops,
                        "params_m": best.params, "objective": best.objective, "setting": spec.setting})
    atomic_write_text(os.path.join(run_dir, "best_config.yaml"),
                      N.train_config_text(best, spec.setting, cfg.MODEL.WEIGHTS))
    logger.info(f"returned iteration {best.iteration}: {best.code} | predicted {main} {best.predicted[main]:.3f} "
                f"(start {first.predicted[main]:.3f}) | {best.flops:.3f} GMACs (start {first.flops:.3f}) | "
                f"{seconds:.1f}s -> {os.path.join(run_dir, 'best_code.json')}, best_config.yaml")
    return 0


# ------------------------------------------------------------------------------------------ convert / parity / bench
def add_convert_arguments(p) -> None:
    p.add_argument("--from", dest="src_format", required=True,
                   help="source format: " + ", ".join(_need("weights_tools.convert", "conversion").IMPORT_FORMATS))
    p.add_argument("src", metavar="PATH", help="source checkpoint (TF prefix, file)")
    p.add_argument("--to", dest="dst_format", required=True, help="target format: neutral, torch, paddle, tf")
    p.add_argument("dst", metavar="OUT", help="output file (TF: checkpoint prefix)")
    p.add_argument("--net", default="", help="network name when the source does not say (e.g. cream14, pnasnet5_large)")
    p.add_argument("--drop-background", action="store_true", help="1001 -> 1000 classes (TF ImageNet heads)")
    p.add_argument("--with-aux", action="store_true",
                   help="TF PNASNet: also convert the training-only aux head (aux_<k>/* -> aux_head.*) for "
                        "fine-tuning with PNASNET.AUX_HEAD true; without it the aux head is skipped and reported")


def run_convert(args) -> int:
    convert = _need("weights_tools.convert", "checkpoint conversion")
    if os.path.isdir(args.dst) and args.dst_format != "tf":
        raise UserError(f"OUT {args.dst} is a folder; name the file to write (e.g. {os.path.join(args.dst, 'w.pt')})")
    parent = os.path.dirname(os.path.abspath(args.dst))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"OUT {args.dst}: {parent} is a file, so no folder can be made there")
    try:
        return convert.run(args)
    except CheckpointError as exc:
        raise UserError(str(exc)) from None


def add_parity_arguments(p) -> None:
    p.add_argument("--report", default="", help="folder for parity.json and parity.md (default: <run>/parity)")
    p.add_argument("--all", action="store_true", help="every family's networks (no config): parity_report.md/.json")
    p.add_argument("--full", action="store_true", help="with --all: the published sizes instead of the tiny suite")


def run_parity(args) -> int:
    if getattr(args, "all", False):
        if args.config or args.overrides:
            raise UserError("parity --all takes no config or overrides (it runs parity_tests/suite.py's list)")
        suite = _need("parity_tests.suite", "the parity suite")
        return suite.run_all(args.report or os.path.join("runs", "parity_all"), full=bool(getattr(args, "full", False)))
    if getattr(args, "full", False):
        raise UserError("parity --full goes with --all (one config runs at the size its config gives)")
    if not args.config:
        raise UserError("parity needs a config file, or --all for every family")
    cfg = load_cfg(args)
    harness = _need("parity_tests.harness", "the parity harness")
    module, spec = spec_for(cfg)
    report_dir = args.report or os.path.join(run_dir_for(args, cfg), "parity")
    return harness.run_from_config(cfg, module, spec, report_dir)


def run_bench(args) -> int:
    cfg = load_cfg(args)
    bench = _need("bench.run", "benchmarking")
    module, spec = spec_for(cfg)
    return bench.run_from_config(cfg, module, spec, run_dir_for(args, cfg))


def add_train_arguments(p) -> None:
    pass


# ------------------------------------------------------------------------------------------------- plot
def add_plot_arguments(p) -> None:
    from tools import plot

    plot.add_arguments(p)


def run_plot(args) -> int:
    from tools import plot

    return plot.run(args)
