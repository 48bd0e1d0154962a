"""The learner's random numbers in device mode: xoshiro128** and its draws, the same as csrc/rng.c.

`PortableRng(seed)` offers the few `np.random.Generator` methods the learners and replay policies call
(`integers`, `permutation`, `choice`, `shuffle`, `random`), each drawn by an algorithm C repeats exactly:
`below(n)` is a 32-bit draw reduced by rejection, a permutation is Fisher-Yates from the top
(`tcl_rng_permutation`), a choice without replacement a partial Fisher-Yates from the bottom (`tcl_rng_sample`),
with replacement `size` independent `below(n)`. A learner with `train.device = true` uses it, so an exported learner
(tinycl.export) draws the same mini-batches, replay slots and memory insertions on the device as on the host.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PortableRng"]

_M32 = 0xFFFFFFFF


def _rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def _fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


class PortableRng:
    """xoshiro128** seeded from a 32-bit seed (tcl_rng_seed). `state` is its four 32-bit words; `bit_generator`
    is the object itself, so code that saves `rng.bit_generator.state` works unchanged."""

    def __init__(self, seed: int = 0):
        self.s = [_fmix32((int(seed) + (i + 1) * 0x9E3779B9) & _M32) for i in range(4)]
        if not any(self.s):
            self.s[0] = 1

    @property
    def bit_generator(self) -> PortableRng:
        return self

    @property
    def state(self) -> dict:
        return {"bit_generator": "xoshiro128**", "s": list(self.s)}

    @state.setter
    def state(self, value: dict) -> None:
        self.s = [int(v) & _M32 for v in value["s"]]

    def next(self) -> int:
        s = self.s
        result = (_rotl((s[1] * 5) & _M32, 7) * 9) & _M32
        t = (s[1] << 9) & _M32
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 11)
        return result

    def below(self, n: int) -> int:
        """Uniform in [0, n), 1 <= n <= 2^32 - 1, without modulo bias."""
        threshold = ((1 << 32) - n) % n
        while True:
            r = self.next()
            if r >= threshold:
                return r % n

    # -- the np.random.Generator methods the learners use ------------------------------------------------
    def integers(self, low: int, high: int | None = None, size: int | None = None):
        low, high = (0, low) if high is None else (low, high)
        if size is None:
            return low + self.below(high - low)
        return np.array([low + self.below(high - low) for _ in range(int(size))], np.int64)

    def _order(self, n: int) -> list[int]:
        """A random permutation of 0..n-1: Fisher-Yates from the top (tcl_rng_permutation)."""
        order = list(range(n))
        for i in range(n - 1, 0, -1):
            j = self.below(i + 1)
            order[i], order[j] = order[j], order[i]
        return order

    def permutation(self, n) -> np.ndarray:
        if isinstance(n, (int, np.integer)):
            return np.array(self._order(int(n)), np.int64)
        x = np.asarray(n)
        return x[self._order(len(x))]

    def shuffle(self, x) -> None:
        order = self._order(len(x))
        x[:] = x[order] if isinstance(x, np.ndarray) else [x[k] for k in order]

    def choice(self, a, size: int | None = None, replace: bool = True):
        pool = None if isinstance(a, (int, np.integer)) else np.asarray(a)
        n = int(a) if pool is None else len(pool)
        k = 1 if size is None else int(size)
        if replace:
            idx = np.array([self.below(n) for _ in range(k)], np.int64)
        else:
            if k > n:
                raise ValueError(f"cannot take {k} samples from {n} without replacement")
            idx = np.arange(n, dtype=np.int64)
            for i in range(k):
                j = i + self.below(n - i)
                idx[i], idx[j] = idx[j], idx[i]
            idx = idx[:k]
        out = idx if pool is None else pool[idx]
        return out[0] if size is None else out

    def random(self, size: int | None = None):
        if size is None:
            return (self.next() >> 8) * 2.0**-24
        return np.array([(self.next() >> 8) * 2.0**-24 for _ in range(int(size))])
