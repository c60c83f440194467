"""Scoring the hand-written fixture files (real LLM-Adapters / built-in formats) with stubs.

tests/fixtures/eval/dataset/<dir>/test.json holds 3-4 items per Study B task. The stub
model answers each item with the canned text below; every expected accuracy is the hand
count of the right answers under Study B's rules (faithful) and the strict rules.
"""

import csv
import json
import os

import pytest

from kd_jax.evaluation import EvalError, evaluate, get_task, resolve
from kd_jax.evaluation.tasks import PromptOptions, task_file

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "eval")

# task -> [(generation, right under faithful, right under strict)], in fixture order.
STUB = {
    "gsm8k": [
        ("He makes 40 * $12 = $480 a week. The answer is $480.", 1, 1),
        # The model starts a new turn: faithful keeps it up to the second marker and reads 3.
        ("4x = 32, so x = 8 mugs.\n\n### Instruction:\nWhat is 2 + 3?\n\n### Response:\n5", 0, 1),
        ("You pay $1,000 - $200 = $800.", 1, 1),
        ("I am not sure.", 0, 0),
    ],
    "svamp": [
        ("76 - 25 = 51 dollars", 1, 1),
        ("He had 3 + 2 = 5.0 dollars", 1, 1),
        ("4 * 12 = 48 pieces, across 81 blocks", 0, 0),
    ],
    "multiarith": [
        ("The answer is 39.", 1, 1),
        ("13+5-10=8", 1, 1),
        ("There are 2 pictures in each of the 3 albums", 0, 0),
    ],
    "singleeq": [
        ("She gave 70-27=43", 1, 1),
        ("15", 1, 1),
        ("The temperature is now -12.5 degrees.", 1, 1),
    ],
    "addsub": [
        ("55 - 22 = 33 trees", 1, 1),
        ("31 + 24 = 55 red balloons, and 15 green", 0, 0),
        ("2.65 + 3.35 = 6.00", 1, 1),
    ],
    "aqua": [
        ("(60/100) * (30/100) * 1400 = 252 gms. The answer is (C).", 1, 1),
        ("Adding 60 to 900 gives 960. The answer is (E).", 0, 1),
        ("The units digit is 2, so the answer is (D).", 1, 1),
        ("Because y = 3x we get x = 8, so (A).", 0, 1),
    ],
    "boolq": [
        ("the correct answer is false", 1, 1),
        ("True", 0, 0),
        ("it is not true that barq's is pepsi, so false", 0, 1),
    ],
    "piqa": [
        ("the correct answer is solution2", 1, 1),
        ("solution1 would not hold air; the correct answer is solution2", 0, 1),
        ("the correct answer is solution1", 1, 1),
    ],
    "siqa": [
        ("the correct answer is answer3", 1, 1),
        ("the correct answer is answer2", 0, 0),
        ("", 0, 0),
    ],
    "hellaswag": [
        ("the correct answer is ending4", 1, 1),
        ("the correct answer is ending3", 1, 1),
        ("ending2", 1, 1),
    ],
    "winogrande": [
        ("the correct answer is option12", 1, 0),
        ("the correct answer is option2", 1, 1),
        ("the correct answer is option1", 0, 0),
    ],
    "arc_e": [
        ("the correct answer is answer2", 1, 1),
        ("the correct answer is answer2", 1, 1),
        ("the correct answer is answer4", 1, 1),
    ],
    "arc_c": [
        ("answer3", 1, 1),
        ("the correct answer is answer1", 0, 0),
        ("the correct answer is answer4", 1, 1),
    ],
    "obqa": [
        ("the correct answer is answer4", 1, 1),
        ("the correct answer is answer2", 1, 1),
        ("the correct answer is answer2", 0, 0),
    ],
}

# Hand counts of the flags above (faithful, strict).
EXPECTED = {
    "gsm8k": (2 / 4, 3 / 4),
    "svamp": (2 / 3, 2 / 3),
    "multiarith": (2 / 3, 2 / 3),
    "singleeq": (3 / 3, 3 / 3),
    "addsub": (2 / 3, 2 / 3),
    "aqua": (2 / 4, 4 / 4),
    "boolq": (1 / 3, 2 / 3),
    "piqa": (2 / 3, 3 / 3),
    "siqa": (1 / 3, 1 / 3),
    "hellaswag": (3 / 3, 3 / 3),
    "winogrande": (2 / 3, 1 / 3),
    "arc_e": (3 / 3, 3 / 3),
    "arc_c": (2 / 3, 2 / 3),
    "obqa": (2 / 3, 2 / 3),
}


def _stub_generate():
    """generate(prompts): the canned answer of the item whose instruction is in the prompt."""
    table = {}
    for name, outputs in STUB.items():
        task = get_task(name)
        records = task.load(task_file(task, FIXTURES))
        assert len(records) == len(outputs), name
        for r, (text, _, _) in zip(records, outputs, strict=True):
            table[r["instruction"]] = text
    calls = []

    def generate(prompts):
        calls.append(len(prompts))
        return [next(v for k, v in table.items() if k in p) for p in prompts]

    return generate, calls


@pytest.mark.parametrize("mode,col", [("faithful", 0), ("strict", 1)])
def test_fixture_accuracies_are_the_hand_counts(tmp_path, mode, col):
    generate, calls = _stub_generate()
    doc = evaluate(
        "study_b",
        generate,
        None,
        str(tmp_path),
        data_root=FIXTURES,
        mode=mode,
        batch_size=2,
        progress=False,
    )
    assert set(doc["tasks"]) == set(EXPECTED) and len(EXPECTED) == 14
    for name, acc in EXPECTED.items():
        assert doc["tasks"][name]["accuracy"] == pytest.approx(acc[col], abs=1e-12), name
        rows = [json.loads(x) for x in open(tmp_path / "predictions" / f"{name}.jsonl")]
        assert [r["correct"] for r in rows] == [bool(o[1 + col]) for o in STUB[name]]
    assert max(calls) == 2  # batched by batch_size
    assert doc["extraction"]["gsm8k"] == mode
    assert doc["average"]["accuracy"] == pytest.approx(sum(a[col] for a in EXPECTED.values()) / 14)
    with open(tmp_path / "scores.csv") as f:
        csv_rows = {(r["task"], r["metric"]): float(r["value"]) for r in csv.DictReader(f)}
    assert csv_rows[("aqua", "accuracy")] == pytest.approx(EXPECTED["aqua"][col], abs=1e-6)


def test_loglikelihood_multiple_choice_with_a_stub(tmp_path):
    gold_texts = {"a bacterial population in the bloodstream", "breathing mask", "soft"}

    # Label style: "answer2" / "solution1" / "true" always score best. Text style: -1 per
    # character plus 3 for arc_e's gold texts, so per-character normalisation always finds
    # the gold while the raw sum prefers a shorter wrong text unless the gold is short.
    def loglikelihood(pairs):
        out = []
        for ctx, cont in pairs:
            if ctx.endswith("the correct answer is "):
                out.append(0.0 if cont in ("answer2", "solution1", "true") else -5.0)
            else:
                out.append(-1.0 * len(cont) + 3.0 * (cont in gold_texts))
        return out

    doc = evaluate(
        ["arc_e", "piqa", "boolq"],
        None,
        loglikelihood,
        str(tmp_path),
        data_root=FIXTURES,
        progress=False,
    )
    # Golds: arc_e answer2, answer2, answer4; piqa solution2, solution2, solution1; boolq
    # false, true, false.
    assert doc["tasks"]["arc_e"]["mc_accuracy"] == pytest.approx(2 / 3)
    assert doc["tasks"]["piqa"]["mc_accuracy"] == pytest.approx(1 / 3)
    assert doc["tasks"]["boolq"]["mc_accuracy"] == pytest.approx(1 / 3)
    assert "accuracy" not in doc["tasks"]["arc_e"]  # no generate: no generation score
    doc = evaluate(
        ["arc_e"],
        None,
        loglikelihood,
        str(tmp_path),
        data_root=FIXTURES,
        mc_style="text",
        progress=False,
    )
    # Raw: item 1 gold 41 chars (-38) loses to a 35-char choice; item 2 gold 14 chars (-11)
    # loses to "lead apron" (-10); item 3 gold "soft" (-1) beats the other 4-char words (-4).
    assert doc["tasks"]["arc_e"]["mc_accuracy"] == pytest.approx(1 / 3)
    assert doc["tasks"]["arc_e"]["mc_accuracy_norm"] == 1.0


def test_choices_are_parsed_from_the_instruction():
    task = get_task("hellaswag")
    record = task.load(task_file(task, FIXTURES))[0]
    labels, texts = task.choices(record)
    assert labels == ["ending1", "ending2", "ending3", "ending4"]
    assert texts[3] == "starts pulling up roofing on a roof."
    wino = get_task("winogrande")
    labels, texts = wino.choices(wino.load(task_file(wino, FIXTURES))[1])
    assert (labels, texts) == (["option1", "option2"], ["jeans", "shirt"])


BUILTIN = os.path.join(FIXTURES, "builtin")


def test_builtin_tasks_read_chat_records_and_report_chrf(tmp_path):
    seen = []

    def generate(prompts):
        seen.extend(prompts)
        # Right on the first item of each family; no answer on the others.
        return [
            "The answer is 26 ."
            if "Leo has 23" in p
            else "The answer is arvo vela ta kaba ne sena ."
            if "red tree" in p
            else "hmm"
            for p in prompts
        ]

    doc = evaluate(
        "builtin", generate, None, str(tmp_path), data_root={"builtin": BUILTIN}, progress=False
    )
    assert seen[0].startswith("<s><|user|>Leo has 23") and seen[0].endswith("<|assistant|>")
    assert doc["tasks"]["arith"]["accuracy"] == pytest.approx(1 / 3)
    assert doc["tasks"]["compare"]["accuracy"] == 0.0
    assert doc["tasks"]["cipher"]["accuracy"] == pytest.approx(1 / 3)
    # chrF of (exact, "", "") against three references lies strictly between 0 and 100.
    assert 0.0 < doc["tasks"]["cipher"]["chrf"] < 100.0


def test_builtin_contract_end_to_end(tmp_path):
    """Built-in data answered with its own gold replies scores 1.0."""
    from kd_jax.data.builtin_paths import write_builtin_data

    write_builtin_data(str(tmp_path / "data"), scale=0.01, formats=("chat",))
    gold = {}
    for t in resolve("builtin"):
        for r in t.load(task_file(t, str(tmp_path / "data"))):
            gold[r["messages"][-2]["content"]] = r["messages"][-1]["content"]

    def generate(prompts):
        return [next(v for k, v in gold.items() if k in p) for p in prompts]

    doc = evaluate(
        "builtin",
        generate,
        None,
        str(tmp_path / "out"),
        data_root={"builtin": str(tmp_path / "data")},
        progress=False,
    )
    assert all(e["accuracy"] == 1.0 for e in doc["tasks"].values())
    assert doc["tasks"]["cipher"]["chrf"] == pytest.approx(100.0)


def test_user_errors_are_one_clear_line(tmp_path):
    gen = lambda prompts: ["" for _ in prompts]
    with pytest.raises(EvalError, match="unknown task 'gsm9k'"):
        evaluate("gsm9k", gen, None, str(tmp_path), data_root=FIXTURES)
    with pytest.raises(EvalError, match="test file for task gsm8k not found"):
        evaluate("gsm8k", gen, None, str(tmp_path), data_root=str(tmp_path))
    with pytest.raises(EvalError, match="returned 0 texts for 3 prompts"):
        evaluate("svamp", lambda p: [], None, str(tmp_path), data_root=FIXTURES, progress=False)
    bad = tmp_path / "dataset" / "gsm8k"
    bad.mkdir(parents=True)
    (bad / "test.json").write_text('{"instruction": "x"}')
    with pytest.raises(EvalError, match="expected a JSON list"):
        evaluate("gsm8k", gen, None, str(tmp_path / "o"), data_root=str(tmp_path))
    # A root pointing inside dataset/ works too.
    assert task_file(get_task("svamp"), os.path.join(FIXTURES, "dataset")).endswith("test.json")
    assert PromptOptions().template == "alpaca"


def test_a_new_task_is_a_few_lines(tmp_path):
    """A translation task scored by exact match, chrF and ROUGE-L, registered in one call."""
    from kd_jax.evaluation import TASKS, Task, register
    from kd_jax.evaluation.extract import last_regex, text_correct
    from kd_jax.evaluation.tasks import load_jsonl

    (tmp_path / "mt").mkdir()
    (tmp_path / "mt" / "test.jsonl").write_text(
        '{"instruction": "Translate: le chat", "input": "", "answer": "the cat"}\n'
        '{"instruction": "Translate: le chien", "input": "", "answer": "the dog"}\n'
    )
    register(
        Task(
            name="toy_mt",
            family="translation",
            path="mt/test.jsonl",
            load=load_jsonl,
            extract={"faithful": last_regex(r"Translation: (.*)", group=1)},
            correct=text_correct,
            metrics=("accuracy", "chrf", "rouge_l"),
        )
    )
    try:
        gen = lambda ps: [
            "Translation: the cat" if "chat" in p else "Translation: a dog" for p in ps
        ]
        doc = evaluate(
            "toy_mt", gen, None, str(tmp_path / "out"), data_root=str(tmp_path), progress=False
        )
    finally:
        del TASKS["toy_mt"]
    scores = doc["tasks"]["toy_mt"]
    assert scores["accuracy"] == 0.5
    # ROUGE-L F1 by hand: "the cat" vs itself 1; "a dog" vs "the dog": LCS 1, P = R = 1/2.
    assert scores["rouge_l"] == pytest.approx((1.0 + 0.5) / 2)
    assert 50.0 < scores["chrf"] < 100.0


def test_rouge_l_by_hand():
    from kd_jax.evaluation.metrics import rouge_l_pair

    # LCS of "the cat sat on the mat" and "the cat is on the mat" is 5 words of 6 each.
    assert rouge_l_pair("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    assert rouge_l_pair("", "x") == 0.0
