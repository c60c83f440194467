"""Answer extraction, table-driven: Study B's faithful rules and the strict ones, per family.

Each row is (model response, faithful prediction, strict prediction). Faithful
expectations follow Study B's code by hand: math = last match of -?\\d+\\.?\\d* after
deleting commas; AQuA = first of A|B|C|D|E anywhere; commonsense = first label match.
"""

import pytest

from kd_jax.data import synthetic_tasks, templates
from kd_jax.evaluation import extract as ex
from kd_jax.evaluation.tasks import get_task

MATH = [
    ("The answer is 1,234.", 1234.0, 1234.0),
    ("He owes -5 dollars.", -5.0, -5.0),
    ("Each costs $3.75 in total", 3.75, 3.75),
    ("It weighs 156kgs.", 156.0, 156.0),  # units glued on the right are fine
    ("The answer is 42. That took 3 steps", 3.0, 3.0),  # both modes take the last number
    ("Between 3-5 apples", -5.0, 5.0),  # faithful reads a range's dash as a minus sign
    ("so x = 8, then v2", 2.0, 8.0),  # strict ignores digits glued to a word
    ("1,000,000 people", 1_000_000.0, 1_000_000.0),
    ("The numbers are 1,2,3", 123.0, 3.0),  # faithful deletes every comma, strict only 1,000s
    ("version 2.5.1", 1.0, 2.5),
    ("It is 7.", 7.0, 7.0),
    ("I cannot tell.", None, None),
    ("", None, None),
]

AQUA = [
    ("The answer is (C).", "C", "C"),
    ("Answer: B", "A", "B"),  # the capital A of "Answer" comes first
    ("Because 9^3 = 729, the answer is D.", "B", "D"),
    ("Pick (A) or (E)? I pick E", "A", "E"),
    ("Either (A) or (B)", "E", "B"),  # the E of "Either"
    ("Dear reader, it is 42", "D", None),
    ("the answer is c", None, None),  # case-sensitive
    ("no letter here", None, None),
]

# (task, response, faithful, strict)
COMMONSENSE = [
    ("boolq", "the correct answer is true", "true", "true"),
    ("boolq", "True", None, None),
    ("boolq", "it is not true, so false", "true", "false"),
    ("boolq", "untrue", "true", None),
    ("piqa", "the correct answer is solution2", "solution2", "solution2"),
    ("piqa", "Solution1", None, None),
    ("piqa", "solution1 looks wrong; solution2", "solution1", "solution2"),
    ("siqa", "answer3 or answer1? the correct answer is answer1", "answer3", "answer1"),
    ("siqa", "the correct answer is answer5", "answer5", "answer5"),  # in the regex for all
    ("arc_c", "answer6", None, None),
    ("obqa", "", None, None),
    ("hellaswag", "ending4.", "ending4", "ending4"),
    ("hellaswag", "ending5", None, None),
    ("winogrande", "the correct answer is option12", "option1", None),
    ("winogrande", "option2", "option2", "option2"),
]


@pytest.mark.parametrize("response,faithful,strict", MATH)
def test_math_extraction(response, faithful, strict):
    task = get_task("gsm8k")
    assert task.extract["faithful"](response) == faithful
    assert task.extract["strict"](response) == strict


@pytest.mark.parametrize("response,faithful,strict", AQUA)
def test_aqua_extraction(response, faithful, strict):
    task = get_task("aqua")
    assert task.extract["faithful"](response) == faithful
    assert task.extract["strict"](response) == strict


@pytest.mark.parametrize("name,response,faithful,strict", COMMONSENSE)
def test_commonsense_extraction(name, response, faithful, strict):
    task = get_task(name)
    assert task.extract["faithful"](response) == faithful
    assert task.extract["strict"](response) == strict


@pytest.mark.parametrize(
    "response,expected",
    [
        ("23 - 3 = 20 . Thus the answer is 26 .", "26"),
        ("The answer is 3 . The answer is 5 .", "5"),
        ("the answer is 26", None),  # the built-in format always ends " ."
        ("Word by word : cat = miro . The answer is miro ne ruda .", "miro ne ruda"),
    ],
)
def test_builtin_extraction_uses_the_data_contract(response, expected):
    task = get_task("arith")
    assert task.extraction("faithful") == task.extraction("strict") == "single"
    assert task.answer("<s><|user|>q<|end|><|assistant|>", response, "strict")[1] == expected


def test_math_correct_within_tolerance_and_no_answer_is_wrong():
    assert ex.number_correct(480.0004, "480.0")
    assert not ex.number_correct(480.002, "480.0")
    assert not ex.number_correct(None, "480.0")
    assert ex.label_correct("C", ["C"])  # some AQuA copies store the gold as a list
    assert not ex.label_correct(None, "C")


def test_response_is_text_after_first_marker_and_strict_cuts_new_sections():
    prompt = "### Instruction:\nq\n\n### Response:\n"
    gen = " The answer is 5.\n\n### Instruction:\nWhat is 2 + 3?\n\n### Response:\n5"
    # Study B: split(...)[1] keeps the text up to the model's own second marker.
    assert (
        ex.faithful_response(prompt, gen) == "The answer is 5.\n\n### Instruction:\nWhat is 2 + 3?"
    )
    assert ex.strict_response(prompt, gen) == "The answer is 5."
    task = get_task("gsm8k")
    assert task.answer(prompt, gen, "faithful")[1] == 3.0
    assert task.answer(prompt, gen, "strict")[1] == 5.0


def test_eval_prompt_is_study_b_string_and_ends_after_the_marker():
    record = {"instruction": "How many legs?", "input": ""}
    # Study B's generate_prompt literal (evaluate.py), typed out with its indentation.
    study_b = (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request. \n\n"
        "                ### Instruction:\n                How many legs?\n\n"
        "                ### Response:\n                "
    )
    task = get_task("gsm8k")
    from kd_jax.evaluation.tasks import PromptOptions

    assert task.prompt(record, PromptOptions(template="kd_generalization")) == study_b
    clean = task.prompt(record, PromptOptions())
    assert clean.endswith(templates.RESPONSE_MARKER + "\n") and "{" not in clean


def test_bad_mode_is_a_clear_error():
    from kd_jax.evaluation import EvalError

    with pytest.raises(EvalError, match="unknown extraction mode 'lenient'"):
        get_task("gsm8k").extraction("lenient")


def test_builtin_scoring_agrees_with_the_data_module():
    task = get_task("cipher")
    for p in synthetic_tasks.generate("cipher", "test", 20, seed=3):
        reply, gold = p.turns[0][1], p.answer
        for text in (reply, reply.replace(" .", " !"), "The answer is ta ."):
            pred = task.answer("", text, "faithful")[1]
            assert task.correct(pred, gold) == synthetic_tasks.is_correct(text, gold)
