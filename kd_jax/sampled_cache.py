"""The sampled teacher cache's numbers: K draws per token, compacted to distinct ids and counts.

`kd-jax cache-teacher --mode sample --k K` (kd_jax/teacher_cache.py runs the job and owns the
key, shards and resumption) stores, for every supervised token, K tokens drawn i.i.d. from the
teacher's distribution at the cache temperature tau. Training uses p^_T = counts / K, whose
forward-KL gradient is an unbiased estimate of the full one (kd_jax/losses/teacher.py).

Why draws rather than top-k: a top-k cache renormalised over its k tokens is biased (the
teacher's tail mass is dropped and the student's mass outside the k tokens is never pushed
down); K draws keep every token's expected weight, at the price of Monte-Carlo noise (variance
p (1 - p) / K per token's target) and of a cache bound to one temperature.

Storage per shard (variable length: a peaked teacher's K draws hold few distinct tokens):
    offsets      int64 [n + 1]  supervised tokens of record r: offsets[r]..offsets[r+1]
    slot_offsets int64 [n + 1]  distinct (id, count) entries of record r
    byte_offsets int64 [n + 1]  record r's bytes in `ids`
    num_unique   uint8 [N]      distinct ids per token (1..K)
    counts       uint8 [S]      each entry's count (1..K; they sum to K per token)
    ids          uint8 [bytes]  the entries' ids, bit-packed with `bits` bits, per record
A token costs 1 + U * (1 + bits / 8) bytes for U distinct ids; at most (U = K = 64, 18-bit
ids for a 152k vocabulary) 209 bytes, against 272 for a float16 top-64 cache.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax.data.packing import SAMPLE_KEYS
from kd_jax.id_packing import pack_indices, unpack_indices

MAX_K = 255  # counts and distinct-id numbers are uint8


def check_k(k) -> None:
    if not (isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= MAX_K):
        raise ValueError(f"--k for a sampled cache must be an integer in [1, {MAX_K}]; got {k!r}.")


def bytes_per_token_bound(k: int, bits: int) -> float:
    """Worst case (every draw a distinct id): 1 + K * (1 + bits / 8)."""
    return 1 + k * (1 + bits / 8)


def draw(logits_BxTxV: jax.Array, keys_B: jax.Array, k: int, temperature: float) -> jax.Array:
    """K i.i.d. draws per position from softmax(logits / tau), sorted: int32 [B, T, K].

    Inverse-CDF sampling keeps memory at the [B, T, V] logits (Gumbel-max would need
    [K, B, T, V]); each row's uniforms come from its own key, so a record's draws do not
    depend on the batch it was computed in."""
    probs = jax.nn.softmax(logits_BxTxV.astype(jnp.float32) / temperature, axis=-1)
    cdf = jnp.cumsum(probs, axis=-1)  # [B, T, V]
    b, t, v = cdf.shape
    u = jax.vmap(lambda key: jax.random.uniform(key, (t, k), jnp.float32))(keys_B)
    u = u * cdf[..., -1:]  # the cumsum's rounding leaves its end a little off 1
    flat = jax.vmap(lambda c, q: jnp.searchsorted(c, q, side="right"))(
        cdf.reshape(b * t, v), u.reshape(b * t, k)
    )
    return jnp.sort(jnp.minimum(flat, v - 1).reshape(b, t, k).astype(jnp.int32), axis=-1)


def draw_fn(teacher, k: int, temperature: float, seed: int):
    """Jitted (params, frozen, batch, records [B]) -> draws [B, T, K] for the teacher model."""
    base = jax.random.key(seed)

    @jax.jit
    def fn(params, frozen, batch, records_B):
        model = teacher.merge(params, frozen)
        h = model.hidden(batch["inputs"], batch["positions"], batch["segment_ids"])
        keys = jax.vmap(lambda r: jax.random.fold_in(base, r))(records_B)
        return draw(model.logits(h), keys, k, temperature)

    return fn


def compact(draws_NxK: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted draws [N, K] -> (num_unique uint8 [N], ids int64 [S], counts uint8 [S])."""
    n, k = draws_NxK.shape
    d = np.sort(np.asarray(draws_NxK), axis=1)
    first = np.ones((n, k), bool)
    first[:, 1:] = d[:, 1:] != d[:, :-1]
    # Run lengths: positions of each run's first element, differenced within its row.
    rows, cols = np.nonzero(first)  # row-major: runs in order
    ends = np.append(cols[1:], k)
    ends[np.append(rows[1:] != rows[:-1], True)] = k
    counts = (ends - cols).astype(np.uint8)
    return first.sum(1).astype(np.uint8), d[rows, cols].astype(np.int64), counts


def expand(num_unique_N, ids_S, counts_S, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(num_unique, ids, counts) -> (ids int32 [N, K], counts int32 [N, K]); empty slots 0."""
    n = len(num_unique_N)
    nu = np.asarray(num_unique_N, np.int64)
    starts = np.concatenate([[0], np.cumsum(nu)[:-1]])
    row = np.repeat(np.arange(n), nu)
    slot = np.arange(len(row)) - np.repeat(starts, nu)
    out_ids = np.zeros((n, k), np.int32)
    out_counts = np.zeros((n, k), np.int32)
    out_ids[row, slot] = ids_S
    out_counts[row, slot] = counts_S
    return out_ids, out_counts


class ShardWriter:
    """Collects records' draws, then writes one shard's arrays into a folder."""

    def __init__(self, bits: int):
        self.bits = bits
        self.offsets, self.slot_offsets, self.byte_offsets = [0], [0], [0]
        self.num_unique, self.counts, self.ids = [], [], []

    def add(self, draws_NxK: np.ndarray) -> None:
        nu, ids, counts = compact(draws_NxK)
        packed = pack_indices(ids[None, :], self.bits)[0] if len(ids) else np.zeros(0, np.uint8)
        self.num_unique.append(nu)
        self.counts.append(counts)
        self.ids.append(packed)
        self.offsets.append(self.offsets[-1] + len(nu))
        self.slot_offsets.append(self.slot_offsets[-1] + len(ids))
        self.byte_offsets.append(self.byte_offsets[-1] + len(packed))

    def save(self, folder: Path) -> None:
        for name in ("offsets", "slot_offsets", "byte_offsets"):
            np.save(folder / f"{name}.npy", np.asarray(getattr(self, name), np.int64))
        for name in ("num_unique", "counts", "ids"):
            parts = getattr(self, name)
            arr = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
            np.save(folder / f"{name}.npy", arr)


SHARD_FILES = ("offsets", "slot_offsets", "byte_offsets", "num_unique", "counts", "ids")


def lookup(shard: dict, r: int, k: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Record r of a loaded shard -> (ids int32 [n, K], counts int32 [n, K])."""
    lo, hi = int(shard["offsets"][r]), int(shard["offsets"][r + 1])
    s_lo, s_hi = int(shard["slot_offsets"][r]), int(shard["slot_offsets"][r + 1])
    b_lo, b_hi = int(shard["byte_offsets"][r]), int(shard["byte_offsets"][r + 1])
    ids = unpack_indices(np.asarray(shard["ids"][b_lo:b_hi])[None, :], s_hi - s_lo, bits)[0]
    counts = np.asarray(shard["counts"][s_lo:s_hi])
    return expand(np.asarray(shard["num_unique"][lo:hi]), ids, counts, k)


def attach(example: dict, ids_nxK: np.ndarray, counts_nxK: np.ndarray) -> dict:
    """Adds teacher_sample_ids / _counts [L, K] (zeros where unsupervised) to an example."""
    mask = np.asarray(example["loss_mask"]) > 0
    n, k = len(mask), ids_nxK.shape[1]
    full_i = np.zeros((n, k), np.int32)
    full_c = np.zeros((n, k), np.int32)
    full_i[mask], full_c[mask] = ids_nxK, counts_nxK
    return {**example, SAMPLE_KEYS[0]: full_i, SAMPLE_KEYS[1]: full_c}
