"""`make_generate`: the `generate(prompts)` callable of `evaluate`, from a kd_jax model.

It wraps the batched KV-cache sampler (`kd_jax.sampling.generate_text`). Defaults are
Study B's decoding: sampling at T = 1.0, top_p 1.0, top_k off, up to 256 new tokens,
seed 6; pass temperature=0 for greedy. Two details matter for matching a run:
  * BOS: a prompt is encoded with the tokenizer's special tokens, as Study B's
    `tokenizer(prompt)` does, so Alpaca prompts get the BOS the training data had; a
    prompt that already starts with the BOS text (a rendered chat template) has it
    removed first, so it is not doubled.
  * seeds: each call folds its call number into the seed, so successive batches of one
    evaluation draw different samples and a rerun in the same order draws the same.
Decoding drops special tokens (Study B's math script kept them; they carry no digits or
answer labels, so extraction is unaffected).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

from kd_jax.sampling import SamplingConfig, generate_text

STUDY_B_SEED = 6


def make_generate(
    model,
    tokenizer,
    *,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    batch_size: int = 32,
    seed: int = STUDY_B_SEED,
    stop_tokens: tuple[int, ...] | None = None,
    rules=None,
) -> Callable[[list[str]], list[str]]:
    """`rules`: the sharding rules table the model was loaded with (activations and the
    KV cache are split by it); None lets XLA propagate shardings."""
    cfg = SamplingConfig.for_tokenizer(
        tokenizer, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p
    )
    if stop_tokens is not None:
        cfg = dataclasses.replace(cfg, stop_tokens=tuple(stop_tokens))
    bos = tokenizer.bos_token or ""
    calls = itertools.count()

    def generate(prompts: list[str]) -> list[str]:
        texts = [p[len(bos) :] if bos and p.startswith(bos) else p for p in prompts]
        return generate_text(
            model,
            tokenizer,
            texts,
            cfg,
            batch_size=batch_size,
            seed=seed * 1_000_003 + next(calls),
            progress=False,
            add_special_tokens=True,
            rules=rules,
        )

    return generate
