"""Batched autoregressive sampling with a KV cache: greedy, temperature, top-k, top-p.

`generate` is one jitted program: a prefill over the left-padded prompts, then a loop of
single-token steps that read and write the cache (kd_jax/models/decode.py). Rows stop at
a stop token (later positions hold `pad_id`); the loop ends when every row has stopped.
`generate_text` wraps it for strings and a tokenizer, bucketing prompt lengths so that a
whole evaluation compiles only a few programs.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from kd_jax import sharding as shd
from kd_jax.models import Decoder, decode


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    stop_tokens: tuple[int, ...] = ()
    pad_id: int = 0

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < 0 or self.max_new_tokens < 1:
            raise ValueError("top_k must be >= 0 and max_new_tokens >= 1.")

    @classmethod
    def for_tokenizer(cls, tokenizer, **settings) -> SamplingConfig:
        """Settings with the tokenizer's stop and padding ids: generation stops at its
        end-of-sequence token (none if it has none) and pads with its pad id (else 0)."""
        eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        return cls(
            stop_tokens=() if eos is None else (eos,),
            pad_id=0 if pad is None else pad,
            **settings,
        )


def greedy_token(logits_BxV: jax.Array) -> jax.Array:
    """argmax over the vocabulary (the first index on ties), as a max and a min over a
    compare: two plain reductions, which XLA:CPU vectorises where argmax's paired
    (value, index) reduction is several times slower."""
    v = logits_BxV.shape[-1]
    top = jnp.max(logits_BxV, axis=-1, keepdims=True)
    ids = jnp.arange(v, dtype=jnp.int32)
    return jnp.min(jnp.where(logits_BxV == top, ids, v - 1), axis=-1)


def sample_token(logits_BxV: jax.Array, rng: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """The next token of each row under the config's decoding rule."""
    logits = logits_BxV.astype(jnp.float32)
    if cfg.temperature == 0.0 or cfg.top_k == 1:
        return greedy_token(logits)
    logits = logits / cfg.temperature
    neg = jnp.finfo(jnp.float32).min
    if cfg.top_k > 0:
        kth = jax.lax.top_k(logits, cfg.top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if cfg.top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        before = jnp.cumsum(probs, axis=-1) - probs
        cutoff_idx = jnp.sum(before < cfg.top_p, axis=-1, keepdims=True) - 1
        cutoff = jnp.take_along_axis(sorted_logits, cutoff_idx, axis=-1)
        logits = jnp.where(logits < cutoff, neg, logits)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def generate_tokens(model: Decoder, prompts_BxP, prompt_mask_BxP, rng, cfg: SamplingConfig):
    """Un-jitted `generate`, to call inside another jitted function."""
    b, p = prompts_BxP.shape
    n = cfg.max_new_tokens
    mask = prompt_mask_BxP.astype(jnp.int32)
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    packed = decode.pack(model)
    cache = decode.init_cache(model, b, p + n)
    h, cache = decode.hidden(model, packed, prompts_BxP, positions, mask, cache, prefill=True)
    logits = decode.logits(packed, h[:, -1:])[:, 0]
    stops = jnp.asarray(cfg.stop_tokens or (-1,), jnp.int32)
    ones = jnp.ones((b, 1), jnp.int32)

    keys = jax.random.split(rng, n)

    def not_finished(carry):
        i, done = carry[0], carry[4]
        return (i < n) & ~jnp.all(done)

    def step(carry):
        i, logits, cache, pos, done, tokens_NxB, lengths = carry
        token = sample_token(logits, keys[i], cfg)
        token = jnp.where(done, cfg.pad_id, token)
        tokens_NxB = jax.lax.dynamic_update_index_in_dim(tokens_NxB, token, i, axis=0)
        lengths = lengths + (~done).astype(jnp.int32)  # the stop token counts
        done = done | jnp.isin(token, stops)
        h, cache = decode.hidden(model, packed, token[:, None], pos[:, None], ones, cache)
        return i + 1, decode.logits(packed, h)[:, 0], cache, pos + 1, done, tokens_NxB, lengths

    # A while loop, not a scan: once every row has stopped, the remaining steps are skipped
    # (their tokens stay `pad_id`, as a stopped row's would).
    init = (
        jnp.zeros((), jnp.int32),
        logits,
        cache,
        positions[:, -1] + 1,
        jnp.zeros((b,), bool),
        jnp.full((n, b), cfg.pad_id, jnp.int32),
        jnp.zeros((b,), jnp.int32),
    )
    *_, tokens_NxB, lengths = jax.lax.while_loop(not_finished, step, init)
    return tokens_NxB.T, lengths


@functools.lru_cache(maxsize=32)
def _jitted(graphdef, cfg: SamplingConfig, mesh=None, rules=None):
    def run(state, prompts_BxP, prompt_mask_BxP, rng):
        model = nnx.merge(graphdef, state)
        return generate_tokens(model, prompts_BxP, prompt_mask_BxP, rng, cfg)

    if rules is not None and mesh is not None:
        return jax.jit(shd.under_activation_sharding(run, mesh, rules))
    return jax.jit(run)


def generate(model: Decoder, prompts_BxP, prompt_mask_BxP, rng, cfg: SamplingConfig, *, rules=None):
    """tokens [B, N] and lengths [B] sampled after left-padded prompts [B, P].

    One compiled program per (model structure, config, shapes); the module is split into
    plain arrays first, which costs far less per call than tracing it through nnx.jit.
    With `rules` (a sharding rules table) the activations and the KV cache are split on
    the parameters' mesh by that table, as in training."""
    graphdef, state = nnx.split(model)
    if rules is not None:  # hashable, for the program cache
        rules = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in rules)
    mesh = shd.mesh_of(state) if rules is not None else None
    return _jitted(graphdef, cfg, mesh, rules)(state, prompts_BxP, prompt_mask_BxP, rng)


def left_pad(rows: list[list[int]], pad_id: int, multiple: int = 16):
    """[B, P] tokens and mask, right-aligned; P rounded up to `multiple` to reuse programs."""
    p = max(1, max(len(r) for r in rows))
    p = int(math.ceil(p / multiple) * multiple)
    tokens = np.full((len(rows), p), pad_id, np.int32)
    mask = np.zeros((len(rows), p), np.int32)
    for i, r in enumerate(rows):
        if r:
            tokens[i, p - len(r) :] = r
            mask[i, p - len(r) :] = 1
    return tokens, mask


def generate_text(
    model: Decoder,
    tokenizer,
    prompts: list[str],
    cfg: SamplingConfig,
    *,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    add_special_tokens: bool = False,
    rules=None,
) -> list[str]:
    """Decoded continuations of `prompts` (special tokens dropped), in order.

    With `rules` the model's mesh may span hosts (every host runs this with the same
    prompts): each host places only its rows of each batch (`sharding.host_rows`), the
    program runs once across all of them, and every host gets every row back."""
    out: list[str] = []
    rng = jax.random.key(seed)
    mesh = shd.mesh_of(nnx.state(model)) if rules is not None else None
    rows_sharding = shd.batch_sharding(mesh, rules, rows=batch_size) if mesh is not None else None
    bar = tqdm(total=len(prompts), desc="generate", disable=not progress, leave=False)
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        rows = [tokenizer.encode(t, add_special_tokens=add_special_tokens) for t in chunk]
        rows += [rows[-1]] * (batch_size - len(rows))  # fixed batch shape: one program
        tokens, mask = left_pad(rows, cfg.pad_id)
        if rows_sharding is None:
            tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)
        else:
            mine = shd.host_rows(rows_sharding, batch_size)
            tokens, mask = (
                shd.place_rows(x[mine.start : mine.stop], rows_sharding, batch_size)
                for x in (tokens, mask)
            )
        new, lengths = generate(
            model, tokens, mask, jax.random.fold_in(rng, start), cfg, rules=rules
        )
        new, lengths = shd.gather_rows(new), shd.gather_rows(lengths)
        for i in range(len(chunk)):
            out.append(tokenizer.decode(new[i, : lengths[i]].tolist(), skip_special_tokens=True))
        bar.update(len(chunk))
    bar.close()
    return out
