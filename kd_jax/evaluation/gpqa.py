"""GPQA diamond (Rein et al., 2023): zero-shot chain of thought over four shuffled choices.

Data: `gpqa_diamond.csv` as the dataset ships it (78 columns; this module reads
`Question`, `Correct Answer`, `Incorrect Answer 1..3` and `Record ID`). Each choice is
cleaned as lm-evaluation-harness does (strip, " [title]" -> ". ", double spaces -> one)
and the four are shuffled with a fixed seed per question, `random.Random(f"{SEED}:{Record
ID}")`, so an example's letters never depend on file order or on other questions (lm-eval
shuffles with the unseeded global `random`, so its letters change between runs).
Prompt: lm-eval's `gpqa_diamond_cot_zeroshot` text (the GPQA paper's zero-shot CoT):
    What is the correct answer to this question:{Question}
    Choices:
    (A) ...
    (D) ...
    Let's think step by step:
Extraction, lm-eval's two filters (the gold is the letter in parentheses, "(C)"):
  faithful  "flexible-extract": the LAST "(X)" (X a capital letter) in the response; when
            there is none, the last choice text found in the response (both lower-cased,
            punctuation removed; longer choices tried first), then the last ": X" with X
            in A-D; nothing found means no prediction.
  strict    "strict-match": the text after the FIRST "The answer is " up to one character
            before the end of its line (the final full stop).
  Both compare with the gold as lm-eval's exact_match does with ignore_case and
  ignore_punctuation: lower-cased, every punctuation character removed.
"""

from __future__ import annotations

import csv
import random
import re
import string
import sys
import unicodedata

from kd_jax.evaluation.tasks import EvalError

SEED = 0
LETTERS = "ABCD"
COLUMNS = (
    "Question",
    "Correct Answer",
    "Incorrect Answer 1",
    "Incorrect Answer 2",
    "Incorrect Answer 3",
    "Record ID",
)
_LAST_PAREN = re.compile(r"(\([A-Z]\))")
_STRICT = re.compile(r"(?<=The answer is )(.*)(?=.)")
_PUNCT = dict.fromkeys(
    i for i in range(sys.maxunicode) if unicodedata.category(chr(i)).startswith("P")
)


def clean(text: str | None) -> str:
    if text is None:
        return " "
    return text.strip().replace(" [title]", ". ").replace("  ", " ")


def load(path: str) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise EvalError(f"{path}: no column {', '.join(missing)}; expected gpqa_diamond.csv")
        rows = list(reader)
    out = []
    for row in rows:
        correct = clean(row["Correct Answer"])
        choices = [clean(row[f"Incorrect Answer {i}"]) for i in (1, 2, 3)] + [correct]
        random.Random(f"{SEED}:{row['Record ID']}").shuffle(choices)
        letter = LETTERS[choices.index(correct)]
        out.append(
            {
                "id": row["Record ID"],
                "question": row["Question"],
                "choices": choices,
                "answer": f"({letter})",
            }
        )
    return out


def prompt(record: dict, opts) -> str:
    del opts
    lines = [f"({x}) {c}" for x, c in zip(LETTERS, record["choices"], strict=True)]
    return (
        f"What is the correct answer to this question:{record['question']}\nChoices:\n"
        + "\n".join(lines)
        + "\nLet's think step by step: "
    )


def response(prompt_text: str, generation: str) -> str:
    del prompt_text
    return generation


def flexible(text: str) -> str | None:
    found = _LAST_PAREN.findall(text)
    return found[-1].strip() if found else None


def strict(text: str) -> str | None:
    found = _STRICT.findall(text)
    return found[0].strip() if found else None


def _ignore(text: str) -> str:
    return text.lower().translate(_PUNCT)


def fallback(response_text: str, choices: list[str]) -> str | None:
    """flexible-extract's fallbacks when no "(X)" was written: a choice's text, then ": X"."""
    to_letter = {}
    for letter, choice in zip(LETTERS, choices, strict=True):
        to_letter[_ignore(choice.strip())] = f"({letter})"
    alternation = "|".join(re.escape(t) for t in sorted(to_letter, key=len, reverse=True))
    found = re.findall(alternation, _ignore(response_text))
    if found and found[-1].strip():
        return to_letter.get(found[-1].strip(), found[-1].strip())
    letters = re.findall(rf":[\s]*([{LETTERS}])", response_text)
    return f"({letters[-1].strip()})" if letters else None


def refine(prediction, response_text: str, record: dict, rule: str) -> dict:
    """Harness hook: the faithful rule's fallbacks need the example's choices."""
    if rule == "strict" or prediction is not None:
        return {}
    return {"prediction": fallback(response_text, record["choices"])}


_EM_PUNCT = str.maketrans("", "", string.punctuation)


def _norm(text: str) -> str:
    # lm-eval's exact_match(ignore_case, ignore_punctuation): ASCII punctuation, no strip.
    return text.lower().translate(_EM_PUNCT)


def correct(prediction: str | None, gold: str) -> bool:
    return prediction is not None and _norm(prediction) == _norm(gold)
