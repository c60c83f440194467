"""Turning a model's generation into a final answer, Study B's way and a stricter way.

Two modes, always named, never swapped silently:

  faithful  Study B's evaluation code, quirks included (LCS2-IIITD/KD_generalization,
            generative/evaluate.py and commonsense_evaluate.py):
            * response: decode prompt + generation, keep `.split("### Response:")[1].strip()`,
              i.e. the text between the first marker and a second one, if the model
              writes another;
            * math (GSM8K, SVAMP, MultiArith, SingleEq, AddSub): delete every ",", take the
              LAST match of `-?\\d+\\.?\\d*` as a float; correct when |gold - pred| <= 1e-3;
            * AQuA: the FIRST match of `A|B|C|D|E`, case-sensitive, no word boundary, so the
              "A" of "Answer" counts;
            * commonsense: the FIRST match of the task's label alternation (`true|false`,
              `solution1|solution2`, ...), case-sensitive, no word boundary.
  strict    the same label sets with word boundaries and the LAST match, so the final
            answer wins over words that merely contain a label; the response is the
            generation alone, cut where the model starts a new "### " section; math keeps
            only thousands separators out and ignores digits glued to letters ("x2").

A missing answer is None: it always scores as wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

RESPONSE_MARKER = "### Response:"  # Study B splits the decoded text on its first occurrence.
MODES = ("faithful", "strict")
MATH_TOLERANCE = 1e-3  # Study B's `miss = 0.001`

_FAITHFUL_NUMBER = re.compile(r"-?\d+\.?\d*")
# Strict: a number not glued to a word or a decimal point on its left ("x2", "v3" are not
# answers); a trailing unit ("15kg") or full stop is fine.
_STRICT_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NEW_SECTION = re.compile(r"\n\s*### ")


# ---- responses ---------------------------------------------------------------------------


def faithful_response(prompt: str, generation: str) -> str:
    """Study B: the decoded prompt + generation split on the marker, piece 1, stripped."""
    parts = (prompt + generation).split(RESPONSE_MARKER)
    # A prompt without the marker (a chat prompt) has no piece 1: the generation is the reply.
    return parts[1].strip() if len(parts) > 1 else generation.strip()


def strict_response(prompt: str, generation: str) -> str:
    """The generation alone, up to a new "### " section the model starts on its own."""
    del prompt
    return _NEW_SECTION.split(generation, maxsplit=1)[0].strip()


def plain_response(prompt: str, generation: str) -> str:
    """For chat prompts: the generation is the reply."""
    del prompt
    return generation.strip()


# ---- extractors (response -> prediction or None) -----------------------------------------


def faithful_number(response: str) -> float | None:
    found = _FAITHFUL_NUMBER.findall(response.replace(",", ""))
    return float(found[-1]) if found else None


def strict_number(response: str) -> float | None:
    found = _STRICT_NUMBER.findall(_THOUSANDS.sub("", response))
    return float(found[-1]) if found else None


def first_match(labels: Sequence[str]) -> Callable[[str], str | None]:
    """Study B's rule: the first match of the label alternation, no word boundary."""
    pattern = re.compile("|".join(re.escape(x) for x in labels))

    def extract(response: str) -> str | None:
        m = pattern.search(response.strip())
        return m.group(0) if m else None

    extract.__name__ = f"first_of_{'_'.join(labels)}"
    return extract


def last_match(labels: Sequence[str], word_boundary: bool = True) -> Callable[[str], str | None]:
    """The strict rule: the last whole-word match of the label alternation."""
    alt = "|".join(re.escape(x) for x in labels)
    pattern = re.compile(rf"\b(?:{alt})\b" if word_boundary else f"(?:{alt})")

    def extract(response: str) -> str | None:
        found = pattern.findall(response)
        return found[-1] if found else None

    extract.__name__ = f"last_of_{'_'.join(labels)}"
    return extract


def last_regex(pattern: str, group: int = 0) -> Callable[[str], str | None]:
    """The last match of any regex (its `group`): a one-liner for new tasks."""
    compiled = re.compile(pattern)

    def extract(response: str) -> str | None:
        found = list(compiled.finditer(response))
        return found[-1].group(group).strip() if found else None

    return extract


# ---- correctness ((prediction, gold) -> bool) --------------------------------------------


def gold_value(answer):
    """The gold answer as stored: a string, or a one-element list as in some AQuA copies."""
    if isinstance(answer, list | tuple):
        if len(answer) != 1:
            raise ValueError(f"expected one gold answer, got {answer!r}")
        answer = answer[0]
    return answer


def number_correct(prediction: float | None, gold) -> bool:
    if prediction is None:
        return False
    value = float(str(gold_value(gold)).replace(",", ""))
    return abs(value - prediction) <= MATH_TOLERANCE


def label_correct(prediction: str | None, gold) -> bool:
    return prediction is not None and prediction == str(gold_value(gold))


def text_correct(prediction: str | None, gold) -> bool:
    """Whitespace-normalised string equality (the built-in tasks' rule)."""
    if prediction is None:
        return False
    return " ".join(str(prediction).split()) == " ".join(str(gold_value(gold)).split())
