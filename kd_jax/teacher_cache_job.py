"""`kd-jax cache-teacher`: the job that writes a teacher cache (format: kd_jax.teacher_cache).

    build(config, out, k=64, mode="topk" | "sample")

It walks the training records in source order, runs the teacher on each padded example and
keeps, for every supervised token, the top-k log-probabilities or K draws with counts;
shards are written to a temporary folder and renamed, so an interrupted job resumes
without redoing finished shards. On several hosts (every host runs the same command) the
hosts build as many shards at once, each feeding its rows of every batch from its own
shard and writing that shard; process 0 writes meta.json.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict
from tqdm.auto import tqdm

from kd_jax import sampled_cache
from kd_jax import sharding as shd
from kd_jax.id_packing import index_bits, pack_indices
from kd_jax.step_builder import rules_of, setup
from kd_jax.teacher_cache import META, MODES, CacheError, cache_key, check_key


def chunk_length(length: int, batch_size: int, chunk_tokens: int) -> int:
    """The largest divisor of `length` with batch_size * it <= chunk_tokens (at least 1)."""
    want = max(1, chunk_tokens // max(batch_size, 1))
    return max(c for c in range(1, min(want, length) + 1) if length % c == 0)


def topk_fn(teacher, k: int, chunk_tokens: int, mesh=None, rules=None):
    """Jitted (params, frozen, batch, records_B) -> top-k (values, ids) [B, T, k] of the
    teacher's log-probabilities, computed over sequence chunks of about `chunk_tokens`
    tokens so that only one chunk's [B, C, V] float32 logits exist at a time (never
    [B, T, V]). `records_B` is unused: the sampled mode's draw function takes it. With
    `mesh` and `rules`, activations are split by the rules table as in training."""

    def topk(params, frozen, batch, records_B):
        del records_B
        model = teacher.merge(params, frozen)
        h_BxTxD = model.hidden(batch["inputs"], batch["positions"], batch["segment_ids"])
        b, t, d = h_BxTxD.shape
        c = chunk_length(t, b, chunk_tokens)
        h_NxBxCxD = h_BxTxD.reshape(b, t // c, c, d).swapaxes(0, 1)

        def one(h_BxCxD):
            logp_BxCxV = jax.nn.log_softmax(model.logits(h_BxCxD).astype(jnp.float32), axis=-1)
            return jax.lax.top_k(logp_BxCxV, k)

        vals_NxBxCxK, idx_NxBxCxK = jax.lax.map(one, h_NxBxCxD)
        unchunk = lambda x: x.swapaxes(0, 1).reshape(b, t, k)  # noqa: E731
        return unchunk(vals_NxBxCxK), unchunk(idx_NxBxCxK)

    return jax.jit(shd.under_activation_sharding(topk, mesh, rules))


class _TopkShardWriter:
    def __init__(self, k: int, bits: int, value_dtype: str):
        self.k, self.bits, self.value_dtype = k, bits, value_dtype
        self.offsets, self.values, self.indices = [0], [], []

    def add(self, values_nxK, indices_nxK) -> None:
        self.values.append(values_nxK.astype(self.value_dtype))
        self.indices.append(pack_indices(indices_nxK, self.bits))
        self.offsets.append(self.offsets[-1] + len(values_nxK))

    def save(self, folder: Path) -> None:
        k, bits = self.k, self.bits
        np.save(folder / "offsets.npy", np.asarray(self.offsets, np.int64))
        np.save(
            folder / "values.npy",
            np.concatenate(self.values) if self.values else np.zeros((0, k), self.value_dtype),
        )
        np.save(
            folder / "indices.npy",
            np.concatenate(self.indices)
            if self.indices
            else np.zeros((0, math.ceil(k * bits / 8)), np.uint8),
        )


def _records(shard: int, shard_size: int, n: int) -> range:
    return range(shard * shard_size, min(n, (shard + 1) * shard_size))


class _HostFeed:
    """This host's rows of the cache job's global batches on the teacher's mesh."""

    def __init__(self, teacher, batch_size: int, rules):
        self.hosts, self.host = jax.process_count(), jax.process_index()
        mesh = shd.mesh_of(teacher.trainable)
        self.mesh, self.rules = mesh, rules
        self.sharding = shd.batch_sharding(mesh, rules, rows=batch_size) if mesh else None
        self.batch = batch_size
        self.span = range(batch_size) if mesh is None else shd.host_rows(self.sharding, batch_size)
        self.rows = len(self.span)
        if self.rows * self.hosts != batch_size:
            raise CacheError(
                f"cache-teacher on {self.hosts} hosts needs --batch-size split across them "
                f"(this host holds {self.rows} of {batch_size} rows): use a multiple of "
                "the data x fsdp devices, with data or fsdp spanning the hosts."
            )

    def place(self, local: np.ndarray, dtype=None):
        local = np.asarray(local, dtype)
        if self.sharding is None:
            return jnp.asarray(local)
        sharding = shd.batch_sharding(self.mesh, self.rules, local.ndim, rows=self.batch)
        return shd.place_rows(local, sharding, self.batch)

    def mine(self, x) -> np.ndarray:
        return shd.gather_rows(x)[self.span.start : self.span.stop]


def _check_build_args(mode, k, value_dtype):
    if mode not in MODES:
        raise CacheError(f"--mode must be one of {', '.join(MODES)}; got {mode!r}.")
    if value_dtype not in ("float16", "float32"):
        raise CacheError(f"value_dtype must be float16 or float32, got {value_dtype!r}.")
    if mode == "sample":
        try:
            sampled_cache.check_k(k)
        except ValueError as e:
            raise CacheError(str(e)) from None


def build(
    config: ConfigDict,
    out: str | Path,
    *,
    k: int = 64,
    value_dtype: str = "float16",
    shard_size: int = 4096,
    batch_size: int = 16,
    progress: bool = True,
    mode: str = "topk",
) -> Path:
    """Computes (or resumes) the cache of `config`'s teacher over its training data.

    mode "topk": the top-k log-probs at temperature 1; "sample": K draws per token from the
    teacher at kd.temperature (the cache temperature), seeded by `config.seed` and the record
    index, so a resumed job draws what an uninterrupted one would."""
    from kd_jax.data.packing import pad_row, stack_rows

    _check_build_args(mode, k, value_dtype)
    config = ConfigDict(config.to_dict())
    config.method = "kd"
    config.kd.teacher_cache = ""
    r = setup(config)
    pipe, teacher = r.pipeline, r.teacher
    key = cache_key(config, pipe)
    out = Path(out)
    bits = index_bits(teacher.cfg.vocab_size)
    n = len(pipe.source)
    num_shards = math.ceil(n / shard_size)
    sample = dict(temperature=float(config.kd.temperature), sample_seed=int(config.seed))
    meta = dict(
        key=key,
        mode=mode,
        k=k,
        value_dtype=value_dtype,
        index_bits=bits,
        vocab_size=teacher.cfg.vocab_size,
        num_records=n,
        shard_size=shard_size,
        num_shards=num_shards,
        complete=False,
        num_tokens=0,
        **(sample if mode == "sample" else {}),
    )
    settings = ("mode", "k", "value_dtype", "shard_size", "temperature", "sample_seed")
    if (out / META).exists():
        old = json.loads((out / META).read_text())
        check_key(old, key, out)
        old.setdefault("mode", "topk")
        if any(old.get(f) != meta.get(f) for f in settings):
            raise CacheError(
                f"{out} was started with other settings ({', '.join(settings)}); use the "
                "same ones to resume it, or another --out."
            )
    shd.barrier("cache-teacher: settings checked")  # before process 0 rewrites them
    if shd.is_writer():
        out.mkdir(parents=True, exist_ok=True)
        (out / META).write_text(json.dumps(meta, indent=2))
    feed = _HostFeed(teacher, batch_size, rules_of(config))
    if mode == "sample":
        fn = sampled_cache.draw_fn(teacher, k, sample["temperature"], sample["sample_seed"])
    else:
        fn = topk_fn(teacher, k, config.kd.chunk_size, feed.mesh, feed.rules)
    max_len = config.data.max_length
    bar = tqdm(total=n, desc="cache-teacher", disable=not progress)
    # The hosts build P shards at once: host p feeds its rows of every batch from shard
    # first + p and writes that shard (one host: one shard at a time, whole batches).
    for first in range(0, num_shards, feed.hosts):
        group = range(first, min(first + feed.hosts, num_shards))
        todo = [s for s in group if not (out / f"shard-{s:05d}").exists()]
        bar.update(sum(len(_records(s, shard_size, n)) for s in group if s not in todo))
        if not todo:
            continue
        mine = first + feed.host
        records = _records(mine, shard_size, n) if mine in todo else range(0)
        steps = max(math.ceil(len(_records(s, shard_size, n)) / feed.rows) for s in todo)
        writer = (
            sampled_cache.ShardWriter(bits)
            if mode == "sample"
            else _TopkShardWriter(k, bits, value_dtype)
        )
        for i in range(steps):
            ids = list(records[i * feed.rows : (i + 1) * feed.rows])
            fed = list(ids or [0])  # a host with nothing left feeds a row to fill its slots
            fed += [fed[-1]] * (feed.rows - len(fed))
            rows = [pad_row(pipe.example_fn(pipe.source[j]), max_len) for j in fed]
            local = {key_: v for key_, v in stack_rows(rows).items() if key_ != "num_truncated"}
            batch = {key_: feed.place(v) for key_, v in local.items()}
            result = fn(teacher.trainable, teacher.frozen, batch, feed.place(fed, np.int32))
            result = result if isinstance(result, tuple) else (result,)
            result = [feed.mine(x) for x in result]
            for j in range(len(ids)):
                m = rows[j]["loss_mask"] > 0
                writer.add(*(x[j][m] for x in result))
            bar.update(len(ids))
        if records:
            tmp = out / f".tmp-shard-{mine:05d}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            writer.save(tmp)
            tmp.rename(out / f"shard-{mine:05d}")
    bar.close()
    shd.barrier("cache-teacher: every shard written")
    if shd.is_writer():
        meta["num_tokens"] = int(
            sum(np.load(out / f"shard-{s:05d}" / "offsets.npy")[-1] for s in range(num_shards))
        )
        meta["complete"] = True
        (out / META).write_text(json.dumps(meta, indent=2))
    shd.barrier("cache-teacher: complete")
    return out
