"""BIG-Bench Hard (Suzgun et al., 2022): 27 tasks, 3-shot chain-of-thought, exact match.

Data, as suzgunmirac/BIG-Bench-Hard ships it, under one root:
  bbh/<task>.json          {"canary": ..., "examples": [{"input": ..., "target": ...}]}
  cot-prompts/<task>.txt   a canary line, a "-----" line, then the task description and
                           three worked examples ("Q: ...\\nA: Let's think step by step.
                           ... So the answer is X.")
Prompt: the text after the "-----" line, then "\\n\\nQ: " + input + "\\nA: Let's think step
by step." -- byte for byte the input the authors sent to Codex (their released
code-davinci-002 outputs were made from exactly this string).
Scoring: a generation ends where the model starts a new "\\n\\nQ:" shot of its own; the
prediction is what follows the LAST "the answer is" up to the end of its line, stripped
of surrounding whitespace and of one final "."; it is correct when it equals the target
exactly (after the same strip). No "the answer is" means no prediction: wrong.
Accuracy is per task; the "bbh" group's average is the mean of the 27 task accuracies
(the paper's unweighted average).
"""

from __future__ import annotations

import json
import os
import re

from kd_jax.evaluation.tasks import EvalError

TASKS = (
    "boolean_expressions",
    "causal_judgement",
    "date_understanding",
    "disambiguation_qa",
    "dyck_languages",
    "formal_fallacies",
    "geometric_shapes",
    "hyperbaton",
    "logical_deduction_five_objects",
    "logical_deduction_seven_objects",
    "logical_deduction_three_objects",
    "movie_recommendation",
    "multistep_arithmetic_two",
    "navigate",
    "object_counting",
    "penguins_in_a_table",
    "reasoning_about_colored_objects",
    "ruin_names",
    "salient_translation_error_detection",
    "snarks",
    "sports_understanding",
    "temporal_sequences",
    "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects",
    "tracking_shuffled_objects_three_objects",
    "web_of_lies",
    "word_sorting",
)
ANSWER_CUE = "the answer is"
QUESTION_CUE = "\nA: Let's think step by step."
_SEPARATOR = "-----\n"
_NEXT_SHOT = re.compile(r"\n\s*\nQ:")


def _cot_prompt(task_file: str, task: str) -> str:
    """The few-shot body of cot-prompts/<task>.txt (beside the bbh/ folder of the task)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(task_file)))
    path = os.path.join(root, "cot-prompts", f"{task}.txt")
    if not os.path.exists(path):
        raise EvalError(
            f"{path}: BBH chain-of-thought prompt not found; the data root must "
            "hold bbh/ and cot-prompts/ as BIG-Bench-Hard ships them"
        )
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if _SEPARATOR not in text:
        raise EvalError(f"{path}: no '-----' line after the canary; not a BBH cot-prompt file")
    return text.split(_SEPARATOR, 1)[1]


def loader(task: str):
    """path -> records, each carrying its own prompt (the few-shot body is per task)."""

    def load(path: str) -> list[dict]:
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise EvalError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
        examples = data.get("examples") if isinstance(data, dict) else None
        if not isinstance(examples, list) or not all(
            isinstance(x, dict) and {"input", "target"} <= x.keys() for x in examples
        ):
            raise EvalError(f"{path}: expected {{'examples': [{{'input', 'target'}}, ...]}}")
        body = _cot_prompt(path, task)
        return [{**x, "prompt": f"{body}\n\nQ: {x['input']}{QUESTION_CUE}"} for x in examples]

    return load


def prompt(record: dict, opts) -> str:
    del opts
    return record["prompt"]


def response(prompt_text: str, generation: str) -> str:
    """The generation up to a new "Q:" shot the model writes on its own."""
    del prompt_text
    return _NEXT_SHOT.split(generation, maxsplit=1)[0]


def _normalise(text: str) -> str:
    text = text.strip()
    return text[:-1].rstrip() if text.endswith(".") else text


def extract(text: str) -> str | None:
    """What follows the last "the answer is", to the end of its line, normalised."""
    at = text.rfind(ANSWER_CUE)
    if at < 0:
        return None
    return _normalise(text[at + len(ANSWER_CUE) :].split("\n", 1)[0])


def correct(prediction: str | None, target: str) -> bool:
    return prediction is not None and prediction == _normalise(str(target))
