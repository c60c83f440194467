"""Cross-tokenizer KD in the train step: wiring the second tokenizer and scoring both tokenizations.

`kd.cross_tokenizer` = "uld" | "aligned" (kd_jax/losses/cross_tokenizer.py) with the teacher's
own tokenizer in `kd.teacher_tokenizer`. `attach` (called by the run's setup) makes the data
pipeline tokenize every record with both tokenizers (kd_jax/data/cross_tokenize.py) and returns
what the step needs; `loss_terms` is what step.loss_terms calls for such a run: the teacher
scores its tokenization and the student its own, inside the same jitted step, and the loss
compares them group by group.
"""

from __future__ import annotations

import jax
import numpy as np
from ml_collections import ConfigDict

from kd_jax.data import builtin_paths, token_alignment
from kd_jax.data.cross_tokenize import PairTokenizer, shared_vocab
from kd_jax.data.sources import DataError
from kd_jax.data.tokenize import ExampleTokenizer, load_tokenizer
from kd_jax.losses.cross_tokenizer import MODES, cross_tokenizer_terms


def check_config(config: ConfigDict) -> None:
    """One-line errors for settings cross-tokenizer KD cannot run with."""
    kd = config.kd
    mode = kd.cross_tokenizer
    if mode == "off":
        return
    if mode not in MODES:
        raise ValueError(
            f"kd.cross_tokenizer={mode!r} is unknown; use 'off', {' or '.join(map(repr, MODES))}."
        )
    if config.method != "kd" or not kd.teacher_tokenizer:
        raise ValueError(
            "kd.cross_tokenizer needs method='kd' and the teacher's tokenizer folder in "
            "kd.teacher_tokenizer."
        )
    if config.data.packing or kd.teacher_cache or config.gkd.lambda_ > 0:
        raise ValueError(
            "kd.cross_tokenizer needs data.packing=False, no kd.teacher_cache and "
            "gkd.lambda_=0 (on-policy cross-tokenizer batches are not built yet)."
        )
    if kd.divergence != "fkl" or kd.reduction != "token" or kd.teacher_top_k:
        raise ValueError(
            "kd.cross_tokenizer compares distributions its own way: keep kd.divergence='fkl', "
            "kd.reduction='token' and kd.teacher_top_k=0."
        )


def attach(config: ConfigDict, pipeline) -> dict:
    """Points `pipeline` at both tokenizers; returns {teacher_vocab, cross_tokenizer, shared}."""
    check_config(config)
    teacher_tok = load_tokenizer(builtin_paths.resolve(config.kd.teacher_tokenizer))
    student_side = pipeline.example_fn
    if not isinstance(student_side, ExampleTokenizer):
        raise DataError("cross-tokenizer KD needs the pipeline's own ExampleTokenizer")
    teacher_side = ExampleTokenizer(
        teacher_tok,
        max_length=student_side.max_length,
        train_on_inputs=student_side.train_on_inputs,
        alpaca_template=student_side.template.name,
    )
    pipeline.example_fn = PairTokenizer(student_side, teacher_side)
    pipeline.info.update(pipeline.example_fn.info())
    s_ids, t_ids = shared_vocab(pipeline.tokenizer, teacher_tok)
    return dict(
        teacher_vocab=len(teacher_tok),
        cross_tokenizer=config.kd.cross_tokenizer,
        shared=(np.asarray(s_ids), np.asarray(t_ids)),
    )


def _logits(parts, trainable, frozen, inputs, positions, segment_ids, dropout_rng=None):
    model = parts.merge(trainable, frozen)
    return model.logits(model.hidden(inputs, positions, segment_ids, dropout_rng=dropout_rng))


def loss_terms(params, frozen, teacher_params, batch, rng, *, student, teacher, loss_cfg,
               cross_tokenizer, shared, train=True, **_) -> dict:  # fmt: skip
    """step.loss_terms for a cross-tokenizer run: loss sums of one (micro-)batch."""
    dropout_rng, _ = jax.random.split(rng)
    s_logits = _logits(student, params, frozen, batch["inputs"], batch["positions"],
                       batch["segment_ids"], dropout_rng if train else None)  # fmt: skip
    t_logits = _logits(teacher, *teacher_params, batch["teacher_inputs"],
                       batch["teacher_positions"], batch["teacher_segment_ids"])  # fmt: skip
    return cross_tokenizer_terms(
        s_logits,
        jax.lax.stop_gradient(t_logits),
        batch["targets"],
        batch["loss_mask"],
        batch["teacher_targets"],
        token_alignment.loss_align(batch),
        cfg=loss_cfg,
        mode=cross_tokenizer,
        shared=shared,
    )
