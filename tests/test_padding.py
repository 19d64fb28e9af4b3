"""``common/padding.py`` against TensorFlow: numpy-pad with ``same_pad_2d`` + a VALID op == TF's SAME op.

Inputs and kernels are small integers, so every float32 sum is exact and the comparison is bitwise
whatever order TF sums in.  Max pools use negative inputs, so padding with 0 instead of -inf would show.
TensorFlow is imported inside the ``tf`` fixture only (after conftest has imported paddle/torchvision).
"""
import importlib
import numpy as np
import pytest

from common.padding import conv_output_size, is_symmetric_same, same_pad_1d, same_pad_2d, same_pad_total

SIZES = list(range(1, 41)) + [224, 323, 331]
KERNELS = (1, 2, 3, 5, 7)
# TF's SAME conv takes dilation > 1 only with stride 1.
STRIDE_DILATION = ((1, 1), (2, 1), (3, 1), (1, 2))


@pytest.fixture(scope="module")
def tf():
    return importlib.import_module("tensorflow")


def size_pairs():
    """(height, width): every size on both axes, paired with a different size on the other."""
    return [(height, SIZES[(index + 17) % len(SIZES)]) for index, height in enumerate(SIZES)]


def numpy_pad(x, pads, value=0.0):
    top, bottom, left, right = pads
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def assert_same_equals_padded_valid(same, valid, what):
    same, valid = same.numpy(), valid.numpy()
    assert same.shape == valid.shape, f"{what}: SAME {same.shape} vs padded VALID {valid.shape}"
    assert np.array_equal(same, valid), f"{what}: max-abs {np.abs(same - valid).max()}"


@pytest.mark.parametrize("kernel", KERNELS)
def test_same_pad_reproduces_tf_same_conv_depthwise_and_max_pool(tf, kernel):
    rng = np.random.default_rng(kernel)
    conv_kernel = rng.integers(-4, 5, (kernel, kernel, 2, 1)).astype(np.float32)
    depthwise_kernel = rng.integers(-4, 5, (kernel, kernel, 2, 1)).astype(np.float32)
    checked = wrong_split_caught = zero_pad_caught = 0
    for stride, dilation in STRIDE_DILATION:
        for height, width in size_pairs():
            what = f"{height}x{width} k={kernel} s={stride} d={dilation}"
            x = rng.integers(-8, 9, (1, height, width, 2)).astype(np.float32)
            pads = same_pad_2d(height, width, kernel, stride, dilation)
            padded = numpy_pad(x, pads)

            same_conv = tf.nn.conv2d(x, conv_kernel, stride, "SAME", dilations=dilation)
            valid = tf.nn.conv2d(padded, conv_kernel, stride, "VALID", dilations=dilation)
            assert_same_equals_padded_valid(same_conv, valid, f"conv2d {what}")
            assert same_conv.shape[1:3] == (conv_output_size(height, kernel, stride, dilation, "SAME"),
                                            conv_output_size(width, kernel, stride, dilation, "SAME")), what

            same = tf.nn.depthwise_conv2d(x, depthwise_kernel, [1, stride, stride, 1], "SAME",
                                          dilations=[dilation, dilation])
            valid = tf.nn.depthwise_conv2d(padded, depthwise_kernel, [1, stride, stride, 1], "VALID",
                                           dilations=[dilation, dilation])
            assert_same_equals_padded_valid(same, valid, f"depthwise_conv2d {what}")

            # The comparison is sensitive: TF's odd pixel put top/left instead of bottom/right would fail.
            top, bottom, left, right = pads
            if top != bottom or left != right:
                swapped = numpy_pad(x, (bottom, top, right, left))
                flipped = tf.nn.conv2d(swapped, conv_kernel, stride, "VALID", dilations=dilation)
                assert not np.array_equal(flipped.numpy(), same_conv.numpy()), f"swapped split undetected: {what}"
                wrong_split_caught += 1

            if dilation == 1:   # tf.nn.max_pool2d has no dilation
                negative = -1.0 - np.abs(x)
                same = tf.nn.max_pool2d(negative, kernel, stride, "SAME")
                valid = tf.nn.max_pool2d(numpy_pad(negative, pads, -np.inf), kernel, stride, "VALID")
                assert_same_equals_padded_valid(same, valid, f"max_pool2d {what}")
                if any(pads):
                    zero_padded = tf.nn.max_pool2d(numpy_pad(negative, pads, 0.0), kernel, stride, "VALID")
                    assert not np.array_equal(zero_padded.numpy(), same.numpy()), f"-inf padding matters: {what}"
                    zero_pad_caught += 1
            checked += 1
    print(f"SAME padding k={kernel}: {checked} (size, stride, dilation) cases, conv2d/depthwise/max_pool max-abs 0.0; "
          f"a swapped split would fail {wrong_split_caught} of them, zero-padded max pool {zero_pad_caught}")


@pytest.mark.parametrize("kernel", KERNELS)
def test_conv_output_size_valid_and_explicit_padding_match_tf(tf, kernel):
    """(SAME output sizes are checked against TF in the test above.)"""
    weights = np.ones((kernel, kernel, 1, 1), np.float32)
    for stride, dilation in STRIDE_DILATION:
        effective = (kernel - 1) * dilation + 1
        for size in SIZES:   # VALID along the height only, so a short width cannot fail the op
            if size >= effective:
                x = np.zeros((1, size, effective, 1), np.float32)
                valid = tf.nn.conv2d(x, weights, stride, "VALID", dilations=dilation).shape[1]
                assert conv_output_size(size, kernel, stride, dilation, "VALID") == valid
            else:   # TF gives an empty map or "output size would be negative"; we refuse, naming the size
                with pytest.raises(ValueError, match=f"input of size {size} is too small for kernel {kernel}"):
                    conv_output_size(size, kernel, stride, dilation, "VALID")
    # Symmetric integer padding, as TF's explicit padding.
    for size in (1, 2, 7, 8, 42, 331):
        for pad in range(4):
            for stride in (1, 2, 3):
                if size + 2 * pad < kernel:
                    continue
                x = np.zeros((1, size, size, 1), np.float32)
                shape = tf.nn.conv2d(x, weights, stride, [[0, 0], [pad, pad], [pad, pad], [0, 0]]).shape
                assert conv_output_size(size, kernel, stride, 1, pad) == shape[1], (size, pad, stride)


def test_same_pad_arithmetic_facts():
    # TF puts the odd pixel after: even input, stride 2, odd kernel -> asymmetric.
    assert same_pad_2d(42, 42, 3, 2) == (0, 1, 0, 1)
    assert same_pad_2d(42, 42, 5, 2) == (1, 2, 1, 2)
    assert same_pad_2d(42, 42, 7, 2) == (2, 3, 2, 3)
    assert same_pad_2d(21, 21, 3, 2) == (1, 1, 1, 1)
    assert same_pad_1d(10, 2) == (0, 1)
    assert same_pad_1d(10, 3, 1, 2) == (2, 2)
    assert same_pad_2d(10, 11, (3, 1), (1, 2)) == (1, 1, 0, 0)
    assert all(same_pad_total(n, 1, 2) == 0 for n in range(1, 100))     # 1x1 stride-2: never padded
    assert all(same_pad_total(n, k, 1) == k - 1 for n in range(1, 50) for k in KERNELS)
    # PNASNet: the stride-2 inputs at 331 are 165, 83, 42, 21 (42 is asymmetric); at 323 all odd.
    for kernel in (3, 5, 7):
        assert [is_symmetric_same(n, n, kernel, 2) for n in (165, 83, 42, 21)] == [True, True, False, True]
        assert all(is_symmetric_same(n, n, kernel, 2) for n in (161, 81, 41, 21))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="bad SAME arguments: size=0 kernel=3"):
        same_pad_total(0, 3)
    with pytest.raises(ValueError, match="kernel=0"):
        same_pad_1d(5, 0)
    with pytest.raises(ValueError, match="stride=0"):
        same_pad_2d(5, 5, 3, 0)
    with pytest.raises(ValueError, match="dilation=0"):
        same_pad_2d(5, 5, 3, 1, (1, 0))
    with pytest.raises(ValueError, match=r"expected an int or a pair, got \(3, 3, 3\)"):
        same_pad_2d(5, 5, (3, 3, 3))
    with pytest.raises(ValueError, match="bad conv_output_size arguments: size=10 kernel=3 stride=0"):
        conv_output_size(10, 3, stride=0)                  # used to be ZeroDivisionError
    with pytest.raises(ValueError, match="size=0"):
        conv_output_size(0, 3, padding="SAME")             # used to return 0
    with pytest.raises(ValueError, match="padding must be 'SAME', 'VALID' or an int >= 0, got 'same'"):
        conv_output_size(10, 3, padding="same")
    with pytest.raises(ValueError, match="got -1"):
        conv_output_size(10, 3, padding=-1)
    with pytest.raises(ValueError, match="got True"):
        conv_output_size(10, 3, padding=True)
    with pytest.raises(ValueError, match=r"input of size 2 is too small for kernel 3 \(dilation 1, padding 'VALID'\)"):
        conv_output_size(2, 3, padding="VALID")
    assert conv_output_size(10, 3, padding=np.int64(1)) == 10
