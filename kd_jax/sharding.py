"""Meshes, logical-axis rules and the shardings of parameters, optimizer state and batches.

Model code names axes logically (`embed`, `mlp`, `heads`, ...) and never mentions a mesh.
One rules table maps each logical name to mesh axes (`data`, `fsdp`, `tensor`). A
dimension that the mapped mesh axes do not divide stays replicated (e.g. Qwen2.5's two
KV heads on a tensor axis of 4), so every preset shards on every mesh.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from kd_jax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (or tuple of mesh axes, or None for replicated).
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("act_batch", ("data", "fsdp")),
    ("act_len", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_vocab", "tensor"),
    ("layers", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("lora_rank", None),
)

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]


class ShardingError(UserError):
    """A mesh or rules table that does not fit the devices, with the fix."""


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with axes (data, fsdp, tensor); one size may be -1 to take the remaining devices."""
    devices = list(devices if devices is not None else jax.devices())
    unknown = sorted(set(shape) - set(MESH_AXES))
    if unknown:
        raise ShardingError(f"Unknown mesh axes {unknown}; use {list(MESH_AXES)}.")
    sizes = [int(shape.get(name, 1)) for name in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ShardingError("At most one mesh axis may be -1 (fill with remaining devices).")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ShardingError(
                f"Mesh {dict(zip(MESH_AXES, sizes, strict=True))} cannot fill {len(devices)} "
                "devices; make the fixed axes divide the device count."
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ShardingError(
            f"Mesh {dict(zip(MESH_AXES, sizes, strict=True))} needs {math.prod(sizes)} devices "
            f"but {len(devices)} are available; set one axis to -1 to fill."
        )
    grid = np.asarray(devices).reshape(sizes)
    return Mesh(grid, MESH_AXES)


def logical_to_spec(
    axes: Sequence[str | None], shape: Sequence[int] | None, mesh: Mesh, rules: Rules
) -> PartitionSpec:
    """PartitionSpec for logical `axes`; mesh axes already used or not dividing are dropped."""
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for i, name in enumerate(axes):
        target = table.get(name) if name is not None else None
        if target is None:
            spec.append(None)
            continue
        targets = (target,) if isinstance(target, str) else tuple(target)
        kept = []
        size = 1
        for t in targets:
            if t in used or mesh.shape[t] == 1:
                continue
            if shape is not None and shape[i] % (size * mesh.shape[t]):
                continue
            kept.append(t)
            size *= mesh.shape[t]
        used.update(kept)
        spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*spec)


def _axes_of(variable: nnx.Variable) -> tuple[str | None, ...]:
    axes = variable.get_metadata().get("axes")
    if axes is None:
        return (None,) * len(variable.get_value().shape)
    return tuple(axes)


def rules_from(table) -> tuple:
    """A rules table as tuples, also when read back from JSON (a logical axis mapped to
    several mesh axes comes back as a list)."""
    as_tuple = lambda v: tuple(v) if isinstance(v, list) else v  # noqa: E731
    return tuple((name, as_tuple(axes)) for name, axes in table)


def require_rules(rules) -> None:
    """Sharding on a mesh needs the rules table: the config's, never a silent default."""
    if rules is None:
        raise ValueError(
            "a mesh was given without a rules table; pass rules=config.sharding_rules "
            "(or kd_jax.sharding.DEFAULT_RULES)."
        )


def state_shardings(state: nnx.State, mesh: Mesh, rules: Rules) -> nnx.State:
    """NamedShardings for an (abstract or concrete) NNX state from its `axes` metadata."""

    def one(v):
        if not isinstance(v, nnx.Variable):
            return NamedSharding(mesh, PartitionSpec())
        spec = logical_to_spec(_axes_of(v), v.get_value().shape, mesh, rules)
        return v.replace(NamedSharding(mesh, spec))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int = 2, rows: int | None = None):
    """Sharding of a [batch, length, ...] array: batch over the data-parallel axes (those
    that divide `rows`, when given)."""
    shape = None if rows is None else (rows,) + (1,) * (ndim - 1)
    spec = logical_to_spec(("act_batch",) + (None,) * (ndim - 1), shape, mesh, rules)
    return NamedSharding(mesh, spec)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


# --- activation constraints --------------------------------------------------------------

_ACTIVE: list[tuple[Mesh, Rules]] = []


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: Rules):
    """Within this context, `constrain` pins activations to the mesh; outside it is a no-op."""
    _ACTIVE.append((mesh, tuple(rules)))
    try:
        yield
    finally:
        _ACTIVE.pop()


def under_activation_sharding(fn, mesh: Mesh, rules: Rules | None):
    """`fn` traced inside `activation_sharding(mesh, rules)`: wrap a function before jit.
    With `rules=None`, `fn` itself (XLA then propagates activation shardings alone)."""
    if rules is None:
        return fn

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with activation_sharding(mesh, rules):
            return fn(*args, **kwargs)

    return wrapped


def active_activation_sharding() -> tuple[Mesh, Rules] | None:
    """(mesh, rules) of the innermost `activation_sharding` context, or None outside one."""
    return _ACTIVE[-1] if _ACTIVE else None


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """Sharding constraint by logical axis names (used by model code)."""
    if not _ACTIVE:
        return x
    mesh, rules = _ACTIVE[-1]
    spec = logical_to_spec(axes, x.shape, mesh, rules)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


# --- multi-process -----------------------------------------------------------------------


def initialize_distributed() -> None:
    """Calls `jax.distributed.initialize()` when launched as one of several processes.

    Recognised launches: an explicit coordinator (KD_JAX_COORDINATOR, KD_JAX_NUM_PROCESSES,
    KD_JAX_PROCESS_ID), SLURM, and Cloud TPU VMs (which JAX detects by itself).
    """
    if jax.distributed.is_initialized():
        return
    env = os.environ
    if "KD_JAX_COORDINATOR" in env:
        jax.distributed.initialize(
            coordinator_address=env["KD_JAX_COORDINATOR"],
            num_processes=int(env["KD_JAX_NUM_PROCESSES"]),
            process_id=int(env["KD_JAX_PROCESS_ID"]),
        )
    elif int(env.get("SLURM_NTASKS", "1")) > 1 or env.get("TPU_WORKER_HOSTNAMES", "").count(","):
        jax.distributed.initialize()
    else:
        return
    logging.info(
        "JAX distributed: process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


# --- one batch fed by every host ---------------------------------------------------------


def host_rows(sharding: NamedSharding, num_rows: int) -> range:
    """The rows of a global [num_rows, ...] batch that this process's devices hold under
    `sharding` (its slice to feed; every row when the batch is not split across hosts)."""
    index = sharding.addressable_devices_indices_map((num_rows,) + (1,) * (len(sharding.spec) - 1))
    rows = {r for idx in index.values() for r in range(num_rows)[idx[0]]}
    lo, hi = min(rows), max(rows) + 1
    if len(rows) != hi - lo:
        raise ShardingError(
            f"this host's devices hold rows {sorted(rows)} of a batch of {num_rows}, not one "
            "block; order the mesh so that each host's devices are adjacent (make_mesh does)."
        )
    return range(lo, hi)


def place_rows(local: np.ndarray, sharding: NamedSharding, num_rows: int) -> jax.Array:
    """A global [num_rows, ...] array from this host's rows (`host_rows`) of it."""
    return jax.make_array_from_process_local_data(sharding, local, (num_rows, *local.shape[1:]))


def gather_rows(x: jax.Array) -> np.ndarray:
    """Every row of a global array, as numpy on every host (one all-gather across hosts)."""
    if jax.process_count() == 1 or x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def mesh_of(tree) -> Mesh | None:
    """The mesh the arrays of `tree` (a model's state, say) are placed on, if any."""
    sharding = getattr(jax.tree.leaves(tree)[0], "sharding", None)
    return getattr(sharding, "mesh", None)


def barrier(name: str) -> None:
    """Every host waits here until all have arrived (nothing on one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def is_writer() -> bool:
    """Whether this process writes a job's outputs (process 0 of a multi-host job)."""
    return jax.process_index() == 0
