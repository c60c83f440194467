"""HF `datasets` folders (written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`)
as a record source, beside JSONL, Parquet and TFDS.

    data.train = "path/to/saved"             a Dataset folder, or a DatasetDict's "train"
    data.train = "path/to/saved#validation"  a DatasetDict's split

The folder is memory-mapped by `datasets.load_from_disk` and read in row batches; each
row goes through the same validation as a JSONL line (`kd_jax.data.sources`), so a bad
row is one line naming the folder, the row and the fix. This module imports nothing
from kd_jax, so sources.py can dispatch to it without an import cycle.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

DATASET_FILES = ("state.json", "dataset_info.json")  # one saved Dataset
DICT_FILE = "dataset_dict.json"  # a saved DatasetDict: one folder per split
READ_BATCH = 4096


class DatasetFolderError(ValueError):
    """A saved `datasets` folder that cannot be read (sources.py re-raises it as DataError)."""


def _split(path: str) -> tuple[str, str | None]:
    folder, _, split = path.partition("#")
    return folder, split or None


def is_saved_dataset(path: str) -> bool:
    folder, _ = _split(path)
    return os.path.isfile(os.path.join(folder, DICT_FILE)) or all(
        os.path.isfile(os.path.join(folder, f)) for f in DATASET_FILES
    )


def _load(path: str):
    try:
        import datasets
    except ImportError:
        raise DatasetFolderError(
            f"{path} is an HF datasets folder but the `datasets` package is not installed; "
            "pip install datasets"
        ) from None
    folder, split = _split(path)
    try:
        loaded = datasets.load_from_disk(folder)
    except Exception as e:  # noqa: BLE001 - any failure to open is the user's folder
        raise DatasetFolderError(
            f"{folder}: cannot read as a saved HF dataset ({type(e).__name__}: {e}); "
            "re-save it with Dataset.save_to_disk"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        split = split or "train"
        if split not in loaded:
            raise DatasetFolderError(
                f"{folder} has no split {split!r} (it has {', '.join(loaded)}); "
                f"use {folder}#<split>"
            )
        return loaded[split]
    if split:
        raise DatasetFolderError(f"{folder} holds one Dataset, not splits; drop '#{split}'")
    return loaded


def saved_dataset_rows(path: str) -> Iterator[tuple[int, dict]]:
    """(row number from 1, row as a plain dict without null fields) of a saved Dataset."""
    ds = _load(path)
    row = 0
    for batch in ds.iter(batch_size=READ_BATCH):  # dict of columns -> lists
        names = list(batch)
        for values in zip(*(batch[n] for n in names), strict=True):
            row += 1
            # A table has no "missing" field: a null column value reads as absent.
            yield row, {n: v for n, v in zip(names, values, strict=True) if v is not None}
