"""The built-in tokenizer: a small BPE trained on the built-in tasks, saved as an HF folder.

The folder (tokenizer.json, tokenizer_config.json with a Jinja chat template,
special_tokens_map.json, generation_config.json) loads with
`transformers.AutoTokenizer.from_pretrained(path)` like any hub tokenizer, so the CPU
path exercises the same code as real checkpoints.

Design choices:
  * Words split on spaces ("▁" marks a word start, so decoding restores the text), and
    every digit is its own token, the first carrying the word marker: "▁1" "3" for " 13".
    Any number 0-999 is then 1-3 tokens, always spelled the same way, and arithmetic
    stays learnable for a tiny model.
  * A few hundred tokens in all (587 at the defaults: BPE runs out of pairs before 640):
    every built-in word and both Alpaca headers are whole tokens.
  * Chat: "<s><|user|>...<|end|><|assistant|>...<|end|>" with no text around the role
    tokens, so masks are easy to check by eye. `<|end|>` ends a turn and is also the
    tokenizer's `eos_token`, as in instruction-tuned Llama 3 and Qwen2.5, so sampling
    stops after the answer; `</s>` marks the end of a document.

Variant "b" (`builtin:tokenizer-b`, for cross-tokenizer KD): another vocabulary for the same
text. Digits pair up ("▁13" is one token, "▁123" is "▁12" "3"), the vocabulary is smaller
(512), and the chat template is ChatML-like: "<s><|im_start|>user\n...<|im_end|>..." with
`<|im_end|>` as eos. Words both BPEs learnt are the same strings in both vocabularies.
"""

from __future__ import annotations

import json
import os
import random

from kd_jax.data import synthetic_tasks, templates

PAD, BOS, EOD, UNK = "<pad>", "<s>", "</s>", "<unk>"
SYSTEM, USER, ASSISTANT, END_OF_TURN = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = [PAD, BOS, EOD, UNK, SYSTEM, USER, ASSISTANT, END_OF_TURN]  # ids 0..7

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def _corpus(seed: int, per_family: int) -> list[str]:
    """Training text: every family in chat and Alpaca renderings, plus the templates."""
    texts = []
    for family in synthetic_tasks.FAMILIES:
        for split in ("train", "human"):
            for p in synthetic_tasks.generate(family, split, per_family, seed):
                for q, r in p.turns:
                    texts += [q, r]
        # A few Alpaca renderings teach the template words without spending most
        # merges on a header that every Alpaca example repeats.
        for p in synthetic_tasks.generate(family, "test", 20, seed + 1):
            for name in templates.ALPACA_TEMPLATES:
                texts.append(templates.render_alpaca(p.alpaca(), name, with_output=True))
    # Every lexicon word at least once, so none depends on the sample drawn above.
    lexicon = (
        synthetic_tasks.NAMES
        + synthetic_tasks.OBJECTS
        + synthetic_tasks.GAIN_VERBS
        + synthetic_tasks.LOSS_VERBS
        + synthetic_tasks.ITEMS
    )
    texts.append(
        " ".join(lexicon + list(synthetic_tasks.ZORBIC) + list(synthetic_tasks.ZORBIC.values()))
    )
    texts.append(" ".join(str(n) for n in range(1000)))
    random.Random(seed).shuffle(texts)
    return texts


IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS_B = [PAD, BOS, EOD, UNK, IM_START, IM_END]
CHAT_TEMPLATE_B = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Pieces as below, but with up to two digits per piece.
_PIECES = {"a": r"▁?[0-9]|▁?[^▁\s0-9]+|▁|\s", "b": r"▁?[0-9]{1,2}|▁?[^▁\s0-9]+|▁|\s"}


def build_tokenizer(
    out_dir: str,
    *,
    vocab_size: int | None = None,
    seed: int = 0,
    per_family: int = 2000,
    variant: str = "a",
) -> str:
    """Trains the built-in BPE tokenizer (variant "a", or "b": see the module docstring) and
    writes an HF tokenizer folder; returns out_dir."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if variant not in _PIECES:
        raise ValueError(f"Unknown built-in tokenizer variant {variant!r}; use 'a' or 'b'.")
    vocab_size = vocab_size or (640 if variant == "a" else 512)
    specials = SPECIAL_TOKENS if variant == "a" else SPECIAL_TOKENS_B
    eos = END_OF_TURN if variant == "a" else IM_END
    extra = [t for t in specials if t not in (PAD, BOS, UNK)]

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False),
            # Pieces: a digit ("▁13" -> "▁1", "3": digits never merge, the first keeps the
            # word marker), a word with its marker, a lone marker, or one other space char.
            pre_tokenizers.Split(Regex(_PIECES[variant]), behavior="isolated"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=specials, show_progress=False
    )
    tok.train_from_iterator(_corpus(seed, per_family), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )

    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    special = {"bos_token": BOS, "eos_token": eos, "pad_token": PAD, "unk_token": UNK}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "additional_special_tokens": [t for t in extra if t != eos],
        "chat_template": CHAT_TEMPLATE if variant == "a" else CHAT_TEMPLATE_B,
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
        "padding_side": "right",
    }
    _write_json(os.path.join(out_dir, "tokenizer_config.json"), config)
    _write_json(
        os.path.join(out_dir, "special_tokens_map.json"),
        {**special, "additional_special_tokens": [t for t in extra if t != eos]},
    )
    _write_json(
        os.path.join(out_dir, "generation_config.json"),
        {
            "bos_token_id": bos_id,
            "eos_token_id": [tok.token_to_id(eos), tok.token_to_id(EOD)],
            "pad_token_id": tok.token_to_id(PAD),
        },
    )
    return out_dir


def _write_json(path: str, obj: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
