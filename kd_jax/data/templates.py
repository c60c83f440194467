"""Alpaca / LLM-Adapters prompt templates for instruction records.

Two templates are offered, and a run records which one it used (`template_info`):
  "alpaca"            the clean Stanford Alpaca strings;
  "kd_generalization" Study B's strings byte for byte, stray indentation and trailing
                      spaces included, with their evaluation prompt, which differs from
                      the training prompt in whitespace (blank lines without indentation
                      and one trailing space fewer after the header). Matching it matters
                      when comparing numbers with the paper.
"""

from __future__ import annotations

import dataclasses
import hashlib

from kd_jax.data.sources import DataError


@dataclasses.dataclass(frozen=True)
class AlpacaTemplate:
    """Format strings with {instruction}, {input}; training strings end with {output}."""

    name: str
    train_with_input: str
    train_no_input: str
    eval_with_input: str
    eval_no_input: str


_HEADER = "Below is an instruction that describes a task"
_CONTEXT = ", paired with an input that provides further context"
_TASK = ". Write a response that appropriately completes the request."
_IND = " " * 16  # Study B's prompt literal sits inside a function, 16 spaces deep.

ALPACA = AlpacaTemplate(
    name="alpaca",
    train_with_input=_HEADER + _CONTEXT + _TASK + "\n\n### Instruction:\n{instruction}\n\n"
    "### Input:\n{input}\n\n### Response:\n{output}",
    train_no_input=_HEADER + _TASK + "\n\n### Instruction:\n{instruction}\n\n"
    "### Response:\n{output}",
    eval_with_input=_HEADER + _CONTEXT + _TASK + "\n\n### Instruction:\n{instruction}\n\n"
    "### Input:\n{input}\n\n### Response:\n",
    eval_no_input=_HEADER + _TASK + "\n\n### Instruction:\n{instruction}\n\n### Response:\n",
)

KD_GENERALIZATION = AlpacaTemplate(
    name="kd_generalization",
    train_with_input=_HEADER + _CONTEXT + _TASK + " \n\n"
    f"{_IND}### Instruction:\n{_IND}{{instruction}}\n{_IND}\n"
    f"{_IND}### Input:\n{_IND}{{input}}\n{_IND}\n"
    f"{_IND}### Response:\n{_IND}{{output}}",
    train_no_input=_HEADER + _TASK + "  \n\n"
    f"{_IND}### Instruction:\n{_IND}{{instruction}}\n{_IND}\n"
    f"{_IND}### Response:\n{_IND}{{output}}",
    eval_with_input=_HEADER + _CONTEXT + _TASK + "\n\n"
    f"{_IND}### Instruction:\n{_IND}{{instruction}}\n\n"
    f"{_IND}### Input:\n{_IND}{{input}}\n\n"
    f"{_IND}### Response:\n{_IND}",
    eval_no_input=_HEADER + _TASK + " \n\n"
    f"{_IND}### Instruction:\n{_IND}{{instruction}}\n\n"
    f"{_IND}### Response:\n{_IND}",
)

ALPACA_TEMPLATES = {t.name: t for t in (ALPACA, KD_GENERALIZATION)}

RESPONSE_MARKER = "### Response:"  # Study B takes the text after its first occurrence.


def get_template(name: str) -> AlpacaTemplate:
    if name not in ALPACA_TEMPLATES:
        raise DataError(
            f"unknown data.alpaca_template {name!r}; use one of {', '.join(ALPACA_TEMPLATES)}"
        )
    return ALPACA_TEMPLATES[name]


def render_alpaca(record: dict, template: str | AlpacaTemplate, *, with_output: bool) -> str:
    """The training text (with_output) or its prompt part (output left empty).

    The prompt part is what Study B tokenizes to find how many prompt tokens to mask,
    so it is the training template with an empty output, not the evaluation prompt.
    """
    t = get_template(template) if isinstance(template, str) else template
    fmt = t.train_with_input if record.get("input") else t.train_no_input
    return fmt.format(
        instruction=record["instruction"],
        input=record.get("input", ""),
        output=record["output"] if with_output else "",
    )


def alpaca_eval_prompt(record: dict, template: str | AlpacaTemplate) -> str:
    """The zero-shot evaluation prompt, ending right after the response marker."""
    t = get_template(template) if isinstance(template, str) else template
    fmt = t.eval_with_input if record.get("input") else t.eval_no_input
    return fmt.format(instruction=record["instruction"], input=record.get("input", ""))


def template_info(name: str) -> dict:
    """What a run records about its Alpaca template: name and a hash of all its strings."""
    t = get_template(name)
    text = "\x00".join(dataclasses.astuple(t)[1:])
    return {
        "alpaca_template": t.name,
        "alpaca_template_sha1": hashlib.sha1(text.encode()).hexdigest(),
    }
