"""DataConfig: every data setting, with plain names a ConfigDict can carry one to one."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from kd_jax.data.sources import FORMATS, DataError


@dataclasses.dataclass(frozen=True)
class DataConfig:
    # Where the records are: files, folders, globs, comma lists, or a prepared TFDS
    # folder ("tfds:DIR" or any folder holding dataset_info.json).
    train: str = ""
    # Separate validation files; when empty, validation_size records are held out of train.
    validation: str = ""
    format: str = "auto"  # chat | alpaca | auto (per record: `messages` or `instruction`)
    tokenizer: str = ""  # local HF tokenizer folder
    max_length: int = 256  # tokens per example (longer ones are truncated, and counted)
    packing: bool = True  # several examples per row; False pads one example per row
    num_packing_bins: int = 0  # rows the packer fills at once; 0 = max(64, host batch rows)
    train_on_inputs: bool = False  # supervise every token, not only assistant/response
    alpaca_template: str = "alpaca"  # alpaca | kd_generalization (Study B's exact strings)
    num_examples: int = 0  # training subset size, nested across sizes; 0 = all
    validation_size: int = 0  # records held out of train for validation
    subset_seed: int = 0  # picks the subset and the validation split
    seed: int = 0  # shuffles the training order, differently each epoch
    batch_size: int = 8  # global rows per batch, split evenly over processes
    skip_bad_lines: bool = False  # count and log bad lines instead of stopping at the first
    # grain reader threads per process. Tokenizing holds the GIL, so threads pay off only
    # for slow storage; CPU-bound tokenizing scales with num_workers instead.
    num_threads: int = 0
    prefetch_batches: int = 2  # batches built ahead by a background thread; 0 = none
    # Keep tokenized examples in memory when the training subset has at most this many
    # records (small-data runs repeat epochs many times); 0 = never.
    cache_examples: int = 100_000
    # grain worker processes, each packing its own share of the data: the batch order
    # depends on this number, so resume with the value the run started with. 0 = none.
    num_workers: int = 0

    def __post_init__(self):
        if self.format not in FORMATS:
            raise DataError(f"unknown data.format {self.format!r}; use one of {FORMATS}")
        if self.max_length < 2:
            raise DataError(f"data.max_length={self.max_length} is too small; use at least 2")
        if self.batch_size < 1:
            raise DataError(f"data.batch_size={self.batch_size} must be at least 1")

    @classmethod
    def from_mapping(cls, values: Mapping) -> DataConfig:
        """From a dict or ml_collections.ConfigDict; an unknown key is an error, not ignored."""
        values = dict(values)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise DataError(
                f"unknown data config key(s) {unknown}; known keys: {', '.join(sorted(names))}"
            )
        return cls(**values)
