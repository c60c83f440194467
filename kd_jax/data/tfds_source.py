"""TFDS path: convert JSONL/JSON/Parquet records once to ArrayRecord, read them back at random.

`prepare_tfds` runs a real `tfds.core.GeneratorBasedBuilder` with
file_format="array_record"; it needs no TensorFlow. The prepared folder
(<out_dir>/kd_jsonl/<name>/1.0.0) is read with `tfds.data_source`, so records stay on
disk and grain reads them by index: a 1M-conversation mixture costs no host memory,
and worker processes open the files instead of receiving a copy.

Each example stores the validated record as JSON text and its original "file line N",
in input order (shuffling at preparation is off), so index i here is record i of the
files: subsets and validation splits are the same as when reading the files directly.
Use a prepared folder as data.train = "tfds:<folder>" (split "train") or
"tfds:<folder>#validation".
"""

from __future__ import annotations

import json
import os
import re

import tensorflow_datasets as tfds

from kd_jax.data.sources import DataError, read_records

BUILDER_NAME = "kd_jsonl"
VERSION = "1.0.0"


class KdJsonl(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Validated chat/Alpaca records, one JSON text per example, in file order."""

    VERSION = tfds.core.Version(VERSION)
    # Not a TFDS dataset package: there are no checksums or metadata files beside the
    # code to look for (looking would also import importlib_resources, which pip may
    # not have installed with etils).
    code_path = None

    def __init__(self, *, split_files: dict, fmt: str, skip_bad_lines: bool, **kwargs):
        self._split_files = split_files
        self._fmt = fmt
        self._skip_bad_lines = skip_bad_lines
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="kd_jax training records (chat or Alpaca) as JSON text.",
            features=tfds.features.FeaturesDict(
                {"record": tfds.features.Text(), "location": tfds.features.Text()}
            ),
            metadata=tfds.core.MetadataDict(),
            # Keeps index i = record i of the input files (see the module docstring).
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        return {s: self._generate_examples(s, files) for s, files in self._split_files.items()}

    def _generate_examples(self, split, files):
        source = read_records(files, fmt=self._fmt, skip_bad_lines=self._skip_bad_lines)
        # Kept so a run reading this split can still report the lines dropped here.
        self.info.metadata.setdefault("skipped_lines", {})[split] = source.num_skipped
        for i in range(len(source)):
            yield i, {"record": json.dumps(source[i]), "location": source.location(i)}


def _config_name(name: str) -> str:
    clean = re.sub(r"[^a-z0-9_]", "_", name.lower()).strip("_")
    if not clean:
        raise DataError(f"dataset name {name!r} has no letters or digits; pick another name")
    return clean


def prepare_tfds(
    out_dir: str,
    name: str,
    *,
    train: str,
    validation: str = "",
    fmt: str = "auto",
    skip_bad_lines: bool = False,
) -> str:
    """Converts the files once (a later call reuses the result); returns the folder."""
    split_files = {"train": train, **({"validation": validation} if validation else {})}
    builder = KdJsonl(
        split_files=split_files,
        fmt=fmt,
        skip_bad_lines=skip_bad_lines,
        config=tfds.core.BuilderConfig(name=_config_name(name)),
        data_dir=out_dir,
        file_format="array_record",
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(verify_ssl=False),
    )
    return str(builder.data_dir)


def is_prepared_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path.split("#")[0], "dataset_info.json"))


class TfdsRecordSource:
    """Random access to a prepared split through `tfds.data_source` (ArrayRecord)."""

    def __init__(self, folder: str, split: str = "train"):
        self.folder, self.split = folder, split
        if not is_prepared_dir(folder):
            raise DataError(f"{folder}: no prepared TFDS dataset here; run prepare_tfds first")
        # tfds.data_source finds <data_dir>/<name>/<config>/<version> from the folder path.
        version_dir = os.path.abspath(folder)
        config_dir = os.path.dirname(version_dir)
        builder_dir = os.path.dirname(config_dir)
        name = f"{os.path.basename(builder_dir)}/{os.path.basename(config_dir)}"
        name += f":{os.path.basename(version_dir)}"
        try:
            self._data = tfds.data_source(
                name, split=split, data_dir=os.path.dirname(builder_dir), download=False
            )
        except (KeyError, ValueError) as e:
            raise DataError(
                f"{folder}: cannot read split {split!r} ({e}); check the path"
            ) from None
        meta_path = os.path.join(version_dir, "metadata.json")
        meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
        self.num_skipped = int(meta.get("skipped_lines", {}).get(split, 0))

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, i: int) -> dict:
        return json.loads(self._data[int(i)]["record"])

    def location(self, i: int) -> str:
        return self._data[int(i)]["location"].decode()

    def __repr__(self) -> str:
        return f"TfdsRecordSource({self.folder!r}, split={self.split!r}, {len(self)} records)"


def open_prepared(path: str) -> TfdsRecordSource:
    """ "DIR" reads the train split; "DIR#validation" another split."""
    folder, _, split = path.partition("#")
    return TfdsRecordSource(folder, split or "train")
