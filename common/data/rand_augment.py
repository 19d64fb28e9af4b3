"""RandAugment (Cubuk et al. 2019) in PIL, configured by a timm-style string such as ``rand-m9-mstd0.5``.

String grammar: ``rand`` followed by ``-``-separated settings, each a key and a number:

- ``m<float>``: magnitude, 0..10 (required);
- ``n<int>``: number of ops applied per image (default 2);
- ``mstd<float>``: standard deviation of Gaussian noise added to the magnitude per op (default 0 = none).

Per image: ``n`` ops are drawn uniformly *with replacement* from the 15 below; each is applied with
probability 0.5 at magnitude ``clip(normal(m, mstd), 0, 10)``.  Geometric ops flip their sign with
probability 0.5, use bilinear or bicubic resampling (drawn per op) and fill uncovered pixels with gray 128.

Magnitude -> argument, for magnitude ``m`` in 0..10 (``f = m / 10``):

==================  ===============================================
AutoContrast        no argument
Equalize            no argument
Invert              no argument
Rotate              ``30 * f`` degrees
Posterize           keep ``4 + int(4 * f)`` bits (4..8)
Solarize            invert pixels ``>= int(256 * f)``
SolarizeAdd         add ``int(110 * f)`` to pixels ``< 128`` (saturating)
Color / Contrast /  enhance factor ``1.8 * f + 0.1`` (0.1 .. 1.9)
Brightness /
Sharpness
ShearX / ShearY     shear ``0.3 * f``
TranslateXRel /     shift ``0.45 * f`` of the width / height
TranslateYRel
==================  ===============================================
"""
from __future__ import annotations

import re
from typing import Callable, Dict, Tuple

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from common.data.transforms import as_pil

MAX_MAGNITUDE = 10.0
FILL_GRAY = 128
OP_PROBABILITY = 0.5
_AFFINE_RESAMPLE = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)


class RandAugmentConfigError(ValueError):
    """A RandAugment config string is malformed; the message quotes it."""


# ------------------------------------------------------------------------------------------------ ops
# Each op is ``op(img, magnitude_fraction, rng) -> img`` with the fraction already in [0, 1].
def _signed(value: float, rng: np.random.Generator) -> float:
    return -value if rng.random() < 0.5 else value


def _fill(img: Image.Image):
    return FILL_GRAY if img.mode == "L" else (FILL_GRAY,) * len(img.getbands())


def _affine(img: Image.Image, coeffs, rng: np.random.Generator) -> Image.Image:
    resample = _AFFINE_RESAMPLE[int(rng.integers(len(_AFFINE_RESAMPLE)))]
    return img.transform(img.size, Image.Transform.AFFINE, coeffs, resample=resample, fillcolor=_fill(img))


def _auto_contrast(img, f, rng):
    return ImageOps.autocontrast(img)


def _equalize(img, f, rng):
    return ImageOps.equalize(img)


def _invert(img, f, rng):
    return ImageOps.invert(img)


def _rotate(img, f, rng):
    angle = _signed(30.0 * f, rng)
    resample = _AFFINE_RESAMPLE[int(rng.integers(len(_AFFINE_RESAMPLE)))]
    return img.rotate(angle, resample=resample, fillcolor=_fill(img))


def _posterize(img, f, rng):
    return ImageOps.posterize(img, 4 + int(4 * f))


def _solarize(img, f, rng):
    return ImageOps.solarize(img, int(256 * f))


def _solarize_add(img, f, rng, threshold: int = 128):
    add = int(110 * f)
    values = np.arange(256)
    lut = np.where(values < threshold, np.minimum(values + add, 255), values).tolist()
    return img.point(lut * len(img.getbands()))


def _enhancer(kind) -> Callable:
    def op(img, f, rng):
        return kind(img).enhance(1.8 * f + 0.1)

    return op


def _shear_x(img, f, rng):
    return _affine(img, (1, _signed(0.3 * f, rng), 0, 0, 1, 0), rng)


def _shear_y(img, f, rng):
    return _affine(img, (1, 0, 0, _signed(0.3 * f, rng), 1, 0), rng)


def _translate_x_rel(img, f, rng):
    return _affine(img, (1, 0, _signed(0.45 * f, rng) * img.width, 0, 1, 0), rng)


def _translate_y_rel(img, f, rng):
    return _affine(img, (1, 0, 0, 0, 1, _signed(0.45 * f, rng) * img.height), rng)


OPS: Dict[str, Callable] = {
    "AutoContrast": _auto_contrast,
    "Equalize": _equalize,
    "Invert": _invert,
    "Rotate": _rotate,
    "Posterize": _posterize,
    "Solarize": _solarize,
    "SolarizeAdd": _solarize_add,
    "Color": _enhancer(ImageEnhance.Color),
    "Contrast": _enhancer(ImageEnhance.Contrast),
    "Brightness": _enhancer(ImageEnhance.Brightness),
    "Sharpness": _enhancer(ImageEnhance.Sharpness),
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateXRel": _translate_x_rel,
    "TranslateYRel": _translate_y_rel,
}
OP_NAMES: Tuple[str, ...] = tuple(OPS)


# -------------------------------------------------------------------------------------------- parsing
_SETTING = re.compile(r"^(mstd|m|n)(\d+(?:\.\d*)?|\.\d+)$")


def parse_rand_augment(spec: str) -> Dict[str, float]:
    """``'rand-m9-mstd0.5'`` -> ``{'magnitude': 9.0, 'num_ops': 2, 'magnitude_std': 0.5}``."""
    usage = "expected 'rand-m<0..10>[-n<ops>][-mstd<std>]', e.g. 'rand-m9-mstd0.5'"
    if not isinstance(spec, str) or not spec.strip():
        raise RandAugmentConfigError(f"RandAugment config {spec!r} is empty; {usage}")
    parts = spec.strip().split("-")
    if parts[0] != "rand":
        raise RandAugmentConfigError(f"RandAugment config {spec!r} must start with 'rand'; {usage}")
    settings: Dict[str, float] = {}
    for part in parts[1:]:
        match = _SETTING.match(part)
        if not match:
            raise RandAugmentConfigError(f"RandAugment config {spec!r}: cannot read setting {part!r}; {usage}")
        key, number = match.group(1), float(match.group(2))
        if key in settings:
            raise RandAugmentConfigError(f"RandAugment config {spec!r}: setting '{key}' given twice")
        settings[key] = number
    if "m" not in settings:
        raise RandAugmentConfigError(f"RandAugment config {spec!r} has no magnitude 'm'; {usage}")
    if not 0 <= settings["m"] <= MAX_MAGNITUDE:
        raise RandAugmentConfigError(f"RandAugment config {spec!r}: magnitude {settings['m']} is outside [0, 10]")
    num_ops = settings.get("n", 2.0)
    if num_ops != int(num_ops) or num_ops < 1:
        raise RandAugmentConfigError(f"RandAugment config {spec!r}: n must be a whole number >= 1, got {num_ops}")
    return {"magnitude": settings["m"], "num_ops": int(num_ops), "magnitude_std": settings.get("mstd", 0.0)}


class RandAugment:
    """Apply ``num_ops`` random ops (see the module docstring) to a PIL image, drawing from ``rng``."""

    def __init__(self, magnitude: float = 9.0, num_ops: int = 2, magnitude_std: float = 0.0,
                 op_probability: float = OP_PROBABILITY):
        self.magnitude = float(magnitude)
        self.num_ops = int(num_ops)
        self.magnitude_std = float(magnitude_std)
        self.op_probability = float(op_probability)

    @classmethod
    def from_string(cls, spec: str) -> "RandAugment":
        return cls(**parse_rand_augment(spec))

    def _magnitude_fraction(self, rng: np.random.Generator) -> float:
        magnitude = self.magnitude
        if self.magnitude_std > 0:
            magnitude = rng.normal(magnitude, self.magnitude_std)
        return float(min(MAX_MAGNITUDE, max(0.0, magnitude))) / MAX_MAGNITUDE

    def __call__(self, image, rng: np.random.Generator) -> Image.Image:
        img = as_pil(image)
        for which in rng.integers(0, len(OP_NAMES), size=self.num_ops):
            if rng.random() >= self.op_probability:
                continue
            img = OPS[OP_NAMES[which]](img, self._magnitude_fraction(rng), rng)
        return img

    def __repr__(self) -> str:
        return f"RandAugment(magnitude={self.magnitude}, num_ops={self.num_ops}, magnitude_std={self.magnitude_std})"
