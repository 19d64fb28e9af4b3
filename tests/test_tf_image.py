"""``common/tf_image.py`` against TensorFlow itself: every comparison is bitwise (max-abs 0.0).

Real photos come from scikit-image; JPEG/PNG files are written with PIL into a temporary folder.
TensorFlow is imported inside the ``tf`` fixture only (after conftest has imported paddle/torchvision).
"""
import io
import time

import numpy as np
import pytest
from PIL import Image

from common import tf_image
from common.tf_image import (central_crop, convert_image_dtype_uint8_to_float32, decode_image_bytes,
                             decode_image_file, inception_eval, resize_bilinear_tf1)

import skimage.data as skimage_data  # noqa: E402  (real photos shipped by scikit-image)

PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket")   # 512x512, 400x600, 300x451, 427x640
# Up- and down-scaling, odd and even, square and not, degenerate 1-pixel axes.
RESIZE_SIZES = (331, 323, 224, 299, 400, 17, 1, (1000, 700), (700, 1000), (5, 513), (331, 2))


@pytest.fixture(scope="module")
def tf():
    import tensorflow  # imported late, inside the test, after paddle/torchvision (conftest.py)

    return tensorflow


@pytest.fixture(scope="module")
def photos():
    return {name: getattr(skimage_data, name)() for name in PHOTO_NAMES}


def max_abs(ours, reference) -> float:
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    return float(np.max(np.abs(ours.astype(np.float64) - reference.astype(np.float64)), initial=0.0))


def assert_bitwise(ours, reference, what):
    assert ours.dtype == reference.dtype, f"{what}: dtype {ours.dtype} vs TF {reference.dtype}"
    assert ours.shape == reference.shape, f"{what}: shape {ours.shape} vs TF {reference.shape}"
    assert np.array_equal(ours, reference), f"{what}: max-abs {max_abs(ours, reference)}"


def as_pair(size):
    return (size, size) if isinstance(size, int) else size


# ---------------------------------------------------------------------------------------------------
# resize_bilinear (TF1 legacy)
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("align_corners", [False, True])
def test_resize_bilinear_matches_tf_on_photos(tf, photos, align_corners):
    worst = 0.0
    for name, photo in photos.items():
        figures = []
        for size in RESIZE_SIZES:
            reference = tf.compat.v1.image.resize_bilinear(photo[None], as_pair(size),
                                                           align_corners=align_corners).numpy()[0]
            ours = resize_bilinear_tf1(photo, size, align_corners=align_corners)
            assert_bitwise(ours, reference, f"{name} {photo.shape} -> {size} align_corners={align_corners}")
            figures.append(max_abs(ours, reference))
        worst = max(worst, max(figures))
        print(f"resize_bilinear {name} {photo.shape[:2]} align_corners={align_corners}: "
              f"max-abs {max(figures)} over sizes {list(RESIZE_SIZES)}")
    assert worst == 0.0


def test_resize_bilinear_batch_and_dtypes_match_tf(tf, photos):
    # A batch of four 300x400 crops, fed as uint8 and as float32/float64/float16/uint16/int32.
    batch_uint8 = np.stack([photo[:300, :400] for photo in photos.values()])
    rng = np.random.default_rng(0)
    signed_floats = (rng.standard_normal((3, 37, 53, 2)) * 100).astype(np.float32)   # negatives, 2 channels
    inputs = {
        "uint8": batch_uint8,
        "float32 [0,1]": convert_image_dtype_uint8_to_float32(batch_uint8),
        "float32 signed": signed_floats,
        "float64": signed_floats.astype(np.float64) / 3.0,   # TF rounds each sample to float32 first
        "float16": signed_floats.astype(np.float16),
        "uint16": batch_uint8.astype(np.uint16) * 257,
        "int32": (signed_floats * 1000).astype(np.int32),
    }
    for label, batch in inputs.items():
        for size in (331, 224, 17, (45, 106), batch.shape[1:3]):
            for align_corners in (False, True):
                reference = tf.compat.v1.image.resize_bilinear(batch, as_pair(size), align_corners=align_corners)
                ours = resize_bilinear_tf1(batch, size, align_corners=align_corners)
                assert_bitwise(ours, reference.numpy(), f"{label} batch {batch.shape} -> {size} ac={align_corners}")
        print(f"resize_bilinear batch {label} {batch.shape}: max-abs 0.0")
    # HWC and NHWC agree image by image.
    batched = resize_bilinear_tf1(batch_uint8, 323)
    for index, image in enumerate(batch_uint8):
        assert np.array_equal(resize_bilinear_tf1(image, 323), batched[index])


def test_resize_bilinear_is_tf1_legacy_not_half_pixel(photos):
    """The legacy scaler samples source ``i * in/out``: corner pixels are kept, the image shifts up-left."""
    photo = photos["chelsea"][:, :450]
    out = resize_bilinear_tf1(photo, (150, 225))          # exact 2x downscale: source pixels 0, 2, 4, ...
    assert np.array_equal(out, photo[::2, ::2].astype(np.float32))
    weights = tf_image.legacy_bilinear_weights(438, 331)
    assert weights.lerp.dtype == np.float32
    assert (weights.lower[0], weights.upper[0], weights.lerp[0]) == (0, 0, 0.0)
    assert abs(float(weights.lower[330] + weights.lerp[330]) - 330 * 438 / 331) < 1e-4   # 436.68, not 436.84


def test_resize_bilinear_speed(photos):
    image = photos["rocket"][:375, :500]                    # a typical ImageNet validation size
    inception_eval(image, 331)
    start = time.perf_counter()
    repeats = 10
    for _ in range(repeats):
        inception_eval(image, 331)
    per_image_ms = (time.perf_counter() - start) / repeats * 1e3
    print(f"inception_eval 375x500 -> 331x331: {per_image_ms:.1f} ms per image")
    assert per_image_ms < 250, "the vectorised resize got slow"


# ---------------------------------------------------------------------------------------------------
# convert_image_dtype, central_crop, inception_eval
# ---------------------------------------------------------------------------------------------------

def test_convert_image_dtype_matches_tf_for_every_value(tf):
    every_value = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    reference = tf.image.convert_image_dtype(every_value, tf.float32).numpy()
    ours = convert_image_dtype_uint8_to_float32(every_value)
    assert_bitwise(ours, reference, "convert_image_dtype uint8 -> float32")
    divided = every_value.astype(np.float32) / np.float32(255)
    differing = int(np.count_nonzero(divided != reference))
    print(f"convert_image_dtype: max-abs 0.0 over all 256 values; x / 255 would differ on {differing} of them")
    assert differing > 0, "TF multiplies by float32(1/255); a division is not the same op"


@pytest.mark.parametrize("fraction", [0.875, 0.5, 0.33, 0.9, 0.1, 0.999, 1.0])
def test_central_crop_matches_tf(tf, fraction):
    rng = np.random.default_rng(1)
    for height, width in [(375, 500), (500, 375), (331, 331), (17, 3), (1, 1), (438, 329), (97, 1000)]:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        assert_bitwise(central_crop(image, fraction), tf.image.central_crop(image, fraction).numpy(),
                       f"central_crop {height}x{width} fraction {fraction}")
        batch = np.stack([image, image[::-1]])
        assert_bitwise(central_crop(batch, fraction), tf.image.central_crop(batch, fraction).numpy(),
                       f"central_crop batch {height}x{width} fraction {fraction}")
    assert central_crop(np.zeros((375, 500, 3)), 0.875).shape == (375 - 2 * 23, 500 - 2 * 31, 3)


def tf_inception_eval(tf, image, size, central_fraction=0.875):
    """slim ``preprocess_for_eval`` written with TF ops."""
    pixels = tf.image.convert_image_dtype(image, dtype=tf.float32)
    pixels = tf.image.central_crop(pixels, central_fraction=central_fraction)
    pixels = tf.compat.v1.image.resize_bilinear(tf.expand_dims(pixels, 0), [size, size], align_corners=False)
    pixels = tf.squeeze(pixels, [0])
    return tf.multiply(tf.subtract(pixels, 0.5), 2.0).numpy()


@pytest.mark.parametrize("size", [331, 323, 224])
def test_inception_eval_matches_tf_pipeline(tf, photos, size):
    images = dict(photos)
    images["rocket 375x500"] = photos["rocket"][:375, :500]
    for name, image in images.items():
        reference = tf_inception_eval(tf, image, size)
        ours = inception_eval(image, size)
        assert_bitwise(ours, reference, f"inception_eval {name} -> {size}")
        assert -1.0 <= ours.min() and ours.max() <= 1.0
    print(f"inception_eval at {size}: max-abs 0.0 on {len(images)} photos")


def test_inception_eval_options():
    image = np.full((64, 48, 3), 255, np.uint8)
    assert inception_eval(image, None, central_fraction=None).shape == (64, 48, 3)
    assert inception_eval(image, (20, 30)).shape == (20, 30, 3)
    assert np.all(inception_eval(image, 7) == 1.0)
    as_float = convert_image_dtype_uint8_to_float32(image)
    assert np.array_equal(inception_eval(as_float, 7), inception_eval(image, 7))


# ---------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------

JPEG_SUBSAMPLINGS = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


@pytest.fixture(scope="module")
def image_files(tmp_path_factory, photos):
    """JPEGs at several qualities and chroma layouts, progressive, gray, CMYK, tiny; PNGs of several modes."""
    folder = tmp_path_factory.mktemp("tf_image_files")
    files = {"jpeg": [], "png": []}

    def save(image, filename, kind, **options):
        path = folder / filename
        image.save(path, **options)
        files[kind].append(path)

    for name, photo in photos.items():
        image = Image.fromarray(photo)
        for quality in (50, 75, 95):
            for layout, code in JPEG_SUBSAMPLINGS.items():
                save(image, f"{name}_q{quality}_{layout.replace(':', '')}.jpg", "jpeg", quality=quality,
                     subsampling=code)
        save(image, f"{name}_progressive.jpg", "jpeg", quality=85, progressive=True)
        save(image, f"{name}.png", "png")
    chelsea = Image.fromarray(photos["chelsea"])
    save(chelsea.convert("L"), "chelsea_gray.jpg", "jpeg", quality=90)
    save(chelsea.convert("CMYK"), "chelsea_cmyk.jpg", "jpeg", quality=90)
    for height, width, code in [(3, 3, 2), (7, 5, 2), (17, 33, 2), (9, 4, 1), (1, 9, 2)]:
        save(Image.fromarray(photos["chelsea"][:height, :width]), f"tiny_{height}x{width}_s{code}.jpg", "jpeg",
             quality=90, subsampling=code)
    for mode in ("RGBA", "L", "LA", "P", "1"):
        save(chelsea.convert(mode), f"chelsea_{mode}.png", "png")
    sixteen_bit = photos["chelsea"][:, :, 0].astype(np.uint16) * 257 + np.arange(451, dtype=np.uint16)
    save(Image.fromarray(sixteen_bit), "chelsea_gray16.png", "png")
    return files


def test_decode_jpeg_matches_tf_default_and_accurate(tf, image_files):
    plain_pil_vs_tf_default = []
    for path in image_files["jpeg"]:
        contents = path.read_bytes()
        for dct_method in ("", "INTEGER_FAST", "INTEGER_ACCURATE"):
            reference = tf.io.decode_jpeg(contents, channels=3, dct_method=dct_method).numpy()
            assert_bitwise(decode_image_file(path, dct_method=dct_method), reference,
                           f"{path.name} dct_method={dct_method!r}")
        plain = np.asarray(Image.open(path).convert("RGB"))
        plain_pil_vs_tf_default.append((path.name, max_abs(plain, tf.io.decode_jpeg(contents, channels=3).numpy())))
    print(f"decode_jpeg: {len(image_files['jpeg'])} files x 3 dct methods, max-abs 0.0 against TF")
    worst_name, worst = max(plain_pil_vs_tf_default, key=lambda item: item[1])
    print(f"  (plain PIL decode vs TF default: max-abs up to {worst:.0f} on {worst_name}; "
          "PIL uses the accurate IDCT)")
    assert worst > 0, "plain PIL would match TF's default; the fast-IDCT emulation is then unnecessary"


def test_decode_png_matches_tf(tf, image_files):
    for path in image_files["png"]:
        reference = tf.io.decode_png(path.read_bytes(), channels=3).numpy()
        assert_bitwise(decode_image_file(path), reference, path.name)
    # 16-bit RGB, written by TF itself (PIL cannot write it).
    wide = np.arange(40 * 30 * 3, dtype=np.uint16).reshape(40, 30, 3) * 53
    contents = tf.io.encode_png(wide).numpy()
    assert_bitwise(decode_image_bytes(contents), tf.io.decode_png(contents, channels=3).numpy(), "16-bit RGB PNG")
    print(f"decode_png: {len(image_files['png']) + 1} files, max-abs 0.0 against TF")


def test_decode_then_inception_eval_matches_tf_end_to_end(tf, image_files):
    path = next(p for p in image_files["jpeg"] if p.name == "coffee_q75_420.jpg")
    reference = tf_inception_eval(tf, tf.io.decode_jpeg(path.read_bytes(), channels=3), 331)
    assert_bitwise(inception_eval(decode_image_file(path), 331), reference, f"{path.name} file -> 331 tensor")


# ---------------------------------------------------------------------------------------------------
# Errors name what is wrong
# ---------------------------------------------------------------------------------------------------

def test_bad_arguments_are_named(tmp_path):
    image = np.zeros((10, 12, 3), np.uint8)
    with pytest.raises(ValueError, match=r"NHWC or HWC.*\(10, 12\)"):
        resize_bilinear_tf1(image[:, :, 0], 5)
    with pytest.raises(ValueError, match="size must be positive"):
        resize_bilinear_tf1(image, (0, 5))
    with pytest.raises(ValueError, match=r"\(height, width\)"):
        resize_bilinear_tf1(image, (5, 5, 5))
    with pytest.raises(ValueError, match="non-empty"):
        resize_bilinear_tf1(np.zeros((0, 4, 3)), 5)
    with pytest.raises(TypeError, match="real-valued.*complex"):
        resize_bilinear_tf1(image.astype(np.complex64), 5)
    with pytest.raises(TypeError, match="uint8.*float32"):
        convert_image_dtype_uint8_to_float32(image.astype(np.float32))
    with pytest.raises(ValueError, match=r"within \(0, 1\].*1.5"):
        central_crop(image, 1.5)
    with pytest.raises(ValueError, match=r"within \(0, 1\]"):
        central_crop(image, 0.0)
    with pytest.raises(TypeError, match="uint8 or float32.*float64"):
        inception_eval(image.astype(np.float64), 5)
    with pytest.raises(ValueError, match="dct_method must be one of"):
        decode_image_bytes(b"", dct_method="FLOAT")
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_bytes(b"hello world")
    with pytest.raises(ValueError, match=r"notes\.txt: not a JPEG or PNG"):
        decode_image_file(not_an_image)
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buffer, format="JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[:200])
    with pytest.raises(ValueError, match=r"truncated\.jpg"):
        decode_image_file(truncated)
