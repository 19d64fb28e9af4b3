"""TensorFlow-exact image ops in numpy: decode, ``convert_image_dtype``, ``central_crop``, TF1 bilinear resize.

Everything here reproduces TensorFlow's result bit for bit (``tests/test_tf_image.py`` proves it against
TF itself), so the PNASNet-5 eval pipeline can run without TensorFlow and feed identical bytes to both
backends.  The rules, briefly:

* ``convert_image_dtype(uint8 -> float32)`` casts, then *multiplies* by ``float32(1/255)`` (not ``/ 255``).
* ``central_crop`` offsets are ``int((n - n * fraction) / 2)`` computed in double precision.
* TF1 ``resize_bilinear`` (``half_pixel_centers=False``) maps output pixel ``i`` to source ``i * scale``
  with ``scale = in / out`` (or ``(in - 1) / (out - 1)`` with ``align_corners``), all in float32, no
  antialiasing, and interpolates as ``top = tl + (tr - tl) * dx``, ``bottom = bl + (br - bl) * dx``,
  ``out = top + (bottom - top) * dy``.
* ``tf.io.decode_jpeg`` defaults to libjpeg's *fast integer* IDCT (``JDCT_IFAST``) **with** fancy
  (triangle-filter) chroma upsampling.  PIL decodes with the accurate IDCT (``JDCT_ISLOW``) and fancy
  upsampling, which equals TF's ``dct_method='INTEGER_ACCURATE'``; PIL's only fast-IDCT mode ("draft")
  also turns fancy upsampling off.  So for TF's default we let PIL's draft decoder produce the IFAST
  planes and redo libjpeg's fancy upsampling and YCbCr->RGB conversion here, in integers.  Verified
  layouts: 4:4:4, 4:2:2, 4:2:0, grayscale, CMYK (no subsampling), baseline and progressive.  Others
  (4:4:0, 4:1:1, subsampled CMYK) raise and point to ``dct_method='INTEGER_ACCURATE'``, which is
  PIL's own decode (also verified on the layouts above).

``common/`` never imports TensorFlow; this module needs only numpy and PIL.
"""
from __future__ import annotations

import io
import os
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

Size = Union[int, Sequence[int]]

JPEG_DCT_METHODS = ("", "INTEGER_FAST", "INTEGER_ACCURATE")
INCEPTION_CENTRAL_FRACTION = 0.875

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------------
# convert_image_dtype, central_crop
# --------------------------------------------------------------------------------------------------

def convert_image_dtype_uint8_to_float32(image: np.ndarray) -> np.ndarray:
    """``tf.image.convert_image_dtype(image, tf.float32)`` for a uint8 image: values in [0, 1].

    TF casts and then multiplies by the Python double ``1. / 255`` converted to float32; a division by
    255 rounds differently for some values, so the multiplication is kept.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"convert_image_dtype_uint8_to_float32 expects a uint8 image, got dtype {image.dtype}")
    return image.astype(np.float32) * np.float32(1.0 / 255)


def central_crop(image: np.ndarray, central_fraction: float) -> np.ndarray:
    """``tf.image.central_crop`` for an HWC or NHWC array (returns a view).

    TF removes ``int((n - n * fraction) / 2)`` pixels (double-precision arithmetic, truncated) from each
    side, so the crop is ``n - 2 * offset`` long.  For 0.875 the offset is exactly ``n // 16``.
    """
    image = np.asarray(image)
    if image.ndim not in (3, 4):
        raise ValueError(f"central_crop expects an HWC or NHWC image, got shape {image.shape}")
    fraction = float(central_fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"central_fraction must be within (0, 1], got {central_fraction!r}")
    if fraction == 1.0:
        return image
    height, width = image.shape[-3], image.shape[-2]
    top = int((height - height * fraction) / 2)
    left = int((width - width * fraction) / 2)
    return image[..., top:height - top, left:width - left, :]


# --------------------------------------------------------------------------------------------------
# TF1 resize_bilinear
# --------------------------------------------------------------------------------------------------

class BilinearAxisWeights(NamedTuple):
    lower: np.ndarray   # int64 source index below each output position
    upper: np.ndarray   # int64 source index above
    lerp: np.ndarray    # float32 fraction towards ``upper``


def _resize_scale(in_size: int, out_size: int, align_corners: bool) -> np.float32:
    # TF: (align_corners && out > 1) ? (in - 1) / (float)(out - 1) : in / (float)out, a float32 division.
    if align_corners and out_size > 1:
        return np.float32(in_size - 1) / np.float32(out_size - 1)
    return np.float32(in_size) / np.float32(out_size)


def legacy_bilinear_weights(in_size: int, out_size: int, align_corners: bool = False) -> BilinearAxisWeights:
    """Source indices and lerp fractions of TF1's legacy (``half_pixel_centers=False``) scaler on one axis."""
    scale = _resize_scale(in_size, out_size, align_corners)
    source = np.arange(out_size, dtype=np.float32) * scale          # float(i) * scale, rounded once
    source_floor = np.floor(source)
    lower = np.maximum(source_floor.astype(np.int64), 0)
    upper = np.minimum(np.ceil(source).astype(np.int64), in_size - 1)
    # TF never needs this clamp (i * scale < in for every i < out); it only keeps the gather in bounds.
    lower = np.minimum(lower, in_size - 1)
    lerp = (source - source_floor).astype(np.float32)
    return BilinearAxisWeights(lower, upper, lerp)


def _size_pair(size: Size, what: str = "size") -> Tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        height = width = int(size)
    else:
        values = tuple(size)
        if len(values) != 2:
            raise ValueError(f"{what} must be an int or (height, width), got {size!r}")
        height, width = (int(v) for v in values)
    if height < 1 or width < 1:
        raise ValueError(f"{what} must be positive, got {size!r}")
    return height, width


def resize_bilinear_tf1(images: np.ndarray, size: Size, align_corners: bool = False) -> np.ndarray:
    """``tf.compat.v1.image.resize_bilinear(images, size, align_corners)`` in numpy, bit for bit.

    ``images`` is NHWC or HWC of any real dtype (TF casts every sample to float32 first); ``size`` is an
    int or ``(height, width)``.  Returns float32 in the input's layout.

    Bilinear interpolation is separable with TF's operation order: ``top`` and ``bottom`` are horizontal
    lerps of two input rows and do not depend on the output row, so each needed input row is lerped once
    (``horizontal``) and the vertical lerp combines two of those rows.  Every float32 operation is the
    one TF performs, on the same operands, so the result is identical.
    """
    array = np.asarray(images)
    if array.ndim not in (3, 4):
        raise ValueError(f"resize_bilinear_tf1 expects an NHWC or HWC array, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.number) and not np.issubdtype(array.dtype, np.complexfloating)):
        raise TypeError(f"resize_bilinear_tf1 expects real-valued images, got dtype {array.dtype}")
    batch = array if array.ndim == 4 else array[None]
    out_height, out_width = _size_pair(size)
    _, in_height, in_width, _ = batch.shape
    if in_height < 1 or in_width < 1:
        raise ValueError(f"resize_bilinear_tf1 needs a non-empty image, got shape {array.shape}")

    if (out_height, out_width) == (in_height, in_width):
        result = batch.astype(np.float32, copy=True)                 # TF's no-op resize is a plain cast
    else:
        rows = legacy_bilinear_weights(in_height, out_height, align_corners)
        cols = legacy_bilinear_weights(in_width, out_width, align_corners)
        # Cast only the input rows the output reads (a large downscale skips most of the image).
        needed_rows, row_slot = np.unique(np.concatenate([rows.lower, rows.upper]), return_inverse=True)
        band = np.take(batch, needed_rows, axis=1).astype(np.float32, copy=False)
        # In-place updates save temporaries; each step is still the float32 op TF performs:
        # horizontal = left + (right - left) * dx, result = top + (bottom - top) * dy.
        left = np.take(band, cols.lower, axis=2)
        horizontal = np.take(band, cols.upper, axis=2)
        horizontal -= left
        horizontal *= cols.lerp[:, None]
        horizontal += left
        top = np.take(horizontal, row_slot[:out_height], axis=1)
        result = np.take(horizontal, row_slot[out_height:], axis=1)
        result -= top
        result *= rows.lerp[:, None, None]
        result += top
    return result if array.ndim == 4 else result[0]


# --------------------------------------------------------------------------------------------------
# Inception (slim) eval preprocessing
# --------------------------------------------------------------------------------------------------

def inception_eval(image: np.ndarray, size: Optional[Size],
                   central_fraction: Optional[float] = INCEPTION_CENTRAL_FRACTION) -> np.ndarray:
    """slim ``inception_preprocessing.preprocess_for_eval``: float32 HWC in [-1, 1].

    uint8 -> ``convert_image_dtype`` (a float32 input is taken as already in [0, 1], as slim does) ->
    ``central_crop(central_fraction)`` (skipped when it is None or 0) -> TF1 ``resize_bilinear`` to
    ``size`` with ``align_corners=False`` (skipped when ``size`` is None) -> ``(x - 0.5) * 2.0``.
    """
    image = np.asarray(image)
    if image.dtype == np.uint8:
        pixels = convert_image_dtype_uint8_to_float32(image)
    elif image.dtype == np.float32:
        pixels = image
    else:
        raise TypeError(f"inception_eval expects a uint8 or float32 image, got dtype {image.dtype}")
    if central_fraction:
        pixels = central_crop(pixels, central_fraction)
    if size is not None:
        pixels = resize_bilinear_tf1(pixels, size, align_corners=False)
    return (pixels - np.float32(0.5)) * np.float32(2.0)


# --------------------------------------------------------------------------------------------------
# Decoding (PIL), matching tf.io.decode_jpeg / decode_png with channels=3
# --------------------------------------------------------------------------------------------------

def decode_image_file(path: Union[str, os.PathLike], dct_method: str = "") -> np.ndarray:
    """Decode a JPEG or PNG file to uint8 RGB ``(H, W, 3)`` exactly as ``tf.io.decode_image(channels=3)``.

    ``dct_method`` has TF's meaning for JPEGs: ``''`` (TF's default) and ``'INTEGER_FAST'`` are libjpeg's
    fast IDCT, ``'INTEGER_ACCURATE'`` its accurate one; both with fancy chroma upsampling, as in TF.
    EXIF orientation and ICC profiles are ignored, as TF ignores them.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    return decode_image_bytes(data, dct_method=dct_method, name=os.fspath(path))


def decode_image_bytes(data: bytes, dct_method: str = "", name: str = "<bytes>") -> np.ndarray:
    """:func:`decode_image_file` for an encoded image held in memory; ``name`` appears in errors."""
    if dct_method not in JPEG_DCT_METHODS:
        raise ValueError(f"dct_method must be one of {JPEG_DCT_METHODS}, got {dct_method!r}")
    if data.startswith(_JPEG_MAGIC):
        return _decode_jpeg(data, dct_method, name)
    if data.startswith(_PNG_MAGIC):
        return _decode_png(data, name)
    raise ValueError(f"{name}: not a JPEG or PNG image (starts with {bytes(data[:8])!r})")


def _open(data: bytes, name: str, expected_format: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
    except Exception as error:  # PIL raises several types for a damaged header
        raise ValueError(f"{name}: cannot read the {expected_format} header: {error}") from error
    if image.format != expected_format:
        raise ValueError(f"{name}: expected {expected_format}, PIL sees {image.format}")
    return image


def _load(image: Image.Image, name: str) -> np.ndarray:
    try:
        image.load()
    except Exception as error:
        raise ValueError(f"{name}: cannot decode ({error})") from error
    return np.asarray(image)


# ---- JPEG -----------------------------------------------------------------------------------------

def _decode_jpeg(data: bytes, dct_method: str, name: str) -> np.ndarray:
    image = _open(data, name, "JPEG")
    fast_idct = dct_method != "INTEGER_ACCURATE"
    # PIL keeps the SOF components as (id, h_samp, v_samp, quant_table); its comment mislabels h/v.
    sampling = [(h, v) for _, h, v, _ in image.layer]
    max_h = max(h for h, _ in sampling)
    max_v = max(v for _, v in sampling)
    needs_upsampling = any((h, v) != (max_h, max_v) for h, v in sampling)

    if not fast_idct or not needs_upsampling:
        # PIL's default decode is libjpeg's accurate IDCT + fancy upsampling = TF 'INTEGER_ACCURATE'.
        # Without chroma subsampling there is nothing to upsample, so PIL's draft mode (fast IDCT) is
        # exactly TF's default.
        raw_mode = image.tile[0].args[0] if image.tile else None
        if fast_idct:
            _use_fast_idct(image)
        pixels = _load(image, name)
        return _to_rgb_like_tf(image.mode, raw_mode, pixels, image.info, name)

    if image.mode != "RGB" or not _is_ycbcr_coded(image):
        raise ValueError(
            f"{name}: a chroma-subsampled {image.mode} JPEG that is not YCbCr-coded (sampling {sampling}) "
            "cannot be decoded like TF's fast IDCT here; use dct_method='INTEGER_ACCURATE'")
    expansions = [(max_h // h, max_v // v) for h, v in sampling]
    unsupported = [f"{h}x{v}" for (h, v), (eh, ev) in zip(sampling, expansions)
                   if (eh, ev) not in _FANCY_UPSAMPLERS or (max_h % h) or (max_v % v)]
    if unsupported:
        raise ValueError(
            f"{name}: chroma sampling {sampling} (components {unsupported}) is not one of 4:4:4, 4:2:2, 4:2:0, "
            "the layouts verified against TF's fast IDCT; use dct_method='INTEGER_ACCURATE'")

    # Fast IDCT planes, without colour conversion: draft mode replicates subsampled chroma, so every
    # expansion-th sample is the plane as decoded.
    image.draft("YCbCr", None)
    if image.mode != "YCbCr":
        raise ValueError(f"{name}: PIL refused a raw YCbCr decode (mode {image.mode})")
    _use_fast_idct(image)
    replicated = _load(image, name)
    height, width = replicated.shape[:2]
    planes = []
    for channel, (expand_h, expand_v) in enumerate(expansions):
        plane = replicated[::expand_v, ::expand_h, channel]
        upsample = _FANCY_UPSAMPLERS[(expand_h, expand_v)]
        planes.append(upsample(plane)[:height, :width])
    return _ycbcr_to_rgb(*planes)


def _use_fast_idct(image: Image.Image) -> None:
    """Make PIL's next ``load()`` use libjpeg's fast IDCT (JDCT_IFAST) at full scale.

    PIL's JPEG decoder takes ``decoderconfig = (scale, draft)``; ``draft=1`` selects JDCT_FASTEST
    (= JDCT_IFAST in libjpeg-turbo) and turns fancy upsampling off.  ``Image.draft()`` itself always
    passes ``draft=0``, so the tuple is set directly.  The TF comparison tests guard this.
    """
    image.decoderconfig = (1, 1)


def _is_ycbcr_coded(image: Image.Image) -> bool:
    """libjpeg's guess of a 3-component JPEG's colour space (``default_decompress_parms``)."""
    if "jfif" in image.info:
        return True
    if "adobe" in image.info:
        return image.info.get("adobe_transform", 1) != 0
    ids = tuple(component[0] for component in image.layer)
    return ids != (ord("R"), ord("G"), ord("B"))


def _to_rgb_like_tf(mode: str, raw_mode: Optional[str], pixels: np.ndarray, info: dict, name: str) -> np.ndarray:
    if mode == "RGB":
        return np.ascontiguousarray(pixels)
    if mode == "L":
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if mode == "CMYK":
        # TF asks libjpeg for CMYK and converts it itself (jpeg_mem.cc).  PIL inverts Adobe CMYK on
        # unpacking (raw mode 'CMYK;I'), so undo that to get libjpeg's samples back.
        samples = pixels.astype(np.int32)
        if raw_mode == "CMYK;I":
            samples = 255 - samples
        cmy, black = samples[:, :, :3], samples[:, :, 3:]
        if "adobe" in info:
            rgb = black * cmy // 255
        else:
            rgb = (255 - black) * (255 - cmy) // 255
        return rgb.astype(np.uint8)
    raise ValueError(f"{name}: unsupported JPEG mode {mode}")


def _edge_neighbours(plane: np.ndarray, axis: int) -> Tuple[np.ndarray, np.ndarray]:
    """(previous, next) samples along ``axis`` with the edge sample repeated, as libjpeg's context rows."""
    lines = np.moveaxis(plane, axis, 0)
    previous = np.concatenate([lines[:1], lines[:-1]])
    following = np.concatenate([lines[1:], lines[-1:]])
    return np.moveaxis(previous, 0, axis), np.moveaxis(following, 0, axis)


def _interleave(even: np.ndarray, odd: np.ndarray, axis: int) -> np.ndarray:
    stacked = np.stack([even, odd], axis=axis + 1)
    shape = list(even.shape)
    shape[axis] *= 2
    return stacked.reshape(shape)


def _upsample_h2v1(plane: np.ndarray) -> np.ndarray:
    """libjpeg ``h2v1_fancy_upsample``: outputs at 1/4 and 3/4 between centres, biases 1 and 2."""
    if plane.shape[1] <= 2:  # libjpeg falls back to replication for such narrow planes
        return np.repeat(plane, 2, axis=1)
    samples = plane.astype(np.int32)
    left, right = _edge_neighbours(samples, axis=1)
    even = (3 * samples + left + 1) >> 2
    odd = (3 * samples + right + 2) >> 2
    return _interleave(even, odd, axis=1).astype(np.uint8)


def _upsample_h2v2(plane: np.ndarray) -> np.ndarray:
    """libjpeg ``h2v2_fancy_upsample``: 9/16, 3/16, 3/16, 1/16 weights, biases 8 and 7 (ordered dither)."""
    if plane.shape[1] <= 2:
        return np.repeat(np.repeat(plane, 2, axis=0), 2, axis=1)
    samples = plane.astype(np.int32)
    above, below = _edge_neighbours(samples, axis=0)
    output_rows = []
    for column_sums in (3 * samples + above, 3 * samples + below):   # output rows 2i and 2i+1
        left, right = _edge_neighbours(column_sums, axis=1)
        even = (3 * column_sums + left + 8) >> 4
        odd = (3 * column_sums + right + 7) >> 4
        output_rows.append(_interleave(even, odd, axis=1))
    return _interleave(output_rows[0], output_rows[1], axis=0).astype(np.uint8)


_FANCY_UPSAMPLERS = {
    (1, 1): lambda plane: plane,
    (2, 1): _upsample_h2v1,
    (2, 2): _upsample_h2v2,
}


def _fixed(value: float) -> int:
    return int(value * (1 << 16) + 0.5)   # libjpeg FIX(): 16 fractional bits, rounded


def _ycbcr_to_rgb(luma: np.ndarray, blue_diff: np.ndarray, red_diff: np.ndarray) -> np.ndarray:
    """libjpeg ``ycc_rgb_convert``: 16-bit fixed point with its exact rounding, clamped to [0, 255]."""
    half = 1 << 15
    y = luma.astype(np.int32)
    cb = blue_diff.astype(np.int32) - 128
    cr = red_diff.astype(np.int32) - 128
    rgb = np.empty(luma.shape + (3,), dtype=np.uint8)
    # |products| < 2^24, so int32 holds them; >> is libjpeg's arithmetic RIGHT_SHIFT (floor).
    rgb[:, :, 0] = np.clip(y + ((_fixed(1.40200) * cr + half) >> 16), 0, 255)
    rgb[:, :, 1] = np.clip(y + ((half - _fixed(0.34414) * cb - _fixed(0.71414) * cr) >> 16), 0, 255)
    rgb[:, :, 2] = np.clip(y + ((_fixed(1.77200) * cb + half) >> 16), 0, 255)
    return rgb


# ---- PNG ------------------------------------------------------------------------------------------

def _decode_png(data: bytes, name: str) -> np.ndarray:
    image = _open(data, name, "PNG")
    mode = image.mode
    pixels = _load(image, name)
    if mode == "RGB":
        return np.ascontiguousarray(pixels)
    if mode == "RGBA":
        return np.ascontiguousarray(pixels[:, :, :3])        # TF strips alpha for channels=3
    if mode in ("L", "LA", "1"):
        gray = pixels if pixels.ndim == 2 else pixels[:, :, 0]
        gray = gray.astype(np.uint8) * (255 if mode == "1" else 1)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("P", "PA"):
        return np.asarray(image.convert("RGB"))               # palette expansion, alpha dropped
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grayscale: TF keeps the high byte; PIL's own conversion would clip instead.
        gray = (pixels.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    raise ValueError(f"{name}: unsupported PNG mode {mode}")
