"""Aligning two tokenizations of the same text: span groups and the arrays the loss reads.

Student and teacher tokenize one record with their own tokenizers and chat templates, so the
rendered texts differ in their markup but contain the same message contents. Each supervised
token is described by (token index, turn, end): `end` is the character where the token ends,
counted from the start of its assistant turn's content, or -1 for the template's markup
(the end-of-turn token). Within a turn, content tokens are grouped into minimal spans that end
at the same character on both sides (two pointers on the ends), then merged where a group's
last tokens say different things about what follows (group_tokens); a turn's markup tokens
form one group whose text does not match (the loss compares it by ULD only). A tail that one
side has and
the other lacks (truncation) gets no group: those tokens keep their CE term. Markup groups
that spell the same token strings on both sides count as matching text.

`alignment_arrays` lays the groups out for kd_jax/losses/cross_tokenizer.py, padded to G
groups; a group's first position is the position whose logits predict its first token (the
token index minus one), and each member token's predicting position carries the group index.
"""

from __future__ import annotations

import numpy as np

ALIGN_KEYS = (
    "xt_s_first",
    "xt_t_first",
    "xt_group_mask",
    "xt_group_text",
    "xt_s_group",
    "xt_t_group",
)


def span_groups(s_ends: list[int], t_ends: list[int]) -> list[tuple[range, range]]:
    """Minimal spans of two tokenizations of one text, from each token's end character.

    Returns (student token range, teacher token range) per group, in text order; tokens
    after the last common end (one side cut shorter) are left out."""
    groups, i, j = [], 0, 0
    while i < len(s_ends) and j < len(t_ends):
        i0, j0 = i, j
        while s_ends[i] != t_ends[j]:
            if s_ends[i] < t_ends[j]:
                i += 1
            else:
                j += 1
            if i == len(s_ends) or j == len(t_ends):
                return groups
        groups.append((range(i0, i + 1), range(j0, j + 1)))
        i, j = i + 1, j + 1
    return groups


def group_tokens(
    s_tokens, t_tokens, same_markup=None, same_boundary=None
) -> list[tuple[list[int], list[int], bool]]:
    """(student token indices, teacher token indices, text matches) per group, in order.

    s_tokens, t_tokens: lists of (token index, turn, end) for the supervised tokens;
    `same_markup(s_indices, t_indices)` says whether two markup groups spell the same tokens
    (then they count as matching text, e.g. one tokenizer on both sides);
    `same_boundary(s_index, t_index)` whether a group ending with these two tokens says the
    same about the text after it on both sides (kd_jax/data/vocab_pair.py): where it does
    not, the group is merged with the next one, so that the next group's first position is
    not compared under two different conditions."""
    out = []
    turns = sorted({t for _, t, _ in s_tokens} & {t for _, t, _ in t_tokens})
    for turn in turns:
        s = [(i, e) for i, t, e in s_tokens if t == turn]
        t = [(i, e) for i, tt, e in t_tokens if tt == turn]
        s_text, t_text = [x for x in s if x[1] >= 0], [x for x in t if x[1] >= 0]
        text_groups = []
        for gs, gt in span_groups([e for _, e in s_text], [e for _, e in t_text]):
            gs, gt = [s_text[k][0] for k in gs], [t_text[k][0] for k in gt]
            last = text_groups[-1] if text_groups else None
            if last and same_boundary and not same_boundary(last[0][-1], last[1][-1]):
                last[0].extend(gs), last[1].extend(gt)
            else:
                text_groups.append((gs, gt))
        out += [(gs, gt, True) for gs, gt in text_groups]
        s_mark, t_mark = [i for i, e in s if e < 0], [i for i, e in t if e < 0]
        if s_mark and t_mark:
            out.append((s_mark, t_mark, bool(same_markup and same_markup(s_mark, t_mark))))
    return out


def alignment_arrays(groups, num_groups: int, s_length: int, t_length: int) -> dict:
    """The loss's arrays for one row (see the module docstring); groups past G are dropped."""
    arr = {
        "xt_s_first": np.zeros(num_groups, np.int32),
        "xt_t_first": np.zeros(num_groups, np.int32),
        "xt_group_mask": np.zeros(num_groups, np.float32),
        "xt_group_text": np.zeros(num_groups, np.float32),
        "xt_s_group": np.full(s_length, -1, np.int32),
        "xt_t_group": np.full(t_length, -1, np.int32),
    }
    for g, (s_idx, t_idx, text) in enumerate(groups[:num_groups]):
        # Token k is predicted from position k - 1; index 0 (never supervised) cannot be.
        if min(s_idx) < 1 or min(t_idx) < 1 or max(s_idx) > s_length or max(t_idx) > t_length:
            continue
        arr["xt_s_first"][g], arr["xt_t_first"][g] = min(s_idx) - 1, min(t_idx) - 1
        arr["xt_group_mask"][g], arr["xt_group_text"][g] = 1.0, float(text)
        arr["xt_s_group"][np.asarray(s_idx) - 1] = g
        arr["xt_t_group"][np.asarray(t_idx) - 1] = g
    return arr


def loss_align(batch: dict) -> dict:
    """The batch's alignment arrays under the names cross_tokenizer_terms reads."""
    return {
        "s_first": batch["xt_s_first"],
        "t_first": batch["xt_t_first"],
        "group_mask": batch["xt_group_mask"],
        "group_text": batch["xt_group_text"],
        "s_group": batch["xt_s_group"],
        "t_group": batch["xt_t_group"],
    }
