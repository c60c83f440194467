"""Reading and writing the safetensors format with NumPy memory maps.

A reader returns zero-copy views (`np.memmap`) so that a loader can slice out exactly the
shard one device needs; bfloat16 comes through `ml_dtypes`. Only safetensors are read:
pickle-based checkpoints (`.bin`, `.pt`) can run code on load and are refused.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

from kd_jax.errors import UserError

_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


class SafetensorsError(UserError):
    """A safetensors file that cannot be read, with the file named."""


class SafetensorsFile:
    """Lazy, memory-mapped access to the tensors of one `.safetensors` file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise SafetensorsError(f"{self.path} is not a safetensors file (too short).")
            (n,) = struct.unpack("<Q", raw)
            try:
                header = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise SafetensorsError(f"{self.path} has a corrupt safetensors header: {e}") from e
        self.metadata = header.pop("__metadata__", {}) or {}
        self._entries = header
        self._offset = 8 + n
        self._mmap = None
        data_bytes = self.path.stat().st_size - self._offset
        needed = max((e["data_offsets"][1] for e in header.values()), default=0)
        if needed > data_bytes:
            raise SafetensorsError(
                f"{self.path} is truncated: its header lists {needed:,} bytes of tensors but "
                f"the file holds {max(data_bytes, 0):,}; copy or download the file again."
            )

    def keys(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name]["shape"])

    def array(self, name: str) -> np.ndarray:
        """A read-only memory-mapped view of tensor `name` (no data is read until sliced)."""
        entry = self._entries[name]
        if entry["dtype"] not in _DTYPES:
            raise SafetensorsError(f"{self.path}: tensor {name} has unsupported dtype.")
        if self._mmap is None:
            self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self._offset)
        start, end = entry["data_offsets"]
        dtype = _DTYPES[entry["dtype"]]
        return self._mmap[start:end].view(dtype).reshape(entry["shape"])


def save_file(tensors: dict[str, np.ndarray], path: str | Path, metadata: dict | None = None):
    """Writes `tensors` to `path`; the header is padded to 8 bytes as the format asks."""
    header: dict = {"__metadata__": {"format": "pt", **(metadata or {})}}
    offset = 0
    arrays = []
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype not in _NAMES:
            raise SafetensorsError(f"Cannot save tensor {name} of dtype {arr.dtype}.")
        header[name] = {
            "dtype": _NAMES[arr.dtype],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
        arrays.append(arr)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for arr in arrays:
            f.write(arr.tobytes())
