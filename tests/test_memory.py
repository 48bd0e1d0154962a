"""Replay memory: exact byte count, stored values, insertion policies."""

import numpy as np
import pytest

from tinycl.errors import ConfigError
from tinycl.memory import BITS, POLICIES, ReplayMemory, check_bits, nicv2_policy


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_nbytes_is_exact(bits, granularity):
    shape = (3, 5, 7)  # odd sizes: slots straddle bytes for most Q
    n = 11
    mem = ReplayMemory(n, shape, bits, granularity=granularity)
    count = n * 3 * 5 * 7
    codes = count * 4 if bits == 32 else -(-count * bits // 8)
    channels = 3 if granularity == "channel" else 1
    qparams = 0 if bits == 32 else channels * (4 + 1)
    assert mem.codes_nbytes == codes == mem.buffer.nbytes
    assert mem.nbytes == codes + qparams + mem.labels.nbytes
    assert ReplayMemory.bytes_for(n, shape, bits, granularity=granularity) == mem.nbytes
    assert ReplayMemory.capacity_for(mem.nbytes, shape, bits, granularity=granularity) == n
    assert ReplayMemory.capacity_for(mem.nbytes - 1, shape, bits, granularity=granularity) == n - 1
    rng = np.random.default_rng(0)
    mem.write(np.arange(n), rng.random((n, *shape)).astype(np.float32), rng.integers(0, 10, n))
    if bits != 32:
        assert mem.scale_.nbytes + mem.zero_point_.nbytes == qparams


@pytest.mark.parametrize("bits", BITS)
def test_stored_values_round_trip(bits):
    rng = np.random.default_rng(bits)
    x = rng.random((9, 2, 3, 3)).astype(np.float32) * 6
    mem = ReplayMemory(9, (2, 3, 3), bits, granularity="channel").calibrate(x)
    order = rng.permutation(9)
    mem.write(order, x[order], np.arange(9)[order])
    got, y = mem.read(np.arange(9))
    np.testing.assert_array_equal(y, np.arange(9))
    if bits == 32:
        np.testing.assert_array_equal(got, x)
    else:
        step = mem.scale_.reshape(1, -1, 1, 1)
        assert np.all(np.abs(got - x) <= step / 2 + 1e-5)
        np.testing.assert_array_equal(mem.codes(), mem.encode(x))


def test_bad_config():
    with pytest.raises(ConfigError, match="capacity"):
        ReplayMemory(0, (4,), 8)
    with pytest.raises(ConfigError, match="32, 8, 7"):
        ReplayMemory(4, (4,), 9)


@pytest.mark.parametrize("bad", [0, 9, 16, 33, True, 8.5, "8"])
def test_one_bits_check_for_every_caller(bad):
    # the memory, its size formula and (through check_bits) the config and the cost model refuse the same values
    assert [check_bits(b) for b in BITS] == list(BITS)
    for call in (lambda: check_bits(bad, "memory.bits"), lambda: ReplayMemory(4, (4,), bad),
                 lambda: ReplayMemory.bytes_for(4, (4,), bad)):
        with pytest.raises(ConfigError, match=r"must be one of 32, 8, 7, 6, 5, 4, 3, 2, 1 \(32 = fp32\)"):
            call()


def _fill(policy, capacity, sizes, rng):
    mem = ReplayMemory(capacity, (1,), 32)
    log = []
    for i, (n, label) in enumerate(sizes):
        y = np.full(n, label)
        new, slots = policy(mem, y, i, rng)
        assert len(set(slots.tolist())) == len(slots), "a slot is written once per update"
        mem.write(slots, np.full((len(new), 1), i, np.float32), y[new])
        mem.seen_ += n
        log.append((len(new), mem.size))
    return mem, log


def test_nicv2_counts():
    # DESIGN.md: h = min(N // (i + 1), n_new); batch 0 fills the memory
    rng = np.random.default_rng(0)
    mem, log = _fill(nicv2_policy, 1500, [(3000, 0), (300, 1), (300, 2), (300, 3), (300, 4)], rng)
    assert [h for h, _ in log] == [1500, 300, 300, 300, 300]
    assert mem.size == 1500
    mem, log = _fill(nicv2_policy, 3000, [(3000, 0)] + [(300, c) for c in range(1, 12)], rng)
    assert [h for h, _ in log][:1] == [3000] and log[10][0] == 3000 // 11 == 272
    assert np.sum(mem.labels == 11) == 3000 // 12  # the last batch is all in memory


def test_reservoir_is_uniform_over_stream():
    rng = np.random.default_rng(0)
    counts = np.zeros(10)
    for _ in range(200):
        mem, _ = _fill(POLICIES["reservoir"], 50, [(100, c) for c in range(10)], rng)
        counts += np.bincount(mem.labels[: mem.size], minlength=10)
    assert np.allclose(counts / counts.sum(), 0.1, atol=0.01)


def test_class_balanced_quota():
    rng = np.random.default_rng(0)
    mem, _ = _fill(POLICIES["class_balanced"], 90, [(200, 0), (200, 1), (200, 2)], rng)
    np.testing.assert_array_equal(np.bincount(mem.labels[: mem.size]), [30, 30, 30])


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("length", [1, 3, 8, 13, 24])
def test_rows_unpacked_at_once_equal_the_codes(bits, length):
    """A replayed mini-batch is unpacked in one vectorized call, whatever each slot's bit alignment."""
    from tinycl.quant.packing import pack_codes, read_codes, read_rows

    rng = np.random.default_rng(bits * 100 + length)
    codes = rng.integers(0, 2**bits, (40, length)).astype(np.uint8)
    buffer = pack_codes(codes, bits)
    rows = rng.integers(0, 40, 25)
    np.testing.assert_array_equal(read_rows(buffer, rows, length, bits), codes[rows])
    np.testing.assert_array_equal(read_rows(buffer, rows, length, bits)[3], read_codes(buffer, rows[3] * length,
                                                                                     length, bits))
    assert read_rows(buffer, rows[:0], length, bits).shape == (0, length)


def test_a_memory_larger_than_the_machine_is_refused_before_allocating():
    from tinycl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"needs 1,310,730,000,000 bytes, more than this machine's"):
        ReplayMemory(10**7, (512, 8, 8), 32)


def test_lloyd_levels_by_hand_and_ties_to_the_lower_level():
    # 1 bit on [0, 0, 0, 1, 1, 5, 5, 5]: started at the quartiles (0 and 5), the cells {0, 0, 0, 1, 1} and {5, 5, 5}
    # give the levels 0.4 and 5; the boundary 2.7 rounds to the lower level
    x = np.array([0, 0, 0, 1, 1, 5, 5, 5], np.float32).reshape(8, 1)
    mem = ReplayMemory(8, (1,), 1, code="lloyd").calibrate(x)
    np.testing.assert_allclose(mem.levels_, [0.4, 5.0], rtol=1e-6)
    np.testing.assert_array_equal(mem.encode(np.array([[0.0], [2.7], [2.71], [9.0]], np.float32)).ravel(),
                                  [0, 0, 1, 1])


@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_lloyd_code_beats_the_best_uniform_range_on_skewed_data(granularity):
    """ReLU-like latents (most near zero, a long tail), 2 bits: the fitted levels round with less error than the
    uniform code at its best range (mse), per tensor and per channel; bytes as counted, codes within 2 bits, the
    levels kept through state_dict."""
    rng = np.random.default_rng(0)
    x = (rng.exponential(size=(64, 4, 3, 3)) * np.array([1, 2, 4, 8]).reshape(1, 4, 1, 1)).astype(np.float32)
    err = {}
    for code, method in (("uniform", "mse"), ("lloyd", "max")):
        mem = ReplayMemory(64, (4, 3, 3), 2, granularity=granularity, range_method=method, code=code)
        mem.write(np.arange(64), x, np.zeros(64, np.int64))
        err[code] = float(np.mean((mem.read(np.arange(64))[0] - x) ** 2))
        assert mem.nbytes == ReplayMemory.bytes_for(64, (4, 3, 3), 2, granularity=granularity, code=code)
        assert mem.codes().max() <= 3
    channels = 4 if granularity == "channel" else 1
    assert mem.qparams_nbytes == channels * 4 * 4 == mem.levels_.nbytes  # 4 float32 levels per tensor or channel
    assert err["lloyd"] < 0.8 * err["uniform"], err
    copy = ReplayMemory(64, (4, 3, 3), 2, granularity=granularity, code="lloyd")
    copy.load_state_dict(mem.state_dict())
    np.testing.assert_array_equal(copy.read(np.arange(64))[0], mem.read(np.arange(64))[0])
    with pytest.raises(ConfigError, match="memory code 'nonuniform'; allowed: uniform, lloyd"):
        ReplayMemory(4, (4,), 2, code="nonuniform")
