"""Quantizer round trip and bit packing, for every Q."""

import numpy as np
import pytest

from tinycl.errors import ConfigError
from tinycl.quant.packing import pack_codes, packed_nbytes, read_codes, unpack_codes, write_codes
from tinycl.quant.qparams import choose_qparams, dequantize, quantize


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("axis", [None, 0])
def test_round_trip_within_half_step(bits, signed, axis):
    rng = np.random.default_rng(bits)
    x = rng.gamma(2.0, 1.0, size=(50, 4, 3, 3)).astype(np.float32)
    if signed:
        x -= 2.0
    scale, zero = choose_qparams(x, bits, axis=axis)
    if not signed:
        assert np.all(zero == 0), "non-negative data must get zero point 0"
    shape = (1, -1, 1, 1) if axis == 0 else ()
    s, z = scale.reshape(shape), zero.reshape(shape)
    codes = quantize(x, s, z, bits)
    assert codes.max() <= 2**bits - 1
    err = np.abs(dequantize(codes, s, z) - x)
    assert np.all(err <= s / 2 + 1e-6 * np.abs(x).max())


@pytest.mark.parametrize("method", ["percentile", "mse"])
def test_narrower_ranges_clip_rare_large_values(method):
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(2000, 8))).astype(np.float32)
    x[0, 0] = 50.0  # one rare outlier
    s_max, _ = choose_qparams(x, 3, method="max")
    s_new, _ = choose_qparams(x, 3, method=method)
    assert s_new < s_max
    mse = {}
    for name, s in (("max", s_max), (method, s_new)):
        mse[name] = np.mean((dequantize(quantize(x, s, 0, 3), s, 0) - x) ** 2)
    assert mse[method] < mse["max"]


def test_bad_bits():
    with pytest.raises(ConfigError, match="allowed: 1..8"):
        choose_qparams(np.ones(3), 9)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", [1, 3, 7, 8, 13, 101])
def test_pack_unpack_exact(bits, n):
    rng = np.random.default_rng(bits * 1000 + n)
    codes = rng.integers(0, 2**bits, size=n).astype(np.uint8)
    buf = pack_codes(codes, bits)
    assert buf.nbytes == packed_nbytes(n, bits) == -(-n * bits // 8)
    np.testing.assert_array_equal(unpack_codes(buf, bits, n), codes)
    # random-access reads and writes at odd offsets
    for start in range(0, n, max(1, n // 4)):
        np.testing.assert_array_equal(read_codes(buf, start, n - start, bits), codes[start:])
    new = rng.integers(0, 2**bits, size=max(1, n // 2)).astype(np.uint8)
    start = n - len(new)
    write_codes(buf, start, new, bits)
    codes[start:] = new
    np.testing.assert_array_equal(unpack_codes(buf, bits, n), codes)


def test_pack_layout_lsb_first():
    # code k at bits [kQ, (k+1)Q), LSB first: the layout the C runtime shares
    assert pack_codes(np.array([1, 2, 3], np.uint8), 2).tolist() == [0b111001]
    assert pack_codes(np.array([5, 3], np.uint8), 3).tolist() == [0b011101]
