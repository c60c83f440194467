"""`open_source`: the record source a `data.train` / `data.validation` path names.

`tfds:DIR` or a folder holding `dataset_info.json` is a prepared TFDS dataset, read through
`tfds.data_source` (kd_jax.data.tfds_source); anything else is JSONL or Parquet files and
folders and HF `save_to_disk` folders (kd_jax.data.sources.read_records).
"""

from __future__ import annotations

from collections.abc import Sequence

from kd_jax.data import hf_datasets_source
from kd_jax.data.sources import read_records


def open_source(paths: str | Sequence[str], *, fmt: str = "auto", skip_bad_lines: bool = False):
    """A random-access record source for `paths`: a prepared TFDS folder or data files."""
    plain = isinstance(paths, str) and "," not in paths
    if plain and not hf_datasets_source.is_saved_dataset(paths):
        from kd_jax.data import tfds_source  # tfds is imported only when used

        if paths.startswith("tfds:") or tfds_source.is_prepared_dir(paths):
            return tfds_source.open_prepared(paths.removeprefix("tfds:"))
    return read_records(paths, fmt=fmt, skip_bad_lines=skip_bad_lines)
