"""What two vocabularies have in common: each token's text as bytes, and what its use implies.

Cross-tokenizer KD ("aligned", kd_jax/losses/cross_tokenizer.py) compares a teacher's and a
student's next-token distributions where both have read the same text. Two tokens are the
same event only if they write the same bytes AND their use says the same about what follows:
a tokenizer that has "▁48" writes "▁4" only when no digit follows, so its "▁4" means "the
number 4", while a tokenizer that splits digits writes "▁4" before any digit. Each token's
`boundary` is therefore the set of continuations its own vocabulary would have merged into it
(the suffixes u[len(w):] of the longer tokens u that start with w); two tokens with the same
bytes and the same boundary are one event.

`VocabPair(student_tokenizer, teacher_tokenizer)`:
  shared        (student ids [M], teacher ids [M]): the same bytes (the two eos tokens, each
                template's end of a reply, count as one token; other special tokens pair by
                name)
  class_s/t     [Vs] / [Vt] int32: the class of each token for the loss. Shared tokens with
                the same boundary are a class each; every other token falls in the class of
                its leading text (its first byte, and the next one after a leading space:
                " 4" for "▁4" and "▁48" alike; see leading_text); special tokens that are
                not shared are one class
  boundary_s/t  [Vs] / [Vt] int64: equal where two tokens' boundaries are the same set, so
                token_alignment can tell whether a span boundary means the same on both sides
Token text: SentencePiece-style "▁" is a space and "<0xNN>" is byte NN; byte-level BPE
(Qwen2, Llama 3) spells each byte as one printable character (GPT-2's table, "Ġ" a space).
"""

from __future__ import annotations

import bisect
import hashlib
import re

import numpy as np

END_OF_REPLY = "<end of reply>"  # each side's eos token, spelt alike for matching
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_level_chars() -> dict[str, int]:
    """Byte-level BPE's printable stand-in for each byte (GPT-2's table) -> the byte."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = [b for b in range(256) if b not in printable]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + n): b for n, b in enumerate(extra)})
    return table


_BYTE_LEVEL = _byte_level_chars()


def token_bytes(token: str, byte_level: bool) -> bytes | None:
    """The bytes a (non-special) token writes; None if its spelling is not text."""
    if byte_level:
        if not token or any(c not in _BYTE_LEVEL for c in token):
            return None
        return bytes(_BYTE_LEVEL[c] for c in token)
    if m := _BYTE_TOKEN.fullmatch(token):
        return bytes([int(m.group(1), 16)])
    return token.replace("▁", " ").encode("utf-8") or None


def leading_text(text: bytes, joined: set[int]) -> bytes:
    """The first byte of `text`, and the one after it when the first is a space and both
    vocabularies write that space joined to that byte (`joined`): byte-level BPE writes
    " 636" as "Ġ" "6" "3" "6", a lone space, so there " 6" cannot be told apart from " "."""
    if text[:1] == b" " and len(text) > 1 and text[1] in joined:
        return text[:2]
    return text[:1]


def _joined(keys: list) -> set[int]:
    """The bytes that some token writes right after a leading space."""
    return {k[1] for k in keys if isinstance(k, bytes) and len(k) > 1 and k[:1] == b" "}


def _keys(tokenizer) -> list:
    """Per token id: its bytes, ("special", name), or END_OF_REPLY for the eos token."""
    vocab = tokenizer.get_vocab()
    byte_level = any("Ġ" in tok for tok in vocab)
    special = set(tokenizer.all_special_ids)
    keys: list = [None] * len(tokenizer)
    for tok, i in vocab.items():
        if i >= len(keys):
            continue
        text = None if i in special else token_bytes(tok, byte_level)
        keys[i] = ("special", tok) if text is None else text
    if tokenizer.eos_token_id is not None:
        keys[tokenizer.eos_token_id] = END_OF_REPLY
    return keys


def _boundaries(keys: list) -> np.ndarray:
    """[V] int64: a digest of each token's boundary (module docstring); 0 when empty."""
    texts = sorted({k for k in keys if isinstance(k, bytes)})
    out = np.zeros(len(keys), np.int64)
    for i, k in enumerate(keys):
        if not isinstance(k, bytes):
            continue
        j = bisect.bisect_right(texts, k)
        suffixes = []
        while j < len(texts) and texts[j].startswith(k):
            suffixes.append(texts[j][len(k) :])
            j += 1
        if suffixes:
            digest = hashlib.sha1(b"\0".join(suffixes)).digest()[:8]
            out[i] = int.from_bytes(digest, "little", signed=True) or 1
    return out


class VocabPair:
    """The student's and the teacher's vocabularies side by side (module docstring)."""

    def __init__(self, student_tokenizer, teacher_tokenizer):
        keys_s, keys_t = _keys(student_tokenizer), _keys(teacher_tokenizer)
        self.boundary_s, self.boundary_t = _boundaries(keys_s), _boundaries(keys_t)
        first_t = {}
        for j, k in enumerate(keys_t):
            if k is not None:
                first_t.setdefault(k, j)
        pairs = [(i, first_t[k]) for i, k in enumerate(keys_s) if k is not None and k in first_t]
        self._pairs = set(pairs)
        self.shared = (
            np.asarray([i for i, _ in pairs], np.int32),
            np.asarray([j for _, j in pairs], np.int32),
        )
        same = [(i, j) for i, j in pairs if self.boundary_s[i] == self.boundary_t[j]]
        classes: dict = {}
        self.class_s = np.zeros(len(keys_s), np.int32)
        self.class_t = np.zeros(len(keys_t), np.int32)
        for i, j in same:  # one class per shared token whose use means the same
            self.class_s[i] = self.class_t[j] = classes.setdefault(keys_s[i], len(classes))
        joined = _joined(keys_s) & _joined(keys_t)
        for keys, out, own in ((keys_s, self.class_s, 0), (keys_t, self.class_t, 1)):
            done = {pair[own] for pair in same}
            for i, k in enumerate(keys):
                if i not in done:
                    name = ("lead", leading_text(k, joined)) if isinstance(k, bytes) else ("other",)
                    out[i] = classes.setdefault(name, len(classes))
        self.num_classes = len(classes)

    def same_token(self, s_id: int, t_id: int) -> bool:
        """Whether the two ids write the same bytes (or are both the end of a reply)."""
        return (s_id, t_id) in self._pairs

    def same_boundary(self, s_id: int, t_id: int) -> bool:
        """Whether a span that ends with these two tokens says the same about what follows."""
        return bool(self.boundary_s[s_id] == self.boundary_t[t_id])
