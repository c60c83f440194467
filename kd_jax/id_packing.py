"""Token ids bit-packed with ceil(log2 V) bits each: the teacher caches' id storage."""

from __future__ import annotations

import math

import numpy as np


def index_bits(vocab_size: int) -> int:
    return max(1, math.ceil(math.log2(vocab_size)))


def pack_indices(indices_NxK: np.ndarray, bits: int) -> np.ndarray:
    """[N, K] ids < 2**bits -> [N, ceil(K * bits / 8)] uint8."""
    n, k = indices_NxK.shape
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    bit_array = (indices_NxK.astype(np.uint32)[..., None] >> shifts) & 1  # [N, K, bits]
    return np.packbits(bit_array.reshape(n, k * bits).astype(np.uint8), axis=1)


def unpack_indices(packed: np.ndarray, k: int, bits: int) -> np.ndarray:
    n = packed.shape[0]
    flat = np.unpackbits(packed, axis=1, count=k * bits).reshape(n, k, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.int64)
    return (flat.astype(np.int64) @ weights).astype(np.int32)
