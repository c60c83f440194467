"""Attention temporaries from the TPU compiler: splash vs xla, fwd + bwd of one layer.

    python benchmarks/attention_tpu_memory.py [--topology v5p:2x2x1 --length 8192]

An 8B-class attention layer (Llama-3.1-8B: 32 query heads, 8 kv heads, head_dim 128),
bfloat16, one row of `--length` tokens per device with two packed examples, compiled
deviceless for the topology by libtpu (no TPU needed) inside the activation-sharding
context the train step uses (splash runs under shard_map). Prints the compiler's
temporaries per device for each kernel and their ratio.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from kd_jax import accelerators
from kd_jax import sharding as shd
from kd_jax.models import attention


def temporaries(kind: str, mesh, t: int, n=32, k=8, h=128) -> int:
    b = mesh.size
    rows = NamedSharding(mesh, P(("data", "fsdp")))
    q = jax.ShapeDtypeStruct((b, t, n, h), jnp.bfloat16, sharding=rows)
    kv = jax.ShapeDtypeStruct((b, t, k, h), jnp.bfloat16, sharding=rows)
    seg = jax.ShapeDtypeStruct((b, t), jnp.int32, sharding=rows)

    def loss(q, k, v, seg):
        with shd.activation_sharding(mesh, shd.DEFAULT_RULES):
            out = attention.attend(kind, q, k, v, attention.prepare(kind, seg, seg.shape))
        return jnp.sum(out.astype(jnp.float32))

    fn = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    return fn.lower(q, kv, kv, seg).compile().memory_analysis().temp_size_in_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--topology", default="v5p:2x2x1")
    p.add_argument("--length", type=int, default=8192)
    args = p.parse_args()
    devices, why = accelerators.topology_devices(args.topology)
    if devices is None:
        raise SystemExit(f"attention_tpu_memory: {why}")
    mesh = shd.make_mesh({"fsdp": -1}, devices)
    got = {kind: temporaries(kind, mesh, args.length) for kind in ("xla", "splash")}
    print(
        f"{args.topology}, {devices[0].device_kind}, 1 row x {args.length} tokens a device, "
        "32 q / 8 kv heads x 128, bf16, fwd + bwd; temporaries per device:"
    )
    for kind, n in got.items():
        print(f"  {kind:7s} {n / 2**20:10.1f} MiB")
    print(f"  xla / splash = {got['xla'] / max(got['splash'], 1):.0f}x")


if __name__ == "__main__":
    main()
