"""The grain input pipeline: config in, resumable (and optionally mesh-placed) batches out.

Order of operations for training, per process:
  records -> nested subset -> shuffle (global, reshuffled each epoch) -> repeat
  -> this host's slice [process_index::process_count] -> read + tokenize (threads)
  -> pack or pad to rows of max_length -> batch of batch_size / process_count rows
  -> optional worker processes -> host arrays, or global jax.Arrays on the mesh.
Shuffling before slicing makes the hosts' streams disjoint and, together, exactly the
epoch's permutation; no example is dropped to even out hosts.

`BatchIterator.get_state()` is JSON: grain's iterator state and the running stats.
Restoring it into a fresh pipeline built from the same config continues with exactly
the batches an uninterrupted run would have produced.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Iterator

import grain
import jax
import numpy as np

from kd_jax.data import packing, subsets
from kd_jax.data.data_config import DataConfig
from kd_jax.data.source_dispatch import open_source
from kd_jax.data.sources import DataError
from kd_jax.data.tokenize import ExampleTokenizer, load_tokenizer

log = logging.getLogger("kd_jax.data")
STATE_VERSION = 1


class _Examples:
    """fn(source[indices[i]]): a tokenized subset that grain reads at random.

    Reading and tokenizing happen together so that an error names the record's file and
    line; grain still runs them lazily, in shuffled order. With `cache`, each example is
    tokenized once and kept: later epochs of a small subset then cost almost nothing.
    """

    def __init__(self, source, indices: np.ndarray, fn, cache: bool = False, topk_cache=None):
        self.source, self.indices, self.fn = source, np.asarray(indices, np.int64), fn
        self._cache: dict[int, dict] | None = {} if cache else None
        # An offline teacher cache (kd_jax.teacher_cache) is keyed by source record.
        self.topk_cache = topk_cache

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        j = int(self.indices[i])
        try:
            example = self.fn(self.source[j])
        except DataError as e:
            raise DataError(f"{self.source.location(j)}: {e}") from None
        if self.topk_cache is not None:
            example = self.topk_cache.attach(example, j)
        if getattr(self.fn, "keeps_record_index", False):
            example = {**example, "record_index": np.int32(j)}
        if self._cache is not None:
            self._cache[i] = example
        return example


class BatchIterator:
    """Iterator over batches with exact save/restore and running stats.

    Yields dicts of [B, T] arrays (ROW_KEYS): numpy on the host, or jax.Arrays laid
    out by `sharding` with global batch size B when a sharding is given.
    """

    def __init__(self, dataset: grain.IterDataset, global_batch: int, sharding=None):
        self._dataset = dataset
        self._it = iter(dataset)
        self._global_batch = global_batch
        self._sharding = sharding
        self.stats = packing.BatchStats()
        self._warned_truncation = False

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict:
        batch = next(self._it)
        self.stats.update(batch)
        if self.stats.truncated and not self._warned_truncation:
            self._warned_truncation = True
            log.warning(
                "examples longer than data.max_length are being truncated (%d so far); "
                "see stats()['truncated'] for the running count",
                self.stats.truncated,
            )
        batch = {k: batch[k] for k in packing.batch_keys(batch)}
        if self._sharding is None:
            return batch
        return {
            k: jax.make_array_from_process_local_data(
                self._sharding, v, (self._global_batch, *v.shape[1:])
            )
            for k, v in batch.items()
        }

    def close(self) -> None:
        """Stops grain's threads and worker processes; the iterator is done after this."""
        self._it.close()

    def get_state(self) -> dict:
        state = {
            "version": STATE_VERSION,
            "grain": self._it.get_state(),
            "stats": self.stats.summary(),
        }
        return json.loads(json.dumps(state))  # fails here, not in the checkpointer

    def set_state(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise DataError(
                f"data iterator state version {state.get('version')} is not {STATE_VERSION}; "
                "it was saved by another kd_jax version, so restart the data from scratch"
            )
        self._it.set_state(state["grain"])
        fields = packing.BatchStats.__dataclass_fields__
        self.stats = packing.BatchStats(**{k: v for k, v in state["stats"].items() if k in fields})
        self._warned_truncation = self.stats.truncated > 0


class DataPipeline:
    """Everything a run needs from its data: train iterator, validation batches, info."""

    def __init__(
        self,
        config: DataConfig,
        *,
        sharding=None,
        process_index: int | None = None,
        process_count: int | None = None,
        tokenizer=None,
    ):
        self.config = config
        self.sharding = sharding
        self.teacher_cache = None  # a kd_jax.teacher_cache.TeacherCache, set by the trainer
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        if config.batch_size % self.process_count:
            raise DataError(
                f"data.batch_size={config.batch_size} is not divisible by the "
                f"{self.process_count} processes; use a multiple of {self.process_count}"
            )
        self.host_batch = config.batch_size // self.process_count
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config.tokenizer)
        self.example_fn = ExampleTokenizer(
            self.tokenizer,
            max_length=config.max_length,
            train_on_inputs=config.train_on_inputs,
            alpaca_template=config.alpaca_template,
        )
        self.source = open_source(
            config.train, fmt=config.format, skip_bad_lines=config.skip_bad_lines
        )
        n_val = 0 if config.validation else config.validation_size
        self.train_indices, val_indices = subsets.split_indices(
            len(self.source),
            num_examples=config.num_examples,
            validation_size=n_val,
            seed=config.subset_seed,
        )
        if config.validation:
            if config.validation_size:
                log.warning(
                    "data.validation is set, so data.validation_size=%d is ignored: "
                    "validation uses those files and training keeps every record",
                    config.validation_size,
                )
            self.val_source = open_source(
                config.validation, fmt=config.format, skip_bad_lines=config.skip_bad_lines
            )
            self.val_indices = np.arange(len(self.val_source))
        else:
            self.val_source, self.val_indices = self.source, val_indices
        self.info = {
            "train": config.train,
            "records": len(self.source),
            "skipped_lines": getattr(self.source, "num_skipped", 0),
            "train_examples": len(self.train_indices),
            "validation_examples": len(self.val_indices),
            "packing": config.packing,
            "batch_size": config.batch_size,
            **self.example_fn.info(),
        }
        log.info("data: %s", json.dumps(self.info))

    # ---- training --------------------------------------------------------------------

    def train_dataset(self, num_epochs: int | None = None) -> grain.IterDataset:
        """Batches of this host's rows; endless unless num_epochs is given."""
        cfg = self.config
        cache = len(self.train_indices) <= cfg.cache_examples
        if self.teacher_cache is not None and cfg.packing:
            raise DataError(
                "a teacher top-k cache needs one example per row; set data.packing=False"
            )
        ds = grain.MapDataset.source(
            _Examples(
                self.source,
                self.train_indices,
                self.example_fn,
                cache=cache,
                topk_cache=self.teacher_cache,
            )
        )
        ds = ds.seed(cfg.seed).shuffle().repeat(num_epochs)
        ds = ds[self.process_index :: self.process_count]
        # Reader threads cost grain ~0.2 ms per example, more than tokenizing one
        # (which holds the GIL anyway), so by default examples are read inline and the
        # whole batch is prepared ahead in one background thread instead (see below).
        examples = ds.to_iter_dataset(
            grain.ReadOptions(
                num_threads=cfg.num_threads, prefetch_buffer_size=256 if cfg.num_threads else 0
            )
        )
        if cfg.packing:
            # More open rows fill better (measured on the arith data at T=128: 8 rows
            # 0.81, 64 rows 0.89 of positions used); rows are small, so 64 costs nothing.
            bins = cfg.num_packing_bins or max(64, self.host_batch)
            rows = packing.pack(examples, cfg.max_length, bins, cfg.seed)
        else:
            rows = examples.map(functools.partial(packing.pad_row, length=cfg.max_length))
        batches = rows.batch(self.host_batch, drop_remainder=True, batch_fn=packing.stack_rows)
        if cfg.num_workers:
            _ensure_absl_flags_parsed()
            batches = batches.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.num_workers))
        if cfg.prefetch_batches:
            # The jitted step releases the GIL, so this thread builds the next batches
            # while the accelerator (or XLA's CPU threads) run the current one.
            batches = grain.experimental.ThreadPrefetchIterDataset(
                batches, prefetch_buffer_size=cfg.prefetch_batches
            )
        return batches

    def train_iterator(self, num_epochs: int | None = None) -> BatchIterator:
        return BatchIterator(self.train_dataset(num_epochs), self.config.batch_size, self.sharding)

    def steps_per_epoch(self, max_examples: int | None = None) -> int:
        """Batches in one epoch of this host's data.

        Exact for padding. With packing it runs the packer over one epoch (tokenizing
        it), or over the first `max_examples` and extrapolates. Multi-host runs should
        agree on one number (e.g. the minimum over hosts) before using it.
        """
        n_host = math.ceil(len(self.train_indices) / self.process_count)
        if not self.config.packing:
            return max(1, n_host // self.host_batch)
        it = self.train_iterator(num_epochs=1)
        for _ in it:
            if max_examples and it.stats.examples >= max_examples:
                break
        per_batch = it.stats.examples / max(it.stats.batches, 1)
        return max(1, int(n_host / per_batch)) if per_batch else 1

    # ---- validation ------------------------------------------------------------------

    def validation_batches(self) -> list[dict]:
        """Every validation example once, one per row, in a fixed order.

        Rows are padded (never packed) so each host has the same number of batches:
        hosts must run the same number of evaluation steps. Empty rows fill the end.
        """
        cfg = self.config
        if not len(self.val_indices):
            return []
        mine = self.val_indices[self.process_index :: self.process_count]
        ds = grain.MapDataset.source(_Examples(self.val_source, mine, self.example_fn))
        rows = [packing.pad_row(ex, cfg.max_length) for ex in ds.to_iter_dataset()]
        per_host = math.ceil(len(self.val_indices) / self.process_count)
        n_rows = math.ceil(per_host / self.host_batch) * self.host_batch
        rows += [packing.empty_row(cfg.max_length)] * (n_rows - len(rows))
        out = []
        for i in range(0, n_rows, self.host_batch):
            # Validation scores the student's own tokens: a cross-tokenizer run's teacher
            # rows are not used, and the filler rows have none.
            chunk = rows[i : i + self.host_batch]
            batch = {k: np.stack([r[k] for r in chunk]) for k in packing.ROW_KEYS}
            if self.sharding is not None:
                shape = (cfg.batch_size, cfg.max_length)
                batch = {
                    k: jax.make_array_from_process_local_data(self.sharding, v, shape)
                    for k, v in batch.items()
                }
            out.append(batch)
        return out


def _ensure_absl_flags_parsed() -> None:
    """grain's worker processes read grain's absl flags; a program not started through
    absl.app has not parsed them, so take their defaults instead of failing."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_pipeline(config: DataConfig | dict, **kwargs) -> DataPipeline:
    """DataPipeline from a DataConfig or a plain mapping of its fields (e.g. a ConfigDict)."""
    if not isinstance(config, DataConfig):
        config = DataConfig.from_mapping(config)
    return DataPipeline(config, **kwargs)


def time_batches(iterator: Iterator[dict], num_batches: int) -> dict:
    """Seconds spent waiting on the iterator alone: the input cost of a training step."""
    next(iterator)  # the first batch pays for thread start-up and warm caches
    t0 = time.perf_counter()
    for _ in range(num_batches):
        batch = next(iterator)
    jax.block_until_ready(batch)
    dt = time.perf_counter() - t0
    return {"batches": num_batches, "seconds": dt, "seconds_per_batch": dt / num_batches}
