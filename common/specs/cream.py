"""Cream of the Crop (NeurIPS 2020): what the child nets and the supernet *are*, as plain data.

Pure Python at import time (numpy only inside :func:`init_state`; never a framework).  Both backends build their
modules from the specs made here, and the checkpoint importers check foreign files against
:func:`expected_state_shapes`.

Contents
  * the timm block-string grammar (``ir_r1_k3_s2_e4_c24_se0.25``) parsed into frozen :class:`BlockSpec` s;
  * :func:`make_divisible` (timm's channel rounding with the 0.9 rule);
  * the choice table (index -> kernel, expansion) and the supernet template;
  * the six released child nets (``cream14`` ... ``cream604``) with their image sizes and published figures;
  * :func:`build_child_spec` -> :class:`CreamNetSpec` (any path, not only the six), reproducing upstream's
    single-block-stage quirk by default;
  * :func:`build_supernet_spec` -> :class:`CreamSupernetSpec`;
  * pure-Python counting: :func:`count_params`, :func:`count_macs`, and the canonical parameter names and
    shapes, :func:`expected_state_shapes`;
  * the entry-point interface of ``common/families.py``: :func:`spec_from_config` (``MODEL.*``, ``DATA.*``,
    ``CREAM.*`` keys), :func:`describe`, :func:`init_state` (numpy ``goog`` init), :func:`class_names`;
    plus :func:`param_kinds` and :func:`block_drop_path_rates` for the two model builders.

Semantics follow timm 0.1.20, the version upstream pins (see ``shared/research/cream.md`` §1.2-1.4, §3.1-3.2).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from common.specs._checks import classifier_width, model_keys

__all__ = [
    "BlockSpec", "BlockStringError", "LayerSpec", "CreamNetSpec", "CreamSupernetSpec", "ArchListError",
    "ACTIVATIONS", "BLOCK_TYPES", "CHOICES", "NUM_CHOICES", "CHILD_STAGE_TEMPLATES", "SUPERNET_ARCH_DEF",
    "RELEASED_NETS", "RELEASED_IMAGE_SIZE", "PUBLISHED", "NET_NAMES",
    "parse_block_string", "format_block_string", "decode_arch_def", "encode_arch_def", "make_divisible",
    "round_channels", "choice_to_kernel_exp", "kernel_exp_to_choice", "conv_padding", "conv_out_size",
    "build_child_spec", "released_net_spec", "build_supernet_spec", "child_arch_def",
    "count_params", "count_macs", "MAC_RULES", "expected_state_shapes", "net_name",
    "spec_from_config", "describe", "init_state", "param_kinds", "class_names", "block_drop_path_rates",
    "parse_arch_text", "format_arch_list", "INIT_RULE", "recognition_candidates",
]

# --------------------------------------------------------------------------------------------------------------
# Block-string grammar
# --------------------------------------------------------------------------------------------------------------

#: block type tokens: depthwise-separable, ds with an activation after the pointwise conv (and no skip),
#: inverted residual (MobileNetV2/EfficientNet MBConv), conv-bn-act.
BLOCK_TYPES = ("ds", "dsa", "ir", "cn")

#: ``_n<act>`` tokens -> activation names used in specs (``None`` in a BlockSpec = the model default).
ACTIVATIONS = {"re": "relu", "r6": "relu6", "sw": "swish"}
_ACT_TOKENS = {name: token for token, name in ACTIVATIONS.items()}

_NUMBER_OPTION = re.compile(r"^([a-z]+)(\d.*)$")


class BlockStringError(ValueError):
    """A block string does not follow the grammar; the message names the string and the bad token."""


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One block as written in a block string (after the repeat count is taken off).

    ``exp_ratio`` and ``se_ratio`` are ``None`` when the string has no ``_e`` / ``_se`` token (``cn`` blocks
    carry no expansion; a ``_se`` token on a ``cn`` block is accepted and ignored, as timm 0.1.20 does).
    ``act`` is ``None`` for "the model's default activation".
    """

    type: str
    kernel: int
    stride: int
    exp_ratio: Optional[float]
    out_ch: int
    se_ratio: Optional[float] = None
    act: Optional[str] = None
    noskip: bool = False

    def with_kernel_exp(self, kernel: int, exp_ratio: float) -> "BlockSpec":
        return dataclasses.replace(self, kernel=int(kernel), exp_ratio=float(exp_ratio))

    def with_stride(self, stride: int) -> "BlockSpec":
        return dataclasses.replace(self, stride=int(stride))

    @property
    def has_se(self) -> bool:
        """timm builds an SE module only for ds/dsa/ir blocks with a positive ratio."""
        return self.type != "cn" and self.se_ratio is not None and self.se_ratio > 0.0

    def to_string(self, repeat: int = 1) -> str:
        return format_block_string(self, repeat)


def _bad(block_str: str, token: str, why: str) -> BlockStringError:
    return BlockStringError(f"block string {block_str!r}: bad token {token!r}: {why}")


def _parse_int(block_str: str, token: str, text: str, minimum: int) -> int:
    if not re.fullmatch(r"\d+", text):
        raise _bad(block_str, token, f"expected a whole number after {token[:len(token) - len(text)]!r}")
    value = int(text)
    if value < minimum:
        raise _bad(block_str, token, f"must be >= {minimum}")
    return value


def _parse_float(block_str: str, token: str, text: str) -> float:
    if not re.fullmatch(r"\d+(\.\d*)?|\.\d+", text):
        raise _bad(block_str, token, "expected a non-negative number")
    return float(text)


def parse_block_string(block_str: str) -> Tuple[BlockSpec, int]:
    """Parse ``<type>_r<repeat>_k<kernel>_s<stride>[_e<exp>]_c<out>[_se<ratio>][_n<act>][_noskip]``.

    Returns ``(BlockSpec, repeat)``.  Options may come in any order; each may appear once.  ``r``, ``k``, ``s``
    and ``c`` are required, ``e`` is required for ``ir`` blocks.  ``dsa`` implies ``noskip`` (timm).
    Raises :class:`BlockStringError` naming the string and the offending token.
    """
    if not isinstance(block_str, str) or not block_str:
        raise BlockStringError(f"block string {block_str!r}: expected a non-empty string")
    tokens = block_str.split("_")
    block_type = tokens[0]
    if block_type not in BLOCK_TYPES:
        raise _bad(block_str, block_type, f"unknown block type (expected one of {', '.join(BLOCK_TYPES)})")
    options: Dict[str, str] = {}
    act: Optional[str] = None
    noskip = False
    seen_act = False
    for token in tokens[1:]:
        if token == "":
            raise _bad(block_str, token, "empty token (doubled or trailing '_')")
        if token == "noskip":
            if noskip:
                raise _bad(block_str, token, "given twice")
            noskip = True
            continue
        if token.startswith("n") and not token.startswith("noskip"):
            if seen_act:
                raise _bad(block_str, token, "activation given twice")
            value = token[1:]
            if value not in ACTIVATIONS:
                raise _bad(block_str, token, f"unknown activation {value!r} (expected one of "
                                             f"{', '.join('n' + a for a in ACTIVATIONS)})")
            act = ACTIVATIONS[value]
            seen_act = True
            continue
        match = _NUMBER_OPTION.match(token)
        if not match:
            raise _bad(block_str, token, "expected <letters><number>, 'n<act>' or 'noskip'")
        key, value = match.group(1), match.group(2)
        if key not in ("r", "k", "s", "e", "c", "se"):
            raise _bad(block_str, token, f"unknown option {key!r} (expected r, k, s, e, c, se, n or noskip)")
        if key in options:
            raise _bad(block_str, token, f"option {key!r} given twice")
        options[key] = value
    for key in ("r", "k", "s", "c"):
        if key not in options:
            raise BlockStringError(f"block string {block_str!r}: missing required option '{key}'")
    if block_type == "ir" and "e" not in options:
        raise BlockStringError(f"block string {block_str!r}: missing required option 'e' for an 'ir' block")
    repeat = _parse_int(block_str, "r" + options["r"], options["r"], 1)
    kernel = _parse_int(block_str, "k" + options["k"], options["k"], 1)
    if kernel % 2 == 0:
        raise _bad(block_str, "k" + options["k"], "kernel size must be odd (symmetric padding)")
    stride = _parse_int(block_str, "s" + options["s"], options["s"], 1)
    out_ch = _parse_int(block_str, "c" + options["c"], options["c"], 1)
    exp_ratio = _parse_float(block_str, "e" + options["e"], options["e"]) if "e" in options else None
    if exp_ratio is not None and exp_ratio <= 0.0:
        raise _bad(block_str, "e" + options["e"], "expansion ratio must be > 0")
    se_ratio = _parse_float(block_str, "se" + options["se"], options["se"]) if "se" in options else None
    if se_ratio is not None and se_ratio > 1.0:
        raise _bad(block_str, "se" + options["se"], "SE ratio must be in [0, 1]")
    if block_type == "dsa":
        noskip = True
    return BlockSpec(block_type, kernel, stride, exp_ratio, out_ch, se_ratio, act, noskip), repeat


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def format_block_string(block: BlockSpec, repeat: int = 1) -> str:
    """The canonical string of ``block`` (option order r, k, s, e, c, se, n, noskip); inverse of the parser."""
    parts = [block.type, f"r{int(repeat)}", f"k{block.kernel}", f"s{block.stride}"]
    if block.exp_ratio is not None:
        parts.append("e" + _format_number(block.exp_ratio))
    parts.append(f"c{block.out_ch}")
    if block.se_ratio is not None:
        parts.append("se" + _format_number(block.se_ratio))
    if block.act is not None:
        parts.append("n" + _ACT_TOKENS[block.act])
    if block.noskip and block.type != "dsa":
        parts.append("noskip")
    return "_".join(parts)


def decode_arch_def(arch_def: Sequence[Sequence[str]]) -> Tuple[Tuple[BlockSpec, ...], ...]:
    """Stages of block strings -> stages of BlockSpecs with repeats expanded (depth multiplier 1.0)."""
    stages = []
    for stage_index, stage in enumerate(arch_def):
        if isinstance(stage, str):
            raise BlockStringError(f"stage {stage_index}: expected a list of block strings, got the string {stage!r}")
        blocks: List[BlockSpec] = []
        for block_str in stage:
            block, repeat = parse_block_string(block_str)
            blocks.extend([block] * repeat)
        stages.append(tuple(blocks))
    return tuple(stages)


def encode_arch_def(stages: Sequence[Sequence[BlockSpec]]) -> List[List[str]]:
    """Stages of BlockSpecs -> stages of ``_r1`` block strings (one string per block)."""
    return [[format_block_string(block, 1) for block in stage] for stage in stages]


# --------------------------------------------------------------------------------------------------------------
# Channel rounding and conv arithmetic
# --------------------------------------------------------------------------------------------------------------

def make_divisible(v: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` (half up), at least ``min_value`` (default ``divisor``);
    if that loses more than 10% of ``v``, add one more ``divisor`` (timm/TF MobileNet rule)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * v:
        rounded += divisor
    return int(rounded)


def round_channels(channels: float, multiplier: float = 1.0, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """timm ``round_channels``: with multiplier 1.0 the channels are returned unchanged (no rounding at all)."""
    if not multiplier:
        return int(channels)
    return make_divisible(channels * multiplier, divisor, min_value)


def conv_padding(kernel: int, stride: int = 1, dilation: int = 1) -> int:
    """timm's symmetric "PyTorch-style" padding for ``pad_type=''``: ``((stride-1) + dilation*(kernel-1)) // 2``."""
    return ((stride - 1) + dilation * (kernel - 1)) // 2


def conv_out_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


# --------------------------------------------------------------------------------------------------------------
# Choices, templates, released nets
# --------------------------------------------------------------------------------------------------------------

#: choice index -> (kernel, expansion ratio); kernel-major over kernels (3, 5, 7) x expansions (4, 6).
CHOICES: Tuple[Tuple[int, int], ...] = ((3, 4), (3, 6), (5, 4), (5, 6), (7, 4), (7, 6))
NUM_CHOICES = len(CHOICES)


def choice_to_kernel_exp(index: int) -> Tuple[int, int]:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < NUM_CHOICES:
        raise ArchListError(f"choice index {index!r} is not one of 0..{NUM_CHOICES - 1} "
                            f"({', '.join(f'{i}=k{k}e{e}' for i, (k, e) in enumerate(CHOICES))})")
    return CHOICES[index]


def kernel_exp_to_choice(kernel: int, exp_ratio: float) -> int:
    for index, (k, e) in enumerate(CHOICES):
        if k == kernel and e == exp_ratio:
            return index
    raise ArchListError(f"kernel {kernel} / expansion {exp_ratio} is not a Cream choice")


#: The supernet template (``gen_supernet``): 7 stages of block strings.  Stages 1-5 are choice stages (every
#: block is a list of the 6 choices; the k/e in the strings are placeholders); stages 0 and 6 are fixed.  The
#: builders force stride 1 on every block after a stage's first, so the extra ``s2`` strings do not downsample.
SUPERNET_ARCH_DEF: Tuple[Tuple[str, ...], ...] = (
    ("ds_r1_k3_s1_e1_c16_se0.25",),
    ("ir_r1_k3_s2_e4_c24_se0.25", "ir_r1_k3_s1_e4_c24_se0.25", "ir_r1_k3_s1_e4_c24_se0.25",
     "ir_r1_k3_s1_e4_c24_se0.25"),
    ("ir_r1_k5_s2_e4_c40_se0.25", "ir_r1_k5_s1_e4_c40_se0.25", "ir_r1_k5_s2_e4_c40_se0.25",
     "ir_r1_k5_s2_e4_c40_se0.25"),
    ("ir_r1_k3_s2_e6_c80_se0.25", "ir_r1_k3_s1_e4_c80_se0.25", "ir_r1_k3_s1_e4_c80_se0.25",
     "ir_r2_k3_s1_e4_c80_se0.25"),
    ("ir_r1_k3_s1_e6_c96_se0.25", "ir_r1_k3_s1_e6_c96_se0.25", "ir_r1_k3_s1_e6_c96_se0.25",
     "ir_r1_k3_s1_e6_c96_se0.25"),
    ("ir_r1_k5_s2_e6_c192_se0.25", "ir_r1_k5_s1_e6_c192_se0.25", "ir_r1_k5_s2_e6_c192_se0.25",
     "ir_r1_k5_s2_e6_c192_se0.25"),
    ("cn_r1_k1_s1_c320_se0.25",),
)

#: The child-net template (``tools/retrain.py``/``test.py``): stage 0, one string per choice stage (repeated
#: ``len(arch_list[i])`` times) and the last stage.
CHILD_STAGE_TEMPLATES: Tuple[str, ...] = (
    "ds_r1_k3_s1_e1_c16_se0.25",
    "ir_r1_k3_s2_e4_c24_se0.25",
    "ir_r1_k5_s2_e4_c40_se0.25",
    "ir_r1_k3_s2_e6_c80_se0.25",
    "ir_r1_k3_s1_e6_c96_se0.25",
    "ir_r1_k5_s2_e6_c192_se0.25",
    "cn_r1_k1_s1_c320_se0.25",
)

ArchList = Sequence[Sequence[int]]

#: The released child nets: choice indices per stage (stage 0 and 6 always ``[0]``).
RELEASED_NETS: Dict[str, Tuple[Tuple[int, ...], ...]] = {
    "cream14": ((0,), (3,), (3, 3), (3, 3), (3,), (3,), (0,)),
    "cream43": ((0,), (3,), (3, 1), (3, 1), (3, 3, 3), (3, 3), (0,)),
    "cream114": ((0,), (3,), (3, 3), (3, 3), (3, 3, 3), (3, 3), (0,)),
    "cream287": ((0,), (3,), (3, 3), (3, 1, 3), (3, 3, 3, 3), (3, 3, 3), (0,)),
    "cream481": ((0,), (3, 4, 3, 1), (3, 2, 3, 0), (3, 3, 3, 1, 1), (3, 3, 3, 3), (3, 3, 3, 3), (0,)),
    "cream604": ((0,), (3, 3, 2, 3, 3), (3, 2, 3, 2, 3), (3, 2, 3, 2, 3), (3, 3, 2, 2, 3, 3), (3, 3, 2, 3, 3, 3),
                 (0,)),
}
NET_NAMES: Tuple[str, ...] = tuple(RELEASED_NETS)

#: ``NET.SELECTION`` overrides the image size in upstream's retrain/test scripts.
RELEASED_IMAGE_SIZE: Dict[str, int] = {
    "cream14": 64, "cream43": 96, "cream114": 160, "cream287": 224, "cream481": 224, "cream604": 224,
}

#: Published figures (Cream/README.md): MFLOPs (thop multiply-accumulates, rounded), top-1 %, top-5 %.
PUBLISHED: Dict[str, Dict[str, float]] = {
    "cream14": {"mflops": 14, "top1": 53.8, "top5": 77.2},
    "cream43": {"mflops": 43, "top1": 66.3, "top5": 86.7},
    "cream114": {"mflops": 114, "top1": 72.8, "top5": 90.8},
    "cream287": {"mflops": 287, "top1": 77.6, "top5": 93.3},
    "cream481": {"mflops": 481, "top1": 79.2, "top5": 94.2},
    "cream604": {"mflops": 604, "top1": 80.0, "top5": 94.7},
}


def net_name(name: Union[str, int]) -> str:
    """Normalise ``'cream14'``, ``'Cream-14'``, ``'14'`` or ``14`` to ``'cream14'``; unknown names raise."""
    key = str(name).lower().replace("-", "").replace("_", "")
    if not key.startswith("cream"):
        key = "cream" + key
    if key not in RELEASED_NETS:
        raise KeyError(f"unknown Cream child net {name!r}; known: {', '.join(NET_NAMES)}")
    return key


# --------------------------------------------------------------------------------------------------------------
# Built specs
# --------------------------------------------------------------------------------------------------------------

class ArchListError(ValueError):
    """An arch list (a path) is malformed; the message names the stage and the value."""


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One block as built: the effective BlockSpec (chosen kernel/expansion, stage stride rule applied) plus the
    resolved channels.  ``mid_ch`` is the depthwise width (ir: ``make_divisible(in*exp)``; ds/dsa: ``in_ch``;
    cn: ``out_ch``).  ``se_ch`` is the SE reduced width (0 = no SE).  ``choice`` is the choice index the block
    was built from, ``None`` for fixed blocks or when the template was kept (single-block-stage quirk)."""

    block: BlockSpec
    in_ch: int
    mid_ch: int
    out_ch: int
    se_ch: int
    stride: int
    residual: bool
    act: str
    choice: Optional[int] = None

    @property
    def type(self) -> str:
        return self.block.type

    @property
    def kernel(self) -> int:
        return self.block.kernel

    @property
    def exp_ratio(self) -> Optional[float]:
        return self.block.exp_ratio

    @property
    def padding(self) -> int:
        return conv_padding(self.block.kernel, self.stride)

    @property
    def pw_act(self) -> bool:
        """ds: activation after the pointwise conv (only ``dsa``)."""
        return self.block.type == "dsa"


@dataclasses.dataclass(frozen=True)
class _NetCommon:
    num_classes: int = 1000
    in_chans: int = 3
    stem_ch: int = 16
    stem_kernel: int = 3
    stem_stride: int = 2
    head_in_ch: int = 320
    num_features: int = 1280
    head_bias: bool = True
    pool_before_head: bool = True  # MobileNetV3 head: avg-pool -> conv_head (1x1, bias) -> act -> dropout -> fc
    drop_rate: float = 0.0
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1  # torch convention (paddle momentum = 1 - this)
    act: str = "swish"
    se_act: str = "relu"
    se_gate: str = "hard_sigmoid"
    se_reduce_mid: bool = True
    se_divisor: int = 8
    conv_padding: str = "symmetric"  # ((stride-1) + (k-1)) // 2, never TF-SAME


@dataclasses.dataclass(frozen=True)
class CreamNetSpec(_NetCommon):
    """A Cream child net.  ``stages[s][i]`` is the block with canonical prefix ``blocks.{s}.{i}``."""

    name: Optional[str] = None
    arch_list: Tuple[Tuple[int, ...], ...] = ()
    stages: Tuple[Tuple[LayerSpec, ...], ...] = ()
    honour_single_block_choices: bool = False
    image_size: Optional[int] = None
    #: stochastic depth: block ``j`` of ``n`` (all stages, in order) drops its residual branch with probability
    #: ``drop_path_rate * j / n`` (timm's builder rule); only blocks with a skip connection get a DropPath.
    #: Upstream never sets it (0).
    drop_path_rate: float = 0.0

    def iter_blocks(self) -> Iterator[Tuple[str, LayerSpec]]:
        for s, stage in enumerate(self.stages):
            for i, layer in enumerate(stage):
                yield f"blocks.{s}.{i}", layer

    @property
    def arch_def(self) -> List[List[str]]:
        """The block strings the child net was built from (one ``_r1`` string per block)."""
        return encode_arch_def([[layer.block for layer in stage] for stage in self.stages])


@dataclasses.dataclass(frozen=True)
class CreamSupernetSpec(_NetCommon):
    """The one-shot supernet: ``stages[s][i][c]`` is choice ``c`` of layer ``i`` in stage ``s`` (stages 0 and 6
    hold one choice).  ``meta_features`` is the input width of the meta-matching ``meta_layer``
    (``num_classes * slice``)."""

    sta_num: Tuple[int, ...] = (4, 4, 4, 4, 4)
    stages: Tuple[Tuple[Tuple[LayerSpec, ...], ...], ...] = ()
    slice: int = 4
    name: Optional[str] = "cream_supernet"
    image_size: Optional[int] = None
    #: the FLOPs window ``search_for_layer`` cut the stages with (MFLOPs; upstream SUPERNET.FLOPS_MINIMUM/MAXIMUM)
    flops_window: Tuple[float, float] = (0.0, 600.0)

    @property
    def meta_features(self) -> int:
        return self.num_classes * self.slice

    @property
    def paths_per_stage(self) -> Tuple[int, ...]:
        """Layers a path carries per choice stage (``sta_num``); a stage may hold more built layers (stage 3's
        ``ir_r2`` string), which forward never runs."""
        return tuple(self.sta_num)


def _make_layer(block: BlockSpec, in_ch: int, stride: int, default_act: str, choice: Optional[int],
                se_divisor: int = 8, se_reduce_mid: bool = True) -> LayerSpec:
    out_ch = round_channels(block.out_ch)
    if block.type == "ir":
        mid_ch = make_divisible(in_ch * block.exp_ratio)
    elif block.type in ("ds", "dsa"):
        mid_ch = in_ch
    else:
        mid_ch = out_ch
    se_ch = 0
    if block.has_se:
        base = mid_ch if se_reduce_mid else in_ch
        se_ch = make_divisible(base * block.se_ratio, se_divisor)
    if block.type == "cn":
        residual = False  # timm 0.1.20 ConvBnAct has no skip path
    else:
        residual = stride == 1 and in_ch == out_ch and not block.noskip
    effective = block.with_stride(stride)
    return LayerSpec(effective, in_ch, mid_ch, out_ch, se_ch, stride, residual, block.act or default_act, choice)


def _check_arch_list(arch_list: ArchList, stage_templates: Sequence[str]) -> Tuple[Tuple[int, ...], ...]:
    if isinstance(arch_list, (str, bytes)) or not hasattr(arch_list, "__len__"):
        raise ArchListError(f"arch list must be a list of {len(stage_templates)} lists of choice indices, "
                            f"got {arch_list!r}")
    if len(arch_list) != len(stage_templates):
        raise ArchListError(f"arch list {arch_list!r} has {len(arch_list)} stages; expected {len(stage_templates)} "
                            f"([[0], stage1, ..., stage5, [0]])")
    out = []
    for s, stage in enumerate(arch_list):
        if isinstance(stage, (str, bytes)) or not hasattr(stage, "__len__"):
            raise ArchListError(f"arch list stage {s}: expected a list of choice indices, got {stage!r}")
        stage = tuple(stage)
        if s in (0, len(arch_list) - 1):
            if stage != (0,):
                raise ArchListError(f"arch list stage {s} is fixed and must be [0], got {list(stage)}")
        else:
            if not stage:
                raise ArchListError(f"arch list stage {s} is empty; every choice stage needs at least one block")
            for i, index in enumerate(stage):
                if index == -1:
                    raise ArchListError(f"arch list stage {s} block {i}: -1 (skip) is a supernet-only value; "
                                        "a child net lists the blocks it has")
                try:
                    choice_to_kernel_exp(index)
                except ArchListError as exc:
                    raise ArchListError(f"arch list stage {s} block {i}: {exc}") from None
        out.append(stage)
    return tuple(out)


def child_arch_def(arch_list: ArchList, honour_single_block_choices: bool = False) -> List[List[str]]:
    """The block strings upstream's ``gen_childnet`` builds for ``arch_list`` (one ``_r1`` string per block).

    Upstream keeps a *single-block stage's* template string unchanged (the chosen index is ignored there); pass
    ``honour_single_block_choices=True`` to apply the arch list everywhere.
    """
    arch = _check_arch_list(arch_list, CHILD_STAGE_TEMPLATES)
    stages = _child_blocks(arch, honour_single_block_choices)
    return encode_arch_def([[block for block, _ in stage] for stage in stages])


def _child_blocks(arch: Tuple[Tuple[int, ...], ...], honour: bool) -> List[List[Tuple[BlockSpec, Optional[int]]]]:
    stages: List[List[Tuple[BlockSpec, Optional[int]]]] = []
    last = len(arch) - 1
    for s, (choices, template_str) in enumerate(zip(arch, CHILD_STAGE_TEMPLATES)):
        template, repeat = parse_block_string(template_str)
        assert repeat == 1
        if s in (0, last):
            stages.append([(template, None)])
            continue
        if len(choices) == 1 and not honour:
            stages.append([(template, None)])  # upstream quirk: the template's k/e survive
            continue
        stage = []
        for index in choices:
            kernel, exp = CHOICES[index]
            stage.append((template.with_kernel_exp(kernel, exp), index))
        stages.append(stage)
    return stages


def build_child_spec(arch_list: ArchList, honour_single_block_choices: bool = False, num_classes: int = 1000,
                     drop_rate: float = 0.0, name: Optional[str] = None, image_size: Optional[int] = None,
                     stem_ch: int = 16, num_features: int = 1280, drop_path_rate: float = 0.0,
                     in_chans: int = 3) -> CreamNetSpec:
    """Build the child net of any path ``arch_list`` = ``[[0], s1, s2, s3, s4, s5, [0]]`` (choice indices 0..5).

    By default this reproduces upstream's builder, which ignores the chosen index in a single-block stage and
    keeps the template's kernel/expansion (so the released checkpoints load); ``honour_single_block_choices=True``
    applies the arch list everywhere.  Only the first block of a stage keeps the template stride.
    """
    arch = _check_arch_list(arch_list, CHILD_STAGE_TEMPLATES)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be a positive int, got {in_chans!r}")
    act = _NetCommon.act
    stages = []
    in_ch = round_channels(stem_ch)
    for stage_blocks in _child_blocks(arch, honour_single_block_choices):
        built = []
        for i, (block, choice) in enumerate(stage_blocks):
            stride = block.stride if i == 0 else 1
            layer = _make_layer(block, in_ch, stride, act, choice)
            built.append(layer)
            in_ch = layer.out_ch
        stages.append(tuple(built))
    return CreamNetSpec(num_classes=num_classes, stem_ch=round_channels(stem_ch), head_in_ch=in_ch,
                        num_features=num_features, drop_rate=float(drop_rate), name=name, arch_list=arch,
                        stages=tuple(stages), honour_single_block_choices=bool(honour_single_block_choices),
                        image_size=image_size, drop_path_rate=float(drop_path_rate), in_chans=in_chans)


def released_net_spec(name: Union[str, int], honour_single_block_choices: bool = False, num_classes: int = 1000,
                      drop_rate: float = 0.2) -> CreamNetSpec:
    """One of the six released child nets (``'cream14'`` ... ``'cream604'``) with its image size; ``drop_rate``
    defaults to the retrain configs' ``NET.DROPOUT_RATE`` 0.2."""
    key = net_name(name)
    return build_child_spec(RELEASED_NETS[key], honour_single_block_choices, num_classes, drop_rate, name=key,
                            image_size=RELEASED_IMAGE_SIZE[key])


def build_supernet_spec(sta_num: Sequence[int] = (4, 4, 4, 4, 4), num_classes: int = 1000, slice: int = 4,
                        drop_rate: float = 0.0, in_chans: int = 3, image_size: Optional[int] = None,
                        flops_window: Tuple[float, float] = (0.0, 600.0)) -> CreamSupernetSpec:
    """The supernet with the first ``sta_num[s]`` *strings* of each choice stage kept (upstream cuts the string
    list, then expands repeats, so stage 3's ``ir_r2`` string yields 5 layers with ``sta_num[2] = 4``)."""
    sta_num = tuple(int(n) for n in sta_num)
    choice_stages = len(SUPERNET_ARCH_DEF) - 2
    if len(sta_num) != choice_stages:
        raise ArchListError(f"sta_num {list(sta_num)} must have {choice_stages} entries")
    for s, n in enumerate(sta_num):
        if not 1 <= n <= len(SUPERNET_ARCH_DEF[s + 1]):
            raise ArchListError(f"sta_num[{s}] = {n} is out of range 1..{len(SUPERNET_ARCH_DEF[s + 1])}")
    act = _NetCommon.act
    in_ch = round_channels(_NetCommon.stem_ch)
    stages = []
    last = len(SUPERNET_ARCH_DEF) - 1
    for s, strings in enumerate(SUPERNET_ARCH_DEF):
        if 0 < s < last:
            strings = strings[:sta_num[s - 1]]
        blocks = decode_arch_def([strings])[0]
        layers = []
        for i, block in enumerate(blocks):
            stride = block.stride if i == 0 else 1
            if s in (0, last):
                options = (_make_layer(block, in_ch, stride, act, None),)
            else:
                options = tuple(_make_layer(block.with_kernel_exp(k, e), in_ch, stride, act, c)
                                for c, (k, e) in enumerate(CHOICES))
            layers.append(options)
            in_ch = options[0].out_ch
        stages.append(tuple(layers))
    if not isinstance(slice, int) or isinstance(slice, bool) or slice < 1:
        raise ArchListError(f"slice = {slice!r} must be a positive int (images a board entry keeps)")
    return CreamSupernetSpec(num_classes=num_classes, head_in_ch=in_ch, drop_rate=float(drop_rate), sta_num=sta_num,
                             stages=tuple(stages), slice=int(slice), in_chans=int(in_chans), image_size=image_size,
                             flops_window=(float(flops_window[0]), float(flops_window[1])))


# --------------------------------------------------------------------------------------------------------------
# Canonical names, parameter and MAC counting
# --------------------------------------------------------------------------------------------------------------

Shape = Tuple[int, ...]
_BN_ENTRIES = ("weight", "bias", "running_mean", "running_var")
_BN_BUFFERS = ("running_mean", "running_var")


def _bn(prefix: str, channels: int) -> Dict[str, Shape]:
    return {f"{prefix}.{entry}": (channels,) for entry in _BN_ENTRIES}


def _layer_shapes(prefix: str, layer: LayerSpec) -> Dict[str, Shape]:
    shapes: Dict[str, Shape] = {}
    k = layer.kernel

    def se() -> None:
        if layer.se_ch:
            shapes[f"{prefix}.se.conv_reduce.weight"] = (layer.se_ch, layer.mid_ch, 1, 1)
            shapes[f"{prefix}.se.conv_reduce.bias"] = (layer.se_ch,)
            shapes[f"{prefix}.se.conv_expand.weight"] = (layer.mid_ch, layer.se_ch, 1, 1)
            shapes[f"{prefix}.se.conv_expand.bias"] = (layer.mid_ch,)

    if layer.type == "ir":
        shapes[f"{prefix}.conv_pw.weight"] = (layer.mid_ch, layer.in_ch, 1, 1)
        shapes.update(_bn(f"{prefix}.bn1", layer.mid_ch))
        shapes[f"{prefix}.conv_dw.weight"] = (layer.mid_ch, 1, k, k)
        shapes.update(_bn(f"{prefix}.bn2", layer.mid_ch))
        se()
        shapes[f"{prefix}.conv_pwl.weight"] = (layer.out_ch, layer.mid_ch, 1, 1)
        shapes.update(_bn(f"{prefix}.bn3", layer.out_ch))
    elif layer.type in ("ds", "dsa"):
        shapes[f"{prefix}.conv_dw.weight"] = (layer.in_ch, 1, k, k)
        shapes.update(_bn(f"{prefix}.bn1", layer.in_ch))
        se()
        shapes[f"{prefix}.conv_pw.weight"] = (layer.out_ch, layer.in_ch, 1, 1)
        shapes.update(_bn(f"{prefix}.bn2", layer.out_ch))
    elif layer.type == "cn":
        shapes[f"{prefix}.conv.weight"] = (layer.out_ch, layer.in_ch, k, k)
        shapes.update(_bn(f"{prefix}.bn1", layer.out_ch))
    else:  # pragma: no cover - the parser refuses other types
        raise ValueError(f"unknown block type {layer.type!r}")
    return shapes


def expected_state_shapes(spec: Union[CreamNetSpec, CreamSupernetSpec]) -> Dict[str, Shape]:
    """The canonical (timm-style, torch-layout) state names and shapes, in module order.

    Child net: ``conv_stem``, ``bn1``, ``blocks.{stage}.{i}.*`` (IR: ``conv_pw bn1 conv_dw bn2 se.conv_reduce
    se.conv_expand conv_pwl bn3``; DS: ``conv_dw bn1 se.* conv_pw bn2``; ConvBnAct: ``conv bn1``),
    ``conv_head`` (with bias), ``classifier`` (``[num_classes, num_features]``).  BN entries are
    ``weight, bias, running_mean, running_var`` (no ``num_batches_tracked``).
    Supernet: the same with ``blocks.{stage}.{layer}.{choice}.*`` and ``meta_layer`` (``[1, meta_features]``);
    these supernet names are provisional (upstream's supernet file was not read for them; its parameter count,
    29,809,073, is checked) until the supernet port confirms them.
    """
    shapes: Dict[str, Shape] = {"conv_stem.weight": (spec.stem_ch, spec.in_chans, spec.stem_kernel, spec.stem_kernel)}
    shapes.update(_bn("bn1", spec.stem_ch))
    if isinstance(spec, CreamSupernetSpec):
        for s, stage in enumerate(spec.stages):
            for i, options in enumerate(stage):
                for c, layer in enumerate(options):
                    shapes.update(_layer_shapes(f"blocks.{s}.{i}.{c}", layer))
    else:
        for prefix, layer in spec.iter_blocks():
            shapes.update(_layer_shapes(prefix, layer))
    shapes["conv_head.weight"] = (spec.num_features, spec.head_in_ch, 1, 1)
    if spec.head_bias:
        shapes["conv_head.bias"] = (spec.num_features,)
    shapes["classifier.weight"] = (spec.num_classes, spec.num_features)
    shapes["classifier.bias"] = (spec.num_classes,)
    if isinstance(spec, CreamSupernetSpec):
        shapes["meta_layer.weight"] = (1, spec.meta_features)
        shapes["meta_layer.bias"] = (1,)
    return shapes


def _numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _layer_params(layer: LayerSpec) -> int:
    k2 = layer.kernel * layer.kernel
    se = layer.mid_ch * layer.se_ch * 2 + layer.se_ch + layer.mid_ch if layer.se_ch else 0
    if layer.type == "ir":
        return (layer.in_ch * layer.mid_ch + 2 * layer.mid_ch + layer.mid_ch * k2 + 2 * layer.mid_ch + se
                + layer.mid_ch * layer.out_ch + 2 * layer.out_ch)
    if layer.type in ("ds", "dsa"):
        return layer.in_ch * k2 + 2 * layer.in_ch + se + layer.in_ch * layer.out_ch + 2 * layer.out_ch
    return layer.in_ch * layer.out_ch * k2 + 2 * layer.out_ch


def count_params(spec: Union[CreamNetSpec, CreamSupernetSpec], bn_affine: bool = True) -> int:
    """Trainable parameters, counted from the spec's arithmetic (not from the name table): conv weights, BN
    gamma/beta (``bn_affine``), SE conv biases, the conv_head bias, the classifier (and the supernet's
    ``meta_layer``).  BN running statistics are buffers and are not counted."""
    total = spec.stem_ch * spec.in_chans * spec.stem_kernel ** 2 + 2 * spec.stem_ch
    layers: List[LayerSpec] = []
    if isinstance(spec, CreamSupernetSpec):
        layers = [layer for stage in spec.stages for options in stage for layer in options]
    else:
        layers = [layer for _, layer in spec.iter_blocks()]
    for layer in layers:
        total += _layer_params(layer)
        if not bn_affine:
            total -= 2 * (_bn_channels(layer))
    if not bn_affine:
        total -= 2 * spec.stem_ch
    total += spec.head_in_ch * spec.num_features + (spec.num_features if spec.head_bias else 0)
    total += spec.num_features * spec.num_classes + spec.num_classes
    if isinstance(spec, CreamSupernetSpec):
        total += spec.meta_features + 1
    return total


def _bn_channels(layer: LayerSpec) -> int:
    if layer.type == "ir":
        return 2 * layer.mid_ch + layer.out_ch
    if layer.type in ("ds", "dsa"):
        return layer.in_ch + layer.out_ch
    return layer.out_ch


MAC_RULES = ("conv_fc", "thop_2020", "thop")


def count_macs(spec: CreamNetSpec, image_size: Optional[int] = None, rule: str = "conv_fc") -> int:
    """Batch-1 MACs at ``image_size``; default rule 'conv_fc': conv + FC multiply-accumulates (no BN/bias/pool/act).

    One forward pass of a child net on a square ``image_size`` input.

    ``rule='conv_fc'`` (default, the plain rule): every convolution costs ``H_out*W_out*C_out*(C_in/groups)*k*k``
    and every fully-connected layer ``in*out`` -- the stem, the blocks' pointwise/depthwise/pointwise-linear
    convs, the SE reduce/expand 1x1 convs (on the pooled 1x1 map), ``conv_head`` (on the pooled 1x1 map: the
    head pools first) and the classifier.  Not counted: biases, BatchNorm, activations and the SE gate, global
    pooling, the SE multiply, residual adds, dropout.

    The two thop rules reproduce what ``thop.profile`` reports on the official torch model (upstream's FLOPs
    come from thop, issue #35).  Both add, to the ``conv_fc`` MACs, the global average pools (SE and head:
    ``(pooled elements + 1)`` per output element) and count nothing for activations, the SE multiply, residual
    adds or the classifier bias; they differ in biases and BatchNorm:

    * ``rule='thop_2020'`` (the thop of 2020, when the nets were published): ``+1`` per output element of every
      conv with a bias (SE convs, conv_head) and ``2`` per BatchNorm output element;
    * ``rule='thop'`` (current thop, >= 0.1): conv biases not counted, ``4`` per BatchNorm output element
      (normalise 2 + affine 2).
    """
    if isinstance(spec, CreamSupernetSpec):  # its largest path (the last choice, k7 e6, in every layer)
        largest = ((0,),) + tuple((NUM_CHOICES - 1,) * n for n in spec.sta_num) + ((0,),)
        size = image_size if image_size is not None else spec.image_size
        table = flops_table(spec, size, rule)
        return int(round(table.path_mflops(largest) * 1e6)) + spec.num_features * spec.num_classes
    if rule not in MAC_RULES:
        raise ValueError(f"unknown MAC counting rule {rule!r} (expected one of {', '.join(MAC_RULES)})")
    size = image_size if image_size is not None else spec.image_size
    if size is None:
        raise ValueError("count_macs needs an image_size (the spec carries none)")
    hw = conv_out_size(size, spec.stem_kernel, spec.stem_stride, conv_padding(spec.stem_kernel, spec.stem_stride))
    total = _stem_macs(spec, hw, rule)
    for _, layer in spec.iter_blocks():
        macs, hw = layer_macs(layer, hw, rule)
        total += macs
    return total + _head_macs(spec, hw, rule)


def _mac_costs(rule: str) -> Tuple[bool, int, int]:
    if rule not in MAC_RULES:
        raise ValueError(f"unknown MAC counting rule {rule!r} (expected one of {', '.join(MAC_RULES)})")
    return rule != "conv_fc", {"conv_fc": 0, "thop_2020": 2, "thop": 4}[rule], 1 if rule == "thop_2020" else 0


def _conv_macs(hw_out: int, c_in: int, c_out: int, kernel: int, groups: int = 1, bias: bool = False,
               bias_cost: int = 0) -> int:
    return hw_out * hw_out * c_out * (c_in // groups * kernel * kernel + (bias_cost if bias else 0))


def _stem_macs(spec, hw: int, rule: str) -> int:
    """The stem conv and its BN on an ``hw`` x ``hw`` output (see :func:`count_macs` for the rules)."""
    _, bn_cost, _ = _mac_costs(rule)
    return _conv_macs(hw, spec.in_chans, spec.stem_ch, spec.stem_kernel) + bn_cost * hw * hw * spec.stem_ch


def _head_macs(spec, hw: int, rule: str, classifier: bool = True) -> int:
    """Global pool, ``conv_head`` on the pooled map and (``classifier``) the classifier."""
    thop, _, bias_cost = _mac_costs(rule)
    total = spec.head_in_ch * (hw * hw + 1) if thop else 0
    total += _conv_macs(1, spec.head_in_ch, spec.num_features, 1, bias=spec.head_bias, bias_cost=bias_cost)
    if classifier:
        total += spec.num_features * spec.num_classes
    return total


def layer_macs(layer: LayerSpec, hw: int, rule: str = "conv_fc") -> Tuple[int, int]:
    """``(MACs, output size)`` of one block on an ``hw`` x ``hw`` input, by :func:`count_macs`'s ``rule``."""
    thop, bn_cost, bias_cost = _mac_costs(rule)
    total = 0

    def conv(hw_out: int, c_in: int, c_out: int, kernel: int, groups: int = 1, bias: bool = False) -> None:
        nonlocal total
        total += _conv_macs(hw_out, c_in, c_out, kernel, groups, bias, bias_cost)

    def bn(hw_out: int, channels: int) -> None:
        nonlocal total
        total += bn_cost * hw_out * hw_out * channels

    def se(hw_in: int, channels: int, reduced: int) -> None:
        nonlocal total
        if thop:
            total += channels * (hw_in * hw_in + 1)
        conv(1, channels, reduced, 1, bias=True)
        conv(1, reduced, channels, 1, bias=True)

    hw_out = conv_out_size(hw, layer.kernel, layer.stride, layer.padding)
    if layer.type == "ir":
        conv(hw, layer.in_ch, layer.mid_ch, 1)
        bn(hw, layer.mid_ch)
        conv(hw_out, layer.mid_ch, layer.mid_ch, layer.kernel, groups=layer.mid_ch)
        bn(hw_out, layer.mid_ch)
        if layer.se_ch:
            se(hw_out, layer.mid_ch, layer.se_ch)
        conv(hw_out, layer.mid_ch, layer.out_ch, 1)
        bn(hw_out, layer.out_ch)
    elif layer.type in ("ds", "dsa"):
        conv(hw_out, layer.in_ch, layer.in_ch, layer.kernel, groups=layer.in_ch)
        bn(hw_out, layer.in_ch)
        if layer.se_ch:
            se(hw_out, layer.in_ch, layer.se_ch)
        conv(hw_out, layer.in_ch, layer.out_ch, 1)
        bn(hw_out, layer.out_ch)
    else:
        conv(hw_out, layer.in_ch, layer.out_ch, layer.kernel)
        bn(hw_out, layer.out_ch)
    return total, hw_out


# --------------------------------------------------------------------------------------------------------------
# Stochastic depth, parameter kinds and numpy init (shared by both builders)
# --------------------------------------------------------------------------------------------------------------

def block_drop_path_rates(spec: CreamNetSpec) -> Tuple[Tuple[float, ...], ...]:
    """Per block (``[stage][index]``) drop-path probability: ``spec.drop_path_rate * j / n`` for the ``j``-th of
    ``n`` blocks counted over all stages (timm's builder rule), 0.0 for blocks without a skip connection (the
    DropPath sits on the residual branch, so only those blocks build one)."""
    total = sum(len(stage) for stage in spec.stages)
    rates = []
    j = 0
    for stage in spec.stages:
        row = []
        for layer in stage:
            row.append(spec.drop_path_rate * j / total if (layer.residual and total) else 0.0)
            j += 1
        rates.append(tuple(row))
    return tuple(rates)


#: the init rule of the Cream child nets and supernet (timm ``init_weight_goog``, see ``common/init.py``)
INIT_RULE = "goog"


def param_kinds(spec: Union[CreamNetSpec, CreamSupernetSpec]) -> Dict[str, "object"]:
    """``{canonical name: common.init.ParamSpec}`` for every state tensor, derived from the spec alone.

    It equals what ``ops.named_param_kinds`` reports for the built model in either backend (a test checks it):
    depthwise convs (``conv_dw``) carry ``groups = channels``, conv/Linear biases carry their weight's shape,
    BN statistics are their own kinds.
    """
    from common import init as I  # numpy; kept out of module import

    shapes = expected_state_shapes(spec)
    out: Dict[str, object] = {}
    for name, shape in shapes.items():
        module, _, leaf = name.rpartition(".")
        module_leaf = module.rpartition(".")[2]
        if leaf in ("running_mean", "running_var"):
            out[name] = I.ParamSpec(I.BN_MEAN if leaf == "running_mean" else I.BN_VAR, shape)
        elif module_leaf.startswith("bn"):
            out[name] = I.ParamSpec(I.BN_WEIGHT if leaf == "weight" else I.BN_BIAS, shape)
        elif module in ("classifier", "meta_layer"):
            wshape = shapes[f"{module}.weight"]
            out[name] = I.ParamSpec(I.LINEAR_WEIGHT if leaf == "weight" else I.LINEAR_BIAS, shape, 1, wshape)
        else:
            wshape = shapes[f"{module}.weight"]
            groups = wshape[0] if module_leaf == "conv_dw" else 1
            out[name] = I.ParamSpec(I.CONV_WEIGHT if leaf == "weight" else I.CONV_BIAS, shape, groups, wshape)
    return out


def init_state(spec: Union[CreamNetSpec, CreamSupernetSpec], rng, dtype=None) -> Dict[str, "object"]:
    """Initial weights from numpy with timm's ``goog`` rule (``common.init.rule_goog``): conv N(0, sqrt(2/fan_out)),
    ``fan_out = k*k*out/groups``; BN weight 1, bias 0, running mean 0, running var 1; Linear U(+-1/sqrt(out));
    biases 0.  Returns ``{canonical name: array}`` for exactly the names of :func:`expected_state_shapes`
    (float32 unless ``dtype``); the same ``rng`` seed gives the same network on both backends."""
    import numpy as np

    from common import init as I

    return I.init_state(param_kinds(spec), INIT_RULE, rng, dtype=np.float32 if dtype is None else dtype)


# --------------------------------------------------------------------------------------------------------------
# Entry-point interface (common/families.py)
# --------------------------------------------------------------------------------------------------------------

def parse_arch_text(text: str, key: str = "CREAM.ARCH") -> Tuple[Tuple[int, ...], ...]:
    """``"[[0], [3], [3, 3], [3, 3], [3], [3], [0]]"`` -> a checked arch list; errors name ``key`` and the value."""
    import ast

    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"{key} = {text!r} is not a list of lists of choice indices "
                         f"(e.g. '[[0], [3], [3, 3], [3, 3], [3], [3], [0]]'): {exc}") from None
    try:
        return _check_arch_list(value, CHILD_STAGE_TEMPLATES)
    except ArchListError as exc:
        raise ValueError(f"{key} = {text!r}: {exc}") from None


def format_arch_list(arch_list: ArchList) -> str:
    """``((0,), (3,), (3, 3), ...)`` -> ``'[[0], [3], [3, 3], ...]'`` (the form ``CREAM.ARCH`` takes)."""
    return "[" + ", ".join("[" + ", ".join(str(int(i)) for i in stage) + "]" for stage in arch_list) + "]"


def _arch_from_value(value, key: str = "CREAM.ARCH") -> Tuple[Tuple[int, ...], ...]:
    try:
        return _check_arch_list(value, CHILD_STAGE_TEMPLATES)
    except ArchListError as exc:
        raise ValueError(f"{key} = {_as_text(value)}: {exc}") from None


def _as_text(value) -> str:
    try:
        return format_arch_list(value)
    except (TypeError, ValueError):
        return repr(value)


def spec_from_config(cfg) -> CreamNetSpec:
    """The child net a config describes.

    ``MODEL.NAME``: one of ``cream14 cream43 cream114 cream287 cream481 cream604`` (also ``Cream-14``, ``14``), or
    any name when ``CREAM.ARCH`` gives the path (a list of lists, or the same as a string).
    ``CREAM.HONOUR_SINGLE_BLOCK_CHOICES`` (default False = upstream's builder, which the released checkpoints need).
    ``MODEL.NUM_CLASSES``, ``MODEL.DROPOUT`` (before the classifier), ``MODEL.DROP_PATH`` (stochastic depth,
    upstream 0), ``DATA.IMAGE_SIZE`` (the released configs set the published size) and ``DATA.CHANNELS`` (stem
    input).
    Errors name the key and the value.
    """
    model = cfg.MODEL
    if str(model.NAME).strip() in SUPERNET_NAMES:
        return supernet_spec_from_config(cfg)
    cream = cfg.CREAM if "CREAM" in cfg else None
    arch_value = cream.ARCH if cream is not None else ()
    if isinstance(arch_value, str):  # a list-of-lists string (also accepted)
        arch_value = arch_value.strip()
    honour = bool(cream.HONOUR_SINGLE_BLOCK_CHOICES) if cream is not None else False
    raw_name = str(model.NAME).strip()
    released = None
    if raw_name:
        try:
            released = net_name(raw_name)
        except KeyError:
            released = None
    if arch_value:
        arch = parse_arch_text(arch_value) if isinstance(arch_value, str) else _arch_from_value(arch_value)
        if released is not None and arch != RELEASED_NETS[released]:
            raise ValueError(f"MODEL.NAME = {raw_name!r} names the released net {released} "
                             f"({format_arch_list(RELEASED_NETS[released])}) but CREAM.ARCH = "
                             f"{format_arch_list(arch)} is another path; give a custom path its own MODEL.NAME "
                             "(e.g. 'cream_custom')")
        name = released or raw_name or "custom"
    else:
        if not raw_name:
            raise ValueError(f"MODEL.NAME is empty: set it to one of {', '.join(NET_NAMES)}, or set CREAM.ARCH to a "
                             "path such as '[[0], [3], [3, 3], [3, 3], [3], [3], [0]]'")
        if released is None:
            raise ValueError(f"MODEL.NAME = {raw_name!r} is not a released Cream child net (known: "
                             f"{', '.join(NET_NAMES)}); for any other path set CREAM.ARCH")
        arch, name = RELEASED_NETS[released], released
    keys = model_keys(cfg)
    return build_child_spec(arch, honour, keys.num_classes, keys.dropout, name=name, image_size=keys.image_size,
                            drop_path_rate=keys.drop_path, in_chans=keys.channels)


def macs_rule(spec) -> str:
    if isinstance(spec, CreamSupernetSpec):
        return "conv_fc of the supernet's largest path (k7 e6 in every layer); a path runs one choice per layer"
    return count_macs.__doc__.strip().splitlines()[0].replace("``", "")


def describe(spec: Union[CreamNetSpec, CreamSupernetSpec]) -> Dict[str, object]:
    """The path, the block strings per stage and the headline numbers of a child net (JSON-able); for the supernet,
    its layers per stage, parameter count and the FLOPs range of its paths."""
    if isinstance(spec, CreamSupernetSpec):
        out: Dict[str, object] = {
            "name": spec.name, "sta_num": list(spec.sta_num), "flops_window_mflops": list(spec.flops_window),
            "choices": [f"{i}=k{k}e{e}" for i, (k, e) in enumerate(CHOICES)], "slice": spec.slice,
            "meta_layer_inputs": spec.meta_features, "num_classes": spec.num_classes, "params": count_params(spec),
        }
        if spec.image_size:
            table = flops_table(spec, spec.image_size)
            low = ((0,),) + tuple((0,) * n for n in spec.sta_num) + ((0,),)
            high = ((0,),) + tuple((NUM_CHOICES - 1,) * n for n in spec.sta_num) + ((0,),)
            out["path_mflops_thop_2020"] = {"image_size": spec.image_size, "smallest": table.path_mflops(low),
                                            "largest": table.path_mflops(high), "fixed": table.fixed}
        return out
    size = spec.image_size
    out: Dict[str, object] = {
        "name": spec.name,
        # the path as CREAM.ARCH takes it; then each stage's blocks, one line per stage
        "arch_list": format_arch_list(spec.arch_list),
        "honour_single_block_choices": spec.honour_single_block_choices,
        "stages": [" ".join(stage) for stage in spec.arch_def],
        "image_size": size,
        "in_chans": spec.in_chans,
        "num_classes": spec.num_classes,
        "drop_rate": spec.drop_rate,
        "drop_path_rate": spec.drop_path_rate,
        "params": count_params(spec),
    }
    if size is not None:
        out["macs"] = {
            "rule": "conv_fc: every conv H_out*W_out*C_out*(C_in/groups)*k*k + classifier in*out; "
                    "no BN, bias, pool or activation",
            "conv_fc": count_macs(spec, size, "conv_fc"),
            "thop_2020": count_macs(spec, size, "thop_2020"),
            "thop": count_macs(spec, size, "thop"),
        }
    if spec.name in PUBLISHED:
        published = dict(PUBLISHED[spec.name])
        published["image_size"] = RELEASED_IMAGE_SIZE[spec.name]
        published["mflops_rule"] = "thop (2020) on the official model; compare macs.thop_2020"
        if spec.honour_single_block_choices:
            published["note"] = ("the published figures are for the official builder "
                                 "(CREAM.HONOUR_SINGLE_BLOCK_CHOICES False)")
        if size is not None and size != RELEASED_IMAGE_SIZE[spec.name]:
            published["note_size"] = f"published at {RELEASED_IMAGE_SIZE[spec.name]} px, this config uses {size} px"
        out["published"] = published
    return out


def recognition_candidates(tensors: Mapping[str, object]) -> List[Tuple[str, Dict[str, Shape]]]:
    """``(name, expected shapes)`` of every released child net (upstream's builder and the honoured one) at the
    class count of ``tensors`` (``classifier.bias``; 1000 when absent): the hook ``weights_tools/recognise.py``
    uses, through ``common/families.py``, to name the network of a bare state dict."""
    classes = classifier_width(tensors, "classifier.bias", 1000)
    out = []
    for name in RELEASED_NETS:
        for honour in (False, True):
            spec = released_net_spec(name, honour_single_block_choices=honour, num_classes=classes)
            out.append((name, expected_state_shapes(spec)))
    return out


def class_names(spec: CreamNetSpec):
    """ImageNet names for a 1000-class head when timm's name files are installed; None otherwise (the CLI
    then prints class indices)."""
    from common.imagenet_names import class_names_for_head

    return class_names_for_head(spec.num_classes)


# --------------------------------------------------------------------------------------------------------------
# The supernet search: the FLOPs-bounded layer search, paths, their parameters and FLOPs (framework-free)
# --------------------------------------------------------------------------------------------------------------

#: Upstream's hand-made table for the layer search (``lib/utils/op_by_layer_dict.py``): MFLOPs of choice ``op``
#: in choice stage ``stage`` (0-4 = stages 1-5), as (stride-1 figure, stride-2 figure).  ``search_for_layer`` reads
#: the first figure for the one-layer base and the second for every layer it adds.
LAYER_SEARCH_MFLOPS: Tuple[Tuple[Tuple[float, float], ...], ...] = (
    ((21.828704, 18.820752), (32.669328, 28.16048), (25.039968, 23.637648), (37.486224, 35.385824),
     (29.856864, 30.862992), (44.711568, 46.22384)),
    ((11.808656, 11.86712), (17.68624, 17.780848), (13.01288, 13.87416), (19.492576, 20.791408),
     (14.819216, 16.88472), (22.20208, 25.307248)),
    ((8.198, 10.99632), (12.292848, 16.5172), (8.69976, 11.99984), (13.045488, 18.02248),
     (9.4524, 13.50512), (14.174448, 20.2804)),
    ((12.006112, 15.61632), (18.028752, 23.46096), (13.009632, 16.820544), (19.534032, 25.267296),
     (14.514912, 18.62688), (21.791952, 27.9768)),
    ((11.307456, 15.292416), (17.007072, 23.1504), (11.608512, 15.894528), (17.458656, 24.053568),
     (12.060096, 16.797696), (18.136032, 25.40832)),
)
#: the order the greedy layer search grows the choice stages in, and the layer count each visit may reach
#: (upstream calls them "a rough definition", issue #17)
LAYER_SEARCH_ORDER: Tuple[int, ...] = (2, 3, 4, 1, 0, 2, 3, 4, 1, 0)
LAYER_SEARCH_LIMITS: Tuple[int, ...] = (3, 3, 3, 2, 2, 4, 4, 4, 4, 4)


def search_for_layer(flops_minimum: float = 0.0, flops_maximum: float = 600.0) -> Tuple[Tuple[int, ...], int]:
    """Layers per choice stage (``sta_num``) and a resolution for a FLOPs window in MFLOPs (upstream's
    ``search_for_layer``, same greedy rule, same table).

    Start from one layer per stage.  When even the smallest ops of that base exceed ``flops_maximum``, lower the
    resolution in steps of 32 px from 224 (the window is rescaled by ``7 / size_factor`` at each step, cumulatively
    as upstream does) down to 64 px; below that the window is refused.  When the base's largest ops stay under
    ``flops_minimum``, add layers (largest op, stride-2 figure) along :data:`LAYER_SEARCH_ORDER` until they do.  Then
    keep adding layers along the order while the largest-op total stays <= the (rescaled) maximum, a stage at a time
    up to its limit.  ``[0, 600]`` gives ``(4, 4, 4, 4, 4)`` at 224 px.  The resolution is informational (upstream
    only logs it; ``DATA.IMAGE_SIZE`` is what the search uses).  Raises ``ValueError`` naming the window."""
    lo, hi = float(flops_minimum), float(flops_maximum)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or hi <= 0 or lo > hi:
        raise ValueError(f"FLOPs window [{flops_minimum}, {flops_maximum}] MFLOPs: need 0 <= minimum <= maximum "
                         "and maximum > 0")
    table = LAYER_SEARCH_MFLOPS
    sta_num = [1, 1, 1, 1, 1]
    size_factor = 224 // 32
    base_min = sum(table[s][0][0] for s in range(5))
    base_max = sum(table[s][5][0] for s in range(5))
    if base_min > hi:
        while base_min > hi and size_factor >= 2:
            size_factor -= 1
            lo *= 7.0 / size_factor
            hi *= 7.0 / size_factor
        if size_factor < 2:
            raise ValueError(f"FLOPs window [{flops_minimum}, {flops_maximum}] MFLOPs: even one smallest op per "
                             "stage exceeds the maximum at 64 px")
    elif base_max < lo:
        ptr = 0
        while base_max < lo and ptr <= 9:
            if sta_num[LAYER_SEARCH_ORDER[ptr]] >= LAYER_SEARCH_LIMITS[ptr]:
                ptr += 1
                continue
            base_max += table[LAYER_SEARCH_ORDER[ptr]][5][1]
            sta_num[LAYER_SEARCH_ORDER[ptr]] += 1
        if ptr > 7 and base_max < lo:
            raise ValueError(f"FLOPs window [{flops_minimum}, {flops_maximum}] MFLOPs: the largest supernet stays "
                             "under the minimum")
    ptr = 0
    while ptr <= 9:
        stage = LAYER_SEARCH_ORDER[ptr]
        if sta_num[stage] >= LAYER_SEARCH_LIMITS[ptr]:
            ptr += 1
            continue
        base_max += table[stage][5][1]
        if base_max <= hi:
            sta_num[stage] += 1
        else:
            break
    return tuple(sta_num), size_factor * 32


SUPERNET_NAMES = ("cream_supernet",)
#: a path: ``[[0], s1, s2, s3, s4, s5, [0]]``, ``s_i`` one choice index (0..5, or -1 = skip the layer) per layer
Path = Tuple[Tuple[int, ...], ...]
SKIP = -1


def check_path(spec: CreamSupernetSpec, path, key: str = "path") -> Path:
    """A path of ``spec`` as a tuple of tuples: 7 stages, ``[0]`` at both ends, ``sta_num[s]`` entries in choice
    stage ``s`` (upstream's convention: a stage-3 layer beyond ``sta_num`` is never run), each in ``-1..5``.
    Raises :class:`ArchListError` naming ``key``, the stage and the value."""
    if isinstance(path, (str, bytes)) or not hasattr(path, "__len__") or len(path) != len(spec.stages):
        raise ArchListError(f"{key} = {path!r}: expected {len(spec.stages)} stages [[0], s1, ..., s5, [0]]")
    out = []
    for s, stage in enumerate(path):
        if isinstance(stage, (str, bytes)) or not hasattr(stage, "__len__"):
            raise ArchListError(f"{key} stage {s}: expected a list of choice indices, got {stage!r}")
        stage = tuple(stage)
        if s in (0, len(path) - 1):
            if stage != (0,):
                raise ArchListError(f"{key} stage {s} is fixed and must be [0], got {list(stage)}")
        else:
            want = spec.sta_num[s - 1]
            if len(stage) != want:
                raise ArchListError(f"{key} stage {s} has {len(stage)} entries; the supernet's sta_num gives {want}")
            for i, c in enumerate(stage):
                if isinstance(c, bool) or not isinstance(c, (int,)) and not hasattr(c, "__index__") \
                        or not SKIP <= int(c) < NUM_CHOICES:
                    raise ArchListError(f"{key} stage {s} layer {i}: {c!r} is not a choice index 0..{NUM_CHOICES - 1} "
                                        "or -1 (skip)")
            stage = tuple(int(c) for c in stage)
        out.append(stage)
    return tuple(out)


def sample_path(spec: CreamSupernetSpec, rng, prob: Optional[Sequence[float]] = None,
                upstream_sampling: bool = False) -> Path:
    """One path drawn with the numpy Generator ``rng``: each choice-stage layer independently from ``prob`` over
    the six choices (None: uniform).  ``upstream_sampling`` reproduces upstream's ``np.random.choice(6, n, prob)``,
    whose third argument is ``replace``, not ``p``: every draw is uniform whatever ``prob`` says."""
    import numpy as np

    p = None
    if prob is not None and not upstream_sampling:
        p = np.asarray(prob, dtype=np.float64)
        if p.shape != (NUM_CHOICES,) or not np.all(np.isfinite(p)) or (p < 0).any() or p.sum() <= 0:
            raise ValueError(f"choice probabilities {list(prob)!r}: need {NUM_CHOICES} non-negative finite values")
        p = p / p.sum()
    middle = tuple(tuple(int(c) for c in rng.choice(NUM_CHOICES, size=n, p=p)) for n in spec.sta_num)
    return ((0,),) + middle + ((0,),)


def path_seed(seed: int, step: int, stream: str = "train"):
    """The Generator of the path of global step ``step`` (``stream`` "train") or of evaluation epoch ``step``
    ("val"): a pure function of (seed, step), so every rank and a resumed run draw the same path."""
    import numpy as np

    return np.random.default_rng(np.random.SeedSequence([int(seed), int(step), *stream.encode()]))


def reference_path(spec: CreamSupernetSpec) -> Path:
    """A fixed mixed path (one seeded draw) for the tools that run a supernet without a search: ``parity``'s
    capture (:func:`parity_prepare`)."""
    return sample_path(spec, path_seed(0, 0, "reference"))


def parity_prepare(model, spec) -> None:
    """The parity harness's hook after a model is loaded: a supernet runs :func:`reference_path`."""
    if isinstance(spec, CreamSupernetSpec):
        model.set_path(reference_path(spec))


def path_plan(spec: CreamSupernetSpec, path, key: str = "path") -> Tuple[Path, Tuple[Tuple[int, int, int], ...]]:
    """``path`` checked (:func:`check_path`) and the ``(stage, layer, choice)`` of every layer it runs, in forward
    order.  A layer may be skipped (-1) only where it keeps the feature map (stride 1, in == out channels): upstream
    runs the next layer on whatever arrives, so any other skip is a shape error; it is named here instead."""
    checked = check_path(spec, path, key)
    plan = []
    for s, (stage, choices) in enumerate(zip(spec.stages, checked)):
        for i, (options, c) in enumerate(zip(stage, choices)):
            if c != SKIP:
                plan.append((s, i, c))
                continue
            layer = options[0]
            if layer.stride != 1 or layer.in_ch != layer.out_ch:
                raise ArchListError(f"{key} stage {s} layer {i}: -1 (skip) is only allowed on a layer that keeps the "
                                    f"feature map; this one has stride {layer.stride}, {layer.in_ch} -> "
                                    f"{layer.out_ch} channels")
    return checked, tuple(plan)


def path_layers(spec: CreamSupernetSpec, path: Path) -> Iterator[Tuple[str, LayerSpec]]:
    """``(canonical prefix, LayerSpec)`` of every layer ``path`` runs, in forward order (skips left out)."""
    for s, (stage, choices) in enumerate(zip(spec.stages, path)):
        for i, (options, c) in enumerate(zip(stage, choices)):
            if c != SKIP:
                yield f"blocks.{s}.{i}.{c}", options[c]


#: the supernet's parameters outside the blocks and the meta layer, in module order (upstream ``rand_parameters``
#: yields them first)
FIXED_PARAMETERS = ("conv_stem.weight", "bn1.weight", "bn1.bias", "conv_head.weight", "conv_head.bias",
                    "classifier.weight", "classifier.bias")
META_PARAMETERS = ("meta_layer.weight", "meta_layer.bias")


def path_parameter_names(spec: CreamSupernetSpec, path: Path) -> Tuple[str, ...]:
    """The trainable parameters a path uses, in upstream's ``rand_parameters(path)`` order: the fixed ones
    (:data:`FIXED_PARAMETERS`; ``conv_head.bias`` only with a head bias), then each layer's in module order."""
    shapes = expected_state_shapes(spec)
    out = [n for n in FIXED_PARAMETERS if n in shapes]
    for prefix, _ in path_layers(spec, path):
        out += [n for n in shapes if n.startswith(prefix + ".") and not n.endswith(_BN_BUFFERS)]
    return tuple(out)


def child_arch_from_path(path: Path) -> Tuple[Tuple[int, ...], ...]:
    """The child-net arch list of a path (skipped layers dropped); a stage left empty is an error."""
    out = []
    for s, stage in enumerate(path):
        kept = tuple(int(c) for c in stage if c != SKIP)
        if not kept:
            raise ArchListError(f"path stage {s} skips every layer; a child net needs at least one block per stage")
        out.append(kept)
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class FlopsTable:
    """MFLOPs of every choice of every supernet layer on the feature map it runs on, plus the fixed part (stem
    conv, head pool, ``conv_head``; upstream's ``FlopsEst`` leaves out the stem's BN and the classifier), at
    ``image_size``.  A
    path's FLOPs are the fixed part plus its layers' entries (:meth:`path_mflops`).  Rule: ``thop_2020`` MACs
    (:func:`count_macs`), the rule the released FLOPs figures are in (upstream's table came from ptflops; it is
    used for the board's tie-breaks and the log only)."""

    image_size: int
    rule: str
    fixed: float
    choices: Tuple[Tuple[Tuple[float, ...], ...], ...]   # [stage][layer][choice]

    def path_mflops(self, path: Path) -> float:
        total = self.fixed
        for s, stage in enumerate(path):
            for i, c in enumerate(stage):
                if c != SKIP:
                    total += self.choices[s][i][c]
        return total


def flops_table(spec: CreamSupernetSpec, image_size: Optional[int] = None, rule: str = "thop_2020") -> FlopsTable:
    """:class:`FlopsTable` of ``spec``.  Every layer's input size follows from the strides alone (a skipped layer
    has stride 1 or keeps the map), so one pass over the layers fills the table."""
    size = image_size if image_size is not None else spec.image_size
    if size is None:
        raise ValueError("flops_table needs an image_size (the spec carries none)")
    hw = conv_out_size(size, spec.stem_kernel, spec.stem_stride, conv_padding(spec.stem_kernel, spec.stem_stride))
    fixed = _conv_macs(hw, spec.in_chans, spec.stem_ch, spec.stem_kernel)
    stages = []
    for stage in spec.stages:
        layers = []
        for options in stage:
            row = []
            for layer in options:
                macs, hw_out = layer_macs(layer, hw, rule)
                row.append(macs / 1e6)
            layers.append(tuple(row))
            hw = hw_out
        stages.append(tuple(layers))
    fixed += _head_macs(spec, hw, rule, classifier=False)
    return FlopsTable(int(size), rule, fixed / 1e6, tuple(stages))


def supernet_spec_from_config(cfg) -> CreamSupernetSpec:
    """The supernet of a search config: ``CREAM.FLOPS_MINIMUM`` / ``FLOPS_MAXIMUM`` (MFLOPs) choose the layers per
    stage through :func:`search_for_layer` unless ``CREAM.STA_NUM`` gives them; ``CREAM.SLICE`` images per board
    entry (the meta layer reads ``MODEL.NUM_CLASSES x SLICE`` values); ``MODEL.NUM_CLASSES``, ``MODEL.DROPOUT``,
    ``DATA.IMAGE_SIZE``, ``DATA.CHANNELS``.  Errors name the key."""
    node = cfg.CREAM
    keys = model_keys(cfg)
    if keys.drop_path:
        raise ValueError(f"MODEL.DROP_PATH = {keys.drop_path!r}: the supernet has no drop path (upstream never sets "
                         "it); set it to 0")
    window = (float(node.FLOPS_MINIMUM), float(node.FLOPS_MAXIMUM))
    if tuple(node.STA_NUM):
        sta_num = tuple(node.STA_NUM)
    else:
        try:
            sta_num, _ = search_for_layer(*window)
        except ValueError as exc:
            raise ValueError(f"CREAM.FLOPS_MINIMUM / FLOPS_MAXIMUM: {exc}") from None
    slice_ = node.SLICE
    if isinstance(slice_, bool) or not isinstance(slice_, int) or slice_ < 1:
        raise ValueError(f"CREAM.SLICE = {slice_!r} must be a positive int")
    try:
        return build_supernet_spec(sta_num, keys.num_classes, slice_, keys.dropout, keys.channels, keys.image_size,
                                   window)
    except ArchListError as exc:
        raise ValueError(f"CREAM.STA_NUM = {list(sta_num)}: {exc}") from None


def commands_for(spec) -> Tuple[str, ...]:
    """The supernet is searched; a child net is trained, tested and run."""
    if isinstance(spec, CreamSupernetSpec):
        return ("search",)
    return ("train", "test", "infer")


def command_hint(spec, command: str) -> str:
    if isinstance(spec, CreamSupernetSpec):
        return ("(it is the supernet: `search` trains it and writes the best path as a child-net config, "
                "<run>/child.yaml, for `train`)")
    return "(it is a child net; the supernet search runs MODEL.NAME cream_supernet)"
