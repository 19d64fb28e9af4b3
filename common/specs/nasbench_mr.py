"""NAS-Bench-MR: architecture codes and the multi-resolution network, as data (no framework here).

Facts: ``shared/research/ncp.md`` sections 1-2, the benchmark tables (``data/nasbench_mr``).

**Codes.**  A network of the space is written three ways, all handled here and converted losslessly:

* the *code string* (31 integers, upstream's ``search_list.txt``)
  ``c0_c1-m1_1_n_ch-m2_2_n_n_ch_ch-m3_3_n_n_n_ch_ch_ch-m4_4_n_n_n_n_ch_ch_ch_ch-last``:
  the two stem widths; for k = 1..4 *block k*: how many times the k-branch stage repeats (``m_k``), the fixed branch
  count ``k``, k BasicBlock counts, k branch widths; the width of the head's 1x1 fusion conv;
* the *embedding* (27 integers, the benchmark's ``embedding`` field and the predictor's input): the code without
  the four fixed branch counts (positions 3, 7, 13, 21 of the 31);
* the *network setting* upstream builds from (``input_channel``, ``network_setting`` / the tables'
  ``inverted_residual_setting``: one ``[branches, [blocks per branch], [channels per branch]]`` per stage,
  ``last_channel``).

The space (:data:`BOUNDS`): counts (``m_k`` and blocks per branch) in 1..4, every width (stems, branches, last) in
8..128 and a multiple of 8 (the box NCP searches in; the benchmark's 2507 networks all lie in it).
:func:`round_embedding` maps a continuous code to the nearest valid one as NCP does.

**The network** (:class:`MRNetSpec`, upstream ``MultiResolutionNet``): two stride-2 3x3 ConvBNReLU stems (1/4
resolution); then for every stage a *fuse module* (from the previous stage's branches to this stage's: 3x3 stride-1
ConvBNReLU from the same level, 1x1 ConvBNReLU + nearest x2 from the coarser neighbour, 3x3 stride-2 ConvBNReLU
from the finer one, summed after a bilinear resize to the target size, then ReLU; a new branch is a 3x3 stride-2
ConvBNReLU of the fused branch above it) and a *parallel module* (per branch, a chain of ResNet BasicBlocks); the
head resizes every branch bilinearly (``align_corners=False``) to branch 0 (segmentation, 1/4 resolution) or to
the last, coarsest branch (classification), concatenates, applies a 1x1 ConvBNReLU to ``last_channel``, global
average pool (classification only) and a 1x1 conv with bias to the classes.  The output is ``(N, classes, 1, 1)``
for classification (flattened by the loss, as upstream) and ``(N, classes, H/4, W/4)`` for segmentation.

State names are upstream's (``downsamples.{0,1}``, ``features.{2s}.fuse_layers.{i}.{j}``,
``features.{2s+1}.branches.{b}.{i}.{conv1,bn1,conv2,bn2}``, ``transform``, ``classifier``), with the index gaps of
the empty fuse slots, so upstream state dicts load by name.

**Counts.**  :func:`count_params` counts trainable parameters; :func:`count_macs` with ``rule="thop_2020"`` is the
rule that reproduces the benchmark's ``flops`` / ``params`` fields exactly for all 2507 networks (classification head,
50 classes, 128x128; checked in a test): every conv's MACs plus one per output element when it has a bias, 2 per
element for every BatchNorm, nothing for ReLU, upsampling, resizing and pooling.  ``rule="conv"`` counts conv
multiply-adds only.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from common.specs._checks import at_least, classifier_width

Shape = Tuple[int, ...]

# --------------------------------------------------------------------------------------------------------------
# Codes
# --------------------------------------------------------------------------------------------------------------

CODE_LENGTH = 31
EMBEDDING_LENGTH = 27
MAX_BRANCHES = 4
#: positions of the fixed branch counts in the 31-integer code (dropped by the embedding)
BRANCH_COUNT_POSITIONS = (3, 7, 13, 21)
#: embedding positions that are widths (stems, branch widths, last) and that are counts (repeats, blocks)
CHANNEL_POSITIONS = (0, 1, 4, 8, 9, 14, 15, 16, 22, 23, 24, 25, 26)
COUNT_POSITIONS = (2, 3, 5, 6, 7, 10, 11, 12, 13, 17, 18, 19, 20, 21)
#: the search-space box and the grid of every embedding position: (low, high, step)
CHANNEL_BOUNDS = (8, 128, 8)
COUNT_BOUNDS = (1, 4, 1)
BOUNDS: Tuple[Tuple[int, int, int], ...] = tuple(
    CHANNEL_BOUNDS if i in CHANNEL_POSITIONS else COUNT_BOUNDS for i in range(EMBEDDING_LENGTH))
#: NCP's default start: every count 2, every width 64 (upstream ``tools/ncp.py``)
DEFAULT_START = tuple(64 if i in CHANNEL_POSITIONS else 2 for i in range(EMBEDDING_LENGTH))


def _embedding_labels() -> Tuple[str, ...]:
    labels = ["stem0 width", "stem1 width"]
    start = 2
    for k in range(1, MAX_BRANCHES + 1):
        labels.append(f"block {k} repeats")
        labels += [f"block {k} branch {b} blocks" for b in range(k)]
        labels += [f"block {k} branch {b} width" for b in range(k)]
        start += 1 + 2 * k
    labels.append("last width")
    return tuple(labels)


#: what each embedding position means (for error messages and plots)
EMBEDDING_LABELS = _embedding_labels()


class CodeError(ValueError):
    """A code, embedding or setting that is not a network of the space; the message names the position."""


@dataclasses.dataclass(frozen=True)
class Block:
    """Block k of a code: ``repeats`` stages of ``len(blocks)`` branches."""

    repeats: int
    blocks: Tuple[int, ...]     # BasicBlocks per branch
    channels: Tuple[int, ...]   # width per branch


@dataclasses.dataclass(frozen=True)
class ArchCode:
    """One network of the NAS-Bench-MR space (validated on construction through :func:`from_embedding`)."""

    input_channel: Tuple[int, int]
    blocks: Tuple[Block, Block, Block, Block]
    last_channel: int

    # ---- views
    def embedding(self) -> Tuple[int, ...]:
        out = list(self.input_channel)
        for block in self.blocks:
            out += [block.repeats, *block.blocks, *block.channels]
        return tuple(out + [self.last_channel])

    def code_ints(self) -> Tuple[int, ...]:
        out = list(self.input_channel)
        for k, block in enumerate(self.blocks, 1):
            out += [block.repeats, k, *block.blocks, *block.channels]
        return tuple(out + [self.last_channel])

    def code(self) -> str:
        """The 31-integer code string (upstream's Setting2Code)."""
        groups = [list(self.input_channel)]
        for k, block in enumerate(self.blocks, 1):
            groups.append([block.repeats, k, *block.blocks, *block.channels])
        groups.append([self.last_channel])
        return "-".join("_".join(str(v) for v in group) for group in groups)

    def stages(self) -> Tuple["StageSetting", ...]:
        """The network setting: one entry per stage (block k repeated ``repeats`` times)."""
        out = []
        for block in self.blocks:
            out += [StageSetting(len(block.blocks), block.blocks, block.channels)] * block.repeats
        return tuple(out)

    def setting(self) -> List[list]:
        """Upstream's ``network_setting`` list: ``[[branches, [blocks...], [channels...]], ...]``."""
        return [[s.branches, list(s.blocks), list(s.channels)] for s in self.stages()]

    def as_dict(self) -> Dict[str, object]:
        """The JSON form: the code string (the identity), the embedding and the setting (for reading)."""
        return {"code": self.code(), "embedding": list(self.embedding()), "input_channel": list(self.input_channel),
                "network_setting": self.setting(), "last_channel": self.last_channel}

    def __str__(self) -> str:
        return self.code()


@dataclasses.dataclass(frozen=True)
class StageSetting:
    branches: int
    blocks: Tuple[int, ...]
    channels: Tuple[int, ...]


def _as_int(value, where: str) -> int:
    if isinstance(value, bool):
        raise CodeError(f"{where}: {value!r} is not an integer")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise CodeError(f"{where}: {value!r} is not an integer")
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise CodeError(f"{where}: {value!r} is not an integer") from None


def check_embedding(values: Sequence, source: str = "embedding") -> Tuple[int, ...]:
    """The 27 integers, each inside :data:`BOUNDS` and on its grid; else a :class:`CodeError` naming the position,
    its meaning, the value and the allowed range."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise CodeError(f"{source}: expected {EMBEDDING_LENGTH} integers, got {values!r}")
    if len(values) != EMBEDDING_LENGTH:
        raise CodeError(f"{source}: expected {EMBEDDING_LENGTH} integers, got {len(values)}")
    out = []
    for i, raw in enumerate(values):
        where = f"{source} position {i} ({EMBEDDING_LABELS[i]})"
        v = _as_int(raw, where)
        low, high, step = BOUNDS[i]
        if not low <= v <= high or (v - low) % step:
            grid = f"{low}..{high}" + (f" in steps of {step}" if step > 1 else "")
            raise CodeError(f"{where} = {v} is outside the search space: allowed {grid}")
        out.append(v)
    return tuple(out)


def from_embedding(values: Sequence, source: str = "embedding") -> ArchCode:
    """27 integers -> :class:`ArchCode` (checked)."""
    emb = check_embedding(values, source)
    blocks, pos = [], 2
    for k in range(1, MAX_BRANCHES + 1):
        blocks.append(Block(emb[pos], tuple(emb[pos + 1:pos + 1 + k]), tuple(emb[pos + 1 + k:pos + 1 + 2 * k])))
        pos += 1 + 2 * k
    return ArchCode((emb[0], emb[1]), tuple(blocks), emb[pos])


def code_to_embedding(ints: Sequence[int], source: str = "code") -> Tuple[int, ...]:
    """31 code integers -> the 27-integer embedding; the fixed branch counts must be 1, 2, 3, 4."""
    if len(ints) != CODE_LENGTH:
        raise CodeError(f"{source}: expected {CODE_LENGTH} integers, got {len(ints)}")
    for k, pos in enumerate(BRANCH_COUNT_POSITIONS, 1):
        if _as_int(ints[pos], f"{source} position {pos}") != k:
            raise CodeError(f"{source} position {pos} (block {k} branch count) = {ints[pos]}: must be {k}")
    return tuple(v for i, v in enumerate(ints) if i not in BRANCH_COUNT_POSITIONS)


def parse_code(text: str, source: str = "code") -> ArchCode:
    """A code string (``96_128-1_1_1_48-...-64``) -> :class:`ArchCode`; the errors name the group and position."""
    text = str(text).strip()
    groups = text.split("-")
    sizes = (2, 4, 6, 8, 10, 1)
    if len(groups) != len(sizes):
        raise CodeError(f"{source} {text!r}: expected {len(sizes)} '-'-separated groups "
                        f"(stems, blocks 1-4, last width), got {len(groups)}")
    ints: List[int] = []
    for g, (group, size) in enumerate(zip(groups, sizes)):
        parts = group.split("_")
        if len(parts) != size:
            raise CodeError(f"{source} {text!r}: group {g + 1} ({group!r}) needs {size} '_'-separated integers, "
                            f"got {len(parts)}")
        for part in parts:
            if not part.strip().lstrip("-").isdigit():
                raise CodeError(f"{source} {text!r}: group {g + 1} ({group!r}) holds {part!r}, not an integer")
            ints.append(int(part))
    return from_embedding(code_to_embedding(ints, f"{source} {text!r}"), f"{source} {text!r}")


def from_setting(input_channel: Sequence[int], setting: Sequence, last_channel: int,
                 source: str = "setting") -> ArchCode:
    """Upstream's (``input_channel``, ``network_setting``, ``last_channel``) -> :class:`ArchCode`.  The stages must
    be block 1's repeats, then block 2's, ...: 1, 2, 3, 4 branches, identical within a block."""
    stages = [tuple(s) for s in setting]
    emb: List[int] = [*input_channel]
    pos = 0
    for k in range(1, MAX_BRANCHES + 1):
        run = []
        while pos < len(stages) and int(stages[pos][0]) == k:
            run.append(stages[pos])
            pos += 1
        if not run:
            raise CodeError(f"{source}: no stage with {k} branches (stages must go 1, 2, 3, 4 branches)")
        first = run[0]
        for i, stage in enumerate(run[1:], 1):
            if [list(stage[1]), list(stage[2])] != [list(first[1]), list(first[2])]:
                raise CodeError(f"{source}: stage {pos - len(run) + i} differs from the other {k}-branch stages "
                                "(a block repeats one stage)")
        if len(first[1]) != k or len(first[2]) != k:
            raise CodeError(f"{source}: a {k}-branch stage needs {k} block counts and {k} widths, got {first}")
        emb += [len(run), *first[1], *first[2]]
    if pos != len(stages):
        raise CodeError(f"{source}: stage {pos} ({stages[pos]}) comes after the 4-branch stages")
    return from_embedding(emb + [last_channel], source)


def code_from_value(value, source: str) -> ArchCode:
    """A config value: a code string, 27 embedding integers, or 31 code integers (list or text)."""
    if isinstance(value, ArchCode):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise CodeError(f"{source} = {text!r} is neither a code string nor a JSON list of integers") from None
        else:
            return parse_code(text, source)
    values = list(value)
    if len(values) == CODE_LENGTH:
        return from_embedding(code_to_embedding(values, source), source)
    return from_embedding(values, source)


def save_code(code: ArchCode, path: str, extra: Optional[Mapping[str, object]] = None) -> None:
    """``code.as_dict()`` (plus ``extra``) as JSON, written atomically."""
    from common.io_utils import atomic_path

    data = {**code.as_dict(), **(dict(extra) if extra else {})}
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def load_code(path: str) -> ArchCode:
    """A JSON file from :func:`save_code` (or any JSON object with a ``code`` or ``embedding`` field)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as exc:
        raise CodeError(f"{path}: cannot read the code file ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise CodeError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and "code" in data:
        return parse_code(data["code"], f"{path} 'code'")
    if isinstance(data, dict) and "embedding" in data:
        return from_embedding(data["embedding"], f"{path} 'embedding'")
    raise CodeError(f"{path}: expected a JSON object with a 'code' (or 'embedding') field")


def make_divisible(value: float, divisor: int) -> int:
    """Upstream NCP's rounding: ``max(d, int(v + d/2) // d * d)``."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


def clamp_to_box(values: Sequence[float]) -> List[float]:
    return [min(max(float(v), BOUNDS[i][0]), BOUNDS[i][1]) for i, v in enumerate(values)]


def round_embedding(values: Sequence[float]) -> Tuple[int, ...]:
    """A continuous 27-vector -> the valid embedding NCP takes: clamp each position to its box, then round to its
    grid (widths to multiples of 8, counts to integers) with upstream's rule."""
    if len(values) != EMBEDDING_LENGTH:
        raise CodeError(f"expected {EMBEDDING_LENGTH} values, got {len(values)}")
    for i, v in enumerate(values):
        if not math.isfinite(float(v)):
            raise CodeError(f"position {i} ({EMBEDDING_LABELS[i]}) is {v}, not a finite number")
    out = tuple(make_divisible(v, BOUNDS[i][2]) for i, v in enumerate(clamp_to_box(values)))
    return check_embedding(out, "rounded embedding")


# --------------------------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------------------------

TASKS = ("classification", "segmentation")
NET_NAMES = ("mrnet",)
BN_MOMENTUM = 0.1
BN_EPS = 1e-5
#: the benchmark's counting setting (research §2.2): classification head, 50 classes, 128x128
TABLE_COUNT_SETTING = {"task": "classification", "num_classes": 50, "image_size": 128}


@dataclasses.dataclass(frozen=True)
class MRNetSpec:
    code: ArchCode
    task: str = "classification"
    num_classes: int = 1000
    image_size: int = 224
    in_channels: int = 3
    align_corners: bool = False
    name: str = "mrnet"


@dataclasses.dataclass(frozen=True)
class FuseOp:
    """One input of one fused output branch: ``kind`` = ``same`` (3x3 s1), ``up`` (1x1 then nearest x2), ``down``
    (3x3 s2) or ``new`` (3x3 s2 from the fused branch above: a new branch)."""

    out_branch: int
    in_branch: int
    kind: str
    c_in: int
    c_out: int

    @property
    def prefix(self) -> str:
        """The state-name prefix of its ConvBNReLU inside ``fuse_layers``."""
        if self.kind == "same":
            return f"fuse_layers.{self.out_branch}.{self.in_branch}"
        if self.kind == "new":
            return f"fuse_layers.{self.out_branch}.0"
        return f"fuse_layers.{self.out_branch}.{self.in_branch}.0"


@dataclasses.dataclass(frozen=True)
class StagePlan:
    index: int                     # stage s: fuse module features.{2s}, parallel module features.{2s+1}
    in_channels: Tuple[int, ...]   # the previous stage's branch widths (the stem: one branch)
    out_channels: Tuple[int, ...]
    blocks: Tuple[int, ...]
    fuse: Tuple[Tuple[FuseOp, ...], ...]   # per output branch, its inputs in summation order

    @property
    def fuse_index(self) -> int:
        return 2 * self.index

    @property
    def parallel_index(self) -> int:
        return 2 * self.index + 1


def _fuse_rows(c_in: Sequence[int], c_out: Sequence[int]) -> Tuple[Tuple[FuseOp, ...], ...]:
    n_in, n_out = len(c_in), len(c_out)
    if n_out < n_in:
        raise CodeError(f"a stage with {n_out} branches cannot follow one with {n_in}")
    rows = []
    for i in range(n_in):   # only-fuse-neighbour: inputs i-1 (finer), i, i+1 (coarser)
        ops = []
        for j in (i - 1, i, i + 1):
            if 0 <= j < n_in:
                kind = "same" if j == i else ("up" if j == i + 1 else "down")
                ops.append(FuseOp(i, j, kind, c_in[j], c_out[i]))
        rows.append(tuple(ops))
    for b in range(n_in, n_out):
        rows.append((FuseOp(b, b - 1, "new", c_out[b - 1], c_out[b]),))
    return tuple(rows)


def stage_plan(spec_or_code) -> Tuple[StagePlan, ...]:
    code = spec_or_code.code if isinstance(spec_or_code, MRNetSpec) else spec_or_code
    prev: Tuple[int, ...] = (code.input_channel[1],)
    plans = []
    for s, stage in enumerate(code.stages()):
        plans.append(StagePlan(s, prev, stage.channels, stage.blocks, _fuse_rows(prev, stage.channels)))
        prev = stage.channels
    return tuple(plans)


def conv_out(size: int, kernel: int, stride: int) -> int:
    pad = (kernel - 1) // 2
    return (size + 2 * pad - kernel) // stride + 1


def branch_sizes(spec: MRNetSpec, size: Optional[int] = None) -> Tuple[int, ...]:
    """Map sizes of branches 0..3 for a square input (stems: two 3x3 stride-2 convs; each further branch one more)."""
    s = conv_out(conv_out(spec.image_size if size is None else int(size), 3, 2), 3, 2)
    out = [s]
    for _ in range(MAX_BRANCHES - 1):
        out.append(conv_out(out[-1], 3, 2))
    return tuple(out)


def network_spec(code, task: str = "classification", num_classes: int = 1000, image_size: int = 224,
                 in_channels: int = 3, source: str = "code") -> MRNetSpec:
    code = code_from_value(code, source)
    if task not in TASKS:
        raise ValueError(f"task {task!r} must be one of {', '.join(TASKS)}")
    spec = MRNetSpec(code, task, int(num_classes), int(image_size), int(in_channels))
    if spec.image_size < 32:
        raise ValueError(f"DATA.IMAGE_SIZE = {spec.image_size}: a multi-resolution network needs >= 32 px "
                         f"(its four branches run at 1/4 ... 1/32 of the input)")
    return spec


# ---- state rows: name -> (kind, shape, groups, weight shape or None)
_Row = Tuple[str, Shape, int, Optional[Shape]]


def _conv(rows: Dict[str, _Row], prefix: str, c_in: int, c_out: int, k: int, bias: bool = False) -> None:
    shape = (c_out, c_in, k, k)
    rows[f"{prefix}.weight"] = ("conv.weight", shape, 1, shape)
    if bias:
        rows[f"{prefix}.bias"] = ("conv.bias", (c_out,), 1, shape)


def _bn(rows: Dict[str, _Row], prefix: str, c: int) -> None:
    for leaf, kind in (("weight", "bn.weight"), ("bias", "bn.bias"), ("running_mean", "bn.running_mean"),
                       ("running_var", "bn.running_var")):
        rows[f"{prefix}.{leaf}"] = (kind, (c,), 1, None)


def _conv_bn(rows, prefix: str, c_in: int, c_out: int, k: int) -> None:
    """ConvBNReLU: ``{prefix}.0`` conv (no bias), ``{prefix}.1`` BN."""
    _conv(rows, f"{prefix}.0", c_in, c_out, k)
    _bn(rows, f"{prefix}.1", c_out)


FUSE_KERNEL = {"same": 3, "up": 1, "down": 3, "new": 3}
FUSE_STRIDE = {"same": 1, "up": 1, "down": 2, "new": 2}


def _state_rows(spec: MRNetSpec) -> Dict[str, _Row]:
    rows: Dict[str, _Row] = {}
    c0, c1 = spec.code.input_channel
    _conv_bn(rows, "downsamples.0", spec.in_channels, c0, 3)
    _conv_bn(rows, "downsamples.1", c0, c1, 3)
    plans = stage_plan(spec)
    # upstream's attribute order: downsamples, transform, classifier, features
    last = plans[-1].out_channels
    _conv_bn(rows, "transform", sum(last), spec.code.last_channel, 1)
    _conv(rows, "classifier", spec.code.last_channel, spec.num_classes, 1, bias=True)
    for plan in plans:
        fp = f"features.{plan.fuse_index}"
        for row in plan.fuse:
            for op in row:
                _conv_bn(rows, f"{fp}.{op.prefix}", op.c_in, op.c_out, FUSE_KERNEL[op.kind])
        pp = f"features.{plan.parallel_index}"
        for b, (n, c) in enumerate(zip(plan.blocks, plan.out_channels)):
            for i in range(n):
                bp = f"{pp}.branches.{b}.{i}"
                _conv(rows, f"{bp}.conv1", c, c, 3)
                _bn(rows, f"{bp}.bn1", c)
                _conv(rows, f"{bp}.conv2", c, c, 3)
                _bn(rows, f"{bp}.bn2", c)
    return rows


def expected_state_shapes(spec: MRNetSpec) -> Dict[str, Shape]:
    """Upstream ``MultiResolutionNet`` state names and shapes (torch layout) in its ``state_dict`` order; BN entries
    are ``weight, bias, running_mean, running_var`` (no ``num_batches_tracked``, as every family)."""
    return {name: row[1] for name, row in _state_rows(spec).items()}


def param_kinds(spec: MRNetSpec) -> Dict[str, "object"]:
    from common import init as I

    return {name: I.ParamSpec(kind, shape, groups, wshape) for name, (kind, shape, groups, wshape)
            in _state_rows(spec).items()}


def _numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def count_params(spec: MRNetSpec) -> int:
    """Trainable parameters: conv weights, the classifier bias, BN weight and bias (running statistics are buffers)."""
    return sum(_numel(shape) for kind, shape, _, _ in _state_rows(spec).values()
               if kind not in ("bn.running_mean", "bn.running_var"))


MAC_RULES = ("thop_2020", "conv")


def count_macs(spec: MRNetSpec, image_size: Optional[int] = None, rule: str = "thop_2020") -> int:
    """Batch-1 MACs, rule thop_2020 (the benchmark tables' counting: conv, conv bias and BN) or conv (conv only).

    ``thop_2020`` (the benchmark tables' rule): conv ``out_elements * c_in * k * k`` plus ``out_elements`` when the
    conv has a bias; BatchNorm ``2 * elements``; ReLU, nearest upsampling, bilinear resizing, the global pool and
    additions 0.  ``conv``: conv multiply-adds only."""
    if rule not in MAC_RULES:
        raise ValueError(f"MAC rule {rule!r} must be one of {', '.join(MAC_RULES)}")
    size = spec.image_size if image_size is None else int(image_size)
    total = 0
    thop = rule == "thop_2020"

    def conv_bn(hw: int, c_in: int, c_out: int, k: int, bn: bool = True, bias: bool = False) -> None:
        nonlocal total
        out = hw * hw * c_out
        total += out * c_in * k * k
        if thop:
            total += out if bias else 0
            total += 2 * out if bn else 0

    s_stem = conv_out(size, 3, 2)
    conv_bn(s_stem, spec.in_channels, spec.code.input_channel[0], 3)
    sizes = branch_sizes(spec, size)
    conv_bn(sizes[0], spec.code.input_channel[0], spec.code.input_channel[1], 3)
    plans = stage_plan(spec)
    for plan in plans:
        for row in plan.fuse:
            for op in row:
                # an 'up' conv runs at the coarser input's size; every other op outputs at its branch's size
                hw = sizes[op.in_branch] if op.kind == "up" else sizes[op.out_branch]
                conv_bn(hw, op.c_in, op.c_out, FUSE_KERNEL[op.kind])
        for b, (n, c) in enumerate(zip(plan.blocks, plan.out_channels)):
            for _ in range(2 * n):
                conv_bn(sizes[b], c, c, 3)
    last = plans[-1].out_channels
    head = sizes[0] if spec.task == "segmentation" else sizes[len(last) - 1]
    conv_bn(head, sum(last), spec.code.last_channel, 1)
    cls_hw = head if spec.task == "segmentation" else 1
    conv_bn(cls_hw, spec.code.last_channel, spec.num_classes, 1, bn=False, bias=True)
    return total


def table_counts(code) -> Tuple[float, float]:
    """``(flops, params)`` as the benchmark tables store them: GMACs and millions of parameters of the
    classification network with 50 classes at 128x128, counted with the ``thop_2020`` rule."""
    spec = network_spec(code, **TABLE_COUNT_SETTING)
    return count_macs(spec, rule="thop_2020") / 1e9, count_params(spec) / 1e6


# --------------------------------------------------------------------------------------------------------------
# Init and entry points
# --------------------------------------------------------------------------------------------------------------

INIT_RULE = "mrnet"


def init_state(spec: MRNetSpec, rng, dtype=None) -> Dict[str, "object"]:
    """Upstream ``init_weights``: every conv (the classifier included) ``kaiming_normal_(fan_out, relu)``, BN weight 1
    and bias 0 (statistics 0 / 1), the classifier bias PyTorch's default U(+-1/sqrt(fan_in))."""
    import numpy as np

    from common import init as I

    out = {}
    kinds = param_kinds(spec)
    normal = I.init_state({n: k for n, k in kinds.items() if k.kind != "conv.bias"}, "kaiming_normal_fan_out", rng,
                          dtype=np.float32 if dtype is None else dtype)
    bias = I.init_state({n: k for n, k in kinds.items() if k.kind == "conv.bias"}, "torch_default", rng,
                        dtype=np.float32 if dtype is None else dtype)
    for name in kinds:
        out[name] = normal[name] if name in normal else bias[name]
    return out


def spec_from_config(cfg) -> MRNetSpec:
    """``MODEL.NAME mrnet``: ``NASBENCH_MR.CODE`` (a code string, 27 embedding integers, 31 code integers, or the path
    of a code JSON file such as NCP's ``best_code.json``), ``NASBENCH_MR.TASK`` (classification | segmentation),
    ``MODEL.NUM_CLASSES``, ``DATA.IMAGE_SIZE``, ``DATA.CHANNELS``.  Errors are ``ValueError`` naming the key."""
    raw = str(cfg.MODEL.NAME).strip()
    if raw not in NET_NAMES:
        raise ValueError(f"MODEL.NAME = {raw!r} is not a NAS-Bench-MR network; expected one of {', '.join(NET_NAMES)}")
    node = cfg.NASBENCH_MR
    classes = at_least(cfg.MODEL.NUM_CLASSES, "MODEL.NUM_CLASSES", 1)
    size = at_least(cfg.DATA.IMAGE_SIZE, "DATA.IMAGE_SIZE", 32, "the four branches run at 1/4 ... 1/32 of it")
    channels = at_least(cfg.DATA.CHANNELS, "DATA.CHANNELS", 1)
    for key in ("DROPOUT", "DROP_PATH"):
        if float(cfg.MODEL[key]):
            raise ValueError(f"MODEL.{key} = {cfg.MODEL[key]!r}: a NAS-Bench-MR network has no dropout or drop path; "
                             "set it to 0")
    value = node.CODE
    if isinstance(value, str) and value.strip().endswith(".json"):
        code = load_code(value.strip())
    else:
        code = code_from_value(value, "NASBENCH_MR.CODE")
    return network_spec(code, str(node.TASK), classes, size, channels, source="NASBENCH_MR.CODE")


def describe(spec: MRNetSpec) -> Dict[str, object]:
    plans = stage_plan(spec)
    sizes = branch_sizes(spec)
    flops, params = table_counts(spec.code)
    return {
        "name": spec.name,
        **spec.code.as_dict(),
        "task": spec.task,
        "stages": [f"{p.index}: {len(p.out_channels)} branches, blocks {list(p.blocks)}, widths "
                   f"{list(p.out_channels)}, maps {[sizes[b] for b in range(len(p.out_channels))]}" for p in plans],
        "num_classes": spec.num_classes,
        "image_size": spec.image_size,
        "output": (f"({spec.num_classes}, {sizes[0]}, {sizes[0]}) per image" if spec.task == "segmentation"
                   else f"({spec.num_classes}, 1, 1) per image"),
        "params": count_params(spec),
        "macs": {"rule": "thop_2020: conv (+1 per output with bias) and BN 2 per element; conv: conv only",
                 "thop_2020": count_macs(spec), "conv": count_macs(spec, rule="conv")},
        "benchmark_counts": {"flops_gmacs": round(flops, 9), "params_m": round(params, 6),
                             "setting": "classification head, 50 classes, 128x128"},
    }


def commands_for(spec: MRNetSpec) -> Tuple[str, ...]:
    """Classification trains, tests and infers; the segmentation head trains and tests (per-pixel outputs have no
    top-5 to infer)."""
    return ("train", "test", "infer") if spec.task == "classification" else ("train", "test")


def command_hint(spec: MRNetSpec, command: str) -> str:
    return "(NASBENCH_MR.TASK segmentation: `test` scores mIoU / mAcc / aAcc on the val split)"


def task_kind_for(spec: MRNetSpec, command: str) -> Optional[str]:
    """The task a command runs for this spec: ``segmentation`` for the segmentation head (the family's default,
    ``classification``, otherwise)."""
    return "segmentation" if spec.task == "segmentation" and command in ("train", "test") else None


def recognition_candidates(tensors: Mapping[str, object]) -> List[Tuple[str, Dict[str, Shape]]]:
    """The network a bare upstream state dict describes, read off its shapes: the stems' widths, every stage's
    branch widths and block counts, ``last_channel`` and the class count; the head task is unknowable from the
    weights (both heads have the same state), so it is reported as classification."""
    import numpy as np

    def shape(name):
        v = tensors.get(name)
        return None if v is None else tuple(int(d) for d in np.shape(v))

    if shape("downsamples.0.0.weight") is None or shape("transform.0.weight") is None:
        return []
    c0 = shape("downsamples.0.0.weight")[0]
    c1 = shape("downsamples.1.0.weight")[0] if shape("downsamples.1.0.weight") else 0
    stages = []
    s = 0
    while True:
        par = f"features.{2 * s + 1}.branches"
        widths, blocks = [], []
        b = 0
        while shape(f"{par}.{b}.0.conv1.weight") is not None:
            widths.append(shape(f"{par}.{b}.0.conv1.weight")[0])
            n = 0
            while shape(f"{par}.{b}.{n}.conv1.weight") is not None:
                n += 1
            blocks.append(n)
            b += 1
        if not widths:
            break
        stages.append([len(widths), blocks, widths])
        s += 1
    last = shape("transform.0.weight")[0]
    classes = classifier_width(tensors, "classifier.bias", 1000)
    try:
        code = from_setting([c0, c1], stages, last, "state dict")
        spec = network_spec(code, "classification", classes)
    except (CodeError, ValueError):
        return []
    return [(f"mrnet {code.code()}", expected_state_shapes(spec))]


__all__ = [
    "ArchCode", "Block", "StageSetting", "CodeError", "BOUNDS", "CHANNEL_POSITIONS", "COUNT_POSITIONS",
    "DEFAULT_START", "EMBEDDING_LABELS", "check_embedding", "from_embedding", "code_to_embedding", "parse_code",
    "from_setting", "code_from_value", "save_code", "load_code", "make_divisible", "round_embedding",
    "MRNetSpec", "FuseOp", "StagePlan", "stage_plan", "branch_sizes", "network_spec", "expected_state_shapes",
    "param_kinds", "count_params", "count_macs", "table_counts", "init_state", "spec_from_config", "describe",
    "commands_for", "command_hint", "task_kind_for", "recognition_candidates",
]
