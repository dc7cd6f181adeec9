"""TensorFlow's stateless Philox uniform numbers in numpy, bit for bit, so every backend draws the same weights.

`tf.random.stateless_uniform(shape, seed, minval, maxval, alg="philox")` (what facesmith's TensorFlow-only
trainer initialised its weights with) scrambles the (2,) int64 seed into a Philox-4x32-10 key and
counter, draws 4 words per counter value, and maps each word's low 23 bits to a float in [1, 2) less 1.
Written out here with numpy's 64-bit integers; a test compares it with TensorFlow's op.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_MULTIPLIERS = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
_WEYL = (np.uint64(0x9E3779B9), np.uint64(0xBB67AE85))
_SCRAMBLE_KEY = np.array([0x3EC8F720, 0x02461E29], np.uint32)  # TensorFlow's seed-scrambling key
_LOW = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)


def philox_4x32(counters: np.ndarray, key: np.ndarray, rounds: int = 10) -> np.ndarray:
    """(n, 4) uint32 counters and a (2,) uint32 key -> (n, 4) uint32 Philox-4x32 output words."""
    words = [counters[:, i].astype(np.uint64) for i in range(4)]
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for _ in range(rounds):
        product0, product1 = _MULTIPLIERS[0] * words[0], _MULTIPLIERS[1] * words[2]
        words = [((product1 >> _32) ^ words[1] ^ k0) & _LOW, product1 & _LOW,
                 ((product0 >> _32) ^ words[3] ^ k1) & _LOW, product0 & _LOW]
        k0, k1 = (k0 + _WEYL[0]) & _LOW, (k1 + _WEYL[1]) & _LOW
    return np.stack(words, axis=1).astype(np.uint32)


def _key_and_counter(seed: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    s0, s1 = (int(x) & 0xFFFFFFFFFFFFFFFF for x in seed)
    words = np.array([[s0 & 0xFFFFFFFF, s0 >> 32, s1 & 0xFFFFFFFF, s1 >> 32]], np.uint32)
    mix = philox_4x32(words, _SCRAMBLE_KEY)[0]
    return mix[:2].copy(), np.array([0, 0, mix[2], mix[3]], np.uint32)


def stateless_uniform(shape: Sequence[int], seed: Sequence[int], minval: float, maxval: float) -> np.ndarray:
    """float32 array of `shape`, uniform in [minval, maxval): TensorFlow's stateless Philox draw for the
    (2,) integer `seed`, the same bits."""
    key, start = _key_and_counter(seed)
    count = int(np.prod(shape)) if len(shape) else 1
    offsets = np.arange((count + 3) // 4, dtype=np.uint64)
    low = (np.uint64(start[0]) | (np.uint64(start[1]) << _32)) + offsets
    high = (np.uint64(start[2]) | (np.uint64(start[3]) << _32)) + (low < offsets).astype(np.uint64)
    counters = np.stack([low & _LOW, low >> _32, high & _LOW, high >> _32], axis=1).astype(np.uint32)
    bits = philox_4x32(counters, key).reshape(-1)[:count]
    unit = ((bits & np.uint32(0x7FFFFF)) | np.uint32(0x3F800000)).view(np.float32) - np.float32(1.0)
    return (unit * np.float32(maxval - minval) + np.float32(minval)).reshape(tuple(shape))
