"""Dtypes as the config asks: a model from a kd_jax run folder, LoRA base vs adapters."""

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from configs import base
from kd_jax import checkpoint as ckpt_lib
from kd_jax import sharding as shd
from kd_jax.models import loader


def _section(**kw):
    mc = base.model_config()
    mc.preset = "tiny-student-xs"
    mc.update(kw)
    return mc


def _dtypes(tree):
    return {str(x.dtype) for x in jax.tree.leaves(tree)}


def test_model_from_a_run_folder_takes_the_dtypes_asked(tmp_path, devices):
    mesh = shd.make_mesh({"data": 1}, devices[:1])
    src = _section()  # a float32 run
    parts = loader.build(src, role="student", mesh=mesh, rules=shd.DEFAULT_RULES)
    ckpt = ckpt_lib.Checkpointer(tmp_path, async_save=False, keep_best=False)
    ckpt.save(1, {"params": parts.trainable}, {}, {}, force=True)
    ckpt.close()
    run = ConfigDict({"student": src.to_dict(), "resolved_vocab_size": parts.cfg.vocab_size})
    (tmp_path / "config.json").write_text(run.to_json())

    asked = _section(preset="", workdir=str(tmp_path), param_dtype="bfloat16", dtype="bfloat16")
    loaded = loader.build(asked, role="teacher", mesh=mesh, rules=shd.DEFAULT_RULES)
    assert loaded.cfg.param_dtype == "bfloat16" and loaded.cfg.dtype == "bfloat16"
    assert _dtypes(loaded.trainable) == {"bfloat16"}
    for a, b in zip(
        jax.tree.leaves(loaded.trainable), jax.tree.leaves(parts.trainable), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b.astype(jnp.bfloat16)))


def test_lora_keeps_the_base_in_its_dtype_and_adapters_in_theirs(devices):
    mesh = shd.make_mesh({"data": 1}, devices[:1])
    mc = _section(param_dtype="bfloat16", dtype="bfloat16")
    mc.lora.enabled = True
    parts = loader.build(mc, role="student", mesh=mesh, rules=shd.DEFAULT_RULES)
    assert _dtypes(parts.trainable) == {"float32"}  # the adapters: f32 master weights
    assert _dtypes(parts.frozen) == {"bfloat16"}  # the frozen base
