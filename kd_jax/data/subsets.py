"""Nested data-size subsets and the held-out validation split.

Every record gets a rank from a seeded hash of its index. Validation is the first
`validation_size` ranks; a training subset of size n is the next n ranks. So for one
seed subset(n) is contained in subset(m) whenever n < m, the validation split does not
move when the training size changes, and different seeds give different subsets.
The hash (splitmix64) depends only on (seed, index), never on numpy's generator
streams, so a subset is the same on every host and every library version.
"""

from __future__ import annotations

import numpy as np

from kd_jax.data.sources import DataError

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) & _M64


def rank_order(num_records: int, seed: int) -> np.ndarray:
    """Indices 0..num_records-1 in the seed's order."""
    idx = np.arange(num_records, dtype=np.uint64)
    key = _splitmix64(idx ^ _splitmix64(np.full(num_records, seed, dtype=np.uint64)))
    return np.argsort(key, kind="stable").astype(np.int64)


def split_indices(
    num_records: int, *, num_examples: int = 0, validation_size: int = 0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices), each sorted ascending.

    num_examples = 0 takes every record not held out for validation.
    """
    if num_examples < 0 or validation_size < 0:
        raise DataError("data.num_examples and data.validation_size must be >= 0")
    available = num_records - validation_size
    if available <= 0:
        raise DataError(
            f"data.validation_size={validation_size} leaves no training data from "
            f"{num_records} records; lower data.validation_size"
        )
    if num_examples > available:
        raise DataError(
            f"data.num_examples={num_examples} but only {available} records remain after "
            f"holding out {validation_size} for validation; lower data.num_examples or set it to 0"
        )
    order = rank_order(num_records, seed)
    val = order[:validation_size]
    train = order[validation_size : validation_size + (num_examples or available)]
    return np.sort(train), np.sort(val)
