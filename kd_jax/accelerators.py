"""Accelerator chips for plans: peak FLOP/s and HBM per chip, TPU topologies, the verdict.

    devices, note = topology_devices("v5p:4x4x4")   # 64 abstract TPU v5p devices

The TPU compiler (libtpu, the `[tpu]` extra) runs on a machine without a TPU:
`jax.experimental.topologies.get_topology_desc` gives abstract devices of a named slice,
and a `jit(...).lower(...)` whose inputs are ShapeDtypeStructs sharded on a Mesh of them
compiles to a TPU executable whose `memory_analysis()` is the TPU compiler's own.

Per chip, dense bf16 peak and HBM (vendor data sheets): TPU v4 275 TFLOP/s 32 GiB, v5e 197
/ 16, v5p 459 / 95, v6e 918 / 32; H100 SXM 989 / 80, H200 989 / 141.
"""

from __future__ import annotations

import dataclasses
import math
import os

from kd_jax.errors import UserError

GiB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    peak_flops: float  # dense bf16 FLOP/s per chip
    hbm_bytes: int


CHIPS = {
    "v4": Chip("TPU v4", 275e12, 32 * GiB),
    "v5e": Chip("TPU v5e", 197e12, 16 * GiB),
    "v5p": Chip("TPU v5p", 459e12, 95 * GiB),
    "v6e": Chip("TPU v6e", 918e12, 32 * GiB),
    "h100": Chip("H100 SXM", 989e12, 80 * GiB),
    "h200": Chip("H200", 989e12, 141 * GiB),
}
# Topology-name prefixes as libtpu spells them, and device_kind strings, to table keys.
_ALIASES = {
    "v5litepod": "v5e",
    "v5lite": "v5e",
    "tpu v5 lite": "v5e",
    "tpu v5e": "v5e",
    "tpu v5p": "v5p",
    "tpu v5": "v5p",
    "tpu v4": "v4",
    "tpu v6 lite": "v6e",
    "tpu v6e": "v6e",
    "v6": "v6e",
}


class TopologyError(UserError):
    """A topology name the TPU compiler does not know, with the fix."""


def chip(name: str) -> Chip | None:
    """The chip of a topology name ("v5p:4x4x4") or a device_kind ("TPU v5 lite")."""
    key = name.split(":")[0].strip().lower()
    key = _ALIASES.get(key, key)
    return CHIPS.get(key)


# `jax.Device.device_kind` substrings (lower case, first match wins: "v5 lite" before
# "v5"; TPU v5p reports "TPU v5", GPUs "NVIDIA H100 80GB HBM3").
_KIND_KEYS = (
    ("v6", "v6e"),
    ("v5 lite", "v5e"),
    ("v5e", "v5e"),
    ("v5p", "v5p"),
    ("v5", "v5p"),
    ("v4", "v4"),
    ("h200", "h200"),
    ("h100", "h100"),
)


def chip_for_kind(device_kind: str) -> Chip | None:
    """The chip a device reports itself as, or None when it is not in the table."""
    found = chip(device_kind)
    if found is not None:
        return found
    kind = device_kind.lower()
    return next((CHIPS[key] for sub, key in _KIND_KEYS if sub in kind), None)


def chips_in(topology: str) -> int:
    """Chips in a topology name: the product of its dimensions ("v5p:4x4x4" -> 64)."""
    _, _, dims = topology.partition(":")
    if not dims or not all(d.isdigit() for d in dims.split("x")):
        raise TopologyError(f"--topology {topology!r}: write a slice as e.g. v5p:4x4x4 or v6e:2x4.")
    return math.prod(int(d) for d in dims.split("x"))


def topology_devices(topology: str):
    """(abstract devices of `topology`, note): TPU devices from libtpu, or None and a note
    saying why not (the plan then falls back to simulated CPU devices)."""
    chips_in(topology)
    try:
        import libtpu  # noqa: F401  (the `[tpu]` extra)
    except ImportError:
        return None, "libtpu is not installed (pip install 'kd_jax[tpu]'): CPU-simulated plan"
    from jax.experimental import topologies

    # Without a TPU VM's metadata server libtpu would look for worker hostnames.
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    # A deviceless compile opens no chip, so it need not take libtpu's one-process lock.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        desc = topologies.get_topology_desc(platform="tpu", topology_name=topology)
    except Exception as e:  # libtpu raises plain RuntimeErrors / XlaRuntimeErrors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TopologyError(f"--topology {topology!r}: the TPU compiler says: {first}") from None
    return list(desc.devices), None


def verdict(
    peak: int,
    hbm: int,
    *,
    temporaries: int,
    arguments: int,
    mesh: dict,
    grad_accum: int,
    remat_policy: str,
) -> tuple[bool, str]:
    """(fits, "fits" | "does not fit: try grad_accum=N / fsdp=M / remat=full").

    Temporaries (activations) shrink about linearly with more micro-batches, arguments
    (weights, optimizer state) with a larger fsdp axis; remat=full drops the saved
    activations of every layer."""
    if peak <= hbm:
        return True, "fits"
    tries = []
    resident = peak - temporaries
    if resident < hbm and temporaries > 0:
        factor = 2 ** math.ceil(math.log2(temporaries / max(hbm - resident, 1)))
        tries.append(f"grad_accum={grad_accum * factor}")
    if arguments > 0:
        factor = 2 ** math.ceil(math.log2(max(arguments / (0.5 * hbm), 1.0)) + 0)
        tries.append(f"fsdp={mesh.get('fsdp', 1) * max(factor, 2)}")
    if remat_policy != "full":
        tries.append("remat=full")
    return False, "does not fit: try " + " / ".join(tries)
