"""Reading training records from JSONL, JSON, Parquet, HF datasets and TFDS folders.

This module owns everything between a path and a validated in-memory record:
path expansion (file, folder, glob, comma list), format detection (chat or Alpaca),
per-line validation with one clear error per bad line (or a logged count of skipped
lines), and the random-access `RecordSource` the grain pipeline reads from.

A record after validation is a plain dict in one of two shapes:
  chat:   {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...], ...}
  alpaca: {"instruction": str, "input": str, "output": str[, "answer": str], ...}
Extra fields (`task`, `answer`, `id`, ...) are kept so evaluation can use them.
"""

from __future__ import annotations

import collections
import glob
import json
import logging
import os
from collections.abc import Iterator, Sequence

import numpy as np

from kd_jax.data import hf_datasets_source
from kd_jax.errors import UserError

log = logging.getLogger("kd_jax.data")

FORMATS = ("auto", "chat", "alpaca")
ROLES = ("system", "user", "assistant")
DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
SKIP_HINT = "fix or remove it, or set data.skip_bad_lines=True to skip bad lines"


class DataError(UserError):
    """A problem with the user's data or data config, stated in one line with its fix."""


def expand_paths(paths: str | Sequence[str]) -> list[str]:
    """Files named by `paths`: files, folders (their data files, sorted), globs, comma lists."""
    if isinstance(paths, str):
        paths = [p.strip() for p in paths.split(",") if p.strip()]
    if not paths:
        raise DataError("no data path given; set data.train to a JSONL/JSON/Parquet file or folder")
    files: list[str] = []
    for path in paths:
        if any(c in path for c in "*?["):
            matched = sorted(glob.glob(path))
            if not matched:
                raise DataError(f"{path}: the pattern matches no file; check data.train")
            files.extend(matched)
        elif os.path.isdir(path):
            found = sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(path)
                for name in names
                if name.endswith(DATA_SUFFIXES)
            )
            if not found:
                raise DataError(
                    f"{path}: the folder holds no .jsonl/.json/.parquet file; check data.train"
                )
            files.extend(found)
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder; check data.train")
    return files


def validate_record(obj: object, fmt: str) -> dict:
    """Returns the record in its canonical shape, or raises DataError(problem) without location."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}")
    if fmt == "auto":
        if "messages" in obj:
            fmt = "chat"
        elif "instruction" in obj:
            fmt = "alpaca"
        else:
            raise DataError("the record has neither `messages` (chat) nor `instruction` (alpaca)")
    if fmt == "chat":
        return _validate_chat(obj)
    if fmt == "alpaca":
        return _validate_alpaca(obj)
    raise DataError(f"unknown data.format {fmt!r}; use one of {FORMATS}")


def _validate_chat(obj: dict) -> dict:
    messages = obj.get("messages")
    if messages is None:
        raise DataError("missing `messages`")
    if not isinstance(messages, list) or not messages:
        raise DataError("`messages` must be a non-empty list")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise DataError(f"message {i} needs a string `content` and a `role`")
        role = m.get("role")
        if role not in ROLES:
            raise DataError(f"message {i} has unknown role {role!r} (allowed: {', '.join(ROLES)})")
        if role == "assistant" and not m["content"].strip():
            raise DataError(f"message {i} is an empty assistant turn")
        clean.append({"role": role, "content": m["content"]})
    if not any(m["role"] == "assistant" for m in clean):
        raise DataError("the conversation has no assistant turn, so nothing would be trained")
    return {**obj, "messages": clean}


def _validate_alpaca(obj: dict) -> dict:
    for key in ("instruction", "output"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            raise DataError(f"missing or empty `{key}`")
    inp = obj.get("input", "")
    if inp is None:
        inp = ""
    if not isinstance(inp, str):
        raise DataError("`input` must be a string")
    out = {**obj, "input": inp}
    if "answer" in obj and obj["answer"] is not None:
        out["answer"] = str(obj["answer"])
    return out


def _unit(path: str) -> str:
    """What a record's number counts in this file: JSONL lines, JSON list items, Parquet rows."""
    if path.endswith(".parquet"):
        return "row"
    if path.endswith(".json"):
        try:
            with open(path, "rb") as f:
                if f.read(4096).lstrip()[:1] == b"[":
                    return "item"
        except OSError:
            pass  # reading the file reports the problem properly
    return "line"


def _raw_items(path: str) -> Iterator[tuple[int, object]]:
    """Yields (line, item or row number from 1, parsed object or a DataError) for one file."""
    if path.endswith(".parquet"):
        yield from _parquet_items(path)
        return
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}); check data.train") from None
    if path.endswith(".json") and data.lstrip()[:1] == b"[":
        # A JSON list (Math10K and LLM-Adapters ship this way): items are numbered from 1.
        try:
            items = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 at byte {e.start}; re-encode as UTF-8") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {e.lineno}: malformed JSON ({e.msg})") from None
        yield from enumerate(items, start=1)
        return
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield lineno, DataError(f"not valid UTF-8 (byte {e.start} of the line)")
            continue
        try:
            yield lineno, json.loads(text)
        except json.JSONDecodeError as e:
            yield lineno, DataError(f"malformed JSON ({e.msg} at column {e.colno})")


def _parquet_items(path: str) -> Iterator[tuple[int, object]]:
    import pyarrow.parquet as pq  # only Parquet users need pyarrow

    try:
        pf = pq.ParquetFile(path)
    except OSError as e:
        raise DataError(f"{path}: cannot read as Parquet ({e}); check data.train") from None
    row = 0
    for batch in pf.iter_batches(batch_size=4096):
        for obj in batch.to_pylist():
            row += 1
            yield row, obj


def _saved_dataset_items(path: str) -> Iterator[tuple[int, object]]:
    try:
        yield from hf_datasets_source.saved_dataset_rows(path)
    except hf_datasets_source.DatasetFolderError as e:
        raise DataError(str(e)) from None


class RecordSource:
    """Validated records held as compact JSON bytes, with each one's file and line.

    Random access (`len`, `[i]`) makes it a grain data source; keeping bytes rather than
    dicts holds a 1M-conversation mixture in about its size on disk.
    """

    def __init__(self, blobs, files, file_idx, lines, *, units=None, skipped=None):
        self._blobs = blobs
        self.files = list(files)
        self.units = list(units or ["line"] * len(self.files))  # what `lines` count per file
        self._file_idx = np.asarray(file_idx, np.int32)
        self._lines = np.asarray(lines, np.int64)
        self.skipped_reasons: dict[str, int] = dict(skipped or {})
        self.num_skipped = sum(self.skipped_reasons.values())

    def __len__(self) -> int:
        return len(self._blobs)

    def __getitem__(self, i: int) -> dict:
        return json.loads(self._blobs[int(i)])

    def location(self, i: int) -> str:
        f = self._file_idx[i]
        return f"{self.files[f]} {self.units[f]} {self._lines[i]}"

    def __repr__(self) -> str:
        return f"RecordSource({len(self)} records from {len(self.files)} file(s))"


def read_records(
    paths: str | Sequence[str], *, fmt: str = "auto", skip_bad_lines: bool = False
) -> RecordSource:
    """Loads and validates every record of `paths`.

    A bad line raises DataError naming file, line, problem and fix; with
    `skip_bad_lines` it is counted instead and the counts are logged as a warning.
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown data.format {fmt!r}; use one of {', '.join(FORMATS)}")
    if isinstance(paths, str) and "," not in paths and hf_datasets_source.is_saved_dataset(paths):
        files, units = [paths], ["row"]
        items = [_saved_dataset_items(paths)]
    else:
        files = expand_paths(paths)
        units = [_unit(path) for path in files]
        items = [_raw_items(path) for path in files]  # generators: each file read in turn
    blobs, file_idx, lines = [], [], []
    skipped: collections.Counter[str] = collections.Counter()
    first_skips: list[str] = []
    for fi, (path, unit, file_items) in enumerate(zip(files, units, items, strict=True)):
        for lineno, obj in file_items:
            try:
                if isinstance(obj, DataError):
                    raise obj
                rec = validate_record(obj, fmt)
            except DataError as e:
                if not skip_bad_lines:
                    raise DataError(f"{path} {unit} {lineno}: {e}; {SKIP_HINT}") from None
                skipped[str(e).split(" (")[0]] += 1
                if len(first_skips) < 5:
                    first_skips.append(f"{path} {unit} {lineno}: {e}")
                continue
            blobs.append(json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode())
            file_idx.append(fi)
            lines.append(lineno)
    n_skipped = sum(skipped.values())
    if n_skipped:
        log.warning(
            "skipped %d bad line(s) of %d in %s: %s; first: %s",
            n_skipped,
            n_skipped + len(blobs),
            ", ".join(files),
            dict(skipped),
            " | ".join(first_skips),
        )
    if not blobs:
        raise DataError(f"{', '.join(files)}: no valid record found; check the files and format")
    return RecordSource(blobs, files, file_idx, lines, units=units, skipped=skipped)
