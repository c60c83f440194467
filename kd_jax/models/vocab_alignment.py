"""Whether a teacher and a student can be compared token by token, and at what vocab size.

Token-level KD compares the two models' next-token distributions id by id, so both must
read one tokenizer. Their embedding tables may still differ in rows: checkpoints pad the
table beyond the tokenizer's size for matmul efficiency (Qwen2.5-0.5B/1.5B/3B have
151,936 rows, 7B/14B 152,064, over a tokenizer of 151,665 tokens), and a tokenizer that
adds a pad token grows past a model's original size. Rows at or past the tokenizer's
size are never the id of a token, so cutting both models' logits to the tokenizer's size
N loses nothing: that is the alignment (`kd.vocab_size = N`). When the tokens
themselves differ (another family's tokenizer), no cut can align them: refuse.

`aligned_vocab` is the pure decision; `tokenizer_difference` compares two tokenizers.
"""

from __future__ import annotations

from collections.abc import Mapping

from kd_jax.errors import ConfigError


class VocabMismatchError(ConfigError):
    """Teacher and student cannot be aligned token by token."""


def tokenizer_difference(student: Mapping[str, int], teacher: Mapping[str, int]) -> str | None:
    """None when both token -> id maps are equal, else one line naming the first difference."""
    if student == teacher:
        return None
    by_id_s = {i: t for t, i in student.items()}
    by_id_t = {i: t for t, i in teacher.items()}
    for i in sorted(set(by_id_s) | set(by_id_t)):
        if by_id_s.get(i) != by_id_t.get(i):
            return (
                f"id {i} is {by_id_s.get(i)!r} for the student but {by_id_t.get(i)!r} "
                f"for the teacher ({len(student)} vs {len(teacher)} tokens)"
            )
    return f"{len(student)} vs {len(teacher)} tokens"


def folder_difference(student_dir: str, teacher_dir: str) -> str | None:
    """`tokenizer_difference` of two HF tokenizer folders; None when either has no tokenizer."""
    import os

    from kd_jax.data.tokenize import load_tokenizer

    names = ("tokenizer.json", "tokenizer_config.json")
    dirs = (student_dir, teacher_dir)
    if not all(d and any(os.path.exists(os.path.join(d, n)) for n in names) for d in dirs):
        return None
    if os.path.samefile(student_dir, teacher_dir):
        return None
    student, teacher = (load_tokenizer(d).get_vocab() for d in dirs)
    return tokenizer_difference(student, teacher)


def aligned_vocab(
    tokenizer_size: int,
    student_rows: int,
    teacher_rows: int,
    difference: str | None = None,
) -> int | None:
    """The vocab size to cut both models' logits to, or None when no cut is needed.

    tokenizer_size  tokens of the shared tokenizer, added tokens included (len(tokenizer))
    student_rows, teacher_rows  rows of each model's embedding (and output) table
    difference      `tokenizer_difference` of the two models' own tokenizers, if known
    Raises VocabMismatchError (one line, naming the fix) when they cannot be aligned.
    """
    if difference is not None:
        raise VocabMismatchError(
            f"The teacher's tokenizer differs from the student's ({difference}); token-level "
            "KD needs one tokenizer: pick a teacher of the student's family."
        )
    smaller = min(student_rows, teacher_rows)
    if tokenizer_size > smaller:
        which = "student" if student_rows == smaller else "teacher"
        raise VocabMismatchError(
            f"The tokenizer has {tokenizer_size} tokens but the {which}'s embedding has only "
            f"{smaller} rows: the models do not share this tokenizer; use the student's own "
            "tokenizer (data.tokenizer) and a teacher of the same family."
        )
    if student_rows == teacher_rows:
        return None
    return tokenizer_size
