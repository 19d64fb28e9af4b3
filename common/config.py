"""Configuration: one yacs default tree, YAML files that only override it, ``_BASE_`` inheritance.

Every error names the file, the dotted key and the offending value, and is raised before any
work starts.  Families add their own sub-trees to ``_C`` here, so the whole vocabulary of keys
lives in one place.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence

import yaml
from yacs.config import CfgNode as CN

from common.families import family_names

BASE_KEY = "_BASE_"


class ConfigError(ValueError):
    """A config file, key or value is wrong; the message says which."""


_C = CN()
_C.SEED = 42
# Where runs write logs, metrics, checkpoints and the resolved config. "" -> runs/<config name>.
_C.OUTPUT_DIR = ""
# Resume from this neutral checkpoint ("" = none, "auto" = <OUTPUT_DIR>/last.safetensors when present).
_C.RESUME = ""
_C.DEVICE = "cpu"          # cpu | gpu
_C.DTYPE = "float32"       # float32 | float64 (float64 is for parity runs)
_C.THREADS = 0             # CPU threads for the framework's math (0 = the framework's default)
# Multi-process runs: a collective (gradient average, statistics) that waits longer than this fails the process, so
# the launcher stops the others instead of hanging (torch: the process group's timeout).
_C.DIST_TIMEOUT_S = 300.0

_C.MODEL = CN()
_C.MODEL.FAMILY = "cream"  # which NAS system builds the network
_C.MODEL.NAME = ""         # the spec inside the family (cream14, pnasnet5_large, ...)
_C.MODEL.NUM_CLASSES = 1000
_C.MODEL.WEIGHTS = ""      # neutral .safetensors or a foreign checkpoint imported by weights_tools
_C.MODEL.DROPOUT = 0.0
_C.MODEL.DROP_PATH = 0.0

_C.DATA = CN()
_C.DATA.DATASET = "builtin_digits"  # builtin_digits | cifar10 | cifar100 | imagefolder | synthetic
_C.DATA.ROOT = ""
_C.DATA.IMAGE_SIZE = 224
_C.DATA.CHANNELS = 3
_C.DATA.BATCH_SIZE = 32
_C.DATA.EVAL_BATCH_SIZE = 0   # 0 -> BATCH_SIZE
_C.DATA.WORKERS = 0
_C.DATA.MEAN = (0.485, 0.456, 0.406)
_C.DATA.STD = (0.229, 0.224, 0.225)
_C.DATA.CROP_PCT = 0.875
_C.DATA.INTERPOLATION = "bicubic"   # bilinear | bicubic | nearest | tf_bilinear
_C.DATA.NUM_TRAIN = 0     # 0 = every sample; otherwise the first N of the (seeded) split
_C.DATA.NUM_VAL = 0
_C.DATA.SYNTHETIC_SAMPLES = 256
_C.DATA.DROP_LAST = False  # drop the short last training batch (evaluation never drops)
# Check every ImageFolder image the split uses (its first and last bytes) before any work, so a truncated or non-image
# file stops the command at once, naming it (~0.1 ms a file: ~2 min for ImageNet's 1.28M).  False: a damaged file
# stops the run when it is read, with the same one-line error.
_C.DATA.VERIFY_FILES = True

_C.AUG = CN()
_C.AUG.RANDOM_RESIZED_CROP = False
_C.AUG.RRC_SCALE = (0.08, 1.0)
_C.AUG.RRC_RATIO = (0.75, 1.3333333333333333)
_C.AUG.PAD_CROP = 0          # CIFAR-style random crop with this much zero padding (0 = off)
_C.AUG.HFLIP = 0.5
_C.AUG.COLOR_JITTER = 0.0
_C.AUG.RAND_AUGMENT = ""     # e.g. "rand-m9-mstd0.5" ("" = off)
_C.AUG.RANDOM_ERASE = 0.0    # probability
_C.AUG.CUTOUT = 0            # Cutout square side (0 = off)
_C.AUG.INTERPOLATION = "random"  # training crops/resizes: random (bilinear or bicubic per image) | bilinear | bicubic | nearest


def optimizer_node(**defaults: Any) -> CN:
    """One optimizer's config node: the same keys for OPTIM, ARCH_OPTIM, META_OPTIM ..., only the defaults differ.

    ``build_optimizer(cfg, named_params, node="ARCH_OPTIM")`` (both backends) reads every key from the node it is
    given."""
    node = CN()
    node.NAME = "sgd"        # sgd | rmsprop_tf | rmsprop | adam | adamw
    node.LR = 0.1            # base LR of the node's schedule (the loop passes the scheduled LR to step())
    node.MOMENTUM = 0.9
    node.NESTEROV = False
    node.WEIGHT_DECAY = 0.0
    node.NO_DECAY_1D = True  # no weight decay on biases and 1-D (BN) parameters
    node.EPS = 1e-8
    node.ALPHA = 0.9         # RMSprop square-average decay
    node.BETAS = (0.9, 0.999)
    node.GRAD_CLIP = 0.0     # global-norm clip (0 = off)
    # Parameters that got no gradient this step: 'skip' them (torch set_to_none) or treat as 'zero' gradients
    # (paddle's clear_grad default; momentum and weight decay still move them).
    node.UNUSED_GRADS = "skip"
    # Parameter groups with their own LR: "regex=scale" strings, e.g. ["^classifier\\.=10"].  A parameter whose
    # canonical name the regex finds (re.search: anchor with ^) gets scale x the scheduled LR; the first matching
    # rule wins; a rule that gets no parameter is an error (a typo must not silently train everything at one LR).
    # Weight decay still follows WEIGHT_DECAY / NO_DECAY_1D inside every group.
    node.LR_GROUPS = ()
    for key, value in defaults.items():
        if key not in node:
            raise KeyError(f"optimizer_node: unknown key {key!r} (keys: {sorted(node)})")
        # keep the key's type (an int LR default would make the merge reject a float override)
        node[key] = float(value) if isinstance(node[key], float) and not isinstance(value, bool) else value
    return node


_C.OPTIM = optimizer_node()
#: the Cream meta matching network's optimizer (SGD nesterov, no weight decay, LR 1e-4, upstream META_LR); with
#: FOLLOW_SCHED its LR follows the weights' schedule scaled by META_OPTIM.LR / OPTIM.LR (upstream's LambdaLR
#: multiplies every parameter group), and its steps clip the meta gradient to GRAD_CLIP
_C.META_OPTIM = optimizer_node(NAME="sgd", LR=1e-4, MOMENTUM=0.9, NESTEROV=True, WEIGHT_DECAY=0.0,
                               NO_DECAY_1D=False, GRAD_CLIP=1.0)
_C.META_OPTIM.FOLLOW_SCHED = True
# PC-DARTS architecture optimizer (the alphas / betas): Adam, lr 6e-4, betas (0.5, 0.999), weight decay 1e-3 on
# every architecture parameter.
_C.ARCH_OPTIM = optimizer_node(NAME="adam", LR=6e-4, BETAS=(0.5, 0.999), WEIGHT_DECAY=1e-3, NO_DECAY_1D=False,
                               GRAD_CLIP=0.0)

_C.SCHED = CN()
_C.SCHED.NAME = "cosine"     # constant | step | cosine | linear
_C.SCHED.WARMUP_EPOCHS = 0.0
_C.SCHED.WARMUP_LR = 1e-6
_C.SCHED.DECAY_EPOCHS = 30.0
_C.SCHED.DECAY_RATE = 0.1
_C.SCHED.MIN_LR = 0.0
_C.SCHED.PER_STEP = False    # update the LR every step (True) or once per epoch (False)
_C.SCHED.COOLDOWN_EPOCHS = 0.0   # cosine: epochs held at MIN_LR after the decay
_C.SCHED.MILESTONES = (30.0, 60.0, 90.0)  # multistep: epochs where the LR is multiplied by DECAY_RATE
_C.SCHED.WARMUP_PREFIX = False   # True: the decay starts counting after the warmup (newer timm)
# "linear": timm's warmup from WARMUP_LR; "staircase": the PC-DARTS scripts' LR * (e + 1) / WARMUP_EPOCHS at epoch e
_C.SCHED.WARMUP_STYLE = "linear"
# Epoch e uses the schedule's value at e + EPOCH_SHIFT.  1 reproduces the PC-DARTS scripts on PyTorch >= 1.1
# (scheduler.step() at the top of the epoch: one epoch ahead, the last epoch at MIN_LR); 0 is the paper's schedule.
_C.SCHED.EPOCH_SHIFT = 0
# one_cycle (torch OneCycleLR, per update; OPTIM.LR is the peak): the share of updates rising to the peak, the start
# LR = peak / DIV_FACTOR, the end LR = start / FINAL_DIV_FACTOR, and the (base, max) momentum / Adam beta1 it cycles
# in the opposite direction (empty: no momentum cycle).
_C.SCHED.POWER = 0.9          # poly: lr * (1 - t / TRAIN.EPOCHS) ** POWER (segmentation recipes)
_C.SCHED.PCT_START = 0.3
_C.SCHED.DIV_FACTOR = 10.0
_C.SCHED.FINAL_DIV_FACTOR = 1e4
_C.SCHED.CYCLE_MOMENTUM = (0.85, 0.95)

_C.TRAIN = CN()
_C.TRAIN.EPOCHS = 1
_C.TRAIN.LABEL_SMOOTHING = 0.0
_C.TRAIN.EMA_DECAY = 0.0     # model EMA decay (0 = off); when on, the EMA weights are evaluated as the best model
_C.TRAIN.AUX_WEIGHT = 0.0    # weight of an auxiliary head's loss (PNASNet: 0.4)
_C.TRAIN.LOG_INTERVAL = 20
_C.TRAIN.EVAL_EVERY = 1      # epochs
_C.TRAIN.MAX_STEPS_PER_EPOCH = 0  # 0 = the whole epoch (tests use small values)
_C.TRAIN.ITERATIONS = 0      # > 0: the run is this many steps (the last epoch is cut short) instead of TRAIN.EPOCHS
_C.TRAIN.CKPT_EVERY = 1      # epochs between the kept epoch-NNNN checkpoints (last.safetensors: every epoch)
_C.TRAIN.KEEP_CHECKPOINTS = 3  # how many epoch-NNNN checkpoints stay (0 = none)
# In a multi-process run (torchrun / paddle.distributed.launch): BatchNorm statistics over the global batch (off:
# each process normalises by its own batch, as upstream Cream and PC-DARTS do).
_C.TRAIN.SYNC_BN = False

_C.CREAM = CN()
# A custom child-net path: a list of 7 lists of choice indices (0..5 = k3e4 k3e6 k5e4 k5e6 k7e4 k7e6), written
# as a YAML list in a file (ARCH: [[0], [3], [3, 3], [3, 3], [3], [3], [0]]) or as one quoted argument on the
# command line (CREAM.ARCH "[[0], [3], [3, 3], [3, 3], [3], [3], [0]]").  Empty = the released net MODEL.NAME.
_C.CREAM.ARCH = ()
# False = upstream's builder (a single-block stage keeps its template kernel/expansion; the released checkpoints
# need this); True = apply the arch list everywhere.
_C.CREAM.HONOUR_SINGLE_BLOCK_CHOICES = False
# --- the supernet search (MODEL.NAME cream_supernet; `search`): upstream's SUPERNET node, shared/research/cream.md §2
# FLOPs window (MFLOPs) the greedy layer search cuts the supernet's stages with: [0, 600] -> 4 layers per stage.
_C.CREAM.FLOPS_MINIMUM = 0.0
_C.CREAM.FLOPS_MAXIMUM = 600.0
_C.CREAM.STA_NUM = ()            # layers per choice stage given directly (5 ints, each 1..4); empty = the layer search
_C.CREAM.SLICE = 4               # images (and soft targets) a board entry keeps; the meta layer reads NUM_CLASSES x SLICE
_C.CREAM.POOL_SIZE = 10          # paths on the prioritized board
_C.CREAM.ACC_GAP = 5.0           # a path beats the board's worst by this many top-1 points to enter a full board
_C.CREAM.META_START_EPOCH = 20   # distillation, the board and meta updates after this epoch (0-based, upstream 20)
_C.CREAM.UPDATE_ITER = 200       # a meta-network update every this many steps of an epoch (upstream train.yaml 200)
_C.CREAM.PICK_METHOD = "meta"    # teacher: "meta" (the matching network's best entry) or "top1" (the board's first)
# Path sampling: "even" (uniform), "pre_prob" (CREAM.PRE_PROB per choice) or "teacher" (op frequencies on the board).
_C.CREAM.HOW_TO_PROB = "pre_prob"
_C.CREAM.PRE_PROB = (0.05, 0.2, 0.05, 0.5, 0.05, 0.15)
# The meta layer's weights and its update are kept in float64 ("float64", default: a float32 meta step of lr 1e-4
# moves almost no weight, shared/research/cream.md §2.3) or in the run's dtype ("model": upstream).
_C.CREAM.META_DTYPE = "float64"
# Where the meta gradient reads the student's KD gradient: "pre_step" (default: the weights the KD gradient was taken
# at, what create_graph on torch 2 gives) or "post_step" (recomputed after the real student step: the torch-1.2 run).
_C.CREAM.META_GRAD_AT = "pre_step"
# Upstream quirks, each a switch; the defaults are the paper's intent, configs/cream_search_upstream.yaml turns all
# of them to upstream's released behaviour.
_C.CREAM.UPSTREAM_SAMPLING = False   # np.random.choice(6, n, prob): prob is `replace`, so every draw is uniform
_C.CREAM.BOARD_STORES_TEACHER = False  # a board entry keeps the teacher's soft targets instead of its own path's
_C.CREAM.META_VALUE_OF = "teacher"   # meta value sigmoid(-w) of the chosen teacher's entry; "last": the board's last
_C.CREAM.META_TENSORS = "all"        # the meta gradient over every path parameter; "first": conv_stem.weight only
_C.CREAM.META_VALUE_GRAD = False     # the main loss's meta value sends gradients to the meta layer and the student
_C.CREAM.SIMULATE_LR = "weights"     # the simulated student step's LR: the weights' ("meta": the meta layer's LR)
_C.CREAM.TIE_BREAK = "fewer_flops"   # equal top-1 on the board: fewer FLOPs first ("upstream": more FLOPs first)
_C.CREAM.PLOT_BOARD = True           # board.png (top-1 vs FLOPs of the board's paths, every epoch) in the run folder
# The child-net config `search` writes (<run>/child.yaml) starts from this config (a path; relative: to configs/).
_C.CREAM.EXPORT_BASE = "cream14.yaml"

_C.PNASNET = CN()
# Build the TF auxiliary head (aux_<k>: after cell 7 of Large, 5 of Mobile).  On: the training forward returns
# (logits, aux_logits) and the loss adds TRAIN.AUX_WEIGHT (TF: 0.4) times the aux loss; eval never runs it.  Off:
# the eval model, whose state dict is timm's / Cadene's (86,061,989 trainable for Large with 1001 classes).
_C.PNASNET.AUX_HEAD = False
# Drop-path burn-in (TF total_training_steps): the drop probability grows linearly to its final value over this
# many steps (TF: 250000).  0 = no burn-in: MODEL.DROP_PATH applies in full from step 0.
_C.PNASNET.TOTAL_TRAINING_STEPS = 250000
# BatchNorm moving-average decay (TF batch_norm_decay): moving = decay * moving + (1 - decay) * batch.  TF trains with
# 0.9997 (a ~3,300-step average, right for 250k steps); a run of a few hundred steps needs a shorter average, or
# evaluation sees running statistics still near their initial 0 / 1.
_C.PNASNET.BN_DECAY = 0.9997
# `parity`: add a TensorFlow column (the official-name float64 graph, run in a subprocess) when TF is installed.
_C.PNASNET.PARITY_TF = True

_C.PCDARTS = CN()
# The network: "pcdarts_cifar" (NetworkCIFAR: 3C-channel stem, CIFAR aux head after cell 2*layers//3) or
# "pcdarts_imagenet" (NetworkImageNet: two stride-2 stems, 7x7 average pool, needs 224 px) is MODEL.NAME.
# The genotype: a published one by name (PCDARTS = PC_DARTS_cifar, PC_DARTS_image, DARTS_V1, DARTS_V2) or the path
# of a genotype JSON written by `search`.
_C.PCDARTS.GENOTYPE = "PCDARTS"
_C.PCDARTS.INIT_CHANNELS = 36    # C (upstream --init_channels): CIFAR 36, ImageNet 48
_C.PCDARTS.LAYERS = 20           # cells (upstream --layers): CIFAR 20, ImageNet 14
_C.PCDARTS.AUXILIARY = False     # the auxiliary head (training forward returns (logits, aux)); TRAIN.AUX_WEIGHT 0.4
# The search (MODEL.NAME pcdarts_search: model_search.py; pcdarts_search_imagenet: three stride-2 stems):
_C.PCDARTS.PARTIAL_K = 0         # 1/K of the channels go through each mixed op (0 = upstream's: CIFAR 4, ImageNet 2)
_C.PCDARTS.UNROLLED = False      # second-order architecture gradient (one unrolled weight step); False = first order
# The second-order Hessian-vector product: "finite_difference" (upstream, in the run's dtype; ill-conditioned in
# float32) or "finite_difference_float64" (the same two gradients evaluated by a float64 copy of the network).
_C.PCDARTS.HVP = "finite_difference"
_C.PCDARTS.HVP_R = 0.01          # the finite-difference step is HVP_R / ||v||
_C.PCDARTS.ARCH_START_EPOCH = 15  # architecture updates from this epoch on (0-based; upstream CIFAR 15, ImageNet 35)
_C.PCDARTS.TRAIN_PORTION = 0.5   # the first half of the training set trains the weights, the rest the architecture
_C.PCDARTS.PLOT_CELLS = True     # a PNG of both cells after every search epoch (graphviz when installed, else matplotlib)

_C.NASBENCH_MR = CN()
# MODEL.NAME "mrnet": a network of the NAS-Bench-MR space.  CODE: a code string (31 integers, as in the benchmark's
# search_list.txt), a JSON list of the 27 embedding integers, or the path of a code JSON file (NCP's best_code.json).
# The default is the benchmark README's example (seg entry 508: 70.57 mIoU; 3,529,880 parameters with 1000 classes).
_C.NASBENCH_MR.CODE = "16_64-1_1_3_128-3_2_3_3_32_48-2_3_2_3_2_16_32_16-1_4_2_4_1_1_96_112_48_80-112"
_C.NASBENCH_MR.TASK = "classification"   # classification (pooled head, (N, classes, 1, 1)) | segmentation (1/4 maps)

_C.SEG = CN()
# Semantic segmentation (DATA.DATASET cityscapes: leftImg8bit/<split>/<city>/*_leftImg8bit.png with
# gtFine/<split>/<city>/*_gtFine_labelTrainIds.png; common/data/segmentation.py).  Training: the long side resized to
# BASE_SIZE x a random scale in SCALE, a random CROP (height, width), a flip; evaluation on the whole image (resized to
# EVAL_SIZE (height, width) unless it is [0, 0]).  Labels equal to IGNORE_LABEL count nowhere.
_C.SEG.CROP = (512, 1024)
_C.SEG.SCALE = (0.5, 2.0)
_C.SEG.BASE_SIZE = 2048
_C.SEG.FLIP = 0.5
_C.SEG.EVAL_SIZE = (0, 0)
_C.SEG.IGNORE_LABEL = 255

_C.NCP = CN()
# MODEL.FAMILY ncp, MODEL.NAME ncp_predictor: the accuracy predictor of one benchmark table (DATA.DATASET nasbench_mr).
# SETTING: seg | seg-4x | cls-50-1000 | cls-50-100 | cls-10-1000 | cls-10c | video | video-p | nas-bench-201.
_C.NCP.SETTING = "seg"
_C.NCP.TABLES = ""            # the tables' folder ("" = the project's data/nasbench_mr)
_C.NCP.SPLIT_SEED = 233       # upstream's seed: the first 20% of RandomState(233).permutation(n) are held out
_C.NCP.VAL_FRACTION = 0.2
# `search` (NCP: gradient steps on the code through the predictor of MODEL.WEIGHTS; common/ncp_search.py):
_C.NCP.START = ""             # the start code ("" = upstream's: every count 2, every width 64)
_C.NCP.ITERS = 70
_C.NCP.LR = 3.0               # z <- z + LR * grad(sum of weight x normalised prediction)
# 'metric=weight' terms of the main predictor; positive raises, negative lowers.  Empty = upstream's seg/cls run with
# its FLOPs term: the main metric at 1 and flops at -0.5.
_C.NCP.OBJECTIVES = ()
# Other tasks' predictors joined into the objective, 'CHECKPOINT@SETTING=WEIGHT' (their main metric), e.g.
# ["runs/ncp_predictor_video/best.safetensors@video=0.5"]: the paper's inter-task search.
_C.NCP.EXTRA_PREDICTORS = ()
_C.NCP.MAX_FLOPS = 0.0        # budget in GMACs (benchmark counting); 0 = none; the returned code respects it
_C.NCP.MAX_PARAMS = 0.0       # budget in millions of parameters; 0 = none
_C.NCP.BUDGET_WEIGHT = 1.0    # extra weight pushing a cost down while the rounded code is over its budget

_C.PARITY = CN()
_C.PARITY.BACKENDS = ("torch", "paddle")
_C.PARITY.DTYPES = ("float64", "float32")
_C.PARITY.BATCH_SIZE = 2
_C.PARITY.STEPS = 3
_C.PARITY.TRAIN_MODE = True

_C.BENCH = CN()
# `bench` (bench/README.md): every contender runs in its own process; timed steps are interleaved across contenders.
_C.BENCH.BATCH_SIZES = (1, 8)       # eval-mode batch sizes
_C.BENCH.TRAIN_BATCH_SIZES = (32,)  # train-mode batch sizes (empty = BATCH_SIZES)
_C.BENCH.WARMUP = 0                 # warmup steps per contender and workload (0 = the family's default)
_C.BENCH.ITERS = 0                  # timed steps per contender and workload (0 = the family's default)
_C.BENCH.ROUNDS = 2                 # the timed steps are split into this many interleaved rounds
_C.BENCH.MODES = ()                 # train and/or eval; PC-DARTS search: weight, arch1, arch2; Cream supernet: meta
_C.BENCH.CONTENDERS = ()            # e.g. [timm, torch, paddle, torch+cl] (empty = the family's default)
_C.BENCH.BASELINE = ""              # contender the ratios are taken against ("" = the family's default)
_C.BENCH.THREADS = 0                # math threads of every contender (0 = THREADS, or all cores when that is 0)
_C.BENCH.QUICK = False              # 1 warmup + 2 timed steps, one round, the first batch size of each mode
_C.BENCH.PROFILE_STEPS = 0          # > 0: after timing, profile this many steps of each contender (logs folder)
_C.BENCH.TIMEOUT_S = 1800.0         # a worker that does not answer within this many seconds is killed
# PC-DARTS search bench: a local copy of the upstream repository (yuhuixu1993/PC-DARTS, holding model_search.py and
# architect.py) to time its own search network beside the twins; "" = the twins only.
_C.BENCH.UPSTREAM = ""

#: the workload modes of ``bench`` (``bench/harness.MODES``; each family's benchmark offers some of them)
BENCH_MODES = ("train", "eval", "weight", "arch1", "arch2", "meta")

# Keys whose value must come from a closed set.  Later families register theirs with ``register_enum``.
ENUMS: Dict[str, Sequence[Any]] = {
    "DEVICE": ("cpu", "gpu"),
    "DTYPE": ("float32", "float64"),
    "MODEL.FAMILY": family_names(),  # the registry in common/families.py
    "DATA.DATASET": ("builtin_digits", "cifar10", "cifar100", "imagefolder", "synthetic", "nasbench_mr", "cityscapes"),
    "DATA.INTERPOLATION": ("bilinear", "bicubic", "nearest", "tf_bilinear"),
    "AUG.INTERPOLATION": ("random", "bilinear", "bicubic", "nearest"),
    "OPTIM.NAME": ("sgd", "rmsprop_tf", "rmsprop", "adam", "adamw"),
    "SCHED.NAME": ("constant", "step", "multistep", "cosine", "linear", "pcdarts_linear", "one_cycle", "poly"),
    "OPTIM.UNUSED_GRADS": ("skip", "zero"),
    "ARCH_OPTIM.NAME": ("sgd", "rmsprop_tf", "rmsprop", "adam", "adamw"),
    "ARCH_OPTIM.UNUSED_GRADS": ("skip", "zero"),
    "PCDARTS.HVP": ("finite_difference", "finite_difference_float64"),
    "META_OPTIM.NAME": ("sgd", "rmsprop_tf", "rmsprop", "adam", "adamw"),
    "META_OPTIM.UNUSED_GRADS": ("skip", "zero"),
    "CREAM.PICK_METHOD": ("meta", "top1"),
    "CREAM.HOW_TO_PROB": ("even", "pre_prob", "teacher"),
    "CREAM.META_DTYPE": ("float64", "model"),
    "CREAM.META_GRAD_AT": ("pre_step", "post_step"),
    "CREAM.META_VALUE_OF": ("teacher", "last"),
    "CREAM.META_TENSORS": ("all", "first"),
    "CREAM.SIMULATE_LR": ("weights", "meta"),
    "CREAM.TIE_BREAK": ("fewer_flops", "upstream"),
    "SCHED.WARMUP_STYLE": ("linear", "staircase"),
    "NASBENCH_MR.TASK": ("classification", "segmentation"),
}


#: text keys that also take a YAML list (an architecture code as its integers); stored as JSON text
CODE_KEYS = ("NASBENCH_MR.CODE", "NCP.START")


def register_enum(key: str, allowed: Sequence[Any]) -> None:
    ENUMS[key] = tuple(allowed)


def get_default_config() -> CN:
    return _C.clone()


def load_config(path: Optional[str], overrides: Sequence[str] = ()) -> CN:
    """Defaults <- ``path`` (with its ``_BASE_`` chain) <- ``KEY VALUE`` overrides, validated."""
    cfg = get_default_config()
    if path:
        for source, data in _read_chain(path, []):
            _merge(cfg, data, source, prefix="")
    if overrides:
        merge_overrides(cfg, overrides)
    validate(cfg, source=path or "<defaults>")
    cfg.freeze()
    return cfg


def merge_overrides(cfg: CN, overrides: Sequence[str], source: str = "command line") -> None:
    items = list(overrides)
    if len(items) % 2:
        raise ConfigError(f"{source}: overrides come in KEY VALUE pairs; '{items[-1]}' has no value")
    for key, raw in zip(items[0::2], items[1::2]):
        value = _parse_scalar(raw)
        node, leaf = _lookup(cfg, key, source)
        node[leaf] = _coerce(node[leaf], value, key, source)


def validate(cfg: CN, source: str) -> None:
    for key, allowed in ENUMS.items():
        try:
            value = _get(cfg, key)
        except KeyError:
            continue
        if value not in allowed:
            raise ConfigError(f"{source}: {key} = {value!r} is not one of {list(allowed)}")
    import math

    def finite(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def nonneg(v):
        return finite(v) and v >= 0

    def positive(v):
        return finite(v) and v > 0

    def unit(v):  # a probability
        return finite(v) and 0.0 <= v <= 1.0

    def unit_open(v):  # a decay / momentum / smoothing: [0, 1)
        return finite(v) and 0.0 <= v < 1.0

    def pair(ok):
        return lambda v: len(v) == 2 and all(ok(x) for x in v) and v[0] <= v[1]

    def norm_values(v):  # DATA.MEAN / DATA.STD: 1 or CHANNELS values (3 are averaged for CHANNELS 1)
        return all(finite(x) for x in v) and (len(v) in (1, cfg.DATA.CHANNELS)
                                              or (cfg.DATA.CHANNELS == 1 and len(v) == 3))

    def rand_augment(v):
        if not v:
            return True
        from common.data.rand_augment import RandAugmentConfigError, parse_rand_augment

        try:
            parse_rand_augment(v)
        except RandAugmentConfigError:
            return False
        return True

    channels_rule = "must hold 1 or DATA.CHANNELS finite values (3 values are averaged when DATA.CHANNELS is 1)"
    checks = [
        ("SEED", lambda v: v >= 0, "must be >= 0 (numpy seeds are non-negative)"),
        ("DATA.BATCH_SIZE", lambda v: v >= 1, "must be >= 1"),
        ("DATA.EVAL_BATCH_SIZE", lambda v: v >= 0, "must be >= 0 (0 = DATA.BATCH_SIZE)"),
        ("DATA.IMAGE_SIZE", lambda v: v >= 1, "must be >= 1"),
        ("DATA.CHANNELS", lambda v: v in (1, 3), "must be 1 or 3"),
        ("DATA.WORKERS", lambda v: v >= 0, "must be >= 0"),
        ("DATA.NUM_TRAIN", lambda v: v >= 0, "must be >= 0 (0 = every sample)"),
        ("DATA.NUM_VAL", lambda v: v >= 0, "must be >= 0 (0 = every sample)"),
        ("DATA.SYNTHETIC_SAMPLES", lambda v: v >= 1, "must be >= 1"),
        ("DATA.MEAN", norm_values, channels_rule),
        ("DATA.STD", norm_values, channels_rule),
        ("DATA.STD", lambda v: all(positive(x) for x in v), "must be > 0 (images are divided by it)"),
        ("DATA.CROP_PCT", lambda v: finite(v) and 0.0 < v <= 1.0, "must be in (0, 1]"),
        ("AUG.RRC_SCALE", pair(lambda x: finite(x) and 0.0 < x <= 1.0),
         "must be two values lo <= hi in (0, 1] (fractions of the image area)"),
        ("AUG.RRC_RATIO", pair(positive), "must be two values 0 < lo <= hi (aspect ratios)"),
        ("AUG.PAD_CROP", lambda v: v >= 0, "must be >= 0 (0 = off)"),
        ("AUG.HFLIP", unit, "must be a probability in [0, 1]"),
        ("AUG.COLOR_JITTER", nonneg, "must be >= 0 (0 = off)"),
        ("AUG.RAND_AUGMENT", rand_augment,
         "is not a RandAugment setting: expected '' (off) or 'rand-m<0..10>[-n<ops>=1..][-mstd<std>]', "
         "e.g. 'rand-m9-mstd0.5'"),
        ("AUG.RANDOM_ERASE", unit, "must be a probability in [0, 1]"),
        ("AUG.CUTOUT", lambda v: v >= 0, "must be >= 0 (0 = off)"),
        ("THREADS", lambda v: v >= 0, "must be >= 0"),
        ("MODEL.NUM_CLASSES", lambda v: v >= 1, "must be >= 1"),
        ("MODEL.DROPOUT", unit_open, "must be in [0, 1)"),
        ("MODEL.DROP_PATH", unit_open, "must be in [0, 1)"),
        ("TRAIN.EPOCHS", lambda v: v >= 0, "must be >= 0"),
        ("PCDARTS.PARTIAL_K", lambda v: v >= 0, "must be >= 0 (0 = upstream's: 4 for CIFAR, 2 for ImageNet)"),
        ("PCDARTS.HVP_R", positive, "must be > 0 (the finite-difference step is HVP_R / ||v||)"),
        ("PCDARTS.ARCH_START_EPOCH", lambda v: v >= 0, "must be >= 0 (the first epoch with architecture steps)"),
        ("PCDARTS.TRAIN_PORTION", lambda v: finite(v) and 0.0 < v < 1.0,
         "must be in (0, 1) (the share of the training set that trains the weights)"),
        ("SCHED.EPOCH_SHIFT", lambda v: v >= 0, "must be >= 0 (epochs the schedule runs ahead)"),
        ("SCHED.PCT_START", lambda v: finite(v) and 0.0 < v < 1.0, "must be in (0, 1) (the rising share of one_cycle)"),
        ("SCHED.DIV_FACTOR", positive, "must be > 0"),
        ("SCHED.POWER", positive, "must be > 0"),
        ("SCHED.FINAL_DIV_FACTOR", positive, "must be > 0"),
        ("SCHED.CYCLE_MOMENTUM", lambda v: len(v) == 0 or (len(v) == 2 and all(unit_open(x) for x in v)),
         "must be empty (no momentum cycle) or two values (base, max) in [0, 1)"),
        ("SEG.CROP", lambda v: len(v) == 2 and all(x >= 1 for x in v), "must be (height, width) >= 1"),
        ("SEG.SCALE", lambda v: len(v) == 2 and 0 < v[0] <= v[1] and all(finite(x) for x in v),
         "must be (low, high) with 0 < low <= high"),
        ("SEG.BASE_SIZE", lambda v: v >= 1, "must be >= 1 (pixels of the long side at scale 1)"),
        ("SEG.FLIP", unit, "must be a probability in [0, 1]"),
        ("SEG.EVAL_SIZE", lambda v: len(v) == 2 and (tuple(v) == (0, 0) or all(x >= 1 for x in v)),
         "must be (height, width) >= 1, or [0, 0] for the whole image"),
        ("SEG.IGNORE_LABEL", lambda v: 0 <= v <= 255, "must be a label value in [0, 255]"),
        ("NCP.SPLIT_SEED", lambda v: v >= 0, "must be >= 0"),
        ("NCP.VAL_FRACTION", lambda v: finite(v) and 0.0 < v < 1.0, "must be in (0, 1) (the held-out share)"),
        ("NCP.ITERS", lambda v: v >= 1, "must be >= 1"),
        ("NCP.LR", positive, "must be > 0 (the step on the normalised code)"),
        ("NCP.MAX_FLOPS", nonneg, "must be >= 0 (GMACs; 0 = no budget)"),
        ("NCP.MAX_PARAMS", nonneg, "must be >= 0 (millions; 0 = no budget)"),
        ("NCP.BUDGET_WEIGHT", nonneg, "must be >= 0"),
        ("TRAIN.EMA_DECAY", unit_open, "must be in [0, 1)"),
        ("TRAIN.LABEL_SMOOTHING", unit_open, "must be in [0, 1)"),
        ("TRAIN.AUX_WEIGHT", nonneg, "must be >= 0"),
        ("TRAIN.LOG_INTERVAL", lambda v: v >= 0, "must be >= 0 (steps; 0 = off)"),
        ("TRAIN.EVAL_EVERY", lambda v: v >= 1, "must be >= 1 (epochs)"),
        ("TRAIN.MAX_STEPS_PER_EPOCH", lambda v: v >= 0, "must be >= 0 (0 = the whole epoch)"),
        ("TRAIN.ITERATIONS", lambda v: v >= 0, "must be >= 0 (0 = TRAIN.EPOCHS decides the length)"),
        ("TRAIN.CKPT_EVERY", lambda v: v >= 1, "must be >= 1 (epochs)"),
        ("TRAIN.KEEP_CHECKPOINTS", lambda v: v >= 0, "must be >= 0"),
        ("SCHED.WARMUP_EPOCHS", nonneg, "must be >= 0"),
        ("SCHED.WARMUP_LR", nonneg, "must be a finite number >= 0"),
        ("SCHED.DECAY_EPOCHS", positive, "must be > 0 (epochs between step decays)"),
        ("SCHED.DECAY_RATE", positive, "must be > 0 (the LR is multiplied by it)"),
        ("SCHED.MIN_LR", nonneg, "must be a finite number >= 0"),
        ("SCHED.MIN_LR", lambda v: v <= cfg.OPTIM.LR, f"must be <= OPTIM.LR = {cfg.OPTIM.LR!r}"),
        ("SCHED.COOLDOWN_EPOCHS", nonneg, "must be >= 0"),
        ("SCHED.COOLDOWN_EPOCHS",
         lambda v: cfg.SCHED.NAME != "cosine" or cfg.TRAIN.EPOCHS == 0 or v < cfg.TRAIN.EPOCHS,
         f"must be < TRAIN.EPOCHS = {cfg.TRAIN.EPOCHS} (cosine decays over TRAIN.EPOCHS - SCHED.COOLDOWN_EPOCHS)"),
        ("SCHED.MILESTONES", lambda v: all(nonneg(x) for x in v) and list(v) == sorted(v),
         "must be epochs >= 0 in increasing order"),
        ("SCHED.MILESTONES", lambda v: cfg.SCHED.NAME != "multistep" or len(v) > 0,
         "must not be empty when SCHED.NAME is 'multistep'"),
        ("DIST_TIMEOUT_S", positive, "must be > 0 (seconds)"),
        ("CREAM.FLOPS_MINIMUM", nonneg, "must be a finite number >= 0 (MFLOPs)"),
        ("CREAM.FLOPS_MAXIMUM", positive, "must be > 0 (MFLOPs)"),
        ("CREAM.FLOPS_MAXIMUM", lambda v: v >= cfg.CREAM.FLOPS_MINIMUM,
         f"must be >= CREAM.FLOPS_MINIMUM = {cfg.CREAM.FLOPS_MINIMUM!r}"),
        ("CREAM.STA_NUM", lambda v: len(v) == 0 or (len(v) == 5 and all(1 <= int(x) <= 4 for x in v)),
         "must be empty (the layer search) or 5 layer counts, each 1..4"),
        ("CREAM.SLICE", lambda v: v >= 1, "must be >= 1"),
        ("CREAM.POOL_SIZE", lambda v: v >= 1, "must be >= 1"),
        ("CREAM.ACC_GAP", nonneg, "must be a finite number >= 0 (top-1 points)"),
        ("CREAM.META_START_EPOCH", lambda v: v >= 0, "must be >= 0"),
        ("CREAM.UPDATE_ITER", lambda v: v >= 1, "must be >= 1"),
        ("CREAM.PRE_PROB", lambda v: len(v) == 6 and all(nonneg(x) for x in v) and sum(v) > 0,
         "must be 6 probabilities >= 0 (one per choice), not all 0"),
        ("PNASNET.TOTAL_TRAINING_STEPS", lambda v: v >= 0, "must be >= 0 (0 = no drop-path burn-in)"),
        ("PNASNET.BN_DECAY", unit_open, "must be in [0, 1)"),
        ("PARITY.BACKENDS", lambda v: len(v) > 0 and all(x in ("torch", "paddle") for x in v),
         "must name backends among ['torch', 'paddle']"),
        ("PARITY.DTYPES", lambda v: len(v) > 0 and all(x in ("float32", "float64") for x in v),
         "must name dtypes among ['float32', 'float64']"),
        ("PARITY.BATCH_SIZE", lambda v: v >= 1, "must be >= 1"),
        ("PARITY.STEPS", lambda v: v >= 0, "must be >= 0"),
        ("BENCH.BATCH_SIZES", lambda v: all(x >= 1 for x in v), "must be batch sizes >= 1"),
        ("BENCH.TRAIN_BATCH_SIZES", lambda v: all(x >= 1 for x in v), "must be batch sizes >= 1"),
        ("BENCH.WARMUP", lambda v: v >= 0, "must be >= 0 (0 = the family's default)"),
        ("BENCH.ITERS", lambda v: v >= 0, "must be >= 0 (0 = the family's default)"),
        ("BENCH.ROUNDS", lambda v: v >= 1, "must be >= 1"),
        ("BENCH.MODES", lambda v: all(x in BENCH_MODES for x in v), f"must be among {list(BENCH_MODES)} (the "
         "family's benchmark says which it offers)"),
        ("BENCH.THREADS", lambda v: v >= 0, "must be >= 0"),
        ("BENCH.PROFILE_STEPS", lambda v: v >= 0, "must be >= 0"),
        ("BENCH.TIMEOUT_S", positive, "must be > 0 (seconds)"),
    ]
    # Every optimizer node (OPTIM, ARCH_OPTIM, ...: the same keys, see optimizer_node), checked first.
    for node in reversed([k for k in cfg.keys() if k == "OPTIM" or k.endswith("_OPTIM")]):
        checks[:0] = [
            (f"{node}.LR", nonneg, "must be a finite number >= 0"),
            (f"{node}.MOMENTUM", unit_open, "must be in [0, 1)"),
            (f"{node}.WEIGHT_DECAY", nonneg, "must be a finite number >= 0"),
            (f"{node}.EPS", positive, "must be > 0"),
            (f"{node}.ALPHA", unit_open, "must be in [0, 1)"),
            (f"{node}.BETAS", lambda v: len(v) == 2 and all(unit_open(x) for x in v), "must be two values in [0, 1)"),
            (f"{node}.GRAD_CLIP", nonneg, "must be >= 0 (0 = off)"),
        ]
    from common.optim_reference import parse_lr_groups

    for node in [k for k in cfg.keys() if k == "OPTIM" or k.endswith("_OPTIM")]:
        if "LR_GROUPS" in cfg[node]:  # the rules' form now; whether each one matches a parameter, when built
            try:
                parse_lr_groups(cfg[node].LR_GROUPS, f"{node}.LR_GROUPS")
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None
    for key, ok, why in checks:
        try:
            value = _get(cfg, key)
        except KeyError:  # a sub-tree this version does not have
            continue
        try:
            good = bool(ok(value))
        except (TypeError, ValueError):  # e.g. a list whose items have the wrong type
            good = False
        if not good:
            raise ConfigError(f"{source}: {key} = {value!r} {why}")


def save_config(cfg: CN, path: str) -> None:
    from common.io_utils import atomic_write_text

    atomic_write_text(path, cfg.dump())


def config_to_dict(cfg: CN) -> Dict[str, Any]:
    def convert(node):
        if isinstance(node, CN):
            return {k: convert(v) for k, v in node.items()}
        if isinstance(node, tuple):
            return list(node)
        return node

    return convert(cfg)


# --------------------------------------------------------------------------------------------- helpers
def _read_chain(path: str, seen: List[str]):
    """Yield ``(file, mapping)`` from the deepest ``_BASE_`` to ``path`` itself."""
    real = os.path.realpath(path)
    if real in seen:
        chain = " -> ".join(seen + [real])
        raise ConfigError(f"{path}: {BASE_KEY} cycle: {chain}")
    if not os.path.isfile(path):
        where = f" (named as {BASE_KEY} in {seen[-1]})" if seen else ""
        raise ConfigError(f"config file not found: {path}{where}")
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    bases = data.pop(BASE_KEY, None)
    if bases is not None:
        for base in [bases] if isinstance(bases, str) else list(bases):
            base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
            yield from _read_chain(base_path, seen + [real])
    yield path, data


def _merge(cfg: CN, data: Dict[str, Any], source: str, prefix: str) -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if not isinstance(key, str) or key not in cfg:
            raise ConfigError(f"{source}: unknown key {dotted}{_suggest(cfg, key)}")
        current = cfg[key]
        if isinstance(current, CN):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {dotted} is a section; expected a mapping, got {value!r}")
            _merge(current, value, source, dotted + ".")
        else:
            cfg[key] = _coerce(current, value, dotted, source)


def _coerce(current: Any, value: Any, key: str, source: str) -> Any:
    """Accept ``value`` when its type matches the default's; int->float and list<->tuple are fine."""
    if isinstance(current, CN) or isinstance(value, dict):
        raise ConfigError(f"{source}: {key} = {value!r}: a section cannot be replaced by a value or the reverse")
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif isinstance(current, str):
        if isinstance(value, str):
            return value
        if key in CODE_KEYS and isinstance(value, (list, tuple)):  # a code written as a list of integers
            import json

            return json.dumps(list(value))
    elif isinstance(current, (tuple, list)):
        if isinstance(value, str) and value.strip().startswith("["):  # a list written as a quoted string
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                pass
        if isinstance(value, (tuple, list)):
            if current and value:
                proto = current[0]
                value = [_coerce(proto, item, f"{key}[{i}]", source) for i, item in enumerate(value)]
            return tuple(value)
    elif current is None:
        return value
    raise ConfigError(
        f"{source}: {key} = {value!r} has type {type(value).__name__}, expected {type(current).__name__} "
        f"(default {current!r})"
    )


def _lookup(cfg: CN, dotted: str, source: str):
    parts = dotted.split(".")
    node = cfg
    for i, part in enumerate(parts[:-1]):
        if part not in node or not isinstance(node[part], CN):
            raise ConfigError(f"{source}: unknown key {'.'.join(parts[: i + 1])} (in override {dotted})")
        node = node[part]
    leaf = parts[-1]
    if leaf not in node:
        raise ConfigError(f"{source}: unknown key {dotted}{_suggest(node, leaf)}")
    if isinstance(node[leaf], CN):
        raise ConfigError(f"{source}: {dotted} is a section, not a value")
    return node, leaf


def _get(cfg: CN, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _parse_scalar(raw: str) -> Any:
    if raw == "":  # `DATA.ROOT ""` on the command line: the empty string, not YAML's null
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _suggest(node: CN, key: Any) -> str:
    import difflib

    close = difflib.get_close_matches(str(key), [str(k) for k in node.keys()], n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def deep_copy(cfg: CN) -> CN:
    return copy.deepcopy(cfg)


def iter_keys(cfg: CN, prefix: str = "") -> Iterable[str]:
    for key, value in cfg.items():
        if isinstance(value, CN):
            yield from iter_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"
