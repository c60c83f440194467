"""Cross-tokenizer KD in the train step: wiring the second tokenizer and scoring both tokenizations.

`kd.cross_tokenizer` = "uld" | "aligned" (kd_jax/losses/cross_tokenizer.py) with the teacher's
own tokenizer in `kd.teacher_tokenizer`. `attach` (called by the run's setup) makes the data
pipeline tokenize every record with both tokenizers (kd_jax/data/cross_tokenize.py) and returns
what the step needs; `loss_terms` is what step.loss_terms calls for such a run: the teacher
scores its tokenization and the student its own, inside the same jitted step, and the loss
compares them group by group.

On-policy (`gkd.lambda_ > 0`): the student samples continuations of its prompts on device
(kd_jax/onpolicy.py, student rows only); `onpolicy_batch` then decodes each sample to text,
puts it in place of the record's last assistant turn and tokenizes that record again with
both tokenizers (each side its own template), so the teacher and the student score the same
sampled text in the usual step. The student side is the canonical re-tokenization of the
decoded text, which may differ from the sampled ids where BPE allows two spellings. A sample
cut at gkd.max_new_tokens (no end-of-sequence token) keeps its turn open: neither side
supervises the end-of-turn markup its template would write after it.
"""

from __future__ import annotations

import jax
import numpy as np
from ml_collections import ConfigDict

from kd_jax.data import builtin_paths, token_alignment
from kd_jax.data.cross_tokenize import PairTokenizer
from kd_jax.data.sources import DataError
from kd_jax.data.tokenize import ExampleTokenizer, load_tokenizer
from kd_jax.losses.cross_tokenizer import MODES, VocabMap, cross_tokenizer_terms


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
    if config.data.packing or kd.teacher_cache:
        raise ValueError("kd.cross_tokenizer needs data.packing=False and no kd.teacher_cache.")
    if config.gkd.lambda_ > 0 and jax.process_count() > 1:
        raise ValueError(
            "on-policy cross-tokenizer KD re-tokenizes samples on the host and runs on one "
            "process only; set gkd.lambda_=0 or use one process."
        )
    if kd.divergence != "fkl" or kd.reduction != "token" or kd.teacher_top_k:
        raise ValueError(
            "kd.cross_tokenizer compares distributions its own way: keep kd.divergence='fkl', "
            "kd.reduction='token' and kd.teacher_top_k=0."
        )


def attach(config: ConfigDict, pipeline) -> dict:
    """Points `pipeline` at both tokenizers; returns {teacher_vocab, cross_tokenizer, vocab}."""
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
    pair = pipeline.example_fn.vocab
    return dict(
        teacher_vocab=len(teacher_tok),
        cross_tokenizer=config.kd.cross_tokenizer,
        vocab=VocabMap(pair.class_s, pair.class_t, pair.num_classes),
    )


def onpolicy_batch(sampled: dict, batch: dict, pipeline, sharding=None) -> dict:
    """The cross-tokenizer batch of the student's samples (module docstring).

    sampled: onpolicy_batch's student rows (ROW_KEYS); batch: the off-policy batch it came
    from, whose `record_index` names each row's record in pipeline.source."""
    from kd_jax.data.packing import pad_row, stack_rows

    host = jax.device_get({k: sampled[k] for k in ("targets", "loss_mask")})
    records = np.asarray(jax.device_get(batch["record_index"]))[:, 0]
    pair, tok = pipeline.example_fn, pipeline.tokenizer
    length = host["targets"].shape[1]
    rows = []
    for b, j in enumerate(records):
        ids = host["targets"][b][host["loss_mask"][b] > 0].tolist()
        text = tok.decode(ids, skip_special_tokens=True)
        record = dict(pipeline.source[int(j)])
        messages = [dict(m) for m in record["messages"]]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        messages[last]["content"] = text
        # A sample cut at max_new_tokens has not ended: its turn stays open on both sides.
        ended = bool(ids) and ids[-1] == tok.eos_token_id
        example = pair({**record, "messages": messages[: last + 1]}, close_last_turn=ended)
        rows.append(pad_row({**example, "record_index": np.int32(j)}, length))
    out = {k: v for k, v in stack_rows(rows).items() if k != "num_truncated"}
    if sharding is None:
        return out
    return {k: jax.device_put(v, sharding) for k, v in out.items()}


def _logits(parts, trainable, frozen, inputs, positions, segment_ids, dropout_rng=None):
    model = parts.merge(trainable, frozen)
    return model.logits(model.hidden(inputs, positions, segment_ids, dropout_rng=dropout_rng))


def loss_terms(
    params,
    frozen,
    teacher_params,
    batch,
    rng,
    *,
    student,
    teacher,
    loss_cfg,
    cross_tokenizer,
    vocab,
    train=True,
    student_samples=False,
    **_,
) -> dict:
    """step.loss_terms for a cross-tokenizer run: loss sums of one (micro-)batch."""
    dropout_rng, _ = jax.random.split(rng)
    s_logits = _logits(
        student,
        params,
        frozen,
        batch["inputs"],
        batch["positions"],
        batch["segment_ids"],
        dropout_rng if train else None,
    )
    t_logits = _logits(
        teacher,
        *teacher_params,
        batch["teacher_inputs"],
        batch["teacher_positions"],
        batch["teacher_segment_ids"],
    )
    return cross_tokenizer_terms(
        s_logits,
        jax.lax.stop_gradient(t_logits),
        batch["targets"],
        batch["loss_mask"],
        batch["teacher_targets"],
        token_alignment.loss_align(batch),
        cfg=loss_cfg,
        mode=cross_tokenizer,
        vocab=vocab,
        student_samples=student_samples,
    )
