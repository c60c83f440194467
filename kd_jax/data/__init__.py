"""Data for kd_jax: records -> tokens and loss masks -> packed, sharded, resumable batches.

Modules: sources (files, validation, DataError), hf_datasets_source (save_to_disk
folders), templates (Alpaca prompts), tokenize
(chat template masks), packing (rows, batches, stats), subsets (nested sizes,
validation split), pipeline (grain), tfds_source (ArrayRecord via TFDS), builtin
(synthetic tasks), tokenizer (built-in tokenizer), token_alignment (span groups of two
tokenizations), cross_tokenize (records tokenized by the student's and the teacher's
tokenizers, for cross-tokenizer KD). The names below are the public API.
"""

from kd_jax.data.builtin_paths import write_builtin_data
from kd_jax.data.builtin_tokenizer import build_tokenizer
from kd_jax.data.data_config import DataConfig
from kd_jax.data.packing import ROW_KEYS, BatchStats
from kd_jax.data.pipeline import BatchIterator, DataPipeline, make_pipeline, time_batches
from kd_jax.data.source_dispatch import open_source
from kd_jax.data.sources import DataError, RecordSource, read_records
from kd_jax.data.subsets import split_indices
from kd_jax.data.synthetic_tasks import extract_answer, is_correct
from kd_jax.data.templates import alpaca_eval_prompt, render_alpaca
from kd_jax.data.tokenize import ExampleTokenizer, load_tokenizer, render_chat

__all__ = [
    "ROW_KEYS",
    "BatchIterator",
    "BatchStats",
    "DataConfig",
    "DataError",
    "DataPipeline",
    "ExampleTokenizer",
    "RecordSource",
    "alpaca_eval_prompt",
    "build_tokenizer",
    "extract_answer",
    "is_correct",
    "load_tokenizer",
    "render_chat",
    "make_pipeline",
    "open_source",
    "read_records",
    "render_alpaca",
    "split_indices",
    "time_batches",
    "write_builtin_data",
]
