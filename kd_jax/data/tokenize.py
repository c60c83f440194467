"""Records to token ids, next-token targets and loss masks.

Owns the HF tokenizer (loaded from a local folder) and the two ways a record becomes
tokens:
  chat    the tokenizer's own chat template. Supervised tokens are found by rendering
          each assistant turn's prefix with the template (with and without that turn)
          and mapping those character spans onto the tokens' offsets, so any
          prefix-stable template (Llama 3, Qwen2.5, Tulu, the built-in one) works
          without hand-written role markers. A span covers the assistant content and
          its end-of-turn token; whitespace the template puts after it is not trained.
  alpaca  an Alpaca template (templates.py), tokenized the way Study B does: BOS from
          the tokenizer, truncate, then EOS only if there is room; the prompt's length
          is that of the prompt tokenized alone.
`train_on_inputs` supervises every token instead (Study B).

An example is a dict of 1-D arrays of one length L (L <= max_length):
  inputs int32 [L], targets int32 [L] (targets[t] = inputs[t+1]; the last is 0),
  loss_mask float32 [L] (1 where targets[t] is trained), truncated int32 scalar.
Keeping inputs and targets the same length as the token sequence means an example
fills exactly its own length in a packed row, like an HF causal LM that sees all L
tokens and trains on L-1 of them.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from kd_jax.data import templates
from kd_jax.data.sources import DataError

# Templates that stamp today's date (Llama 3.2's `strftime_now`) would make tokens depend
# on the day, and resumed runs differ from uninterrupted ones; the date is pinned to the
# default that Llama 3.1's own template uses.
CHAT_TEMPLATE_KWARGS = {"date_string": "26 Jul 2024"}


def render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """An HF tokenizer's chat template rendered as training renders it (pinned date).

    Training, evaluation, generation and synthesis all render through here, so a Llama 3.x
    prompt carries the same "Today Date" line at inference as in the training data.
    """
    try:
        return tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            **CHAT_TEMPLATE_KWARGS,
        )
    except ValueError as e:  # transformers raises ValueError when there is no template
        raise DataError(f"{tokenizer.name_or_path}: {e}") from None


def load_tokenizer(path: str):
    """An HF fast tokenizer from a local folder (never the network)."""
    if not path:
        raise DataError("no tokenizer given; set data.tokenizer to a local HF tokenizer folder")
    if not os.path.isdir(path):
        raise DataError(f"{path}: tokenizer folder not found; set data.tokenizer to a local folder")
    from transformers import AutoTokenizer  # heavy import, kept off the module import path

    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"{path}: cannot load a tokenizer ({first}); check data.tokenizer"
        ) from None
    if not getattr(tok, "is_fast", False):
        raise DataError(f"{path}: needs a fast tokenizer (tokenizer.json) for token offsets")
    return tok


class ExampleTokenizer:
    """Callable record -> example; picklable so grain worker processes can run it."""

    def __init__(
        self,
        tokenizer,
        *,
        max_length: int,
        train_on_inputs: bool = False,
        alpaca_template: str = "alpaca",
    ):
        if max_length < 2:
            raise DataError(f"data.max_length={max_length} is too small; use at least 2")
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.train_on_inputs = bool(train_on_inputs)
        self.template = templates.get_template(alpaca_template)
        self._eos = tokenizer.eos_token_id
        self._renderer = None  # (template it was compiled from, render function or None)

    def info(self) -> dict:
        """What a run records about how its text became tokens."""
        chat = getattr(self.tokenizer, "chat_template", None) or ""
        return {
            "tokenizer": getattr(self.tokenizer, "name_or_path", ""),
            "vocab_size": len(self.tokenizer),
            "chat_template_sha1": hashlib.sha1(chat.encode()).hexdigest() if chat else "",
            "max_length": self.max_length,
            "train_on_inputs": self.train_on_inputs,
            **templates.template_info(self.template.name),
        }

    def __call__(self, record: dict) -> dict:
        if "messages" in record:
            ids, mask = self.chat_tokens(record["messages"])
            truncated = len(ids) > self.max_length
            ids, mask = ids[: self.max_length], mask[: self.max_length]
        else:
            ids, mask, truncated = self.alpaca_tokens(record)
        return to_example(ids, mask, truncated)

    # ---- text -> (token ids, per-token supervision) ------------------------------------

    def _encode(self, text: str, add_special_tokens: bool):
        return self.tokenizer.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        fast = self._fast_render()
        if fast is not None:
            return fast(messages, add_generation_prompt)
        return render_chat(self.tokenizer, messages, add_generation_prompt)

    def _fast_render(self):
        """The compiled template, rendered directly; None to use apply_chat_template.

        apply_chat_template spends most of its time copying and checking its inputs,
        which validated records do not need; rendering the same compiled template
        directly doubles tokenization throughput. It is used only when it reproduces
        apply_chat_template on a probe conversation.
        """
        template = getattr(self.tokenizer, "chat_template", None)
        if self._renderer is None or self._renderer[0] is not template:
            self._renderer = (template, _compile_fast_render(self.tokenizer, template))
        return self._renderer[1]

    def __getstate__(self):
        # Compiled Jinja templates do not pickle; worker processes compile their own.
        return {**self.__dict__, "_renderer": None}

    def assistant_spans(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        """The full rendering and the [start, end) character span of each assistant turn."""
        text = self.render(messages)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self.render(messages[:i], add_generation_prompt=True) if i else ""
            through = text if i == len(messages) - 1 else self.render(messages[: i + 1])
            if not (text.startswith(before) and text.startswith(through)):
                raise DataError(
                    f"the chat template of {self.tokenizer.name_or_path} renders turn {i} "
                    "differently once later turns follow, so assistant tokens cannot be "
                    "located; use a prefix-stable template or data.train_on_inputs=True"
                )
            end = len(before) + len(through[len(before) :].rstrip())
            spans.append((len(before), end))
        return text, spans

    def chat_tokens(self, messages: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        if self.train_on_inputs:
            enc = self._encode(self.render(messages), add_special_tokens=False)
            ids = np.asarray(enc.ids, np.int32)
            return ids, np.ones(len(ids), bool)
        text, spans = self.assistant_spans(messages)
        enc = self._encode(text, add_special_tokens=False)
        offsets = np.asarray(enc.offsets, np.int64).reshape(-1, 2)
        return np.asarray(enc.ids, np.int32), spans_to_token_mask(offsets, spans)

    def alpaca_tokens(self, record: dict) -> tuple[np.ndarray, np.ndarray, bool]:
        """Truncated ids, their supervision and whether truncation cut anything."""
        full = self._encode(templates.render_alpaca(record, self.template, with_output=True), True)
        ids = list(full.ids[: self.max_length])
        # Study B appends EOS only when truncation left room for it.
        if self._eos is not None and ids and ids[-1] != self._eos and len(ids) < self.max_length:
            ids.append(self._eos)
        mask = np.ones(len(ids), bool)
        if not self.train_on_inputs:
            prompt = templates.render_alpaca(record, self.template, with_output=False)
            n_prompt = min(len(self._encode(prompt, True).ids), self.max_length)
            mask[:n_prompt] = False
        return np.asarray(ids, np.int32), mask, len(full.ids) > self.max_length


def _compile_fast_render(tokenizer, template):
    if not isinstance(template, str):
        return None
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template

        compiled = _compile_jinja_template(template)
    except Exception:  # a private helper: any failure means the slow path
        return None
    kwargs = {**tokenizer.special_tokens_map, **CHAT_TEMPLATE_KWARGS}

    def render(messages, add_generation_prompt):
        return compiled.render(
            messages=messages,
            tools=None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **kwargs,
        )

    probe = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
    ]
    for messages, gen in ((probe, False), (probe[1:2], True)):
        try:
            want = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=gen, **CHAT_TEMPLATE_KWARGS
            )
            if render(messages, gen) != want:
                return None
        except Exception:  # e.g. a template that rejects system turns: keep the slow path
            return None
    return render


def spans_to_token_mask(offsets_Nx2: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """True for tokens whose characters overlap a span (zero-width tokens: lie inside it)."""
    start, end = offsets_Nx2[:, 0], offsets_Nx2[:, 1]
    mask = np.zeros(len(offsets_Nx2), bool)
    for s, e in spans:
        overlap = (start < e) & (end > s)
        point = (start == end) & (start >= s) & (start < e)
        mask |= overlap | point
    return mask


def to_example(ids: np.ndarray, token_mask: np.ndarray, truncated: bool) -> dict:
    """Shifts an (already truncated) token sequence into the example layout above."""
    n = len(ids)
    targets = np.zeros(n, np.int32)
    targets[:-1] = ids[1:]
    loss_mask = np.zeros(n, np.float32)
    # Token t+1 is trained when it is supervised; it is predicted from position t.
    loss_mask[:-1] = token_mask[1:]
    return {
        "inputs": np.asarray(ids, np.int32),
        "targets": targets,
        "loss_mask": loss_mask,
        "truncated": np.int32(truncated),
    }
