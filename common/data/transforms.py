"""Image transforms in numpy and PIL, deterministic given a ``numpy.random.Generator``.

Every transform is a callable ``t(x, rng) -> x``; all randomness comes from ``rng`` (never from the
``random`` module or numpy's global state), so the same generator state gives the same bytes on every
machine and whichever framework consumes the batch.

A pipeline has two stages:

1. *image stage*: PIL images (``uint8``, mode ``RGB`` or ``L``): crops, flips, colour, RandAugment.
   These accept a PIL image or a ``uint8 (H, W, C)`` array and return a PIL image.
2. *tensor stage*: ``float32 (C, H, W)`` arrays after :class:`ToNormalizedFloat`: random erasing, cutout.

:class:`Compose` chains them; the last step of a full pipeline yields ``float32 (C, H, W)``.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageEnhance

Size = Union[int, Tuple[int, int]]

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
# 'random' draws one of these per image (timm's choice for training crops).
RANDOM_RESAMPLE = ("bilinear", "bicubic")
INTERPOLATIONS = tuple(RESAMPLE) + ("random",)


def pick_resample(interpolation: str, rng: np.random.Generator) -> int:
    """PIL resampling filter for ``interpolation`` ('random' draws bilinear or bicubic from ``rng``)."""
    if interpolation == "random":
        return RESAMPLE[RANDOM_RESAMPLE[int(rng.integers(len(RANDOM_RESAMPLE)))]]
    try:
        return RESAMPLE[interpolation]
    except KeyError:
        raise ValueError(f"interpolation {interpolation!r} is not one of {list(INTERPOLATIONS)}") from None


def _check_interpolation(interpolation: str) -> str:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation {interpolation!r} is not one of {list(INTERPOLATIONS)}")
    return interpolation


def _pair(size: Size) -> Tuple[int, int]:
    """``size`` as ``(height, width)``."""
    if isinstance(size, (tuple, list)):
        height, width = size
        return int(height), int(width)
    return int(size), int(size)


def as_pil(image) -> Image.Image:
    """A PIL image from a PIL image or a ``uint8 (H, W, 1|3)`` array."""
    if isinstance(image, Image.Image):
        return image
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ValueError(f"expected a uint8 (H, W, 1|3) image, got {array.dtype} {array.shape}")
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)


def as_array(image) -> np.ndarray:
    """``uint8 (H, W, C)`` from a PIL image or such an array."""
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


class Compose:
    """Apply ``steps`` in order, each with the same ``rng``."""

    def __init__(self, steps: Sequence[Callable]):
        self.steps: List[Callable] = list(steps)

    def __call__(self, image, rng: np.random.Generator):
        for step in self.steps:
            image = step(image, rng)
        return image

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(s) for s in self.steps)
        return f"Compose(\n  {inner}\n)"


# ------------------------------------------------------------------------------------------ geometry
class Resize:
    """Resize to exactly ``size`` (no aspect-ratio keeping); a no-op when the image already has that size."""

    def __init__(self, size: Size, interpolation: str = "bilinear"):
        self.size = _pair(size)
        self.interpolation = _check_interpolation(interpolation)

    def __call__(self, image, rng: np.random.Generator) -> Image.Image:
        img = as_pil(image)
        height, width = self.size
        if img.size == (width, height):
            return img
        return img.resize((width, height), pick_resample(self.interpolation, rng))

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, interpolation={self.interpolation!r})"


class PadRandomCrop:
    """CIFAR random crop: zero-pad ``padding`` pixels on every side, then crop ``size`` at a uniform offset.

    PIL's ``crop`` fills the part of the box outside the image with zeros, which is exactly zero padding,
    so no padded copy is made.
    """

    def __init__(self, size: Size, padding: int):
        self.size = _pair(size)
        self.padding = int(padding)
        if self.padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")

    def __call__(self, image, rng: np.random.Generator) -> Image.Image:
        img = as_pil(image)
        height, width = self.size
        pad = self.padding
        max_top = img.height + 2 * pad - height
        max_left = img.width + 2 * pad - width
        if max_top < 0 or max_left < 0:
            padded = f"{img.height + 2 * pad}x{img.width + 2 * pad}"
            raise ValueError(f"crop {self.size} is larger than the padded image {padded}")
        top = int(rng.integers(0, max_top + 1)) - pad
        left = int(rng.integers(0, max_left + 1)) - pad
        return img.crop((left, top, left + width, top + height))

    def __repr__(self) -> str:
        return f"PadRandomCrop(size={self.size}, padding={self.padding})"


class HorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, image, rng: np.random.Generator) -> Image.Image:
        img = as_pil(image)
        if self.p > 0 and rng.random() < self.p:
            return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return img

    def __repr__(self) -> str:
        return f"HorizontalFlip(p={self.p})"


def random_resized_crop_box(
    height: int,
    width: int,
    scale: Tuple[float, float],
    ratio: Tuple[float, float],
    rng: np.random.Generator,
    attempts: int = 10,
) -> Tuple[int, int, int, int]:
    """``(top, left, crop_height, crop_width)`` of a RandomResizedCrop.

    Up to ``attempts`` draws of an area fraction uniform in ``scale`` and an aspect ratio (w/h) log-uniform in
    ``ratio``; the first box that fits is placed uniformly.  If none fits, the whole image cropped to the
    nearest allowed aspect ratio, centred.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            return top, left, crop_h, crop_w
    # Fallback: centre crop with the aspect ratio clamped into ``ratio``.
    in_ratio = width / height
    if in_ratio < min(ratio):
        crop_w, crop_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        crop_h, crop_w = height, int(round(height * max(ratio)))
    else:
        crop_h, crop_w = height, width
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


class RandomResizedCrop:
    """Crop a random area/aspect box (:func:`random_resized_crop_box`) and resize it to ``size``."""

    def __init__(
        self,
        size: Size,
        scale: Tuple[float, float] = (0.08, 1.0),
        ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        interpolation: str = "bilinear",
    ):
        self.size = _pair(size)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        if not 0 < self.scale[0] <= self.scale[1] or not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"RandomResizedCrop needs 0 < min <= max for scale {scale} and ratio {ratio}")
        self.interpolation = _check_interpolation(interpolation)

    def __call__(self, image, rng: np.random.Generator) -> Image.Image:
        img = as_pil(image)
        top, left, crop_h, crop_w = random_resized_crop_box(img.height, img.width, self.scale, self.ratio, rng)
        resample = pick_resample(self.interpolation, rng)
        height, width = self.size
        return img.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), resample)

    def __repr__(self) -> str:
        return (f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
                f"interpolation={self.interpolation!r})")


def eval_resize_size(image_size: int, crop_pct: float) -> int:
    """The shorter side before the centre crop: ``floor(image_size / crop_pct)``."""
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    return int(math.floor(image_size / crop_pct))


class ResizeCenterCrop:
    """Eval geometry: resize the shorter side to ``floor(size / crop_pct)`` (aspect kept), centre-crop ``size``."""

    def __init__(self, size: int, crop_pct: float = 0.875, interpolation: str = "bicubic"):
        self.size = int(size)
        self.crop_pct = float(crop_pct)
        self.resize_to = eval_resize_size(self.size, self.crop_pct)
        if interpolation == "random":
            raise ValueError("evaluation needs a fixed interpolation, not 'random'")
        self.interpolation = _check_interpolation(interpolation)

    def __call__(self, image, rng: Optional[np.random.Generator] = None) -> Image.Image:
        img = as_pil(image)
        width, height = img.size
        short = min(width, height)
        if short != self.resize_to:
            if width <= height:
                new_w, new_h = self.resize_to, int(self.resize_to * height / width)
            else:
                new_w, new_h = int(self.resize_to * width / height), self.resize_to
            img = img.resize((new_w, new_h), RESAMPLE[self.interpolation])
            width, height = new_w, new_h
        top = int(round((height - self.size) / 2.0))
        left = int(round((width - self.size) / 2.0))
        if (top, left, width, height) == (0, 0, self.size, self.size):
            return img
        return img.crop((left, top, left + self.size, top + self.size))

    def __repr__(self) -> str:
        return f"ResizeCenterCrop(size={self.size}, crop_pct={self.crop_pct}, interpolation={self.interpolation!r})"


# --------------------------------------------------------------------------------------------- colour
class ColorJitter:
    """Brightness, contrast and saturation factors uniform in ``[max(0, 1 - v), 1 + v]``, applied in random order.

    Uses PIL ``ImageEnhance`` (contrast blends with the mean gray level, saturation with the grayscale
    image).  Saturation does nothing to a one-channel image.
    """

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0):
        self.amounts = (float(brightness), float(contrast), float(saturation))
        if min(self.amounts) < 0:
            raise ValueError(f"colour jitter amounts must be >= 0, got {self.amounts}")

    _ENHANCERS = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)

    def __call__(self, image, rng: np.random.Generator) -> Image.Image:
        img = as_pil(image)
        for which in rng.permutation(3):
            amount = self.amounts[which]
            if amount <= 0:
                continue
            factor = rng.uniform(max(0.0, 1.0 - amount), 1.0 + amount)
            if which == 2 and img.mode == "L":
                continue
            img = self._ENHANCERS[which](img).enhance(factor)
        return img

    def __repr__(self) -> str:
        return "ColorJitter(brightness={}, contrast={}, saturation={})".format(*self.amounts)


# ------------------------------------------------------------------------------------------ to tensor
def _per_channel(values: Sequence[float], channels: int, what: str) -> np.ndarray:
    """Mean/std vector for ``channels``; three values for a one-channel image are averaged."""
    values = [float(v) for v in (values if isinstance(values, (tuple, list)) else [values])]
    if len(values) == channels:
        out = values
    elif len(values) == 1:
        out = values * channels
    elif channels == 1:
        out = [sum(values) / len(values)]
    else:
        raise ValueError(f"{what} has {len(values)} values for {channels} channels")
    return np.asarray(out, dtype=np.float32).reshape(channels, 1, 1)


class ToNormalizedFloat:
    """PIL/uint8 HWC -> ``float32 (C, H, W)`` computed as ``(x / 255 - mean) / std`` in float32.

    For a one-channel image a three-value mean/std is averaged to one value.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be > 0, got {self.std}")

    def __call__(self, image, rng: Optional[np.random.Generator] = None) -> np.ndarray:
        array = as_array(image)
        chw = np.ascontiguousarray(array.transpose(2, 0, 1)).astype(np.float32)
        channels = chw.shape[0]
        chw /= np.float32(255.0)
        chw -= _per_channel(self.mean, channels, "mean")
        chw /= _per_channel(self.std, channels, "std")
        return chw

    def __repr__(self) -> str:
        return f"ToNormalizedFloat(mean={self.mean}, std={self.std})"


# ----------------------------------------------------------------------------------- tensor stage
class RandomErasing:
    """Random erasing on a normalised ``float32 (C, H, W)`` image (Zhong et al.; timm's 'pixel' mode).

    With probability ``p``: up to ``attempts`` draws of an area fraction uniform in ``[min_area, max_area]``
    and an aspect ratio log-uniform in ``[min_aspect, 1 / min_aspect]``; the first box that fits strictly
    inside the image is filled with per-pixel standard normal noise ('pixel') or zeros ('const').
    """

    def __init__(self, p: float = 0.5, min_area: float = 0.02, max_area: float = 1.0 / 3.0,
                 min_aspect: float = 0.3, mode: str = "pixel", attempts: int = 10):
        if mode not in ("pixel", "const"):
            raise ValueError(f"random erasing mode {mode!r} is not one of ['pixel', 'const']")
        self.p, self.min_area, self.max_area = float(p), float(min_area), float(max_area)
        self.log_aspect = (math.log(min_aspect), math.log(1.0 / min_aspect))
        self.mode, self.attempts = mode, int(attempts)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.p <= 0 or rng.random() >= self.p:
            return image
        channels, height, width = image.shape
        area = height * width
        for _ in range(self.attempts):
            target_area = rng.uniform(self.min_area, self.max_area) * area
            aspect = math.exp(rng.uniform(*self.log_aspect))
            box_h = int(round(math.sqrt(target_area * aspect)))
            box_w = int(round(math.sqrt(target_area / aspect)))
            if 0 < box_h < height and 0 < box_w < width:
                top = int(rng.integers(0, height - box_h + 1))
                left = int(rng.integers(0, width - box_w + 1))
                if self.mode == "pixel":
                    fill = rng.standard_normal((channels, box_h, box_w), dtype=np.float32)
                else:
                    fill = np.float32(0.0)
                image[:, top:top + box_h, left:left + box_w] = fill
                break
        return image

    def __repr__(self) -> str:
        return f"RandomErasing(p={self.p}, area=({self.min_area}, {self.max_area}), mode={self.mode!r})"


def cutout_box(height: int, width: int, length: int, rng: np.random.Generator) -> Tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of a DARTS Cutout square: centre uniform over the pixels, clipped at borders."""
    cy = int(rng.integers(height))
    cx = int(rng.integers(width))
    y0, x0 = cy - length // 2, cx - length // 2
    return max(y0, 0), min(y0 + length, height), max(x0, 0), min(x0 + length, width)


class Cutout:
    """DARTS Cutout on ``float32 (C, H, W)``: zero a ``length x length`` square in every channel.

    The centre is uniform over ``[0, H) x [0, W)``; the square is clipped at the borders, so near an edge
    less than ``length**2`` pixels are zeroed (as in DARTS / PC-DARTS).
    """

    def __init__(self, length: int):
        self.length = int(length)
        if self.length < 1:
            raise ValueError(f"cutout length must be >= 1, got {length}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        y0, y1, x0, x1 = cutout_box(image.shape[1], image.shape[2], self.length, rng)
        image[:, y0:y1, x0:x1] = 0.0
        return image

    def __repr__(self) -> str:
        return f"Cutout(length={self.length})"


# ------------------------------------------------------------------------------------- TF1 eval hook
class TFInceptionEval:
    """TF1-exact Inception eval preprocessing (central crop, legacy ``resize_bilinear``, ``(x - 0.5) * 2``).

    Delegates to ``common.tf_image.inception_eval(image, image_size, crop_pct)``, which takes a
    ``uint8 (H, W, C)`` array and returns the normalised ``float32 (H, W, C)`` image in ``[-1, 1]``; this
    step returns it as ``float32 (C, H, W)``.  DATA.MEAN/STD are not applied on top (TF fixes them to 0.5).
    The import is inside the call so this module does not need ``common.tf_image`` to import.
    """

    def __init__(self, size: int, crop_pct: float = 0.875):
        self.size = int(size)
        self.crop_pct = float(crop_pct)

    def __call__(self, image, rng: Optional[np.random.Generator] = None) -> np.ndarray:
        from common import tf_image

        out = np.asarray(tf_image.inception_eval(as_array(image), self.size, self.crop_pct), dtype=np.float32)
        if out.ndim != 3 or out.shape[:2] != (self.size, self.size):
            raise ValueError(
                f"common.tf_image.inception_eval returned shape {out.shape}; expected ({self.size}, {self.size}, C)"
            )
        return np.ascontiguousarray(out.transpose(2, 0, 1))

    def __repr__(self) -> str:
        return f"TFInceptionEval(size={self.size}, crop_pct={self.crop_pct})"
