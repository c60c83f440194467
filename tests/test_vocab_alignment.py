"""Teacher/student vocabulary alignment: padding rows are cut, different tokens refused."""

import json
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from kd_jax import step_builder as build
from kd_jax.config_checks import ConfigError
from kd_jax.data import builtin_paths
from kd_jax.data.tokenize import load_tokenizer
from kd_jax.losses import KDLossConfig, kd_loss_terms
from kd_jax.models import presets, vocab_alignment
from kd_jax.models.init import abstract_model

QWEN_SMALL, QWEN_LARGE = 151_936, 152_064  # Qwen2.5-0.5B/1.5B/3B vs 7B/14B rows


def _tiny(rows: int, seed: int):
    # A tiny Qwen2 whose tables have the real row counts (hidden size 8), built abstractly:
    # the decision reads shapes only, and initializing 1.2M rows eagerly costs seconds.
    del seed
    cfg = presets.get(
        "tiny-qwen2",
        vocab_size=rows,
        hidden_size=8,
        intermediate_size=16,
        num_heads=2,
        num_kv_heads=1,
        head_dim=4,
        num_layers=1,
    )
    return abstract_model(cfg)


def _parts(model):
    return types.SimpleNamespace(cfg=model.cfg)


def _config(tokenizer_dir, teacher_dir=""):
    return ConfigDict(
        {
            "kd": {"vocab_size": 0},
            "data": {"tokenizer": tokenizer_dir},
            "teacher": {"hf_path": teacher_dir},
        }
    )


def test_padding_rows_align_and_the_loss_equals_the_cut_logits():
    tok = load_tokenizer(str(builtin_paths.ensure() / "tokenizer"))
    n = len(tok)
    student, teacher = _tiny(QWEN_SMALL, 0), _tiny(QWEN_LARGE, 1)
    assert student.embed.embedding.value.shape[0] == QWEN_SMALL
    assert teacher.embed.embedding.value.shape[0] == QWEN_LARGE
    config = _config(str(builtin_paths.ensure() / "tokenizer"))
    build.check_vocab(config, n, _parts(student), _parts(teacher))
    assert config.kd.vocab_size == n < QWEN_SMALL

    # The loss over both tables' logits, cut to N, equals the loss over the first N columns.
    ids = jnp.asarray(tok("a 1 + 2 = 3")["input_ids"])[None]  # [1, T]
    k1, k2 = jax.random.split(jax.random.key(0))
    s_logits = jax.random.normal(k1, (*ids.shape, QWEN_SMALL))  # [1, T, 151936]
    t_logits = jax.random.normal(k2, (*ids.shape, QWEN_LARGE))  # [1, T, 152064]
    targets, mask = jnp.roll(ids, -1, axis=1), jnp.ones(ids.shape, jnp.float32)
    cfg = KDLossConfig(kind="fkl", alpha=1.0, vocab_size=config.kd.vocab_size)
    got = kd_loss_terms(s_logits, t_logits, targets, mask, cfg=cfg)["div_sum"]
    ref_cfg = KDLossConfig(kind="fkl", alpha=1.0)
    want = kd_loss_terms(s_logits[..., :n], t_logits[..., :n], targets, mask, cfg=ref_cfg)
    np.testing.assert_allclose(float(got), float(want["div_sum"]), rtol=1e-5)
    assert np.isfinite(float(got)) and float(got) > 0
    with pytest.raises(ValueError):  # without the alignment the shapes do not compare
        kd_loss_terms(s_logits, t_logits, targets, mask, cfg=ref_cfg)


def test_decision_table():
    assert vocab_alignment.aligned_vocab(151_665, QWEN_SMALL, QWEN_SMALL) is None
    assert vocab_alignment.aligned_vocab(151_665, QWEN_SMALL, QWEN_LARGE) == 151_665
    assert vocab_alignment.aligned_vocab(151_665, QWEN_LARGE, QWEN_SMALL) == 151_665
    with pytest.raises(vocab_alignment.VocabMismatchError, match="only 151936 rows"):
        vocab_alignment.aligned_vocab(152_000, QWEN_LARGE, QWEN_SMALL)


def test_a_teacher_with_other_tokens_is_refused_in_one_line(tmp_path):
    builtin = builtin_paths.ensure() / "tokenizer"
    other = tmp_path / "teacher"
    shutil.copytree(builtin, other)
    data = json.loads((other / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    a, b = list(vocab)[40:42]  # swap two ids: same size, different tokens
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (other / "tokenizer.json").write_text(json.dumps(data))
    n = len(load_tokenizer(str(builtin)))
    student, teacher = _tiny(QWEN_SMALL, 0), _tiny(QWEN_LARGE, 1)
    config = _config(str(builtin), str(other))
    with pytest.raises(ConfigError) as e:
        build.check_vocab(config, n, _parts(student), _parts(teacher))
    msg = str(e.value)
    assert "\n" not in msg and "differs from the student's" in msg and "same family" not in msg
    assert "pick a teacher of the student's family" in msg
    # The same tokenizer in both folders aligns.
    config = _config(str(builtin), str(builtin))
    build.check_vocab(config, n, _parts(student), _parts(teacher))
    assert config.kd.vocab_size == n
