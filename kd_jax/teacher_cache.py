"""Offline teacher signal: the teacher's top-k log-probabilities, computed once, reused.

    kd-jax cache-teacher --config FILE[:arg] [--config.k=v] --out CACHE_DIR
    kd-jax train --config FILE --config.kd.teacher_cache=CACHE_DIR ...

Sweeps over data sizes and seeds then never run the teacher again. The job walks the
training records in source order, runs the teacher on each padded example and keeps, for
every supervised token, the top-k log-probabilities (temperature 1) and their token ids.

Layout of CACHE_DIR:
    meta.json                 key (see below), k, value dtype, index bits, vocab, shards
    shard-00000/{offsets,values,indices}.npy
        offsets int64 [n + 1]   cached tokens of record r: rows offsets[r]..offsets[r+1]
        values  f16|f32 [N, k]  top-k log-probs, descending
        indices uint8 [N, ceil(k * bits / 8)]  token ids, bit-packed with `bits` bits each
At k = 64 and a 152k vocabulary (18-bit ids) a token costs 64 * 2 + 144 = 272 bytes with
float16 values (the default), 400 with float32. Float16 rounds log-probs by about 1e-3
relative; choose `value_dtype=float32` to reproduce online top-k KD to 1e-5.

The key hashes what the numbers depend on: the teacher's weights (config.json, each
weight file's header, size and sampled bytes), the tokenizer files, the chat/Alpaca
template and the data settings (files, max_length, train_on_inputs). Training refuses
a cache whose key differs. Shards are written to a temporary folder and renamed, so an
interrupted job resumes without redoing finished shards.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict
from tqdm.auto import tqdm

from kd_jax.errors import UserError

META = "meta.json"
SAMPLED_READS = 16
SAMPLE_BYTES = 1 << 16


class CacheError(UserError):
    """A teacher cache that does not match the run, or cannot be read."""


# --- fingerprints --------------------------------------------------------------------


def fingerprint_files(paths: list[Path]) -> str:
    """Hash of files by name, size and sampled content (weights are too large to hash)."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        size = p.stat().st_size
        h.update(f"{p.name}:{size}".encode())
        with open(p, "rb") as f:
            if size <= SAMPLED_READS * SAMPLE_BYTES:
                h.update(f.read())
                continue
            for i in range(SAMPLED_READS):
                f.seek(i * (size - SAMPLE_BYTES) // (SAMPLED_READS - 1))
                h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def _model_files(mc: ConfigDict) -> list[Path]:
    if mc.hf_path:
        root = Path(mc.hf_path)
        return [root / "config.json", *sorted(root.glob("*.safetensors"))]
    if mc.workdir:
        root = Path(mc.workdir)
        files = [root / "config.json"]
        for sub in ("checkpoints", "checkpoints_best"):
            files += sorted(p for p in (root / sub).rglob("*") if p.is_file())
        return files
    return []


def cache_key(config: ConfigDict, pipeline) -> dict:
    """What the cached numbers depend on, each part hashed (compared part by part)."""
    from kd_jax.data.sources import expand_paths

    data_info, tokenizer_dir = pipeline.info, pipeline.tokenizer.name_or_path
    t = config.teacher
    teacher = fingerprint_files(_model_files(t)) if (t.hf_path or t.workdir) else ""
    if not teacher:  # a random preset: its name and seed define it
        teacher = hashlib.sha256(f"{t.preset}:{config.seed}".encode()).hexdigest()
    tok_files = [p for p in Path(tokenizer_dir).iterdir() if p.is_file()]
    data = dict(
        files=fingerprint_files([Path(p) for p in expand_paths(pipeline.config.train)]),
        max_length=data_info.get("max_length"),
        train_on_inputs=data_info.get("train_on_inputs"),
        records=data_info.get("records"),
    )
    return {
        "teacher": teacher,
        "tokenizer": fingerprint_files(tok_files),
        "template": hashlib.sha256(
            (
                str(data_info.get("chat_template_sha1"))
                + str(data_info.get("alpaca_template_sha1"))
            ).encode()
        ).hexdigest(),
        "data": hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest(),
    }


def check_key(meta: dict, expected: dict, cache_dir) -> None:
    for part in ("teacher", "tokenizer", "template", "data"):
        if meta["key"].get(part) != expected[part]:
            raise CacheError(
                f"Teacher cache {cache_dir} was built for another {part} than this run uses; "
                "rebuild it with `kd-jax cache-teacher` for this config."
            )


# --- packing of token ids ------------------------------------------------------------


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


# --- reading -------------------------------------------------------------------------


class TeacherCache:
    """Random access to cached top-k per record: `lookup(record_index)`."""

    def __init__(self, cache_dir: str | Path, expected_key: dict | None = None):
        self.dir = Path(cache_dir)
        meta_path = self.dir / META
        if not meta_path.exists():
            raise CacheError(
                f"{self.dir} is not a teacher cache (no {META}); build it with "
                "`kd-jax cache-teacher`."
            )
        self.meta = json.loads(meta_path.read_text())
        if not self.meta.get("complete"):
            raise CacheError(
                f"Teacher cache {self.dir} is incomplete; run `kd-jax cache-teacher` again "
                "to finish it."
            )
        if expected_key is not None:
            check_key(self.meta, expected_key, self.dir)
        self.k, self.bits = self.meta["k"], self.meta["index_bits"]
        self.shard_size = self.meta["shard_size"]
        self._shards: dict[int, tuple] = {}

    def _shard(self, s: int):
        if s not in self._shards:
            d = self.dir / f"shard-{s:05d}"
            self._shards[s] = tuple(
                np.load(d / f"{name}.npy", mmap_mode="r")
                for name in ("offsets", "values", "indices")
            )
        return self._shards[s]

    def lookup(self, record: int) -> tuple[np.ndarray, np.ndarray]:
        """(values [n, k] float32, indices [n, k] int32) for the n supervised tokens."""
        offsets, values, indices = self._shard(record // self.shard_size)
        r = record % self.shard_size
        lo, hi = int(offsets[r]), int(offsets[r + 1])
        vals = np.asarray(values[lo:hi], np.float32)
        return vals, unpack_indices(np.asarray(indices[lo:hi]), self.k, self.bits)

    def attach(self, example: dict, record: int) -> dict:
        """Adds teacher_topk_values / _indices [L, k] to an example (zeros where unsupervised)."""
        vals, idx = self.lookup(record)
        mask = np.asarray(example["loss_mask"]) > 0
        if int(mask.sum()) != len(vals):
            raise CacheError(
                f"Teacher cache {self.dir}: record {record} has {len(vals)} cached tokens but "
                f"{int(mask.sum())} supervised ones; the cache does not match this data."
            )
        n = len(mask)
        full_v = np.zeros((n, self.k), np.float32)
        full_i = np.zeros((n, self.k), np.int32)
        full_v[mask], full_i[mask] = vals, idx
        return {**example, "teacher_topk_values": full_v, "teacher_topk_indices": full_i}

    def bytes_per_token(self) -> float:
        total = sum(
            p.stat().st_size for p in self.dir.glob("shard-*/*.npy") if "offsets" not in p.name
        )
        return total / max(self.meta["num_tokens"], 1)


# --- writing -------------------------------------------------------------------------


def chunk_length(length: int, batch_size: int, chunk_tokens: int) -> int:
    """The largest divisor of `length` with batch_size * it <= chunk_tokens (at least 1)."""
    want = max(1, chunk_tokens // max(batch_size, 1))
    return max(c for c in range(1, min(want, length) + 1) if length % c == 0)


def topk_fn(teacher, k: int, chunk_tokens: int):
    """Jitted (params, frozen, batch) -> top-k (values, ids) [B, T, k] of the teacher's
    log-probabilities, computed over sequence chunks of about `chunk_tokens` tokens so
    that only one chunk's [B, C, V] float32 logits exist at a time (never [B, T, V])."""

    @jax.jit
    def topk(params, frozen, batch):
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

    return topk


def build(config: ConfigDict, out: str | Path, *, k: int = 64, value_dtype: str = "float16",
          shard_size: int = 4096, batch_size: int = 16, progress: bool = True) -> Path:  # fmt: skip
    """Computes (or resumes) the top-k cache of `config`'s teacher over its training data."""
    from kd_jax.data.packing import pad_row, stack_rows
    from kd_jax.step_builder import setup

    if value_dtype not in ("float16", "float32"):
        raise CacheError(f"value_dtype must be float16 or float32, got {value_dtype!r}.")
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
    meta = dict(key=key, k=k, value_dtype=value_dtype, index_bits=bits,
                vocab_size=teacher.cfg.vocab_size, num_records=n, shard_size=shard_size,
                num_shards=num_shards, complete=False, num_tokens=0)  # fmt: skip
    if (out / META).exists():
        old = json.loads((out / META).read_text())
        check_key(old, key, out)
        if (old["k"], old["value_dtype"], old["shard_size"]) != (k, value_dtype, shard_size):
            raise CacheError(f"{out} was started with other k/value_dtype/shard_size.")
    out.mkdir(parents=True, exist_ok=True)
    (out / META).write_text(json.dumps(meta, indent=2))
    topk = topk_fn(teacher, k, config.kd.chunk_size)
    max_len = config.data.max_length
    bar = tqdm(total=n, desc="cache-teacher", disable=not progress)
    for s in range(num_shards):
        final = out / f"shard-{s:05d}"
        records = range(s * shard_size, min(n, (s + 1) * shard_size))
        if final.exists():
            bar.update(len(records))
            continue
        offsets, values, indices = [0], [], []
        for start in range(records.start, records.stop, batch_size):
            ids = list(range(start, min(records.stop, start + batch_size)))
            rows = [pad_row(pipe.example_fn(pipe.source[i]), max_len) for i in ids]
            rows += [rows[-1]] * (batch_size - len(rows))
            batch = {key_: jnp.asarray(v) for key_, v in stack_rows(rows).items()
                     if key_ != "num_truncated"}  # fmt: skip
            vals, idx = jax.device_get(topk(teacher.trainable, teacher.frozen, batch))
            for j in range(len(ids)):
                m = rows[j]["loss_mask"] > 0
                values.append(vals[j][m].astype(value_dtype))
                indices.append(pack_indices(idx[j][m], bits))
                offsets.append(offsets[-1] + int(m.sum()))
            bar.update(len(ids))
        tmp = out / f".tmp-shard-{s:05d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        np.save(tmp / "offsets.npy", np.asarray(offsets, np.int64))
        np.save(tmp / "values.npy", np.concatenate(values) if values else
                np.zeros((0, k), value_dtype))  # fmt: skip
        np.save(tmp / "indices.npy", np.concatenate(indices) if indices else
                np.zeros((0, math.ceil(k * bits / 8)), np.uint8))  # fmt: skip
        tmp.rename(final)
    bar.close()
    meta["num_tokens"] = int(sum(
        np.load(out / f"shard-{s:05d}" / "offsets.npy")[-1] for s in range(num_shards)
    ))  # fmt: skip
    meta["complete"] = True
    (out / META).write_text(json.dumps(meta, indent=2))
    return out
