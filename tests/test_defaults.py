"""configs/base.py is the one source of defaults: the dataclasses that mirror its sections
(kd_jax.data.DataConfig, kd_jax.losses.KDLossConfig) default to exactly its values."""

import dataclasses

from configs import base
from kd_jax.data import DataConfig
from kd_jax.losses import KDLossConfig
from kd_jax.step_builder import loss_config


def _defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def test_data_config_defaults_are_the_base_config():
    assert _defaults(DataConfig) == base.get_config().data.to_dict()


def test_loss_config_defaults_are_the_base_config():
    kd = base.get_config().kd.to_dict()
    step_only = ("chunk_size", "teacher_cache", "cross_tokenizer", "teacher_tokenizer")
    expected = {k: v for k, v in kd.items() if k not in step_only}
    expected["kind"] = expected.pop("divergence")
    expected["vocab_size"] = expected["vocab_size"] or None  # 0 in a config = off
    assert _defaults(KDLossConfig) == expected


def test_the_base_kd_config_builds_the_default_loss():
    c = base.get_config()
    c.method = "kd"
    assert loss_config(c) == KDLossConfig()
