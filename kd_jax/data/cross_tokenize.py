"""Each chat record tokenized by the student's and the teacher's tokenizer, with the alignment.

For cross-tokenizer KD (`kd.cross_tokenizer` = "uld" | "aligned"): each side renders the
record with its own chat template and tokenizes it, keeping every token's character offsets;
the supervised tokens (assistant turns) are located in each assistant content by those
offsets, and kd_jax/data/token_alignment.py groups the two sides into spans of the same text.

An example holds the student's fields (tokenize.py's layout, unchanged), the teacher's
`teacher_inputs` / `teacher_targets` [L_t] and the alignment arrays (ALIGN_KEYS, already at
max_length). Rows are one example each (`data.packing=False`); packing.pad_row pads the
teacher's fields beside the student's.

What the two vocabularies share (token bytes, and what each token's use implies about the
text after it) is kd_jax/data/vocab_pair.py's; a span whose last tokens imply different things
about what follows is merged with the next (token_alignment.group_tokens).
"""

from __future__ import annotations

import numpy as np

from kd_jax.data import token_alignment
from kd_jax.data.sources import DataError
from kd_jax.data.tokenize import ExampleTokenizer, spans_to_token_mask, to_example
from kd_jax.data.vocab_pair import VocabPair


def _supervised_tokens(side: ExampleTokenizer, messages: list[dict]):
    """(ids, token mask, [(token index, turn, content end or -1)]) of one side."""
    text, spans = side.assistant_spans(messages)
    enc = side._encode(text, add_special_tokens=False)
    offsets = np.asarray(enc.offsets, np.int64).reshape(-1, 2)
    mask = spans_to_token_mask(offsets, spans)
    contents = [m["content"] for m in messages if m["role"] == "assistant"]
    tokens = []
    for turn, ((lo, hi), content) in enumerate(zip(spans, contents, strict=True)):
        start = text.find(content, lo)  # templates insert the content verbatim (or trimmed)
        if start < 0 and content.strip():
            start = text.find(content.strip(), lo)
            content = content.strip()
        inside = mask & (offsets[:, 1] > lo) & (offsets[:, 0] < hi)
        for k in np.nonzero(inside)[0]:
            end = int(offsets[k, 1]) - start
            is_text = start >= 0 and 0 < end <= len(content)
            tokens.append((int(k), turn, end if is_text else -1))
    return np.asarray(enc.ids, np.int32), mask, tokens


def _open_last_turn(tokens: list[tuple]) -> list[tuple]:
    """`tokens` without the markup (end -1) that follows the last turn's text."""
    if not tokens:
        return tokens
    last = tokens[-1][1]
    text = [k for k, turn, end in tokens if turn == last and end >= 0]
    cut = max(text, default=-1)
    return [x for x in tokens if not (x[1] == last and x[2] < 0 and x[0] > cut)]


class PairTokenizer:
    """Callable chat record -> student example + teacher tokens + alignment arrays.

    `keeps_record_index`: the pipeline adds each example's source index (`record_index`), so
    that on-policy batches can re-render their records (kd_jax/cross_kd.py). `vocab` is the
    two tokenizers' VocabPair."""

    keeps_record_index = True

    def __init__(self, student: ExampleTokenizer, teacher: ExampleTokenizer):
        if student.train_on_inputs or teacher.train_on_inputs:
            raise DataError(
                "cross-tokenizer KD aligns assistant turns; set data.train_on_inputs=False"
            )
        self.student, self.teacher = student, teacher
        self.max_length = student.max_length
        self.vocab = VocabPair(student.tokenizer, teacher.tokenizer)

    def info(self) -> dict:
        t = self.teacher.info()
        return {
            **self.student.info(),
            "teacher_tokenizer": t["tokenizer"],
            "teacher_chat_template_sha1": t["chat_template_sha1"],
        }

    def __call__(self, record: dict, close_last_turn: bool = True) -> dict:
        """`close_last_turn=False` (an on-policy sample cut at max_new_tokens): the markup
        each template writes after the last reply (its end-of-turn tokens) is not
        supervised on either side, so nobody learns to end a reply that never ended."""
        if "messages" not in record:
            raise DataError("cross-tokenizer KD needs chat records ({'messages': [...]})")
        n = self.max_length
        s_ids, s_mask, s_tokens = _supervised_tokens(self.student, record["messages"])
        t_ids, _, t_tokens = _supervised_tokens(self.teacher, record["messages"])
        if not close_last_turn:
            s_tokens, t_tokens = _open_last_turn(s_tokens), _open_last_turn(t_tokens)
            s_mask = np.zeros_like(s_mask)
            s_mask[[k for k, _, _ in s_tokens]] = True
        example = to_example(s_ids[:n], s_mask[:n], len(s_ids) > n)
        t_ids = t_ids[:n]
        keep_s = [x for x in s_tokens if x[0] < len(example["inputs"])]
        keep_t = [x for x in t_tokens if x[0] < len(t_ids)]
        vocab = self.vocab

        def same_markup(s_idx, t_idx):  # the end of the reply matches the end of the reply
            return len(s_idx) == len(t_idx) and all(
                vocab.same_token(int(s_ids[a]), int(t_ids[b]))
                for a, b in zip(s_idx, t_idx, strict=True)
            )

        def same_boundary(s_k, t_k):
            return vocab.same_boundary(int(s_ids[s_k]), int(t_ids[t_k]))

        groups = token_alignment.group_tokens(keep_s, keep_t, same_markup, same_boundary)
        t_targets = np.zeros(len(t_ids), np.int32)
        t_targets[:-1] = t_ids[1:]
        return {
            **example,
            "teacher_inputs": t_ids,
            "teacher_targets": t_targets,
            **token_alignment.alignment_arrays(groups, n, n, n),
        }
